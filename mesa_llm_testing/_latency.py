"""Latency models of the fake LLM: a constant, ``uniform(a, b)`` or ``lognormal(p50=, p99=)``.

A call's delay is a pure function of its identity (seed, agent, model step, call
index): the same call is as slow in asyncio, threading and sequential runs, in
either layer. ``time_scale`` multiplies the delay actually waited, so tests can
keep a realistic model and not sleep for real.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Final, Protocol, runtime_checkable

__all__ = [
    "ConstantLatency",
    "LatencyModel",
    "LognormalLatency",
    "UniformLatency",
    "as_latency",
    "lognormal",
    "parse_latency",
    "uniform",
]

_Z99: Final = NormalDist().inv_cdf(0.99)


@runtime_checkable
class LatencyModel(Protocol):
    """A delay in seconds for a call, given a uniform draw ``u`` in ``[0, 1)`` for that call."""

    def seconds(self, u: float) -> float:
        """The delay for draw ``u``."""
        ...


@dataclass(frozen=True, slots=True)
class ConstantLatency:
    """Every call waits ``delay`` seconds."""

    delay: float

    def seconds(self, u: float) -> float:
        """``delay``, whatever ``u``."""
        return self.delay

    def __str__(self) -> str:
        return f"{self.delay:g}"


@dataclass(frozen=True, slots=True)
class UniformLatency:
    """Delays spread evenly from ``low`` to ``high`` seconds."""

    low: float
    high: float

    def seconds(self, u: float) -> float:
        """``low + u * (high - low)``."""
        return self.low + u * (self.high - self.low)

    def __str__(self) -> str:
        return f"uniform:{self.low:g},{self.high:g}"


@dataclass(frozen=True, slots=True)
class LognormalLatency:
    """A long tail: half the calls take under ``p50`` seconds, 99 % under ``p99``."""

    p50: float
    p99: float

    def seconds(self, u: float) -> float:
        """The lognormal quantile of ``u``."""
        sigma = math.log(self.p99 / self.p50) / _Z99
        u = min(max(u, 1e-12), 1.0 - 1e-12)
        return self.p50 * math.exp(sigma * NormalDist().inv_cdf(u))

    def __str__(self) -> str:
        return f"lognormal:p50={self.p50:g},p99={self.p99:g}"


def _seconds(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(
            f"mesa_llm_testing: {what} must be a finite number of seconds; got {value!r}"
        )
    if value < 0:
        raise ValueError(f"mesa_llm_testing: {what} must be >= 0 seconds; got {value!r}")
    return float(value)


def uniform(low: float, high: float) -> UniformLatency:
    """Latency drawn evenly from ``low`` to ``high`` seconds (per call, deterministically)."""
    lo, hi = _seconds(low, "uniform(low, ...)"), _seconds(high, "uniform(..., high)")
    if lo > hi:
        raise ValueError(f"mesa_llm_testing: uniform({low!r}, {high!r}): low must be <= high")
    return UniformLatency(lo, hi)


def lognormal(*, p50: float, p99: float) -> LognormalLatency:
    """Long-tailed latency: median ``p50`` seconds, 99th percentile ``p99`` (> ``p50``)."""
    mid, tail = _seconds(p50, "lognormal(p50=...)"), _seconds(p99, "lognormal(p99=...)")
    if not 0 < mid < tail:
        raise ValueError(
            f"mesa_llm_testing: lognormal(p50={p50!r}, p99={p99!r}): need 0 < p50 < p99"
        )
    return LognormalLatency(mid, tail)


def as_latency(value: float | LatencyModel) -> LatencyModel:
    """``FakeLLM(latency=...)``: seconds (a constant) or a latency model."""
    if isinstance(value, LatencyModel) and not isinstance(value, int | float):
        return value
    try:
        return ConstantLatency(_seconds(value, "FakeLLM latency"))
    except ValueError:
        raise ValueError(
            f"mesa_llm_testing: FakeLLM latency must be seconds >= 0, uniform(a, b) or "
            f"lognormal(p50=..., p99=...) (from mesa_llm_testing); got {value!r}"
        ) from None


_FORMS: Final = "0.02, uniform:0.01,0.05 or lognormal:p50=0.2,p99=2"


def parse_latency(text: str) -> LatencyModel:
    """``--latency``: ``0.02``, ``uniform:0.01,0.05`` or ``lognormal:p50=0.2,p99=2``."""
    name, colon, rest = text.strip().partition(":")
    try:
        if not colon:
            return ConstantLatency(_seconds(float(name), "latency"))
        parts = [p.strip() for p in rest.split(",")]
        if name == "uniform" and len(parts) == 2:
            return uniform(float(parts[0]), float(parts[1]))
        if name == "lognormal":
            values = dict(p.split("=", 1) for p in parts if "=" in p)
            if set(values) == {"p50", "p99"} and len(parts) == 2:
                return lognormal(p50=float(values["p50"]), p99=float(values["p99"]))
    except ValueError as exc:
        detail = str(exc).removeprefix("mesa_llm_testing: ")
        raise ValueError(f"latency {text!r}: {detail}; use {_FORMS}") from None
    raise ValueError(f"latency {text!r} is not a latency; use {_FORMS}")
