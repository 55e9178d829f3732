"""A release-style model with the release ``LLMAgent``'s default memory, in every stepping mode.

The built-in ``release_market`` scenario is written with mesa-llm 0.3's API only
and keeps the default ``STLTMemory(short_term_capacity=5, consolidation_capacity=2)``.
Stepped on the fake in sequential, asyncio and threading modes: one memory entry
per step holding its observation, plan and action; consolidation at the 8th step,
through the agent's own (attributed, faulted, retried) LLM; a step that raises
files its entry with ``step_error`` and nothing leaks into the next step; and the
traces, faults and memories are the same in all three modes.
"""

from __future__ import annotations

from typing import Any

import pytest

from mesa_llm.memory.st_lt_memory import STLTMemory
from mesa_llm_testing import FaultPlan, RunTrace
from mesa_llm_testing._runner import ScenarioRun
from mesa_llm_testing.checks import check_reproducible

MODES = ("sequential", "asyncio", "threading")
SEED = 4242  # at this seed no buyer moves before a seller looks (sequential order effect)
CONSOLIDATE = "Memories to consolidate"


def run(mode: str, steps: int, faults: FaultPlan | None = None) -> tuple[RunTrace, Any, Any]:
    with ScenarioRun("release_market", seed=SEED, mode=mode, faults=faults, agents=4) as scenario:
        for _ in range(steps):
            scenario.step()
    return scenario.trace, scenario.model, scenario.fake


def memories(model: Any) -> dict[Any, tuple[Any, ...]]:
    """Per agent: (entry steps, which entries failed, the long-term summary)."""
    return {
        agent.unique_id: (
            [entry.step for entry in agent.memory.short_term_memory],
            [
                entry.step
                for entry in agent.memory.short_term_memory
                if "step_error" in entry.content
            ],
            agent.memory.long_term_memory,
        )
        for agent in model.agents
    }


@pytest.mark.parametrize("mode", MODES)
def test_one_entry_per_step_and_consolidation_through_the_agents_llm(mode: str) -> None:
    trace, model, fake = run(mode, steps=8)

    assert not any(step.failed for step in trace.steps)
    for agent in model.agents:
        assert isinstance(agent.memory, STLTMemory)
        entries = list(agent.memory.short_term_memory)
        # 8 entries > 5 + 2: the two oldest (steps 1, 2) were consolidated at step 8.
        assert [entry.step for entry in entries] == [3, 4, 5, 6, 7, 8]
        for entry in entries:
            assert entry.content["observation"]["self_state"]["agent_unique_id"] == agent.unique_id
            assert entry.content["plan"] and "tool_calls" in entry.content["action"][0]
        assert agent.memory.step_content == {}
        assert agent.memory.long_term_memory  # the fake's summary
    consolidations = [c for c in fake.calls if CONSOLIDATE in (c.request.prompt or "")]
    assert sorted(c.agent for c in consolidations) == sorted(a.unique_id for a in model.agents)
    assert {c.step for c in consolidations} == {8}
    assert all(
        "Step 1: \n" in c.request.prompt and "Step 2: \n" in c.request.prompt
        for c in consolidations
    )


@pytest.mark.parametrize("mode", MODES)
def test_a_step_that_raises_leaves_memory_consistent(mode: str) -> None:
    with ScenarioRun("release_market", seed=SEED, mode=mode, agents=4) as scenario:
        victim = next(a for a in scenario.model.agents if type(a).__name__ == "MarketBuyer")
        scenario.fake.faults = FaultPlan().at(
            agent=victim.unique_id, step=2, call=0, kind="malformed_json"
        )
        for _ in range(3):
            scenario.step()
    [failed_step] = [s for s in scenario.trace.steps if s.failed]
    assert failed_step.step == 2 and set(failed_step.failed) == {victim.unique_id}

    entries = list(victim.memory.short_term_memory)
    assert [entry.step for entry in entries] == [1, 2, 3]  # no "Step None" placeholder
    assert "step_error" not in entries[0].content and "step_error" not in entries[2].content
    assert "MalformedResponseError" in entries[1].content["step_error"]["error"]
    assert "observation" in entries[1].content  # what the failed step recorded is kept
    assert entries[2].content["observation"] and "plan" in entries[2].content
    assert victim.memory.step_content == {}


def test_under_faults_traces_faults_and_memories_are_equal_in_every_mode() -> None:
    faults = FaultPlan(0.2, seed=1)
    results = {mode: run(mode, steps=9, faults=faults) for mode in MODES}

    sequential, model, _ = results["sequential"]
    assert any(step.failed for step in sequential.steps)
    assert any(step.recovered for step in sequential.steps)
    expected = memories(model)
    for agent_id, (steps, failed, _) in expected.items():
        assert steps == list(range(steps[0], 10))  # contiguous, ends at the last step
        failures = {s.step for s in sequential.steps if agent_id in s.failed}
        assert set(failed) <= failures
    for mode in ("asyncio", "threading"):
        trace, other, _ = results[mode]
        check_reproducible(trace, sequential)
        assert trace == sequential, trace.diff(sequential)
        assert memories(other) == expected
