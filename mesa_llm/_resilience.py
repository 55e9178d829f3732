"""One request through the resilience policies: rate limiter, circuit breaker, retries, fallbacks.

For each model in turn (``llm_model``, then its fallbacks), the request is retried
per ``RetryPolicy``; each attempt first asks the model's circuit (fail fast while it
is open), then waits for the model's ``RateLimiter``, then is sent. A provider error
that retrying did not fix moves the request to the next model; when every model
failed, the last error propagates. Every provider error leaving here carries a note
naming the model, the agent and the step; each fallback is logged, and the model
that answered is on the response (``response._hidden_params["mesa_llm_model"]``).

A reply cut off at ``max_tokens`` (``finish_reason == "length"``) is not an error here:
the provider answered as asked, and the same request would be cut off again, so it is
neither retried nor sent to a fallback. It is returned as is (and logged at INFO);
a caller that parses it (tools, JSON) fails with ``MalformedResponseError``.
"""

from __future__ import annotations

import functools
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from mesa_llm._circuit import CircuitBreaker
from mesa_llm._fallbacks import Route, falls_back
from mesa_llm._rate_limit import Permit
from mesa_llm._retry import RetryPolicy, _note, acall_with_retries, call_with_retries
from mesa_llm.errors import CircuitOpenError
from mesa_llm.parallel_stepping import current_agent

__all__ = ["Policies", "asend", "hidden_params", "send"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Policies:
    """What a ``ModuleLLM`` applies to each request."""

    routes: tuple[Route, ...]
    retry: RetryPolicy
    breaker: CircuitBreaker | None


def send(
    policies: Policies,
    rng: random.Random,
    request: dict[str, Any],
    send_one: Callable[[Route, dict[str, Any]], T],
) -> T:
    """Send ``request`` (sync) through ``policies``; ``send_one`` makes one provider call."""
    tried: list[tuple[Route, Exception]] = []
    for route in policies.routes:
        routed = route.request(request)
        try:
            response = call_with_retries(
                policies.retry, rng, functools.partial(_attempt, policies, route, routed, send_one)
            )
        except Exception as exc:
            _failed(policies, route, exc, tried)
            continue
        return _answered(response, route, tried)
    raise tried[-1][1]


async def asend(
    policies: Policies,
    rng: random.Random,
    request: dict[str, Any],
    send_one: Callable[[Route, dict[str, Any]], Awaitable[T]],
) -> T:
    """Async :func:`send`: waits for the limiter and between retries without blocking the loop."""
    tried: list[tuple[Route, Exception]] = []
    for route in policies.routes:
        routed = route.request(request)
        try:
            response = await acall_with_retries(
                policies.retry,
                rng,
                functools.partial(_aattempt, policies, route, routed, send_one),
            )
        except Exception as exc:
            _failed(policies, route, exc, tried)
            continue
        return _answered(response, route, tried)
    raise tried[-1][1]


# --------------------------------------------------------------------------- one attempt


def _attempt(
    policies: Policies,
    route: Route,
    request: dict[str, Any],
    send_one: Callable[[Route, dict[str, Any]], T],
) -> T:
    breaker = policies.breaker
    if breaker is not None:
        breaker.check(route.circuit)  # fail fast before queueing at the limiter
    permit = None
    if route.limiter is not None:
        permit = route.limiter.acquire(route.limiter.estimate(request))
    with _Admitted(breaker, route, permit) as admitted:
        response = send_one(route, request)
        admitted.succeeded(response)
    return response


async def _aattempt(
    policies: Policies,
    route: Route,
    request: dict[str, Any],
    send_one: Callable[[Route, dict[str, Any]], Awaitable[T]],
) -> T:
    breaker = policies.breaker
    if breaker is not None:
        breaker.check(route.circuit)
    permit = None
    if route.limiter is not None:
        permit = await route.limiter.aacquire(route.limiter.estimate(request))
    with _Admitted(breaker, route, permit) as admitted:
        response = await send_one(route, request)
        admitted.succeeded(response)
    return response


class _Admitted:
    """Around one provider call: the circuit's admission and verdict, the limiter's permit.

    Entering admits the call through the circuit (the circuit may have opened while
    the call queued at the limiter: then the permit is refunded, nothing is sent).
    A provider failure that leaves the circuit open becomes ``CircuitOpenError``, so
    no retry waits on a provider the breaker has given up on.
    """

    def __init__(self, breaker: CircuitBreaker | None, route: Route, permit: Permit | None):
        self.breaker = breaker
        self.route = route
        self.permit = permit
        self.probe = False

    def __enter__(self) -> _Admitted:
        if self.breaker is not None:
            try:
                self.probe = self.breaker.admit(self.route.circuit)
            except BaseException:
                if self.permit is not None:
                    self.permit.refund()
                raise
        return self

    def succeeded(self, response: Any) -> None:
        if self.breaker is not None:
            self.breaker.record(self.route.circuit, None, probe=self.probe)
        if self.permit is None:
            return
        total = getattr(getattr(response, "usage", None), "total_tokens", None)
        if isinstance(total, int) and total > 0:
            self.permit.record_tokens(total)

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if self.permit is not None:
            self.permit.release()
        if self.breaker is None or exc is None:
            return
        if not isinstance(exc, Exception):  # cancelled or interrupted: no verdict
            if self.probe:
                self.breaker.abandon(self.route.circuit)
            return
        if self.breaker.record(self.route.circuit, exc, probe=self.probe):
            raise self.breaker.open_error(self.route.circuit) from exc


# --------------------------------------------------------------------------- outcomes


def _where() -> str:
    agent = current_agent()
    if agent is None:
        return "outside any agent's step"
    step = getattr(getattr(agent, "model", None), "steps", "?")
    return f"agent {agent.unique_id} at step {step}"


def _failed(
    policies: Policies, route: Route, exc: Exception, tried: list[tuple[Route, Exception]]
) -> None:
    """Note a model's failure; return to try the next model, or re-raise ``exc``."""
    if not falls_back(exc):
        raise exc
    if current_agent() is not None:  # outside a step the retry notes say all there is
        retried = isinstance(exc, CircuitOpenError) or policies.retry.is_retryable(exc)
        why = "" if retried else f"; {type(exc).__name__} is not retried"
        _note(exc, f"mesa_llm: request to {route.model} by {_where()} failed{why}")
    tried.append((route, exc))
    remaining = policies.routes[len(tried) :]
    if not remaining:
        if len(tried) > 1:
            _note(exc, "mesa_llm: every model failed: " + _summary(tried))
        return
    # An open circuit was warned about once, when it opened: its fallbacks are routine.
    logger.log(
        logging.INFO if isinstance(exc, CircuitOpenError) else logging.WARNING,
        "mesa_llm: %s failed for %s with %s; falling back to %s",
        route.model,
        _where(),
        type(exc).__name__,
        remaining[0].model,
    )


def _summary(tried: Sequence[tuple[Route, Exception]]) -> str:
    return ", ".join(f"{route.model} ({type(exc).__name__})" for route, exc in tried)


def hidden_params(response: Any) -> dict[str, Any] | None:
    """``response._hidden_params`` (litellm's private dict on a reply) if it is a dict."""
    # A pydantic model keeps its private attributes in __pydantic_private__; reading them
    # there skips pydantic's __getattr__ (a few microseconds a call, three times per call).
    private = getattr(response, "__pydantic_private__", None)
    if isinstance(private, dict) and "_hidden_params" in private:
        hidden = private["_hidden_params"]
    else:
        hidden = getattr(response, "_hidden_params", None)
    return hidden if isinstance(hidden, dict) else None


def _answered(response: T, route: Route, tried: list[tuple[Route, Exception]]) -> T:
    hidden = hidden_params(response)
    if hidden is not None:
        hidden["mesa_llm_model"] = route.model
        hidden["mesa_llm_fallbacks"] = [(r.model, type(e).__name__) for r, e in tried]
    if tried:
        logger.info("mesa_llm: %s answered for %s after %s", route.model, _where(), _summary(tried))
    choices = getattr(response, "choices", None)
    if choices and getattr(choices[0], "finish_reason", None) == "length":
        logger.info(
            "mesa_llm: %s cut its reply off at max_tokens for %s (finish_reason='length')",
            route.model,
            _where(),
        )
    return response
