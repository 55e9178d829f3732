"""Fallback models of a ``ModuleLLM``: their validation and the routes a request may take.

``ModuleLLM(..., fallbacks=[...])`` tries its ``llm_model`` first, then each
fallback in order, when a model fails with a provider error that retrying did not
fix (a non-retryable 4xx, retries exhausted, an open circuit). A fallback is a
litellm model string or a mapping ``{"model": ..., "api_base": ..., "api_key": ...}``.
A string with the same provider prefix as ``llm_model`` (``"openai/..."``) goes to the
same ``api_base`` with the same ``api_key``; any other string to its provider's
default endpoint and key (the primary's key is never sent to another provider).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mesa_llm._circuit import CircuitBreaker
from mesa_llm._litellm import import_litellm
from mesa_llm._rate_limit import RateLimiter
from mesa_llm.errors import CircuitOpenError

__all__ = [
    "Fallback",
    "RateLimiters",
    "Route",
    "build_routes",
    "check_circuit_breaker",
    "falls_back",
]

Fallback = str | Mapping[str, Any]
"""A fallback model: ``"provider/model"`` or ``{"model": ..., "api_base": ..., "api_key": ...}``."""

RateLimiters = RateLimiter | Mapping[str, RateLimiter]
"""``rate_limiter=``: one limiter for ``llm_model``, or one per model (primary and fallbacks)."""

_FALLBACK_KEYS = ("model", "api_base", "api_key")


@dataclass(frozen=True)
class Route:
    """One model a request may go to: the primary (first) or a fallback."""

    model: str
    provider: str
    api_base: str | None
    api_key: str | None
    limiter: RateLimiter | None

    @property
    def circuit(self) -> str:
        """The name of this model's circuit in a ``CircuitBreaker``."""
        return self.model if self.api_base is None else f"{self.model}@{self.api_base}"

    def request(self, request: dict[str, Any]) -> dict[str, Any]:
        """``request`` (built for the primary) sent to this model instead."""
        routed = {k: v for k, v in request.items() if k not in ("api_base", "api_key")}
        routed["model"] = self.model
        for name in ("api_base", "api_key"):
            if (value := getattr(self, name)) is not None:
                routed[name] = value
        return routed


def build_routes(
    primary: tuple[str, str, str | None, str | None],
    fallbacks: Sequence[Fallback] | None,
    rate_limiter: RateLimiters | None,
    resolve: Callable[[str, str | None, str | None], str],
) -> tuple[Route, ...]:
    """The primary's route then each fallback's, checked; ``resolve`` gives a model's provider.

    ``primary`` is (model, provider, api_base, api_key). ``resolve(model, api_base,
    api_key)`` raises ``UnknownModelError`` / ``MissingAPIKeyError`` as for ``llm_model``.
    """
    model, provider, api_base, api_key = primary
    specs = [
        (name, api_base, api_key) if inherit else (name, base, key)
        for name, base, key, inherit in _parse_fallbacks(fallbacks, model)
    ]
    limiters = _limiters(rate_limiter, [model] + [spec[0] for spec in specs])
    routes = [Route(model, provider, api_base, api_key, limiters.get(model))]
    for name, base, key in specs:
        routes.append(Route(name, resolve(name, base, key), base, key, limiters.get(name)))
    return tuple(routes)


def _parse_fallbacks(
    fallbacks: Sequence[Fallback] | None, primary: str
) -> list[tuple[str, str | None, str | None, bool]]:
    """(model, api_base, api_key, inherits the primary's endpoint) of each fallback."""
    if fallbacks is None:
        return []
    if isinstance(fallbacks, str | Mapping) or not isinstance(fallbacks, Sequence):
        raise TypeError(
            f"mesa_llm: ModuleLLM(fallbacks={fallbacks!r}) must be a list of models, e.g. "
            f"fallbacks=['openai/gpt-4o-mini'] (a model string or a mapping with keys "
            f"{', '.join(_FALLBACK_KEYS)})"
        )
    specs: list[tuple[str, str | None, str | None, bool]] = []
    seen = {primary}
    for index, item in enumerate(fallbacks):
        where = f"mesa_llm: ModuleLLM(fallbacks=[...]) item {index}"
        if isinstance(item, Mapping):
            unknown = sorted(set(map(str, item)) - set(_FALLBACK_KEYS))
            if unknown:
                raise ValueError(
                    f"{where} has unknown keys {unknown}; valid keys: {', '.join(_FALLBACK_KEYS)}"
                )
            model, base, key = item.get("model"), item.get("api_base"), item.get("api_key")
            inherit = False
            for name, value in (("api_base", base), ("api_key", key)):
                if value is not None and not isinstance(value, str):
                    raise TypeError(f"{where}: {name}={value!r} must be a str or None")
        else:
            model, base, key = item, None, None
        inherit = isinstance(item, str) and _same_provider_prefix(primary, item)
        if not isinstance(model, str) or not model.strip():
            raise TypeError(
                f"{where} is {item!r}; give litellm's 'provider/model' string, "
                f"e.g. 'openai/gpt-4o-mini', or a mapping with a 'model' key"
            )
        if model in seen:
            raise ValueError(
                f"{where} is {model!r}, which is "
                + ("llm_model itself" if model == primary else "listed twice")
                + "; each model is tried once"
            )
        seen.add(model)
        specs.append((model, base, key, inherit))
    return specs


def _same_provider_prefix(primary: str, fallback: str) -> bool:
    """Whether a string fallback goes to the primary's api_base with its api_key."""
    prefix, slash, _ = primary.partition("/")
    other, other_slash, _ = fallback.partition("/")
    return bool(slash and other_slash) and prefix == other


def _limiters(rate_limiter: RateLimiters | None, models: list[str]) -> dict[str, RateLimiter]:
    if rate_limiter is None:
        return {}
    if isinstance(rate_limiter, RateLimiter):
        return {models[0]: rate_limiter}
    if not isinstance(rate_limiter, Mapping) or not all(
        isinstance(v, RateLimiter) for v in rate_limiter.values()
    ):
        raise TypeError(
            f"mesa_llm: ModuleLLM(rate_limiter={rate_limiter!r}) must be a RateLimiter, "
            f"a mapping of model to RateLimiter, or None"
        )
    unknown = sorted(set(rate_limiter) - set(models))
    if unknown:
        raise ValueError(
            f"mesa_llm: ModuleLLM(rate_limiter={{...}}) names models {unknown} that this "
            f"ModuleLLM never calls; valid models: {', '.join(models)}"
        )
    return dict(rate_limiter)


def check_circuit_breaker(breaker: Any) -> CircuitBreaker | None:
    """``breaker``, checked."""
    if breaker is not None and not isinstance(breaker, CircuitBreaker):
        raise TypeError(
            f"mesa_llm: ModuleLLM(circuit_breaker={breaker!r}) must be a CircuitBreaker or None"
        )
    return breaker


def falls_back(exc: BaseException) -> bool:
    """Whether a model's failure sends the request on to the next model.

    Provider errors do (every litellm exception: a 4xx, a 5xx left after retries,
    a timeout, a connection error) and an open circuit does. Our own errors do not
    (a malformed reply is parsed by the caller, after the model answered), nor do
    bugs or cancellation.
    """
    import_litellm()
    import openai  # loaded by litellm; litellm's provider errors subclass openai's

    return isinstance(exc, CircuitOpenError | openai.APIError)
