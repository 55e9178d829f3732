"""Checks over scenario run traces: isolation, ordering, reproducibility.

Each check raises ``AssertionError`` with a readable message naming the step,
the agent and what went wrong, so it can be used as is in a test or a CLI.
:func:`run_in_subprocess` runs a scenario in a fresh interpreter with another
``PYTHONHASHSEED``, for the cross-process reproducibility check.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

from mesa_llm_testing._fake import ERROR_KINDS
from mesa_llm_testing._faults import TRANSIENT_KINDS, FaultKind, FaultPlan
from mesa_llm_testing._plans import plan_from_settings, plan_settings
from mesa_llm_testing._runner import run_scenario
from mesa_llm_testing._trace import (
    RunTrace,
    StepTrace,
    _labels,
    _outcome,
    _sequence_difference,
)

__all__ = [
    "EXPECTED_EXCEPTIONS",
    "LoadLimitedWarning",
    "check_isolation",
    "check_ordering",
    "check_reproducible",
    "run_in_subprocess",
]

#: The exception type names an agent may fail with when a fault of each kind ends its step.
EXPECTED_EXCEPTIONS: Final[Mapping[FaultKind, frozenset[str]]] = {
    FaultKind.RATE_LIMIT: frozenset({"RateLimitError"}),
    FaultKind.TIMEOUT: frozenset({"Timeout"}),
    # 500, 502, 503 and 504 as litellm maps them for an OpenAI endpoint (504: a gateway timeout).
    FaultKind.SERVER_ERROR: frozenset(
        {"InternalServerError", "BadGatewayError", "ServiceUnavailableError", "Timeout"}
    ),
    # litellm reports a reset connection to an OpenAI endpoint as a 500 "Connection error.";
    # other clients (the OpenAI SDK itself, other litellm providers) as APIConnectionError.
    FaultKind.CONNECTION_ERROR: frozenset({"InternalServerError", "APIConnectionError"}),
    FaultKind.EMPTY_RESPONSE: frozenset({"EmptyResponseError"}),
    FaultKind.MALFORMED_JSON: frozenset({"MalformedResponseError", "ToolArgumentsError"}),
    FaultKind.BAD_REQUEST: frozenset({"BadRequestError"}),
    FaultKind.AUTH: frozenset({"AuthenticationError"}),
    # litellm has no class of its own for an OpenAI 403 (nor a 529): a plain APIError.
    FaultKind.PERMISSION: frozenset({"APIError", "PermissionDeniedError"}),
    FaultKind.NOT_FOUND: frozenset({"NotFoundError"}),
    FaultKind.CONTEXT_WINDOW: frozenset({"ContextWindowExceededError"}),
    FaultKind.CONTENT_POLICY: frozenset({"ContentPolicyViolationError"}),
    # A reply cut at max_tokens: unusable where tools or JSON were asked for.
    FaultKind.TRUNCATED: frozenset({"MalformedResponseError", "ToolArgumentsError"}),
    FaultKind.OVERLOADED: frozenset({"APIError", "InternalServerError", "ServiceUnavailableError"}),
    FaultKind.BAD_GATEWAY: frozenset({"BadGatewayError", "Timeout"}),
    FaultKind.CONNECTION_RESET: frozenset({"InternalServerError", "APIConnectionError"}),
    FaultKind.MISSING_FIELDS: frozenset({"InternalServerError", "APIError"}),
}
#: Faults answered with an error that a retry may cure (retried) rather than with a bad 200
#: reply (not retried).
_RETRIED: Final = ERROR_KINDS & TRANSIENT_KINDS
#: Faults answered with an error no retry cures: the agent's step ends at the first.
_REFUSED: Final = ERROR_KINDS - TRANSIENT_KINDS
_MAX_LISTED: Final = 20


# --------------------------------------------------------------------------- isolation


def check_isolation(
    trace: RunTrace,
    *,
    max_attempts: int | None = None,
    expected: Mapping[FaultKind, frozenset[str]] | None = None,
) -> None:
    """Check that faults stayed with the agents they hit.

    Per step: every agent of the model is accounted for, at most once per phase;
    an agent whose faults were all absorbed (retried in time, or a malformed reply
    to a request that asked for free text) succeeded; an agent failed exactly when
    a fault outlasted the retry policy (``max_attempts`` failed attempts in a row)
    or its reply could not be used (empty, or malformed where tools or JSON were
    asked for), with an exception type from ``expected[kind]`` (default
    :data:`EXPECTED_EXCEPTIONS`), and made no LLM call after that.

    ``max_attempts`` defaults to the one recorded in the trace. Assumes the
    policy retries the default transient errors and waits as long as the fake's
    ``Retry-After`` asks. Raises ``AssertionError`` listing every problem.
    """
    attempts = max_attempts if max_attempts is not None else trace.max_attempts
    if attempts is None:
        raise ValueError(
            "mesa_llm_testing: check_isolation needs the agents' RetryPolicy.max_attempts; the "
            "trace does not record one (its agents disagree or have no ModuleLLM): pass "
            "max_attempts=..."
        )
    names = {**EXPECTED_EXCEPTIONS, **(expected or {})}
    problems: list[str] = []
    for step in trace.steps:
        problems += _accounting_problems(step)
        problems += _fault_problems(step, attempts, names)
    if problems:
        raise AssertionError(
            _report(f"isolation check failed for {_run(trace)} (max_attempts={attempts})", problems)
        )


def _accounting_problems(step: StepTrace) -> list[str]:
    problems: list[str] = []
    where = f"step {step.step}"
    if step.population and not step.phases:
        return [
            f"{where}: no per-agent outcomes were recorded; the model must step its agents "
            f"with agents.shuffle_do(...) or expose step_reports"
        ]
    for method, order in step.phases:
        seen: set[Any] = set()
        for uid in order:
            if uid in seen:
                problems.append(f"{where}, phase {method!r}: agent {uid} was started twice")
            seen.add(uid)
    for uid in step.population:
        if uid not in step.outcomes:
            problems.append(f"{where}: agent {uid} was never stepped (no outcome in any phase)")
    return problems


def _fault_problems(
    step: StepTrace, max_attempts: int, names: Mapping[FaultKind, frozenset[str]]
) -> list[str]:
    problems: list[str] = []
    faulted = {(f["agent"], f["call"]): FaultKind.parse(f["kind"]) for f in step.faults}
    for agent, call in faulted:
        if call not in {c.call for c in step.llm_calls.get(agent, [])}:
            problems.append(
                f"step {step.step}: a fault was recorded for agent {agent}'s LLM call {call}, "
                f"but the fake recorded no such call"
            )
    for uid in dict.fromkeys([*step.outcomes, *step.llm_calls]):
        if uid is None:
            continue  # calls made outside any agent's step have no outcome to check
        who = f"step {step.step}, agent {uid}"
        calls = step.llm_calls.get(uid, [])
        attempt = 0
        ending: tuple[FaultKind, int, str] | None = None  # (kind, call, why it ends the step)
        absorbed: list[str] = []
        for c in calls:
            if ending is not None:
                problems.append(
                    f"{who}: made LLM call {c.call} after its {ending[0].value} fault on call "
                    f"{ending[1]} should have ended its step"
                )
                break
            kind = faulted.get((uid, c.call))
            attempt += 1
            if kind in _RETRIED:
                if attempt >= max_attempts:
                    ending = (kind, c.call, f"its {_ordinal(attempt)} failed attempt in a row")
                else:
                    absorbed.append(f"{kind.value} on call {c.call}")  # type: ignore[union-attr]
                continue
            if kind in _REFUSED:
                ending = (kind, c.call, "an error no retry cures")
            elif kind is FaultKind.EMPTY_RESPONSE:
                ending = (kind, c.call, "an empty reply")
            elif kind in (FaultKind.MALFORMED_JSON, FaultKind.TRUNCATED) and c.expects != "text":
                ending = (kind, c.call, f"a malformed reply where {c.expects} were asked for")
            elif kind is not None:
                absorbed.append(f"{kind.value} on call {c.call} (free text was asked for)")
            attempt = 0
        outcome = step.outcomes.get(uid)
        if ending is None:
            # Load-driven 429s (ProviderLimits) are not in the calls: they may have used up
            # the agent's attempts, so a failure after them is the load's, not a leak.
            if outcome != ("ok", None) and not step.limited.get(uid):
                because = f" (absorbed: {', '.join(absorbed)})" if absorbed else ""
                problems.append(
                    f"{who}: {_outcome(outcome)} although no fault outlasted the retry "
                    f"policy{because}"
                )
            continue
        kind, call, why = ending
        if outcome is not None and outcome[0] == "ok":
            problems.append(
                f"{who}: succeeded although its {kind.value} fault on LLM call {call} was {why}"
            )
        elif outcome is None or outcome[1] not in names[kind]:
            problems.append(
                f"{who}: {_outcome(outcome)} after its {kind.value} fault on LLM call {call}; "
                f"expected {' or '.join(sorted(names[kind]))}"
            )
    return problems


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


# --------------------------------------------------------------------------- ordering


def check_ordering(trace: RunTrace, sequential_trace: RunTrace) -> None:
    """Check that agents started in the sequential shuffle order and drew the same random numbers.

    Per step: the start order (and each phase's order) equals the sequential
    run's, and the model's RNG state after the step is the same. As in
    :func:`check_reproducible`, a difference at or after a load-driven 429 is a
    :class:`LoadLimitedWarning`, not a failure.
    """
    if sequential_trace.mode != "sequential":
        raise ValueError(
            f"mesa_llm_testing: check_ordering compares a run with a sequential one; the "
            f"second trace is a {sequential_trace.mode} run. Run it with mode='sequential'"
        )
    same = (trace.scenario, trace.seed, trace.agents) == (
        sequential_trace.scenario,
        sequential_trace.seed,
        sequential_trace.agents,
    )
    if not same:
        raise AssertionError(
            f"mesa_llm_testing: ordering check compares different runs: {_run(trace)} and "
            f"{_run(sequential_trace)}"
        )
    la, lb = _labels(trace, sequential_trace)
    if trace.mode == sequential_trace.mode:
        la, lb = "this run", "the sequential run"
    problems: list[str] = []
    first_at: int | None = None  # index of the first step with a problem
    for index, (sa, sb) in enumerate(zip(trace.steps, sequential_trace.steps, strict=False)):
        where = f"step {sa.step}"
        if sa.start_order != sb.start_order:
            problems.append(
                _sequence_difference(
                    f"{where}: agents were not started in the sequential shuffle order",
                    sa.start_order,
                    sb.start_order,
                    la,
                    lb,
                )
            )
        elif sa.phases != sb.phases:
            for (ma, oa), (_, ob) in zip(sa.phases, sb.phases, strict=False):
                if oa != ob:
                    problems.append(
                        _sequence_difference(
                            f"{where}, phase {ma!r}: agents were not started in the sequential "
                            f"order",
                            oa,
                            ob,
                            la,
                            lb,
                        )
                    )
                    break
            else:
                problems.append(f"{where}: {la} ran other phases than {lb}")
        if sa.rng_digest != sb.rng_digest:
            problems.append(
                f"{where}: the model's random number generator is in a different state after "
                f"the step than in {lb} (random numbers were drawn in another order or number)"
            )
        if problems and first_at is None:
            first_at = index
    if first_at is None:  # only the number of steps differs: from the first missing step
        first_at = min(len(trace.steps), len(sequential_trace.steps))
    if len(trace.steps) != len(sequential_trace.steps):
        problems.append(
            f"{la} has {len(trace.steps)} steps, {lb} has {len(sequential_trace.steps)}"
        )
    if problems:
        message = _report(f"ordering check failed for {_run(trace)}", problems)
        if not _excused_by_load(message, trace, sequential_trace, first_at):
            raise AssertionError(message)


# --------------------------------------------------------------------------- reproducibility


class LoadLimitedWarning(UserWarning):
    """Two runs differ after load-driven 429s, which depend on timing: not a failure."""


def check_reproducible(a: RunTrace, b: RunTrace) -> None:
    """Check that two runs left identical traces (mode and timings aside).

    Load-driven 429s (``FakeLLM(limits=ProviderLimits(...))``) depend on timing by
    nature. When the first differing step comes at or after a step in which either
    run had one, the difference may be theirs: the check says so with a
    :class:`LoadLimitedWarning` (naming the difference and the 429s) instead of failing.
    A difference before any of them still fails.
    """
    difference = a.diff(b)
    if difference is None:
        return
    message = f"mesa_llm_testing: {_run(a)} and {_run(b)} are not identical: {difference}"
    if not _excused_by_load(message, a, b, a.first_difference_step(b)):
        raise AssertionError(message)


def _excused_by_load(message: str, a: RunTrace, b: RunTrace, differs_at: int | None) -> bool:
    """Warn (:class:`LoadLimitedWarning`) instead of failing when load-driven 429s came first.

    True when the first difference (step index ``differs_at``) comes at or after a step
    in which either run had a load-driven 429: those depend on timing by nature.
    """
    limited = _first_limited_step(a, b)
    if differs_at is None or limited is None or limited[0] > differs_at:
        return False
    la, lb = _labels(a, b)
    warnings.warn(
        f"{message}; not failed: the runs met load-driven 429s from the fake's provider "
        f"limits ({a.limited} in {la}, {b.limited} in {lb}, from step {limited[1]}), "
        f"which depend on timing, and the first difference comes at or after them",
        LoadLimitedWarning,
        stacklevel=3,
    )
    return True


def _first_limited_step(a: RunTrace, b: RunTrace) -> tuple[int, int] | None:
    """(index, step number) of the first step in which either run had a load-driven 429."""
    for index in range(max(len(a.steps), len(b.steps))):
        for trace in (a, b):
            if index < len(trace.steps) and trace.steps[index].limited:
                return index, trace.steps[index].step
    return None


def run_in_subprocess(
    scenario: str | Callable[..., Any],
    *,
    steps: int,
    seed: int,
    mode: str = "sequential",
    agents: int | None = None,
    faults: FaultPlan | None = None,
    hash_seed: int | None = None,
    timeout: float = 300.0,
) -> RunTrace:
    """Run ``run_scenario`` in a fresh Python process and return its trace.

    ``scenario`` is a built-in name, ``"module:factory"``, a file path, or an
    importable callable (a class defined at module level). The child gets
    ``PYTHONHASHSEED=hash_seed``; by default one different from this process's
    (its value plus one when it is set, else 1), so string hashing, set and dict
    orders of hashed strings differ from this process. ``faults`` is sent by its
    settings: the child injects the faults a fresh plan with them would.
    """
    payload = {
        "scenario": _scenario_spec(scenario),
        "steps": steps,
        "mode": mode,
        "seed": seed,
        "agents": agents,
        "faults": plan_settings(faults) if faults is not None else None,
    }
    env = dict(os.environ)
    env["PYTHONHASHSEED"] = str(hash_seed if hash_seed is not None else _other_hash_seed())
    env.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    paths = [p for p in sys.path if p]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    with tempfile.TemporaryDirectory(prefix="mesa_llm_testing-") as tmp:
        output = Path(tmp) / "trace.json"
        payload["output"] = str(output)
        proc = subprocess.run(
            [sys.executable, "-c", "from mesa_llm_testing.checks import _child; _child()"],
            input=json.dumps(payload),
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if proc.returncode != 0 or not output.exists():
            tail = "\n".join(proc.stderr.strip().splitlines()[-25:])
            raise RuntimeError(
                f"mesa_llm_testing: the subprocess run of {payload['scenario']!r} failed "
                f"(exit status {proc.returncode}):\n{tail}"
            )
        return RunTrace.from_json(output.read_text())


def _child() -> None:
    """Entry point of :func:`run_in_subprocess`'s child: a JSON request on stdin."""
    request = json.loads(sys.stdin.read())
    settings = request["faults"]
    trace = run_scenario(
        request["scenario"],
        steps=request["steps"],
        mode=request["mode"],
        seed=request["seed"],
        agents=request["agents"],
        faults=plan_from_settings(settings) if settings is not None else None,
    )
    Path(request["output"]).write_text(trace.to_json())


def _scenario_spec(scenario: str | Callable[..., Any]) -> str:
    if isinstance(scenario, str):
        return scenario
    from mesa_llm_testing._discovery import builtin_names, load_scenario

    for name in builtin_names():
        if load_scenario(name) is scenario:
            return name
    module = getattr(scenario, "__module__", None)
    qualname = getattr(scenario, "__qualname__", None)
    if not module or not qualname or module == "__main__" or "<locals>" in qualname:
        raise ValueError(
            f"mesa_llm_testing: a subprocess cannot import {scenario!r}; pass a built-in "
            f"scenario name, 'module:factory', or a class defined at module level in an "
            f"importable module"
        )
    return f"{module}:{qualname}"


def _other_hash_seed() -> int:
    current = os.environ.get("PYTHONHASHSEED", "")
    return (int(current) + 1) % 4_294_967_296 if current.isdigit() else 1


# --------------------------------------------------------------------------- messages


def _run(trace: RunTrace) -> str:
    return f"the {trace.mode} run of {trace.scenario!r} (seed {trace.seed})"


def _report(title: str, problems: list[str]) -> str:
    lines = [f"mesa_llm_testing: {title}:"]
    lines += [f"  {p}" for p in problems[:_MAX_LISTED]]
    if len(problems) > _MAX_LISTED:
        lines.append(f"  ... and {len(problems) - _MAX_LISTED} more")
    return "\n".join(lines)
