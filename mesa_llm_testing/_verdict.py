"""The checks ``mesa-llm-testing run`` makes on its runs, and the verdict naming each one.

``isolation`` in every run (when the agents share a ``RetryPolicy.max_attempts``),
``ordering`` and ``reproducibility`` of each parallel run against the sequential
one (``--mode all``), and ``progress`` in every run: a run in which every agent
failed in every step has not exercised the model at all, so it fails.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, TextIO

if TYPE_CHECKING:
    from mesa_llm_testing._trace import RunTrace

__all__ = ["CHECKS", "CheckResult", "check_runs", "print_verdict"]

#: The checks, in the order they are reported.
CHECKS: Final = ("isolation", "ordering", "reproducibility", "progress")


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One check on one run (``scope``): passed, failed (``problem``) or not run (``skipped``)."""

    name: str
    scope: str
    problem: str | None = None
    skipped: str | None = None

    @property
    def status(self) -> str:
        """``"passed"``, ``"FAILED"`` or ``"not run"``."""
        return "not run" if self.skipped else ("FAILED" if self.problem else "passed")


def check_runs(traces: Sequence[RunTrace]) -> list[CheckResult]:
    """Every check on every run, in :data:`CHECKS` order."""
    from mesa_llm_testing import checks
    from mesa_llm_testing._summary import all_agents_failed, failures_line

    results: list[CheckResult] = []
    for trace in traces:
        if trace.max_attempts is None:
            why = "the agents have no common RetryPolicy.max_attempts"
            results.append(CheckResult("isolation", trace.mode, skipped=why))
            continue
        problem = _problem(checks.check_isolation, trace)
        results.append(CheckResult("isolation", trace.mode, problem))
    reference = next((t for t in traces if t.mode == "sequential"), None)
    others = [t for t in traces if t is not reference]
    if reference is None or not others:
        why = "needs --mode all"
        results += [CheckResult(name, "", skipped=why) for name in ("ordering", "reproducibility")]
    else:
        for trace in others:
            results.append(_excusable("ordering", checks.check_ordering, trace, reference))
        for trace in others:
            results.append(
                _excusable("reproducibility", checks.check_reproducible, reference, trace)
            )
    for trace in traces:
        problem = None
        if all_agents_failed(trace):
            agent_steps = sum(len(st.outcomes) for st in trace.steps)
            problem = (
                f"every agent failed in every step ({agent_steps} agent-steps: "
                f"{failures_line(trace)}); the model never got past its LLM calls"
            )
        results.append(CheckResult("progress", trace.mode, problem))
    return results


def _excusable(name: str, check: object, *traces: RunTrace) -> CheckResult:
    """A check of a parallel run against the sequential one (either order in ``traces``);
    a difference after load-driven 429s is reported as "not run" with why, not failed."""
    from mesa_llm_testing import checks

    parallel = next(t for t in traces if t.mode != "sequential")
    scope = f"{parallel.mode} vs sequential"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", checks.LoadLimitedWarning)
        problem = _problem(check, *traces)
    excused = [w for w in caught if issubclass(w.category, checks.LoadLimitedWarning)]
    if excused and problem is None:
        why = str(excused[0].message).removeprefix("mesa_llm_testing: ")
        return CheckResult(name, scope, skipped=why)
    return CheckResult(name, scope, problem)


def _problem(check: object, *args: RunTrace) -> str | None:
    try:
        check(*args)  # type: ignore[operator]
    except AssertionError as exc:
        return str(exc).removeprefix("mesa_llm_testing: ")
    return None


def print_verdict(results: Sequence[CheckResult], out: TextIO) -> bool:
    """Print a line per check and the verdict naming them; True when none failed."""
    print("\nchecks:", file=out)
    width = max(len(name) for name in CHECKS)
    for name in CHECKS:
        mine = [r for r in results if r.name == name]
        if not mine:
            continue
        for status in ("FAILED", "passed", "not run"):
            scopes = [r.scope for r in mine if r.status == status]
            if scopes:
                detail = ", ".join(s for s in scopes if s)
                if status == "not run":
                    detail = mine[0].skipped or ""
                print(f"  {name.ljust(width)}  {status:<7}  {detail}".rstrip(), file=out)
    failed = [r for r in results if r.problem]
    ran = [name for name in CHECKS if any(r.name == name and not r.skipped for r in results)]
    if not failed:
        print(f"all checks passed: {', '.join(ran)}", file=out)
        return True
    names = list(dict.fromkeys(r.name for r in failed))
    passed = [name for name in ran if name not in names]
    also = f" (passed: {', '.join(passed)})" if passed else ""
    print(f"\nCHECK FAILED: {', '.join(names)}{also}", file=out)
    for result in failed:
        print(f"  {result.name} ({result.scope}): {result.problem}", file=out)
    return False
