"""Property tests: the checks over generated scenarios, and a state machine over parallel stepping.

Bounded by the "ci" Hypothesis profile (tests/conftest.py); heavier tests lower
``max_examples`` further. A failing case shrinks to a minimal fault plan and notes
the ``mesa-llm-testing run ...`` command that replays it.
"""

from __future__ import annotations

import logging
import shlex
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mesa
import pytest
from hypothesis import HealthCheck, find, given, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from mesa.agent import AgentSet

import mesa_llm_testing.scenarios as scenarios
from mesa_llm.parallel_stepping import (
    current_agent,
    disable_automatic_parallel_stepping,
    enable_automatic_parallel_stepping,
)
from mesa_llm_testing import FaultKind, FaultPlan, RunTrace, ScenarioRun
from mesa_llm_testing import strategies as mst
from mesa_llm_testing.checks import check_isolation, check_ordering, check_reproducible
from mesa_llm_testing.cli import main

MESA_SHUFFLE_DO = AgentSet.__dict__["shuffle_do"]
SEED = 1234
SMALL_CASES = mst.scenarios(max_agents=5, max_steps=2, max_rate=0.5)


@pytest.fixture(autouse=True)
def _quiet_agent_failures() -> Iterator[None]:
    """Injected faults make agents fail on purpose: keep hundreds of log records out of reports."""
    logging.disable(logging.ERROR)
    yield
    logging.disable(logging.NOTSET)


def replay_note(case: mst.ScenarioCase, mode: str) -> None:
    """On failure Hypothesis prints this for the shrunk case: the command that replays it."""
    note(f"replay with: {case.command(mode)}")


# ----------------------------------------------------------------------- checks on example models


@settings(max_examples=20)
@given(case=SMALL_CASES, mode=mst.stepping_modes())
def test_faults_stay_with_the_agents_they_hit(case: mst.ScenarioCase, mode: str) -> None:
    replay_note(case, mode)
    check_isolation(case.run(mode))


@settings(max_examples=12)
@given(case=SMALL_CASES, mode=mst.stepping_modes(parallel_only=True))
def test_parallel_runs_match_the_sequential_run(case: mst.ScenarioCase, mode: str) -> None:
    replay_note(case, "all")
    sequential = case.run("sequential")
    parallel = case.run(mode)
    check_ordering(parallel, sequential)
    check_reproducible(sequential, parallel)


@settings(max_examples=8)
@given(case=SMALL_CASES, mode=mst.stepping_modes(parallel_only=True))
def test_a_recorded_trace_replays_identically(case: mst.ScenarioCase, mode: str) -> None:
    replay_note(case, mode)
    first = case.run(mode)
    plan = RunTrace.from_json(first.to_json()).fault_plan()
    again = (
        case.run(mode)
        if plan is None
        else mst.ScenarioCase(case.name, case.agents, case.steps, case.seed, plan).run(mode)
    )
    check_reproducible(first, again)


@settings(max_examples=4, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=mst.scenarios(max_agents=4, max_steps=2, max_rate=0.3, scripted=1))
def test_the_printed_command_replays_the_case(case: mst.ScenarioCase, tmp_path: Path) -> None:
    trace_path = tmp_path / "trace.json"
    argv = shlex.split(case.command("threading"))[1:]
    assert main([*argv, "--trace", str(trace_path), "-q"]) == 0
    check_reproducible(RunTrace.from_json(trace_path.read_text()), case.run("threading"))


def test_a_failure_shrinks_to_a_minimal_fault_plan() -> None:
    def some_agent_fails(case: mst.ScenarioCase) -> bool:
        return any(step.failed for step in case.run("sequential").steps)

    # Scripted faults only: a rate-based plan shrinks too (to one kind and the lowest
    # failing rate) but takes a few hundred runs.
    minimal = find(
        mst.scenarios(names=["negotiation"], max_agents=4, max_steps=2, max_rate=0, scripted=2),
        some_agent_fails,
        settings=settings(max_examples=40, database=None, derandomize=True, deadline=None),
    )
    assert (minimal.agents, minimal.steps, minimal.seed) == (2, 1, 0), minimal
    # The smallest plan that makes an agent fail: one fault that retries cannot absorb.
    (fault,) = minimal.faults.scripted
    assert fault.kind in (FaultKind.MALFORMED_JSON, FaultKind.EMPTY_RESPONSE), minimal
    assert (fault.step, fault.call) == (1, 0), minimal
    assert '"scripted":[{"agent":' in minimal.command()


# --------------------------------------------------------------------------- the state machine


class _SteppingModel(mesa.Model):
    """A plain Mesa model whose agents log each step (thread-safe)."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed=seed)
        self.parallel_stepping = False
        self.log: list[int] = []
        self.lock = threading.Lock()
        self.last_step_report: Any = None

    def step(self) -> None:
        self.agents.shuffle_do("step")


class _Recorder(mesa.Agent):
    """Logs its unique_id once per step and notes who ``current_agent()`` says is running."""

    fails = False

    def __init__(self, model: _SteppingModel) -> None:
        super().__init__(model)
        self.stepped = 0
        self.seen_as: list[Any] = []

    def _record(self) -> None:
        with self.model.lock:
            self.model.log.append(self.unique_id)
        self.stepped += 1
        self.seen_as.append(current_agent())
        if self.fails:
            raise RuntimeError(f"agent {self.unique_id} fails on purpose")

    def step(self) -> None:
        self._record()


class _AsyncRecorder(_Recorder):
    async def astep(self) -> None:
        self._record()


class _FailingRecorder(_Recorder):
    fails = True


AGENT_KINDS = {"sync": _Recorder, "async": _AsyncRecorder, "failing": _FailingRecorder}


class ParallelSteppingMachine(RuleBasedStateMachine):
    """Random enable/disable/mode switches, steps, agents added and removed, on a real model.

    A sequential twin (same seed, same agents, plain Mesa stepping) is stepped alongside.
    """

    @initialize(mode=st.none() | mst.stepping_modes(parallel_only=True), flag=st.booleans())
    def start(self, mode: str | None, flag: bool) -> None:
        disable_automatic_parallel_stepping()
        self.model = _SteppingModel(SEED)
        self.twin = _SteppingModel(SEED)
        self.model.parallel_stepping = flag
        self.mode: str | None = None  # automatic stepping enabled in this mode, or off
        if mode is not None:
            self.enable(mode)

    def teardown(self) -> None:
        disable_automatic_parallel_stepping()

    @property
    def parallel(self) -> bool:
        return self.mode is not None and self.model.parallel_stepping

    def live(self) -> dict[int, _Recorder]:
        return {a.unique_id: a for a in self.model.agents}

    @rule(kind=st.sampled_from(sorted(AGENT_KINDS)), count=st.integers(1, 3))
    def add_agents(self, kind: str, count: int) -> None:
        for _ in range(count):
            agent = AGENT_KINDS[kind](self.model)
            twin = _Recorder(self.twin)  # the twin never fails: it only records the order
            assert agent.unique_id == twin.unique_id

    @precondition(lambda self: len(self.model.agents) > 0)
    @rule(data=st.data())
    def remove_agent(self, data: st.DataObject) -> None:
        uid = data.draw(st.sampled_from(sorted(self.live())), label="remove")
        self.live()[uid].remove()
        next(a for a in self.twin.agents if a.unique_id == uid).remove()

    @rule(mode=mst.stepping_modes(parallel_only=True))
    def enable(self, mode: str) -> None:
        enable_automatic_parallel_stepping(mode)  # type: ignore[arg-type]
        self.mode = mode

    @rule()
    def disable(self) -> None:
        disable_automatic_parallel_stepping()
        self.mode = None
        assert AgentSet.__dict__["shuffle_do"] is MESA_SHUFFLE_DO
        assert "do_async" not in AgentSet.__dict__

    @rule(on=st.booleans())
    def set_parallel_flag(self, on: bool) -> None:
        self.model.parallel_stepping = on

    # Plain Mesa lets an agent's exception escape shuffle_do; only parallel steps isolate it.
    @precondition(lambda self: self.parallel or not any(a.fails for a in self.model.agents))
    @rule()
    def step(self) -> None:
        live = self.live()
        before = {uid: a.stepped for uid, a in live.items()}
        self.model.log.clear()
        self.twin.log.clear()
        self.model.last_step_report = None
        parallel = self.parallel

        self.model.step()
        self.twin.step()

        # Every live agent stepped exactly once; the twin stepped the same agents.
        assert {uid: a.stepped - before[uid] for uid, a in live.items()} == dict.fromkeys(live, 1)
        assert sorted(self.model.log) == sorted(self.twin.log) == sorted(live)
        report = self.model.last_step_report
        if not parallel or not live:  # an empty agent set has nothing to report
            assert report is None
            assert self.model.log == self.twin.log  # Mesa's own order
            return
        # The report accounts for each agent once, in Mesa's shuffle order.
        assert report is not None and report.mode == self.mode and report.method == "step"
        assert [o.unique_id for o in report.outcomes] == self.twin.log
        failing = {uid for uid, a in live.items() if a.fails}
        assert {o.unique_id for o in report.failed} == failing
        assert all(isinstance(e, RuntimeError) for e in report.errors.values())
        # Each agent's step ran as itself (current_agent() is the agent).
        assert all(a.seen_as[-1] is a for a in live.values())

    @invariant()
    def rng_matches_sequential_twin(self) -> None:
        assert self.model.random.getstate() == self.twin.random.getstate()
        assert self.model.steps == self.twin.steps

    @invariant()
    def disabled_means_mesa_shuffle_do(self) -> None:
        if self.mode is None:
            assert AgentSet.__dict__["shuffle_do"] is MESA_SHUFFLE_DO
        else:
            assert getattr(AgentSet.__dict__["shuffle_do"], "__mesa_llm_patched__", False)


TestParallelSteppingMachine = ParallelSteppingMachine.TestCase
TestParallelSteppingMachine.settings = settings(
    max_examples=50, stateful_step_count=30, deadline=None, derandomize=True
)


class ScenarioModeSwitchMachine(RuleBasedStateMachine):
    """A built-in scenario under faults, its stepping mode switched between steps, agents added
    and removed; checked after each step, and at the end against a sequential replay."""

    @initialize(
        name=st.sampled_from(sorted(scenarios.REGISTRY)),
        seed=st.integers(0, 1000),
        rate=st.sampled_from([0.0, 0.25]),
    )
    def start(self, name: str, seed: int, rate: float) -> None:
        self.name, self.seed, self.rate = name, seed, rate
        self.ops: list[tuple[str, Any]] = []
        self.run = ScenarioRun(name, seed=seed, agents=3, faults=FaultPlan(rate, seed=seed))
        self.run.__enter__()

    def removable(self) -> list[Any]:
        judge = getattr(self.run.model, "judge", None)  # island_commons cannot lose its judge
        return sorted((a for a in self.run.model.agents if a is not judge), key=_uid)

    @rule(mode=mst.stepping_modes())
    def step(self, mode: str) -> None:
        population = {a.unique_id for a in self.run.model.agents}
        step = self.run.step(mode)
        self.ops.append(("step", mode))
        assert set(step.population) == population
        check_isolation(self.run.trace)  # every agent accounted for; failures match faults

    @precondition(lambda self: len(self.run.model.agents) < 6)
    @rule()
    def add_agent(self) -> None:
        self.run.model.add_agent()
        self.ops.append(("add", None))

    @precondition(lambda self: len(self.removable()) > 1)
    @rule(data=st.data())
    def remove_agent(self, data: st.DataObject) -> None:
        agent = data.draw(st.sampled_from(self.removable()), label="remove")
        self.run.model.remove_agent(agent)
        self.ops.append(("remove", agent.unique_id))

    def teardown(self) -> None:
        self.run.__exit__(None, None, None)
        if not self.run.trace.steps:
            return
        note(f"operations: {self.ops}")
        plan = FaultPlan(self.rate, seed=self.seed)
        with ScenarioRun(self.name, seed=self.seed, agents=3, faults=plan) as twin:
            for op, arg in self.ops:
                if op == "step":
                    twin.step("sequential")
                elif op == "add":
                    twin.model.add_agent()
                else:
                    twin.model.remove_agent(next(a for a in twin.model.agents if _uid(a) == arg))
        check_ordering(self.run.trace, twin.trace)
        check_reproducible(twin.trace, self.run.trace)


def _uid(agent: Any) -> Any:
    return agent.unique_id


TestScenarioModeSwitchMachine = ScenarioModeSwitchMachine.TestCase
TestScenarioModeSwitchMachine.settings = settings(
    max_examples=10, stateful_step_count=8, deadline=None, derandomize=True
)
