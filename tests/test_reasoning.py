"""Reasoning strategies, offline on FakeLLM through the real litellm machinery."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any, Literal

import pytest
from mesa import Model

from mesa_llm.errors import (
    EmptyResponseError,
    MalformedResponseError,
    ToolArgumentsError,
    UnknownToolError,
)
from mesa_llm.llm_agent import LLMAgent
from mesa_llm.reasoning import (
    DEFAULT_STEP_PROMPT,
    CoTReasoning,
    Observation,
    Plan,
    ReActReasoning,
    Reasoning,
    ReWOOReasoning,
)
from mesa_llm.tools import tool
from mesa_llm_testing import FakeLLM

STRATEGIES = [CoTReasoning, ReActReasoning, ReWOOReasoning]


@tool
def wait(agent: LLMAgent, turns: int = 1) -> int:
    """Stay put for a number of turns.

    Args:
        turns: How many turns to wait.
    """
    return turns


@tool
def move(agent: LLMAgent, direction: Literal["north", "east", "south", "west"]) -> str:
    """Move one cell.

    Args:
        direction: Compass direction.
    """
    return direction


def make_agent(reasoning: type[Reasoning], *, tools: Sequence[Any] = (wait, move), **kwargs: Any):
    return LLMAgent(
        Model(seed=11), reasoning, llm_model="mesa-fake/test", tools=list(tools), **kwargs
    )


def first_reply(reasoning: type[Reasoning]) -> Any:
    if reasoning is ReActReasoning:
        return FakeLLM.json_reply({"reasoning": "Nobody is near.", "action": "wait two turns"})
    return FakeLLM.text("Thought 1: nobody is near.\nAction: wait two turns")


def plan_both_ways(
    reasoning: type[Reasoning], replies: Sequence[Any] | None
) -> tuple[Plan, Plan, FakeLLM, FakeLLM]:
    """The plan (and fake) of a fresh agent planning with sync ``plan`` and with async ``aplan``."""
    sync_fake = FakeLLM(side_effect=None if replies is None else list(replies))
    with sync_fake.activate():
        sync_plan = make_agent(reasoning).reasoning.plan()
    async_fake = FakeLLM(side_effect=None if replies is None else list(replies))
    with async_fake.activate():
        async_plan = asyncio.run(make_agent(reasoning).reasoning.aplan())
    return sync_plan, async_plan, sync_fake, async_fake


def requests(fake: FakeLLM) -> list[tuple[Any, ...]]:
    return [
        (c.messages, c.tools, c.request.tool_choice, c.request.response_format) for c in fake.calls
    ]


@pytest.mark.parametrize("reasoning", STRATEGIES)
def test_sync_and_async_give_the_same_plan_for_the_same_replies(
    reasoning: type[Reasoning],
) -> None:
    act = FakeLLM.tool_calls(("wait", {"turns": 2}), ("move", {"direction": "east"}))
    replies = [first_reply(reasoning), act]
    sync_plan, async_plan, sync_fake, async_fake = plan_both_ways(reasoning, replies)
    assert sync_plan == async_plan
    assert requests(sync_fake) == requests(async_fake)
    names_and_args = [(a.name, a.arguments) for a in sync_plan.actions]
    if reasoning is ReWOOReasoning:  # one queued call per step
        assert names_and_args == [("wait", {"turns": 2})]
        assert sync_plan.ttl == 2
    else:
        assert names_and_args == [("wait", {"turns": 2}), ("move", {"direction": "east"})]
        assert sync_plan.ttl == 1
    assert "wait two turns" in sync_plan.thoughts
    assert sync_plan.step == 0


@pytest.mark.parametrize("reasoning", STRATEGIES)
def test_sync_and_async_agree_on_the_fakes_generated_replies(reasoning: type[Reasoning]) -> None:
    sync_plan, async_plan, sync_fake, async_fake = plan_both_ways(reasoning, None)
    assert sync_plan == async_plan
    assert requests(sync_fake) == requests(async_fake)
    assert sync_plan.thoughts
    assert [action.name for action in sync_plan.actions] in (["wait"], ["move"])


def test_cot_thinks_then_acts_with_the_tools() -> None:
    plan, _, fake, _ = plan_both_ways(
        CoTReasoning, [first_reply(CoTReasoning), FakeLLM.tool_call("wait", turns=2)]
    )
    think, act = fake.calls
    assert think.tools is None
    assert think.messages[0]["role"] == "system"
    assert "Thought 1" in think.messages[0]["content"]
    assert "# Current observation\nstep 0" in think.messages[1]["content"]
    assert "- move: Move one cell." in think.messages[1]["content"]
    assert DEFAULT_STEP_PROMPT in think.messages[1]["content"]
    assert [t["function"]["name"] for t in act.tools or ()] == ["wait", "move"]
    assert act.request.tool_choice == "required"
    assert act.messages[-2] == {"role": "assistant", "content": plan.thoughts}
    assert plan.thoughts == "Thought 1: nobody is near.\nAction: wait two turns"


def test_react_asks_for_structured_output() -> None:
    plan, _, fake, _ = plan_both_ways(
        ReActReasoning, [first_reply(ReActReasoning), FakeLLM.tool_call("wait")]
    )
    schema = fake.calls[0].request.response_format["json_schema"]["schema"]
    assert schema["required"] == ["reasoning", "action"]
    assert plan.thoughts == "Nobody is near.\nAction: wait two turns"
    assert plan.actions[0].arguments == {}


def test_persona_and_step_prompt_reach_the_llm() -> None:
    fake = FakeLLM(side_effect=[first_reply(CoTReasoning), FakeLLM.tool_call("wait")])
    with fake.activate():
        agent = make_agent(
            CoTReasoning, system_prompt="You are a shepherd.", step_prompt="Guard the flock."
        )
        agent.reasoning.plan()
    system, user = fake.calls[0].messages
    assert system["content"].startswith("You are a shepherd.\n\n")
    assert user["content"].endswith("# Task\nGuard the flock.")


def test_an_agent_without_tools_makes_one_call_and_no_actions() -> None:
    fake = FakeLLM(side_effect=[first_reply(CoTReasoning)])
    with fake.activate():
        plan = make_agent(CoTReasoning, tools=()).reasoning.plan(prompt="Think.", ttl=3)
    assert fake.call_count == 1
    assert plan.actions == []
    assert plan.ttl == 3


def test_memory_of_earlier_steps_goes_into_the_prompt() -> None:
    fake = FakeLLM(
        side_effect=[
            first_reply(CoTReasoning),
            FakeLLM.tool_call("wait", turns=2),
            FakeLLM.text("Thought 1: still quiet.\nAction: move east"),
            FakeLLM.tool_call("move", direction="east"),
        ]
    )
    with fake.activate():
        agent = make_agent(CoTReasoning)
        agent.step()
        agent.model.step()
        agent.step()
    # One entry per step (the default STLTMemory): its observation, plan and action.
    entries = list(agent.memory.short_term_memory)
    assert [entry.step for entry in entries] == [0, 1]
    assert all({"observation", "plan", "action"} <= set(entry.content) for entry in entries)
    assert "move east" in str(entries[-1].content["plan"])
    second_prompt = fake.calls[2].messages[1]["content"]
    earlier = second_prompt[second_prompt.index("Step 0:") :]
    assert "Thought 1: nobody is near." in earlier
    assert "'name': 'wait', 'response': '2'" in earlier


def test_rewoo_spends_queued_calls_without_asking_the_llm() -> None:
    fake = FakeLLM(
        side_effect=[
            FakeLLM.text("1. wait\n2. move north\n3. wait"),
            FakeLLM.tool_calls(("wait", {}), ("move", {"direction": "north"}), ("wait", {})),
            FakeLLM.text("1. move south"),
            FakeLLM.tool_call("move", direction="south"),
        ]
    )
    with fake.activate():
        agent = make_agent(ReWOOReasoning)
        plans = [agent.reasoning.plan()]
        plans.append(asyncio.run(agent.reasoning.aplan()))
        plans.append(agent.reasoning.plan())
        assert fake.call_count == 2
        plans.append(agent.reasoning.plan())
    assert fake.call_count == 4
    assert [str(action) for plan in plans for action in plan.actions] == [
        "wait()",
        "move(direction='north')",
        "wait()",
        "move(direction='south')",
    ]
    assert [plan.ttl for plan in plans] == [3, 2, 1, 1]


def test_explicit_observation_is_used_as_given() -> None:
    fake = FakeLLM(side_effect=[first_reply(CoTReasoning), FakeLLM.tool_call("wait")])
    obs = Observation(step=42, self_state={"mood": "brave"}, local_state={})
    with fake.activate():
        plan = make_agent(CoTReasoning).reasoning.plan(obs=obs)
    assert plan.step == 42
    assert '"mood": "brave"' in fake.calls[0].messages[1]["content"]


# -- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize("driver", ["plan", "aplan"])
def test_react_reply_that_is_not_json_is_malformed(driver: str) -> None:
    raw = '{"reasoning": "cut sho'
    fake = FakeLLM(side_effect=[FakeLLM.text(raw)])
    with fake.activate():
        agent = make_agent(ReActReasoning)
        agent.model.step()
        with pytest.raises(MalformedResponseError, match="not valid JSON") as info:
            call = getattr(agent.reasoning, driver)()
            if driver == "aplan":
                asyncio.run(call)
    assert info.value.raw == raw
    assert info.value.agent_id == agent.unique_id
    assert info.value.step == 1
    assert agent.memory.plans == []  # a failed plan leaves no plan (the observation stays)


def test_react_reply_missing_a_field_is_malformed() -> None:
    raw = json.dumps({"reasoning": "hmm"})
    fake = FakeLLM(side_effect=[FakeLLM.text(raw)])
    with fake.activate(), pytest.raises(MalformedResponseError, match="'action'") as info:
        make_agent(ReActReasoning).reasoning.plan()
    assert info.value.raw == raw


@pytest.mark.parametrize("reasoning", STRATEGIES)
def test_bad_tool_arguments_are_malformed_with_the_raw_text(reasoning: type[Reasoning]) -> None:
    fake = FakeLLM(
        side_effect=[
            first_reply(reasoning),
            FakeLLM.tool_call("move", direction="up"),
        ]
    )
    with fake.activate(), pytest.raises(ToolArgumentsError, match="'direction' must be") as info:
        make_agent(reasoning).reasoning.plan()
    assert info.value.raw == '{"direction": "up"}'
    assert isinstance(info.value, MalformedResponseError)


def test_truncated_tool_arguments_are_malformed_with_the_raw_text() -> None:
    from mesa_llm_testing._responses import FakeReply, FakeToolCall

    truncated = FakeReply(None, (FakeToolCall("wait", '{"turns": 2', "call_1"),))
    fake = FakeLLM(side_effect=[first_reply(CoTReasoning), truncated])
    with fake.activate(), pytest.raises(ToolArgumentsError, match="not valid JSON") as info:
        asyncio.run(make_agent(CoTReasoning).reasoning.aplan())
    assert info.value.raw == '{"turns": 2'


@pytest.mark.parametrize("reasoning", STRATEGIES)
@pytest.mark.parametrize("at_call", [0, 1])
def test_empty_reply(reasoning: type[Reasoning], at_call: int) -> None:
    replies = [first_reply(reasoning), FakeLLM.text("")]
    replies[at_call] = FakeLLM.text("")
    fake = FakeLLM(side_effect=replies)
    with fake.activate(), pytest.raises(EmptyResponseError) as info:
        make_agent(reasoning).reasoning.plan()
    assert info.value.raw == ""


def test_call_to_an_unknown_tool() -> None:
    fake = FakeLLM(side_effect=[first_reply(CoTReasoning), FakeLLM.tool_call("fly", to="moon")])
    with (
        fake.activate(),
        pytest.raises(UnknownToolError, match="'fly'; registered tools: move, wait"),
    ):
        make_agent(CoTReasoning).reasoning.plan()


def test_react_accepts_json_in_a_code_fence() -> None:
    fenced = '```json\n{"reasoning": "calm", "action": "wait"}\n```'
    fake = FakeLLM(side_effect=[FakeLLM.text(fenced), FakeLLM.tool_call("wait")])
    with fake.activate():
        plan = make_agent(ReActReasoning).reasoning.plan()
    assert plan.thoughts == "calm\nAction: wait"
