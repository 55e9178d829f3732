"""``@record_model``: a Mesa model class gets a ``SimulationRecorder``, step events, a save at exit.

``@record_model`` or ``@record_model(output_dir=..., auto_save_interval=...,
save_at_exit=True)``: after the model's ``__init__``, ``model.recorder`` is a
``SimulationRecorder`` (the keyword arguments but ``save_at_exit`` go to it), also
set on every agent that has a ``recorder`` attribute; each ``step`` records
``step_start`` and ``step_end``; ``model.save_recording(filename=None,
format="json")`` saves. At interpreter exit, recordings with unsaved events are
saved (``save_at_exit=False``: never); the exit hook holds no reference to the
model, so recorded models are freed as usual.
"""

from __future__ import annotations

import atexit
import functools
import logging
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, overload

from mesa_llm.recording.simulation_recorder import SimulationRecorder

__all__ = ["record_model"]

logger = logging.getLogger(__name__)

ModelClass = TypeVar("ModelClass", bound=type)

_AT_EXIT: weakref.WeakSet[SimulationRecorder] = weakref.WeakSet()
_AT_EXIT_LOCK = threading.Lock()
_hook_registered = False


def _attach_recorder_to_agents(model: Any, recorder: SimulationRecorder) -> None:
    """Set ``recorder`` on every agent of ``model`` that has a ``recorder`` attribute."""
    for agent in list(model.agents):
        if hasattr(agent, "recorder"):
            agent.recorder = recorder


@overload
def record_model(cls: ModelClass, *, save_at_exit: bool = ..., **kwargs: Any) -> ModelClass: ...


@overload
def record_model(
    cls: None = None, *, save_at_exit: bool = ..., **kwargs: Any
) -> Callable[[ModelClass], ModelClass]: ...


def record_model(
    cls: ModelClass | None = None, *, save_at_exit: bool = True, **kwargs: Any
) -> ModelClass | Callable[[ModelClass], ModelClass]:
    """Instrument a Mesa ``Model`` subclass with a ``SimulationRecorder`` (see the module doc)."""
    if cls is None:

        def decorate(actual: ModelClass) -> ModelClass:
            return record_model(actual, save_at_exit=save_at_exit, **kwargs)

        return decorate
    model_class: Any = cls  # its methods are replaced below
    original_init = model_class.__init__
    original_step = getattr(model_class, "step", None)

    @functools.wraps(original_init)
    def init_wrapper(self: Any, *args: Any, **init_kwargs: Any) -> None:
        original_init(self, *args, **init_kwargs)
        self.recorder = SimulationRecorder(model=self, **kwargs)
        _attach_recorder_to_agents(self, self.recorder)
        if save_at_exit:
            _save_at_exit(self.recorder)

    model_class.__init__ = init_wrapper

    if original_step is not None:

        @functools.wraps(original_step)
        def step_wrapper(self: Any, *args: Any, **step_kwargs: Any) -> Any:
            recorder = getattr(self, "recorder", None)
            if recorder is not None:
                recorder.record_model_event("step_start", {"step": self.steps})
            result = original_step(self, *args, **step_kwargs)
            if recorder is not None:
                _attach_recorder_to_agents(self, recorder)  # agents added during the step
                recorder.record_model_event("step_end", {"step": self.steps})
            return result

        model_class.step = step_wrapper

    model_class.save_recording = _save_recording
    return cls


def _save_recording(self: Any, filename: str | None = None, format: str = "json") -> Path:
    """Save this model's recording (``SimulationRecorder.save``) and return the file's path."""
    recorder = getattr(self, "recorder", None)
    if recorder is None:
        raise AttributeError(
            "mesa_llm: Recorder not initialised - did you forget to decorate the model with "
            "@record_model?"
        )
    return recorder.save(filename=filename, format=format)


def _save_at_exit(recorder: SimulationRecorder) -> None:
    """Remember ``recorder`` (weakly) for the one exit hook."""
    global _hook_registered
    with _AT_EXIT_LOCK:
        _AT_EXIT.add(recorder)
        if not _hook_registered:
            atexit.register(save_pending_recordings)
            _hook_registered = True


def save_pending_recordings() -> list[Path]:
    """Save every live ``@record_model`` recording that has unsaved events; return the paths."""
    with _AT_EXIT_LOCK:
        recorders = list(_AT_EXIT)
    saved = []
    for recorder in recorders:
        if recorder.unsaved:
            try:
                saved.append(recorder.save())
            except Exception:
                logger.exception("mesa_llm: saving the recording %s failed", recorder.simulation_id)
    return saved
