"""Which method of an agent a step calls: ``a<method>`` (async) or ``<method>`` (sync).

Any callable ``a<method>`` is the async one, a coroutine function or not: an ordinary
(sync) decorator around ``async def astep`` returns the coroutine, which the engines
await. An ``a<method>`` whose call returns no awaitable is that agent's error
(:func:`_not_awaitable`), never a reason to run ``<method>`` instead.
"""

from __future__ import annotations

import inspect
import reprlib
from collections.abc import Callable
from typing import Any

from mesa_llm.errors import AgentMethodMissingError

_SYNC, _ASYNC = 0, 1
_resolve_cache: dict[tuple[type, str], tuple[str, int] | None] = {}


def _resolve(agent: Any, method: str) -> tuple[Callable[..., Any], int]:
    """Find ``a<method>`` (async: called, its result awaited) or ``<method>``; cached per class."""
    found = _lookup(type(agent), method)
    if found is None:
        # Instance attributes (rare) are honoured too; never skip an agent silently.
        fn = getattr(agent, method, None)
        if callable(fn):
            return fn, _ASYNC if inspect.iscoroutinefunction(fn) else _SYNC
        raise AgentMethodMissingError(agent, method)
    return getattr(agent, found[0]), found[1]


def _lookup(cls: type, method: str) -> tuple[str, int] | None:
    """The name and kind (``_ASYNC``/``_SYNC``) of the method a step calls on ``cls``, if any."""
    key = (cls, method)
    try:
        return _resolve_cache[key]
    except KeyError:
        pass
    found = None
    for name in (f"a{method}", method):
        attr = getattr(cls, name, None)
        if attr is None or not callable(attr):
            continue
        if name == method:
            found = (name, _ASYNC if inspect.iscoroutinefunction(attr) else _SYNC)
        elif _sync_overrides_fallback(cls, attr, name, method):
            continue
        else:
            found = (name, _ASYNC)
        break
    _resolve_cache[key] = found
    return found


def _not_awaitable(agent: Any, method: str, value: Any) -> TypeError:
    """The error of an agent whose ``a<method>`` (no coroutine function) returned no awaitable."""
    uid = getattr(agent, "unique_id", None)
    return TypeError(
        f"mesa_llm: agent {uid} ({type(agent).__name__}.a{method}) returned "
        f"{reprlib.repr(value)} ({type(value).__name__}), not an awaitable; a{method} must be "
        f"an async def or return an awaitable (a sync agent defines {method} instead)"
    )


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
