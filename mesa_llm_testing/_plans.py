"""Fault plans as settings (what a trace keeps), as ``--faults`` JSON, and as replay arguments."""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from typing import Any

from mesa_llm_testing._bursts import Burst, check_no_schedule, schedule_name
from mesa_llm_testing._faults import DEFAULT_KINDS, FaultKind, FaultPlan, InjectedFault

__all__ = [
    "plan_from_json",
    "plan_from_settings",
    "plan_settings",
    "plan_to_cli",
    "replay_command",
]


def plan_settings(plan: FaultPlan) -> dict[str, Any] | None:
    """The settings that make ``plan`` inject the same faults again; None if it never faults."""
    scripted = sorted(plan.scripted, key=InjectedFault.sort_key)
    if plan.rate == 0.0 and not scripted and not plan.bursts and plan.schedule is None:
        return None
    settings: dict[str, Any] = {
        "rate": plan.rate,
        "kinds": [k.value for k in plan.kinds],
        "seed": plan.seed,
        "test_id": plan.test_id,
        "scripted": [f.to_dict() for f in scripted],
    }
    if plan.bursts:
        settings["bursts"] = [b.to_dict() for b in plan.bursts]
    if plan.schedule is not None:  # named only: code cannot be serialised
        settings["schedule"] = schedule_name(plan.schedule)
    return settings


def plan_from_settings(settings: Mapping[str, Any]) -> FaultPlan:
    """A fresh plan from :func:`plan_settings` output.

    ValueError if the plan had a ``schedule``: a callable cannot be serialised.
    """
    check_no_schedule(settings)
    plan = FaultPlan(
        settings.get("rate", 0.0),
        kinds=settings.get("kinds"),
        seed=settings.get("seed", 0),
        test_id=settings.get("test_id", ""),
        bursts=[Burst.from_dict(b) for b in settings.get("bursts") or ()],
    )
    for record in settings.get("scripted", ()):
        fault = InjectedFault.from_dict(record)
        plan.at(agent=fault.agent, step=fault.step, call=fault.call, kind=fault.kind)
    return plan


def plan_from_json(text: str) -> FaultPlan:
    """A plan from JSON: a trace's ``faults`` settings, or ``FaultPlan.to_json()`` output.

    Settings (rate, kinds, seed, scripted faults) give the same plan again; a
    ``to_json()`` dump with recorded ``injected`` faults replays exactly those.
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"mesa_llm_testing: cannot read fault plan JSON: {exc}") from None
    if isinstance(data, Mapping) and not data.get("injected"):
        return plan_from_settings(data)
    return FaultPlan.from_json(text)


def plan_to_cli(plan: FaultPlan, *, seed: int) -> list[str]:
    """The ``mesa-llm-testing run ... --seed {seed}`` arguments that give ``plan``.

    ``--faults RATE [--kinds ...]`` when that is enough, else ``--faults`` with the
    plan's settings as JSON (scripted faults, or a plan seed other than ``seed``).
    """
    settings = plan_settings(plan)
    if settings is None:
        return ["--faults", "0"]
    if plan.scripted or plan.test_id or plan.seed != seed or plan.bursts or plan.schedule:
        return ["--faults", json.dumps(settings, separators=(",", ":"))]
    args = ["--faults", f"{plan.rate:g}"]
    if set(plan.kinds) == set(FaultKind):
        args += ["--kinds", "all"]
    elif set(plan.kinds) != set(DEFAULT_KINDS):
        args += ["--kinds", ",".join(kind.value for kind in plan.kinds)]
    return args


def replay_command(
    scenario: str, *, agents: int | None, steps: int, seed: int, mode: str, plan: FaultPlan | None
) -> str:
    """The ``mesa-llm-testing run`` command line (POSIX shell quoting) that replays a run."""
    args = ["mesa-llm-testing", "run", scenario]
    if agents is not None:
        args += ["--agents", str(agents)]
    args += ["--steps", str(steps), "--seed", str(seed), "--mode", mode]
    if plan is not None:
        args += plan_to_cli(plan, seed=seed)
    return shlex.join(args)
