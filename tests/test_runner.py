"""run_scenario and RunTrace: what a run records, how traces compare, explain and round-trip."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from pathlib import Path
from typing import Any

import pytest
from mesa import Agent, Model

from mesa_llm.llm_agent import LLMAgent
from mesa_llm.module_llm import RetryPolicy
from mesa_llm.reasoning import ReActReasoning
from mesa_llm.tools import ToolManager, tool
from mesa_llm_testing import (
    CallTrace,
    FakeLLM,
    FaultPlan,
    RunTrace,
    ScenarioRun,
    StepTrace,
    resolve_scenario,
    run_scenario,
)
from mesa_llm_testing._recording import state_digest
from mesa_llm_testing._runner import MODES
from mesa_llm_testing.scenarios import (
    REGISTRY,
    CivilViolenceModel,
    IslandCommonsModel,
    NegotiationModel,
)

SEED = 20240611


def run(factory=CivilViolenceModel, *, mode="sequential", steps=3, agents=8, **kwargs):
    return run_scenario(factory, steps=steps, mode=mode, seed=SEED, agents=agents, **kwargs)


@pytest.fixture(scope="module")
def faulty_trace() -> RunTrace:
    return run(IslandCommonsModel, faults=FaultPlan(0.4, seed=3))


# --------------------------------------------------------------------------- arguments


def test_invalid_mode_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="'sequential', 'asyncio', 'threading'"):
        run(mode="parallel")


@pytest.mark.parametrize("steps", [-1, 1.5, True])
def test_invalid_steps_is_a_value_error(steps: object) -> None:
    with pytest.raises(ValueError, match="steps must be an integer >= 0"):
        run(steps=steps)


def test_llm_and_faults_together_is_ambiguous() -> None:
    with pytest.raises(ValueError, match="not both"):
        run(llm=FakeLLM(seed=1), faults=FaultPlan(0.5))


def test_a_scenario_can_be_named() -> None:
    assert run("negotiation", steps=1) == run(NegotiationModel, steps=1)


# --------------------------------------------------------------------------- what is recorded


def test_each_step_records_order_outcomes_calls_and_digests() -> None:
    trace = run(CivilViolenceModel, steps=2, agents=8)

    assert (trace.scenario, trace.seed, trace.mode, trace.agents) == (
        "civil_violence",
        SEED,
        "sequential",
        8,
    )
    assert trace.max_attempts == RetryPolicy().max_attempts
    assert trace.faults is None
    assert [s.step for s in trace.steps] == [1, 2]
    for step in trace.steps:
        assert sorted(step.start_order) == sorted(step.population)
        assert step.phases == [("observe_and_plan", step.start_order)]
        assert step.outcomes == {uid: ("ok", None) for uid in step.population}
        for uid, calls in step.llm_calls.items():
            assert uid in step.population
            assert [c.call for c in calls] == list(range(len(calls)))
            assert all(c.expects == "tools" and c.fault is None for c in calls)
        assert len(step.rng_digest) == len(step.state_digest) == 32
        assert step.faults == [] and step.recovered == 0 and step.retries == 0
    assert trace.steps[0].rng_digest != trace.steps[1].rng_digest


def test_faults_are_recorded_with_the_calls_they_hit(faulty_trace: RunTrace) -> None:
    assert faulty_trace.faults is not None and faulty_trace.faults["rate"] == 0.4
    faults = [f for step in faulty_trace.steps for f in step.faults]
    assert faults
    for step in faulty_trace.steps:
        for fault in step.faults:
            assert fault["step"] == step.step
            calls = {c.call: c for c in step.llm_calls[fault["agent"]]}
            assert calls[fault["call"]].fault == fault["kind"]
    assert {f.kind.value for f in faulty_trace.injected()} == {f["kind"] for f in faults}


def test_failed_agents_carry_the_exception_type_name(faulty_trace: RunTrace) -> None:
    failed = {exc for step in faulty_trace.steps for exc in step.failed.values()}
    assert failed
    assert failed <= {
        "RateLimitError",
        "Timeout",
        "InternalServerError",
        "ServiceUnavailableError",
        "APIConnectionError",
        "EmptyResponseError",
        "MalformedResponseError",
        "ToolArgumentsError",
    }


def test_retries_are_recorded_not_slept() -> None:
    fake = FakeLLM(seed=SEED, faults=FaultPlan(0.5, kinds="rate_limit", seed=1))

    trace = run(llm=fake, steps=2)

    assert sum(step.retries for step in trace.steps) == len(fake.retry_sleeps) > 0
    assert sum(step.recovered for step in trace.steps) > 0


def test_a_reused_fault_plan_injects_the_same_faults_again() -> None:
    plan = FaultPlan(0.4, seed=9)

    first = run(faults=plan)
    injected = sorted(plan.injected, key=lambda f: f.sort_key())
    second = run(faults=plan)

    assert first == second
    assert sorted(plan.injected, key=lambda f: f.sort_key()) == injected


def test_the_trace_rebuilds_its_fault_plan(faulty_trace: RunTrace) -> None:
    plan = faulty_trace.fault_plan()
    assert plan is not None

    assert run(IslandCommonsModel, faults=plan) == faulty_trace


def test_scripted_faults_are_part_of_the_recorded_plan() -> None:
    plan = FaultPlan().at(agent=3, step=2, call=0, kind="timeout")

    trace = run(faults=plan)

    assert trace.faults is not None
    assert trace.faults["scripted"] == [
        {"agent": 3, "step": 2, "call": 0, "kind": "timeout", "layer": "provider", "test_id": ""}
    ]
    assert run(faults=trace.fault_plan()) == trace


def test_max_attempts_comes_from_the_agents_retry_policy() -> None:
    factory = functools.partial(NegotiationModel, retry=RetryPolicy(max_attempts=2))

    assert run(factory, steps=1).max_attempts == 2


# --------------------------------------------------------------------------- any Mesa model


@tool
def wave(agent: LLMAgent, times: int) -> str:
    """Wave at the neighbours.

    Args:
        times: how many times.
    """
    agent.waves += 1
    return "waved"


class Waver(LLMAgent):
    def __init__(self, model: Model) -> None:
        super().__init__(model, reasoning=ReActReasoning, llm_model="openai/gpt-4o-mini")
        self.tool_manager = ToolManager([wave], include_defaults=False)
        self.waves = 0


class PlainModel(Model):
    """Not a built-in scenario: steps its agents with plain shuffle_do('step')."""

    def __init__(self, seed: int, n_agents: int = 5) -> None:
        super().__init__(seed=seed)
        for _ in range(n_agents):
            Waver(self)

    def step(self) -> None:
        self.agents.shuffle_do("step")


@pytest.mark.parametrize("mode", MODES)
def test_a_plain_mesa_model_is_traced_through_shuffle_do(mode: str) -> None:
    trace = run(PlainModel, mode=mode, steps=2, agents=5)

    assert trace.scenario == "PlainModel"
    for step in trace.steps:
        assert step.phases == [("step", step.start_order)]
        assert sorted(step.start_order) == sorted(step.population)
        assert set(step.outcomes.values()) == {("ok", None)}
        assert all(len(calls) == 2 for calls in step.llm_calls.values())  # ReAct: 2 calls
    assert trace == run(PlainModel, mode="sequential", steps=2, agents=5)


def test_a_plain_model_whose_agents_raise_gives_equal_traces_in_every_mode() -> None:
    """Sequential mode isolates like the parallel ones, so any model's modes are comparable."""

    def traced(mode: str, seed: int) -> RunTrace:
        faults = FaultPlan(0.25, seed=seed)
        return run_scenario(PlainModel, steps=3, mode=mode, faults=faults, seed=seed, agents=6)

    sequential = traced("sequential", 5)
    failed = [uid for step in sequential.steps for uid in step.failed]
    assert failed, "faults at rate 0.25 ended no agent's step: the test shows nothing"
    assert sequential == traced("asyncio", 5), sequential.diff(traced("asyncio", 5))
    assert sequential == traced("threading", 5)
    assert sequential != traced("sequential", 6)


def test_without_a_state_digest_the_agents_plain_attributes_are_digested() -> None:
    model = Model(seed=1)
    agent = Agent(model)
    agent.wealth = 3
    before = state_digest(model)

    agent.helper = object()  # not plain data: ignored
    assert state_digest(model) == before
    agent.wealth = 4
    assert state_digest(model) != before


# --------------------------------------------------------------------------- equality, JSON


def test_equality_ignores_mode_and_timing() -> None:
    trace = run(steps=2)
    other = dataclasses.replace(
        trace,
        mode="threading",
        steps=[dataclasses.replace(s, seconds=s.seconds + 1) for s in trace.steps],
    )

    assert trace == other
    assert trace.diff(other) is None


def test_json_round_trip(faulty_trace: RunTrace) -> None:
    text = faulty_trace.to_json(indent=2)

    again = RunTrace.from_json(text)

    assert again == faulty_trace
    assert again.mode == faulty_trace.mode
    assert [s.seconds for s in again.steps] == [s.seconds for s in faulty_trace.steps]
    assert all(
        isinstance(c, CallTrace) for s in again.steps for cs in s.llm_calls.values() for c in cs
    )
    assert json.loads(again.to_json()) == json.loads(faulty_trace.to_json())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "cannot read a run trace"),
        ("[1, 2]", "not a run trace"),
        ('{"version": 99, "scenario": "x", "steps": []}', "version 99 is not supported"),
    ],
)
def test_from_json_rejects_what_is_not_a_trace(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RunTrace.from_json(text)


# --------------------------------------------------------------------------- diff


def _with_step(trace: RunTrace, index: int, **changes: Any) -> RunTrace:
    steps = list(trace.steps)
    steps[index] = dataclasses.replace(steps[index], **changes)
    return dataclasses.replace(trace, steps=steps)


@pytest.fixture(scope="module")
def trace() -> RunTrace:
    return run(NegotiationModel, steps=3, agents=6)


def test_diff_names_a_different_setting(trace: RunTrace) -> None:
    other = run(NegotiationModel, steps=3, agents=6, faults=FaultPlan(0.2, seed=1))

    assert trace.diff(other) == (
        "the runs differ in fault plan: None in the first run, "
        "{'rate': 0.2, 'kinds': ['rate_limit', 'timeout', 'malformed_json', 'server_error', "
        "'connection_error', 'empty_response'], 'seed': 1, 'test_id': '', 'scripted': []} "
        "in the second run"
    )


def test_diff_explains_a_different_start_order(trace: RunTrace) -> None:
    order = trace.steps[1].start_order
    swapped = [order[1], order[0], *order[2:]]
    other = dataclasses.replace(_with_step(trace, 1, start_order=swapped), mode="asyncio")

    message = trace.diff(other)

    assert message is not None
    assert message.startswith(
        f"step 2: agents were started in a different order: position 1 is agent {order[0]} "
        f"in the sequential run but agent {order[1]} in the asyncio run"
    )


def test_diff_explains_a_different_outcome(trace: RunTrace) -> None:
    step = trace.steps[2]
    uid = step.start_order[3]
    outcomes = {**step.outcomes, uid: ("error", "RateLimitError")}
    other = dataclasses.replace(_with_step(trace, 2, outcomes=outcomes), mode="threading")

    assert trace.diff(other) == (
        f"step 3, agent {uid}: succeeded in the sequential run, failed with RateLimitError "
        f"in the threading run"
    )


def test_diff_explains_a_different_prompt_then_reply(trace: RunTrace) -> None:
    step = trace.steps[0]
    uid = step.start_order[0]
    call = step.llm_calls[uid][0]

    changed_prompt = {**step.llm_calls, uid: [call._replace(prompt="0" * 16)]}
    changed_reply = {**step.llm_calls, uid: [call._replace(response="error:Timeout")]}

    assert trace.diff(_with_step(trace, 0, llm_calls=changed_prompt)) == (
        f"step 1, agent {uid}, LLM call 0: the request differs (the agent saw other state, "
        f"memory or prompt)"
    )
    assert trace.diff(_with_step(trace, 0, llm_calls=changed_reply)) == (
        f"step 1, agent {uid}, LLM call 0: the reply differs (reply {call.response} in the "
        f"first run, raised Timeout in the second run)"
    )


def test_diff_explains_rng_and_state_differences(trace: RunTrace) -> None:
    rng = trace.diff(_with_step(trace, 1, rng_digest="x" * 32))
    state = trace.diff(_with_step(trace, 1, state_digest="y" * 32))

    assert rng is not None and rng.startswith(
        "step 2: the model's random number generator is in a different state after the step"
    )
    assert state == (
        f"step 2: the model's state differs after the step (state digest "
        f"{trace.steps[1].state_digest[:12]} in the first run, yyyyyyyyyyyy in the second run)"
    )


def test_diff_explains_a_missing_step(trace: RunTrace) -> None:
    shorter = dataclasses.replace(trace, steps=trace.steps[:2])

    assert trace.diff(shorter) == "the first run has 3 steps, the second run has 2"


def test_diff_explains_a_fault_injected_in_one_run_only() -> None:
    plan = FaultPlan().at(agent=2, step=1, call=0, kind="rate_limit")
    faulty = run(NegotiationModel, steps=1, agents=4, faults=plan)
    clean = dataclasses.replace(faulty, steps=[run(NegotiationModel, steps=1, agents=4).steps[0]])

    assert faulty.diff(clean) == (
        "step 1, agent 2, LLM call 0: rate_limit fault in the first run, no fault in the second run"
    )


# --------------------------------------------------------------------------- naming scenarios


def test_resolve_scenario_knows_the_built_ins() -> None:
    for name, factory in REGISTRY.items():
        assert resolve_scenario(name) is factory


def test_resolve_scenario_imports_module_attributes() -> None:
    assert (
        resolve_scenario("mesa_llm_testing.scenarios.negotiation:NegotiationModel")
        is NegotiationModel
    )


def test_resolve_scenario_loads_a_file_with_one_model(tmp_path: Path) -> None:
    path = tmp_path / "mine.py"
    path.write_text(
        "from mesa import Model\n\nclass Mine(Model):\n    def step(self):\n        pass\n"
    )

    factory = resolve_scenario(str(path))

    assert factory.__name__ == "Mine"
    assert resolve_scenario(f"{path}:Mine") is factory
    assert run(factory, steps=2, agents=None).steps[1].population == []


def test_resolve_scenario_errors_say_what_to_write(tmp_path: Path) -> None:
    two = tmp_path / "two.py"
    two.write_text("from mesa import Model\n\nclass A(Model): pass\n\nclass B(Model): pass\n")

    with pytest.raises(ValueError, match=r"use a registered name \(civil_violence, island_commons"):
        resolve_scenario("nonsense")
    with pytest.raises(ValueError, match=r"defines 2 Mesa Model classes \(A, B\); name one as"):
        resolve_scenario(str(two))
    with pytest.raises(ValueError, match="has no attribute 'Nope'"):
        resolve_scenario("mesa_llm_testing.scenarios.negotiation:Nope")
    with pytest.raises(ValueError, match="cannot import 'no_such_module'"):
        resolve_scenario("no_such_module:Model")


def test_step_trace_round_trips_on_its_own(faulty_trace: RunTrace) -> None:
    step = faulty_trace.steps[0]

    assert StepTrace.from_dict(json.loads(json.dumps(step.to_dict())))._key() == step._key()


# --------------------------------------------------------------------------- step by step


def test_a_run_can_switch_modes_between_steps() -> None:
    faults = FaultPlan(0.3, seed=6)
    with ScenarioRun(IslandCommonsModel, seed=SEED, agents=6, faults=faults) as session:
        for mode in ("asyncio", "sequential", "threading"):
            assert session.step(mode).mode == mode

    assert session.trace.mode == "mixed"
    assert session.trace == run(IslandCommonsModel, agents=6, faults=faults)


@pytest.mark.parametrize("name", list(REGISTRY))
def test_agents_added_and_removed_between_steps_trace_alike_in_every_mode(name: str) -> None:
    def session(mode: str) -> RunTrace:
        with ScenarioRun(name, seed=SEED, agents=5, mode=mode) as run_:
            run_.step()
            model = run_.model
            added = model.add_agent()
            run_.step()
            model.remove_agent(next(a for a in model.agents if a is not added))
            run_.step()
        return run_.trace

    sequential = session("sequential")
    assert len(sequential.steps[1].population) == len(sequential.steps[0].population) + 1
    assert len(sequential.steps[2].population) == len(sequential.steps[0].population)
    for mode in ("asyncio", "threading"):
        assert session(mode) == sequential


def test_a_session_is_used_inside_its_with_block() -> None:
    session = ScenarioRun(NegotiationModel, seed=SEED)

    with pytest.raises(RuntimeError, match=r"inside 'with ScenarioRun\(...\) as run:'"):
        session.step()
    with pytest.raises(RuntimeError, match="inside 'with ScenarioRun"):
        _ = session.model
    with pytest.raises(ValueError, match="valid modes are"):
        ScenarioRun(NegotiationModel, seed=SEED, mode="fast")


def test_run_scenario_keeps_recordings_out_of_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mesa_llm.recording import record_model

    @record_model(save_at_exit=False)
    class Recorded(Model):
        def step(self) -> None:
            pass

    built: list[Any] = []

    def factory(seed: int) -> Model:
        built.append(Recorded(seed=seed))
        return built[-1]

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MESA_LLM_RECORDINGS_DIR", raising=False)
    run_scenario(factory, steps=1, mode="sequential", seed=1)
    saved = built[0].recorder.save()
    assert saved.is_file() and tmp_path not in saved.parents
    assert "MESA_LLM_RECORDINGS_DIR" not in os.environ  # put back after the run
