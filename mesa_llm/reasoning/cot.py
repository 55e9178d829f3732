"""Chain-of-thought reasoning (mesa-llm 0.3's ``mesa_llm.reasoning.cot``)."""

from __future__ import annotations

from mesa_llm._types import Observation, Plan
from mesa_llm.reasoning.reasoning import _AGENT_ROLE, PlanRequests, Reasoning

__all__ = ["CoTReasoning"]

_COT_INSTRUCTIONS = f"""{_AGENT_ROLE}
Think step by step (chain of thought) about what to do next, using your recent memory and your
current observation. Answer in this format:
Thought 1: <what the observation tells you>
Thought 2: <how your memory informs the situation>
Thought 3: <alternatives and risks>
Thought 4: <your decision and why>
Action: <the action you will take, in words>"""
_ACT_NOW = "Now carry out the action you decided on by calling the tools."


class CoTReasoning(Reasoning):
    """Chain of thought: one call to think step by step, one to turn the decision into calls."""

    def plan_requests(self, prompt: str | None, obs: Observation | None, ttl: int) -> PlanRequests:
        """Think (numbered thoughts ending in an action), then act through the tools."""
        prompt, obs = self._begin(prompt, obs)
        thoughts, actions = yield from self._thinking_then_acting(
            _COT_INSTRUCTIONS, _ACT_NOW, prompt, obs
        )
        return self._finish(obs, Plan(obs.step, thoughts, actions, ttl))
