"""``EpisodicMemory``: events kept with an LLM-graded importance, recalled by importance+recency."""

from __future__ import annotations

import json
import logging
import re
from collections import deque
from typing import Any

from pydantic import BaseModel, Field

from mesa_llm.memory.memory import Memory, MemoryEntry, communication_lines

__all__ = ["EpisodicMemory", "EventGrade", "normalize_dict_values"]

logger = logging.getLogger("mesa_llm.memory")

GRADER_PROMPT = (
    "You are an assistant that evaluates memory entries on a scale from 1 to 5, based on their "
    "importance to a specific problem or task. 5 - Critical: essential, novel information that "
    "significantly impacts decisions. 4 - High: important context. 3 - Moderate: somewhat "
    "useful. 2 - Low: marginal. 1 - Irrelevant. Only assess the entry's content and its value "
    'to the task. Answer with JSON: {"grade": <1-5>}.'
)
_FENCE = re.compile(r"^\s*```[a-zA-Z]*\s*|\s*```\s*$")


class EventGrade(BaseModel):
    """The grading reply: an integer importance."""

    grade: int = Field(description="Integer score representing the importance of the event")


def normalize_dict_values(scores: dict[Any, float], min_target: float, max_target: float) -> dict:
    """Min-max scale ``scores`` into ``[min_target, max_target]`` in place (all equal: midpoint)."""
    if not scores:
        return {}
    low, high = min(scores.values()), max(scores.values())
    for key, value in scores.items():
        if high == low:
            scores[key] = (max_target - min_target) / 2 + min_target
        else:
            scores[key] = (value - low) * (max_target - min_target) / (high - low) + min_target
    return scores


class EpisodicMemory(Memory):
    """Events stored as they arrive, each graded 1-5 by one LLM call; no two-phase step.

    The event is stored before it is graded, so a failing grading call never loses
    it (its importance stays None, counted as 1; the error propagates). A reply
    that is not a grade is logged and leaves the importance None.
    """

    def __init__(
        self,
        agent: Any,
        llm_model: str | None = None,
        display: bool = True,
        max_capacity: int = 200,
        considered_entries: int = 30,
        recency_decay: float = 0.995,
        api_base: str | None = None,
    ) -> None:
        if not llm_model:
            raise ValueError(
                "mesa_llm: llm_model must be provided for the usage of episodic memory "
                "(EpisodicMemory(llm_model='provider/model'))"
            )
        super().__init__(agent, llm_model, display, api_base)
        self.max_capacity = max_capacity
        self.memory_entries: deque[MemoryEntry] = deque(maxlen=max_capacity)
        self.considered_entries = considered_entries
        self.recency_decay = recency_decay
        self.system_prompt = GRADER_PROMPT
        self.llm.system_prompt = GRADER_PROMPT

    def add_to_memory(self, type: str, content: dict[str, Any]) -> None:
        """Store the event, then grade its importance with one LLM call."""
        entry, prompt = self._store(type, content)
        response = self.llm.generate(prompt=prompt, response_format=EventGrade)
        self._grade(entry, type, response)

    async def aadd_to_memory(self, type: str, content: dict[str, Any]) -> None:
        """Async ``add_to_memory``: the grading call is awaited."""
        entry, prompt = self._store(type, content)
        response = await self.llm.agenerate(prompt=prompt, response_format=EventGrade)
        self._grade(entry, type, response)

    def _store(self, kind: str, content: dict[str, Any]) -> tuple[MemoryEntry, str]:
        if not isinstance(content, dict):
            raise TypeError(
                f"mesa_llm: Expected 'content' to be dict, got {type(content).__name__}: "
                f"{content!r}"
            )
        with self._lock:
            prompt = self._build_grade_prompt(kind, content)
            entry = MemoryEntry(
                {kind: {**content, "importance": None}}, self.agent.model.steps, self.agent
            )
            self.memory_entries.append(entry)
        return entry, prompt

    def _grade(self, entry: MemoryEntry, kind: str, response: Any) -> None:
        text = response.choices[0].message.content or ""
        try:
            grade = json.loads(_FENCE.sub("", text))["grade"]
        except (ValueError, KeyError, TypeError):
            logger.warning(
                "agent %s: EpisodicMemory got no grade from %r; importance left unset",
                getattr(self.agent, "unique_id", None),
                text[:200],
            )
            return
        with self._lock:
            entry.content[kind]["importance"] = grade
        self._show(entry)

    def _build_grade_prompt(self, kind: str, content: dict[str, Any]) -> str:
        """The grading prompt: the event and the five most recent entries for context."""
        recent = list(self.memory_entries)[-5:]
        previous = (
            "previous memory entries:\n\n" + "\n\n".join(str(e) for e in recent)
            if recent
            else "No previous memory entries"
        )
        return (
            "grade the importance of the following event on a scale from 1 to 5:\n"
            f"{kind}: {content}\n------------------------------\n{previous}"
        )

    def _extract_importance(self, entry: MemoryEntry) -> float:
        """An entry's importance (1 when unset or not a number)."""
        values = [entry.content] + [v for v in entry.content.values() if isinstance(v, dict)]
        for value in values:
            if "importance" in value:
                importance = value["importance"]
                is_number = isinstance(importance, int | float) and not isinstance(importance, bool)
                return importance if is_number else 1
        return 1

    def retrieve_top_k_entries(self, k: int) -> list[MemoryEntry]:
        """The ``k`` entries with the highest normalised importance + recency."""
        entries = self.stored_entries()
        if not entries:
            return []
        now = self.agent.model.steps
        importance = normalize_dict_values(
            {i: self._extract_importance(e) for i, e in enumerate(entries)}, 0, 1
        )
        recency = normalize_dict_values(
            {i: self.recency_decay ** (now - e.step) for i, e in enumerate(entries)}, 0, 1
        )
        ranked = sorted(range(len(entries)), key=lambda i: importance[i] + recency[i], reverse=True)
        return [entries[i] for i in ranked[:k]]

    def stored_entries(self) -> list[MemoryEntry]:
        """Every kept event entry, oldest first."""
        with self._lock:
            return list(self.memory_entries)

    def get_prompt_ready(self) -> str:
        """The ``considered_entries`` top entries."""
        top = self.retrieve_top_k_entries(self.considered_entries)
        return f"Top {self.considered_entries} memory entries:\n\n" + "\n".join(map(str, top))

    def get_communication_history(self) -> str:
        """The messages among the kept events."""
        return communication_lines(self.stored_entries())

    def process_step(self, pre_step: bool = False) -> None:
        """Nothing: events are stored as they arrive."""
