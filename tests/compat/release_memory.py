"""Helpers for reading a release-style agent's memory (mesa-llm 0.3's ``STLTMemory``)."""

from __future__ import annotations

from typing import Any


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
