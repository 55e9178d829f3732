"""``STLTMemory``: recent steps verbatim, older ones summarised into long-term memory by an LLM."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

from mesa_llm.memory.memory import Memory, MemoryEntry, communication_lines, format_entries

__all__ = ["STLTMemory"]

SUMMARISER_PROMPT = (
    "You are a helpful assistant that summarizes the short term memory into a long term memory. "
    "The long term memory should be a summary of the short term memory that is concise and "
    "informative. If the short term memory is empty, return the long term memory unchanged. "
    "If the long term memory is not empty, update it to include the new information from the "
    "short term memory."
)


class STLTMemory(Memory):
    """Short-term entries of the last steps; when more than ``short_term_capacity +
    consolidation_capacity`` are kept, the ``consolidation_capacity`` oldest are
    summarised into ``long_term_memory`` by one LLM call (``consolidation_capacity <= 0``:
    the oldest entry is dropped instead, no LLM).

    The release ``LLMAgent``'s default memory. If the consolidation call fails, the
    entries stay in short-term memory (tried again after the next step) and the
    error propagates.
    """

    def __init__(
        self,
        agent: Any,
        short_term_capacity: int = 5,
        consolidation_capacity: int = 2,
        display: bool = True,
        llm_model: str | None = None,
        api_base: str | None = None,
        additive_event_types: Iterable[str] | None = None,
    ) -> None:
        if not llm_model:
            raise ValueError(
                "mesa_llm: llm_model must be provided for the usage of st/lt memory "
                "(STLTMemory(llm_model='provider/model')). You can use the pre-built "
                "'short-term-only' memory (ShortTermMemory) without a model."
            )
        super().__init__(agent, llm_model, display, api_base, additive_event_types)
        self.capacity = short_term_capacity
        self.consolidation_capacity: int | None = (
            consolidation_capacity if consolidation_capacity > 0 else None
        )
        self.short_term_memory: deque[MemoryEntry] = deque()
        self.long_term_memory = ""
        self.system_prompt = SUMMARISER_PROMPT
        step_prompt = getattr(agent, "step_prompt", None)
        if isinstance(step_prompt, str) and step_prompt:
            self.system_prompt += (
                f" This is the prompt of the problem you will be tackling: {step_prompt}; "
                "summarize the short-term memory into long-term memory in a way that is "
                "relevant to it."
            )
        self.llm.system_prompt = self.system_prompt

    def process_step(self, pre_step: bool = False) -> None:
        """Pre-step: set aside what arrived; post-step: file the step, consolidate if due."""
        evicted = self._file_step(pre_step)
        if evicted:
            try:
                prompt = self._build_consolidation_prompt(evicted)
                summary = self.llm.generate(prompt).choices[0].message.content
            except BaseException:
                self._restore(evicted)
                raise
            self._set_long_term(summary)

    async def aprocess_step(self, pre_step: bool = False) -> None:
        """Async ``process_step``: the consolidation call is awaited (agents overlap)."""
        evicted = self._file_step(pre_step)
        if evicted:
            try:
                prompt = self._build_consolidation_prompt(evicted)
                summary = (await self.llm.agenerate(prompt)).choices[0].message.content
            except BaseException:
                self._restore(evicted)
                raise
            self._set_long_term(summary)

    def _file_step(self, pre_step: bool) -> list[MemoryEntry]:
        """Open or close the step; the entries to consolidate now (oldest first)."""
        if pre_step:
            self._open_step()
            return []
        entry = self._close_step()
        if entry is None:
            return []
        evicted: list[MemoryEntry] = []
        with self._lock:
            self.short_term_memory.append(entry)
            if self.consolidation_capacity:
                if len(self.short_term_memory) > self.capacity + self.consolidation_capacity:
                    for _ in range(self.consolidation_capacity):
                        evicted.append(self.short_term_memory.popleft())
            elif len(self.short_term_memory) > self.capacity:
                self.short_term_memory.popleft()
        self._show(entry)
        return evicted

    def _restore(self, evicted: list[MemoryEntry]) -> None:
        with self._lock:
            self.short_term_memory.extendleft(reversed(evicted))

    def _set_long_term(self, summary: Any) -> None:
        with self._lock:
            self.long_term_memory = "" if summary is None else str(summary)

    def _build_consolidation_prompt(self, evicted_entries: list[MemoryEntry]) -> str:
        """The consolidation prompt: the evicted entries and the current long-term summary."""
        evicted = "\n".join(f"Step {e.step}: \n{e.content}" for e in evicted_entries)
        return (
            "Memories to consolidate (oldest entries being removed from short-term memory):\n"
            f"{evicted}\n\nExisting long term memory:\n{self.long_term_memory}\n\n"
            "Please integrate the above memories into a concise, updated long-term memory "
            "summary."
        )

    def stored_entries(self) -> list[MemoryEntry]:
        """The short-term entries, oldest first."""
        with self._lock:
            return list(self.short_term_memory)

    def format_short_term(self) -> str:
        """Finished steps' entries as ``Step N: \\n<content>`` lines (``No recent memory.``).

        The step in progress is not shown (its observation is in the prompt already;
        what others send during it is filed with it and shown from the next step), so
        what an agent sees does not depend on the order agents step in.
        """
        return format_entries(self.stored_entries())

    def format_long_term(self) -> str:
        """The long-term summary."""
        return str(self.long_term_memory)

    def get_prompt_ready(self) -> str:
        """``Short term memory:`` entries and ``Long term memory:`` summary."""
        return (
            f"Short term memory:\n {self.format_short_term()}\n\n"
            f"Long term memory: \n{self.format_long_term()}"
        )

    def get_communication_history(self) -> str:
        """The messages of the short-term entries and of the step in progress."""
        return communication_lines(self.stored_entries() + self._in_progress())

    def _file_aborted(self, entry: MemoryEntry) -> None:
        self.short_term_memory.append(entry)
