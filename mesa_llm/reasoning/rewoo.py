"""ReWOO reasoning (mesa-llm 0.3's ``mesa_llm.reasoning.rewoo``): plan ahead, one call per step."""

from __future__ import annotations

from collections import deque

from mesa_llm._types import Observation, Plan
from mesa_llm.reasoning.reasoning import _AGENT_ROLE, PlanRequests, Reasoning, ReasoningAgent
from mesa_llm.tools.tool_decorator import ToolCall

__all__ = ["ReWOOReasoning"]

_REWOO_INSTRUCTIONS = f"""{_AGENT_ROLE}
Plan several simulation steps ahead without waiting for new observations (ReWOO). Write your
overall strategy, then numbered steps (1 to 5), one action per simulation step, then what to do if
things do not go as expected."""
_ACT_ALL_STEPS = "Now call the tools for every step of your plan, in order, one call per step."


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
