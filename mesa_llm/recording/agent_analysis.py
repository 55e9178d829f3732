"""``AgentViewer``, ``quick_agent_view``: read a saved recording back and show agents' events.

Output goes to ``console`` (anything with ``print(text, style=None)``); by default
a ``rich`` console when ``rich`` is installed, else plain text on stdout. This is
the one place of the library that writes to a terminal: it is a viewer.
"""

from __future__ import annotations

import json
import pickle
import sys
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any, Protocol, TextIO

__all__ = ["AgentViewer", "quick_agent_view"]

DECISION_TYPES = ("observation", "plan", "action")
VIEWS = ("info", "timeline", "conversations", "decisions", "summary")


class Console(Protocol):
    """Where the viewer writes: ``print(text, style=None)``."""

    def print(self, text: str, style: str | None = None) -> None: ...


class PlainConsole:
    """A console writing plain text lines to a stream (stdout by default)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream

    def print(self, text: str, style: str | None = None) -> None:
        """Write ``text`` and a newline (``style`` is ignored)."""
        print(text, file=self.stream or sys.stdout)


def default_console() -> Console:
    """A ``rich`` console if ``rich`` is installed, else :class:`PlainConsole`."""
    try:
        from rich.console import Console as RichConsole
    except ImportError:
        return PlainConsole()
    rich = RichConsole()
    return _RichConsole(rich)


class _RichConsole:
    def __init__(self, console: Any) -> None:
        self.console = console

    def print(self, text: str, style: str | None = None) -> None:
        self.console.print(text, style=style, markup=False, highlight=False)


class AgentViewer:
    """A saved recording (JSON, or deprecated pickle ``.pkl``), organised by agent."""

    def __init__(self, recording_path: str | Path, console: Console | None = None) -> None:
        self.recording_path = Path(recording_path)
        self.data: dict[str, Any] = self._load_recording()
        self.events: list[dict[str, Any]] = self.data["events"]
        self.metadata: dict[str, Any] = self.data.get("metadata", {})
        self.agent_summaries: dict[str, Any] = self.data.get("agent_summaries", {})
        self.agent_events = self._organize_events_by_agent()
        self.console = console if console is not None else default_console()

    def _load_recording(self) -> dict[str, Any]:
        if self.recording_path.suffix == ".pkl":
            warnings.warn(
                "mesa_llm: pickle recordings are deprecated (loading one can run arbitrary "
                "code); use JSON recordings",
                FutureWarning,
                stacklevel=3,
            )
            return pickle.loads(self.recording_path.read_bytes())
        return json.loads(self.recording_path.read_text())

    def _organize_events_by_agent(self) -> dict[Any, list[dict[str, Any]]]:
        by_agent: dict[Any, list[dict[str, Any]]] = defaultdict(list)
        for event in self.events:
            if event.get("agent_id") is not None:
                by_agent[event["agent_id"]].append(event)
        for events in by_agent.values():
            events.sort(key=lambda event: str(event.get("timestamp", "")))
        return dict(by_agent)

    def _format_event(self, event: dict[str, Any]) -> str:
        """One event as text (message, observation, plan, action, state change, others)."""
        try:
            return _format(event.get("event_type", "unknown"), event.get("content", {}))
        except Exception as exc:  # a malformed event is shown, never fatal
            return f"ERROR formatting {event.get('event_type', 'unknown')} event: {exc}"

    def show_simulation_info(self) -> None:
        """The recording's metadata and an overview of its agents."""
        self.console.print("Simulation Information", style="bold blue")
        for key, value in self.metadata.items():
            minutes = key == "duration_minutes" and isinstance(value, int | float)
            shown = f"{value:.2f} minutes" if minutes else value
            self.console.print(f"{key.replace('_', ' ').title()}: {shown}")
        self.list_agents()

    def list_agents(self) -> None:
        """Every agent with its event count and event types."""
        self.console.print("Agents", style="bold blue")
        for agent_id in sorted(self.agent_events, key=str):
            events = self.agent_events[agent_id]
            types = ", ".join(sorted({event["event_type"] for event in events}))
            self.console.print(f"Agent {agent_id}: {len(events)} events ({types})")

    def view_agent_timeline(self, agent_id: Any) -> None:
        """Every event of one agent, in time order."""
        if not self._known(agent_id):
            return
        events = self.agent_events[agent_id]
        self.console.print(f"Timeline for Agent {agent_id} ({len(events)} events)", "bold blue")
        for event in events:
            self.console.print(f"Step {event['step']} | {event['event_type'].title()}")
            self.console.print(self._format_event(event))

    def view_agent_conversations(self, agent_id: Any) -> None:
        """Messages one agent sent and received, in time order."""
        if not self._known(agent_id):
            return
        self.console.print(f"Conversations for Agent {agent_id}", style="bold blue")
        found = sorted(self._conversations(agent_id), key=lambda m: str(m[2].get("timestamp")))
        if not found:
            self.console.print("No conversations found for this agent.", style="yellow")
        for direction, other, event in found:
            message = event["content"].get("message", "")
            if direction == "SENT":
                to = event["content"].get("recipient_ids", [])
                self.console.print(f"SENT step {event['step']}: to agents {to}: {message}")
            else:
                self.console.print(f"RECEIVED step {event['step']}: from agent {other}: {message}")

    def view_agent_decisions(self, agent_id: Any) -> None:
        """One agent's observation, plan and action events, step by step."""
        if not self._known(agent_id):
            return
        self.console.print(f"Decision-Making for Agent {agent_id}", style="bold blue")
        steps: dict[Any, list[dict[str, Any]]] = defaultdict(list)
        for event in self.agent_events[agent_id]:
            if event["event_type"] in DECISION_TYPES:
                steps[event["step"]].append(event)
        for step in sorted(steps):
            self.console.print(f"Step {step} Decision Cycle", style="bold yellow")
            for event in sorted(steps[step], key=lambda e: DECISION_TYPES.index(e["event_type"])):
                self.console.print(self._format_event(event))

    def view_agent_summary(self, agent_id: Any) -> None:
        """Counts of one agent's events by type, and messages received."""
        if not self._known(agent_id):
            return
        events = self.agent_events[agent_id]
        counts: dict[str, int] = defaultdict(int)
        for event in events:
            counts[event["event_type"]] += 1
        received = sum(d == "RECEIVED" for d, _, _ in self._conversations(agent_id))
        self.console.print(f"Agent {agent_id} Summary", style="bold blue")
        self.console.print(f"Total Events: {len(events)}")
        self.console.print(f"Messages Sent: {counts['message']}")
        self.console.print(f"Messages Received: {received}")
        for kind in sorted(counts):
            if kind != "message":
                self.console.print(f"{kind.replace('_', ' ').title()}: {counts[kind]}")

    def interactive_mode(self, ask: Any = input) -> None:
        """A prompt loop: ``info``, ``list``, ``<view> <agent id>``, ``quit``."""
        self.console.print("Commands: info, list, timeline N, conversations N, decisions N, ")
        self.console.print("summary N, quit")
        while True:
            command = str(ask("command> ")).strip().lower()
            if command in ("quit", "q"):
                return
            if command in ("info", "list"):
                self.show_simulation_info() if command == "info" else self.list_agents()
                continue
            parts = command.split()
            if len(parts) != 2 or parts[0] not in VIEWS[1:] or not parts[1].lstrip("-").isdigit():
                self.console.print(f"Usage: <{'|'.join(VIEWS[1:])}> <agent id>", style="red")
                continue
            getattr(self, f"view_agent_{parts[0]}")(int(parts[1]))

    def _known(self, agent_id: Any) -> bool:
        if agent_id in self.agent_events:
            return True
        self.console.print(f"Agent {agent_id} not found.", style="red")
        return False

    def _conversations(self, agent_id: Any) -> list[tuple[str, Any, dict[str, Any]]]:
        found = [
            ("SENT", agent_id, e)
            for e in self.agent_events[agent_id]
            if e["event_type"] == "message"
        ]
        for other, events in self.agent_events.items():
            if other == agent_id:
                continue
            for event in events:
                content = event.get("content") or {}
                if event["event_type"] == "message" and agent_id in content.get(
                    "recipient_ids", []
                ):
                    found.append(("RECEIVED", other, event))
        return found


def _format(event_type: str, content: Any) -> str:
    if not isinstance(content, dict):
        return f"{event_type.upper()}: {content}"
    if event_type == "message":
        return f"MESSAGE to {content.get('recipient_ids', [])}: {content.get('message', '')}"
    if event_type == "observation" and "self_state" in content:
        state = content["self_state"]
        lines = ["OBSERVATION", f"Position: {state.get('location', 'Unknown')}"]
        if "internal_state" in state:
            lines.append(f"Internal State: {', '.join(map(str, state['internal_state']))}")
        return "\n".join(lines)
    if event_type == "plan" and "plan_content" in content:
        return f"PLANNING\nReasoning: {content['plan_content'].get('content', '')}"
    if event_type == "action":
        return f"ACTION: {content.get('action_type', content.get('data', ''))}"
    if event_type in ("state_change", "simulation_start", "simulation_end"):
        title = event_type.upper().replace("_", " ")
        return "\n".join([title, *(f"{key}: {value}" for key, value in content.items())])
    heading = {"observation": "OBSERVATION", "plan": "PLANNING"}.get(event_type)
    body = content.get("data", content)
    return f"{heading}\n{body}" if heading else f"{event_type.upper()}: {body}"


def quick_agent_view(
    recording_path: str | Path,
    agent_id: Any = None,
    view_type: str = "summary",
    console: Console | None = None,
) -> None:
    """Show one view of a recording: ``info`` (or no agent), ``timeline``, ``conversations``,
    ``decisions``, else ``summary``."""
    viewer = AgentViewer(recording_path, console=console)
    if agent_id is None or view_type == "info":
        viewer.show_simulation_info()
    elif view_type in VIEWS:
        getattr(viewer, f"view_agent_{view_type}")(agent_id)
    else:
        viewer.view_agent_summary(agent_id)
