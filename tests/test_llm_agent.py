"""LLMAgent: construction, observation, plan application and the default step, on FakeLLM."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest
from mesa import Model

try:
    from mesa.discrete_space import CellAgent, OrthogonalMooreGrid
except ImportError:  # Mesa < 3.2 (the oldest-versions tox env): still experimental
    from mesa.experimental.cell_space import CellAgent, OrthogonalMooreGrid  # type: ignore[no-redef]
from mesa.space import ContinuousSpace, MultiGrid

from mesa_llm.errors import MissingAPIKeyError
from mesa_llm.llm_agent import DEFAULT_LLM_MODEL, LLMAgent
from mesa_llm.module_llm import ModuleLLM
from mesa_llm.reasoning import CoTReasoning, Plan, ReActReasoning
from mesa_llm.tools import ToolCall, tool
from mesa_llm_testing import FakeLLM


@tool
def note(agent: LLMAgent, text: str) -> str:
    """Write a note in the agent's notebook.

    Args:
        text: What to write.
    """
    agent.notebook.append(text)  # type: ignore[attr-defined]
    return f"noted {text}"


@tool
async def shout(agent: LLMAgent, text: str) -> str:
    """Shout something."""
    await asyncio.sleep(0)
    agent.notebook.append(text.upper())  # type: ignore[attr-defined]
    return "shouted"


class NotebookAgent(LLMAgent):
    def __init__(self, model: Model, **kwargs: Any) -> None:
        kwargs.setdefault("llm_model", "mesa-fake/notebook")
        kwargs.setdefault("tools", [note, shout])
        super().__init__(model, **kwargs)
        self.notebook: list[str] = []


def test_construction_wires_the_llm_layer() -> None:
    model = Model(seed=5)
    agent = LLMAgent(
        model,
        ReActReasoning,
        llm_model="mesa-fake/x",
        system_prompt="You are a fox.",
        step_prompt="Hunt.",
        api_base="http://localhost:1234/v1",
        tools=[note],
        internal_state={"hunger": 3},
        llm_kwargs={"temperature": 0.2},
    )
    assert isinstance(agent.llm, ModuleLLM)
    assert agent.llm.agent is agent
    assert agent.llm.api_base == "http://localhost:1234/v1"
    assert agent.llm.completion_kwargs == {"temperature": 0.2}
    assert agent.system_prompt == agent.llm.system_prompt == "You are a fox."
    assert isinstance(agent.reasoning, ReActReasoning)
    assert agent.reasoning.agent is agent
    assert agent.tool_manager.names == ["note"]
    assert agent.step_prompt == "Hunt."
    assert agent.memory.capacity == 5
    assert agent in model.agents


def test_internal_state_forms() -> None:
    model = Model(seed=1)
    assert LLMAgent(model, llm_model="mesa-fake/x", internal_state="calm").internal_state == [
        "calm"
    ]
    assert LLMAgent(model, llm_model="mesa-fake/x", internal_state=["a", "b"]).internal_state == [
        "a",
        "b",
    ]
    assert LLMAgent(model, llm_model="mesa-fake/x").internal_state == []


def test_default_model_needs_a_key_unless_the_fake_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert DEFAULT_LLM_MODEL.startswith("openai/")
    with pytest.raises(MissingAPIKeyError, match="OPENAI_API_KEY"):
        LLMAgent(Model(seed=1))
    with FakeLLM().activate():
        agent = LLMAgent(Model(seed=1), tools=[note])
        agent.notebook = []  # type: ignore[attr-defined]
        agent.step()
    assert agent.notebook  # type: ignore[attr-defined]


def llm_seeds(model_seed: int, hash_seed: str) -> list[int]:
    script = textwrap.dedent(
        f"""
        from mesa import Model
        from mesa_llm.llm_agent import LLMAgent
        model = Model(seed={model_seed})
        print([LLMAgent(model, llm_model="mesa-fake/x").llm.seed for _ in range(3)])
        """
    )
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    return [int(x) for x in out.stdout.strip().strip("[]").split(",")]


def test_llm_seed_is_stable_across_processes_and_distinct_per_agent() -> None:
    first = llm_seeds(7, "1")
    assert first == llm_seeds(7, "2")
    assert len(set(first)) == 3
    assert first != llm_seeds(8, "1")


def test_observation_on_a_mesa_space_grid() -> None:
    model = Model(seed=2)
    model.grid = MultiGrid(5, 5, torus=False)
    me, near, same_cell, far = (
        LLMAgent(model, llm_model="mesa-fake/x", internal_state={"id": i}) for i in range(4)
    )
    model.grid.place_agent(me, (2, 2))
    model.grid.place_agent(near, (3, 3))
    model.grid.place_agent(same_cell, (2, 2))
    model.grid.place_agent(far, (0, 4))
    obs = me.generate_obs()
    assert obs.step == model.steps
    assert obs.self_state == {
        "agent_unique_id": me.unique_id,  # mesa-llm 0.3's keys ...
        "location": (2, 2),
        "unique_id": me.unique_id,  # ... and ours
        "type": "LLMAgent",
        "position": (2, 2),
        "internal_state": {"id": 0},
    }
    assert obs.local_state == {
        f"LLMAgent {near.unique_id}": {"position": (3, 3), "internal_state": {"id": 1}},
        f"LLMAgent {same_cell.unique_id}": {"position": (2, 2), "internal_state": {"id": 2}},
    }
    me.vision = 2
    assert f"LLMAgent {far.unique_id}" in me.generate_obs().local_state
    me.vision = 0
    assert me.generate_obs().local_state == {}


def test_observation_in_continuous_space() -> None:
    model = Model(seed=2)
    model.space = ContinuousSpace(10, 10, torus=False)
    me, near, far = (LLMAgent(model, llm_model="mesa-fake/x", vision=1.5) for _ in range(3))
    model.space.place_agent(me, (5.0, 5.0))
    model.space.place_agent(near, (6.0, 6.0))
    model.space.place_agent(far, (9.0, 9.0))
    assert list(me.generate_obs().local_state) == [f"LLMAgent {near.unique_id}"]


class CellLLMAgent(LLMAgent, CellAgent):
    pass


def test_observation_on_a_discrete_space_cell_grid() -> None:
    model = Model(seed=3)
    grid = OrthogonalMooreGrid((4, 4), torus=False, random=model.random)
    me, near, far = (CellLLMAgent(model, llm_model="mesa-fake/x") for _ in range(3))
    me.cell, near.cell, far.cell = grid[(1, 1)], grid[(2, 2)], grid[(3, 3)]
    obs = me.generate_obs()
    assert obs.self_state["position"] == (1, 1)
    assert obs.local_state == {
        f"CellLLMAgent {near.unique_id}": {"position": (2, 2), "internal_state": []}
    }


def test_no_space_means_no_neighbours() -> None:
    model = Model(seed=3)
    me = LLMAgent(model, llm_model="mesa-fake/x")
    LLMAgent(model, llm_model="mesa-fake/x")
    obs = me.generate_obs()
    assert obs.local_state == {}
    assert obs.self_state["position"] is None


def test_apply_plan_runs_tools_on_the_agent_in_order() -> None:
    agent = NotebookAgent(Model(seed=1))
    plan = Plan(0, "thinking", [ToolCall("note", {"text": "a"}), ToolCall("shout", {"text": "b"})])
    assert [r["response"] for r in agent.apply_plan(plan)] == ["noted a", "shouted"]
    results = asyncio.run(agent.aapply_plan(plan))
    assert [(r["name"], r["response"], r["role"]) for r in results] == [
        ("note", "noted a", "tool"),
        ("shout", "shouted", "tool"),
    ]
    assert agent.notebook == ["a", "B", "a", "B"]


def test_default_step_observes_plans_and_acts() -> None:
    fake = FakeLLM(
        side_effect=[
            FakeLLM.text("Thought 1: write it down.\nAction: note"),
            FakeLLM.tool_call("note", text="hello"),
            FakeLLM.text("Thought 1: shout it.\nAction: shout"),
            FakeLLM.tool_call("shout", text="hey"),
        ]
    )
    with fake.activate():
        agent = NotebookAgent(Model(seed=1), step_prompt="Keep notes.")
        agent.step()
        agent.model.step()
        asyncio.run(agent.astep())
    assert agent.notebook == ["hello", "HEY"]
    # The default memory (mesa-llm 0.3's STLTMemory) files one entry per step.
    entries = list(agent.memory.short_term_memory)
    assert [entry.step for entry in entries] == [0, 1]
    assert [entry.content["observation"]["self_state"]["agent_unique_id"] for entry in entries] == [
        agent.unique_id
    ] * 2
    assert all("Action: " in str(entry.content["plan"]) for entry in entries)
    assert [entry.content["action"][0]["tool_calls"] for entry in entries] == [
        [{"name": "note", "response": "noted hello"}],
        [{"name": "shout", "response": "shouted"}],
    ]
    # Sequential calls are attributed to the agent (the harness keys faults on this).
    assert [(c.agent, c.step) for c in fake.calls] == [(agent.unique_id, s) for s in (0, 0, 1, 1)]
    assert "Keep notes." in fake.calls[0].messages[1]["content"]


def test_observe_and_plan_does_not_act() -> None:
    with FakeLLM(
        side_effect=[FakeLLM.text("Action: note"), FakeLLM.tool_call("note", text="x")]
    ).activate():
        agent = NotebookAgent(Model(seed=1))
        plan = agent.observe_and_plan()
    assert plan.actions == [ToolCall("note", {"text": "x"}, plan.actions[0].id)]
    assert agent.notebook == []


class SyncOnly(NotebookAgent):
    def step(self) -> None:
        self.notebook.append("custom step")


class AsyncOnly(NotebookAgent):
    async def astep(self) -> None:
        self.notebook.append("custom astep")


def test_a_subclass_overriding_one_step_method_is_used_by_the_other() -> None:
    # Parallel stepping prefers astep; sequential shuffle_do calls step: neither may
    # bypass the one method a subclass defines.
    sync_only, async_only = SyncOnly(Model(seed=1)), AsyncOnly(Model(seed=1))
    asyncio.run(sync_only.astep())
    async_only.step()
    assert sync_only.notebook == ["custom step"]
    assert async_only.notebook == ["custom astep"]


def test_reasoning_may_be_any_factory() -> None:
    agent = LLMAgent(
        Model(seed=1), lambda a: CoTReasoning(a), llm_model="mesa-fake/x", memory_capacity=2
    )
    assert isinstance(agent.reasoning, CoTReasoning)
    assert agent.memory.capacity == 2
    assert "CoTReasoning" in repr(agent)


@pytest.mark.parametrize("mode", ["asyncio", "threading"])
def test_a_subclass_overriding_only_step_is_stepped_through_the_pool(mode: str) -> None:
    """Its own ``step`` runs in mesa_llm's workers, its value is kept, and raise mode waits."""
    import threading
    import time

    from mesa import Agent

    from mesa_llm.parallel_stepping import step_agents_parallel_sync

    class Planner(LLMAgent):
        def step(self) -> str:
            time.sleep(0.1)
            self.finished = True
            return f"plan-{self.unique_id}:{threading.current_thread().name}"

    class Boom(Agent):
        def step(self) -> None:
            raise RuntimeError("boom")

    with FakeLLM().activate():
        model = Model(seed=1)
        planners = [Planner(model) for _ in range(3)]
        report = step_agents_parallel_sync(planners, mode=mode, max_workers=4)  # type: ignore[arg-type]
        for planner, outcome in zip(planners, report.outcomes, strict=True):
            assert outcome.value.startswith(f"plan-{planner.unique_id}:mesa_llm-4")
        slow = Planner(model)
        with pytest.raises(RuntimeError, match="boom"):
            step_agents_parallel_sync([slow, Boom(model)], mode=mode, on_error="raise")  # type: ignore[arg-type]
        assert slow.finished  # waited for, not left running behind the raise
