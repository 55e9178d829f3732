"""The memory protocol: ``Memory`` (staged step content, two-phase steps) and ``MemoryEntry``.

An agent's memory collects what happens in a step in ``step_content``: events
added with ``add_to_memory(type, content)``. Types in ``additive_event_types``
(default ``message`` and ``action``) accumulate as a list; other types overwrite.
The agent drives a two-phase step: ``process_step(pre_step=True)`` before its step
(what arrived since its last step is set aside), ``process_step()`` after it (one
entry for the step, maybe consolidated). ``abort_step(error)`` closes a step that
raised, so a failed step never leaves a half-open entry behind. Every change of
``step_content`` holds a per-memory lock: other agents may write into it from
worker threads while its owner steps.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from mesa import Model

    from mesa_llm.module_llm import ModuleLLM

__all__ = ["DEFAULT_ADDITIVE_EVENT_TYPES", "Memory", "MemoryAgent", "MemoryEntry"]

logger = logging.getLogger("mesa_llm.memory")

DEFAULT_ADDITIVE_EVENT_TYPES: frozenset[str] = frozenset({"message", "action"})


class MemoryAgent(Protocol):
    """What a memory needs of its agent: its ``unique_id`` and ``model`` (for ``model.steps``)."""

    unique_id: Any
    model: Model


class MemoryEntry:
    """One remembered step (``content`` dict, ``step``, ``agent``) or one typed event (``kind``).

    Two spellings, one class: the release's ``MemoryEntry(content, step, agent)`` (a
    step's events by type; ``step=None`` marks a step still in progress) and ours'
    ``MemoryEntry(step, kind, content)`` (one observation or plan of a step).
    """

    __slots__ = ("agent", "content", "kind", "step")

    def __init__(
        self, content: Any = None, step: Any = None, agent: Any = None, kind: str | None = None
    ) -> None:
        if isinstance(content, int) and not isinstance(content, bool) and isinstance(step, str):
            # ours' positional order: MemoryEntry(step, kind, content)
            content, step, kind, agent = agent, content, step, None
        self.content = content
        self.step: int | None = step
        self.agent = agent
        self.kind = kind

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MemoryEntry):
            return NotImplemented
        return (self.content, self.step, self.agent, self.kind) == (
            other.content,
            other.step,
            other.agent,
            other.kind,
        )

    __hash__ = None  # type: ignore[assignment]  # mutable, like the release's dataclass

    def __repr__(self) -> str:
        kind = f", kind={self.kind!r}" if self.kind is not None else ""
        return f"MemoryEntry(content={self.content!r}, step={self.step!r}{kind})"

    def __str__(self) -> str:
        if self.kind is not None:
            return f"[step {self.step}] {self.kind}: {self.content}"
        if not isinstance(self.content, dict):
            return str(self.content)
        lines: list[str] = []
        for key, value in self.content.items():
            if value:  # the release skips empty sections
                lines.append(f"[{str(key).title()}]")
                lines.extend(_tree(value, 1))
        return "\n".join(lines)

    def display(self) -> None:
        """Log the entry (INFO, ``mesa_llm.memory``) if its agent's memory has ``display``."""
        memory = getattr(self.agent, "memory", None)
        if memory is not None and getattr(memory, "display", False):
            logger.info(
                "step %s | %s %s\n%s",
                self.step,
                type(self.agent).__name__,
                getattr(self.agent, "unique_id", None),
                self,
            )


def _tree(value: Any, depth: int) -> Iterator[str]:
    """Plain-text tree lines of a nested dict/list (no markup: it ends up in prompts)."""
    indent = "   " * depth
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, dict | list):
                yield f"{indent}└── {key}:"
                yield from _tree(item, depth + 1)
            else:
                yield f"{indent}└── {key}: {item}"
    elif isinstance(value, list):
        for number, item in enumerate(value, 1):
            if isinstance(item, dict | list):
                yield f"{indent}├── ({number})"
                yield from _tree(item, depth + 1)
            else:
                yield f"{indent}├── {item}"
    else:
        yield f"{indent}└── {value}"


def _format_message_entry(value: Any) -> str:
    """A message event as text: ``Agent <sender> says: <message>``."""
    if isinstance(value, dict):
        text = value.get("message", str(value))
        sender = value.get("sender")
        return f"Agent {sender} says: {text}" if sender is not None else str(text)
    return str(value)


def communication_lines(entries: Iterable[MemoryEntry]) -> str:
    """The messages of ``entries`` as ``Step N: Agent S says: text`` paragraphs."""
    lines: list[str] = []
    for entry in entries:
        if not isinstance(entry.content, dict) or "message" not in entry.content:
            continue
        messages = entry.content["message"]
        for message in messages if isinstance(messages, list) else [messages]:
            lines.append(f"Step {entry.step}: {_format_message_entry(message)}\n\n")
    return "\n".join(lines)


def format_entries(entries: Iterable[MemoryEntry]) -> str:
    """Entries as ``Step N: \\n<content>`` lines; ``No recent memory.`` when there are none."""
    lines = [f"Step {entry.step}: \n{entry.content}" for entry in entries]
    return "\n".join(lines) if lines else "No recent memory."


class Memory(ABC):
    """Base of every memory: staged ``step_content``, the two-phase step, typed read views.

    ``llm_model`` given: ``self.llm`` is a ``ModuleLLM`` attributed to ``agent`` (so
    the harness's fake answers it and faults apply). ``display``: log each finished
    entry at INFO.
    """

    def __init__(
        self,
        agent: Any,
        llm_model: str | None = None,
        display: bool = True,
        api_base: str | None = None,
        additive_event_types: Iterable[str] | None = None,
    ) -> None:
        self.agent = agent
        self.display = display
        self.step_content: dict[str, Any] = {}
        self.additive_event_types = set(
            DEFAULT_ADDITIVE_EVENT_TYPES if additive_event_types is None else additive_event_types
        )
        self._lock = threading.RLock()
        self._pending: MemoryEntry | None = None  # the open step's pre-step snapshot
        self._last_filed: MemoryEntry | None = None  # the entry of the last finished step
        if llm_model:
            self.llm: ModuleLLM = _memory_llm(agent, llm_model, api_base)

    # ------------------------------------------------------------------ the release protocol

    @abstractmethod
    def get_prompt_ready(self) -> str:
        """The memory as prompt text."""

    @abstractmethod
    def get_communication_history(self) -> str:
        """The messages remembered, as prompt text."""

    @abstractmethod
    def process_step(self, pre_step: bool = False) -> None:
        """Before (``pre_step=True``) or after the agent's step: set aside, or file the step."""

    async def aprocess_step(self, pre_step: bool = False) -> None:
        """Async ``process_step`` (LLM-backed memories await their LLM calls)."""
        self.process_step(pre_step)

    def add_to_memory(self, type: str, content: dict[str, Any]) -> None:
        """Add an event of ``type`` to this step's content (``content`` must be a dict)."""
        if not isinstance(content, dict):
            raise TypeError(
                f"mesa_llm: Expected 'content' to be dict, got {type_name(content)}: {content!r}"
            )
        self._stage(type, content)

    async def aadd_to_memory(self, type: str, content: dict[str, Any]) -> None:
        """Async ``add_to_memory``."""
        self.add_to_memory(type, content)

    def abort_step(self, error: BaseException | str | None = None) -> None:
        """Close a step that raised: file what it recorded, marked ``step_error``; no LLM call.

        Safe to call when no step is open (does nothing). What others sent during
        the step is kept; the next step starts clean.
        """
        with self._lock:
            if self._pending is None:
                return
            staged, self._pending = self._pending, None
            content = self._merge_step_contents(self.step_content, staged.content)
            self.step_content = {}
            content["step_error"] = {"error": _describe(error)}
            entry = MemoryEntry(content, staged.step, self.agent)
            self._last_filed = entry
            self._file_aborted(entry)

    def _file_aborted(self, entry: MemoryEntry) -> None:
        """Keep a failed step's entry (memories with an entry store append it)."""
        logger.debug("agent %s: no store for the failed step's entry %s", entry.agent, entry)

    # ------------------------------------------------------------------ ours' typed spellings

    def add_observation(self, observation: Any) -> None:
        """Remember an observation (ours' spelling of ``add_to_memory("observation", ...)``)."""
        self._stage("observation", observation, step=getattr(observation, "step", None))

    def add_plan(self, plan: Any) -> None:
        """Remember a plan (ours' spelling of ``add_to_memory("plan", ...)``)."""
        self._stage("plan", plan, step=getattr(plan, "step", None))

    def stored_entries(self) -> list[MemoryEntry]:
        """The finished step entries, oldest first (subclasses with a store override)."""
        return []

    @property
    def entries(self) -> list[MemoryEntry]:
        """Every remembered event as a typed entry (``step``, ``kind``, ``content``)."""
        return list(_typed(self.stored_entries()))

    @property
    def observations(self) -> list[Any]:
        """Remembered observations, oldest first."""
        return [entry.content for entry in self.entries if entry.kind == "observation"]

    @property
    def plans(self) -> list[Any]:
        """Remembered plans, oldest first."""
        return [entry.content for entry in self.entries if entry.kind == "plan"]

    def __len__(self) -> int:
        return len(self.entries)

    def render(self) -> str:
        """Every remembered event as prompt text, oldest first; empty when there is none."""
        return "\n".join(str(entry) for entry in self.entries)

    # ------------------------------------------------------------------ shared machinery

    def _stage(self, kind: str, content: Any, step: int | None = None) -> None:
        """Add one event to ``step_content`` (or straight to the store: ``_file_now``)."""
        with self._lock:
            if self._pending is None and step is not None and self._file_now(kind, content, step):
                return
            if self._pending is None and self._joins_last_entry(kind):
                # Arrived in the model step the agent has already finished (another agent
                # stepping after it): filed with that step, as if it had arrived during it,
                # so what the agent sees does not depend on the order agents step in.
                last = self._last_filed
                last.content[kind] = [*_as_list(last.content.get(kind, [])), content]  # type: ignore[union-attr]
                last.content = _in_order(last.content)  # type: ignore[union-attr]
                return
            if kind in self.additive_event_types:
                existing = self.step_content.get(kind)
                if existing is None:
                    self.step_content[kind] = [content]
                elif isinstance(existing, list):
                    existing.append(content)
                else:  # a single value stored by older code: becomes a list
                    self.step_content[kind] = [existing, content]
            else:
                self.step_content[kind] = content

    def _joins_last_entry(self, kind: str) -> bool:
        """True for an additive event arriving in the model step of the last filed entry."""
        last = self._last_filed
        if last is None or kind not in self.additive_event_types:
            return False
        steps = getattr(getattr(self.agent, "model", None), "steps", None)
        return steps is not None and steps == last.step and isinstance(last.content, dict)

    def _file_now(self, kind: str, content: Any, step: int) -> bool:
        """Outside a two-phase step, file a typed event directly; False: stage it instead."""
        return False

    def _merge_step_contents(
        self, current_content: dict[str, Any], staged_content: dict[str, Any]
    ) -> dict[str, Any]:
        """Merge a step's content with its pre-step snapshot (additive types: staged first)."""
        merged = dict(current_content)
        for key, staged in staged_content.items():
            if key in self.additive_event_types and key in merged:
                merged[key] = _as_list(staged) + _as_list(merged[key])
            else:
                merged[key] = staged
        return _in_order(merged)

    def _open_step(self) -> None:
        """Pre-step: set aside what arrived since the last step (closing an unfinished step)."""
        with self._lock:
            if self._pending is not None:
                self.abort_step("the previous step did not finish (no post-step call)")
            steps = _model_steps(self.agent)
            self._pending = MemoryEntry(self.step_content, steps, self.agent)
            self.step_content = {}

    def _close_step(self) -> MemoryEntry | None:
        """Post-step: the step's merged entry, or None if no step is open."""
        with self._lock:
            if self._pending is None:
                return None
            staged, self._pending = self._pending, None
            content = self._merge_step_contents(self.step_content, staged.content)
            self.step_content = {}
            entry = MemoryEntry(content, _model_steps(self.agent), self.agent)
            self._last_filed = entry
            return entry

    def _in_progress(self) -> list[MemoryEntry]:
        """The open step's content so far, as an entry (for prompts during the step)."""
        with self._lock:
            if self._pending is None:
                return []
            content = self._merge_step_contents(self.step_content, self._pending.content)
            return [MemoryEntry(content, self._pending.step, self.agent)] if content else []

    def _show(self, entry: MemoryEntry | None) -> None:
        if entry is not None and self.display:
            entry.display()


def _typed(entries: Iterable[MemoryEntry]) -> Iterator[MemoryEntry]:
    for entry in entries:
        if entry.kind is not None:
            yield entry
            continue
        if not isinstance(entry.content, dict):
            continue
        for kind, value in entry.content.items():
            for item in value if isinstance(value, list) else [value]:
                yield MemoryEntry(item, entry.step, kind=kind)


_ORDER = {"observation": 0, "plan": 1, "plan_execution": 2, "action": 3, "message": 4}


def _in_order(content: dict[str, Any]) -> dict[str, Any]:
    """A step's content in one key order (observation, plan, ..., message, then by name),
    whatever order its events arrived in: prompts do not depend on the stepping mode."""
    return dict(sorted(content.items(), key=lambda item: (_ORDER.get(item[0], 5), item[0])))


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def _describe(error: BaseException | str | None) -> str:
    if isinstance(error, BaseException):
        return f"{type(error).__name__}: {error}"
    return "the step failed" if error is None else str(error)


def _model_steps(agent: Any) -> int:
    steps = getattr(getattr(agent, "model", None), "steps", None)
    if steps is None:
        raise ValueError(
            "mesa_llm: this memory has no agent with a model (agent=None); pass agent= to "
            "use the two-phase step (process_step)"
        )
    return steps


def type_name(value: Any) -> str:
    """The class name of ``value`` (for error messages)."""
    return type(value).__name__


def _memory_llm(agent: Any, llm_model: str, api_base: str | None) -> ModuleLLM:
    """A ``ModuleLLM`` for a memory's own calls, attributed to its agent, seeded from it.

    It inherits the agent's LLM settings (``retry``, ``timeout``, ``circuit_breaker``,
    and for the same model and endpoint ``api_key``, ``rate_limiter``, ``fallbacks`` and
    the completion options), so a consolidation
    call is retried, timed out and faulted like the agent's own calls.
    """
    from mesa_llm.module_llm import ModuleLLM

    own = getattr(agent, "llm", None)
    if not isinstance(own, ModuleLLM):
        return ModuleLLM(llm_model, api_base, agent=agent)
    digest = hashlib.blake2b(f"{own.seed}:memory".encode(), digest_size=8).digest()
    inherited: dict[str, Any] = {
        "retry": own.retry,
        "timeout": own.timeout,
        "circuit_breaker": own.circuit_breaker,  # one circuit per model: safe for any model
    }
    if (llm_model, api_base) == (own.llm_model, own.api_base):
        inherited.update(
            own.completion_kwargs,
            api_key=own.api_key,
            rate_limiter=own.rate_limiter,
            fallbacks=own.fallbacks,
        )
    return ModuleLLM(
        llm_model,
        api_base,
        seed=int.from_bytes(digest, "big") if own.seed is not None else None,
        agent=agent,
        **inherited,
    )
