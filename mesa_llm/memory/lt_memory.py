"""``LongTermMemory``: every step folded into one running summary by an LLM call per step."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from mesa_llm.memory.memory import Memory, MemoryEntry

__all__ = ["LongTermMemory"]

SUMMARISER_PROMPT = (
    "You are a helpful assistant that summarizes all memory entries and stores it into "
    "long-term. The long term memory should be a summary of the individual memory entries "
    "such that it is concise and informative."
)


class LongTermMemory(Memory):
    """One running summary (``long_term_memory``); after each step one LLM call folds it in.

    ``buffer`` is the last step's entry. If the summarising call fails, the entry is
    kept (``backlog``) and folded in with the next step's; the error propagates.
    """

    def __init__(
        self,
        agent: Any,
        display: bool = True,
        llm_model: str = "openai/gpt-4o-mini",
        api_base: str | None = None,
        additive_event_types: Iterable[str] | None = None,
    ) -> None:
        if not llm_model:
            raise ValueError(
                "mesa_llm: llm_model must be provided for the usage of long term memory "
                "(LongTermMemory(llm_model='provider/model'))"
            )
        super().__init__(agent, llm_model, display, api_base, additive_event_types)
        self.long_term_memory = ""
        self.buffer: MemoryEntry | None = None
        self.backlog: list[MemoryEntry] = []
        self.system_prompt = SUMMARISER_PROMPT
        step_prompt = getattr(agent, "step_prompt", None)
        if isinstance(step_prompt, str) and step_prompt:
            self.system_prompt += (
                f" This is the prompt of the problem you will be tackling: {step_prompt}; "
                "summarize the memory entries in a way that is relevant to it."
            )
        self.llm.system_prompt = self.system_prompt

    def process_step(self, pre_step: bool = False) -> None:
        """Pre-step: set aside what arrived; post-step: file the step and summarise it."""
        prompt = self._file_step(pre_step)
        if prompt is not None:
            self._summarised(self.llm.generate(prompt))

    async def aprocess_step(self, pre_step: bool = False) -> None:
        """Async ``process_step``: the summarising call is awaited."""
        prompt = self._file_step(pre_step)
        if prompt is not None:
            self._summarised(await self.llm.agenerate(prompt))

    def _file_step(self, pre_step: bool) -> str | None:
        """Open or close the step; the summarising prompt when a step was filed."""
        if pre_step:
            self._open_step()
            return None
        entry = self._close_step()
        if entry is None:
            return None
        with self._lock:
            self.buffer = entry
            self.backlog.append(entry)
        self._show(entry)
        return self._build_consolidation_prompt()

    def _summarised(self, response: Any) -> None:
        with self._lock:
            content = response.choices[0].message.content
            self.long_term_memory = "" if content is None else str(content)
            self.backlog.clear()

    def _build_consolidation_prompt(self) -> str:
        """The summarising prompt: the current summary and the new entries."""
        entries = "\n".join(str(entry) for entry in self.backlog)
        return (
            f"This is the current Long term memory:\n{self.long_term_memory}\n"
            f"This is the new memory entry:\n{entries}\n"
        )

    def stored_entries(self) -> list[MemoryEntry]:
        """The last step's entry and any not yet summarised."""
        with self._lock:
            return list(self.backlog) or ([self.buffer] if self.buffer is not None else [])

    def format_long_term(self) -> str:
        """The long-term summary."""
        return str(self.long_term_memory)

    def get_prompt_ready(self) -> str:
        """``Long term memory:`` and the summary."""
        return f"Long term memory: \n{self.format_long_term()}"

    def get_communication_history(self) -> str:
        """A fixed note: messages live in the summary."""
        return "communication history is in memory of the agent"

    def _file_aborted(self, entry: MemoryEntry) -> None:
        self.buffer = entry
        self.backlog.append(entry)
