"""The mock vocabulary of a fake LLM: ``side_effect`` (an exception, a callable of the
request, or an iterable of replies and exceptions) and the reply specs a user may give
(text, JSON values, a litellm ``ModelResponse``, a pydantic model, a ``FakeReply``).

Exceptions raised on purpose are marked (:data:`PASSTHROUGH_MARK`), so the transports can
undo litellm's wrapping and surface them unchanged.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterable, Mapping
from typing import Any, Final
from unittest.mock import DEFAULT

from mesa_llm_testing._calls import FakeRequest
from mesa_llm_testing._responses import FakeReply

#: Attribute set on exceptions the fake raised on purpose, so litellm's wrapping can be undone.
PASSTHROUGH_MARK: Final = "_mesa_fake_raised"


class SideEffectExhaustedError(RuntimeError):
    """``FakeLLM.side_effect`` was an iterable and every item has been used."""


class SideEffectItems:
    """A thread-safe iterator over a ``side_effect`` iterable, counting what it gave."""

    __slots__ = ("_it", "_lock", "used")

    def __init__(self, items: Iterable[Any]) -> None:
        self._it = iter(items)
        self._lock = threading.Lock()
        self.used = 0

    def next(self, request: FakeRequest) -> Any:
        with self._lock:
            try:
                item = next(self._it)
            except StopIteration:
                raise marked(
                    SideEffectExhaustedError(
                        f"mesa_llm_testing: FakeLLM.side_effect is exhausted: it gave {self.used} "
                        f"replies and call #{self.used + 1} (agent {request.agent}, "
                        f"step {request.step}, "
                        f"call {request.call}) asked for another; give more items, or set "
                        f"return_value and side_effect=None"
                    )
                ) from None
            self.used += 1
        return item


def side_effect_items(value: Any) -> SideEffectItems | None:
    """Check a ``side_effect``; the iterator over its items when it is an iterable.

    TypeError naming what is accepted for anything else (a single reply spec included).
    """
    if value is None or is_exception(value) or callable(value):
        return None
    if is_reply_spec(value) or not isinstance(value, Iterable):
        raise TypeError(
            "mesa_llm_testing: FakeLLM.side_effect must be an exception (class or instance), "
            "a callable taking the request, or an iterable of replies/exceptions; "
            f"got {type(value).__name__} (for one fixed reply use return_value=...)"
        )
    return SideEffectItems(value)


def scripted(
    effect: Any, items: SideEffectItems | None, request: FakeRequest, return_value: Any
) -> Any:
    """What ``side_effect`` (else ``return_value``) says ``request`` answers: a reply spec, or
    ``DEFAULT`` / None for the generated reply; raises the (marked) exception it names."""
    if effect is not None:
        if items is not None:
            item = items.next(request)
            if is_exception(item):
                raise marked(item)
            if item is not DEFAULT:
                return item
        elif is_exception(effect):
            raise marked(effect)
        else:
            result = effect(request)
            if result is not DEFAULT:
                return result
    return return_value


def is_exception(value: Any) -> bool:
    return isinstance(value, BaseException) or (
        isinstance(value, type) and issubclass(value, BaseException)
    )


def is_reply_spec(value: Any) -> bool:
    return (
        isinstance(value, str | bytes | Mapping | FakeReply)
        or callable(getattr(value, "model_dump", None))  # ModelResponse / pydantic models
    )


def coerce(spec: Any, where: str) -> FakeReply:
    """Turn a reply spec (text, JSON value, ModelResponse, pydantic model) into a reply."""
    if isinstance(spec, FakeReply):
        return spec
    if isinstance(spec, str):
        return FakeReply(spec)
    if isinstance(spec, dict | list):
        return FakeReply(json.dumps(spec))
    if hasattr(spec, "choices") and callable(getattr(spec, "model_dump", None)):
        return FakeReply.from_model_response(spec)
    if callable(getattr(spec, "model_dump_json", None)):
        return FakeReply(spec.model_dump_json())
    raise TypeError(
        f"mesa_llm_testing: {where} must be str (text), dict or list (JSON content), a "
        f"litellm ModelResponse, a pydantic model, or FakeLLM.text/tool_call/json_reply(...); "
        f"got {type(spec).__name__}"
    )


def marked(effect: BaseException | type[BaseException]) -> BaseException:
    """The exception (instantiated if a class), marked as raised on purpose."""
    exc = effect() if isinstance(effect, type) else effect
    # Exceptions with __slots__ cannot be marked; litellm may then wrap them.
    with contextlib.suppress(AttributeError):
        setattr(exc, PASSTHROUGH_MARK, True)
    return exc
