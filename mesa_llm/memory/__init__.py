"""Agent memories: the release's protocol (``Memory``) and its short-, long-term and episodic kinds.

``ShortTermMemory`` needs no LLM; ``STLTMemory`` (the release agent's default),
``LongTermMemory`` and ``EpisodicMemory`` consolidate or grade with their own
``ModuleLLM``. The submodules keep the release's paths (``mesa_llm.memory.st_memory``
and so on); the LLM-backed kinds load on first access.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from mesa_llm.memory.memory import Memory, MemoryAgent, MemoryEntry
from mesa_llm.memory.st_memory import ShortTermMemory

if TYPE_CHECKING:
    from mesa_llm.memory.episodic_memory import EpisodicMemory, EventGrade, normalize_dict_values
    from mesa_llm.memory.lt_memory import LongTermMemory
    from mesa_llm.memory.st_lt_memory import STLTMemory

_LAZY: dict[str, str] = {
    "EpisodicMemory": "mesa_llm.memory.episodic_memory",
    "EventGrade": "mesa_llm.memory.episodic_memory",
    "normalize_dict_values": "mesa_llm.memory.episodic_memory",
    "LongTermMemory": "mesa_llm.memory.lt_memory",
    "STLTMemory": "mesa_llm.memory.st_lt_memory",
}

__all__ = [
    "EpisodicMemory",
    "EventGrade",
    "LongTermMemory",
    "Memory",
    "MemoryAgent",
    "MemoryEntry",
    "STLTMemory",
    "ShortTermMemory",
    "normalize_dict_values",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mesa_llm.memory' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
