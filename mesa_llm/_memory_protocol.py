"""How the agent and reasoning talk to a memory: mesa-llm 0.3's protocol, or ours' older one.

The protocol (``add_to_memory(type, content)``, ``aadd_to_memory``,
``process_step(pre_step)``, ``aprocess_step``, ``get_prompt_ready()``) is what
release memories (``STLTMemory``, ``ShortTermMemory(agent, n)``, ...) provide;
a model may assign any of them to ``agent.memory``. A memory without it (ours'
``ShortTermMemory(capacity)``: ``add_observation``/``add_plan``/``render``) keeps
working through the fallbacks here.
"""

from __future__ import annotations

import inspect
from typing import Any

__all__ = [
    "abort",
    "aprocess",
    "aremember",
    "process",
    "prompt_text",
    "remember",
    "remember_observation",
    "remember_plan",
]


def remember(memory: Any, kind: str, content: dict[str, Any]) -> None:
    """Add ``content`` of type ``kind`` to ``memory`` if it takes typed entries."""
    add = getattr(memory, "add_to_memory", None)
    if add is not None:
        add(type=kind, content=content)


async def aremember(memory: Any, kind: str, content: dict[str, Any]) -> None:
    """Async ``remember`` (``aadd_to_memory`` when the memory has it)."""
    add = getattr(memory, "aadd_to_memory", None)
    if add is None:
        remember(memory, kind, content)
        return
    result = add(type=kind, content=content)
    if inspect.isawaitable(result):
        await result


def remember_observation(memory: Any, obs: Any) -> None:
    """Record an observation (typed entry, or ours' ``add_observation``)."""
    if hasattr(memory, "add_to_memory"):
        remember(memory, "observation", _obs_content(obs))
    elif hasattr(memory, "add_observation"):
        memory.add_observation(obs)


async def aremember_observation(memory: Any, obs: Any) -> None:
    """Async ``remember_observation``."""
    if hasattr(memory, "aadd_to_memory"):
        await aremember(memory, "observation", _obs_content(obs))
    else:
        remember_observation(memory, obs)


def remember_plan(memory: Any, plan: Any, content: dict[str, Any] | None = None) -> None:
    """Record a plan (typed entry ``{"content": ...}`` or ``content``, or ours' ``add_plan``)."""
    if hasattr(memory, "add_to_memory"):
        remember(memory, "plan", content if content is not None else {"content": str(plan)})
    elif hasattr(memory, "add_plan"):
        memory.add_plan(plan)


def prompt_text(memory: Any) -> str:
    """The memory as prompt text (``get_prompt_ready()`` or ours' ``render()``)."""
    for name in ("get_prompt_ready", "render"):
        method = getattr(memory, name, None)
        if method is not None:
            return str(method())
    return ""


def process(memory: Any, *, pre_step: bool) -> None:
    """The two-phase step protocol: snapshot before the step, finalize after it."""
    method = getattr(memory, "process_step", None)
    if method is not None:
        method(pre_step=pre_step)


async def aprocess(memory: Any, *, pre_step: bool) -> None:
    """Async ``process`` (``aprocess_step`` when the memory has it)."""
    method = getattr(memory, "aprocess_step", None)
    if method is None:
        process(memory, pre_step=pre_step)
        return
    result = method(pre_step=pre_step)
    if inspect.isawaitable(result):
        await result


def abort(memory: Any, error: BaseException | None) -> None:
    """Close a step that raised (``abort_step``), when the memory has the two-phase protocol."""
    method = getattr(memory, "abort_step", None)
    if method is not None:
        method(error)


def _obs_content(obs: Any) -> dict[str, Any]:
    if isinstance(obs, dict):
        return dict(obs)
    return {"self_state": obs.self_state, "local_state": obs.local_state}
