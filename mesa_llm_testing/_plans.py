"""Fault plans on the command line: read ``--faults`` JSON; write the arguments replaying a plan."""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping

from mesa_llm_testing._faults import FaultKind, FaultPlan
from mesa_llm_testing._runner import plan_from_settings, plan_settings

__all__ = ["plan_from_json", "plan_to_cli", "replay_command"]


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
    if plan.scripted or plan.test_id or plan.seed != seed:
        return ["--faults", json.dumps(settings, separators=(",", ":"))]
    args = ["--faults", f"{plan.rate:g}"]
    if set(plan.kinds) != set(FaultKind):
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
