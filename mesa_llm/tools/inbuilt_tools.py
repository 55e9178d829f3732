"""mesa-llm 0.3's built-in tools: ``move_one_step``, ``teleport_to_location``, ``speak_to``.

Importing this module registers them globally (bare ``@tool``), so every
release-style ``ToolManager()`` offers them; ``ToolManager()`` imports it on first
construction. Position is ``agent.cell.coordinate`` (``mesa.discrete_space``), else
``agent.pos`` (``mesa.space``). Failures raise; ``call_tools``/``apply_plan`` turn
them into ``"Error: ..."`` results the LLM sees.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from mesa_llm.tools.tool_decorator import tool

__all__ = ["move_one_step", "speak_to", "teleport_to_location"]

logger = logging.getLogger(__name__)

# (dx, dy) on mesa.space grids and continuous space, where North is y + 1.
_DIRECTIONS: dict[str, tuple[int, int]] = {
    "North": (0, 1),
    "South": (0, -1),
    "East": (1, 0),
    "West": (-1, 0),
    "NorthEast": (1, 1),
    "NorthWest": (-1, 1),
    "SouthEast": (1, -1),
    "SouthWest": (-1, -1),
}


def _position(agent: Any) -> tuple[Any, ...]:
    cell = getattr(agent, "cell", None)
    for value in (getattr(cell, "coordinate", None), getattr(agent, "pos", None)):
        if value is not None:
            return tuple(value)
    raise ValueError(f"mesa_llm: agent {agent.unique_id} has no position (neither cell nor pos)")


def _space(agent: Any) -> Any:
    model = agent.model
    return getattr(model, "grid", None) or getattr(model, "space", None)


@tool
def move_one_step(agent: Any, direction: str) -> str:
    """Move the agent one cell in a compass direction.

    Args:
        direction: One of North, South, East, West, NorthEast, NorthWest, SouthEast, SouthWest.

    Returns:
        Where the agent moved, or why it could not.
    """
    from mesa.discrete_space import OrthogonalMooreGrid, OrthogonalVonNeumannGrid

    if direction not in _DIRECTIONS:
        raise ValueError(
            f"mesa_llm: invalid direction {direction!r}; valid: {', '.join(_DIRECTIONS)}"
        )
    dx, dy = _DIRECTIONS[direction]
    space = _space(agent)
    here = _position(agent)
    if isinstance(space, OrthogonalMooreGrid | OrthogonalVonNeumannGrid):
        # (row, col): North is one row up.
        target = (here[0] - dy, here[1] + dx)
        dims = space.dimensions
    else:
        target = (here[0] + dx, here[1] + dy)
        dims = (getattr(space, "width", None), getattr(space, "height", None))
    if None in dims:
        raise ValueError(
            "mesa_llm: move_one_step needs model.grid (a mesa.space grid or an orthogonal "
            "discrete_space grid) or model.space (ContinuousSpace)"
        )
    if getattr(space, "torus", False):
        target = tuple(value % size for value, size in zip(target, dims, strict=True))
    elif not all(0 <= value < size for value, size in zip(target, dims, strict=True)):
        return (
            f"Agent {agent.unique_id} is at the boundary and cannot move {direction}. "
            "Try a different direction."
        )
    return teleport_to_location.function(agent, list(target))


@tool
def teleport_to_location(agent: Any, target_coordinates: list[int | float]) -> str:
    """Move the agent to the given coordinates.

    Args:
        target_coordinates: The coordinates to move to, e.g. [x, y].

    Returns:
        Where the agent moved.
    """
    from mesa.discrete_space import DiscreteSpace
    from mesa.space import ContinuousSpace

    target = tuple(target_coordinates)
    space = _space(agent)
    if isinstance(space, DiscreteSpace):
        cells = getattr(space, "_cells", {})
        if target not in cells:
            raise ValueError(f"mesa_llm: {target} is not a cell of the grid")
        agent.cell = cells[target]
    elif isinstance(space, ContinuousSpace) or hasattr(space, "move_agent"):
        space.move_agent(agent, target)
    else:
        raise ValueError(
            "mesa_llm: teleport_to_location needs model.grid or model.space; the model has neither"
        )
    return f"agent {agent.unique_id} moved to {target}."


@tool
def speak_to(agent: Any, listener_agents_unique_ids: list[int], message: str) -> str:
    """Send a message to other agents; it reaches their memory.

    Args:
        listener_agents_unique_ids: The unique ids of the agents to speak to.
        message: What to say.

    Returns:
        Who received the message.
    """
    ids = _parse_ids(listener_agents_unique_ids)
    recipients = [
        other for other in agent.model.agents if other.unique_id in ids and other is not agent
    ]
    return deliver(agent, message, recipients, record_sender=False)


def _parse_ids(raw: Any) -> set[int]:
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raw = [part for part in raw.strip("[]").split(",") if part.strip()]
    if isinstance(raw, int | str):
        raw = [raw]
    return {int(value) for value in raw}


def deliver(sender: Any, message: str, recipients: list[Any], *, record_sender: bool) -> str:
    """Add ``message`` to each recipient's memory; the status text ``speak_to`` returns."""
    from mesa_llm._memory_protocol import remember

    delivered: list[int] = []
    skipped: list[int] = []
    for recipient in recipients:
        if recipient is sender:
            continue
        if getattr(recipient, "memory", None) is None:
            logger.warning(
                "mesa_llm: agent %s has no memory; message not delivered", recipient.unique_id
            )
            skipped.append(recipient.unique_id)
            continue
        remember(recipient.memory, "message", {"message": message, "sender": sender.unique_id})
        delivered.append(recipient.unique_id)
    if record_sender and getattr(sender, "memory", None) is not None:
        content = {"message": message, "sender": sender.unique_id, "recipients": delivered}
        remember(sender.memory, "message", content)
    if not delivered:
        return f"Could not send message {message!r}: no matching recipients found."
    text = f"sent message {message!r} to {delivered}"
    if skipped:
        text += f"; skipped {skipped} because they have no `memory` attribute"
    return text
