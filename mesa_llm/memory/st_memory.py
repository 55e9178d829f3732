"""``ShortTermMemory``: the entries of the last ``n`` steps, no LLM."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

from mesa_llm.memory.memory import Memory, MemoryEntry, communication_lines, format_entries

__all__ = ["ShortTermMemory"]


class ShortTermMemory(Memory):
    """The last ``n`` steps' entries; older ones drop out. No LLM.

    Two spellings: the release's ``ShortTermMemory(agent, n=5, display=True)``
    (driven by the agent's two-phase step) and ours' ``ShortTermMemory(capacity)``
    (``capacity`` is ``n``; ``add_observation``/``add_plan`` outside a step file
    straight into the entry of the value's step).
    """

    def __init__(
        self,
        agent: Any = None,
        n: int = 5,
        display: bool = True,
        additive_event_types: Iterable[str] | None = None,
        *,
        capacity: int | None = None,
    ) -> None:
        if isinstance(agent, int) and not isinstance(agent, bool):  # ours: ShortTermMemory(3)
            agent, capacity = None, agent
        if capacity is not None:
            n = capacity
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(
                f"mesa_llm: n must be >= 1 for ShortTermMemory (its capacity must be >= 1, "
                f"got {n!r})"
            )
        super().__init__(agent, display=display, additive_event_types=additive_event_types)
        self.n = n
        self.short_term_memory: deque[MemoryEntry] = deque(maxlen=n)

    @property
    def capacity(self) -> int:
        """How many steps are kept (``n``)."""
        return self.n

    @property
    def _current_step_entry(self) -> MemoryEntry | None:
        """The open step's pre-step snapshot (the release's name)."""
        return self._pending

    def process_step(self, pre_step: bool = False) -> None:
        """Pre-step: set aside what arrived since the last step; post-step: file the step."""
        if pre_step:
            self._open_step()
            return
        entry = self._close_step()
        if entry is not None:
            with self._lock:
                self.short_term_memory.append(entry)
        self._show(entry)

    def stored_entries(self) -> list[MemoryEntry]:
        """The kept step entries, oldest first."""
        with self._lock:
            return list(self.short_term_memory)

    def format_short_term(self) -> str:
        """The kept entries as ``Step N: \\n<content>`` lines (``No recent memory.`` if none)."""
        return format_entries(self.stored_entries())

    def get_prompt_ready(self) -> str:
        """``Short term memory:`` and the kept entries."""
        return f"Short term memory:\n {self.format_short_term()}\n"

    def get_communication_history(self) -> str:
        """The messages of the kept entries."""
        return communication_lines(self.stored_entries())

    def clear(self) -> None:
        """Forget everything, including a step in progress."""
        with self._lock:
            self.short_term_memory.clear()
            self.step_content = {}
            self._pending = None

    def _file_aborted(self, entry: MemoryEntry) -> None:
        self.short_term_memory.append(entry)

    def _file_now(self, kind: str, content: Any, step: int) -> bool:
        last = self.short_term_memory[-1] if self.short_term_memory else None
        if last is not None and last.step == step and kind not in last.content:
            last.content[kind] = content
        else:
            self.short_term_memory.append(MemoryEntry({kind: content}, step, self.agent))
        return True
