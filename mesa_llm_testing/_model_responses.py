"""``litellm.ModelResponse`` objects for fake replies, built once per shape and then cloned.

Constructing a ``ModelResponse`` runs litellm's ``__init__`` logic and pydantic
validation for the response, its choice, message, tool calls and usage: most of
the cost of a fake call. A reply of a given shape (number of tool calls, finish
reason, content or none, usage or none) always builds the same structure, so the
first one of each shape is built by litellm (the template) and later ones are
shallow pydantic copies of it with their values put in place: equal, field for
field and in ``model_fields_set``, to what litellm builds (``tests/test_fastpath.py``
compares them). Importing this module does not import litellm.
"""

from __future__ import annotations

import threading
from typing import Any, Final

__all__ = ["build_model_response"]

#: (tool calls, finish reason, has content, has usage) -> the template response.
_templates: dict[tuple[int, str, bool, bool], Any] = {}
_lock = threading.Lock()
#: Stand-ins the template is built with; every one is replaced in each clone.
_PLACEHOLDER: Final = "template"
_new = object.__new__
_set = object.__setattr__


def build_model_response(
    *,
    response_id: str,
    created: int,
    model: str,
    system_fingerprint: str,
    content: str | None,
    tool_calls: list[tuple[str | None, str, str]],
    finish_reason: str,
    usage: dict[str, int] | None,
) -> Any:
    """A ``ModelResponse`` (one choice); ``tool_calls`` are ``(id, name, arguments)``."""
    key = (len(tool_calls), finish_reason, content is not None, usage is not None)
    template = _templates.get(key)
    if template is None:
        template = _template(key, created, system_fingerprint)
    message_template = template.choices[0].message
    message_fields: dict[str, Any] = {"content": content}
    if tool_calls:
        message_fields["tool_calls"] = [
            _clone(
                pattern,
                id=call_id,
                function=_clone(pattern.function, name=name, arguments=arguments),
            )
            for pattern, (call_id, name, arguments) in zip(
                message_template.tool_calls, tool_calls, strict=True
            )
        ]
    choice = _clone(template.choices[0], message=_clone(message_template, **message_fields))
    response = _clone(
        template,
        id=response_id,
        model=model,
        created=created,
        system_fingerprint=system_fingerprint,
        choices=[choice],
    )
    if usage is not None:
        counts = _clone(template.usage, **usage)
        if "usage" in response.__dict__:
            response.__dict__["usage"] = counts
        else:
            response.__pydantic_extra__["usage"] = counts
    private = response.__pydantic_private__
    if private is not None and isinstance(private.get("_hidden_params"), dict):
        private["_hidden_params"] = dict(private["_hidden_params"])  # never shared
    return response


def _clone(original: Any, /, **fields: Any) -> Any:
    """A shallow copy of a pydantic model (as ``copy.copy``) with ``fields`` set, unvalidated."""
    clone = _new(type(original))
    values = original.__dict__.copy()
    values.update(fields)
    _set(clone, "__dict__", values)
    extra = original.__pydantic_extra__
    _set(clone, "__pydantic_extra__", None if extra is None else extra.copy())
    _set(clone, "__pydantic_fields_set__", original.__pydantic_fields_set__.copy())
    private = original.__pydantic_private__
    _set(clone, "__pydantic_private__", None if private is None else private.copy())
    return clone


def _template(key: tuple[int, str, bool, bool], created: int, system_fingerprint: str) -> Any:
    from litellm.types.utils import (
        ChatCompletionMessageToolCall,
        Choices,
        Function,
        Message,
        ModelResponse,
        Usage,
    )

    n_calls, finish_reason, has_content, has_usage = key
    tool_calls = [
        ChatCompletionMessageToolCall(
            id=_PLACEHOLDER,
            type="function",
            function=Function(name=_PLACEHOLDER, arguments=_PLACEHOLDER),
        )
        for _ in range(n_calls)
    ] or None
    extra: dict[str, Any] = {}
    if has_usage:
        extra["usage"] = Usage(prompt_tokens=1, completion_tokens=1, total_tokens=2)
    template = ModelResponse(
        id=_PLACEHOLDER,
        created=created,
        model=_PLACEHOLDER,
        system_fingerprint=system_fingerprint,
        choices=[
            Choices(
                index=0,
                finish_reason=finish_reason,
                message=Message(
                    content=_PLACEHOLDER if has_content else None,
                    role="assistant",
                    tool_calls=tool_calls,
                ),
            )
        ],
        **extra,
    )
    with _lock:
        return _templates.setdefault(key, template)
