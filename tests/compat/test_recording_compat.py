"""mesa-llm 0.3.2 recording, used as a release user uses it; files go to tmp paths only."""

from __future__ import annotations

import asyncio
import io
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from mesa import Agent, Model

from mesa_llm.parallel_stepping import step_agents_parallel_sync
from mesa_llm.recording.agent_analysis import AgentViewer, quick_agent_view
from mesa_llm.recording.record_model import record_model, save_pending_recordings
from mesa_llm.recording.simulation_recorder import SimulationEvent, SimulationRecorder


@pytest.fixture(autouse=True)
def recordings_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Relative recording directories land under tmp_path, never in the repository."""
    monkeypatch.setenv("MESA_LLM_RECORDINGS_DIR", str(tmp_path))
    return tmp_path


class Speaker(Agent):
    """Records a message to every peer each step (release agents expose ``recorder``)."""

    def __init__(self, model: Model) -> None:
        super().__init__(model)
        self.recorder: SimulationRecorder | None = None

    def step(self) -> None:
        peers = [a.unique_id for a in self.model.agents if a is not self]
        self.recorder.record_event("message", f"hi {self.model.steps}", self.unique_id, None, peers)
        self.recorder.record_event(
            "observation", {"self_state": {"location": (0, 0)}}, self.unique_id
        )

    async def astep(self) -> None:
        await asyncio.sleep(0)
        self.step()


@record_model(output_dir="recordings")
class Village(Model):
    def __init__(self, n: int = 3, seed: int = 1) -> None:
        super().__init__(seed=seed)
        self.max_steps = 2
        for _ in range(n):
            Speaker(self)

    def step(self) -> None:
        self.agents.shuffle_do("step")


def test_record_model_records_steps_and_saves_a_readable_file(recordings_dir: Path) -> None:
    model = Village()
    assert all(agent.recorder is model.recorder for agent in model.agents)
    model.step()
    model.step()
    path = model.save_recording()
    assert path.parent == recordings_dir / "recordings"
    data = json.loads(path.read_text())
    assert set(data) == {"metadata", "events", "agent_summaries"}
    assert data["metadata"]["model_class"] == "Village"
    assert data["metadata"]["completion_status"] == "completed"
    assert data["metadata"]["total_steps"] == 2 and data["metadata"]["total_agents"] == 3
    types = [event["event_type"] for event in data["events"]]
    assert types[0] == "step_start" and types[-1] == "simulation_end"
    assert types.count("step_start") == types.count("step_end") == 2
    assert types.count("message") == 6
    ids = [event["event_id"] for event in data["events"]]
    assert ids == [f"{model.recorder.simulation_id}_{i:06d}" for i in range(len(ids))]
    message = next(event for event in data["events"] if event["event_type"] == "message")
    assert message["content"] == {
        "message": "hi 1",
        "recipient_ids": message["content"]["recipient_ids"],
    }
    assert len(message["content"]["recipient_ids"]) == 2
    assert set(data["agent_summaries"]) == {str(agent.unique_id) for agent in model.agents}
    assert data["events"][-1]["content"] == {
        "status": "completed",
        "final_step": 2,
        "total_events": 16,
    }


def test_recorder_api(tmp_path: Path) -> None:
    model = Model(seed=1)
    recorder = SimulationRecorder(model=model, output_dir=tmp_path / "out", auto_save_interval=3)
    assert not (tmp_path / "out").exists()  # created on the first save only
    recorder.record_event("plan", "go north", agent_id=1)
    recorder.record_event("plan", {"plan_content": {"content": "go"}}, agent_id=2)
    recorder.record_model_event("weather", {"rain": True})  # third event: an autosave
    assert (tmp_path / "out" / f"autosave_{recorder.simulation_id}_3.json").exists()
    event = recorder.get_events_by_type("plan")[0]
    assert isinstance(event, SimulationEvent) and event.content == {"data": "go north"}
    assert [e.agent_id for e in recorder.get_events_by_step(0)] == [1, 2, None, None]
    assert recorder.export_agent_memory(2)["summary"]["event_types"] == ["plan"]
    assert recorder.get_stats()["events_per_agent"] == {1: 1, 2: 1}
    with pytest.raises(ValueError, match="Format must be 'json' or 'pickle'"):
        recorder.save(format="xml")
    with pytest.raises(AttributeError, match="did you forget to decorate"):
        record_model(type("Plain", (Model,), {})).save_recording(Model(seed=1))


@pytest.mark.parametrize("mode", ["asyncio", "threading"])
def test_parallel_agents_lose_no_event(mode: str) -> None:
    model = Village(n=20)
    model.parallel_stepping = True
    for _ in range(3):
        model.recorder.record_model_event("step_start", {"step": model.steps})
        report = step_agents_parallel_sync(list(model.agents), mode=mode)
        assert report.ok, report.errors
    events = model.recorder.events
    assert len(events) == 3 + 20 * 2 * 3
    assert len({event.event_id for event in events}) == len(events)
    assert all(len(model.recorder.get_agent_events(a.unique_id)) == 6 for a in model.agents)


def test_threads_recording_at_once_lose_nothing() -> None:
    recorder = SimulationRecorder(model=Model(seed=1), output_dir="threads")
    start = threading.Barrier(8)

    def write(agent_id: int) -> None:
        start.wait()
        for i in range(300):
            recorder.record_event("action", {"i": i}, agent_id=agent_id)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(recorder.events) == 8 * 300
    assert [e.event_id for e in recorder.events] == [
        f"{recorder.simulation_id}_{i:06d}" for i in range(8 * 300)
    ]


def test_exit_save_writes_only_unsaved_recordings(recordings_dir: Path) -> None:
    model = Village()
    model.step()
    saved = model.save_recording("manual.json")
    assert saved in save_pending_recordings() or not model.recorder.unsaved
    assert not model.recorder.unsaved and save_pending_recordings() == []
    model.step()
    [path] = [p for p in save_pending_recordings() if p.parent == saved.parent]
    assert json.loads(path.read_text())["metadata"]["total_steps"] == 2
    assert path.parent == recordings_dir / "recordings"


def test_agent_viewer_reads_a_recording_back(tmp_path: Path) -> None:
    model = Village(n=2)
    model.step()
    path = model.save_recording()
    out = io.StringIO()

    class Console:
        def print(self, text: str, style: Any = None) -> None:
            out.write(f"{text}\n")

    viewer = AgentViewer(str(path), console=Console())
    first = min(viewer.agent_events)
    assert viewer.metadata["model_class"] == "Village"
    assert len(viewer.agent_events) == 2
    viewer.view_agent_timeline(first)
    viewer.view_agent_conversations(first)
    viewer.view_agent_summary(first)
    viewer.view_agent_timeline(99)
    text = out.getvalue()
    assert "MESSAGE to" in text and "hi 1" in text and "Position: [0, 0]" in text
    assert "RECEIVED step 1: from agent" in text and "Messages Received: 1" in text
    assert "Agent 99 not found." in text
    answers = iter(["decisions 1", "bogus", "q"])
    viewer.interactive_mode(ask=lambda prompt: next(answers))
    assert "Decision-Making for Agent 1" in out.getvalue() and "Usage:" in out.getvalue()
    quick_agent_view(path, agent_id=None, console=Console())
    assert "Simulation Information" in out.getvalue()
