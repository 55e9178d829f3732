"""Which method of an agent a step calls: ``a<method>`` (async) or ``<method>`` (sync)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from mesa_llm.errors import AgentMethodMissingError

_SYNC, _ASYNC = 0, 1
_resolve_cache: dict[tuple[type, str], tuple[str, int] | None] = {}


def _resolve(agent: Any, method: str) -> tuple[Callable[..., Any], int]:
    """Find ``a<method>`` (async) or ``<method>`` on the agent; cached per class."""
    cls = type(agent)
    key = (cls, method)
    try:
        found = _resolve_cache[key]
    except KeyError:
        found = None
        for name in (f"a{method}", method):
            attr = getattr(cls, name, None)
            if attr is None:
                continue
            if inspect.iscoroutinefunction(attr):
                if name != method and _sync_overrides_fallback(cls, attr, name, method):
                    continue
                found = (name, _ASYNC)
                break
            if name == method and callable(attr):
                found = (name, _SYNC)
        _resolve_cache[key] = found
    if found is None:
        # Instance attributes (rare) are honoured too; never skip an agent silently.
        fn = getattr(agent, method, None)
        if callable(fn):
            return fn, _ASYNC if inspect.iscoroutinefunction(fn) else _SYNC
        raise AgentMethodMissingError(agent, method)
    return getattr(agent, found[0]), found[1]


def _is_sync(agent: Any, method: str) -> bool:
    try:
        return _resolve(agent, method)[1] == _SYNC
    except AgentMethodMissingError:
        return True  # reported as the agent's error outcome


_DEFERS_TO_SYNC = "__mesa_llm_defers_to_sync__"


def _defers_to_sync(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Mark an async method that only runs its sync twin when a subclass overrides that twin.

    Parallel stepping then calls the subclass's sync method directly (in a worker
    thread, under the step's waiting and timeout rules) instead of the fallback.
    """
    setattr(fn, _DEFERS_TO_SYNC, True)
    return fn


def _sync_overrides_fallback(cls: type, attr: Any, async_name: str, method: str) -> bool:
    if not getattr(attr, _DEFERS_TO_SYNC, False):
        return False
    owner = next(k for k in cls.__mro__ if async_name in k.__dict__)
    return getattr(cls, method, None) is not getattr(owner, method, None)
