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
from typing import Any, Final, NamedTuple

__all__ = ["build_model_response"]


class _Template(NamedTuple):
    """A template response and its parts, read once (``usage`` is a pydantic extra: slow)."""

    response: Any
    choice: Any
    message: Any
    tool_calls: tuple[tuple[Any, Any], ...]  # (tool call, its function)
    usage: Any
    usage_is_field: bool  # in __dict__, else in __pydantic_extra__
    has_hidden: bool  # _hidden_params is a private attribute holding a dict


#: (tool calls, finish reason, has content, has usage) -> the template.
_templates: dict[tuple[int, str, bool, bool], _Template] = {}
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
    hidden_params: dict[str, Any] | None = None,
) -> Any:
    """A ``ModelResponse`` (one choice); ``tool_calls`` are ``(id, name, arguments)``.

    ``hidden_params`` becomes its ``_hidden_params`` as given (not copied); None: a copy
    of what litellm gives a new response.
    """
    key = (len(tool_calls), finish_reason, content is not None, usage is not None)
    template = _templates.get(key)
    if template is None:
        template = _template(key, created, system_fingerprint)
    message_fields: dict[str, Any] = {"content": content}
    if tool_calls:
        message_fields["tool_calls"] = [
            _clone(
                pattern,
                {"id": call_id, "function": _clone(function, {"name": name, "arguments": args})},
            )
            for (pattern, function), (call_id, name, args) in zip(
                template.tool_calls, tool_calls, strict=True
            )
        ]
    choice = _clone(template.choice, {"message": _clone(template.message, message_fields)})
    response = _clone(
        template.response,
        {
            "id": response_id,
            "model": model,
            "created": created,
            "system_fingerprint": system_fingerprint,
            "choices": [choice],
        },
    )
    if usage is not None:
        counts = _clone(template.usage, usage)
        if template.usage_is_field:
            response.__dict__["usage"] = counts
        else:
            response.__pydantic_extra__["usage"] = counts
    if template.has_hidden:
        # Never shared; set where pydantic's __setattr__ puts a private attribute.
        private = response.__pydantic_private__
        private["_hidden_params"] = (
            dict(private["_hidden_params"]) if hidden_params is None else hidden_params
        )
    elif hidden_params is not None:
        response._hidden_params = hidden_params
    return response


def _clone(original: Any, fields: dict[str, Any], /) -> Any:
    """A shallow copy of a pydantic model (as ``copy.copy``) with ``fields`` set, unvalidated."""
    clone = _new(original.__class__)
    _set(clone, "__dict__", {**original.__dict__, **fields})
    extra = original.__pydantic_extra__
    _set(clone, "__pydantic_extra__", extra if extra is None else extra.copy())
    _set(clone, "__pydantic_fields_set__", original.__pydantic_fields_set__.copy())
    private = original.__pydantic_private__
    _set(clone, "__pydantic_private__", private if private is None else private.copy())
    return clone


def _template(key: tuple[int, str, bool, bool], created: int, system_fingerprint: str) -> _Template:
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
    choice = template.choices[0]
    private = template.__pydantic_private__
    parts = _Template(
        template,
        choice,
        choice.message,
        tuple((call, call.function) for call in choice.message.tool_calls or ()),  # type: ignore[union-attr]
        template.usage if has_usage else None,  # type: ignore[attr-defined]
        "usage" in template.__dict__,
        private is not None and isinstance(private.get("_hidden_params"), dict),
    )
    with _lock:
        return _templates.setdefault(key, parts)
