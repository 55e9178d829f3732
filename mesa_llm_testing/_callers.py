"""Who made an HTTP request: stand-ins for the caller's agent and model run, from its headers.

``FakeLLM.make_request`` reads the caller from ``current_agent()`` (its
``unique_id`` and ``model.steps``). A request that arrives over HTTP carries
that identity in the ``X-Mesa-LLM-*`` headers (``mesa_llm._identity``); the
server makes the request acting as a stand-in agent built from them, so faults
are keyed exactly as the in-process provider keys them. Each run id (one per
model object in the client's process) gets its own stand-in model per step, so
several runs against one server keep their call counts apart.

A request without identity headers (any other client) is keyed by a fingerprint
of its content: the stand-in's ``unique_id`` is ``"fp:<16 hex digits>"`` (blake2b
of the canonical JSON of model, messages, tools, tool_choice and
response_format), with no step, and its call index is the number of earlier
requests with the same fingerprint. Concurrent requests then fault the same way
whatever order they arrive in.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any, Final

from mesa_llm._identity import AGENT_HEADER, RUN_HEADER, STEP_HEADER
from mesa_llm.parallel_stepping import acting_as

__all__ = ["RemoteAgent", "RemoteRuns", "fingerprint"]

_FINGERPRINTED: Final = ("model", "messages", "tools", "tool_choice", "response_format")
_MAX_RUN_STEPS: Final = 4096  # stand-ins kept; the oldest (finished steps) are dropped


class RemoteModel:
    """Stands in for the caller's model at one step: ``steps`` and the ``run_id`` it belongs to."""

    __slots__ = ("__weakref__", "mesa_llm_run", "steps")

    def __init__(self, run: str, steps: int | None) -> None:
        self.mesa_llm_run = run
        self.steps = steps


class RemoteAgent:
    """Stands in for the calling agent: ``unique_id`` and ``model``."""

    __slots__ = ("__weakref__", "model", "unique_id")

    def __init__(self, unique_id: Any, model: RemoteModel | None) -> None:
        self.unique_id = unique_id
        self.model = model

    def __repr__(self) -> str:
        run = getattr(self.model, "mesa_llm_run", None)
        return f"<RemoteAgent {self.unique_id!r} run={run!r}>"


def fingerprint(body: Mapping[str, Any]) -> str:
    """The content key of a request without identity headers: ``"fp:<16 hex digits>"``."""
    content = json.dumps(
        [body.get(k) for k in _FINGERPRINTED], sort_keys=True, separators=(",", ":"), default=str
    )
    return "fp:" + hashlib.blake2b(content.encode(), digest_size=8).hexdigest()


class RemoteRuns:
    """The stand-ins of one server: one model per (run id, step), bounded."""

    def __init__(self) -> None:
        self._models: OrderedDict[tuple[str, int | None], RemoteModel] = OrderedDict()
        self._lock = threading.Lock()

    def caller(self, headers: Mapping[str, str], body: Mapping[str, Any]) -> RemoteAgent | None:
        """The stand-in agent of a request (None: a call outside any agent's step)."""
        run = headers.get(RUN_HEADER)
        agent = headers.get(AGENT_HEADER)
        if run is None and agent is None:
            return RemoteAgent(fingerprint(body), None)
        if agent is None:
            return None
        step = _int_or_none(headers.get(STEP_HEADER))
        return RemoteAgent(_uid(agent), self._model(run or "", step))

    def acting(self, agent: RemoteAgent | None) -> AbstractContextManager[Any]:
        """Make ``current_agent()`` return ``agent`` while the fake builds the request."""
        return acting_as(agent)  # type: ignore[arg-type]

    def _model(self, run: str, step: int | None) -> RemoteModel:
        key = (run, step)
        with self._lock:
            model = self._models.get(key)
            if model is None:
                model = self._models[key] = RemoteModel(run, step)
                while len(self._models) > _MAX_RUN_STEPS:
                    self._models.popitem(last=False)
            return model

    def clear(self) -> None:
        """Forget every run (``POST /admin/reset``)."""
        with self._lock:
            self._models.clear()


def _uid(text: str) -> Any:
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, int | str) and not isinstance(value, bool) else text


def _int_or_none(text: str | None) -> int | None:
    try:
        return None if text is None else int(text)
    except ValueError:
        return None
