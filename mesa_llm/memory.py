"""Short-term memory: an agent's recent observations and plans, rendered into its prompts."""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from mesa_llm._types import Observation, Plan

__all__ = ["MemoryEntry", "ShortTermMemory"]


@dataclass(frozen=True)
class MemoryEntry:
    """One remembered observation or plan, with the model step it belongs to."""

    step: int
    kind: Literal["observation", "plan"]
    content: Observation | Plan

    def __str__(self) -> str:
        return f"[step {self.step}] {self.kind}: {self.content}"


class ShortTermMemory:
    """The last ``capacity`` observations and the last ``capacity`` plans; older ones drop out."""

    def __init__(self, capacity: int = 5) -> None:
        if capacity < 1:
            raise ValueError(f"mesa_llm: ShortTermMemory capacity must be >= 1, got {capacity!r}")
        self.capacity = capacity
        self._order = itertools.count()
        self._observations: deque[tuple[int, Observation]] = deque(maxlen=capacity)
        self._plans: deque[tuple[int, Plan]] = deque(maxlen=capacity)

    def add_observation(self, observation: Observation) -> None:
        """Remember an observation."""
        self._observations.append((next(self._order), observation))

    def add_plan(self, plan: Plan) -> None:
        """Remember a plan."""
        self._plans.append((next(self._order), plan))

    @property
    def observations(self) -> list[Observation]:
        """Remembered observations, oldest first."""
        return [observation for _, observation in self._observations]

    @property
    def plans(self) -> list[Plan]:
        """Remembered plans, oldest first."""
        return [plan for _, plan in self._plans]

    @property
    def entries(self) -> list[MemoryEntry]:
        """Everything remembered, in the order it was recorded."""
        recorded = [
            (order, MemoryEntry(obs.step, "observation", obs)) for order, obs in self._observations
        ]
        recorded += [(order, MemoryEntry(plan.step, "plan", plan)) for order, plan in self._plans]
        return [entry for _, entry in sorted(recorded, key=lambda item: item[0])]

    def __len__(self) -> int:
        return len(self._observations) + len(self._plans)

    def clear(self) -> None:
        """Forget everything."""
        self._observations.clear()
        self._plans.clear()

    def render(self) -> str:
        """The memory as prompt text, oldest first; empty string when nothing is remembered."""
        return "\n".join(str(entry) for entry in self.entries)
