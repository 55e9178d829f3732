"""ReAct reasoning (mesa-llm 0.3's ``mesa_llm.reasoning.react``, with ``ReActOutput``)."""

from __future__ import annotations

from typing import Any

from mesa_llm._types import Observation, Plan
from mesa_llm.reasoning.cot import _ACT_NOW
from mesa_llm.reasoning.reasoning import _AGENT_ROLE, LLMRequest, PlanRequests, Reasoning

__all__ = ["ReActOutput", "ReActReasoning"]  # noqa: F822  (ReActOutput: module __getattr__)

_REACT_INSTRUCTIONS = f"""{_AGENT_ROLE}
Reason about your situation using your recent memory and your current observation, then decide
on one action. Reply with a JSON object {{"reasoning": "...", "action": "..."}}, describing the
action in words; do not call any tool yet."""
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
        return self._finish(obs, Plan(obs.step, thoughts, actions, ttl), dict(decision))


def __getattr__(name: str) -> Any:
    # ReActOutput is a pydantic model: built on first use, so importing this module stays cheap.
    if name != "ReActOutput":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from pydantic import BaseModel, Field

    class ReActOutput(BaseModel):
        """The release's ReAct reply: reasoning about the situation and the action in words."""

        reasoning: str = Field(description="Step-by-step reasoning about the situation")
        action: str = Field(description="The specific action to take without using tools")

    globals()["ReActOutput"] = ReActOutput
    return ReActOutput
