"""Wait for every task of an asyncio-mode step as ``gather(return_exceptions=True)`` does, lighter.

``gather`` adds a done callback to each task: a copy of the caller's context per task,
and, as each task ends, a scheduled callback (a handle and its arguments) that stays
alive until the loop runs it. At ten thousand agents those are tens of thousands more
objects alive through the step, for the garbage collector to walk again and again
(the step ends up paying for a full collection of the process's heap).

Here each task's coroutine is wrapped in a :class:`_Counted`, which counts the task
down the moment its coroutine finishes, however it finishes: returning, raising, or
cancelled before it ever started (a task cancelled before its first step throws the
cancellation into its coroutine, so the wrapper sees that too). The last one wakes
the step. Results are read from the tasks once all are done.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator
from typing import Any

__all__ = ["Countdown"]


class Countdown:
    """The tasks of one step still running; :meth:`wait` returns when none is."""

    __slots__ = ("pending", "waiter")

    def __init__(self) -> None:
        self.pending = 0
        self.waiter: asyncio.Future[None] | None = None

    def wrap(self, coro: Coroutine[Any, Any, Any]) -> Coroutine[Any, Any, Any]:
        """``coro``, counted: make a task of the result."""
        self.pending += 1
        return _Counted(coro, self)

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(
        self, tasks: list[asyncio.Task[Any]]
    ) -> tuple[list[Any], asyncio.CancelledError | None]:
        """Wait until every task is done; return each one's result or exception, in order.

        A cancelled task gives the ``CancelledError`` it ended with. If the caller is
        cancelled meanwhile, every task is cancelled and still waited for (as ``gather``
        does), and that ``CancelledError`` is returned second, for the caller to raise.
        """
        loop = asyncio.get_running_loop()
        cancelled: asyncio.CancelledError | None = None
        while self.pending:
            self.waiter = waiter = loop.create_future()
            try:
                await waiter
            except asyncio.CancelledError as exc:  # the caller is being cancelled
                if cancelled is None:
                    cancelled = exc
                for task in tasks:
                    task.cancel()
        self.waiter = None
        results: list[Any] = []
        for task in tasks:
            if task.cancelled():
                try:
                    task.result()
                except asyncio.CancelledError as exc:
                    results.append(exc)
            else:
                exc = task.exception()
                results.append(task.result() if exc is None else exc)
        return results, cancelled


class _Counted(Coroutine[Any, Any, Any]):
    """A task's coroutine that tells its :class:`Countdown` when it has finished."""

    __slots__ = ("_coro", "_countdown")

    def __init__(self, coro: Coroutine[Any, Any, Any], countdown: Countdown) -> None:
        self._coro: Coroutine[Any, Any, Any] | None = coro
        self._countdown = countdown

    def _finished(self) -> None:
        if self._coro is not None:
            self._coro = None  # the finished coroutine is not kept for the rest of the step
            countdown = self._countdown
            countdown.pending -= 1
            if not countdown.pending:
                countdown._wake()

    def send(self, value: Any) -> Any:
        coro = self._coro
        if coro is None:
            raise StopIteration
        try:
            return coro.send(value)
        except BaseException:  # returned (StopIteration) or raised: finished either way
            # _finished(), inlined: this runs once per agent of every step.
            self._coro = None  # the finished coroutine is not kept for the rest of the step
            countdown = self._countdown
            countdown.pending -= 1
            if not countdown.pending:
                countdown._wake()
            raise

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        coro = self._coro
        if coro is None:
            raise typ if val is None else val
        try:
            if val is None and tb is None:
                return coro.throw(typ)
            return coro.throw(typ, val, tb)
        except BaseException:  # also a cancellation thrown in before the first step
            self._finished()
            raise

    def close(self) -> None:
        coro = self._coro
        if coro is not None:
            try:
                coro.close()
            finally:
                self._finished()

    def __await__(self) -> Generator[Any, None, Any]:
        return self  # type: ignore[return-value]  # driven by its task only

    def __next__(self) -> Any:
        return self.send(None)
