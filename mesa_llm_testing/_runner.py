"""Run a Mesa model under the fake LLM in one stepping mode and record each step as a ``RunTrace``.

A trace holds, per step, what a reproducibility or isolation check needs and
nothing that legitimately varies between runs: the agents' start order, each
agent's outcome, the faults injected, digests of every LLM request and reply,
and digests of the model's RNG state and state. Wall times are kept for
reports but never compared.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import importlib.util
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from mesa_llm.parallel_stepping import (
    AgentOutcome,
    StepReport,
    _agent_set_types,  # the one list of Mesa set types that define shuffle_do
    parallel_stepping,
)
from mesa_llm_testing._fake import ERROR_KINDS, FakeCall, FakeLLM
from mesa_llm_testing._faults import FaultKind, FaultPlan, InjectedFault
from mesa_llm_testing._process_state import ProcessState

if TYPE_CHECKING:
    from mesa import Model

__all__ = [
    "MODES",
    "CallTrace",
    "RunTrace",
    "ScenarioRun",
    "StepTrace",
    "resolve_scenario",
    "run_scenario",
]

logger = logging.getLogger(__name__)

#: The stepping modes a scenario can run in.
MODES: Final = ("sequential", "asyncio", "threading")
TRACE_VERSION: Final = 1


# --------------------------------------------------------------------------- the trace


class CallTrace(NamedTuple):
    """One LLM call of an agent in a step, as digests."""

    call: int  # the call's index among the agent's calls in the step (retries count)
    prompt: str  # digest of the request: model, messages, tools, tool choice, response format
    response: str  # digest of the reply, or "error:<exception type>"
    expects: str  # what the request asked for: "text", "tools" or "json"
    fault: str | None  # the FaultKind value injected into this call, if any


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

    @property
    def failed(self) -> dict[Any, str | None]:
        """The agents that failed in this step: uid -> exception type name."""
        return {uid: exc for uid, (status, exc) in self.outcomes.items() if status != "ok"}

    def _key(self) -> tuple[Any, ...]:
        return (
            self.step,
            self.start_order,
            self.outcomes,
            self.faults,
            self.llm_calls,
            self.rng_digest,
            self.state_digest,
            self.recovered,
            self.retries,
            self.phases,
            self.population,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (mappings as lists of pairs, so unique_ids keep their type)."""
        return {
            "step": self.step,
            "start_order": list(self.start_order),
            "phases": [[method, list(order)] for method, order in self.phases],
            "population": list(self.population),
            "outcomes": [[uid, status, exc] for uid, (status, exc) in self.outcomes.items()],
            "faults": list(self.faults),
            "llm_calls": [[uid, [list(c) for c in calls]] for uid, calls in self.llm_calls.items()],
            "rng_digest": self.rng_digest,
            "state_digest": self.state_digest,
            "recovered": self.recovered,
            "retries": self.retries,
            "seconds": self.seconds,
            "mode": self.mode,
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

    def _key(self) -> tuple[Any, ...]:
        return (
            self.scenario,
            self.seed,
            self.agents,
            self.max_attempts,
            self.faults,
            [s._key() for s in self.steps],
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RunTrace):
            return NotImplemented
        return self._key() == other._key()

    def diff(self, other: RunTrace) -> str | None:
        """The first difference from ``other`` in plain words (step, agent, what), or None."""
        return _first_difference(self, other)

    @property
    def seconds(self) -> float:
        """Wall time of all steps."""
        return sum(s.seconds for s in self.steps)

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


# --------------------------------------------------------------------------- fault plan settings


def plan_settings(plan: FaultPlan) -> dict[str, Any] | None:
    """The settings that make ``plan`` inject the same faults again; None if it never faults."""
    scripted = sorted(plan.scripted, key=InjectedFault.sort_key)
    if plan.rate == 0.0 and not scripted:
        return None
    return {
        "rate": plan.rate,
        "kinds": [k.value for k in plan.kinds],
        "seed": plan.seed,
        "test_id": plan.test_id,
        "scripted": [f.to_dict() for f in scripted],
    }


def plan_from_settings(settings: Mapping[str, Any]) -> FaultPlan:
    """A fresh plan from :func:`plan_settings` output."""
    plan = FaultPlan(
        settings.get("rate", 0.0),
        kinds=settings.get("kinds"),
        seed=settings.get("seed", 0),
        test_id=settings.get("test_id", ""),
    )
    for record in settings.get("scripted", ()):
        fault = InjectedFault.from_dict(record)
        plan.at(agent=fault.agent, step=fault.step, call=fault.call, kind=fault.kind)
    return plan


# --------------------------------------------------------------------------- running


def run_scenario(
    model_factory: Callable[..., Model] | str,
    *,
    steps: int,
    mode: str,
    faults: FaultPlan | None = None,
    seed: int,
    agents: int | None = None,
    llm: FakeLLM | None = None,
) -> RunTrace:
    """Build a model with ``model_factory(seed=seed)`` and step it ``steps`` times in ``mode``.

    ``model_factory`` is a callable (a Mesa model class works) or a name
    understood by :func:`resolve_scenario`; ``agents`` is passed as ``n_agents``.
    ``mode`` is ``"sequential"``, ``"asyncio"`` or ``"threading"``: the model is
    stepped with ``model.parallel_stepping`` True inside
    ``mesa_llm.parallel_stepping.parallel_stepping(mode)``, so every
    ``agents.shuffle_do(name)`` isolates and reports each agent's failure in every
    mode (sequential runs the agents one at a time in Mesa's shuffle order), and the
    three modes give equal traces for any model. A fake LLM answers every
    litellm call during the run: ``llm``, or a fresh ``FakeLLM(seed=seed, faults=faults)``.
    The fault plan's counters and records are reset first, so a plan can be reused
    across runs; afterwards ``plan.injected`` holds this run's faults. Retries never
    really wait. An exception from ``model.step()`` propagates, noted with the step.

    One run at a time per process: the fake and the stepping mode are process-wide.
    :class:`ScenarioRun` does the same one step at a time.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"mesa_llm_testing: steps must be an integer >= 0, got {steps!r}")
    with ScenarioRun(
        model_factory, seed=seed, mode=mode, faults=faults, agents=agents, llm=llm
    ) as run:
        for _ in range(steps):
            run.step()
    return run.trace


class ScenarioRun:
    """A scenario run one step at a time: :func:`run_scenario` in pieces.

    Entering the ``with`` block activates the fake LLM (resetting its fault plan)
    and builds :attr:`model`; each :meth:`step` steps the model once, in the run's
    ``mode`` or the one given, and returns that step's :class:`StepTrace`;
    :attr:`trace` holds every step so far. Between steps the model may be changed
    (agents added or removed, settings switched). Leaving the block restores the
    stepping mode and deactivates the fake.
    """

    def __init__(
        self,
        model_factory: Callable[..., Model] | str,
        *,
        seed: int,
        mode: str = "sequential",
        faults: FaultPlan | None = None,
        agents: int | None = None,
        llm: FakeLLM | None = None,
    ) -> None:
        self.factory = (
            resolve_scenario(model_factory) if isinstance(model_factory, str) else model_factory
        )
        self.mode = _checked_mode(mode)
        if llm is not None and faults is not None and llm.faults is not faults:
            raise ValueError(
                "mesa_llm_testing: got both llm= and faults=; pass the plan as "
                "FakeLLM(faults=...) or as faults=..., not both"
            )
        self.seed = seed
        self.agents = agents
        self.fake = llm if llm is not None else FakeLLM(seed=seed, faults=faults)
        self._model: Model | None = None
        self._trace: RunTrace | None = None
        self._stack: contextlib.ExitStack | None = None
        self._mode_stack: contextlib.ExitStack | None = None
        self._active_mode: str | None = None
        self._recorder = _Recorder()

    @property
    def model(self) -> Model:
        """The model being run (built on entering the ``with`` block)."""
        if self._model is None:
            raise RuntimeError(_OUTSIDE)
        return self._model

    @property
    def trace(self) -> RunTrace:
        """The trace of the steps run so far (mode ``"mixed"`` once steps ran in several modes)."""
        if self._trace is None:
            raise RuntimeError(_OUTSIDE)
        return self._trace

    def __enter__(self) -> ScenarioRun:
        if self._stack is not None:
            raise RuntimeError("mesa_llm_testing: this ScenarioRun is already running")
        plan = self.fake.faults
        with contextlib.ExitStack() as stack:
            # A model that switches automatic stepping on while it is built (mesa-llm 0.3
            # style: ``parallel_stepping = True`` and LLMAgents) must not outlive the run.
            stack.callback(ProcessState.capture().restore)
            plan.reset()
            stack.enter_context(self.fake.activate())
            stack.callback(self._leave_mode)
            kwargs: dict[str, Any] = {"seed": self.seed}
            if self.agents is not None:
                kwargs["n_agents"] = self.agents
            model = self.factory(**kwargs)
            model.parallel_stepping = False  # type: ignore[attr-defined]
            name = getattr(model, "scenario_name", "") or getattr(self.factory, "__name__", "")
            self._model = model
            self._trace = RunTrace(
                scenario=str(name or self.factory),
                seed=self.seed,
                mode=self.mode,
                steps=[],
                faults=plan_settings(plan),
                agents=self.agents,
                max_attempts=_max_attempts(model),
            )
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc_info: object) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()

    def step(self, mode: str | None = None) -> StepTrace:
        """Step the model once in ``mode`` (default: the run's) and record the step."""
        if self._stack is None or self._model is None or self._trace is None:
            raise RuntimeError(_OUTSIDE)
        mode = self.mode if mode is None else _checked_mode(mode)
        self._enter_mode(mode)
        try:
            step = _run_step(self._model, self.fake, self._recorder, mode)
        except Exception as exc:
            exc.add_note(
                f"mesa_llm_testing: raised by scenario {self._trace.scenario!r} at step "
                f"{self._model.steps} in {mode} mode (seed {self.seed})"
            )
            raise
        self._trace.steps.append(step)
        if mode != self._trace.mode:
            self._trace.mode = "mixed"
        return step

    def _enter_mode(self, mode: str) -> None:
        """Switch stepping modes; the recorder always wraps the mode's ``shuffle_do``."""
        if mode == self._active_mode:
            return
        self._leave_mode()
        with contextlib.ExitStack() as stack:
            stack.enter_context(parallel_stepping(mode))  # type: ignore[arg-type]
            stack.enter_context(_recording_shuffle_do(self._recorder))
            self._mode_stack = stack.pop_all()
        self._active_mode = mode
        self.model.parallel_stepping = True  # type: ignore[attr-defined]

    def _leave_mode(self) -> None:
        stack, self._mode_stack, self._active_mode = self._mode_stack, None, None
        if stack is not None:
            stack.close()


_OUTSIDE = (
    "mesa_llm_testing: use ScenarioRun inside 'with ScenarioRun(...) as run:'; "
    "the model is built and stepped there"
)


def _checked_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(
            f"mesa_llm_testing: invalid mode={mode!r}; valid modes are "
            + ", ".join(repr(m) for m in MODES)
        )
    return mode


def _run_step(model: Model, fake: FakeLLM, recorder: _Recorder, mode: str) -> StepTrace:
    plan = fake.faults
    population = [a.unique_id for a in model.agents]
    calls_before = fake.calls.total
    faults_before = len(plan.injected)
    sleeps_before = len(fake.retry_sleeps)
    recorder.reports.clear()
    start = time.perf_counter()
    model.step()
    seconds = time.perf_counter() - start

    reports = getattr(model, "step_reports", None)
    if not isinstance(reports, Sequence):
        reports = recorder.reports
    start_order: list[Any] = []
    outcomes: dict[Any, tuple[str, str | None]] = {}
    phases: list[tuple[str, list[Any]]] = []
    for report in reports:
        phases.append((report.method, [o.unique_id for o in report.outcomes]))
        for o in report.outcomes:
            if o.unique_id not in outcomes:
                start_order.append(o.unique_id)
                outcomes[o.unique_id] = ("ok", None)
            if o.status != "ok" and outcomes[o.unique_id][0] == "ok":
                exc = type(o.exception).__name__ if o.exception is not None else None
                outcomes[o.unique_id] = (o.status, exc)

    step_faults = sorted(plan.injected[faults_before:], key=InjectedFault.sort_key)
    llm_calls = _calls_by_agent(_calls_since(fake, calls_before, model.steps), start_order)
    # A fault on the last call of an agent that failed is what ended its step.
    ended = sum(
        1
        for uid, (status, _) in outcomes.items()
        if status != "ok" and llm_calls.get(uid) and llm_calls[uid][-1].fault is not None
    )
    return StepTrace(
        step=model.steps,
        start_order=start_order,
        outcomes=outcomes,
        faults=[f.to_dict() for f in step_faults],
        llm_calls=llm_calls,
        rng_digest=rng_digest(model),
        state_digest=state_digest(model),
        recovered=len(step_faults) - ended,
        retries=len(fake.retry_sleeps) - sleeps_before,
        phases=phases,
        population=population,
        seconds=seconds,
        mode=mode,
    )


def _calls_since(fake: FakeLLM, total_before: int, step: int) -> list[FakeCall]:
    """The records of the calls made since the fake had counted ``total_before`` calls."""
    made = fake.calls.total - total_before
    kept = list(fake.calls)
    if made > len(kept):
        raise RuntimeError(
            f"mesa_llm_testing: step {step} made {made} LLM calls but the fake keeps only the "
            f"last {len(kept)}; pass llm=FakeLLM(keep_calls=None) (or a larger keep_calls)"
        )
    return kept[len(kept) - made :] if made else []


def _max_attempts(model: Model) -> int | None:
    found = {
        retry.max_attempts
        for agent in model.agents
        if (retry := getattr(getattr(agent, "llm", None), "retry", None)) is not None
    }
    return found.pop() if len(found) == 1 else None


# --------------------------------------------------------------------------- digests


def digest(text: str, *, size: int = 8) -> str:
    """A short stable digest (blake2b, hex) of ``text``."""
    return hashlib.blake2b(text.encode(), digest_size=size).hexdigest()


def _jsonable(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump()
    if isinstance(value, set | frozenset):
        return sorted(map(repr, value))
    return repr(value) if not isinstance(value, str) else value


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=_jsonable)


def _calls_by_agent(calls: list[FakeCall], start_order: list[Any]) -> dict[Any, list[CallTrace]]:
    grouped: dict[Any, list[FakeCall]] = {}
    for c in calls:
        grouped.setdefault(c.agent, []).append(c)
    order = [uid for uid in start_order if uid in grouped]
    order += sorted((uid for uid in grouped if uid not in set(start_order)), key=repr)
    return {
        uid: [_call_trace(c) for c in sorted(grouped[uid], key=lambda c: c.call)] for uid in order
    }


def _call_trace(c: FakeCall) -> CallTrace:
    request = c.request
    prompt = _dumps(
        {
            "model": request.model,
            "messages": request.messages,
            "tools": request.tools,
            "tool_choice": request.tool_choice,
            "response_format": request.response_format,
        }
    )
    if c.fault in ERROR_KINDS:
        # What the caller raised depends on the layer (the provider raises, the HTTP server
        # answers a status); the agent's outcome keeps the exception the agent saw.
        response = f"error:{c.fault.value}"
    elif c.exception is not None:
        response = f"error:{type(c.exception).__name__}"
    elif c.response is not None:
        reply = c.response
        response = digest(
            _dumps(
                [
                    reply.content,
                    [[tc.name, tc.arguments, tc.id] for tc in reply.tool_calls],
                    reply.finish,
                ]
            )
        )
    else:
        response = "none"
    shape = request.shape
    if shape.tools and shape.tool_mode != "none":
        expects = "tools"
    elif shape.output != "text":
        expects = "json"
    else:
        expects = "text"
    fault = c.fault.value if isinstance(c.fault, FaultKind) else None
    return CallTrace(c.call, digest(prompt), response, expects, fault)


def rng_digest(model: Model) -> str:
    """Digest of the model's random state: ``model.random`` and, if present, ``model.rng``."""
    parts = [repr(model.random.getstate())]
    state = getattr(getattr(getattr(model, "rng", None), "bit_generator", None), "state", None)
    if state is not None:
        parts.append(_dumps(state))
    return digest("\n".join(parts), size=16)


def state_digest(model: Model) -> str:
    """``model.state_digest()`` if the model has one, else a digest of agents' plain attributes.

    The fallback covers each agent's public attributes holding plain data
    (numbers, strings, lists, tuples and dicts of them), and its ``pos``.
    """
    own = getattr(model, "state_digest", None)
    if callable(own):
        return str(own())
    agents = []
    for agent in model.agents:
        attrs = {k: v for k, v in vars(agent).items() if not k.startswith("_") and _is_plain(v, 0)}
        attrs["pos"] = getattr(agent, "pos", None)
        agents.append([repr(agent.unique_id), type(agent).__name__, attrs])
    return digest(_dumps(agents), size=16)


def _is_plain(value: Any, depth: int) -> bool:
    if value is None or isinstance(value, bool | int | float | str):
        return True
    if depth > 4:
        return False
    if isinstance(value, list | tuple):
        return all(_is_plain(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v, depth + 1) for k, v in value.items())
    return False


# --------------------------------------------------------------------------- observing shuffle_do


class _Recorder:
    """The ``StepReport`` of every ``shuffle_do(name)`` call made during a step."""

    def __init__(self) -> None:
        self.reports: list[StepReport] = []


@contextlib.contextmanager
def _recording_shuffle_do(recorder: _Recorder) -> Iterator[_Recorder]:
    """Record a ``StepReport`` for every ``agents.shuffle_do("method")`` while the block runs.

    In parallel modes the report is the one mesa_llm's automatic stepping leaves on
    ``model.last_step_report``. Otherwise Mesa's own ``shuffle_do`` runs unchanged
    (same shuffle, same calls; an agent's exception propagates) and the agents it
    calls, in order, are recorded.
    """
    saved = {cls: cls.__dict__["shuffle_do"] for cls in _agent_set_types()}
    for cls, underlying in saved.items():
        cls.shuffle_do = _make_recording(underlying, recorder)  # type: ignore[attr-defined]
    try:
        yield recorder
    finally:
        for cls, underlying in saved.items():
            cls.shuffle_do = underlying  # type: ignore[attr-defined]


def _make_recording(underlying: Callable[..., Any], recorder: _Recorder) -> Callable[..., Any]:
    @functools.wraps(underlying)
    def shuffle_do(self: Any, method: Any, *args: Any, **kwargs: Any) -> Any:
        first = next(iter(self._agents), None) if isinstance(method, str) else None
        model = getattr(first, "model", None)
        if model is None:
            return underlying(self, method, *args, **kwargs)
        if getattr(model, "parallel_stepping", False) and getattr(
            underlying, "__mesa_llm_patched__", False
        ):
            before = getattr(model, "last_step_report", None)
            result = underlying(self, method, *args, **kwargs)
            report = getattr(model, "last_step_report", None)
            if report is not None and report is not before:
                recorder.reports.append(report)
            return result
        report = StepReport([], method, "sequential")
        recorder.reports.append(report)

        def call(agent: Any, *a: Any, **k: Any) -> Any:
            start = time.perf_counter()
            try:
                value = getattr(agent, method)(*a, **k)
            except BaseException as exc:
                elapsed = time.perf_counter() - start
                report.outcomes.append(
                    AgentOutcome(agent, agent.unique_id, "error", None, exc, elapsed)
                )
                raise
            elapsed = time.perf_counter() - start
            report.outcomes.append(AgentOutcome(agent, agent.unique_id, "ok", value, None, elapsed))
            return value

        return underlying(self, call, *args, **kwargs)

    return shuffle_do


# --------------------------------------------------------------------------- scenario names


def resolve_scenario(spec: str) -> Callable[..., Model]:
    """The model factory named by ``spec``: a scenario name, ``module:attr`` or ``path.py[:attr]``.

    Names are the ``mesa_llm_testing.scenarios`` entry points (the built-ins and any
    installed package's). A file without ``:attr`` must define exactly one Mesa
    ``Model`` subclass.
    """
    from mesa_llm_testing._discovery import load_scenario, registered_scenarios

    registry = registered_scenarios()
    if spec in registry:
        return load_scenario(spec)
    target, sep, attr = spec.rpartition(":")
    if not sep or not attr.replace(".", "_").isidentifier():
        target, attr = spec, ""
    if target.endswith(".py") or Path(target).is_file():
        module = _load_file(Path(target))
    elif attr:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise ValueError(
                f"mesa_llm_testing: cannot import {target!r} for scenario {spec!r}: {exc}"
            ) from None
    else:
        raise ValueError(
            f"mesa_llm_testing: unknown scenario {spec!r}; use a registered name "
            f"({', '.join(registry)}), 'module:factory' or 'path/to/file.py[:factory]'"
        )
    if attr:
        found: Any = module
        for part in attr.split("."):
            if not hasattr(found, part):
                raise ValueError(
                    f"mesa_llm_testing: {module.__name__!r} has no attribute {attr!r} "
                    f"(scenario {spec!r})"
                )
            found = getattr(found, part)
        if not callable(found):
            raise ValueError(f"mesa_llm_testing: scenario {spec!r} is not callable")
        return found  # type: ignore[no-any-return]
    return _single_model_class(module, spec)


def _load_file(path: Path) -> Any:
    if not path.is_file():
        raise ValueError(f"mesa_llm_testing: scenario file {str(path)!r} does not exist")
    name = "mesa_llm_scenario_" + digest(str(path.resolve()))
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"mesa_llm_testing: cannot load scenario file {str(path)!r}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _single_model_class(module: Any, spec: str) -> Callable[..., Model]:
    from mesa import Model

    classes = [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type) and issubclass(obj, Model) and obj.__module__ == module.__name__
    ]
    if len(classes) != 1:
        names = ", ".join(sorted(c.__name__ for c in classes)) or "none"
        raise ValueError(
            f"mesa_llm_testing: scenario file {spec!r} defines {len(classes)} Mesa Model "
            f"classes ({names}); name one as '{spec}:ClassName'"
        )
    return classes[0]


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
