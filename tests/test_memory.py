"""ShortTermMemory: bounded, ordered, rendered for prompts."""

from __future__ import annotations

import pytest

from mesa_llm.memory import ShortTermMemory
from mesa_llm.reasoning import Observation, Plan
from mesa_llm.tools import ToolCall


def observation(step: int) -> Observation:
    return Observation(step, {"mood": "calm"}, {})


def plan(step: int) -> Plan:
    return Plan(step, f"thoughts {step}", [ToolCall("wait", {"turns": step}, "c")])


def test_keeps_only_the_most_recent_observations_and_plans() -> None:
    memory = ShortTermMemory(capacity=3)
    for step in range(10):
        memory.add_observation(observation(step))
        memory.add_plan(plan(step))
    assert [obs.step for obs in memory.observations] == [7, 8, 9]
    assert [p.step for p in memory.plans] == [7, 8, 9]
    assert len(memory) == 6
    assert [(entry.step, entry.kind) for entry in memory.entries] == [
        (7, "observation"),
        (7, "plan"),
        (8, "observation"),
        (8, "plan"),
        (9, "observation"),
        (9, "plan"),
    ]


def test_default_capacity_is_five() -> None:
    memory = ShortTermMemory()
    for step in range(8):
        memory.add_plan(plan(step))
    assert memory.capacity == 5
    assert [p.step for p in memory.plans] == [3, 4, 5, 6, 7]


def test_render_is_prompt_text_oldest_first() -> None:
    memory = ShortTermMemory()
    assert memory.render() == ""
    memory.add_observation(observation(1))
    memory.add_plan(plan(1))
    assert memory.render() == (
        '[step 1] observation: step 1; self: {"mood": "calm"}; neighbours: {}\n'
        "[step 1] plan: thoughts 1 | actions: wait(turns=1)"
    )
    memory.clear()
    assert len(memory) == 0
    assert memory.render() == ""


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity must be >= 1, got 0"):
        ShortTermMemory(capacity=0)
