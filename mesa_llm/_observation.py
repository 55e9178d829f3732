"""What an ``LLMAgent`` sees: its neighbours within ``vision`` and their visible state."""

from __future__ import annotations

import contextlib
import copy
import inspect
import weakref
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["neighbours", "position", "public_state"]

#: ``vision=-1``: every other agent of the model, whatever the space (mesa-llm 0.3).
SEES_ALL = -1


def neighbours(agent: Any, vision: Any) -> list[Any]:
    """Other agents within ``vision``, by unique_id (agents in the same cell included).

    ``-1``: every other agent of the model. Otherwise uses the agent's ``cell``
    (``mesa.discrete_space``) or its ``pos`` in ``model.grid`` / ``model.space``
    (``mesa.space`` grids, hex grids, networks, continuous space); empty when
    there is neither, or when ``vision`` is None or 0.
    """
    if vision == SEES_ALL:
        found: Iterable[Any] = agent.model.agents
    elif not vision:
        return []
    elif vision < 0:
        raise ValueError(
            f"mesa_llm: agent {agent.unique_id} has vision={vision!r}; valid: a radius > 0, "
            "0 or None (sees nobody) or -1 (sees every agent of the model)"
        )
    elif getattr(agent, "cell", None) is not None:
        neighbourhood = agent.cell.get_neighborhood(radius=int(vision), include_center=True)
        found = [other for each in neighbourhood for other in each.agents]
    else:
        space = getattr(agent.model, "grid", None)
        if space is None:
            space = getattr(agent.model, "space", None)
        get_neighbors = getattr(space, "get_neighbors", None)
        pos = getattr(agent, "pos", None)
        if pos is None or get_neighbors is None:
            return []
        options: dict[str, Any] = {"include_center": True, "radius": vision}
        if _takes_moore(get_neighbors):
            options["moore"] = True
        found = get_neighbors(pos, **options)
    unique = {other.unique_id: other for other in found if other is not agent}
    return [unique[uid] for uid in sorted(unique)]


# get_neighbors function -> whether it takes ``moore``: read once per space class, not per call.
_moore: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


def _takes_moore(get_neighbors: Any) -> bool:
    function = getattr(get_neighbors, "__func__", get_neighbors)
    try:
        return _moore[function]
    except (KeyError, TypeError):  # TypeError: not weakly referenceable, not cached
        pass
    takes = "moore" in inspect.signature(get_neighbors).parameters
    with contextlib.suppress(TypeError):
        _moore[function] = takes
    return takes


def position(agent: Any) -> Any:
    """``agent.pos``, else its cell's coordinate, else None."""
    pos = getattr(agent, "pos", None)
    if pos is not None:
        return pos
    cell = getattr(agent, "cell", None)
    return getattr(cell, "coordinate", None)


def public_state(state: Any) -> Any:
    """A copy of ``internal_state`` without private entries (names starting with ``_``).

    A list drops string items starting with ``_``; a mapping drops such keys and
    keeps the other values.
    """
    if isinstance(state, (dict, Mapping)):  # dict first: isinstance on the ABC alone is slow
        return {k: copy.copy(v) for k, v in state.items() if not _private(k)}
    if isinstance(state, list | tuple):
        return [item for item in state if not _private(item)]
    return copy.copy(state)


def _private(item: Any) -> bool:
    return isinstance(item, str) and item.startswith("_")
