"""Transparent batching of ``agenerate`` calls (public names re-exported by mesa_llm.module_llm)."""

from __future__ import annotations

import asyncio
import contextvars
import math
import threading
import weakref
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from mesa_llm._litellm import import_litellm
from mesa_llm.errors import MesaLLMError

__all__ = ["BatchBackend", "BatchConfig", "BatchProcessor"]

BatchBackend = Callable[[list[dict[str, Any]]], Awaitable[Sequence[Any]]]
"""A true batch call: takes the requests (``litellm.acompletion`` keyword arguments) of
one batch and returns, in order, one ``ModelResponse`` or exception instance per request."""


@dataclass(frozen=True)
class BatchConfig:
    """How ``agenerate`` calls are grouped: flushed at ``max_batch`` items or ``flush_interval`` s.

    ``batch_backend``, when given, answers a whole batch in one call (e.g. a local
    pipeline); it runs in an empty ``contextvars`` context because it serves many
    agents. Without it, the batch's requests go to ``litellm.acompletion``
    concurrently, each in its caller's context.
    """

    max_batch: int = 16
    flush_interval: float = 0.01
    batch_backend: BatchBackend | None = None

    def __post_init__(self) -> None:
        if isinstance(self.max_batch, bool) or not isinstance(self.max_batch, int):
            raise TypeError(
                f"mesa_llm: BatchConfig(max_batch={self.max_batch!r}) must be an int >= 1"
            )
        if self.max_batch < 1:
            raise ValueError(
                f"mesa_llm: BatchConfig(max_batch={self.max_batch}) is invalid; "
                f"valid values are integers >= 1"
            )
        interval = self.flush_interval
        if not isinstance(interval, int | float) or not math.isfinite(interval) or interval < 0:
            raise ValueError(
                f"mesa_llm: BatchConfig(flush_interval={interval!r}) is invalid; "
                f"valid values are finite numbers of seconds >= 0"
            )
        if self.batch_backend is not None and not callable(self.batch_backend):
            raise TypeError(
                f"mesa_llm: BatchConfig(batch_backend={self.batch_backend!r}) must be None or an "
                f"async callable taking a list of requests"
            )


@dataclass(eq=False)
class _Item:
    request: dict[str, Any]
    future: asyncio.Future[Any]
    context: contextvars.Context
    task: asyncio.Task[Any] | None = None  # set when dispatched; shared by a true batch
    batch: list[_Item] = field(default_factory=list)


# loop -> configuration key -> processor; weak in the loop, so a processor never outlives it.
_processors: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Hashable, BatchProcessor]]
_processors = weakref.WeakKeyDictionary()
_processors_lock = threading.Lock()


class BatchProcessor:
    """Queues one event loop's requests for one configuration and sends them in batches.

    No task runs while the queue is empty: the flush timer is a loop callback,
    and a batch's tasks end with the batch. A cancelled caller's item is dropped
    from the queue, or its request cancelled once no other caller waits on it.
    ``batches_sent`` counts the batches dispatched so far.
    """

    def __init__(self, config: BatchConfig) -> None:
        self.config = config
        self.batches_sent = 0
        self._loop: weakref.ref[asyncio.AbstractEventLoop] | None = None
        self._queue: list[_Item] = []
        self._timer: asyncio.TimerHandle | None = None

    @classmethod
    def shared(cls, key: Hashable, config: BatchConfig) -> BatchProcessor:
        """The running loop's processor for ``(key, config)``, created on first use."""
        loop = asyncio.get_running_loop()
        with _processors_lock:
            per_loop = _processors.setdefault(loop, {})
            processor = per_loop.get((key, config))
            if processor is None:
                processor = per_loop[(key, config)] = cls(config)
        return processor

    async def submit(self, request: dict[str, Any]) -> Any:
        """Queue ``request`` (``litellm.acompletion`` kwargs); return its result or raise its error.

        The request is made inside a copy of the caller's ``contextvars`` context.
        """
        loop = self._bound_loop()
        item = _Item(request, loop.create_future(), contextvars.copy_context())
        item.future.add_done_callback(partial(self._on_item_done, item))
        self._queue.append(item)
        if len(self._queue) >= self.config.max_batch:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self.config.flush_interval, self._flush)
        return await item.future

    def _bound_loop(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = weakref.ref(loop)
        elif self._loop() is not loop:
            raise RuntimeError(
                "mesa_llm: a BatchProcessor is bound to the event loop it was first used in; "
                "use BatchProcessor.shared(...) to get the running loop's processor"
            )
        return loop

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        queue, self._queue = self._queue, []
        size = self.config.max_batch
        for start in range(0, len(queue), size):
            self._dispatch(queue[start : start + size])

    def _dispatch(self, batch: list[_Item]) -> None:
        batch = [item for item in batch if not item.future.done()]
        if not batch:
            return
        self.batches_sent += 1
        loop = batch[0].future.get_loop()
        backend = self.config.batch_backend
        if backend is None:
            for item in batch:
                item.batch = [item]
                item.task = loop.create_task(_acompletion(item.request), context=item.context)
                item.task.add_done_callback(partial(_settle, item))
        else:
            task = loop.create_task(_run_batch(backend, batch), context=contextvars.Context())
            for item in batch:
                item.batch, item.task = batch, task

    def _on_item_done(self, item: _Item, future: asyncio.Future[Any]) -> None:
        if not future.cancelled():
            return
        if item.task is None:  # still queued
            if item in self._queue:
                self._queue.remove(item)
            if not self._queue and self._timer is not None:
                self._timer.cancel()
                self._timer = None
        elif all(other.future.done() for other in item.batch):
            item.task.cancel()


async def _acompletion(request: dict[str, Any]) -> Any:
    # Attribute lookup at call time, so a harness wrapping litellm.acompletion sees the call.
    return await import_litellm().acompletion(**request)


def _settle(item: _Item, task: asyncio.Task[Any]) -> None:
    """Copy a per-request task's outcome to its caller's future."""
    if item.future.done():
        if not task.cancelled():
            task.exception()  # retrieved, so asyncio does not log it as never retrieved
    elif task.cancelled():
        item.future.cancel()
    elif (exc := task.exception()) is not None:
        item.future.set_exception(exc)
    else:
        item.future.set_result(task.result())


async def _run_batch(backend: BatchBackend, batch: list[_Item]) -> None:
    """Answer every item of ``batch`` with one backend call; no caller is left waiting."""
    try:
        try:
            results = list(await backend([item.request for item in batch]))
            if len(results) != len(batch):
                raise MesaLLMError(
                    f"mesa_llm: BatchConfig.batch_backend returned {len(results)} results for "
                    f"{len(batch)} requests; return one response or exception per request, in order"
                )
        except Exception as exc:  # batch-wide: every waiting caller gets it
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        for item, result in zip(batch, results, strict=True):
            if item.future.done():
                continue
            if isinstance(result, asyncio.CancelledError):
                item.future.cancel()
            elif isinstance(result, BaseException):
                item.future.set_exception(result)
            else:
                item.future.set_result(result)
    finally:
        for item in batch:  # cancellation or KeyboardInterrupt mid-call
            if not item.future.done():
                item.future.cancel()
