"""Token usage: what the LLM replies of an agent's step (or a run) said they cost in tokens.

``ModuleLLM`` adds each reply's ``usage`` (as the provider returned it) to the tally
of the context it runs in; the stepping engines give every agent's step a tally of
its own, which ends up in ``AgentOutcome.usage`` and sums to ``StepReport.usage``.
Cheap: one context-variable lookup and a few additions per reply.
"""

from __future__ import annotations

import contextvars
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "FRESH",
    "TokenUsage",
    "fresh_tally",
    "hold_tally",
    "new_tally",
    "record_usage",
    "tally",
]


# One lock for every tally, not one each: a step makes a tally per agent, and a lock per
# tally is one more object per agent for the garbage collector to walk. Adding is a few
# integer additions, so the tallies never wait long for one another. A forked child gets
# a new one: fork() copies the lock as it was, held if another thread was adding.
_add_lock = threading.Lock()


def _new_lock_after_fork() -> None:
    global _add_lock
    _add_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_lock_after_fork)


@dataclass
class TokenUsage:
    """Prompt and completion tokens of some LLM replies, in total and per model asked for."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0
    #: model string the code asked for -> [prompt_tokens, completion_tokens, calls]
    by_model: dict[str, list[int]] = field(default_factory=dict)

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens

    def add(self, model: str, prompt_tokens: int, completion_tokens: int, calls: int = 1) -> None:
        """Count one reply (thread-safe)."""
        with _add_lock:
            self._add(model, prompt_tokens, completion_tokens, calls)

    def _add(self, model: str, prompt_tokens: int, completion_tokens: int, calls: int) -> None:
        """:meth:`add` without the lock: for a new tally no other thread can see yet."""
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        self.calls += calls
        row = self.by_model.setdefault(model, [0, 0, 0])
        row[0] += prompt_tokens
        row[1] += completion_tokens
        row[2] += calls

    @classmethod
    def total(cls, parts: Iterable[TokenUsage | None]) -> TokenUsage:
        """The sum of ``parts`` (None counts as nothing)."""
        result = cls()
        for part in parts:
            if part is not None:
                for model, (p, c, n) in list(part.by_model.items()):
                    result._add(model, p, c, n)
        return result

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "calls": self.calls,
            "by_model": {m: list(row) for m, row in sorted(self.by_model.items())},
        }

    @classmethod
    def from_dict(cls, data: Any) -> TokenUsage:
        """Rebuild from :meth:`to_dict` output (an empty usage from None)."""
        result = cls()
        for model, (p, c, n) in dict((data or {}).get("by_model") or {}).items():
            result._add(model, int(p), int(c), int(n))
        return result


class _Fresh:
    """The type of :data:`FRESH`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "FRESH"


#: In a holder's ``usage`` slot: a zero tally of its own, not made yet (see :func:`fresh_tally`).
FRESH: Any = _Fresh()


class _TallyHolder(Protocol):
    """What a context's tally may also be: an object whose ``usage`` makes the tally on first use.

    The asyncio engine puts each agent's ``AgentOutcome`` here: most agents of a large
    step make no LLM call, and a ``TokenUsage`` made for each of them anyway is an
    object per agent for the step to build and the garbage collector to walk. Its
    ``agent`` is then also ``current_agent()`` (``parallel_stepping._context``).
    """

    agent: Any
    usage: TokenUsage


_tally: contextvars.ContextVar[TokenUsage | _TallyHolder | None] = contextvars.ContextVar(
    "mesa_llm_usage", default=None
)


def new_tally() -> TokenUsage:
    """Start counting in this context (an engine, for one agent's step); return the tally."""
    usage = TokenUsage()
    _tally.set(usage)
    return usage


#: Start counting in this context into ``holder.usage``, a holder whose ``usage`` is
#: :data:`FRESH` (see :class:`_TallyHolder`): the tally is made when first used.
hold_tally: Any = _tally.set


def fresh_tally(get: Any, put: Any, holder: Any) -> TokenUsage:
    """A holder's tally: ``get(holder)``, or a new zero one put there if it is :data:`FRESH`.

    Made under the tallies' lock, so two threads of one agent's step (its own and a
    worker it started) never make two tallies and lose one's counts.
    """
    usage = get(holder)
    if usage is FRESH:
        with _add_lock:
            usage = get(holder)
            if usage is FRESH:
                usage = TokenUsage()
                put(holder, usage)
    return usage  # type: ignore[no-any-return]


def tally() -> TokenUsage | None:
    """The tally of this context, if an engine started one."""
    usage = _tally.get()
    if usage is None or isinstance(usage, TokenUsage):
        return usage
    return usage.usage


def record_usage(model: str, response: Any) -> None:
    """Add ``response.usage`` (a litellm ``ModelResponse``) to this context's tally, if any."""
    usage = tally()
    if usage is None:
        return
    reported = getattr(response, "usage", None)
    if reported is None:
        return
    prompt = getattr(reported, "prompt_tokens", None) or 0
    completion = getattr(reported, "completion_tokens", None) or 0
    usage.add(model, int(prompt), int(completion))
