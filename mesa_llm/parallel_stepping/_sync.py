"""Stepping from synchronous code: pick the engine for the mode and where the caller runs."""

from __future__ import annotations

import contextvars
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from mesa_llm.parallel_stepping._asyncio_engine import _step_async
from mesa_llm.parallel_stepping._context import _loop_blocked
from mesa_llm.parallel_stepping._options import (
    _UNSET,
    Mode,
    OnError,
    _as_list,
    _check_method,
    _merged_settings,
    _Settings,
)
from mesa_llm.parallel_stepping._report import StepReport, _report
from mesa_llm.parallel_stepping._sequential_engine import _step_sequential
from mesa_llm.parallel_stepping._state import (
    _enabled_settings,
    _get_loop_thread,
    _on_loop_thread,
    _stepping,
)
from mesa_llm.parallel_stepping._thread_engine import _step_threaded

__all__ = ["step_agents_parallel_sync"]


def step_agents_parallel_sync(
    agents: Iterable[Any],
    *,
    method: str = "step",
    mode: Mode = _UNSET,
    on_error: OnError = _UNSET,
    timeout: float | None = _UNSET,
    max_concurrency: int | None = _UNSET,
    max_workers: int | None = _UNSET,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
) -> StepReport:
    """Step agents from synchronous code, in the mode set by ``enable_...`` or given here.

    Keywords left out take the values given to
    :func:`enable_automatic_parallel_stepping` (asyncio mode, isolate, no limits if
    it was never called). ``mode="sequential"`` runs the agents one at a time in the
    order given, with the same isolation, report and timeouts. Asyncio mode runs on
    one event loop kept for the life of the enabled mode, so it works the same
    inside a running loop (Jupyter, pytest-asyncio) and outside one. Called from an
    async agent's step on that loop (a nested step), it cannot wait on the loop it
    blocks, so the nested agents run in worker threads (``a<method>`` on each
    thread's loop) and the report says ``"threading"``.
    """
    s = _merged_settings(
        _enabled_settings() or _Settings(),
        mode=mode,
        on_error=on_error,
        timeout=timeout,
        max_concurrency=max_concurrency,
        max_workers=max_workers,
    )
    agent_list = _as_list(agents)
    _check_method(method)
    kw = kwargs or {}
    with _stepping():
        if s.mode == "sequential":
            return _step_sequential(agent_list, method, args, kw, s)
        if s.mode == "asyncio" and (_on_loop_thread() or _loop_blocked.get()):
            # Nested in an async agent's step: the loop thread waits here, so nothing
            # in this step may need it.
            ctx = contextvars.copy_context()
            ctx.run(_loop_blocked.set, True)
            return ctx.run(_step_threaded, agent_list, method, args, kw, s)
        if s.mode == "threading":
            return _step_threaded(agent_list, method, args, kw, s)
        if not agent_list:
            return _report([], method, "asyncio", s)
        return _get_loop_thread().run(lambda: _step_async(agent_list, method, args, kw, s))
