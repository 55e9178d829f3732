"""The asyncio engine: every agent a task on one event loop, sync agents in worker threads.

Agents with an async ``a<method>`` are awaited concurrently; agents with only the
sync method run in a worker thread of the shared pools, so they never block the
loop. Outcomes, raise mode and logging go through :mod:`._report`, as in the
other engines.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import inspect
import time
import types
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Final

from mesa_llm._usage import FRESH, hold_tally
from mesa_llm.errors import AgentTimeoutError
from mesa_llm.parallel_stepping._all_done import Countdown, ended_with
from mesa_llm.parallel_stepping._context import _depth
from mesa_llm.parallel_stepping._gc_pauses import PAUSES
from mesa_llm.parallel_stepping._loop_hold import _LoopHold
from mesa_llm.parallel_stepping._methods import _ASYNC, _lookup, _not_awaitable, _resolve
from mesa_llm.parallel_stepping._options import (
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
    _fail,
    _is_abort,
    _raise_failure,
    _report,
    _set_usage,
    _since,
)
from mesa_llm.parallel_stepping._state import _stepping
from mesa_llm.parallel_stepping._workers import _pools

__all__ = ["step_agents_parallel"]

#: ``asyncio.eager_task_factory`` (Python 3.12+): agents that never suspend finish as
#: their task is created, without a trip through the event loop. Used only on a loop
#: without a task factory or a ``create_task`` of its own.
_eager_task: Callable[..., asyncio.Task[Any]] | None = getattr(asyncio, "eager_task_factory", None)
_COROUTINE: Final = types.CoroutineType
_BASE_CREATE_TASK: Final = asyncio.BaseEventLoop.create_task
_new: Final = object.__new__


class _AsyncRun:
    """One asyncio-mode step: its call, what aborted it, its tasks, their countdown and outcomes.

    ``cls``, ``name`` and ``kind``: the method of the last agent class looked up (the
    agents of a step are mostly of one class).
    """

    __slots__ = (
        "abort",
        "args",
        "cls",
        "countdown",
        "error",
        "error_agent",
        "kind",
        "kwargs",
        "method",
        "name",
        "on_error",
        "outcomes",
        "s",
        "sem",
        "tasks",
        "with_args",
    )

    def __init__(
        self,
        n: int,
        method: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        s: _Settings,
        sem: asyncio.Semaphore | None,
    ) -> None:
        self.countdown = Countdown()
        self.method = method
        self.args = args
        self.kwargs = kwargs
        self.with_args = bool(args or kwargs)
        self.s = s
        self.on_error = s.on_error
        self.sem = sem
        self.cls: type | None = None
        self.name = ""
        self.kind = _ASYNC
        #: each agent's outcome, in start order, put there by its coroutine as it ends
        self.outcomes: list[AgentOutcome | None] = [None] * n
        self.tasks: list[asyncio.Task[AgentOutcome]] | None = None
        self.error: BaseException | None = None  # first failure, in raise mode
        self.error_agent: Any = None
        self.abort: BaseException | None = None  # KeyboardInterrupt / SystemExit from an agent

    def cancel_all(self) -> None:
        for task in self.tasks or ():
            task.cancel()

    def resolve(self, agent: Any) -> tuple[Callable[..., Any], int]:
        """:func:`._methods._resolve`, keeping the class's lookup here for the next agents."""
        cls = type(agent)
        found = _lookup(cls, self.method)
        if found is not None:
            self.cls, (self.name, self.kind) = cls, found
        return _resolve(agent, self.method)


class _Raised:
    """What a worker thread raised, carried back as a value.

    Exceptions never cross ``asyncio.wrap_future``: an asyncio future refuses
    ``StopIteration``, and the step would wait forever for it.
    """

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def _call_captured(
    started: list[float], fn: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]
) -> Any:
    started.append(time.monotonic())
    # Only a thread can hold a pool worker while it waits for a nested step, so the
    # nesting depth counts the thread boundaries.
    _depth.set(_depth.get() + 1)
    try:
        return fn(*args, **kwargs)
    except BaseException as exc:  # carried back to the event loop, re-raised or reported there
        return _Raised(exc)


async def _await_thread(
    submit: Callable[[concurrent.futures.ThreadPoolExecutor], concurrent.futures.Future[Any]],
    max_workers: int | None,
    started: list[float],
    agent: Any,
    method: str,
    timeout: float | None,
) -> Any:
    """Run ``submit(pool)`` on a worker pool and await its future.

    ``timeout`` counts from when the thread starts the agent, not from when it was
    queued. On timeout the thread is left to finish in the background (it cannot
    be interrupted) and its pool retired; an agent still queued on a retired pool
    moves to a fresh one, so it never waits for a thread that may never return.
    On cancellation (raise mode, KeyboardInterrupt, a cancelled caller) an agent
    not started yet never starts, and a running one is waited for, so nothing
    outlives the step that started it.
    """
    pool = _pools.get(max_workers)
    cf = submit(pool)
    afut = asyncio.wrap_future(cf)
    try:
        if timeout is None:
            return await afut
        while True:
            if started:
                remaining = started[0] + timeout - time.monotonic()
                if remaining <= 0:
                    _pools.orphan(cf, pool)
                    raise AgentTimeoutError(agent, method, timeout)
            else:  # still queued behind other agents: its clock has not started
                if _pools.retired(pool) and cf.cancel():  # behind a timed-out agent's thread
                    pool = _pools.get(max_workers)
                    cf = submit(pool)
                    afut = asyncio.wrap_future(cf)
                remaining = timeout
            done, _ = await asyncio.wait((afut,), timeout=remaining)
            if done:
                return afut.result()
    except asyncio.CancelledError:
        if not cf.cancel():
            with contextlib.suppress(BaseException):
                await asyncio.wrap_future(cf)
        raise


async def _call_async(
    fn: Callable[..., Any],
    kind: int,
    agent: Any,
    method: str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    s: _Settings,
) -> Any:
    if kind == _ASYNC:
        return await _with_timeout(fn(*args, **kwargs), agent, method, s.timeout)
    ctx = contextvars.copy_context()
    started: list[float] = []

    def submit(pool: concurrent.futures.ThreadPoolExecutor) -> concurrent.futures.Future[Any]:
        return pool.submit(ctx.run, _call_captured, started, fn, args, kwargs)

    value = await _await_thread(submit, s.max_workers, started, agent, method, s.timeout)
    if inspect.isawaitable(value):  # a sync wrapper around a coroutine function
        return await _with_timeout(value, agent, method, s.timeout)
    return value


async def _with_timeout(aw: Awaitable[Any], agent: Any, method: str, timeout: float | None) -> Any:
    if timeout is None:
        return await aw
    cm = asyncio.timeout(timeout)
    try:
        async with cm:
            value = await aw
    except TimeoutError as exc:
        if cm.expired():
            raise AgentTimeoutError(agent, method, timeout) from exc
        raise
    if cm.expired():  # the agent caught its cancellation and carried on: still late
        raise AgentTimeoutError(agent, method, timeout)
    return value


async def _run_one_async(run: _AsyncRun, agent: Any, index: int) -> AgentOutcome:
    countdown = run.countdown
    countdown.started += 1
    try:
        # The agent's outcome, made first, holds its tally during the step: a zero tally of
        # its own is made only when an LLM reply is counted or someone reads ``usage``. Made
        # field by field (every field of AgentOutcome), without its __init__'s Python call.
        outcome = _new(AgentOutcome)
        outcome.agent, outcome.unique_id, outcome.status = agent, agent.unique_id, "ok"
        outcome.value = outcome.exception = None
        outcome.elapsed = outcome.blocked = 0.0
        _set_usage(outcome, FRESH)
        # In this task's own context copy: the agent's tally, and so its current_agent().
        hold_tally(outcome)
        s, sem = run.s, run.sem
        if sem is not None:
            await sem.acquire()
        clock = time.perf_counter
        start, paused = clock(), PAUSES.total  # collector pauses are not the agent's
        hold: _LoopHold | None = None
        try:
            if type(agent) is run.cls:  # the common case: the last agent's class
                fn, kind = getattr(agent, run.name), run.kind
            else:
                fn, kind = run.resolve(agent)
            if kind == _ASYNC:
                aw = fn(*run.args, **run.kwargs) if run.with_args else fn()
                if type(aw) is not _COROUTINE and not inspect.iscoroutine(aw):
                    if not inspect.isawaitable(aw):  # a sync a<method>'s plain value
                        raise _not_awaitable(agent, run.method, aw)
                    outcome.value = await _with_timeout(aw, agent, run.method, s.timeout)
                elif s.timeout is None:
                    # No deadline to start before the first send: make it here, and hold
                    # and await only an agent that suspended. Most agents of a large step
                    # end here, with no object but their outcome. The stretch it held the
                    # loop counts from ``start``: calling ``a<method>`` may run code too.
                    try:
                        out = aw.send(None)
                    except StopIteration as stop:
                        outcome.value = stop.value
                        outcome.elapsed = elapsed = clock() - start
                        outcome.blocked = elapsed - (PAUSES.total - paused)
                        run.outcomes[index] = outcome
                        return outcome
                    except BaseException:
                        held = clock() - start - (PAUSES.total - paused)
                        hold = _LoopHold(aw, True, None, held)  # for its ``longest``
                        raise
                    hold = _LoopHold(aw, True, out, clock() - start - (PAUSES.total - paused))
                    outcome.value = await hold
                else:
                    hold = _LoopHold(aw)
                    outcome.value = await _with_timeout(hold, agent, run.method, s.timeout)
                outcome.elapsed = clock() - start
            else:
                value = await _call_async(fn, kind, agent, run.method, run.args, run.kwargs, s)
                if type(value) is not _Raised:
                    outcome.value = value
                    outcome.elapsed = clock() - start
                elif not _is_abort(value.exc):
                    _failed_async(run, outcome, value.exc, start)
                else:
                    _aborted_async(run, outcome, value.exc, start)
        except Exception as exc:
            _failed_async(run, outcome, exc, start)
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if task is None or task.cancelling():
                # Cancelled from outside (or by this step): the task ends cancelled, and
                # its outcome, with the tokens it had counted, says so.
                run.outcomes[index] = _fail(outcome, exc, _since(start))
                if hold is not None:
                    outcome.blocked = hold.longest
                raise
            # The agent's own code raised CancelledError without this step being cancelled.
            _failed_async(run, outcome, exc, start)
        except BaseException as exc:  # KeyboardInterrupt, SystemExit: stop the step, re-raise later
            _aborted_async(run, outcome, exc, start)
        finally:
            if sem is not None:
                sem.release()
        if hold is not None:
            outcome.blocked = hold.longest
        run.outcomes[index] = outcome
        return outcome
    finally:
        countdown.finished += 1
        if countdown.waiter is not None:  # the step is waiting for the last agents
            countdown.wake_if_done()


def _aborted_async(
    run: _AsyncRun, outcome: AgentOutcome, exc: BaseException, start: float
) -> AgentOutcome:
    if run.abort is None:
        run.abort = exc
    run.cancel_all()
    return _fail(outcome, exc, _since(start))


def _failed_async(
    run: _AsyncRun, outcome: AgentOutcome, exc: BaseException, start: float
) -> AgentOutcome:
    _fail(outcome, exc, _since(start))
    if run.on_error == "raise" and run.error is None:
        run.error, run.error_agent = exc, outcome.agent
        run.cancel_all()
    return outcome


async def step_agents_parallel(
    agents: Iterable[Any],
    *,
    method: str = "step",
    on_error: OnError = "isolate",
    timeout: float | None = None,
    max_concurrency: int | None = None,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    max_workers: int | None = None,
) -> StepReport:
    """Run ``a<method>`` (or ``<method>`` in a worker thread) on every agent concurrently.

    Returns a :class:`StepReport` with one outcome per agent in start order. With
    ``on_error="isolate"`` (default) failures are logged and reported, never raised.
    With ``on_error="raise"`` the first failure is raised as the original exception
    after the other agents have been cancelled and awaited. ``timeout`` is per agent
    (seconds); an agent that exceeds it is cancelled and reported as ``"timeout"``
    (a sync agent's thread cannot be interrupted: it finishes in the background and
    its result is discarded). ``max_concurrency`` bounds the agents in flight.
    ``KeyboardInterrupt``, ``SystemExit`` and cancellation of the caller propagate
    after every started agent has been cancelled and awaited.
    """
    s = _settings("asyncio", on_error, timeout, max_concurrency, max_workers)
    agent_list = _as_list(agents)
    with _stepping():
        return await _step_async(agent_list, _check_method(method), args, kwargs or {}, s)


async def _step_async(
    agents: list[Any], method: str, args: Sequence[Any], kwargs: Mapping[str, Any], s: _Settings
) -> StepReport:
    if not agents:
        return StepReport([], method, "asyncio")
    sem = (
        asyncio.Semaphore(s.max_concurrency)
        if s.max_concurrency is not None and s.max_concurrency < len(agents)
        else None
    )
    run = _AsyncRun(len(agents), method, args, kwargs, s, sem)
    PAUSES.install()
    loop = asyncio.get_running_loop()
    tasks: list[asyncio.Task[AgentOutcome]] = []
    run.tasks = tasks
    # The loop's own task factory (tracing, context set-up), if it has one, makes and starts
    # each agent's task. Without one, Python 3.12+ starts each agent eagerly: it runs up to
    # its first await as its task is made, in the given order (a lazy start's order). Once
    # one has aborted the step or failed it in raise mode, the rest are made cancelled and
    # never start (not through the factory, which may start them eagerly), as a lazy start
    # cancels them before their first step.
    factory = loop.get_task_factory()
    # asyncio's own loops make a task, with no factory, as ``Task(coro, loop=loop)``: made
    # here directly, that spares a Python call per agent. A loop whose class has its own
    # ``create_task`` (tracing, uvloop) or a factory makes every agent's task itself.
    direct = factory is None and type(loop).create_task is _BASE_CREATE_TASK
    eager = _eager_task if direct else None
    if direct and eager is None:  # no agent runs before the loop does: nothing to check
        tasks[:] = [
            asyncio.Task(_run_one_async(run, a, i), loop=loop) for i, a in enumerate(agents)
        ]
    else:
        for i, a in enumerate(agents):
            coro = _run_one_async(run, a, i)
            if run.error is not None or run.abort is not None:
                task: asyncio.Task[AgentOutcome] = asyncio.Task(coro, loop=loop)
                task.cancel()
            elif eager is not None:
                task = eager(loop, coro)
            else:
                task = loop.create_task(coro)
            tasks.append(task)
    if run.error is not None or run.abort is not None:  # eager task factories run tasks early
        run.cancel_all()
    # countdown.wait() finishes only when every agent has, as gather(return_exceptions=True)
    # does: also after a failure cancels the rest, and when the caller is cancelled (it
    # cancels the agents, still waits for them, and hands back the CancelledError).
    # Our own tasks (no factory, no create_task of a loop subclass in between) run exactly
    # the coroutines that count themselves done: no scan of the tasks is needed after.
    cancelled = await run.countdown.wait(tasks, own=direct)
    # Raised outside any except block so the agent's exception keeps its own
    # __context__ and traceback.
    if run.abort is not None:
        raise run.abort
    if cancelled is not None:
        raise cancelled
    if run.error is not None:
        _raise_failure(run.error, run.error_agent, method)
    # A task ends cancelled, not with an outcome, only if someone else cancelled it:
    # this step cancels its tasks only to abort or in raise mode, and raised above.
    outcomes = run.outcomes
    if None in outcomes:
        for i, o in enumerate(outcomes):
            if o is None:
                outcomes[i] = _cancelled(agents[i], ended_with(tasks[i]))
    return _report(outcomes, method, "asyncio", s)  # type: ignore[arg-type]
