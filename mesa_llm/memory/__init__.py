"""Agent memories: the release's protocol (``Memory``) and its short-, long-term and episodic kinds.

``ShortTermMemory`` needs no LLM; ``STLTMemory`` (the release agent's default),
``LongTermMemory`` and ``EpisodicMemory`` consolidate or grade with their own
``ModuleLLM``. The submodules keep the release's paths (``mesa_llm.memory.st_memory``
and so on); the LLM-backed kinds load on first access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mesa_llm._lazy import lazy_exports
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


__getattr__, __dir__ = lazy_exports("mesa_llm.memory", _LAZY, __all__, globals())
