"""The @tool decorator's schemas and the ToolManager's parsing and execution."""

from __future__ import annotations

import asyncio
import json
from typing import Literal, Optional

import pytest
from mesa import Agent, Model

from mesa_llm.errors import MalformedResponseError, ToolArgumentsError, UnknownToolError
from mesa_llm.tools import Tool, ToolCall, ToolManager, tool


@tool
def move(agent: Agent, direction: Literal["north", "south"], steps: int = 1) -> str:
    """Move the agent on the grid.

    Longer explanation that is not part of the description.

    Args:
        direction: Where to go.
        steps: How many cells to move,
            at most three.

    Returns:
        Where the agent ended up.
    """
    agent.moves = [*getattr(agent, "moves", []), (direction, steps)]  # type: ignore[attr-defined]
    return f"{agent.unique_id} moved {direction} x{steps}"


@tool(name="say", description="Say something to a neighbour.")
async def speak(agent: Agent, text: str, volume: float = 1.0) -> str:
    """Ignored because description= wins."""
    await asyncio.sleep(0)
    return f"{agent.unique_id} says {text} at {volume}"


@tool
def survey(
    position: tuple[int, int],
    tags: list[str],
    note: Optional[str] = None,  # noqa: UP045 - Optional is part of what @tool must read
    radius: float | None = None,
    urgent: bool = False,
    extra: dict | None = None,
) -> tuple[tuple[int, int], list[str], str | None, float | None, bool]:
    """Survey a position (no agent parameter)."""
    return position, tags, note, radius, urgent


@pytest.fixture
def agent() -> Agent:
    return Agent(Model(seed=1))


def call(name: str, **arguments: object) -> ToolCall:
    return ToolCall(name, arguments, "call_1")


def test_schema_from_signature_and_docstring() -> None:
    assert move.schema == {
        "type": "function",
        "function": {
            "name": "move",
            "description": "Move the agent on the grid.",
            "parameters": {
                "type": "object",
                "properties": {
                    "direction": {
                        "enum": ["north", "south"],
                        "type": "string",
                        "description": "Where to go.",
                    },
                    "steps": {
                        "type": "integer",
                        "description": "How many cells to move, at most three.",
                    },
                },
                "required": ["direction"],
            },
        },
    }


def test_schema_types_and_overrides() -> None:
    properties = survey.parameters["properties"]
    assert properties["position"] == {
        "type": "array",
        "items": {"type": "integer"},
        "minItems": 2,
        "maxItems": 2,
    }
    assert properties["tags"] == {"type": "array", "items": {"type": "string"}}
    assert properties["note"] == {"anyOf": [{"type": "string"}, {"type": "null"}]}
    assert properties["radius"] == {"anyOf": [{"type": "number"}, {"type": "null"}]}
    assert properties["urgent"] == {"type": "boolean"}
    assert survey.parameters["required"] == ["position", "tags"]
    assert not survey.takes_agent
    assert speak.schema["function"]["name"] == "say"
    assert speak.schema["function"]["description"] == "Say something to a neighbour."
    assert "agent" not in speak.parameters["properties"]


def test_decorated_tool_is_still_callable(agent: Agent) -> None:
    assert isinstance(move, Tool)
    assert move(agent, "north") == f"{agent.unique_id} moved north x1"
    assert move.__doc__ is not None and move.__doc__.startswith("Move the agent")


def test_unsupported_parameter_type_is_rejected_at_decoration() -> None:
    with pytest.raises(TypeError, match=r"parameter 'when'.*use str, int"):

        @tool
        def schedule(when: complex) -> None:
            """Schedule."""

    with pytest.raises(TypeError, match=r"'Undefined', which is not defined at run time"):

        @tool
        def vote(agent: Agent, choice: Undefined) -> None:  # type: ignore[name-defined]  # noqa: F821
            """Vote."""

    with pytest.raises(TypeError, match="named parameters only"):

        @tool
        def anything(*values: int) -> None:
            """Anything."""


def test_manager_defaults_and_per_agent_tools() -> None:
    ToolManager.register_default(survey)
    try:
        with_defaults = ToolManager([move])
        without = ToolManager([move], include_defaults=False)
    finally:
        ToolManager.unregister_default("survey")
    assert with_defaults.names == ["survey", "move"]
    assert without.names == ["move"]
    assert "survey" not in ToolManager([])  # ToolManager() is the release form (global tools)
    assert [schema["function"]["name"] for schema in with_defaults.schemas()] == [
        "survey",
        "move",
    ]


def test_execute_injects_the_calling_agent(agent: Agent) -> None:
    manager = ToolManager([move, speak, survey])
    assert manager.execute(agent, call("move", direction="south", steps=2)) == (
        f"{agent.unique_id} moved south x2"
    )
    assert agent.moves == [("south", 2)]  # type: ignore[attr-defined]
    assert manager.execute(agent, call("survey", position=[1, 2], tags=["a"], radius=2)) == (
        (1, 2),
        ["a"],
        None,
        2.0,
        False,
    )


def test_execute_runs_async_tools_from_sync_code(agent: Agent) -> None:
    manager = ToolManager([speak])
    assert manager.execute(agent, call("say", text="hi")) == f"{agent.unique_id} says hi at 1.0"


async def test_execute_runs_async_tools_inside_a_running_loop(agent: Agent) -> None:
    manager = ToolManager([speak])
    assert manager.execute(agent, call("say", text="hi")) == f"{agent.unique_id} says hi at 1.0"


async def test_aexecute_runs_sync_and_async_tools(agent: Agent) -> None:
    manager = ToolManager([move, speak])
    assert await manager.aexecute(agent, call("say", text="yo", volume=2)) == (
        f"{agent.unique_id} says yo at 2.0"
    )
    assert await manager.aexecute(agent, call("move", direction="north")) == (
        f"{agent.unique_id} moved north x1"
    )


def test_unknown_tool(agent: Agent) -> None:
    manager = ToolManager([move])
    with pytest.raises(UnknownToolError, match=r"unknown tool 'fly'; registered tools: move"):
        manager.execute(agent, call("fly"))
    with pytest.raises(UnknownToolError):
        manager.parse([{"id": "c", "function": {"name": "fly", "arguments": "{}"}}])


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ({}, "missing 'direction'"),
        ({"direction": "north", "speed": 3}, "unexpected 'speed'"),
        ({"direction": "east"}, "'direction' must be one of 'north', 'south', got 'east'"),
        ({"direction": "north", "steps": "2"}, "'steps' must be int, got '2'"),
        ({"direction": "north", "steps": True}, "'steps' must be int"),
    ],
)
def test_arguments_not_matching_the_signature(
    agent: Agent, arguments: dict[str, object], problem: str
) -> None:
    manager = ToolManager([move])
    with pytest.raises(ToolArgumentsError, match=problem) as info:
        manager.execute(agent, ToolCall("move", arguments))
    assert info.value.raw == json.dumps(arguments)
    assert info.value.agent_id == agent.unique_id
    assert info.value.step == agent.model.steps


@pytest.mark.parametrize("raw", ['{"direction": "north"', "[1, 2]", "not json"])
def test_parse_rejects_arguments_that_are_not_a_json_object(agent: Agent, raw: str) -> None:
    manager = ToolManager([move])
    raw_call = {"id": "c1", "function": {"name": "move", "arguments": raw}}
    with pytest.raises(ToolArgumentsError) as info:
        manager.parse([raw_call], agent=agent)
    assert isinstance(info.value, MalformedResponseError)
    assert info.value.raw == raw
    assert info.value.agent_id == agent.unique_id


def test_parse_accepts_litellm_tool_calls(agent: Agent) -> None:
    from mesa_llm._litellm import import_litellm

    litellm = import_litellm()
    response = litellm.ModelResponse(
        choices=[
            {
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_9",
                            "type": "function",
                            "function": {"name": "move", "arguments": '{"direction": "south"}'},
                        }
                    ],
                }
            }
        ]
    )
    manager = ToolManager([move])
    calls = manager.parse(response.choices[0].message.tool_calls, agent=agent)
    assert calls == [ToolCall("move", {"direction": "south"}, "call_9")]
    assert str(calls[0]) == "move(direction='south')"
