"""Who is calling, as HTTP headers: the agent, the model step and the model run of a request.

``ModuleLLM`` sends these headers on every request, so a server that injects
faults (``mesa-llm-testing serve``, ``FakeLLM.http()``) can key them on the
caller exactly as the in-process provider does with ``current_agent()``.
Real providers ignore unknown ``X-`` headers.

* ``X-Mesa-LLM-Agent``: the agent's ``unique_id`` as JSON (``3``, ``"trader-1"``).
* ``X-Mesa-LLM-Step``: ``agent.model.steps``.
* ``X-Mesa-LLM-Run``: the model run: unique per model object in this process
  (``"<pid hex>-<n>"``), so several runs against one server keep their call
  counts apart. A call made outside any agent's step sends only the process's
  run id (``"<pid hex>-0"``).
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import weakref
from typing import Any, Final

from mesa_llm.parallel_stepping import current_agent

__all__ = ["AGENT_HEADER", "RUN_HEADER", "STEP_HEADER", "identity_headers", "run_id"]

AGENT_HEADER: Final = "X-Mesa-LLM-Agent"
STEP_HEADER: Final = "X-Mesa-LLM-Step"
RUN_HEADER: Final = "X-Mesa-LLM-Run"

_counter = itertools.count(1)
_lock = threading.Lock()
_runs: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
_by_id: dict[int, str] = {}  # models that cannot be weakly referenced (kept for the process)


def run_id(model: Any) -> str:
    """The run id of ``model`` (``None``: the process's run for calls outside any agent)."""
    if model is None:
        return f"{os.getpid():x}-0"
    with _lock:
        try:
            found = _runs.get(model)
        except TypeError:  # not weak-referenceable (e.g. __slots__ without __weakref__)
            found = _by_id.get(id(model))
            if found is None:
                found = _by_id[id(model)] = f"{os.getpid():x}-{next(_counter)}"
            return found
        if found is None:
            found = _runs[model] = f"{os.getpid():x}-{next(_counter)}"
        return found


def identity_headers(agent: Any = None) -> dict[str, str]:
    """The identity headers of a request made now by ``agent`` (default ``current_agent()``)."""
    if agent is None:
        agent = current_agent()
    if agent is None:
        return {RUN_HEADER: run_id(None)}
    model = getattr(agent, "model", None)
    headers = {
        RUN_HEADER: run_id(model),
        AGENT_HEADER: _as_json(getattr(agent, "unique_id", None)),
    }
    steps = getattr(model, "steps", None)
    if isinstance(steps, int):
        headers[STEP_HEADER] = str(steps)
    return headers


def _as_json(unique_id: Any) -> str:
    # Mesa's unique_ids are ints: str() is their JSON text, without an encoder per call.
    if type(unique_id) is int:
        return str(unique_id)
    return json.dumps(unique_id, default=str)
