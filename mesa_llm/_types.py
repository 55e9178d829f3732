"""The data reasoning, memory and the agent pass between them: ``Observation``, ``Plan``.

These are plain data, kept apart from the modules that use them so that
``reasoning``, ``memory`` and ``llm_agent`` each import this module and never
each other in a circle. The public names stay importable from
``mesa_llm.reasoning`` (and ``mesa_llm``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from mesa_llm.tools.tool_decorator import ToolCall

__all__ = ["Observation", "Plan"]


@dataclass
class Observation:
    """What an agent perceives at a model step: its own state and its neighbours'."""

    step: int
    self_state: dict[str, Any]
    local_state: dict[str, Any]

    def __str__(self) -> str:
        return (
            f"step {self.step}; self: {dumps_sorted(self.self_state)}; "
            f"neighbours: {dumps_sorted(self.local_state)}"
        )


@dataclass
class Plan:
    """Reasoning's outcome: thoughts, the tool calls to make, and how many steps it holds (ttl).

    mesa-llm 0.3's spelling ``Plan(step=..., llm_plan=<LLM message>, ttl=...)`` is
    the same class: ``llm_plan`` is the raw LLM message (``.content``,
    ``.tool_calls``) or any object; ``apply_plan`` runs its tool calls when the
    plan has no parsed ``actions``. Plans ours' reasoning makes carry both.
    """

    step: int
    thoughts: str = ""
    actions: list[ToolCall] = field(default_factory=list)
    ttl: int = 1
    llm_plan: Any = None

    def __str__(self) -> str:
        if not self.thoughts and not self.actions and self.llm_plan is not None:
            content = getattr(self.llm_plan, "content", None)
            text = content if content else self.llm_plan
            return f"{str(text).strip()}\n"
        actions = "; ".join(str(action) for action in self.actions) or "none"
        return f"{self.thoughts} | actions: {actions}"


def dumps_sorted(value: Any) -> str:
    """``value`` as JSON for a prompt: keys sorted, anything unknown as ``str``."""
    return json.dumps(value, default=str, sort_keys=True)
