"""Lazy, offline-safe import of litellm (~4 s; it fetches a cost map unless told not to)."""

from __future__ import annotations

import os
import threading
from types import ModuleType
from typing import Any


def import_litellm() -> ModuleType:
    """Import litellm on first use, without letting it download its model cost map."""
    # Called for every request: once imported and patched, a check of the patch is all.
    imported = _imported
    if imported is not None and (
        _logging_worker is None
        or isinstance(
            getattr(_logging_worker, "GLOBAL_LOGGING_WORKER", None), _PerThreadLoggingWorker
        )
    ):
        return imported
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    _give_each_thread_its_logging_worker()
    _remember(litellm)
    return litellm


_imported: ModuleType | None = None
_logging_worker: Any = None  # litellm's logging_worker module, when it has one


def _remember(litellm: ModuleType) -> None:
    global _imported, _logging_worker
    try:
        from litellm.litellm_core_utils import logging_worker as found
    except ImportError:
        found = None  # type: ignore[assignment]
    _logging_worker = found
    _imported = litellm


class _PerThreadLoggingWorker:
    """Stands in for litellm's ``GLOBAL_LOGGING_WORKER``: one worker per thread.

    litellm's logging worker is bound to one event loop and rebinds itself whenever
    a call arrives from another loop, dropping the coroutines it had queued
    ("coroutine 'Logging.async_success_handler' was never awaited"). Threading mode
    runs one loop per worker thread, so each thread gets its own worker; the main
    thread keeps litellm's original one.
    """

    def __init__(self, original: Any) -> None:
        self._original = original
        self._local = threading.local()

    def _worker(self) -> Any:
        if threading.current_thread() is threading.main_thread():
            return self._original
        worker = getattr(self._local, "worker", None)
        if worker is None:
            worker = self._local.worker = type(self._original)()
        return worker

    def __getattr__(self, name: str) -> Any:
        return getattr(self._worker(), name)


_patch_lock = threading.Lock()


def _give_each_thread_its_logging_worker() -> None:
    try:
        from litellm.litellm_core_utils import logging_worker
    except ImportError:  # a litellm without the shared worker: nothing to do
        return
    with _patch_lock:
        current = getattr(logging_worker, "GLOBAL_LOGGING_WORKER", None)
        if current is not None and not isinstance(current, _PerThreadLoggingWorker):
            logging_worker.GLOBAL_LOGGING_WORKER = _PerThreadLoggingWorker(current)  # type: ignore[misc,assignment]
