"""Parallel stepping for Mesa agents, resilient to per-agent failures.

Three modes run a method on many agents:

* ``"asyncio"``: agents with an async ``a<method>`` (e.g. ``astep``) are awaited
  concurrently on one event loop; agents with only the sync method run in worker
  threads so they never block the loop.
* ``"threading"``: agents run in a reusable thread pool; async methods run on an
  event loop owned by each worker thread and reused across steps.
* ``"sequential"``: agents run one at a time, in the order given (Mesa's shuffle
  order under automatic stepping), with the same isolation, report, ``on_error``,
  ``timeout`` and logging as the parallel modes: the reference the parallel runs
  are compared with. A sync agent without a timeout runs in the caller's thread;
  an async agent, or any agent with a timeout, runs in a worker thread.

By default (``on_error="isolate"``) every agent runs to completion whatever the
others raise; each failure is logged once on this module's logger and returned
in a :class:`StepReport`. ``on_error="raise"`` is the debugging mode: the first
failure propagates as the original exception once the other agents have been
cancelled (asyncio) or finished (threads).

:func:`enable_automatic_parallel_stepping` patches Mesa's ``shuffle_do`` so that
``self.agents.shuffle_do("step")`` runs in parallel when ``model.parallel_stepping``
is truthy, with exactly Mesa's shuffle (same RNG draws, agents started in that
order). Importing this module patches nothing.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import contextvars
import functools
import inspect
import logging
import math
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal

from mesa_llm.errors import AgentMethodMissingError, AgentTimeoutError

if TYPE_CHECKING:
    from mesa import Agent

__all__ = [
    "AgentOutcome",
    "StepReport",
    "acting_as",
    "current_agent",
    "disable_automatic_parallel_stepping",
    "enable_automatic_parallel_stepping",
    "parallel_stepping",
    "step_agents_multithreaded",
    "step_agents_parallel",
    "step_agents_parallel_sync",
]

logger = logging.getLogger(__name__)

Mode = Literal["asyncio", "threading", "sequential"]
OnError = Literal["isolate", "raise"]
Status = Literal["ok", "error", "timeout", "cancelled"]

MODES: Final = ("asyncio", "threading", "sequential")
ON_ERROR: Final = ("isolate", "raise")
DEFAULT_MAX_WORKERS: Final = 32
#: An async agent holding the event loop this long without awaiting is logged as blocking it.
BLOCKING_WARNING_SECONDS: Final = 0.1


# --------------------------------------------------------------------------- context


_current_agent: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "mesa_llm_current_agent", default=None
)


# How many agent steps enclose this context: a step started from inside an agent's step
# (a nested step) uses thread pools of its own depth, so it never waits for workers
# that its own callers are holding.
_depth: contextvars.ContextVar[int] = contextvars.ContextVar("mesa_llm_step_depth", default=0)

# Set inside a step that the library's event-loop thread is blocked waiting for (a
# nested step made synchronously from an async agent): steps nested in it must not
# wait for that loop either, so they run in threads.
_loop_blocked: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "mesa_llm_loop_blocked", default=False
)


def current_agent() -> Agent | None:
    """Return the agent whose step is running in this context (asyncio task or worker thread)."""
    return _current_agent.get()


@contextlib.contextmanager
def acting_as(agent: Agent | None) -> Iterator[Agent | None]:
    """Make :func:`current_agent` return ``agent`` inside the block (for sequential code)."""
    token = _current_agent.set(agent)
    try:
        yield agent
    finally:
        _current_agent.reset(token)


# --------------------------------------------------------------------------- reports


@dataclass(slots=True)
class AgentOutcome:
    """What happened to one agent in a step.

    ``blocked`` is the longest stretch, in seconds, that the agent's async method
    held the event loop without awaiting (asyncio mode only; 0.0 otherwise). While
    it does, no other agent runs and no timeout can fire.
    """

    agent: Any
    unique_id: Any
    status: Status
    value: Any = None
    exception: BaseException | None = None
    elapsed: float = 0.0
    blocked: float = 0.0

    @property
    def ok(self) -> bool:
        """True if the agent's method returned normally."""
        return self.status == "ok"

    def __str__(self) -> str:
        what = type(self.agent).__name__
        if self.exception is None:
            return f"agent {self.unique_id} ({what}): {self.status} in {self.elapsed * 1e3:.1f} ms"
        exc = self.exception
        return (
            f"agent {self.unique_id} ({what}): {self.status} {type(exc).__name__}: {exc} "
            f"after {self.elapsed * 1e3:.1f} ms"
        )


@dataclass(slots=True)
class StepReport:
    """One :class:`AgentOutcome` per agent, in the order the agents were started."""

    outcomes: list[AgentOutcome] = field(default_factory=list)
    method: str = "step"
    mode: str = "asyncio"

    @property
    def succeeded(self) -> list[AgentOutcome]:
        """Outcomes of the agents whose method returned normally, in start order."""
        return [o for o in self.outcomes if o.status == "ok"]

    @property
    def failed(self) -> list[AgentOutcome]:
        """Outcomes of the agents that raised, timed out or were cancelled, in start order."""
        return [o for o in self.outcomes if o.status != "ok"]

    @property
    def ok(self) -> bool:
        """True if every agent succeeded (an empty step is ok)."""
        return all(o.status == "ok" for o in self.outcomes)

    @property
    def errors(self) -> dict[Any, BaseException]:
        """Map of unique_id to the exception of every failed agent."""
        return {o.unique_id: o.exception for o in self.outcomes if o.exception is not None}

    def __len__(self) -> int:
        return len(self.outcomes)

    def __iter__(self) -> Iterator[AgentOutcome]:
        return iter(self.outcomes)

    def raise_for_failures(self) -> None:
        """Raise an ``ExceptionGroup`` of the failures (each noted with its agent), if any."""
        failed = self.failed
        if not failed:
            return
        excs = []
        for o in failed:
            assert o.exception is not None
            _note_agent(o.exception, o.agent, self.method)
            excs.append(o.exception)
        raise BaseExceptionGroup(
            f"mesa_llm: {len(failed)} of {len(self.outcomes)} agents failed in "
            f"'{self.method}' ({self.mode} mode)",
            excs,
        )

    def __str__(self) -> str:
        n_failed = sum(o.status != "ok" for o in self.outcomes)
        lines = [
            f"StepReport({self.method!r}, {self.mode}): {len(self.outcomes)} agents, "
            f"{len(self.outcomes) - n_failed} ok, {n_failed} failed"
        ]
        lines += [f"  {o}" for o in self.outcomes if o.status != "ok"]
        return "\n".join(lines)


def _note_agent(exc: BaseException, agent: Any, method: str) -> None:
    note = (
        f"mesa_llm: raised by agent {getattr(agent, 'unique_id', None)} "
        f"({type(agent).__name__}.{method})"
    )
    if note not in getattr(exc, "__notes__", ()):
        exc.add_note(note)


def _log_failure(agent: Any, method: str, exc: BaseException) -> None:
    model = getattr(agent, "model", None)
    logger.error(
        "mesa_llm: agent %s (%s.%s) failed at step %s: %s: %s",
        getattr(agent, "unique_id", None),
        type(agent).__name__,
        method,
        getattr(model, "steps", "?"),
        type(exc).__name__,
        exc,
        exc_info=(type(exc), exc, exc.__traceback__),
    )


def _report(outcomes: list[AgentOutcome], method: str, mode: str, s: _Settings) -> StepReport:
    """The step's report; the one place every engine logs failures and loop-blocking agents."""
    warn_after = BLOCKING_WARNING_SECONDS
    if s.timeout is not None:
        warn_after = min(warn_after, s.timeout)
    for o in outcomes:
        if o.exception is not None and s.on_error == "isolate":
            _log_failure(o.agent, method, o.exception)
        if o.blocked >= warn_after:
            logger.warning(
                "mesa_llm: agent %s (%s.a%s) blocked the event loop for %.3f s without "
                "awaiting; no other agent ran and no timeout could fire meanwhile. Await "
                "blocking work (asyncio.to_thread), give the agent a sync %s() instead, "
                "or use threading mode",
                o.unique_id,
                type(o.agent).__name__,
                method,
                o.blocked,
                method,
            )
    return StepReport(outcomes, method, mode)


# --------------------------------------------------------------------------- validation


@dataclass(frozen=True, slots=True)
class _Settings:
    mode: str = "asyncio"
    on_error: str = "isolate"
    timeout: float | None = None
    max_concurrency: int | None = None
    max_workers: int | None = None


def _check_choice(name: str, value: Any, valid: Sequence[str]) -> None:
    if value not in valid:
        raise ValueError(
            f"mesa_llm: invalid {name}={value!r}; valid values are "
            + ", ".join(repr(v) for v in valid)
        )


def _check_positive(name: str, value: Any, *, integer: bool) -> None:
    if value is None:
        return
    kind = int if integer else (int, float)
    if (
        isinstance(value, bool)
        or not isinstance(value, kind)
        or not math.isfinite(value)  # nan would time out everything, inf overflows waits
        or value <= 0
    ):
        want = "an integer >= 1" if integer else "a finite number of seconds > 0"
        raise ValueError(f"mesa_llm: invalid {name}={value!r}; expected {want} or None")


def _settings(
    mode: str = "asyncio",
    on_error: str = "isolate",
    timeout: float | None = None,
    max_concurrency: int | None = None,
    max_workers: int | None = None,
) -> _Settings:
    _check_choice("mode", mode, MODES)
    _check_choice("on_error", on_error, ON_ERROR)
    _check_positive("timeout", timeout, integer=False)
    _check_positive("max_concurrency", max_concurrency, integer=True)
    _check_positive("max_workers", max_workers, integer=True)
    return _Settings(mode, on_error, timeout, max_concurrency, max_workers)


def _check_method(method: Any) -> str:
    if not isinstance(method, str) or not method:
        raise ValueError(
            f"mesa_llm: invalid method={method!r}; expected a non-empty string naming the "
            f"agents' method, e.g. 'step'"
        )
    return method


def _as_list(agents: Iterable[Any]) -> list[Any]:
    """The agents as a list, checked before any runs: Mesa agents, each at most once.

    A duplicated agent is rejected rather than stepped once: a list that names an
    agent twice is a bug in the caller, and stepping it twice concurrently would race.
    """
    if agents is None or isinstance(agents, (str, bytes)):
        raise TypeError(
            f"mesa_llm: agents must be a list, an iterable of agents or a Mesa agent set, "
            f"not {type(agents).__name__}"
        )
    found = agents if isinstance(agents, list) else list(agents)
    seen: dict[int, int] = {}
    for i, agent in enumerate(found):
        if not hasattr(agent, "unique_id"):
            raise TypeError(
                f"mesa_llm: agents[{i}] is a {type(agent).__name__}, not a Mesa agent "
                f"(it has no unique_id); pass Mesa agents only"
            )
        first = seen.setdefault(id(agent), i)
        if first != i:
            raise ValueError(
                f"mesa_llm: agent {agent.unique_id} ({type(agent).__name__}) is listed twice "
                f"(agents[{first}] and agents[{i}]); each agent is stepped once per step, "
                f"so remove the duplicate"
            )
    return found


# --------------------------------------------------------------------------- method lookup

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


# --------------------------------------------------------------------------- thread pools


class _Pools:
    """Reusable thread pools keyed by size, plus each worker thread's own event loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pools: dict[tuple[int, int], concurrent.futures.ThreadPoolExecutor] = {}
        self._loops: list[asyncio.AbstractEventLoop] = []
        self._local = threading.local()
        # Threads abandoned by a per-agent timeout that may still be running.
        self.orphans: set[concurrent.futures.Future[Any]] = set()

    def get(self, max_workers: int | None) -> concurrent.futures.ThreadPoolExecutor:
        """The pool of this size for the current nesting depth of steps."""
        key = (max_workers or DEFAULT_MAX_WORKERS, _depth.get() + _loop_blocked.get())
        pool = self._pools.get(key)
        if pool is None:
            with self._lock:
                pool = self._pools.get(key)
                if pool is None:
                    size, depth = key
                    prefix = f"mesa_llm-{size}" + (f"-nested{depth}" if depth else "")
                    pool = concurrent.futures.ThreadPoolExecutor(
                        max_workers=size, thread_name_prefix=prefix
                    )
                    self._pools[key] = pool
        return pool

    def worker_loop(self) -> asyncio.AbstractEventLoop:
        """This worker thread's event loop, created once and reused across steps."""
        loop: asyncio.AbstractEventLoop | None = getattr(self._local, "loop", None)
        if loop is None or loop.is_closed():
            loop = asyncio.new_event_loop()
            self._local.loop = loop
            with self._lock:
                self._loops.append(loop)
        return loop

    def discard_worker_loop(self, interrupt: BaseException) -> None:
        """Drop this worker's loop after an interrupt stopped it with tasks still pending.

        A task left pending there would resume, and re-raise the interrupt, in the
        next step run on this worker; its tasks are cancelled and the loop closed.
        """
        loop: asyncio.AbstractEventLoop | None = getattr(self._local, "loop", None)
        self._local.loop = None
        if loop is None:
            return
        with self._lock:
            if loop in self._loops:
                self._loops.remove(loop)
        _close_loop(loop, interrupt)

    def orphan(
        self, future: concurrent.futures.Future[Any], pool: concurrent.futures.ThreadPoolExecutor
    ) -> None:
        """Leave a timed-out agent's thread running and retire the pool it holds a worker of.

        Later steps get a fresh pool, so they never queue behind a thread that may
        never return. The retired pool is not shut down (a step in flight may still
        submit to it); its idle threads exit once nothing references it.
        """
        self.orphans.add(future)
        future.add_done_callback(self.orphans.discard)
        with self._lock:
            for key, current in list(self._pools.items()):
                if current is pool:
                    del self._pools[key]

    def shutdown(self, *, wait: bool = True) -> None:
        """Shut every pool down and close the worker loops that are not running."""
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
            loops, self._loops = self._loops, []
        wait = wait and not self.orphans
        for pool in pools:
            pool.shutdown(wait=wait, cancel_futures=True)
        _close_loops(loops)


def _close_loops(loops: list[asyncio.AbstractEventLoop]) -> None:
    """Close loops from this thread, or from a helper thread if this one runs a loop.

    ``run_until_complete`` refuses to run inside a running loop (a Jupyter cell,
    an async ``main``), so teardown there happens in a short-lived thread.
    """
    if not loops:
        return
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        for loop in loops:
            _close_loop(loop)
        return
    closer = threading.Thread(
        target=lambda: [_close_loop(loop) for loop in loops], name="mesa_llm-teardown"
    )
    closer.start()
    closer.join()


def _close_loop(loop: asyncio.AbstractEventLoop, propagating: BaseException | None = None) -> None:
    if loop.is_closed() or loop.is_running():
        return
    try:
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        if pending:
            try:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            except BaseException as again:
                # A cancelled task re-raised the interrupt that stopped this loop, which
                # is already propagating: closing the loop is all that is left.
                if again is not propagating:
                    raise
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()


_pools = _Pools()


# --------------------------------------------------------------------------- asyncio mode


class _AsyncRun:
    """Shared state of one asyncio-mode step: what aborted it, and the tasks to cancel."""

    __slots__ = ("abort", "error", "error_agent", "method", "on_error", "tasks")

    def __init__(self, method: str, on_error: str) -> None:
        self.method = method
        self.on_error = on_error
        self.tasks: list[asyncio.Task[AgentOutcome]] | None = None
        self.error: BaseException | None = None  # first failure, in raise mode
        self.error_agent: Any = None
        self.abort: BaseException | None = None  # KeyboardInterrupt / SystemExit from an agent

    def cancel_all(self) -> None:
        for task in self.tasks or ():
            task.cancel()


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
    cf: concurrent.futures.Future[Any],
    pool: concurrent.futures.ThreadPoolExecutor,
    started: list[float],
    agent: Any,
    method: str,
    timeout: float | None,
) -> Any:
    """Await a worker-thread future.

    ``timeout`` counts from when the thread starts the agent, not from when it was
    queued. On timeout the thread is left to finish in the background (it cannot
    be interrupted). On cancellation (raise mode, KeyboardInterrupt, a cancelled
    caller) an agent not started yet never starts, and a running one is waited
    for, so nothing outlives the step that started it.
    """
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
    pool = _pools.get(s.max_workers)
    cf = pool.submit(ctx.run, _call_captured, started, fn, args, kwargs)
    value = await _await_thread(cf, pool, started, agent, method, s.timeout)
    if inspect.isawaitable(value):  # a sync wrapper around a coroutine function
        return await _with_timeout(value, agent, method, s.timeout)
    return value


async def _with_timeout(aw: Awaitable[Any], agent: Any, method: str, timeout: float | None) -> Any:
    if timeout is None:
        return await aw
    cm = asyncio.timeout(timeout)
    try:
        async with cm:
            return await aw
    except TimeoutError as exc:
        if cm.expired():
            raise AgentTimeoutError(agent, method, timeout) from exc
        raise


class _LoopHold:
    """Drives an agent's coroutine, timing the longest stretch it runs without awaiting.

    Python cannot pre-empt a coroutine that blocks the event loop (a sync SDK call
    in ``astep``), but it can see it: each ``send`` into the coroutine is timed.
    """

    __slots__ = ("coro", "longest")

    def __init__(self, coro: Coroutine[Any, Any, Any]) -> None:
        self.coro = coro
        self.longest = 0.0

    def __await__(self) -> Any:
        coro, clock = self.coro, time.perf_counter
        value: Any = None
        thrown: BaseException | None = None
        while True:
            t0 = clock()
            try:
                out = coro.send(value) if thrown is None else coro.throw(thrown)
            except StopIteration as stop:
                return stop.value
            finally:
                self.longest = max(self.longest, clock() - t0)
            try:
                value, thrown = (yield out), None
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # cancellation and the like: passed to the agent
                value, thrown = None, exc


async def _run_one_async(
    run: _AsyncRun,
    agent: Any,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    s: _Settings,
    sem: asyncio.Semaphore | None,
) -> AgentOutcome:
    _current_agent.set(agent)  # this task's own context copy
    if sem is not None:
        await sem.acquire()
    start = time.perf_counter()
    hold: _LoopHold | None = None
    try:
        fn, kind = _resolve(agent, run.method)
        if kind == _ASYNC:
            aw = fn(*args, **kwargs)
            if inspect.iscoroutine(aw):
                aw = hold = _LoopHold(aw)
            value = await _with_timeout(aw, agent, run.method, s.timeout)
        else:
            value = await _call_async(fn, kind, agent, run.method, args, kwargs, s)
            if type(value) is _Raised:
                exc = value.exc
                if not _is_abort(exc):
                    return _failed_async(run, agent, exc, start)
                return _aborted_async(run, agent, exc, start)
        outcome = AgentOutcome(agent, agent.unique_id, "ok", value, None, _since(start))
    except Exception as exc:
        outcome = _failed_async(run, agent, exc, start)
    except asyncio.CancelledError as exc:
        task = asyncio.current_task()
        if task is None or task.cancelling():
            raise
        # The agent's own code raised CancelledError without this step being cancelled.
        outcome = _failed_async(run, agent, exc, start)
    except BaseException as exc:  # KeyboardInterrupt, SystemExit: stop the step, re-raise later
        outcome = _aborted_async(run, agent, exc, start)
    finally:
        if sem is not None:
            sem.release()
    if hold is not None:
        outcome.blocked = hold.longest
    return outcome


def _since(start: float) -> float:
    return time.perf_counter() - start


def _aborted_async(run: _AsyncRun, agent: Any, exc: BaseException, start: float) -> AgentOutcome:
    if run.abort is None:
        run.abort = exc
    run.cancel_all()
    return AgentOutcome(agent, agent.unique_id, "error", None, exc, _since(start))


def _status_of(exc: BaseException, agent: Any) -> Status:
    if isinstance(exc, AgentTimeoutError) and exc.agent is agent:
        return "timeout"
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    return "error"


def _failed_async(run: _AsyncRun, agent: Any, exc: BaseException, start: float) -> AgentOutcome:
    outcome = AgentOutcome(
        agent, agent.unique_id, _status_of(exc, agent), None, exc, time.perf_counter() - start
    )
    if run.on_error == "raise" and run.error is None:
        run.error, run.error_agent = exc, agent
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
    run = _AsyncRun(method, s.on_error)
    sem = (
        asyncio.Semaphore(s.max_concurrency)
        if s.max_concurrency is not None and s.max_concurrency < len(agents)
        else None
    )
    loop = asyncio.get_running_loop()
    run.tasks = tasks = [
        loop.create_task(_run_one_async(run, a, args, kwargs, s, sem)) for a in agents
    ]
    if run.error is not None or run.abort is not None:  # eager task factories run tasks early
        run.cancel_all()
    # With return_exceptions=True, gather() finishes only when every agent has: also
    # after a failure cancels the rest, and when the caller is cancelled (it cancels
    # the agents and still waits for them). Without it, it would return as soon as
    # one task ended cancelled, leaving the others running.
    cancelled: asyncio.CancelledError | None = None
    results: list[Any] = []
    try:
        results = await asyncio.gather(*tasks, return_exceptions=True)
    except asyncio.CancelledError as exc:  # the caller is being cancelled
        cancelled = exc
    # Raised outside any except block so the agent's exception keeps its own
    # __context__ and traceback.
    if run.abort is not None:
        raise run.abort
    if cancelled is not None:
        raise cancelled
    if run.error is not None:
        _note_agent(run.error, run.error_agent, method)
        raise run.error
    outcomes = [
        r if type(r) is AgentOutcome else _cancelled_outcome(a, r)
        for r, a in zip(results, agents, strict=True)
    ]
    return _report(outcomes, method, "asyncio", s)


def _cancelled_outcome(agent: Any, exc: BaseException) -> AgentOutcome:
    # Only someone else cancelling an agent's task gets here (we cancel only to abort).
    return AgentOutcome(agent, agent.unique_id, "cancelled", None, exc)


# --------------------------------------------------------------------------- threading mode


class _ThreadRun:
    """Shared state of one threading-mode step."""

    __slots__ = ("args", "kwargs", "method", "pool", "started", "stop", "timeout")

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
        self.stop = False  # set on abort or first failure in raise mode: start nothing more
        self.pool: concurrent.futures.ThreadPoolExecutor | None = None


def _run_one_threaded(run: _ThreadRun, agent: Any, index: int) -> AgentOutcome:
    if run.stop:
        return AgentOutcome(agent, agent.unique_id, "cancelled")
    _current_agent.set(agent)  # runs inside a copied context
    _depth.set(_depth.get() + 1)
    method = run.method
    start = time.perf_counter()
    on_loop = False
    try:
        fn, kind = _resolve(agent, method)
        run.started[index] = time.monotonic() + (run.ASYNC_GRACE if kind == _ASYNC else 0.0)
        value = fn(*run.args, **run.kwargs)
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
        return AgentOutcome(
            agent, agent.unique_id, _status_of(exc, agent), None, exc, time.perf_counter() - start
        )
    return AgentOutcome(agent, agent.unique_id, "ok", value, None, time.perf_counter() - start)


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


def _step_sequential(
    agents: list[Any], method: str, args: Sequence[Any], kwargs: Mapping[str, Any], s: _Settings
) -> StepReport:
    """Run the agents one at a time, in order, with the parallel modes' isolation and report.

    A sync agent without a timeout runs in the caller's thread, exactly as Mesa
    would call it; an async agent, or any agent with a timeout, runs in a worker
    thread (on that thread's loop) so the timeout can be kept and a running loop in
    the caller's thread is never needed.
    """
    outcomes: list[AgentOutcome] = []
    for agent in agents:
        if s.timeout is None and _is_sync(agent, method):
            run = _ThreadRun(1, method, args, kwargs, s)
            outcome = contextvars.copy_context().run(_run_one_threaded, run, agent, 0)
            _raise_if_fatal(outcome, method, s)
        else:
            [outcome] = _run_threaded([agent], method, args, kwargs, s)
        outcomes.append(outcome)
    return _report(outcomes, method, "sequential", s)


def _is_sync(agent: Any, method: str) -> bool:
    try:
        return _resolve(agent, method)[1] == _SYNC
    except AgentMethodMissingError:
        return True  # reported as the agent's error outcome


def _raise_if_fatal(outcome: AgentOutcome, method: str, s: _Settings) -> None:
    """Raise an interrupt from an agent, or in raise mode its failure (noted with the agent)."""
    exc = outcome.exception
    if exc is not None and (_is_abort(exc) or s.on_error == "raise"):
        if not _is_abort(exc):
            _note_agent(exc, outcome.agent, method)
        raise exc


def _run_threaded(
    agents: list[Any], method: str, args: Sequence[Any], kwargs: Mapping[str, Any], s: _Settings
) -> list[AgentOutcome]:
    if not agents:
        return []
    pool = _pools.get(s.max_workers)
    run = _ThreadRun(len(agents), method, args, kwargs, s)
    run.pool = pool
    copy_context = contextvars.copy_context
    futures = [
        pool.submit(copy_context().run, _run_one_threaded, run, a, i) for i, a in enumerate(agents)
    ]
    try:
        if s.timeout is None and s.on_error == "isolate":
            outcomes = [f.result() for f in futures]
        else:
            outcomes = _collect_threaded(run, agents, futures, s)
    except BaseException:  # KeyboardInterrupt in the caller, or raise mode
        run.stop = True
        _stop_threaded(futures)
        raise
    abort = next((o.exception for o in outcomes if _is_abort(o.exception)), None)
    if abort is not None:
        raise abort
    return outcomes


def _is_abort(exc: BaseException | None) -> bool:
    return exc is not None and not isinstance(exc, (Exception, asyncio.CancelledError))


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
            for f in list(pending):
                t = run.started[index[f]]
                if t is not None and now - t >= timeout:
                    pending.discard(f)
                    assert run.pool is not None
                    _pools.orphan(f, run.pool)
                    agent = agents[index[f]]
                    exc = AgentTimeoutError(agent, run.method, timeout)
                    results[index[f]] = AgentOutcome(
                        agent, agent.unique_id, "timeout", None, exc, now - t
                    )
                    if s.on_error == "raise":
                        _note_agent(exc, agent, run.method)
                        raise exc
    return [r for r in results if r is not None]


# --------------------------------------------------------------------------- the sync wrapper


@dataclass(slots=True)
class _Carried:
    exc: BaseException


class _LoopThread:
    """One event loop, in a daemon thread, that runs every synchronous asyncio-mode step.

    Reusing one loop keeps loop-bound clients (litellm's async HTTP clients) valid
    across steps and works whether or not the caller is inside a running loop.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._escaped: list[BaseException] = []
        self._thread = threading.Thread(target=self._serve, name="mesa_llm-event-loop", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        while True:
            try:
                self.loop.run_forever()
                return  # stopped by close()
            except BaseException as exc:
                # KeyboardInterrupt/SystemExit raised in a child task of an agent escapes
                # run_forever(). The task keeps it as its result for whoever awaits it;
                # the loop keeps serving, and the step's caller gets it too (run()).
                self._escaped.append(exc)

    def run(self, make_coro: Callable[[], Coroutine[Any, Any, StepReport]]) -> StepReport:
        if threading.current_thread() is self._thread:
            raise RuntimeError(
                "mesa_llm: step_agents_parallel_sync() was called from inside an agent's "
                "async step; use 'await step_agents_parallel(...)' there instead"
            )
        ctx = contextvars.copy_context()
        done = threading.Event()
        box: dict[str, asyncio.Task[Any]] = {}

        async def guarded() -> Any:
            # KeyboardInterrupt/SystemExit raised in a task would escape run_forever()
            # and kill this thread: carry it back to the caller's thread instead.
            try:
                return await make_coro()
            except (KeyboardInterrupt, SystemExit) as exc:
                return _Carried(exc)

        def start() -> None:
            task = self.loop.create_task(guarded(), context=ctx)
            task.add_done_callback(lambda _: done.set())
            box["task"] = task

        self.loop.call_soon_threadsafe(start)
        try:
            done.wait()
        except BaseException:  # KeyboardInterrupt in the caller: stop the agents first
            self.loop.call_soon_threadsafe(lambda: box["task"].cancel() if box else None)
            done.wait()
            raise
        result = box["task"].result()
        escaped, self._escaped = self._escaped, []
        if isinstance(result, _Carried):
            raise result.exc
        if escaped:  # an interrupt from a task nobody awaited: never lose it
            raise escaped[0]
        return result  # type: ignore[no-any-return]

    def close(self) -> None:
        if self.loop.is_closed():
            return

        async def _drain() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.loop.shutdown_asyncgens()

        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(_drain(), self.loop).result(timeout=5)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=5)
        if not self.loop.is_running():
            self.loop.close()


_state_lock = threading.RLock()
_idle = threading.Condition(_state_lock)  # notified when no step is in flight
_in_flight = 0
_draining = False  # disable_... is waiting for the steps in flight
_loop_thread: _LoopThread | None = None
_enabled: _Settings | None = None  # None: automatic stepping is off
_originals: dict[type, dict[str, Any]] = {}
# Models given a last_step_report: disabling sets it back to None, so it is never stale.
_reported: weakref.WeakSet[Any] = weakref.WeakSet()


@contextlib.contextmanager
def _stepping() -> Iterator[None]:
    """Count a step in flight, so that disabling waits for it instead of cancelling it."""
    global _in_flight
    nested = _depth.get() > 0 or _current_agent.get() is not None or _on_loop_thread()
    with _idle:
        # A disable in progress goes first, but waits for the steps in flight: a step
        # nested inside one of them must go on, or the two would wait for each other.
        if not nested:
            _idle.wait_for(lambda: not _draining)
        _in_flight += 1
    try:
        yield
    finally:
        with _idle:
            _in_flight -= 1
            if not _in_flight:
                _idle.notify_all()


def _on_loop_thread() -> bool:
    lt = _loop_thread
    return lt is not None and threading.current_thread() is lt._thread


def _get_loop_thread() -> _LoopThread:
    global _loop_thread
    lt = _loop_thread
    if lt is None:
        with _state_lock:
            if _loop_thread is None:
                _loop_thread = _LoopThread()
            lt = _loop_thread
    return lt


_UNSET: Any = object()


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
    base = _enabled or _Settings()
    given = {
        "mode": mode,
        "on_error": on_error,
        "timeout": timeout,
        "max_concurrency": max_concurrency,
        "max_workers": max_workers,
    }
    merged: dict[str, Any] = {k: getattr(base, k) if v is _UNSET else v for k, v in given.items()}
    s = _settings(**merged)
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


# --------------------------------------------------------------------------- automatic stepping


def _agent_set_types() -> list[type]:
    """Mesa's agent-set classes that define ``shuffle_do`` (``_HardKeyAgentSet`` on Mesa >= 3.5)."""
    import mesa.agent

    found: list[type] = []
    candidates: list[Any] = [getattr(mesa.agent, "AgentSet", None)]
    try:
        import mesa.agentset as agentset_module
    except ImportError:
        agentset_module = None
    if agentset_module is not None:
        candidates += [
            getattr(agentset_module, "AgentSet", None),
            getattr(agentset_module, "_HardKeyAgentSet", None),
        ]
    for cls in candidates:
        if isinstance(cls, type) and "shuffle_do" in cls.__dict__ and cls not in found:
            found.append(cls)
    return found


def _shuffled(agentset: Any) -> list[Any]:
    """The agents in the order Mesa's ``shuffle_do`` would step them, with the same RNG draws."""
    store = agentset._agents
    if hasattr(store, "keyrefs"):  # AgentSet: a WeakKeyDictionary
        refs = list(store.keyrefs())
        agentset.random.shuffle(refs)
        return [a for r in refs if (a := r()) is not None]
    agents = list(store)  # _HardKeyAgentSet: strong keys
    agentset.random.shuffle(agents)
    return agents


def _make_shuffle_do(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def shuffle_do(self: Any, method: str | Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        settings = _enabled
        first = next(iter(self._agents), None) if isinstance(method, str) else None
        model = getattr(first, "model", None)
        if settings is None or model is None or not getattr(model, "parallel_stepping", False):
            if settings is not None and model is not None:
                model.last_step_report = None  # Mesa's stepping reports nothing: not stale
            return original(self, method, *args, **kwargs)
        agents = _shuffled(self)
        report = step_agents_parallel_sync(
            agents,
            method=method,  # type: ignore[arg-type]
            mode=settings.mode,  # type: ignore[arg-type]
            args=args,
            kwargs=kwargs,
        )
        model.last_step_report = report
        _reported.add(model)
        return self

    shuffle_do.__mesa_llm_patched__ = True  # type: ignore[attr-defined]
    return shuffle_do


async def _do_async(self: Any, method: str, *args: Any, **kwargs: Any) -> StepReport:
    """Run ``method`` concurrently on every agent of the set; return a :class:`StepReport`."""
    s = _enabled or _Settings()
    with _stepping():
        return await _step_async(list(self), method, args, kwargs, s)


def enable_automatic_parallel_stepping(
    mode: Mode = "asyncio",
    *,
    on_error: OnError = "isolate",
    timeout: float | None = None,
    max_concurrency: int | None = None,
    max_workers: int | None = None,
) -> None:
    """Make ``agents.shuffle_do(name)`` run in parallel on models with ``parallel_stepping`` set.

    Patches ``shuffle_do`` (and adds ``do_async``) on Mesa's agent-set classes, including
    ``_HardKeyAgentSet`` on Mesa >= 3.5. Idempotent: calling it again only changes the
    settings. ``mode`` is ``"asyncio"``, ``"threading"`` or ``"sequential"`` (one agent at
    a time in Mesa's shuffle order, isolated and reported like the parallel modes).
    Every such step leaves its :class:`StepReport` on ``model.last_step_report``; while
    enabled, a model with ``parallel_stepping`` off is stepped by Mesa's own
    ``shuffle_do`` and its ``last_step_report`` is set to None.
    """
    global _enabled
    settings = _settings(mode, on_error, timeout, max_concurrency, max_workers)
    with _state_lock:
        if not _originals:
            for cls in _agent_set_types():
                saved = {"shuffle_do": cls.__dict__["shuffle_do"]}
                if "do_async" in cls.__dict__:
                    saved["do_async"] = cls.__dict__["do_async"]
                _originals[cls] = saved
                cls.shuffle_do = _make_shuffle_do(saved["shuffle_do"])  # type: ignore[attr-defined]
                cls.do_async = _do_async  # type: ignore[attr-defined]
        _enabled = settings


def disable_automatic_parallel_stepping() -> None:
    """Restore Mesa's exact ``shuffle_do``, stop the event loop and shut the thread pools down.

    Steps running in other threads are waited for, not cancelled (steps nested in
    them go on). Calling it from inside an agent's step is an error (the step would
    wait for itself). Safe to call from code running in an event loop. Every model
    given a ``last_step_report`` gets ``None`` there, so no report outlives the mode.
    """
    global _draining
    if _depth.get() or _on_loop_thread():
        raise RuntimeError(
            "mesa_llm: disable_automatic_parallel_stepping() was called from inside an "
            "agent's step; call it after the step has returned"
        )
    with _idle:
        _draining = True
        try:
            _idle.wait_for(lambda: not _in_flight)
            _teardown()
        finally:
            _draining = False
            _idle.notify_all()


def _teardown() -> None:
    """Restore Mesa's methods, close the loop and the pools (with ``_state_lock`` held)."""
    global _enabled, _loop_thread
    for cls, saved in _originals.items():
        cls.shuffle_do = saved["shuffle_do"]  # type: ignore[attr-defined]
        if "do_async" in saved:
            cls.do_async = saved["do_async"]  # type: ignore[attr-defined]
        else:
            with contextlib.suppress(AttributeError):
                delattr(cls, "do_async")
    _originals.clear()
    _enabled = None
    for model in list(_reported):
        model.last_step_report = None
    _reported.clear()
    lt, _loop_thread = _loop_thread, None
    # Still under the lock: no step can start on the loop or pools being shut down.
    if lt is not None:
        lt.close()
    _pools.shutdown()


@contextlib.contextmanager
def parallel_stepping(
    mode: Mode = "asyncio",
    *,
    on_error: OnError = "isolate",
    timeout: float | None = None,
    max_concurrency: int | None = None,
    max_workers: int | None = None,
) -> Iterator[None]:
    """Enable automatic parallel stepping inside the block; restore the previous state on exit."""
    previous = _enabled
    enable_automatic_parallel_stepping(
        mode,
        on_error=on_error,
        timeout=timeout,
        max_concurrency=max_concurrency,
        max_workers=max_workers,
    )
    try:
        yield
    finally:
        if previous is None:
            disable_automatic_parallel_stepping()
        else:
            enable_automatic_parallel_stepping(
                previous.mode,  # type: ignore[arg-type]
                on_error=previous.on_error,  # type: ignore[arg-type]
                timeout=previous.timeout,
                max_concurrency=previous.max_concurrency,
                max_workers=previous.max_workers,
            )


def _shutdown_at_exit() -> None:
    lt = _loop_thread
    if lt is not None:
        lt.close()
    _pools.shutdown(wait=False)


atexit.register(_shutdown_at_exit)
