"""Reasoning as planning: an ``Observation`` becomes a ``Plan`` of tool calls through the LLM.

Each strategy is written once, as a generator that yields the ``LLMRequest``s it
needs and receives each reply (litellm ``ModelResponse``), and returns the
``Plan``. ``Reasoning.plan`` drives that generator with ``llm.generate`` and
``Reasoning.aplan`` with ``await llm.agenerate``, so prompt building and
parsing are shared by the sync and async paths, and the same replies give the
same ``Plan`` on both.
"""

from __future__ import annotations

import abc
import json
from collections import deque
from collections.abc import Generator
from contextlib import closing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

from mesa_llm._types import Observation, Plan
from mesa_llm.errors import EmptyResponseError, MalformedResponseError
from mesa_llm.tools import ToolCall

if TYPE_CHECKING:
    from mesa import Model

    from mesa_llm.memory import ShortTermMemory
    from mesa_llm.module_llm import ModuleLLM
    from mesa_llm.tools import ToolManager

__all__ = [
    "DEFAULT_STEP_PROMPT",
    "CoTReasoning",
    "LLMRequest",
    "Observation",
    "Plan",
    "PlanRequests",
    "ReActReasoning",
    "ReWOOReasoning",
    "Reasoning",
]

DEFAULT_STEP_PROMPT = "Decide what to do in this step of the simulation."

_AGENT_ROLE = "You are an autonomous agent in an agent-based simulation."
_COT_INSTRUCTIONS = f"""{_AGENT_ROLE}
Think step by step (chain of thought) about what to do next, using your recent memory and your
current observation. Answer in this format:
Thought 1: <what the observation tells you>
Thought 2: <how your memory informs the situation>
Thought 3: <alternatives and risks>
Thought 4: <your decision and why>
Action: <the action you will take, in words>"""
_REACT_INSTRUCTIONS = f"""{_AGENT_ROLE}
Reason about your situation using your recent memory and your current observation, then decide
on one action. Reply with a JSON object {{"reasoning": "...", "action": "..."}}, describing the
action in words; do not call any tool yet."""
_REWOO_INSTRUCTIONS = f"""{_AGENT_ROLE}
Plan several simulation steps ahead without waiting for new observations (ReWOO). Write your
overall strategy, then numbered steps (1 to 5), one action per simulation step, then what to do if
things do not go as expected."""
_ACT_NOW = "Now carry out the action you decided on by calling the tools."
_ACT_ALL_STEPS = "Now call the tools for every step of your plan, in order, one call per step."
_REACT_FORMAT: dict[str, Any] = {
    "type": "json_schema",
    "json_schema": {
        "name": "react_decision",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {"reasoning": {"type": "string"}, "action": {"type": "string"}},
            "required": ["reasoning", "action"],
            "additionalProperties": False,
        },
    },
}


@dataclass(frozen=True)
class LLMRequest:
    """One LLM call a reasoning strategy asks for (keyword arguments of ``ModuleLLM.generate``)."""

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | None = None
    response_format: dict[str, Any] | None = None

    def to_kwargs(self) -> dict[str, Any]:
        """The arguments to pass to ``generate``/``agenerate``, leaving out the unset ones."""
        kwargs: dict[str, Any] = {"messages": self.messages}
        if self.tools:
            kwargs["tools"] = self.tools
            kwargs["tool_choice"] = self.tool_choice or "auto"
        if self.response_format is not None:
            kwargs["response_format"] = self.response_format
        return kwargs


# Yields requests, receives litellm ModelResponses, returns the Plan.
PlanRequests: TypeAlias = Generator[LLMRequest, Any, Plan]


class ReasoningAgent(Protocol):
    """What a reasoning strategy uses of its agent; ``LLMAgent`` provides it.

    Typed as a protocol so this module need not import ``llm_agent`` (which imports
    this one): the library's layers point one way.
    """

    @property
    def unique_id(self) -> int: ...
    @property
    def model(self) -> Model: ...
    @property
    def llm(self) -> ModuleLLM: ...
    @property
    def memory(self) -> ShortTermMemory: ...
    @property
    def tool_manager(self) -> ToolManager: ...
    @property
    def system_prompt(self) -> str | None: ...
    @property
    def step_prompt(self) -> str | None: ...
    def generate_obs(self) -> Observation: ...


class Reasoning(abc.ABC):
    """Base of reasoning strategies; a subclass writes ``plan_requests`` once for both paths."""

    def __init__(self, agent: ReasoningAgent) -> None:
        self.agent = agent

    def __repr__(self) -> str:
        return f"{type(self).__name__}(agent={self.agent.unique_id})"

    def plan(self, prompt: str | None = None, obs: Observation | None = None, ttl: int = 1) -> Plan:
        """Plan the agent's next actions (blocking LLM calls).

        ``prompt`` defaults to the agent's ``step_prompt``, ``obs`` to a fresh
        ``agent.generate_obs()``. Raises ``MalformedResponseError`` (or its
        subclasses ``EmptyResponseError``, ``ToolArgumentsError``) for replies
        that cannot be turned into a plan, ``UnknownToolError`` for calls to
        unregistered tools; LLM call failures propagate from ``ModuleLLM``.
        """
        return _drive(self.plan_requests(prompt, obs, ttl), self.agent.llm)

    async def aplan(
        self, prompt: str | None = None, obs: Observation | None = None, ttl: int = 1
    ) -> Plan:
        """Async ``plan``: the same requests and parsing, with ``await llm.agenerate``."""
        return await _adrive(self.plan_requests(prompt, obs, ttl), self.agent.llm)

    @abc.abstractmethod
    def plan_requests(self, prompt: str | None, obs: Observation | None, ttl: int) -> PlanRequests:
        """Yield the LLM requests this strategy needs, receive each reply, return the ``Plan``."""

    # -- shared building blocks ---------------------------------------------------------

    def _begin(self, prompt: str | None, obs: Observation | None) -> tuple[str, Observation]:
        if prompt is None:
            prompt = self.agent.step_prompt or DEFAULT_STEP_PROMPT
        if obs is None:
            obs = self.agent.generate_obs()
        return prompt, obs

    def _conversation(
        self, instructions: str, prompt: str, obs: Observation
    ) -> list[dict[str, Any]]:
        """Persona and instructions, then one user message with memory, observation, tools, task.

        The system message replaces ``ModuleLLM``'s, so the persona is included here.
        """
        sections = [
            f"# Recent memory\n{self.agent.memory.render() or '(nothing yet)'}",
            f"# Current observation\n{obs}",
        ]
        menu = [f"- {tool.name}: {tool.description}" for tool in self.agent.tool_manager]
        if menu:
            sections.append("# Actions you can take\n" + "\n".join(menu))
        sections.append(f"# Task\n{prompt}")
        persona = self.agent.system_prompt
        return [
            {
                "role": "system",
                "content": f"{persona}\n\n{instructions}" if persona else instructions,
            },
            {"role": "user", "content": "\n\n".join(sections)},
        ]

    def _acting(
        self, messages: list[dict[str, Any]], reply: str, instruction: str
    ) -> Generator[LLMRequest, Any, list[ToolCall]]:
        """Ask for the tool calls enacting ``reply``; none (no call) if the agent has no tools."""
        tools = self.agent.tool_manager.schemas()
        if not tools:
            return []
        follow_up = [
            *messages,
            {"role": "assistant", "content": reply},
            {"role": "user", "content": instruction},
        ]
        return self._tool_calls((yield LLMRequest(follow_up, tools=tools, tool_choice="required")))

    def _thinking_then_acting(
        self, instructions: str, act_instruction: str, prompt: str, obs: Observation
    ) -> Generator[LLMRequest, Any, tuple[str, list[ToolCall]]]:
        """A free-text reasoning call, then the tool calls enacting it: (thoughts, actions)."""
        messages = self._conversation(instructions, prompt, obs)
        thoughts = self._text((yield LLMRequest(messages)))
        actions = yield from self._acting(messages, thoughts, act_instruction)
        return thoughts, actions

    def _message(self, response: Any) -> Any:
        choices = getattr(response, "choices", None)
        if not choices:
            raise self._error(EmptyResponseError, "the LLM returned no choices", "")
        return choices[0].message

    def _text(self, response: Any) -> str:
        """The reply's text; ``EmptyResponseError`` if there is none."""
        content = self._message(response).content
        if not content or not content.strip():
            raise self._error(EmptyResponseError, "the LLM returned an empty reply", content or "")
        return str(content).strip()

    def _tool_calls(self, response: Any) -> list[ToolCall]:
        """The reply's tool calls, checked against the agent's tools."""
        message = self._message(response)
        if not message.tool_calls and not (message.content or "").strip():
            raise self._error(
                EmptyResponseError, "the LLM returned neither text nor tool calls", ""
            )
        return self.agent.tool_manager.parse(message.tool_calls, agent=self.agent)

    def _json_fields(self, response: Any, names: tuple[str, ...]) -> tuple[str, dict[str, str]]:
        """The reply's raw text and its JSON object, which must have string ``names``."""
        text = self._text(response)
        raw = str(self._message(response).content)  # as sent, whitespace included
        try:
            data = json.loads(_strip_code_fence(text))
        except ValueError as exc:
            raise self._error(
                MalformedResponseError, f"the reply is not valid JSON ({exc})", raw
            ) from exc
        if not isinstance(data, dict):
            raise self._error(MalformedResponseError, "the reply is not a JSON object", raw)
        bad = [name for name in names if not isinstance(data.get(name), str)]
        if bad:
            raise self._error(
                MalformedResponseError,
                f"the reply's JSON lacks string field(s) {', '.join(map(repr, bad))}",
                raw,
            )
        return raw, {name: data[name] for name in names}

    def _finish(self, obs: Observation | None, plan: Plan) -> Plan:
        """Record the observation and plan in the agent's memory and return the plan."""
        if obs is not None:
            self.agent.memory.add_observation(obs)
        self.agent.memory.add_plan(plan)
        return plan

    def _error(
        self, kind: type[MalformedResponseError], message: str, raw: str
    ) -> MalformedResponseError:
        return kind(
            f"{type(self).__name__}: {message}",
            raw=raw,
            agent_id=self.agent.unique_id,
            step=self.agent.model.steps,
        )


class CoTReasoning(Reasoning):
    """Chain of thought: one call to think step by step, one to turn the decision into calls."""

    def plan_requests(self, prompt: str | None, obs: Observation | None, ttl: int) -> PlanRequests:
        """Think (numbered thoughts ending in an action), then act through the tools."""
        prompt, obs = self._begin(prompt, obs)
        thoughts, actions = yield from self._thinking_then_acting(
            _COT_INSTRUCTIONS, _ACT_NOW, prompt, obs
        )
        return self._finish(obs, Plan(obs.step, thoughts, actions, ttl))


class ReActReasoning(Reasoning):
    """ReAct: a JSON reasoning-and-action decision, then the tool calls that enact it."""

    def plan_requests(self, prompt: str | None, obs: Observation | None, ttl: int) -> PlanRequests:
        """Ask for ``{"reasoning", "action"}`` as JSON, then for the tool calls enacting it."""
        prompt, obs = self._begin(prompt, obs)
        messages = self._conversation(_REACT_INSTRUCTIONS, prompt, obs)
        reply = yield LLMRequest(messages, response_format=_REACT_FORMAT)
        raw, decision = self._json_fields(reply, ("reasoning", "action"))
        thoughts = f"{decision['reasoning']}\nAction: {decision['action']}"
        actions = yield from self._acting(messages, raw, _ACT_NOW)
        return self._finish(obs, Plan(obs.step, thoughts, actions, ttl))


class ReWOOReasoning(Reasoning):
    """ReWOO: plan several steps at once, then spend one queued tool call per step with no LLM call.

    A fresh plan's ``ttl`` is the number of steps its tool calls cover; each
    later plan carries the next queued call and the steps left. When the queue
    is empty the next ``plan`` observes and plans again.
    """

    def __init__(self, agent: ReasoningAgent) -> None:
        super().__init__(agent)
        self._thoughts = ""
        self._queued: deque[ToolCall] = deque()

    @property
    def queued_actions(self) -> list[ToolCall]:
        """Tool calls planned for the coming steps."""
        return list(self._queued)

    def plan_requests(self, prompt: str | None, obs: Observation | None, ttl: int) -> PlanRequests:
        """Use the next queued call if any; else write a multi-step plan and queue its calls."""
        if self._queued:
            step = obs.step if obs is not None else self.agent.model.steps
            remaining = len(self._queued)
            action = self._queued.popleft()
            return self._finish(obs, Plan(step, self._thoughts, [action], remaining))
        prompt, obs = self._begin(prompt, obs)
        thoughts, actions = yield from self._thinking_then_acting(
            _REWOO_INSTRUCTIONS, _ACT_ALL_STEPS, prompt, obs
        )
        # Only now, with every reply parsed, does the reasoning's state change.
        self._thoughts = thoughts
        self._queued = deque(actions[1:])
        return self._finish(obs, Plan(obs.step, thoughts, actions[:1], len(actions) or ttl))


def _drive(requests: PlanRequests, llm: ModuleLLM) -> Plan:
    with closing(requests):
        reply: Any = None
        while True:
            try:
                request = requests.send(reply)
            except StopIteration as done:
                return done.value
            reply = llm.generate(**request.to_kwargs())


async def _adrive(requests: PlanRequests, llm: ModuleLLM) -> Plan:
    with closing(requests):
        reply: Any = None
        while True:
            try:
                request = requests.send(reply)
            except StopIteration as done:
                return done.value
            reply = await llm.agenerate(**request.to_kwargs())


def _strip_code_fence(text: str) -> str:
    """Models often wrap JSON in a ```json fence even when asked not to."""
    if text.startswith("```") and text.endswith("```"):
        return text.split("\n", 1)[1].rsplit("```", 1)[0] if "\n" in text else text.strip("`")
    return text
