"""Recording a simulation: ``@record_model``, ``SimulationRecorder``, and reading recordings back.

The submodules keep the release's paths (``mesa_llm.recording.record_model``,
``.simulation_recorder``, ``.agent_analysis``). Recordings go where the user says
(``output_dir``); relative directories go under ``$MESA_LLM_RECORDINGS_DIR`` when set.
"""

from __future__ import annotations

from mesa_llm.recording.agent_analysis import AgentViewer, quick_agent_view
from mesa_llm.recording.record_model import record_model, save_pending_recordings
from mesa_llm.recording.simulation_recorder import (
    RECORDINGS_DIR_ENV,
    SimulationEvent,
    SimulationRecorder,
)

__all__ = [
    "RECORDINGS_DIR_ENV",
    "AgentViewer",
    "SimulationEvent",
    "SimulationRecorder",
    "quick_agent_view",
    "record_model",
    "save_pending_recordings",
]
