"""The stepping options, checked once, and the agent list, checked before any agent runs."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any, Final, Literal

Mode = Literal["asyncio", "threading", "sequential"]
OnError = Literal["isolate", "raise"]

MODES: Final = ("asyncio", "threading", "sequential")
ON_ERROR: Final = ("isolate", "raise")
DEFAULT_MAX_WORKERS: Final = 32

# A keyword left out of step_agents_parallel_sync(): it takes the enabled mode's value.
_UNSET: Any = object()


@dataclass(frozen=True, slots=True)
class _Settings:
    mode: str = "asyncio"
    on_error: str = "isolate"
    timeout: float | None = None
    max_concurrency: int | None = None
    max_workers: int | None = None


def _check_choice(name: str, value: Any, valid: Sequence[str]) -> None:
    if value not in valid:
        raise ValueError(
            f"mesa_llm: invalid {name}={value!r}; valid values are "
            + ", ".join(repr(v) for v in valid)
        )


def _check_positive(name: str, value: Any, *, integer: bool) -> None:
    if value is None:
        return
    kind = int if integer else (int, float)
    if (
        isinstance(value, bool)
        or not isinstance(value, kind)
        or not math.isfinite(value)  # nan would time out everything, inf overflows waits
        or value <= 0
    ):
        want = "an integer >= 1" if integer else "a finite number of seconds > 0"
        raise ValueError(f"mesa_llm: invalid {name}={value!r}; expected {want} or None")


def _settings(
    mode: str = "asyncio",
    on_error: str = "isolate",
    timeout: float | None = None,
    max_concurrency: int | None = None,
    max_workers: int | None = None,
) -> _Settings:
    _check_choice("mode", mode, MODES)
    _check_choice("on_error", on_error, ON_ERROR)
    _check_positive("timeout", timeout, integer=False)
    _check_positive("max_concurrency", max_concurrency, integer=True)
    _check_positive("max_workers", max_workers, integer=True)
    return _Settings(mode, on_error, timeout, max_concurrency, max_workers)


def _merged_settings(base: _Settings, **given: Any) -> _Settings:
    """``base`` with the options given (those not ``_UNSET``) replaced, checked."""
    merged = {k: getattr(base, k) if v is _UNSET else v for k, v in given.items()}
    return _settings(**merged)


def _check_method(method: Any) -> str:
    if not isinstance(method, str) or not method:
        raise ValueError(
            f"mesa_llm: invalid method={method!r}; expected a non-empty string naming the "
            f"agents' method, e.g. 'step'"
        )
    return method


def _as_list(agents: Iterable[Any]) -> list[Any]:
    """The agents as a list, checked before any runs: Mesa agents, each at most once.

    A duplicated agent is rejected rather than stepped once: a list that names an
    agent twice is a bug in the caller, and stepping it twice concurrently would race.
    Always a copy: agents may add to or remove from the caller's list while they step
    (an agent that dies), and every agent that was in it when the step began is stepped
    and reported.
    """
    if agents is None or isinstance(agents, (str, bytes)):
        raise TypeError(
            f"mesa_llm: agents must be a list, an iterable of agents or a Mesa agent set, "
            f"not {type(agents).__name__}"
        )
    found = list(agents)
    if len(set(map(id, found))) == len(found) and all(map(hasattr, found, repeat("unique_id"))):
        return found  # the common case, checked at C speed; the loop below names the culprit
    seen: dict[int, int] = {}
    for i, agent in enumerate(found):
        if not hasattr(agent, "unique_id"):
            raise TypeError(
                f"mesa_llm: agents[{i}] is a {type(agent).__name__}, not a Mesa agent "
                f"(it has no unique_id); pass Mesa agents only"
            )
        first = seen.setdefault(id(agent), i)
        if first != i:
            raise ValueError(
                f"mesa_llm: agent {agent.unique_id} ({type(agent).__name__}) is listed twice "
                f"(agents[{first}] and agents[{i}]); each agent is stepped once per step, "
                f"so remove the duplicate"
            )
    return found
