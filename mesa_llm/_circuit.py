"""``CircuitBreaker``: fail fast while a provider is down, probe it again after a while.

One breaker keeps one circuit per model (the litellm model string, ``@api_base``
appended when one is set), so a breaker shared by many ``ModuleLLM``s trips for a
model once, for all of them, and a fallback model keeps its own circuit.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from mesa_llm._litellm import import_litellm
from mesa_llm._retry import _is_transient
from mesa_llm.errors import CircuitOpenError

__all__ = ["CircuitBreaker", "CircuitState", "is_outage"]

logger = logging.getLogger(__name__)

CircuitState = Literal["closed", "open", "half-open"]


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` says the provider is down: a 5xx, a timeout or a connection error.

    A rate limit (429) is not an outage (the provider is up and asks to slow down:
    ``Retry-After`` and ``RateLimiter`` handle it), nor is a 4xx about the request.
    """
    return _is_transient(exc) and not isinstance(exc, import_litellm().RateLimitError)


@dataclass
class _Circuit:
    failures: int = 0  # provider outages in a row
    opened_at: float | None = None
    probing: bool = False
    last_error: BaseException | None = None


class CircuitBreaker:
    """Closed, open, half-open: ``failures`` outages in a row open a model's circuit.

    While a circuit is open every call to its model fails at once with
    :class:`~mesa_llm.errors.CircuitOpenError` (no request is sent, no retry waits).
    ``reset_after`` seconds after it opened the circuit is half-open: the next call
    is a probe sent to the provider (other calls still fail fast); its success closes
    the circuit, its outage opens it again for another ``reset_after``. Any answer that
    is not an outage (a success, a 4xx) counts as the provider being up. What counts
    as an outage: :func:`is_outage`. ``clock`` replaces ``time.monotonic``.

    Thread-safe and never waits, so it works the same in every stepping mode.
    Opening and closing are logged (``mesa_llm._circuit``); the calls failed fast are
    reported once per model and step by parallel stepping (``StepReport.open_circuits``).
    """

    def __init__(
        self,
        failures: int = 5,
        reset_after: float = 30.0,
        *,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if isinstance(failures, bool) or not isinstance(failures, int) or failures < 1:
            raise ValueError(
                f"mesa_llm: CircuitBreaker(failures={failures!r}) is invalid; "
                f"valid values are integers >= 1"
            )
        if (
            isinstance(reset_after, bool)
            or not isinstance(reset_after, int | float)
            or not math.isfinite(reset_after)
            or reset_after < 0
        ):
            raise ValueError(
                f"mesa_llm: CircuitBreaker(reset_after={reset_after!r}) is invalid; "
                f"valid values are finite numbers of seconds >= 0"
            )
        if clock is not None and not callable(clock):
            raise TypeError(f"mesa_llm: CircuitBreaker(clock={clock!r}) must be a callable")
        self.failures = failures
        self.reset_after = float(reset_after)
        self._clock = clock or time.monotonic
        self._lock = threading.Lock()
        self._circuits: dict[str, _Circuit] = {}

    def __repr__(self) -> str:
        return f"CircuitBreaker(failures={self.failures}, reset_after={self.reset_after:g})"

    def state(self, model: str) -> CircuitState:
        """The state of ``model``'s circuit now (``"closed"`` for a model never called)."""
        with self._lock:
            circuit = self._circuits.get(model)
            if circuit is None or circuit.opened_at is None:
                return "closed"
            if circuit.probing or self._clock() - circuit.opened_at >= self.reset_after:
                return "half-open"
            return "open"

    def reset(self, model: str | None = None) -> None:
        """Close ``model``'s circuit (every circuit when None) and forget its failures."""
        with self._lock:
            if model is None:
                self._circuits.clear()
            else:
                self._circuits.pop(model, None)

    def check(self, model: str) -> None:
        """Raise :class:`CircuitOpenError` if a call to ``model`` would fail fast now."""
        with self._lock:
            self._refuse_if_open(model, take_probe=False)

    def admit(self, model: str) -> bool:
        """Let one call to ``model`` through, or raise :class:`CircuitOpenError`.

        Returns True when the call is the half-open circuit's probe: report its
        result with :meth:`record`, or :meth:`abandon` it if it ended without one.
        """
        with self._lock:
            return self._refuse_if_open(model, take_probe=True)

    def record(self, model: str, error: BaseException | None, *, probe: bool) -> bool:
        """Count a call's result (``error`` None: success); True if ``model``'s circuit is open."""
        outage = error is not None and is_outage(error)
        with self._lock:
            circuit = self._circuits.setdefault(model, _Circuit())
            if not outage:
                if circuit.opened_at is not None and probe:
                    logger.info(
                        "mesa_llm: circuit for %s closed: the probe call got through", model
                    )
                if probe or circuit.opened_at is None:
                    self._circuits[model] = _Circuit()
                return False
            circuit.last_error = error
            if probe:
                circuit.probing = False
                circuit.opened_at = self._clock()
                logger.warning(
                    "mesa_llm: circuit for %s opened again: the probe call failed with %s; "
                    "failing fast for %gs",
                    model,
                    type(error).__name__,
                    self.reset_after,
                )
                return True
            if circuit.opened_at is not None:  # sent before the circuit opened
                return True
            circuit.failures += 1
            if circuit.failures < self.failures:
                return False
            circuit.opened_at = self._clock()
            logger.warning(
                "mesa_llm: circuit for %s opened after %d provider failures in a row (last: "
                "%s); failing fast for %gs",
                model,
                circuit.failures,
                type(error).__name__,
                self.reset_after,
            )
            return True

    def abandon(self, model: str) -> None:
        """A probe ended without a result (cancelled, interrupted): the next call probes."""
        with self._lock:
            circuit = self._circuits.get(model)
            if circuit is not None:
                circuit.probing = False

    def open_error(self, model: str) -> CircuitOpenError:
        """The error a call to ``model`` fails fast with (its circuit open)."""
        with self._lock:
            circuit = self._circuits.get(model) or _Circuit()
            return self._error(model, circuit)

    def _refuse_if_open(self, model: str, *, take_probe: bool) -> bool:
        circuit = self._circuits.get(model)
        if circuit is None or circuit.opened_at is None:
            return False
        due = self._clock() - circuit.opened_at >= self.reset_after
        if due and not circuit.probing:
            if take_probe:
                circuit.probing = True
            return take_probe
        raise self._error(model, circuit) from circuit.last_error

    def _error(self, model: str, circuit: _Circuit) -> CircuitOpenError:
        retry_in = 0.0
        if circuit.opened_at is not None:
            retry_in = max(0.0, circuit.opened_at + self.reset_after - self._clock())
        return CircuitOpenError(model, failures=max(circuit.failures, 1), retry_in=retry_in)
