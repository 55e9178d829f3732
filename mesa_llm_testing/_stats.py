"""Counters of the fake HTTP endpoint: calls, faults by kind, load-driven 429s, latencies."""

from __future__ import annotations

import threading
from collections import Counter, deque
from typing import Any, Final

from mesa_llm_testing._faults import FaultKind

__all__ = ["ServerStats"]

_KEPT: Final = 100_000  # latencies kept for the percentiles (the most recent)


class ServerStats:
    """What ``GET /admin/stats`` reports; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls = 0
        self._limited = 0
        self._faults: Counter[str] = Counter()
        self._latencies: deque[float] = deque(maxlen=_KEPT)

    def add(self, fault: FaultKind | None, seconds: float) -> None:
        """Count one chat completion that took ``seconds`` to handle."""
        with self._lock:
            self._calls += 1
            if fault is not None:
                self._faults[fault.value] += 1
            self._latencies.append(seconds)

    def add_limited(self) -> None:
        """Count one call refused with a load-driven 429 (``FakeLLM(limits=...)``)."""
        with self._lock:
            self._limited += 1

    def reset(self) -> None:
        """Forget everything counted."""
        with self._lock:
            self._calls = 0
            self._limited = 0
            self._faults.clear()
            self._latencies.clear()

    def summary(self) -> dict[str, Any]:
        """``{"calls", "faults": {kind: n}, "limited", "latency_ms": {"p50", "p95", "p99"}}``.

        ``limited``: calls refused by the fake's limits (not in ``calls``).
        """
        with self._lock:
            calls, faults, latencies = self._calls, dict(self._faults), sorted(self._latencies)
            limited = self._limited
        ordered = {k.value: faults[k.value] for k in FaultKind if k.value in faults}
        return {
            "calls": calls,
            "faults": ordered,
            "limited": limited,
            "latency_ms": {
                f"p{q}": round(_percentile(latencies, q) * 1000, 3) for q in (50, 95, 99)
            },
        }


def _percentile(ordered: list[float], q: int) -> float:
    """The nearest-rank percentile of sorted values (0 when there are none)."""
    if not ordered:
        return 0.0
    rank = max(1, -(-q * len(ordered) // 100))  # ceil(q/100 * n)
    return ordered[rank - 1]
