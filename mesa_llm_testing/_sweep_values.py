"""A sweep's seeds, fault rates and modes written as text, read one way for ``sweep()`` and the CLI.

``"1-50"``, ``"1,3,5"`` or ``"1-3,7"`` (seeds), ``"0,0.1"`` (fault rates),
``"asyncio,threading"`` (modes). A value given twice is an error, in both: a
sweep runs each point once. Cheap to import (the CLI's parser uses it).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["parse_modes", "parse_rates", "parse_seeds", "values_of"]


def _once(values: list[Any], text: str) -> None:
    for index, value in enumerate(values):
        if value in values[:index]:
            raise ValueError(f"{value!r} appears twice in {text!r}; give each value once")


def parse_seeds(text: str) -> list[int]:
    """``1-50``, ``1,3,5`` or ``1-3,7``: whole numbers >= 0, in order; ValueError otherwise."""
    values: list[int] = []
    for part in text.split(","):
        low, dash, high = part.strip().partition("-")
        try:
            first, last = int(low), int(high if dash else low)
        except ValueError:
            first, last = -1, -1
        if first < 0 or last < first:
            raise ValueError(
                f"invalid value {text!r}; valid values: whole numbers >= 0 and ranges, "
                "comma-separated (1-50, 1,3,5, 1-3,7)"
            )
        values.extend(range(first, last + 1))
    _once(values, text)
    return values


def parse_rates(text: str) -> list[float]:
    """``0,0.05,0.1``: fault rates from 0 to 1, in order; ValueError otherwise."""
    rates: list[float] = []
    for part in text.split(","):
        try:
            rate = float(part)
        except ValueError:
            rate = -1.0
        if not 0.0 <= rate <= 1.0:
            raise ValueError(
                f"invalid value {part.strip()!r} in {text!r}; valid values: fault rates from "
                "0 to 1, comma-separated (0,0.05,0.1,0.3)"
            )
        rates.append(rate)
    _once(rates, text)
    return rates


def parse_modes(text: str) -> list[str]:
    """``asyncio,threading``: mode names in order (checked by the caller); ValueError on repeats."""
    modes = [part.strip() for part in text.split(",")]
    _once(modes, text)
    return modes


def values_of(name: str, given: Any, parse: Any, scalar: tuple[type, ...]) -> list[Any]:
    """``sweep(name=given)`` as a list: text parsed as the CLI does, a ``scalar`` as one value.

    ValueError prefixed with the library name, naming the option, otherwise.
    """
    if isinstance(given, str):
        try:
            return list(parse(given))
        except ValueError as exc:
            raise ValueError(f"mesa_llm_testing: {name}={given!r}: {exc}") from None
    if isinstance(given, scalar) and not isinstance(given, bool):
        return [given]
    if not isinstance(given, Iterable):
        raise ValueError(
            f"mesa_llm_testing: {name}={given!r}; give a list, one value, or text as on the "
            f"command line (--{name})"
        )
    return list(given)
