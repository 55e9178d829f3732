"""Automatic stepping: Mesa's ``shuffle_do`` patched to step in parallel, ``do_async``, teardown.

:func:`enable_automatic_parallel_stepping` patches Mesa's agent-set classes so that
``self.agents.shuffle_do("step")`` runs through the engines when
``model.parallel_stepping`` is truthy, with exactly Mesa's shuffle (same RNG draws,
agents started in that order). :func:`disable_automatic_parallel_stepping` restores
Mesa's methods and shuts the library's loop and thread pools down.
"""

from __future__ import annotations

import contextlib
import functools
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from mesa_llm.parallel_stepping._asyncio_engine import _step_async
from mesa_llm.parallel_stepping._context import _depth
from mesa_llm.parallel_stepping._options import Mode, OnError, _Settings, _settings
from mesa_llm.parallel_stepping._report import StepReport
from mesa_llm.parallel_stepping._state import (
    _close_loop_thread,
    _drain_then,
    _enabled_settings,
    _on_loop_thread,
    _set_enabled,
    _state_lock,
    _stepping,
)
from mesa_llm.parallel_stepping._sync import step_agents_parallel_sync
from mesa_llm.parallel_stepping._workers import _pools

__all__ = [
    "automatic_stepping_settings",
    "disable_automatic_parallel_stepping",
    "enable_automatic_parallel_stepping",
    "parallel_stepping",
]

# Mesa's own methods, saved while patched; both containers are only mutated in place.
_originals: dict[type, dict[str, Any]] = {}
# Models given a last_step_report: disabling sets it back to None, so it is never stale.
_reported: weakref.WeakSet[Any] = weakref.WeakSet()


def _agent_set_types() -> list[type]:
    """Mesa's agent-set classes that define ``shuffle_do`` (``_HardKeyAgentSet`` on Mesa >= 3.5)."""
    import mesa.agent

    found: list[type] = []
    candidates: list[Any] = [getattr(mesa.agent, "AgentSet", None)]
    try:
        import mesa.agentset as agentset_module
    except ImportError:
        agentset_module = None
    if agentset_module is not None:
        candidates += [
            getattr(agentset_module, "AgentSet", None),
            getattr(agentset_module, "_HardKeyAgentSet", None),
        ]
    for cls in candidates:
        if isinstance(cls, type) and "shuffle_do" in cls.__dict__ and cls not in found:
            found.append(cls)
    return found


def _shuffled(agentset: Any) -> list[Any]:
    """The agents in the order Mesa's ``shuffle_do`` would step them, with the same RNG draws."""
    store = agentset._agents
    if hasattr(store, "keyrefs"):  # AgentSet: a WeakKeyDictionary
        refs = list(store.keyrefs())
        agentset.random.shuffle(refs)
        return [a for r in refs if (a := r()) is not None]
    agents = list(store)  # _HardKeyAgentSet: strong keys
    agentset.random.shuffle(agents)
    return agents


def _make_shuffle_do(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def shuffle_do(self: Any, method: str | Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        settings = _enabled_settings()
        first = next(iter(self._agents), None) if isinstance(method, str) else None
        model = getattr(first, "model", None)
        if settings is None or model is None or not getattr(model, "parallel_stepping", False):
            if settings is not None and model is not None:
                model.last_step_report = None  # Mesa's stepping reports nothing: not stale
            return original(self, method, *args, **kwargs)
        agents = _shuffled(self)
        report = step_agents_parallel_sync(
            agents,
            method=method,  # type: ignore[arg-type]
            mode=settings.mode,  # type: ignore[arg-type]
            args=args,
            kwargs=kwargs,
        )
        model.last_step_report = report
        _reported.add(model)
        return self

    shuffle_do.__mesa_llm_patched__ = True  # type: ignore[attr-defined]
    return shuffle_do


async def _do_async(self: Any, method: str, *args: Any, **kwargs: Any) -> StepReport:
    """Run ``method`` concurrently on every agent of the set; return a :class:`StepReport`."""
    s = _enabled_settings() or _Settings()
    with _stepping():
        return await _step_async(list(self), method, args, kwargs, s)


def enable_automatic_parallel_stepping(
    mode: Mode = "asyncio",
    *,
    on_error: OnError = "isolate",
    timeout: float | None = None,
    max_concurrency: int | None = None,
    max_workers: int | None = None,
) -> None:
    """Make ``agents.shuffle_do(name)`` run in parallel on models with ``parallel_stepping`` set.

    Patches ``shuffle_do`` (and adds ``do_async``) on Mesa's agent-set classes, including
    ``_HardKeyAgentSet`` on Mesa >= 3.5. Idempotent: calling it again only changes the
    settings. ``mode`` is ``"asyncio"``, ``"threading"`` or ``"sequential"`` (one agent at
    a time in Mesa's shuffle order, isolated and reported like the parallel modes).
    Every such step leaves its :class:`StepReport` on ``model.last_step_report``; while
    enabled, a model with ``parallel_stepping`` off is stepped by Mesa's own
    ``shuffle_do`` and its ``last_step_report`` is set to None.
    """
    settings = _settings(mode, on_error, timeout, max_concurrency, max_workers)
    with _state_lock:
        if not _originals:
            for cls in _agent_set_types():
                saved = {"shuffle_do": cls.__dict__["shuffle_do"]}
                if "do_async" in cls.__dict__:
                    saved["do_async"] = cls.__dict__["do_async"]
                _originals[cls] = saved
                cls.shuffle_do = _make_shuffle_do(saved["shuffle_do"])  # type: ignore[attr-defined]
                cls.do_async = _do_async  # type: ignore[attr-defined]
        _set_enabled(settings)


def disable_automatic_parallel_stepping() -> None:
    """Restore Mesa's exact ``shuffle_do``, stop the event loop and shut the thread pools down.

    Steps running in other threads are waited for, not cancelled (steps nested in
    them go on). Calling it from inside an agent's step is an error (the step would
    wait for itself). Safe to call from code running in an event loop. Every model
    given a ``last_step_report`` gets ``None`` there, so no report outlives the mode.
    """
    if _depth.get() or _on_loop_thread():
        raise RuntimeError(
            "mesa_llm: disable_automatic_parallel_stepping() was called from inside an "
            "agent's step; call it after the step has returned"
        )
    _drain_then(_teardown)


def _teardown() -> None:
    """Restore Mesa's methods, close the loop and the pools (with ``_state_lock`` held)."""
    for cls, saved in _originals.items():
        cls.shuffle_do = saved["shuffle_do"]  # type: ignore[attr-defined]
        if "do_async" in saved:
            cls.do_async = saved["do_async"]  # type: ignore[attr-defined]
        else:
            with contextlib.suppress(AttributeError):
                delattr(cls, "do_async")
    _originals.clear()
    _set_enabled(None)
    for model in list(_reported):
        model.last_step_report = None
    _reported.clear()
    # Still under the lock: no step can start on the loop or pools being shut down.
    _close_loop_thread()
    _pools.shutdown()


@contextlib.contextmanager
def parallel_stepping(
    mode: Mode = "asyncio",
    *,
    on_error: OnError = "isolate",
    timeout: float | None = None,
    max_concurrency: int | None = None,
    max_workers: int | None = None,
) -> Iterator[None]:
    """Enable automatic parallel stepping inside the block; restore the previous state on exit."""
    previous = _enabled_settings()
    enable_automatic_parallel_stepping(
        mode,
        on_error=on_error,
        timeout=timeout,
        max_concurrency=max_concurrency,
        max_workers=max_workers,
    )
    try:
        yield
    finally:
        if previous is None:
            disable_automatic_parallel_stepping()
        else:
            enable_automatic_parallel_stepping(
                previous.mode,  # type: ignore[arg-type]
                on_error=previous.on_error,  # type: ignore[arg-type]
                timeout=previous.timeout,
                max_concurrency=previous.max_concurrency,
                max_workers=previous.max_workers,
            )


def automatic_stepping_settings() -> dict[str, Any] | None:
    """The mode and options automatic stepping is enabled with, or None when it is off.

    The keys are the keyword arguments of :func:`enable_automatic_parallel_stepping`,
    so ``enable_automatic_parallel_stepping(**settings)`` puts them back.
    """
    settings = _enabled_settings()
    if settings is None:
        return None
    return {
        "mode": settings.mode,
        "on_error": settings.on_error,
        "timeout": settings.timeout,
        "max_concurrency": settings.max_concurrency,
        "max_workers": settings.max_workers,
    }
