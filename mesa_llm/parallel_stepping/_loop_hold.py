"""How long an async agent holds the event loop without awaiting (``AgentOutcome.blocked``)."""

from __future__ import annotations

import time
from collections.abc import Coroutine
from typing import Any

from mesa_llm.parallel_stepping._gc_pauses import PAUSES

__all__ = ["_LoopHold"]


class _LoopHold:
    """Drives an agent's coroutine, timing the longest stretch it runs without awaiting.

    Python cannot pre-empt a coroutine that blocks the event loop (a sync SDK call
    in ``astep``), but it can see it: each ``send`` into the coroutine is timed.
    Without a timeout, :func:`_run_one_async` makes the first ``send`` itself and
    makes a hold only for an agent that suspended (``out``: what it yielded,
    ``longest``: how long that first ``send`` took); ``await hold`` drives the rest.
    Garbage-collector pauses inside a ``send`` are not the agent's (``_gc_pauses``).
    """

    __slots__ = ("coro", "longest", "out", "started")

    def __init__(
        self,
        coro: Coroutine[Any, Any, Any],
        started: bool = False,
        out: Any = None,
        longest: float = 0.0,
    ) -> None:
        self.coro = coro
        self.started = started
        self.out = out  # what the first send yielded (None after ``asyncio.sleep(0)``)
        self.longest = longest

    def __await__(self) -> Any:
        coro, clock, pauses = self.coro, time.perf_counter, PAUSES
        out, self.out = self.out, None
        if not self.started:  # the first send happens here
            t0, g0 = clock(), pauses.total
            try:
                out = coro.send(None)
            except StopIteration as stop:
                return stop.value
            finally:
                self.longest = clock() - t0 - (pauses.total - g0)
        while True:
            try:
                value, thrown = (yield out), None
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # cancellation and the like: passed to the agent
                value, thrown = None, exc
            t0, g0 = clock(), pauses.total
            try:
                out = coro.send(value) if thrown is None else coro.throw(thrown)
            except StopIteration as stop:
                return stop.value
            finally:
                self.longest = max(self.longest, clock() - t0 - (pauses.total - g0))
