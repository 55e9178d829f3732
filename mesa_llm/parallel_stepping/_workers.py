"""The thread pools steps run agents in, and each worker thread's own event loop.

One process-wide :data:`_pools` is shared by every engine: pools are keyed by size
and by how deeply the step is nested, and a pool holding a timed-out agent's thread
is retired so later steps never queue behind it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any

from mesa_llm.parallel_stepping._context import _depth, _loop_blocked
from mesa_llm.parallel_stepping._options import DEFAULT_MAX_WORKERS


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

    def retired(self, pool: concurrent.futures.ThreadPoolExecutor) -> bool:
        """Whether ``pool`` was retired (a timed-out agent's thread holds one of its workers)."""
        with self._lock:
            return all(current is not pool for current in self._pools.values())

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

    def close_all() -> None:
        for loop in loops:
            _close_loop(loop)

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        close_all()
        return
    closer = threading.Thread(target=close_all, name="mesa_llm-teardown")
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
