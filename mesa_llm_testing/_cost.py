"""What a run's tokens would cost, from litellm's local cost map, priced as the model asked for.

The fake answers every call, but the code asked for a real model (say
``openai/gpt-4o-mini``): its tokens are priced as that model's, so a user sees what
the same run against the provider would cost. A model the cost map does not know
(``mesa-fake/...``, a local model) has an unknown cost, said as such.
"""

from __future__ import annotations

from typing import Any

from mesa_llm._litellm import import_litellm
from mesa_llm.parallel_stepping import TokenUsage

__all__ = ["estimate_cost", "is_priced", "usage_line"]


def _prices(model: str) -> tuple[float, float] | None:
    """($ per prompt token, $ per completion token) of ``model``, or None if unknown."""
    table: dict[str, Any] = import_litellm().model_cost
    _, slash, bare = model.partition("/")
    for name in (model, bare if slash else None):
        entry = table.get(name) if name else None
        if isinstance(entry, dict) and "input_cost_per_token" in entry:
            return float(entry["input_cost_per_token"]), float(
                entry.get("output_cost_per_token", 0.0)
            )
    return None


def is_priced(model: str) -> bool:
    """Whether litellm's local cost map has a price for ``model``."""
    return _prices(model) is not None


def estimate_cost(usage: TokenUsage, *, price_as: str | None = None) -> tuple[float, list[str]]:
    """(dollars for the priced models, models whose price is unknown).

    ``price_as``: price every model's tokens as this model's (``run --price-as``).
    """
    dollars = 0.0
    unknown = []
    for model, (prompt, completion, _) in sorted(usage.by_model.items()):
        prices = _prices(price_as or model)
        if prices is None:
            unknown.append(model)
        else:
            dollars += prompt * prices[0] + completion * prices[1]
    return dollars, unknown


def usage_line(
    usage: TokenUsage,
    *,
    agents: int | None = None,
    steps: int | None = None,
    what: str | None = None,
    price_as: str | None = None,
) -> str:
    """``"12,345 prompt + 678 completion tokens in 90 calls; this 10-agent x 5-step run would
    cost about $0.0023 (openai/gpt-4o-mini)"``, or the cost said to be unknown."""
    tokens = (
        f"{usage.prompt_tokens:,} prompt + {usage.completion_tokens:,} completion tokens "
        f"in {usage.calls:,} LLM replies"
    )
    if not usage.calls:
        return tokens
    dollars, unknown = estimate_cost(usage, price_as=price_as)
    run = what or f"this {agents}-agent x {steps}-step run"
    if price_as is not None and not unknown:
        return f"{tokens}; {run} would cost about ${dollars:.4g} (priced as {price_as})"
    priced = sorted(set(usage.by_model) - set(unknown))
    if not priced:
        return (
            f"{tokens}; cost unknown: litellm has no price for {', '.join(unknown)} "
            "(price it as a real model with --price-as, e.g. --price-as openai/gpt-4o-mini)"
        )
    text = f"{tokens}; {run} would cost about ${dollars:.4g} (priced as {', '.join(priced)})"
    if unknown:
        text += f"; no price for {', '.join(unknown)}"
    return text
