"""Which agent's step this context runs, and how deeply steps are nested here."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from mesa_llm._usage import TokenUsage, _tally

if TYPE_CHECKING:
    from mesa import Agent

__all__ = ["acting_as", "current_agent"]

_current_agent: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "mesa_llm_current_agent", default=None
)

# How many agent steps enclose this context: a step started from inside an agent's step
# (a nested step) uses thread pools of its own depth, so it never waits for workers
# that its own callers are holding.
_depth: contextvars.ContextVar[int] = contextvars.ContextVar("mesa_llm_step_depth", default=0)

# Set inside a step that the library's event-loop thread is blocked waiting for (a
# nested step made synchronously from an async agent): steps nested in it must not
# wait for that loop either, so they run in threads.
_loop_blocked: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "mesa_llm_loop_blocked", default=False
)


# An asyncio-mode agent's step sets one context variable, not two (once per agent of every
# step): the usage tally's, to the agent's outcome, which holds the agent too. While the
# tally is such a holder, it says who the current agent is; every other step and
# ``acting_as`` set both variables, with a plain tally.


def current_agent() -> Agent | None:
    """Return the agent whose step is running in this context (asyncio task or worker thread)."""
    held = _tally.get()
    if held is not None and not isinstance(held, TokenUsage):  # an asyncio-mode agent's outcome
        return held.agent  # type: ignore[no-any-return]
    return _current_agent.get()


@contextlib.contextmanager
def acting_as(agent: Agent | None) -> Iterator[Agent | None]:
    """Make :func:`current_agent` return ``agent`` inside the block (for sequential code)."""
    held = _tally.get()
    token = _current_agent.set(agent)
    # Inside an asyncio-mode agent's step: its tally, as a plain one, keeps counting.
    usage_token = None if held is None or isinstance(held, TokenUsage) else _tally.set(held.usage)
    try:
        yield agent
    finally:
        if usage_token is not None:
            _tally.reset(usage_token)
        _current_agent.reset(token)
