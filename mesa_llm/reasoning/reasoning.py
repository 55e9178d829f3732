"""The reasoning base: an ``Observation`` becomes a ``Plan`` of tool calls through the LLM.

Each strategy is written once, as a generator that yields the ``LLMRequest``s it
needs and receives each reply (litellm ``ModelResponse``), and returns the
``Plan``. ``Reasoning.plan`` drives that generator with ``llm.generate`` and
``Reasoning.aplan`` with ``await llm.agenerate``, so prompt building and
parsing are shared by the sync and async paths, and the same replies give the
same ``Plan`` on both.

mesa-llm 0.3's spelling works too: ``plan(prompt, obs, ttl, selected_tools,
tool_calls)``, a subclass implementing only ``plan`` (``aplan`` then runs it in a
worker thread), ``execute_tool_call``/``aexecute_tool_call``. This module is that
release's ``mesa_llm.reasoning.reasoning``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Generator
from contextlib import closing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

from mesa_llm import _memory_protocol as memory_protocol
from mesa_llm._types import Observation, Plan
from mesa_llm.errors import EmptyResponseError, MalformedResponseError
from mesa_llm.tools.tool_decorator import ToolCall

if TYPE_CHECKING:
    from mesa import Model

    from mesa_llm.module_llm import ModuleLLM
    from mesa_llm.tools import ToolManager

__all__ = [
    "DEFAULT_STEP_PROMPT",
    "LLMRequest",
    "Observation",
    "Plan",
    "PlanRequests",
    "Reasoning",
]

DEFAULT_STEP_PROMPT = "Decide what to do in this step of the simulation."

_AGENT_ROLE = "You are an autonomous agent in an agent-based simulation."
_EXECUTOR = (
    "You are an executor that executes the plan given to you in the prompt through tool "
    "calls. If the plan concludes that no action should be taken, do not call any tool."
)
# ``tool_calls`` not given: ours' strategies require a tool call when the agent has tools.
_DEFAULT_TOOL_CHOICE = "required"


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
    def memory(self) -> Any: ...
    @property
    def tool_manager(self) -> ToolManager: ...
    @property
    def system_prompt(self) -> str | None: ...
    @property
    def step_prompt(self) -> str | None: ...
    def generate_obs(self) -> Observation: ...


class Reasoning:
    """Base of reasoning strategies; a subclass writes ``plan_requests`` once for both paths.

    A subclass may instead override ``plan`` (and optionally ``aplan``), as
    mesa-llm 0.3 strategies do.
    """

    def __init__(self, agent: ReasoningAgent) -> None:
        self.agent = agent
        self._selected_tools: list[str] | None = None
        self._tool_choice: str | None = _DEFAULT_TOOL_CHOICE
        self._last_message: Any = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(agent={self.agent.unique_id})"

    def plan(
        self,
        prompt: str | None = None,
        obs: Observation | None = None,
        ttl: int = 1,
        selected_tools: list[str] | None = None,
        tool_calls: str | None = _DEFAULT_TOOL_CHOICE,
    ) -> Plan:
        """Plan the agent's next actions (blocking LLM calls).

        ``prompt`` defaults to the agent's ``step_prompt``, ``obs`` to a fresh
        ``agent.generate_obs()``. ``selected_tools`` names the tools offered (None:
        all; unknown names raise ``ValueError``); ``tool_calls`` is the tool choice
        of the acting call (``"auto"``, ``"required"``, ``"none"``). Raises
        ``MalformedResponseError`` (or its subclasses ``EmptyResponseError``,
        ``ToolArgumentsError``) for replies that cannot be turned into a plan,
        ``UnknownToolError`` for calls to unregistered tools; LLM call failures
        propagate from ``ModuleLLM``.
        """
        self._select(selected_tools, tool_calls)
        return _drive(self.plan_requests(prompt, obs, ttl), self.agent.llm)

    async def aplan(
        self,
        prompt: str | None = None,
        obs: Observation | None = None,
        ttl: int = 1,
        selected_tools: list[str] | None = None,
        tool_calls: str | None = _DEFAULT_TOOL_CHOICE,
    ) -> Plan:
        """Async ``plan``: the same requests and parsing, with ``await llm.agenerate``.

        A subclass that overrides only ``plan`` has it run in a worker thread.
        """
        if _only_plan(type(self)):
            return await asyncio.to_thread(self.plan, prompt, obs, ttl, selected_tools, tool_calls)
        self._select(selected_tools, tool_calls)
        return await _adrive(self.plan_requests(prompt, obs, ttl), self.agent.llm)

    def plan_requests(self, prompt: str | None, obs: Observation | None, ttl: int) -> PlanRequests:
        """Yield the LLM requests this strategy needs, receive each reply, return the ``Plan``."""
        raise NotImplementedError(
            f"mesa_llm: {type(self).__name__} must implement plan_requests() or plan()"
        )

    def execute_tool_call(
        self,
        chaining_message: str,
        selected_tools: list[str] | None = None,
        ttl: int = 1,
        tool_calls: str | None = "auto",
    ) -> Plan:
        """Ask the LLM for the tool calls enacting ``chaining_message`` (a plan in words).

        Returns ``Plan(llm_plan=<the reply message>)``; ``apply_plan`` runs its calls.
        """
        self._select(selected_tools, tool_calls)
        return _drive(self._execution_requests(chaining_message, ttl), self.agent.llm)

    async def aexecute_tool_call(
        self,
        chaining_message: str,
        selected_tools: list[str] | None = None,
        ttl: int = 1,
        tool_calls: str | None = "auto",
    ) -> Plan:
        """Async ``execute_tool_call``."""
        self._select(selected_tools, tool_calls)
        return await _adrive(self._execution_requests(chaining_message, ttl), self.agent.llm)

    def _execution_requests(self, chaining_message: str, ttl: int) -> PlanRequests:
        messages = [
            {"role": "system", "content": _EXECUTOR},
            {"role": "user", "content": str(chaining_message)},
        ]
        tools = self._schemas()
        request = LLMRequest(messages, tools=tools, tool_choice=self._tool_choice or "auto")
        message = self._message((yield request))
        plan = Plan(self.agent.model.steps, ttl=ttl, llm_plan=message)
        memory_protocol.remember(self.agent.memory, "plan_execution", {"content": str(plan)})
        return plan

    def _select(self, selected_tools: list[str] | None, tool_calls: str | None) -> None:
        if selected_tools is not None:
            self.agent.tool_manager.get_all_tools_schema(selected_tools)  # unknown names raise
        self._selected_tools = None if selected_tools is None else list(selected_tools)
        self._tool_choice = tool_calls

    def _schemas(self) -> list[dict[str, Any]]:
        return self.agent.tool_manager.get_all_tools_schema(self._selected_tools)

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
        remembered = memory_protocol.prompt_text(self.agent.memory)
        sections = [
            f"# Recent memory\n{remembered or '(nothing yet)'}",
            f"# Current observation\n{obs}",
        ]
        menu = [
            f"- {schema['function']['name']}: {schema['function'].get('description', '')}"
            for schema in self._schemas()
        ]
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
        tools = self._schemas()
        if not tools or self._tool_choice == "none":
            return []
        follow_up = [
            *messages,
            {"role": "assistant", "content": reply},
            {"role": "user", "content": instruction},
        ]
        reply = yield LLMRequest(follow_up, tools=tools, tool_choice=self._tool_choice or "auto")
        self._last_message = self._message(reply)
        return self._tool_calls(reply)

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

    def _finish(
        self, obs: Observation | None, plan: Plan, content: dict[str, Any] | None = None
    ) -> Plan:
        """Record the plan in the agent's memory and return it (``generate_obs`` records obs)."""
        if plan.llm_plan is None:
            plan.llm_plan = getattr(self, "_last_message", None)
            self._last_message = None
        memory_protocol.remember_plan(self.agent.memory, plan, content)
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


def _only_plan(cls: type[Reasoning]) -> bool:
    """Whether ``cls`` overrides ``plan`` but neither ``aplan`` nor ``plan_requests``."""
    return (
        cls.plan is not Reasoning.plan
        and cls.aplan is Reasoning.aplan
        and cls.plan_requests is Reasoning.plan_requests
    )


def _strip_code_fence(text: str) -> str:
    """Models often wrap JSON in a ```json fence even when asked not to."""
    if text.startswith("```") and text.endswith("```"):
        return text.split("\n", 1)[1].rsplit("```", 1)[0] if "\n" in text else text.strip("`")
    return text
