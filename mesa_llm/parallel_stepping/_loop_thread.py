"""The library's event-loop thread: one loop, in a daemon thread, for synchronous asyncio steps.

The one instance lives in :mod:`._state`, which starts it on first use and closes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from mesa_llm.parallel_stepping._report import StepReport


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
