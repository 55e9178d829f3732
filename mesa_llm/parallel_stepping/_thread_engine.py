"""The thread engine: every agent in a worker thread of the shared pools.

A sync agent's method runs in its worker; an async agent's ``a<method>`` runs on
that worker's own event loop, reused across steps. The coordinator (the caller's
thread) collects outcomes, keeps per-agent deadlines and, in raise mode, stops at
the first failure. Outcomes, raise mode and logging go through :mod:`._report`.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import inspect
import itertools
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from mesa_llm._usage import TokenUsage, new_tally
from mesa_llm.errors import AgentTimeoutError
from mesa_llm.parallel_stepping._asyncio_engine import _with_timeout
from mesa_llm.parallel_stepping._context import _current_agent, _depth
from mesa_llm.parallel_stepping._methods import _ASYNC, _not_awaitable, _resolve
from mesa_llm.parallel_stepping._options import (
    DEFAULT_MAX_WORKERS,
    OnError,
    _as_list,
    _check_method,
    _Settings,
    _settings,
)
from mesa_llm.parallel_stepping._report import (
    AgentOutcome,
    StepReport,
    _cancelled,
    _failed,
    _is_abort,
    _raise_if_fatal,
    _report,
    _since,
    _succeeded,
)
from mesa_llm.parallel_stepping._state import _stepping
from mesa_llm.parallel_stepping._workers import _pools

__all__ = ["step_agents_multithreaded"]


class _ThreadRun:
    """Shared state of one threading-mode step."""

    __slots__ = ("args", "kwargs", "method", "pool", "started", "stop", "tallies", "timeout")

    # An async agent's own loop cancels it at the deadline; the coordinator only steps
    # in this much later, for agents that block their loop.
    ASYNC_GRACE: Final = 0.25

    def __init__(
        self, n: int, method: str, args: Sequence[Any], kwargs: Mapping[str, Any], s: _Settings
    ) -> None:
        self.method = method
        self.args = args
        self.kwargs = kwargs
        self.timeout = s.timeout
        self.started: list[float | None] = [None] * n
        # Each agent's tally, for the outcome of one that times out (made by the coordinator).
        self.tallies: list[TokenUsage | None] = [None] * n
        self.stop = False  # set on abort or first failure in raise mode: start nothing more
        self.pool: concurrent.futures.ThreadPoolExecutor | None = None


def _run_one_threaded(run: _ThreadRun, agent: Any, index: int) -> AgentOutcome:
    if run.stop:
        return _cancelled(agent)
    _current_agent.set(agent)  # runs inside a copied context
    run.tallies[index] = new_tally()  # this agent's step counts its own tokens
    _depth.set(_depth.get() + 1)
    method = run.method
    start = time.perf_counter()
    on_loop = False
    try:
        fn, kind = _resolve(agent, method)
        run.started[index] = time.monotonic() + (run.ASYNC_GRACE if kind == _ASYNC else 0.0)
        value = fn(*run.args, **run.kwargs)
        if kind == _ASYNC and not inspect.isawaitable(value):  # a sync a<method>'s plain value
            raise _not_awaitable(agent, method, value)
        if kind == _ASYNC or inspect.isawaitable(value):
            if run.timeout is not None:
                value = _with_timeout(value, agent, method, run.timeout)
            on_loop = True
            value = _pools.worker_loop().run_until_complete(value)
    except BaseException as exc:  # an abort is re-raised by the coordinator
        if _is_abort(exc):
            run.stop = True
            if on_loop:  # raised by a child task: the agent's own task is still pending
                _pools.discard_worker_loop(exc)
        return _failed(agent, exc, _since(start))
    return _succeeded(agent, value, _since(start))


def step_agents_multithreaded(
    agents: Iterable[Any],
    *,
    method: str = "step",
    on_error: OnError = "isolate",
    timeout: float | None = None,
    max_workers: int | None = None,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
) -> StepReport:
    """Run ``<method>`` (or ``a<method>`` on the worker's own event loop) on every agent in threads.

    The thread pool (``max_workers`` threads, default 32) is reused across steps and
    shut down by :func:`disable_automatic_parallel_stepping` and at interpreter exit.
    Failures are isolated and reported unless ``on_error="raise"``, which raises the
    first failure after cancelling agents not yet started and waiting for the running
    ones. ``timeout`` is per agent: an async agent is cancelled on its loop; a sync
    agent's thread cannot be interrupted, so the step records ``"timeout"`` and returns
    without waiting for it: the thread finishes in the background, its result is
    discarded, and its pool slot is busy until then. Python waits for such a thread
    before the interpreter exits.
    """
    s = _settings("threading", on_error, timeout, None, max_workers)
    agent_list = _as_list(agents)
    with _stepping():
        return _step_threaded(agent_list, _check_method(method), args, kwargs or {}, s)


def _step_threaded(
    agents: list[Any], method: str, args: Sequence[Any], kwargs: Mapping[str, Any], s: _Settings
) -> StepReport:
    return _report(_run_threaded(agents, method, args, kwargs, s), method, "threading", s)


def _run_threaded(
    agents: list[Any], method: str, args: Sequence[Any], kwargs: Mapping[str, Any], s: _Settings
) -> list[AgentOutcome]:
    if not agents:
        return []
    pool = _pools.get(s.max_workers)
    run = _ThreadRun(len(agents), method, args, kwargs, s)
    run.pool = pool
    if s.timeout is None and s.on_error == "isolate":
        return _run_pulled(run, agents, pool, s)
    copy_context = contextvars.copy_context
    futures = [
        pool.submit(copy_context().run, _run_one_threaded, run, a, i) for i, a in enumerate(agents)
    ]
    try:
        outcomes = _collect_threaded(run, agents, futures, s)
    except BaseException:  # KeyboardInterrupt in the caller, or raise mode
        run.stop = True
        _stop_threaded(futures)
        raise
    abort = next((o.exception for o in outcomes if _is_abort(o.exception)), None)
    if abort is not None:
        raise abort
    return outcomes


def _run_pulled(
    run: _ThreadRun,
    agents: list[Any],
    pool: concurrent.futures.ThreadPoolExecutor,
    s: _Settings,
) -> list[AgentOutcome]:
    """Agents taken in order by one pool task per worker: no future, lock or queue per agent.

    Without per-agent deadlines or raise mode nothing needs an agent's own future.
    Each agent still runs in its own copy of the caller's context, and after an
    interrupt from an agent (``run.stop``) the agents not started are reported
    cancelled, as with a future per agent.
    """
    n = len(agents)
    outcomes: list[AgentOutcome | None] = [None] * n
    caller_context = contextvars.copy_context()
    take = itertools.count().__next__  # atomic under the GIL: each index is taken once

    def work() -> None:
        while not run.stop:
            i = take()
            if i >= n:
                return
            outcomes[i] = caller_context.copy().run(_run_one_threaded, run, agents[i], i)

    workers = min(n, s.max_workers or DEFAULT_MAX_WORKERS)
    futures = [pool.submit(work) for _ in range(workers)]
    try:
        for f in futures:
            f.result()
    except BaseException:  # KeyboardInterrupt in the caller
        run.stop = True
        _stop_threaded(futures)
        raise
    result = [o if o is not None else _cancelled(a) for o, a in zip(outcomes, agents, strict=True)]
    abort = next((o.exception for o in result if _is_abort(o.exception)), None)
    if abort is not None:
        raise abort
    return result


def _stop_threaded(futures: Iterable[concurrent.futures.Future[Any]]) -> None:
    """Cancel the agents not started yet and wait for the running ones (not timed-out orphans)."""
    waiting = [f for f in futures if not f.cancel() and f not in _pools.orphans]
    concurrent.futures.wait(waiting)


def _collect_threaded(
    run: _ThreadRun,
    agents: list[Any],
    futures: list[concurrent.futures.Future[AgentOutcome]],
    s: _Settings,
) -> list[AgentOutcome]:
    index = {f: i for i, f in enumerate(futures)}
    results: list[AgentOutcome | None] = [None] * len(futures)
    pending = set(futures)
    timeout = s.timeout
    while pending:
        wait_for = None
        if timeout is not None:
            now = time.monotonic()
            deadlines = [t + timeout for f in pending if (t := run.started[index[f]]) is not None]
            # Poll at least every `timeout` so agents that start later get their deadline.
            wait_for = max(0.0, min(deadlines) - now) if deadlines else timeout
        done, pending = concurrent.futures.wait(
            pending, timeout=wait_for, return_when=concurrent.futures.FIRST_COMPLETED
        )
        for f in done:
            results[index[f]] = outcome = f.result()
            _raise_if_fatal(outcome, run.method, s)
        if timeout is not None:
            now = time.monotonic()
            orphaned = False
            for f in list(pending):
                t = run.started[index[f]]
                if t is not None and now - t >= timeout:
                    pending.discard(f)
                    assert run.pool is not None
                    _pools.orphan(f, run.pool)
                    orphaned = True
                    agent = agents[index[f]]
                    exc = AgentTimeoutError(agent, run.method, timeout)
                    results[index[f]] = outcome = _failed(agent, exc, now - t)
                    outcome.usage = run.tallies[index[f]]  # still counting, as in asyncio mode
                    _raise_if_fatal(outcome, run.method, s)
            if orphaned:
                _requeue_unstarted(run, agents, futures, pending, index, s)
    return [r for r in results if r is not None]


def _requeue_unstarted(
    run: _ThreadRun,
    agents: list[Any],
    futures: list[concurrent.futures.Future[AgentOutcome]],
    pending: set[concurrent.futures.Future[AgentOutcome]],
    index: dict[concurrent.futures.Future[AgentOutcome], int],
    s: _Settings,
) -> None:
    """Move the agents still queued on a pool a timed-out thread holds to a fresh pool.

    The orphaned thread may never return, and the agents behind it have not started,
    so their own timeout has not started either: left there, they would wait for it.
    """
    pool = _pools.get(s.max_workers)  # the old one is retired: a new one
    run.pool = pool
    copy_context = contextvars.copy_context
    for f in list(pending):
        if f.cancel():  # not started yet
            i = index.pop(f)
            pending.discard(f)
            new = pool.submit(copy_context().run, _run_one_threaded, run, agents[i], i)
            futures[i] = new
            index[new] = i
            pending.add(new)
