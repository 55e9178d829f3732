"""Wait for every task of an asyncio-mode step as ``gather(return_exceptions=True)`` does, lighter.

``gather`` adds a done callback to each task: a copy of the caller's context per task
and, as each task ends, a scheduled callback (a handle and its arguments) alive until
the loop runs it. At ten thousand agents those are tens of thousands more objects
alive through the step for the garbage collector to walk (with the library's own
objects per agent, enough to set off a full collection of the process's heap in
every step), and a Python callback per agent.

Here each agent's coroutine counts itself in :class:`Countdown` instead: ``started``
when its body begins, ``finished`` in its ``finally`` (then ``wake_if_done()``).
:meth:`Countdown.wait` first lets the loop run one round, in which every task created
so far takes its first step (tasks run in the order they were scheduled): after it, a
task has either started or ended without starting (cancelled before its first step),
so none is left to start, and the step is over when ``finished`` reaches ``started``.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["Countdown", "ended_with"]


class Countdown:
    """How many agent coroutines of one step started and finished; :meth:`wait` for the rest."""

    __slots__ = ("finished", "started", "waiter")

    def __init__(self) -> None:
        self.started = 0
        self.finished = 0
        self.waiter: asyncio.Future[None] | None = None

    def wake_if_done(self) -> None:
        """Wake :meth:`wait` if this was the last agent (after ``finished += 1``)."""
        waiter = self.waiter
        if self.finished == self.started and waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(
        self, tasks: list[asyncio.Task[Any]], own: bool = False
    ) -> asyncio.CancelledError | None:
        """Wait until every task is done (then :func:`ended_with` says how each one ended).

        Call it right after creating the tasks. If the caller is cancelled meanwhile,
        every task is cancelled and still waited for (as ``gather`` does), and that
        ``CancelledError`` is returned, for the caller to raise. ``own``: each task runs
        the counted coroutine itself (no task factory wraps it), so a task is done as
        soon as its coroutine has counted itself finished.
        """
        cancelled: asyncio.CancelledError | None = None
        try:
            await asyncio.sleep(0)  # every task takes its first step: none is left to start
            if self.finished != self.started:
                self.waiter = asyncio.get_running_loop().create_future()
                await self.waiter
            if not own or self.finished != len(tasks):
                rest = [task for task in tasks if not task.done()]
                if rest:  # a loop's task factory that delays first steps: wait the ordinary way
                    await asyncio.wait(rest)
        except asyncio.CancelledError as exc:  # the caller is being cancelled
            cancelled = exc
            await _cancel_and_wait(tasks)
        finally:
            self.waiter = None
        return cancelled


def ended_with(task: asyncio.Task[Any]) -> Any:
    """A done task's result, or the exception it ended with (a ``CancelledError`` if cancelled)."""
    if task.cancelled():
        try:
            task.result()
        except asyncio.CancelledError as cancel:
            return cancel
    error = task.exception()
    return task.result() if error is None else error


async def _cancel_and_wait(tasks: list[asyncio.Task[Any]]) -> None:
    """Cancel the tasks and wait for all of them, however often the caller is cancelled again."""
    while True:
        pending = [task for task in tasks if not task.done()]
        if not pending:
            return
        for task in pending:
            task.cancel()
        try:
            await asyncio.wait(pending)
        except asyncio.CancelledError:
            continue
