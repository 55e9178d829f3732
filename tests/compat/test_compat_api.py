"""mesa-llm 0.3.2's API on ours: a regression test per finding of issue 12, via the public API."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import pytest
from mesa import Model
from mesa.discrete_space import CellAgent, OrthogonalMooreGrid
from mesa.space import MultiGrid
from release_memory import remembered

from mesa_llm.llm_agent import LLMAgent
from mesa_llm.memory.st_lt_memory import STLTMemory
from mesa_llm.module_llm import ModuleLLM
from mesa_llm.parallel_stepping import enable_automatic_parallel_stepping
from mesa_llm.reasoning.cot import CoTReasoning
from mesa_llm.reasoning.react import ReActOutput, ReActReasoning
from mesa_llm.reasoning.reasoning import Observation, Plan, Reasoning
from mesa_llm.reasoning.rewoo import ReWOOReasoning
from mesa_llm.tools.inbuilt_tools import move_one_step, speak_to, teleport_to_location
from mesa_llm.tools.tool_decorator import tool
from mesa_llm.tools.tool_manager import ToolManager

LLM = "openai/gpt-4o-mini"


def _message(*calls: tuple[str, dict[str, Any]]) -> Any:
    """An LLM message with tool calls, shaped like litellm's."""
    return SimpleNamespace(
        content=None,
        tool_calls=[
            SimpleNamespace(
                id=f"call_{i}", function=SimpleNamespace(name=name, arguments=json.dumps(args))
            )
            for i, (name, args) in enumerate(calls)
        ],
    )


def test_release_module_paths_import():
    assert ReActOutput(reasoning="r", action="a").action == "a"
    assert {CoTReasoning, ReActReasoning, ReWOOReasoning} <= set(Reasoning.__subclasses__())
    assert Observation(step=1, self_state={}, local_state={}).step == 1
    assert {move_one_step.__name__, speak_to.__name__, teleport_to_location.__name__} <= set(
        ToolManager().tools
    )


# -- vision=-1 ----------------------------------------------------------------------------


def test_vision_minus_one_sees_everyone_on_a_mesa_space_grid(fake_llm):
    model = Model(seed=1)
    model.grid = MultiGrid(10, 10, torus=False)
    agents = LLMAgent.create_agents(model, n=3, reasoning=CoTReasoning, llm_model=LLM, vision=-1)
    for agent, pos in zip(agents, [(0, 0), (9, 9), (5, 0)], strict=True):
        model.grid.place_agent(agent, pos)
    seen = agents[0].generate_obs().local_state
    assert sorted(seen) == [f"LLMAgent {a.unique_id}" for a in agents[1:]]


def test_vision_minus_one_sees_everyone_on_a_discrete_space_grid(fake_llm):
    class CellLLMAgent(LLMAgent, CellAgent):
        pass

    model = Model(seed=1)
    grid = OrthogonalMooreGrid((10, 10), random=model.random)
    agents = [CellLLMAgent(model, CoTReasoning, LLM, None, -1) for _ in range(3)]
    for agent, coord in zip(agents, [(0, 0), (9, 9), (5, 0)], strict=True):
        agent.cell = grid[coord]
    seen = agents[0].generate_obs().local_state
    assert sorted(seen) == [f"CellLLMAgent {a.unique_id}" for a in agents[1:]]
    assert seen[f"CellLLMAgent {agents[1].unique_id}"]["position"] == (9, 9)


def test_other_negative_vision_is_rejected_with_the_valid_values(fake_llm):
    agent = LLMAgent(Model(seed=1), CoTReasoning, LLM, vision=-2)
    with pytest.raises(ValueError, match=r"vision=-2.*-1 \(sees every agent"):
        agent.generate_obs()


def test_neighbours_do_not_see_private_internal_state(fake_llm):
    model = Model(seed=1)
    me = LLMAgent(model, CoTReasoning, LLM, vision=-1)
    LLMAgent(model, CoTReasoning, LLM, internal_state=["calm", "_plan: betray"])
    LLMAgent(model, CoTReasoning, LLM, internal_state={"budget": 3, "_secret": 1})
    states = [seen["internal_state"] for seen in me.generate_obs().local_state.values()]
    assert states == [["calm"], {"budget": 3}]


# -- ModuleLLM.generate as the release calls it -------------------------------------------


def test_list_prompt_is_one_user_message_per_item(fake_llm):
    llm = ModuleLLM(LLM, system_prompt="persona")
    llm.generate(prompt=["a", "b"])
    assert fake_llm.calls[-1].request.messages == [
        {"role": "system", "content": "persona"},
        {"role": "user", "content": "a"},
        {"role": "user", "content": "b"},
    ]


async def test_release_positional_generate_and_per_call_system_prompt(fake_llm):
    llm = ModuleLLM(LLM, system_prompt="persona")
    schema = [move_one_step.__tool_schema__]
    await llm.agenerate("go", schema, "auto", None, "executor")
    request = fake_llm.calls[-1].request
    assert request.messages[0] == {"role": "system", "content": "executor"}
    assert request.tools == schema
    assert llm.system_prompt == "persona"  # only that call was overridden
    with pytest.raises(TypeError, match="item 1 is int"):
        llm.generate(prompt=["a", 2])
    with pytest.raises(ValueError, match="tool_schema"):
        llm.generate("go", schema, tools=schema)


def test_missing_api_key_is_a_value_error(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        ModuleLLM(LLM)
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        LLMAgent(Model(seed=1), CoTReasoning, LLM)


# -- @tool and ToolManager -------------------------------------------------------------------


def test_tool_accepts_mixed_tuples_and_sets_and_indented_args():
    manager = ToolManager({})

    @tool(tool_manager=manager)
    def label(agent, pair: tuple[str, int], tags: set[str]) -> str:
        """Label a pair.

        Args:
            pair: A name and a number.
            tags: Labels to attach.
        """
        return f"{pair[0]}={pair[1]} {sorted(tags)}"

    properties = label.__tool_schema__["function"]["parameters"]["properties"]
    assert properties["pair"]["description"] == "A name and a number."
    assert properties["tags"] == {
        "type": "array",
        "items": {"type": "string"},
        "uniqueItems": True,
        "description": "Labels to attach.",
    }
    results = manager.call_tools(None, _message(("label", {"pair": ["x", 2], "tags": ["b", "a"]})))
    assert results == [
        {"tool_call_id": "call_0", "role": "tool", "name": "label", "response": "x=2 ['a', 'b']"}
    ]


def test_tool_manager_release_api():
    def plain(x: int) -> int:
        """Double x.

        Args:
            x: A number.
        """
        return 2 * x

    manager = ToolManager(extra_tools={"plain": plain})
    assert manager.has_tool("plain") and manager.has_tool("speak_to")

    @tool(tool_manager=manager, ignore_agent=False)
    def whoami(agent) -> str:
        """Say who calls."""
        return str(agent)

    assert "agent" in whoami.__tool_schema__["function"]["parameters"]["properties"]
    assert manager.tools["whoami"] == whoami
    names = [s["function"]["name"] for s in manager.get_all_tools_schema(["whoami", "plain"])]
    assert names == ["whoami", "plain"]
    assert manager.get_all_tools_schema([]) == []
    with pytest.raises(ValueError, match=r"unknown tool name\(s\) \['nope'\]"):
        manager.get_all_tools_schema(["nope"])
    assert manager.call("plain", {"x": 2}) == 4
    assert manager.call_tools(None, "just text") == []


async def test_tool_exceptions_become_error_results_in_every_path():
    manager = ToolManager({})

    @tool(tool_manager=manager)
    def fail(agent) -> str:
        """Always fails."""
        raise RuntimeError("boom")

    @tool(tool_manager=manager)
    async def afail(agent) -> str:
        """Always fails, asynchronously."""
        raise KeyError("gone")

    message = _message(("fail", {}), ("afail", {}), ("missing", {}), ("fail", {"bad": 1}))
    for results in (manager.call_tools(None, message), await manager.acall_tools(None, message)):
        responses = [r["response"] for r in results]
        assert responses[:2] == ["Error: boom", "Error: 'gone'"]
        assert responses[2].startswith("Error:") and "missing" in responses[2]
        assert responses[3].startswith("Error:") and "'bad'" in responses[3]


def test_bare_tool_reaches_existing_release_style_managers():
    manager = ToolManager()

    @tool
    def wave_hello_compat(agent) -> str:
        """Wave."""
        return "waved"

    assert manager.has_tool("wave_hello_compat")
    assert not ToolManager([]).has_tool("wave_hello_compat")  # ours' spelling: exact sets


# -- LLMAgent ---------------------------------------------------------------------------------


def test_apply_plan_never_raises_and_remembers_results(fake_llm):
    model = Model(seed=1)
    agent = LLMAgent(model, CoTReasoning, LLM)
    agent.memory = STLTMemory(agent=agent, llm_model=LLM)

    @tool(tool_manager=agent.tool_manager)
    def explode(agent) -> str:
        """Explode."""
        raise ValueError("no")

    plan = Plan(step=0, llm_plan=_message(("explode", {}), ("speak_to", {
        "listener_agents_unique_ids": [42], "message": "hi"})), ttl=3)  # fmt: skip
    results = agent.apply_plan(plan)
    assert [r["response"] for r in results] == [
        "Error: no",
        "Could not send message 'hi': no matching recipients found.",
    ]
    assert remembered(agent, "action") == [
        {"tool_calls": [{"name": r["name"], "response": r["response"]} for r in results]}
    ]
    assert str(Plan(step=0, llm_plan="do something")) == "do something\n"
    assert agent.apply_plan(Plan(step=0, llm_plan="text only")) == []


def test_send_message_delivers_to_memory(fake_llm):
    model = Model(seed=1)
    alice, bob, carol = LLMAgent.create_agents(model, n=3, reasoning=CoTReasoning, llm_model=LLM)
    for agent in (alice, bob):
        agent.memory = STLTMemory(agent=agent, llm_model=LLM)
    carol.memory = None
    status = alice.send_message("hi", [bob, carol, alice])
    assert status == (
        f"sent message 'hi' to [{bob.unique_id}]; skipped [{carol.unique_id}] because they "
        "have no `memory` attribute"
    )
    assert remembered(bob, "message") == [{"message": "hi", "sender": alice.unique_id}]
    assert remembered(alice, "message") == [
        {"message": "hi", "sender": alice.unique_id, "recipients": [bob.unique_id]}
    ]
    asyncio.run(alice.asend_message("again", [bob]))
    assert remembered(bob, "message")[-1] == {"message": "again", "sender": alice.unique_id}


class _CountingMemory:
    def __init__(self) -> None:
        self.calls: list[bool] = []

    def process_step(self, pre_step: bool = False) -> None:
        self.calls.append(pre_step)

    async def aprocess_step(self, pre_step: bool = False) -> None:
        self.calls.append(pre_step)


class _StepOnly(LLMAgent):
    def step(self):
        self.ran = "step"


class _AstepOnly(LLMAgent):
    async def astep(self):
        self.ran = "astep"


class _Both(LLMAgent):
    def step(self):
        self.ran = "step"

    async def astep(self):
        self.ran = "astep"


class _Child(_Both):
    def step(self):
        super().step()


@pytest.mark.parametrize("stepping_mode", ["sequential", "asyncio", "threading"], indirect=True)
def test_memory_is_processed_once_per_step_in_every_mode(fake_llm, stepping_mode):
    enable_automatic_parallel_stepping(mode=stepping_mode)
    model = Model(seed=1)
    model.parallel_stepping = True
    agents = [cls(model, CoTReasoning, LLM) for cls in (_StepOnly, _AstepOnly, _Both, _Child)]
    for agent in agents:
        agent.memory = _CountingMemory()
    model.agents.shuffle_do("step")
    model.agents.shuffle_do("step")
    assert model.last_step_report.ok
    for agent in agents:
        assert agent.memory.calls == [True, False, True, False], type(agent).__name__
        assert hasattr(agent, "ran")


def test_release_style_model_steps_in_parallel_without_enabling(fake_llm):
    class Walker(LLMAgent):
        async def astep(self):
            self.walked = True

    class M(Model):
        def __init__(self):
            super().__init__(seed=1)
            self.parallel_stepping = True
            Walker.create_agents(self, n=2, reasoning=CoTReasoning, llm_model=LLM)

        def step(self):
            self.agents.shuffle_do("step")

    model = M()
    model.step()
    assert model.last_step_report.mode == "asyncio"
    assert all(agent.walked for agent in model.agents)


def test_an_explicit_mode_is_never_overridden(fake_llm):
    enable_automatic_parallel_stepping(mode="threading")
    model = Model(seed=1)
    model.parallel_stepping = True
    LLMAgent(model, CoTReasoning, LLM)
    model.agents.shuffle_do("step")
    assert model.last_step_report.mode == "threading"


# -- Reasoning as the release subclasses it ----------------------------------------------------


class _Planner(Reasoning):
    """A release-style strategy: only ``plan``, calling the executor."""

    def plan(self, prompt=None, obs=None, ttl=1, selected_tools=None, tool_calls="auto"):
        obs = obs or self.agent.generate_obs()
        return self.execute_tool_call(f"{prompt} given {obs}", selected_tools=selected_tools)


def test_release_style_reasoning_subclass_plans_and_acts(fake_llm):
    from mesa_llm_testing import FakeReply
    from mesa_llm_testing._responses import FakeToolCall

    fake_llm.return_value = FakeReply(None, (FakeToolCall("speak_to", json.dumps(
        {"listener_agents_unique_ids": [1], "message": "hey"}), "c1"),))  # fmt: skip
    model = Model(seed=1)
    agent = LLMAgent(model, _Planner, LLM, vision=-1)
    plan = asyncio.run(agent.reasoning.aplan(prompt="talk", selected_tools=["speak_to"]))
    request = fake_llm.calls[-1].request
    assert [t["function"]["name"] for t in request.tools] == ["speak_to"]
    assert request.messages[0]["content"].startswith("You are an executor")
    assert plan.llm_plan.tool_calls[0].function.name == "speak_to"
    with pytest.raises(ValueError, match="unknown tool"):
        agent.reasoning.plan(prompt="talk", selected_tools=["fly"])


def test_builtin_reasoning_takes_selected_tools_and_tool_calls(fake_llm):
    model = Model(seed=1)
    agent = LLMAgent(model, CoTReasoning, LLM, step_prompt="act")
    plan = agent.reasoning.plan(selected_tools=["speak_to"], tool_calls="none")
    assert plan.actions == []
    assert all(
        [t["function"]["name"] for t in call.request.tools or []] in ([], ["speak_to"])
        for call in fake_llm.calls
    )
