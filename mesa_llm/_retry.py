"""Bounded retries with seeded full-jitter backoff (re-exported by mesa_llm.module_llm)."""

from __future__ import annotations

import email.utils
import logging
import math
import random
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

from mesa_llm._litellm import import_litellm
from mesa_llm._sleep import sleep_in_task, sleep_in_thread
from mesa_llm.errors import CircuitOpenError

__all__ = ["TRANSIENT_ERRORS", "RetryPolicy", "override_retry_sleep"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

SleepFunction = Callable[[float], Any]
"""``sleep(seconds)``: a sync callable, or one returning an awaitable (async paths await it)."""


class _TransientErrors:
    """Type of :data:`TRANSIENT_ERRORS`; resolved to litellm's classes when an error is seen."""

    def __repr__(self) -> str:
        return "TRANSIENT_ERRORS"

    def __reduce__(self) -> str:
        return "TRANSIENT_ERRORS"


TRANSIENT_ERRORS: Final = _TransientErrors()
"""Default ``RetryPolicy.retry_on``: rate limits, timeouts, connection errors and any 5xx answer."""


def _is_transient(exc: BaseException) -> bool:
    litellm = import_litellm()
    import openai  # loaded by litellm; litellm's provider errors subclass openai's

    transient = (
        litellm.RateLimitError,
        litellm.Timeout,
        litellm.APIConnectionError,
        litellm.InternalServerError,
        litellm.ServiceUnavailableError,
        litellm.BadGatewayError,
    )
    if isinstance(exc, transient):
        return True
    status = getattr(exc, "status_code", None)
    # Only provider errors carry an HTTP status; other exceptions never count as 5xx.
    return isinstance(exc, openai.APIError) and isinstance(status, int) and status >= 500


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries of one LLM request: exponential backoff, full jitter, Retry-After honoured.

    Attempt ``n`` (1-based) that fails with an error in ``retry_on`` is followed,
    if ``n < max_attempts``, by a wait and attempt ``n + 1``. The wait is the
    provider's ``retry-after-ms`` / ``Retry-After`` header when the error carries
    one, else ``min(max_delay, base_delay * 2 ** (n - 1))``, drawn uniformly from
    ``[0, that]`` when ``jitter`` is on (from the owning ``ModuleLLM``'s seeded RNG).

    A provider asking for more than ``max_delay`` is not retried early (that only
    earns another 429) nor waited for beyond the bound: the error propagates at
    once with a note saying so; raise ``max_delay`` to wait that long.

    When retries stop, the last provider exception propagates unchanged, with a
    note (``exc.__notes__``) saying how many attempts were made. ``sleep`` replaces
    ``time.sleep`` / ``asyncio.sleep`` (sync callable, or async for ``agenerate``).
    """

    max_attempts: int = 3
    base_delay: float = 0.5
    max_delay: float = 20.0
    jitter: bool = True
    retry_on: tuple[type[BaseException], ...] | _TransientErrors = TRANSIENT_ERRORS
    sleep: SleepFunction | None = None

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise TypeError(
                f"mesa_llm: RetryPolicy(max_attempts={self.max_attempts!r}) must be an int >= 1"
            )
        if self.max_attempts < 1:
            raise ValueError(
                f"mesa_llm: RetryPolicy(max_attempts={self.max_attempts}) is invalid; "
                f"valid values are integers >= 1 (1 means no retries)"
            )
        for name in ("base_delay", "max_delay"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ValueError(
                    f"mesa_llm: RetryPolicy({name}={value!r}) is invalid; "
                    f"valid values are finite numbers of seconds >= 0"
                )
        if self.base_delay > self.max_delay:
            raise ValueError(
                f"mesa_llm: RetryPolicy(base_delay={self.base_delay!r}, "
                f"max_delay={self.max_delay!r}) is invalid; base_delay must be <= max_delay"
            )
        if not isinstance(self.jitter, bool):
            raise TypeError(f"mesa_llm: RetryPolicy(jitter={self.jitter!r}) must be True or False")
        if not isinstance(self.retry_on, _TransientErrors) and not (
            isinstance(self.retry_on, tuple)
            and all(isinstance(t, type) and issubclass(t, BaseException) for t in self.retry_on)
        ):
            raise TypeError(
                f"mesa_llm: RetryPolicy(retry_on={self.retry_on!r}) must be TRANSIENT_ERRORS "
                f"or a tuple of exception classes (an empty tuple disables retries)"
            )
        if self.sleep is not None and not callable(self.sleep):
            raise TypeError(
                f"mesa_llm: RetryPolicy(sleep={self.sleep!r}) must be None or a callable "
                f"taking seconds"
            )

    def is_retryable(self, exc: BaseException) -> bool:
        """Whether ``exc`` is one of the errors this policy retries (never an open circuit)."""
        if isinstance(exc, CircuitOpenError):
            return False
        if isinstance(self.retry_on, _TransientErrors):
            return _is_transient(exc)
        return isinstance(exc, self.retry_on)

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """The wait after failed attempt ``attempt`` (1-based) when no Retry-After was given."""
        ceiling = min(self.max_delay, self.base_delay * 2.0 ** min(attempt - 1, 64))
        return rng.uniform(0.0, ceiling) if self.jitter else ceiling


def retry_after_seconds(exc: BaseException) -> float | None:
    """The wait the provider asked for in ``retry-after-ms`` / ``Retry-After``, if any."""
    for headers in (
        getattr(exc, "litellm_response_headers", None),
        getattr(getattr(exc, "response", None), "headers", None),
        getattr(exc, "headers", None),
    ):
        if not isinstance(headers, Mapping) or not headers:
            continue
        lowered = {str(k).lower(): str(v) for k, v in headers.items()}
        if (ms := _parse_float(lowered.get("retry-after-ms"))) is not None:
            return max(ms / 1000.0, 0.0)
        value = lowered.get("retry-after")
        if value is None:
            continue
        if (seconds := _parse_float(value)) is not None:
            return max(seconds, 0.0)
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            continue
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max((when - datetime.now(UTC)).total_seconds(), 0.0)
    return None


def _parse_float(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


# --- process-wide sleep override (the harness records delays instead of waiting) ---

_sleep_overrides: list[tuple[object, SleepFunction]] = []
_sleep_lock = threading.Lock()


@contextmanager
def override_retry_sleep(sleep: Callable[[float], object]) -> Iterator[None]:
    """While active, every ``RetryPolicy`` whose ``sleep`` is None calls ``sleep(seconds)`` instead.

    Process-wide and nestable (the innermost active override wins). The async
    path calls the sync ``sleep`` too and does not really wait.
    """
    if not callable(sleep):
        raise TypeError(f"mesa_llm: override_retry_sleep({sleep!r}) needs a callable")
    token = object()
    with _sleep_lock:
        _sleep_overrides.append((token, sleep))
    try:
        yield
    finally:
        with _sleep_lock:
            _sleep_overrides[:] = [entry for entry in _sleep_overrides if entry[0] is not token]


def _sleep_for(policy: RetryPolicy) -> SleepFunction | None:
    if policy.sleep is not None:
        return policy.sleep
    with _sleep_lock:
        return _sleep_overrides[-1][1] if _sleep_overrides else None


# --- the retry loops ---


def _next_delay(
    policy: RetryPolicy, exc: Exception, attempt: int, rng: random.Random
) -> float | None:
    """The wait before the next attempt, or None after noting on ``exc`` why retries stop."""
    if not policy.is_retryable(exc):
        if attempt > 1:
            _note(
                exc,
                f"mesa_llm: failed after {attempt} attempts; {type(exc).__name__} is not retried",
            )
        return None
    if attempt >= policy.max_attempts:
        _note(
            exc,
            f"mesa_llm: gave up after {attempt} attempt{'s' * (attempt > 1)} "
            f"(RetryPolicy.max_attempts={policy.max_attempts})",
        )
        return None
    asked = retry_after_seconds(exc)
    if asked is None:
        return policy.backoff(attempt, rng)
    if asked > policy.max_delay:
        _note(
            exc,
            f"mesa_llm: gave up after {attempt} attempt{'s' * (attempt > 1)}: the provider asked "
            f"to wait {asked:g}s, more than RetryPolicy.max_delay={policy.max_delay:g}s; "
            f"raise max_delay to wait that long",
        )
        return None
    return asked


def _note(exc: BaseException, note: str) -> None:
    # A batch-wide error is one instance shared by several callers: note it once.
    if note not in getattr(exc, "__notes__", ()):
        exc.add_note(note)


def _log_retry(exc: Exception, attempt: int, policy: RetryPolicy, delay: float) -> None:
    logger.info(
        "mesa_llm: attempt %d/%d failed with %s; retrying in %.3fs",
        attempt,
        policy.max_attempts,
        type(exc).__name__,
        delay,
    )


def call_with_retries(policy: RetryPolicy, rng: random.Random, attempt_once: Callable[[], T]) -> T:
    """Run ``attempt_once`` until it succeeds or ``policy`` says stop (sync, thread-safe)."""
    attempt = 1
    while True:
        try:
            return attempt_once()
        except Exception as exc:
            delay = _next_delay(policy, exc, attempt, rng)
            if delay is None:
                raise
            _log_retry(exc, attempt, policy, delay)
        sleep_in_thread(
            _sleep_for(policy),
            delay,
            "mesa_llm: RetryPolicy(sleep=...) returned an awaitable in the sync generate(); "
            "pass a sync sleep callable, or call agenerate()",
        )
        attempt += 1


async def acall_with_retries(
    policy: RetryPolicy, rng: random.Random, attempt_once: Callable[[], Awaitable[T]]
) -> T:
    """Await ``attempt_once()`` until it succeeds or ``policy`` says stop."""
    attempt = 1
    while True:
        try:
            return await attempt_once()
        except Exception as exc:
            delay = _next_delay(policy, exc, attempt, rng)
            if delay is None:
                raise
            _log_retry(exc, attempt, policy, delay)
        await sleep_in_task(_sleep_for(policy), delay)
        attempt += 1
