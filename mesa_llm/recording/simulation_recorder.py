"""``SimulationRecorder``: events of a simulation, appended safely from any thread, saved as JSON.

The file format is the release's: ``{"metadata": {...}, "events": [...],
"agent_summaries": {...}}``. ``output_dir`` is created when a recording is first
saved (not at construction). A relative ``output_dir`` is resolved under the
environment variable ``MESA_LLM_RECORDINGS_DIR`` when it is set, so a test run or a
harness can redirect every recording of a model written for the release.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import threading
import uuid
import warnings
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["RECORDINGS_DIR_ENV", "SimulationEvent", "SimulationRecorder", "resolve_output_dir"]

logger = logging.getLogger(__name__)

RECORDINGS_DIR_ENV = "MESA_LLM_RECORDINGS_DIR"
FORMATS = ("json", "pickle")


@dataclass
class SimulationEvent:
    """One recorded event: id, UTC time, model step, agent (None: the model), type, content."""

    event_id: str
    timestamp: datetime
    step: int
    agent_id: int | None
    event_type: str
    content: dict[str, Any]
    metadata: dict[str, Any]


def resolve_output_dir(output_dir: str | os.PathLike[str]) -> Path:
    """``output_dir``, under ``$MESA_LLM_RECORDINGS_DIR`` when it is relative and that is set."""
    path = Path(output_dir)
    base = os.environ.get(RECORDINGS_DIR_ENV)
    return Path(base) / path if base and not path.is_absolute() else path


class SimulationRecorder:
    """Records events of ``model`` (``record_event``, ``record_model_event``) and saves them.

    Thread-safe: agents stepping in worker threads or on an event loop may record
    at the same time; every event is kept, with a unique, ordered ``event_id``.
    ``auto_save_interval``: save a checkpoint every that many events.
    """

    def __init__(
        self,
        model: Any,
        output_dir: str | os.PathLike[str] = "recordings",
        record_state_changes: bool = True,
        auto_save_interval: int | None = None,
    ) -> None:
        if auto_save_interval is not None and (
            isinstance(auto_save_interval, bool)
            or not isinstance(auto_save_interval, int)
            or auto_save_interval < 1
        ):
            raise ValueError(
                f"mesa_llm: SimulationRecorder auto_save_interval must be a positive integer "
                f"or None, got {auto_save_interval!r}"
            )
        self.model = model
        self.output_dir = resolve_output_dir(output_dir)
        self.record_state_changes = record_state_changes
        self.auto_save_interval = auto_save_interval
        self.events: list[SimulationEvent] = []
        self.simulation_id = uuid.uuid4().hex[:8]
        self.start_time = datetime.now(UTC)
        self.previous_agent_states: dict[int, dict[str, Any]] = {}
        self.events_since_save = 0
        self.saved_paths: list[Path] = []
        self.simulation_metadata: dict[str, Any] = {
            "simulation_id": self.simulation_id,
            "start_time": self.start_time.isoformat(),
            "model_class": type(model).__name__,
        }
        self._lock = threading.RLock()
        self._unsaved = False

    def record_event(
        self,
        event_type: str,
        content: dict[str, Any] | str | None = None,
        agent_id: int | None = None,
        metadata: dict[str, Any] | None = None,
        recipient_ids: list[int] | None = None,
    ) -> SimulationEvent:
        """Record one event (``message``: ``{"message", "recipient_ids"}``; non-dict: ``data``)."""
        if event_type == "message":
            body: dict[str, Any] = {"message": content, "recipient_ids": list(recipient_ids or [])}
        elif isinstance(content, dict):
            body = content
        else:
            body = {"data": content}
        with self._lock:
            if event_type != "simulation_end" and self.events and self._ended():
                self.events.pop()  # recording goes on after a save: the end marker moves
            event = SimulationEvent(
                event_id=f"{self.simulation_id}_{len(self.events):06d}",
                timestamp=datetime.now(UTC),
                step=getattr(self.model, "steps", 0),
                agent_id=agent_id,
                event_type=event_type,
                content=body,
                metadata=metadata if metadata is not None else {},
            )
            self.events.append(event)
            self._unsaved = True
            self.events_since_save += 1
            if self.auto_save_interval and self.events_since_save >= self.auto_save_interval:
                self.save(f"autosave_{self.simulation_id}_{len(self.events)}.json")
        return event

    def record_model_event(self, event_type: str, content: dict[str, Any]) -> SimulationEvent:
        """Record a model-level event (no agent, metadata ``{"source": "model"}``)."""
        return self.record_event(event_type, content, None, {"source": "model"})

    def get_agent_events(self, agent_id: int) -> list[SimulationEvent]:
        """Every event of one agent, in order."""
        return [event for event in self._snapshot() if event.agent_id == agent_id]

    def get_events_by_type(self, event_type: str) -> list[SimulationEvent]:
        """Every event of one type, in order."""
        return [event for event in self._snapshot() if event.event_type == event_type]

    def get_events_by_step(self, step: int) -> list[SimulationEvent]:
        """Every event of one model step, in order."""
        return [event for event in self._snapshot() if event.step == step]

    def export_agent_memory(self, agent_id: int) -> dict[str, Any]:
        """One agent's events and a summary (counts, types, steps, first and last time)."""
        events = self.get_agent_events(agent_id)
        return {
            "agent_id": agent_id,
            "events": [asdict(event) for event in events],
            "summary": _summary(events),
        }

    @property
    def unsaved(self) -> bool:
        """Whether events were recorded since the last save."""
        return self._unsaved

    def save(self, filename: str | None = None, format: str = "json") -> Path:
        """Write the recording (``json``, or the deprecated ``pickle``) and return its path."""
        if format not in FORMATS:
            raise ValueError(
                f"mesa_llm: Format must be 'json' or 'pickle' (SimulationRecorder.save), "
                f"got {format!r}"
            )
        with self._lock:
            now = datetime.now(UTC)
            if filename is None:
                suffix = "json" if format == "json" else "pkl"
                filename = f"simulation_{self.simulation_id}_{now:%Y%m%d_%H%M%S}.{suffix}"
            if self._ended():
                self.events.pop()
            steps = getattr(self.model, "steps", 0)
            status = _completion_status(self.model)
            self.simulation_metadata.update(
                end_time=now.isoformat(),
                total_steps=steps,
                total_events=len(self.events),
                total_agents=len(getattr(self.model, "agents", ())),
                duration_minutes=(now - self.start_time).total_seconds() / 60,
                completion_status=status,
            )
            end = {"status": status, "final_step": steps, "total_events": len(self.events)}
            self.events.append(
                SimulationEvent(
                    f"{self.simulation_id}_{len(self.events):06d}",
                    now,
                    steps,
                    None,
                    "simulation_end",
                    end,
                    {"source": "model"},
                )
            )
            events = list(self.events)
            data = {
                "metadata": dict(self.simulation_metadata),
                "events": [asdict(event) for event in events],
                "agent_summaries": _agent_summaries(events),
            }
            self._unsaved = False
            self.events_since_save = 0
        path = self.output_dir / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        if format == "json":
            path.write_text(json.dumps(data, indent=2, default=str))
        else:
            warnings.warn(
                "mesa_llm: pickle recordings are deprecated (loading one can run arbitrary "
                "code); use format='json'",
                FutureWarning,
                stacklevel=2,
            )
            path.write_bytes(pickle.dumps(data))
        with self._lock:
            self.saved_paths.append(path)
        logger.info("Simulation recording saved to: %s", path)
        return path

    def get_stats(self) -> dict[str, Any]:
        """Counts: events, agents, types, steps, duration, events per agent."""
        events = self._snapshot()
        agents = {event.agent_id for event in events if event.agent_id is not None}
        return {
            "total_events": len(events),
            "unique_agents": len(agents),
            "event_types": sorted({event.event_type for event in events}),
            "simulation_steps": getattr(self.model, "steps", 0),
            "recording_duration_minutes": (datetime.now(UTC) - self.start_time).total_seconds()
            / 60,
            "events_per_agent": {
                agent: sum(event.agent_id == agent for event in events) for agent in agents
            },
        }

    def _snapshot(self) -> list[SimulationEvent]:
        with self._lock:
            return list(self.events)

    def _ended(self) -> bool:
        return bool(self.events) and self.events[-1].event_type == "simulation_end"


def _summary(events: list[SimulationEvent]) -> dict[str, Any]:
    return {
        "total_events": len(events),
        "event_types": sorted({event.event_type for event in events}),
        "active_steps": sorted({event.step for event in events}),
        "first_event": events[0].timestamp.isoformat() if events else None,
        "last_event": events[-1].timestamp.isoformat() if events else None,
    }


def _agent_summaries(events: list[SimulationEvent]) -> dict[Any, dict[str, Any]]:
    by_agent: dict[Any, list[SimulationEvent]] = {}
    for event in events:
        if event.agent_id is not None:
            by_agent.setdefault(event.agent_id, []).append(event)
    return {agent: _summary(agent_events) for agent, agent_events in by_agent.items()}


def _completion_status(model: Any) -> str:
    max_steps = getattr(model, "max_steps", None)
    if max_steps is None:
        return "unknown"
    return "interrupted" if getattr(model, "steps", 0) < max_steps else "completed"
