"""Fault bursts and schedules: fault rates that change with the model step.

A :class:`Burst` raises (or lowers) the fault rate, and may change the kinds, over
a window of model steps; a ``schedule`` callable of the step does anything else.
Both are keyed on the model step, never on wall-clock time, so the same calls
fault in every stepping mode. Bursts serialise with the plan (``to_dict``); a
schedule is code and cannot be serialised.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

from mesa_llm_testing._fault_kinds import FaultKind

__all__ = ["Burst", "Schedule", "check_no_schedule", "rate_and_kinds", "schedule_name"]

#: ``schedule(step)`` -> None (no change), a rate, or ``(rate, kinds)``.
Schedule: TypeAlias = Callable[[int | None], "float | tuple[float, Any] | None"]


def _check_rate(rate: Any, where: str) -> float:
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0.0 <= rate <= 1.0:
        raise ValueError(f"mesa_llm_testing: {where} must be a number from 0 to 1; got {rate!r}")
    return float(rate)


@dataclass(frozen=True, slots=True)
class Burst:
    """Over model ``steps`` (a range or step numbers), calls fault at ``rate`` with ``kinds``.

    ``kinds=None`` keeps the plan's kinds. Where bursts overlap, the last one listed wins.
    """

    steps: range | tuple[int, ...]
    rate: float
    kinds: tuple[FaultKind, ...] | None = None

    def __init__(
        self,
        steps: range | Iterable[int],
        rate: float,
        kinds: Iterable[FaultKind | str] | str | None = None,
    ) -> None:
        if not isinstance(steps, range):
            try:
                items = tuple(sorted({int(s) for s in steps}))
            except (TypeError, ValueError):
                raise ValueError(
                    f"mesa_llm_testing: Burst steps must be a range or model step numbers; "
                    f"got {steps!r}"
                ) from None
            steps = items
        object.__setattr__(self, "steps", steps)
        object.__setattr__(self, "rate", _check_rate(rate, "Burst rate"))
        parsed = None if kinds is None else FaultKind.parse_many(kinds)
        if parsed is not None and not parsed:
            raise ValueError("mesa_llm_testing: Burst kinds must name at least one fault kind")
        object.__setattr__(self, "kinds", parsed)

    def covers(self, step: int | None) -> bool:
        """Whether model step ``step`` is in the burst."""
        return step is not None and step in self.steps

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``steps`` as ``{"start", "stop", "step"}`` for a range, else a list."""
        steps: Any = (
            {"start": self.steps.start, "stop": self.steps.stop, "step": self.steps.step}
            if isinstance(self.steps, range)
            else list(self.steps)
        )
        kinds = None if self.kinds is None else [k.value for k in self.kinds]
        return {"steps": steps, "rate": self.rate, "kinds": kinds}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Burst:
        """Rebuild a burst from :meth:`to_dict` output; ValueError saying what is wrong."""
        if not isinstance(data, Mapping) or "steps" not in data or "rate" not in data:
            raise ValueError(
                f"mesa_llm_testing: a burst is an object with 'steps' and 'rate' (and "
                f"optionally 'kinds'); got {data!r}"
            )
        steps = data["steps"]
        if isinstance(steps, Mapping):
            try:
                steps = range(int(steps["start"]), int(steps["stop"]), int(steps.get("step", 1)))
            except (KeyError, TypeError, ValueError):
                raise ValueError(
                    f"mesa_llm_testing: burst steps {steps!r} need integer 'start' and 'stop'"
                ) from None
        return cls(steps, data["rate"], data.get("kinds"))


def rate_and_kinds(
    step: int | None,
    rate: float,
    kinds: tuple[FaultKind, ...],
    bursts: tuple[Burst, ...],
    schedule: Schedule | None,
) -> tuple[float, tuple[FaultKind, ...]]:
    """The fault rate and kinds at model ``step``: the schedule's, else the last burst's."""
    for burst in bursts:
        if burst.covers(step):
            rate, kinds = burst.rate, burst.kinds or kinds
    if schedule is not None:
        answer = schedule(step)
        if isinstance(answer, tuple):
            rate = _check_rate(answer[0], f"schedule({step!r}) rate")
            kinds = kinds if answer[1] is None else FaultKind.parse_many(answer[1])
        elif answer is not None:
            rate = _check_rate(answer, f"schedule({step!r})")
    return rate, kinds


def check_no_schedule(settings: Mapping[str, Any]) -> None:
    """ValueError if ``settings`` come from a plan with a ``schedule`` (code is not saved)."""
    name = settings.get("schedule")
    if name:
        raise ValueError(
            f"mesa_llm_testing: this fault plan had schedule={name}, a callable, which cannot "
            "be serialised; rebuild the plan in code with the same schedule, or replay the "
            "faults it injected (FaultPlan.from_json() of FaultPlan.to_json() after the run)"
        )


def schedule_name(schedule: Schedule) -> str:
    """How a schedule is named where it cannot be serialised."""
    module = getattr(schedule, "__module__", None) or "?"
    return f"{module}.{getattr(schedule, '__qualname__', repr(schedule))}"
