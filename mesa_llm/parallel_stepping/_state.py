"""Process-wide stepping state: the steps in flight, the enabled settings, the library's loop.

Every module-level variable that is rebound lives here and is rebound only by the
functions here; other modules read it through them (a name imported with
``from ... import`` would be a stale copy).
"""

from __future__ import annotations

import atexit
import contextlib
import threading
from collections.abc import Callable, Iterator

from mesa_llm.parallel_stepping._context import _depth, current_agent
from mesa_llm.parallel_stepping._loop_thread import _LoopThread
from mesa_llm.parallel_stepping._options import _Settings
from mesa_llm.parallel_stepping._workers import _pools

_state_lock = threading.RLock()
_idle = threading.Condition(_state_lock)  # notified when no step is in flight
_in_flight = 0
_draining = False  # disable_... is waiting for the steps in flight
_loop_thread: _LoopThread | None = None
_enabled: _Settings | None = None  # None: automatic stepping is off


def _enabled_settings() -> _Settings | None:
    """The settings automatic stepping was enabled with, or None when it is off."""
    return _enabled


def _set_enabled(settings: _Settings | None) -> None:
    global _enabled
    with _state_lock:
        _enabled = settings


@contextlib.contextmanager
def _stepping() -> Iterator[None]:
    """Count a step in flight, so that disabling waits for it instead of cancelling it."""
    global _in_flight
    nested = _depth.get() > 0 or current_agent() is not None or _on_loop_thread()
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


def _drain_then(teardown: Callable[[], None]) -> None:
    """Hold new steps back, wait for the steps in flight, then run ``teardown`` under the lock."""
    global _draining
    with _idle:
        _draining = True
        try:
            _idle.wait_for(lambda: not _in_flight)
            teardown()
        finally:
            _draining = False
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


def _close_loop_thread() -> None:
    """Stop and close the library's event loop; the next asyncio step starts a new one."""
    global _loop_thread
    with _state_lock:
        lt, _loop_thread = _loop_thread, None
    if lt is not None:
        lt.close()


def _shutdown_at_exit() -> None:
    lt = _loop_thread
    if lt is not None:
        lt.close()
    _pools.shutdown(wait=False)


atexit.register(_shutdown_at_exit)
