"""The record of a scenario run: ``RunTrace``, ``StepTrace``, ``CallTrace``, as JSON, and diffs.

A trace holds, per step, what a reproducibility or isolation check needs and
nothing that legitimately varies between runs: the agents' start order, each
agent's outcome, the faults injected, digests of every LLM request and reply,
and digests of the model's RNG state and state. Wall times are kept for
reports but never compared. :meth:`RunTrace.diff` names the first difference
between two traces in plain words.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

from mesa_llm.parallel_stepping import TokenUsage
from mesa_llm_testing._faults import FaultPlan, InjectedFault
from mesa_llm_testing._plans import plan_from_settings

__all__ = ["PER_AGENT_FIELDS", "TRACE_VERSION", "CallTrace", "RunTrace", "StepTrace"]

TRACE_VERSION: Final = 1

#: The fields of a step that grow with its number of agents (what ``_packed`` compresses).
PER_AGENT_FIELDS: Final = (
    "start_order",
    "phases",
    "population",
    "outcomes",
    "faults",
    "llm_calls",
)


class CallTrace(NamedTuple):
    """One LLM call of an agent in a step, as digests."""

    call: int  # the call's index among the agent's calls in the step (retries count)
    prompt: str  # digest of the request: model, messages, tools, tool choice, response format
    response: str  # digest of the reply, or "error:<exception type>"
    expects: str  # what the request asked for: "text", "tools" or "json"
    fault: str | None  # the FaultKind value injected into this call, if any
    generated: bool = False  # a cassette replay had no recording: the seeded generator answered


@dataclass(eq=False)
class StepTrace:
    """What happened in one model step."""

    step: int
    start_order: list[Any]  # unique_ids in the order agents were first started in the step
    outcomes: dict[Any, tuple[str, str | None]]  # uid -> (status, exception type name)
    faults: list[dict[str, Any]]  # InjectedFault.to_dict(), sorted
    llm_calls: dict[Any, list[CallTrace]]  # uid (None: no agent) -> calls in call order
    rng_digest: str  # digest of the model's RNG state after the step
    state_digest: str  # digest of the model's state after the step
    recovered: int = 0  # faults that did not end an agent's step (retried, or harmless)
    retries: int = 0  # retry waits requested (each one precedes a retry)
    phases: list[tuple[str, list[Any]]] = field(default_factory=list)  # (method, start order)
    population: list[Any] = field(default_factory=list)  # unique_ids of model.agents before
    seconds: float = 0.0  # wall time; never compared
    mode: str = ""  # the stepping mode of this step; never compared
    #: ``TokenUsage.to_dict()`` of the replies the agents' ModuleLLMs got; never compared
    usage: dict[str, Any] = field(default_factory=dict)
    #: uid (None: no agent) -> calls refused by the fake's ``ProviderLimits`` (load-driven
    #: 429s: they depend on timing, so they are never compared; see ``check_reproducible``)
    limited: dict[Any, int] = field(default_factory=dict)

    @property
    def failed(self) -> dict[Any, str | None]:
        """The agents that failed in this step: uid -> exception type name."""
        return {uid: exc for uid, (status, exc) in self.outcomes.items() if status != "ok"}

    def _light_key(self) -> tuple[Any, ...]:
        return (
            self.step,
            self.rng_digest,
            self.state_digest,
            self.recovered,
            self.retries,
        )

    def _packed_payload(self) -> bytes | None:
        """The per-agent fields as packed bytes (``_packed.PackedStep``), or None."""
        return None

    def _per_agent_key(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in PER_AGENT_FIELDS)

    def _same_as(self, other: StepTrace) -> bool:
        if self._light_key() != other._light_key():
            return False
        mine, theirs = self._packed_payload(), other._packed_payload()
        if mine is not None and mine == theirs:
            return True  # equal bytes unpack to equal fields
        return self._per_agent_key() == other._per_agent_key()

    def _key(self) -> tuple[Any, ...]:
        """Everything ``==`` compares (not ``seconds``, ``mode``, ``usage``, ``limited``)."""
        return self._light_key() + self._per_agent_key()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (mappings as lists of pairs, so unique_ids keep their type)."""
        return {
            "step": self.step,
            "start_order": list(self.start_order),
            "phases": [[method, list(order)] for method, order in self.phases],
            "population": list(self.population),
            "outcomes": [[uid, status, exc] for uid, (status, exc) in self.outcomes.items()],
            "faults": list(self.faults),
            "llm_calls": [
                [uid, [list(c) if c.generated else list(c)[:5] for c in calls]]
                for uid, calls in self.llm_calls.items()
            ],
            "rng_digest": self.rng_digest,
            "state_digest": self.state_digest,
            "recovered": self.recovered,
            "retries": self.retries,
            "seconds": self.seconds,
            "mode": self.mode,
            "usage": self.usage,
            **({"limited": [[uid, n] for uid, n in self.limited.items()]} if self.limited else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StepTrace:
        """Rebuild a step from :meth:`to_dict` output."""
        return cls(
            step=data["step"],
            start_order=list(data["start_order"]),
            outcomes={uid: (status, exc) for uid, status, exc in data["outcomes"]},
            faults=[dict(f) for f in data["faults"]],
            llm_calls={uid: [CallTrace(*c) for c in calls] for uid, calls in data["llm_calls"]},
            rng_digest=data["rng_digest"],
            state_digest=data["state_digest"],
            recovered=data.get("recovered", 0),
            retries=data.get("retries", 0),
            phases=[(method, list(order)) for method, order in data.get("phases", [])],
            population=list(data.get("population", [])),
            seconds=data.get("seconds", 0.0),
            mode=data.get("mode", ""),
            usage=dict(data.get("usage") or {}),
            limited={uid: n for uid, n in data.get("limited") or ()},
        )


@dataclass(eq=False)
class RunTrace:
    """The record of one scenario run; ``==`` compares everything but ``mode`` and timings."""

    scenario: str
    seed: int
    mode: str
    steps: list[StepTrace]
    faults: dict[str, Any] | None  # the fault plan's settings and scripted faults
    agents: int | None = None  # n_agents given to the factory, if any
    max_attempts: int | None = None  # the agents' RetryPolicy.max_attempts, if they agree
    version: int = TRACE_VERSION

    __hash__ = None  # type: ignore[assignment]

    def _settings_key(self) -> tuple[Any, ...]:
        return (self.scenario, self.seed, self.agents, self.max_attempts, self.faults)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RunTrace):
            return NotImplemented
        # Step by step, so packed steps of long runs are unpacked two at a time.
        return (
            self._settings_key() == other._settings_key()
            and len(self.steps) == len(other.steps)
            and all(a._same_as(b) for a, b in zip(self.steps, other.steps, strict=True))
        )

    def diff(self, other: RunTrace) -> str | None:
        """The first difference from ``other`` in plain words (step, agent, what), or None."""
        return _first_difference(self, other)

    @property
    def seconds(self) -> float:
        """Wall time of all steps."""
        return sum(s.seconds for s in self.steps)

    @property
    def usage(self) -> TokenUsage:
        """Prompt and completion tokens of the run's LLM replies, summed over its steps."""
        return TokenUsage.total(TokenUsage.from_dict(s.usage) for s in self.steps)

    @property
    def limited(self) -> int:
        """Calls the fake refused under its ``ProviderLimits`` (load-driven 429s) in the run."""
        return sum(sum(s.limited.values()) for s in self.steps)

    def first_difference_step(self, other: RunTrace) -> int | None:
        """The index in ``steps`` of the first step that differs from ``other``'s (or None).

        Also None when the runs differ in their settings; ``len(steps)`` of the shorter
        run when one only has more steps.
        """
        if self._settings_key() != other._settings_key():
            return None
        for index, (a, b) in enumerate(zip(self.steps, other.steps, strict=False)):
            if not a._same_as(b):
                return index
        shorter = min(len(self.steps), len(other.steps))
        return None if len(self.steps) == len(other.steps) else shorter

    def injected(self) -> list[InjectedFault]:
        """Every fault injected in the run, in step order."""
        return [InjectedFault.from_dict(f) for s in self.steps for f in s.faults]

    def fault_plan(self) -> FaultPlan | None:
        """A fresh ``FaultPlan`` with this run's settings (rerunning with it reproduces the run)."""
        return None if self.faults is None else plan_from_settings(self.faults)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "version": self.version,
            "scenario": self.scenario,
            "seed": self.seed,
            "mode": self.mode,
            "agents": self.agents,
            "max_attempts": self.max_attempts,
            "faults": self.faults,
            "steps": [s.to_dict() for s in self.steps],
        }

    def to_json(self, *, indent: int | None = None) -> str:
        """The trace as JSON text."""
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> RunTrace:
        """Rebuild a trace from :meth:`to_json` output; ValueError if the text is not one."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"mesa_llm_testing: cannot read a run trace: {exc}") from None
        if not isinstance(data, dict) or "steps" not in data or "scenario" not in data:
            raise ValueError(
                "mesa_llm_testing: not a run trace (expected RunTrace.to_json() output with "
                "'scenario' and 'steps')"
            )
        if data.get("version", TRACE_VERSION) != TRACE_VERSION:
            raise ValueError(
                f"mesa_llm_testing: run trace version {data.get('version')!r} is not supported; "
                f"this mesa_llm_testing reads version {TRACE_VERSION}"
            )
        return cls(
            scenario=data["scenario"],
            seed=data["seed"],
            mode=data["mode"],
            steps=[StepTrace.from_dict(s) for s in data["steps"]],
            faults=data.get("faults"),
            agents=data.get("agents"),
            max_attempts=data.get("max_attempts"),
        )


# --------------------------------------------------------------------------- explaining differences


def _labels(a: RunTrace, b: RunTrace) -> tuple[str, str]:
    if a.mode != b.mode:
        return f"the {a.mode} run", f"the {b.mode} run"
    return "the first run", "the second run"


def _first_difference(a: RunTrace, b: RunTrace) -> str | None:
    la, lb = _labels(a, b)
    settings = (
        ("scenario", a.scenario, b.scenario),
        ("seed", a.seed, b.seed),
        ("number of agents asked for (n_agents)", a.agents, b.agents),
        ("RetryPolicy.max_attempts", a.max_attempts, b.max_attempts),
        ("fault plan", a.faults, b.faults),
    )
    for what, va, vb in settings:
        if va != vb:
            return f"the runs differ in {what}: {va!r} in {la}, {vb!r} in {lb}"
    for sa, sb in zip(a.steps, b.steps, strict=False):
        found = _step_difference(sa, sb, la, lb)
        if found is not None:
            return found
    if len(a.steps) != len(b.steps):
        return f"{la} has {len(a.steps)} steps, {lb} has {len(b.steps)}"
    if a != b:  # every compared field is covered above; keep the promise regardless
        return "the traces differ, but no single difference could be named"
    return None


def _step_difference(sa: StepTrace, sb: StepTrace, la: str, lb: str) -> str | None:
    where = f"step {sa.step}"
    if sa.step != sb.step:
        return f"step numbers differ: step {sa.step} in {la}, step {sb.step} in {lb}"
    if sa.population != sb.population:
        return _sequence_difference(
            f"{where}: the model held different agents before the step",
            sa.population,
            sb.population,
            la,
            lb,
        )
    if sa.start_order != sb.start_order:
        return _sequence_difference(
            f"{where}: agents were started in a different order",
            sa.start_order,
            sb.start_order,
            la,
            lb,
        )
    for index, ((ma, oa), (mb, ob)) in enumerate(zip(sa.phases, sb.phases, strict=False)):
        if ma != mb:
            return f"{where}: phase {index + 1} ran {ma!r} in {la} but {mb!r} in {lb}"
        if oa != ob:
            return _sequence_difference(
                f"{where}, phase {ma!r}: agents were started in a different order", oa, ob, la, lb
            )
    if len(sa.phases) != len(sb.phases):
        return (
            f"{where}: {la} ran {len(sa.phases)} phases ({_methods(sa)}), "
            f"{lb} ran {len(sb.phases)} ({_methods(sb)})"
        )
    uids = list(dict.fromkeys([*sa.start_order, *sa.llm_calls, *sb.llm_calls, *sb.outcomes]))
    for uid in uids:
        who = f"{where}, agent {uid}" if uid is not None else f"{where}, calls outside any agent"
        found = _agent_difference(who, sa, sb, uid, la, lb)
        if found is not None:
            return found
    if sa.faults != sb.faults:
        only_a = [f for f in sa.faults if f not in sb.faults]
        only_b = [f for f in sb.faults if f not in sa.faults]
        if only_a:
            return f"{where}: {_fault(only_a[0])} was injected in {la} only"
        if only_b:
            return f"{where}: {_fault(only_b[0])} was injected in {lb} only"
        return f"{where}: the same faults were recorded in a different order"
    if sa.retries != sb.retries:
        return f"{where}: {sa.retries} retries in {la}, {sb.retries} in {lb}"
    if sa.recovered != sb.recovered:
        return f"{where}: {sa.recovered} faults recovered in {la}, {sb.recovered} in {lb}"
    if sa.rng_digest != sb.rng_digest:
        return (
            f"{where}: the model's random number generator is in a different state after the "
            f"step in {la} than in {lb} (random numbers were drawn in another order or number)"
        )
    if sa.state_digest != sb.state_digest:
        return (
            f"{where}: the model's state differs after the step (state digest "
            f"{sa.state_digest[:12]} in {la}, {sb.state_digest[:12]} in {lb})"
        )
    return None


def _agent_difference(
    who: str, sa: StepTrace, sb: StepTrace, uid: Any, la: str, lb: str
) -> str | None:
    ca, cb = sa.llm_calls.get(uid, []), sb.llm_calls.get(uid, [])
    for x, y in zip(ca, cb, strict=False):
        call = f"{who}, LLM call {x.call}"
        if x.call != y.call:
            return f"{who}: LLM call {x.call} in {la} is call {y.call} in {lb}"
        if x.prompt != y.prompt:
            return f"{call}: the request differs (the agent saw other state, memory or prompt)"
        if x.fault != y.fault:
            return f"{call}: {x.fault or 'no'} fault in {la}, {y.fault or 'no'} fault in {lb}"
        if x.response != y.response:
            return f"{call}: the reply differs ({_reply(x)} in {la}, {_reply(y)} in {lb})"
        if x.expects != y.expects:
            return f"{call}: asked for {x.expects} in {la}, {y.expects} in {lb}"
    if len(ca) != len(cb):
        return f"{who}: {len(ca)} LLM calls in {la}, {len(cb)} in {lb}"
    oa, ob = sa.outcomes.get(uid), sb.outcomes.get(uid)
    if oa != ob:
        return f"{who}: {_outcome(oa)} in {la}, {_outcome(ob)} in {lb}"
    return None


def _sequence_difference(what: str, a: list[Any], b: list[Any], la: str, lb: str) -> str:
    for index, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return (
                f"{what}: position {index + 1} is agent {x} in {la} but agent {y} in {lb} "
                f"({la}: {_short(a)}; {lb}: {_short(b)})"
            )
    return (
        f"{what}: {len(a)} agents in {la}, {len(b)} in {lb} ({la}: {_short(a)}; {lb}: {_short(b)})"
    )


def _short(items: list[Any], limit: int = 12) -> str:
    shown = ", ".join(map(str, items[:limit]))
    return f"[{shown}{', ...' if len(items) > limit else ''}]"


def _methods(step: StepTrace) -> str:
    return ", ".join(method for method, _ in step.phases) or "none"


def _outcome(outcome: tuple[str, str | None] | None) -> str:
    """An agent's outcome in words: "succeeded", "failed with RateLimitError", ..."""
    if outcome is None:
        return "was never stepped"
    status, exc = outcome
    if status == "ok":
        return "succeeded"
    verb = {"error": "failed", "timeout": "timed out", "cancelled": "was cancelled"}.get(
        status, status
    )
    return f"{verb} with {exc}" if exc else verb


def _reply(call: CallTrace) -> str:
    if call.response.startswith("error:"):
        return "raised " + call.response.removeprefix("error:")
    return f"reply {call.response}"


def _fault(record: Mapping[str, Any]) -> str:
    return f"a {record['kind']} fault on agent {record['agent']}'s LLM call {record['call']}"
