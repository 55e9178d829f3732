"""Load-driven limits: ``ProviderLimits`` and the meter a fake counts its actual load with.

A real provider answers 429 when a client's requests or tokens per minute, or its
requests in flight, exceed its limits. ``FakeLLM(limits=ProviderLimits(...))`` does
the same, from the calls it actually receives: a 60-second sliding window for
``rpm`` and ``tpm`` (the window of ``mesa_llm.RateLimiter``, so a limiter set to the
same limits never sends more than the fake takes) and the calls being answered for
``max_concurrent``. Tokens are estimated before the call as the library's
limiter estimates them (``mesa_llm.estimate_tokens``: characters / 4 of messages
and tools, plus ``max_tokens``); the reply's own tokens are not counted.

These 429s depend on timing by nature, so they are kept apart from the plan's
deterministic faults: the limit is checked before a call takes its call index,
so a refused call shifts no fault, and refusals are recorded in
``FakeLLM.limited`` (:class:`LimitedCall`), not in ``calls`` or ``faults.injected``.
Pure and cheap: no litellm, no server.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["LIMIT_KEYS", "LimitedCall", "LoadMeter", "ProviderLimits", "Refusal", "Slot"]

#: The sliding window ``rpm`` and ``tpm`` are counted over, in seconds.
WINDOW: Final = 60.0
#: The keys ``ProviderLimits.parse`` (and ``--limits``) accepts.
LIMIT_KEYS: Final = ("rpm", "tpm", "max_concurrent")


@dataclass(frozen=True)
class ProviderLimits:
    """A provider's limits: requests and tokens per minute, and requests in flight.

    Each is None (no limit) or an integer >= 1; at least one must be set.
    """

    rpm: int | None = None
    tpm: int | None = None
    max_concurrent: int | None = None

    def __post_init__(self) -> None:
        for name in LIMIT_KEYS:
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ValueError(
                    f"mesa_llm_testing: ProviderLimits({name}={value!r}) is invalid; "
                    f"valid values are None or integers >= 1"
                )
        if all(getattr(self, name) is None for name in LIMIT_KEYS):
            raise ValueError(
                "mesa_llm_testing: ProviderLimits() needs at least one of "
                "rpm=..., tpm=..., max_concurrent=..."
            )

    @classmethod
    def parse(cls, text: str) -> ProviderLimits:
        """``"rpm=600,tpm=100000,max_concurrent=8"`` as limits; ValueError naming the keys."""
        valid = ", ".join(LIMIT_KEYS)
        values: dict[str, int] = {}
        for part in (p.strip() for p in str(text).split(",")):
            if not part:
                continue
            key, eq, raw = (s.strip() for s in part.partition("="))
            if key not in LIMIT_KEYS or not eq:
                raise ValueError(
                    f"mesa_llm_testing: limits {text!r}: {part!r} is not KEY=N with a valid "
                    f"key; valid keys: {valid} (e.g. rpm=600,tpm=100000,max_concurrent=8)"
                )
            try:
                values[key] = int(raw)
            except ValueError:
                raise ValueError(
                    f"mesa_llm_testing: limits {text!r}: {key}={raw!r} is not an integer >= 1"
                ) from None
        if not values:
            raise ValueError(
                f"mesa_llm_testing: limits {text!r} sets no limit; valid keys: {valid}"
            )
        return cls(**values)

    def to_text(self) -> str:
        """The limits as ``parse`` reads them: ``"rpm=600,max_concurrent=8"``."""
        return ",".join(
            f"{name}={getattr(self, name)}" for name in LIMIT_KEYS if getattr(self, name)
        )


@dataclass(frozen=True)
class LimitedCall:
    """A call the fake refused with a load-driven 429 (it never took a call index)."""

    agent: Any  # the calling agent's unique_id (None outside any agent)
    step: int | None
    model: str
    layer: str  # "direct" | "provider" | "http"
    limit: str  # "rpm" | "tpm" | "max_concurrent": the limit the call would have exceeded
    retry_after: float  # seconds the 429 asked the client to wait


@dataclass(frozen=True)
class Refusal:
    """Why and for how long a call is refused: the 429's error body and headers."""

    limit: str
    retry_after: float  # seconds until the call would fit
    allowed: int  # the limit's value
    used: int  # requests / tokens counted in the window, or requests in flight
    requested: int  # 1 request, or the call's estimated tokens
    remaining_requests: int | None
    remaining_tokens: int | None
    limits: ProviderLimits
    number: int = 0  # the meter's count of refusals so far: the 429's request id

    @property
    def request_id(self) -> str:
        """The ``x-request-id`` of the 429."""
        return f"req_limited_{self.number:024x}"

    def error(self, model: str) -> dict[str, Any]:
        """OpenAI's 429 ``error`` object for this refusal."""
        per = {
            "rpm": "requests per min (RPM)",
            "tpm": "tokens per min (TPM)",
            "max_concurrent": "concurrent requests",
        }[self.limit]
        return {
            "message": (
                f"Rate limit reached for {model} in organization org-mesa-fake on {per}: "
                f"Limit {self.allowed}, Used {self.used}, Requested {self.requested}. Please "
                f"try again in {_seconds_text(self.retry_after)}. Visit "
                "https://platform.openai.com/account/rate-limits to learn more."
            ),
            "type": "tokens" if self.limit == "tpm" else "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        }

    def headers(self) -> dict[str, str]:
        """The 429's headers: ``retry-after`` (seconds, rounded up), ``-ms``, ``x-ratelimit-*``."""
        seconds = max(0.0, self.retry_after)
        headers = {
            "retry-after": str(math.ceil(seconds)),
            "retry-after-ms": str(math.ceil(seconds * 1000)),
        }
        if self.limits.rpm is not None:
            headers["x-ratelimit-limit-requests"] = str(self.limits.rpm)
            headers["x-ratelimit-remaining-requests"] = str(self.remaining_requests or 0)
            reset = seconds if self.limit == "rpm" else 0.0
            headers["x-ratelimit-reset-requests"] = _seconds_text(reset)
        if self.limits.tpm is not None:
            headers["x-ratelimit-limit-tokens"] = str(self.limits.tpm)
            headers["x-ratelimit-remaining-tokens"] = str(self.remaining_tokens or 0)
            reset = seconds if self.limit == "tpm" else 0.0
            headers["x-ratelimit-reset-tokens"] = _seconds_text(reset)
        headers["x-request-id"] = self.request_id
        return headers


class Slot:
    """An admitted call: release it when the call is answered (or leave its ``with``)."""

    __slots__ = ("_meter", "_released")

    def __init__(self, meter: LoadMeter) -> None:
        self._meter = meter
        self._released = False

    def release(self) -> None:
        """Free the call's ``max_concurrent`` place; releasing twice is harmless."""
        self._meter._release(self)

    def __enter__(self) -> Slot:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


class LoadMeter:
    """A fake's actual load against its :class:`ProviderLimits`; thread-safe.

    ``clock`` replaces ``time.monotonic`` (e.g. the fake clock of a test).
    """

    def __init__(self, limits: ProviderLimits, *, clock: Callable[[], float] | None = None) -> None:
        self.limits = limits
        self._clock = clock or time.monotonic
        self._lock = threading.Lock()
        self._window: deque[tuple[float, int]] = deque()  # (start, tokens) of admitted calls
        self._tokens = 0
        self._in_flight = 0
        self._refused = 0
        self.peak_in_flight = 0

    @property
    def in_flight(self) -> int:
        """Calls admitted and not yet answered."""
        return self._in_flight

    def admit(self, tokens: int) -> Slot | Refusal:
        """A slot for a call of ``tokens`` estimated tokens, or why it is refused."""
        limits = self.limits
        with self._lock:
            now = self._clock()
            window = self._window
            while window and window[0][0] + WINDOW <= now:
                self._tokens -= window.popleft()[1]
            refusal = self._refusal(now, tokens)
            if refusal is not None:
                return refusal
            if limits.rpm is not None or limits.tpm is not None:
                window.append((now, tokens))
                self._tokens += tokens
            self._in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self._in_flight)
            return Slot(self)

    def reset(self) -> None:
        """Forget the window (calls in flight stay counted until released)."""
        with self._lock:
            self._window.clear()
            self._tokens = 0
            self.peak_in_flight = self._in_flight

    def _refusal(self, now: float, tokens: int) -> Refusal | None:
        limits, window = self.limits, self._window
        remaining_requests = None if limits.rpm is None else max(0, limits.rpm - len(window))
        remaining_tokens = None if limits.tpm is None else max(0, limits.tpm - self._tokens)

        def refuse(limit: str, wait: float, allowed: int, used: int, asked: int) -> Refusal:
            self._refused += 1
            return Refusal(
                limit,
                wait,
                allowed,
                used,
                asked,
                remaining_requests,
                remaining_tokens,
                limits,
                self._refused,
            )

        if limits.max_concurrent is not None and self._in_flight >= limits.max_concurrent:
            # No window frees a place here: the wait is a guess, as a provider's is.
            return refuse("max_concurrent", 1.0, limits.max_concurrent, self._in_flight, 1)
        if limits.rpm is not None and len(window) >= limits.rpm:
            wait = window[len(window) - limits.rpm][0] + WINDOW - now
            return refuse("rpm", wait, limits.rpm, len(window), 1)
        # A call estimated above tpm on its own is let in when the window is empty (as
        # mesa_llm.RateLimiter does), so a limiter and the fake agree on every call.
        if limits.tpm is not None and window and self._tokens + tokens > limits.tpm:
            excess, until = self._tokens + tokens - limits.tpm, now
            for start, counted in window:  # oldest first: expire until the call fits
                if excess <= 0:
                    break
                excess -= counted
                until = start + WINDOW
            return refuse("tpm", until - now, limits.tpm, self._tokens, tokens)
        return None

    def _release(self, slot: Slot) -> None:
        with self._lock:
            if not slot._released:
                slot._released = True
                self._in_flight -= 1


def estimate_request_tokens(
    messages: Any, tools: Any, params: Mapping[str, Any] | None = None
) -> int:
    """The tokens a call counts against ``tpm``: ``mesa_llm.estimate_tokens`` of the request."""
    from mesa_llm import estimate_tokens

    request: dict[str, Any] = {"messages": messages or [], "tools": tools}
    for key in ("max_tokens", "max_completion_tokens"):
        if params and key in params:
            request[key] = params[key]
    return estimate_tokens(request)


def _seconds_text(seconds: float) -> str:
    """``1.5s`` / ``150ms``, as OpenAI writes waits."""
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    return f"{math.ceil(seconds * 1000) / 1000:g}s"
