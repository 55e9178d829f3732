"""The memory the release-style test models use: mesa-llm 0.3's ``STLTMemory`` when present.

TODO(lead, HB4b): once the ``mesa_llm/memory/`` package is merged, ``STLTMemory`` is
imported and the stand-in below is unused (delete it then). The stand-in follows the
release's two-phase protocol (spec sec. 6.2) so the models run unchanged meanwhile.
"""

from __future__ import annotations

from collections import deque
from types import SimpleNamespace
from typing import Any

try:
    from mesa_llm.memory.st_lt_memory import STLTMemory  # type: ignore[import-not-found]
except ImportError:
    STLTMemory = None  # type: ignore[assignment,misc]

ADDITIVE = ("message", "action")


class _StandInSTLTMemory:
    """``STLTMemory(agent, ..., llm_model=...)`` without consolidation (no LLM)."""

    def __init__(self, agent: Any, *args: Any, **kwargs: Any) -> None:
        self.agent = agent
        self.step_content: dict[str, Any] = {}
        self.short_term_memory: deque[Any] = deque()

    def add_to_memory(self, type: str, content: dict[str, Any]) -> None:
        if type in ADDITIVE:
            self.step_content.setdefault(type, []).append(content)
        else:
            self.step_content[type] = content

    async def aadd_to_memory(self, type: str, content: dict[str, Any]) -> None:
        self.add_to_memory(type, content)

    def process_step(self, pre_step: bool = False) -> None:
        if pre_step:
            self.short_term_memory.append(SimpleNamespace(content=self.step_content, step=None))
        elif self.short_term_memory and self.short_term_memory[-1].step is None:
            staged = self.short_term_memory.pop().content
            merged = {**self.step_content, **staged}
            for kind in ADDITIVE:
                if kind in staged or kind in self.step_content:
                    merged[kind] = staged.get(kind, []) + self.step_content.get(kind, [])
            self.short_term_memory.append(
                SimpleNamespace(content=merged, step=self.agent.model.steps)
            )
        else:
            return
        self.step_content = {}

    async def aprocess_step(self, pre_step: bool = False) -> None:
        self.process_step(pre_step)

    def get_prompt_ready(self) -> str:
        return "\n".join(f"Step {e.step}: {e.content}" for e in self.short_term_memory)

    def get_communication_history(self) -> str:
        return ""


ReleaseSTLTMemory: Any = STLTMemory if STLTMemory is not None else _StandInSTLTMemory


def remembered(agent: Any, kind: str) -> list[Any]:
    """Every ``kind`` entry in the agent's memory (finalized steps and the current one)."""
    found: list[Any] = []
    contents = [entry.content for entry in agent.memory.short_term_memory]
    for content in [*contents, agent.memory.step_content]:
        value = content.get(kind)
        if value is None:
            continue
        found.extend(value if isinstance(value, list) else [value])
    return found
