"""``RateLimiter``: a client-side limit on requests and tokens per minute and requests in flight.

One limiter is shared by every ``ModuleLLM`` given it (and by every thread and event
loop they run on), so a thousand agents queue for their turn instead of stampeding a
provider into 429s. Waiting is FIFO: only the request at the head of the queue may be
admitted, so a large request is not starved by small ones behind it.

A request counts against ``rpm`` and ``tpm`` from its permit until one window after its
release. The provider counts it when it arrives, anywhere in between: a request held up
between its permit and the wire (a full connection pool, a pre-empted thread, a fake
clock another thread moved on) must not let the window refill behind its back. So
requests that take ``L`` seconds start at most ``rpm`` per ``60 + L`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Final

from mesa_llm._sleep import sleep_in_task, sleep_in_thread

__all__ = ["Permit", "RateLimiter", "estimate_tokens"]

logger = logging.getLogger(__name__)

#: The sliding window ``rpm`` and ``tpm`` are counted over, in seconds.
WINDOW: Final = 60.0
# A waiter re-checks this often even without a wake-up: a safety net, never the mechanism.
_POLL: Final = 0.5

Clock = Callable[[], float]
Sleep = Callable[[float], Any]
TokenEstimator = Callable[[Mapping[str, Any]], int]


def estimate_tokens(request: Mapping[str, Any]) -> int:
    """A cheap estimate of the tokens ``request`` (``litellm.completion`` kwargs) will use.

    ``ceil(characters / 4)`` of the messages' text and the tools' JSON, plus the
    completion allowance (``max_tokens`` / ``max_completion_tokens``) when one is set,
    as providers count it against tokens-per-minute; at least 1. No tokenizer is
    loaded (``litellm.token_counter`` is exact but slow): pass
    ``RateLimiter(estimate=...)`` for another estimate.
    """
    chars = 0
    for message in request.get("messages") or ():
        content = message.get("content") if isinstance(message, Mapping) else None
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):  # content parts: count their text
            chars += sum(
                len(str(part.get("text", ""))) for part in content if isinstance(part, Mapping)
            )
    if request.get("tools"):
        chars += len(json.dumps(request["tools"], default=str))
    allowance = request.get("max_completion_tokens") or request.get("max_tokens") or 0
    allowance = allowance if isinstance(allowance, int) and not isinstance(allowance, bool) else 0
    return max(1, math.ceil(chars / 4) + allowance)


class _Waiter:
    """One caller waiting for its turn; ``wake`` may be called from any thread."""

    __slots__ = ("_event", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self._loop = loop
        self._event: threading.Event | asyncio.Event = (
            threading.Event() if loop is None else asyncio.Event()
        )

    def wake(self) -> None:
        if self._loop is None:
            self._event.set()
            return
        # A closed loop: its waiter is gone, nobody left to wake.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._event.set)


class _Entry:
    """One admitted request in the window: when its window starts, and its tokens.

    ``counted`` turns False when the entry stops counting (refunded, or replaced by
    the one its release starts); it then waits in the window to be dropped, so
    nothing is removed from the middle of the window.
    """

    __slots__ = ("counted", "in_flight", "start", "tokens")

    def __init__(self, start: float, tokens: float, in_flight: bool = True) -> None:
        self.start = start
        self.tokens = tokens
        self.in_flight = in_flight
        self.counted = True


class Permit:
    """An admitted request: release it (or leave its ``with`` block) when the request is done.

    ``record_tokens(n)`` replaces the estimate counted against ``tpm`` with the
    tokens the provider reported. Releasing twice is harmless.
    """

    __slots__ = ("_entry", "_limiter", "_released")

    def __init__(self, limiter: RateLimiter, entry: _Entry) -> None:
        self._limiter = limiter
        self._entry = entry
        self._released = False

    @property
    def tokens(self) -> int:
        """The tokens this request counts against ``tpm``."""
        return int(self._entry.tokens)

    def record_tokens(self, tokens: int) -> None:
        """Count the tokens the provider reported instead of the estimate."""
        limiter, entry = self._limiter, self._entry
        with limiter._lock:
            tokens = max(0, int(tokens))
            if entry.counted:
                limiter._tokens += tokens - entry.tokens
            entry.tokens = tokens

    def refund(self) -> None:
        """Release the permit and uncount the request: it was never sent."""
        self._limiter._uncount(self._entry)
        self.release()

    def release(self) -> None:
        """Free the request's ``max_concurrent`` slot."""
        self._limiter._release(self)

    def __enter__(self) -> Permit:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


class RateLimiter:
    """Client-side limits for the requests of every ``ModuleLLM`` sharing this limiter.

    * ``rpm``: at most this many requests start in any 60-second window;
    * ``tpm``: at most this many (estimated) tokens in any 60-second window; a request
      estimated at more than ``tpm`` on its own is admitted when the window is empty;
    * ``max_concurrent``: at most this many requests in flight.

    ``acquire()`` blocks the calling thread; ``await aacquire()`` suspends the task
    and never blocks its event loop. Both wait in one FIFO queue, across threads and
    loops. ``estimate`` maps a request (``litellm.completion`` kwargs) to tokens
    (default :func:`estimate_tokens`). ``clock`` and ``sleep`` (given together) replace
    ``time.monotonic`` and ``time.sleep`` / ``asyncio.sleep``, e.g. a fake clock whose
    ``sleep`` advances it; ``sleep`` may return an awaitable, which the async path awaits.
    """

    def __init__(
        self,
        rpm: int | None = None,
        tpm: int | None = None,
        max_concurrent: int | None = None,
        *,
        estimate: TokenEstimator | None = None,
        clock: Clock | None = None,
        sleep: Sleep | None = None,
    ) -> None:
        for name, value in (("rpm", rpm), ("tpm", tpm), ("max_concurrent", max_concurrent)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ValueError(
                    f"mesa_llm: RateLimiter({name}={value!r}) is invalid; "
                    f"valid values are None or integers >= 1"
                )
        if rpm is None and tpm is None and max_concurrent is None:
            raise ValueError(
                "mesa_llm: RateLimiter() needs at least one of rpm=..., tpm=..., max_concurrent=..."
            )
        if (clock is None) != (sleep is None):
            raise TypeError(
                "mesa_llm: RateLimiter(clock=..., sleep=...) go together: a sleep that does not "
                "advance the clock would wait forever"
            )
        for name, function in (("estimate", estimate), ("clock", clock), ("sleep", sleep)):
            if function is not None and not callable(function):
                raise TypeError(f"mesa_llm: RateLimiter({name}={function!r}) must be a callable")
        self.rpm = rpm
        self.tpm = tpm
        self.max_concurrent = max_concurrent
        self.estimate: TokenEstimator = estimate or estimate_tokens
        self._clock: Clock = clock or time.monotonic
        self._sleep = sleep
        self._lock = threading.Lock()
        self._queue: deque[_Waiter] = deque()
        self._window: deque[_Entry] = deque()  # admitted requests, by start, oldest first
        self._overdue: set[_Entry] = set()  # in flight past their window: counted until released
        self._count = 0  # requests counted (in the window or overdue)
        self._tokens = 0.0  # and their tokens
        self._in_flight = 0

    def __repr__(self) -> str:
        return f"RateLimiter(rpm={self.rpm}, tpm={self.tpm}, max_concurrent={self.max_concurrent})"

    @property
    def in_flight(self) -> int:
        """Requests admitted and not yet released."""
        with self._lock:
            return self._in_flight

    def usage(self) -> tuple[int, int]:
        """(requests, tokens) counted in the current 60-second window."""
        with self._lock:
            self._expire(self._clock())
            return self._count, int(self._tokens)

    def acquire(self, tokens: int = 1) -> Permit:
        """Wait (blocking this thread) until a request of ``tokens`` may start: its permit."""
        waiter = self._enqueue(None)
        event = waiter._event
        assert isinstance(event, threading.Event)
        try:
            while True:
                waiter._event.clear()
                outcome = self._try_admit(waiter, tokens)
                if isinstance(outcome, Permit):
                    return outcome
                if outcome is None:
                    event.wait(_POLL)
                    continue
                sleep_in_thread(
                    self._sleep,
                    outcome,
                    "mesa_llm: RateLimiter(sleep=...) returned an awaitable in a sync "
                    "acquire(); pass a sync sleep, or use aacquire()",
                )
        except BaseException:
            self._leave(waiter)
            raise

    async def aacquire(self, tokens: int = 1) -> Permit:
        """Wait (suspending this task, never blocking the loop) until a request may start."""
        waiter = self._enqueue(asyncio.get_running_loop())
        event = waiter._event
        assert isinstance(event, asyncio.Event)
        try:
            while True:
                waiter._event.clear()
                outcome = self._try_admit(waiter, tokens)
                if isinstance(outcome, Permit):
                    return outcome
                if outcome is None:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(event.wait(), _POLL)
                    continue
                await sleep_in_task(self._sleep, outcome)
        except BaseException:
            self._leave(waiter)
            raise

    # -- under the lock ---------------------------------------------------------------

    def _enqueue(self, loop: asyncio.AbstractEventLoop | None) -> _Waiter:
        waiter = _Waiter(loop)
        with self._lock:
            self._queue.append(waiter)
        return waiter

    def _leave(self, waiter: _Waiter) -> None:
        """Take a waiter that gave up (cancelled, interrupted) out of the queue."""
        with self._lock:
            was_head = bool(self._queue) and self._queue[0] is waiter
            try:
                self._queue.remove(waiter)
            except ValueError:  # admitted already
                return
            if was_head and self._queue:
                self._queue[0].wake()

    def _try_admit(self, waiter: _Waiter, tokens: int) -> Permit | float | None:
        """A permit, the seconds to sleep before trying again, or None: wait to be woken."""
        with self._lock:
            if self._queue[0] is not waiter:
                return None
            if self.max_concurrent is not None and self._in_flight >= self.max_concurrent:
                return None
            now = self._clock()
            self._expire(now)
            delay = self._delay(now, tokens)
            if delay is None or delay > 0:
                return delay
            entry = _Entry(now, float(tokens))
            self._window.append(entry)
            self._count += 1
            self._tokens += entry.tokens
            self._in_flight += 1
            self._queue.popleft()
            if self._queue:
                self._queue[0].wake()
            return Permit(self, entry)

    def _expire(self, now: float) -> None:
        window = self._window
        while window:
            entry = window[0]
            if entry.counted and entry.start + WINDOW > now:
                return
            window.popleft()
            if not entry.counted:
                continue
            if entry.in_flight:  # counts on until its release
                self._overdue.add(entry)
            else:
                self._count -= 1
                self._tokens -= entry.tokens

    def _delay(self, now: float, tokens: int) -> float | None:
        """Seconds until the window has room for one more request of ``tokens``.

        None when only the release of an overdue request can make room.
        """
        until = now
        if self.rpm is not None and self._count >= self.rpm:
            leaving = self._count - self.rpm + 1  # requests that must leave the window first
            for entry in self._window:  # oldest first
                if entry.counted:
                    leaving -= 1
                    if not leaving:
                        until = max(until, entry.start + WINDOW)
                        break
            else:
                return None
        if self.tpm is not None and self._count:
            excess = self._tokens + tokens - self.tpm
            for entry in self._window:  # oldest first: expire until the request fits
                if excess <= 0:
                    break
                if entry.counted:
                    excess -= entry.tokens
                    until = max(until, entry.start + WINDOW)
            if excess > 0 and self._overdue:
                return None
        return until - now

    def _uncount(self, entry: _Entry) -> None:
        """Take a request that was never sent out of the window."""
        with self._lock:
            if entry.counted:
                entry.counted = False
                self._overdue.discard(entry)
                self._count -= 1
                self._tokens -= entry.tokens

    def _release(self, permit: Permit) -> None:
        with self._lock:
            if permit._released:
                return
            permit._released = True
            self._in_flight -= 1
            entry = permit._entry
            entry.in_flight = False
            if entry.counted:  # the provider may have counted it just now: a window from now
                entry.counted = False
                self._overdue.discard(entry)
                window = self._window
                now = self._clock()
                start = max(now, window[-1].start) if window else now  # keep the order
                permit._entry = _Entry(start, entry.tokens, in_flight=False)
                window.append(permit._entry)
            if self._queue:
                self._queue[0].wake()
