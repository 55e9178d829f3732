"""The sequential engine: one agent at a time, in order, isolated and reported like the others.

It is the reference the parallel runs are compared with, so it shares their
outcomes, raise mode and logging (:mod:`._report`) and their workers
(:mod:`._thread_engine`) wherever an agent cannot run in the caller's thread.
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping, Sequence
from typing import Any

from mesa_llm.parallel_stepping._methods import _is_sync
from mesa_llm.parallel_stepping._options import _Settings
from mesa_llm.parallel_stepping._report import (
    AgentOutcome,
    StepReport,
    _raise_if_fatal,
    _report,
)
from mesa_llm.parallel_stepping._thread_engine import _run_one_threaded, _run_threaded, _ThreadRun


def _step_sequential(
    agents: list[Any], method: str, args: Sequence[Any], kwargs: Mapping[str, Any], s: _Settings
) -> StepReport:
    """Run the agents one at a time, in order, with the parallel modes' isolation and report.

    A sync agent without a timeout runs in the caller's thread, exactly as Mesa
    would call it; an async agent, or any agent with a timeout, runs in a worker
    thread (on that thread's loop) so the timeout can be kept and a running loop in
    the caller's thread is never needed.
    """
    outcomes: list[AgentOutcome] = []
    for agent in agents:
        if s.timeout is None and _is_sync(agent, method):
            run = _ThreadRun(1, method, args, kwargs, s)
            outcome = contextvars.copy_context().run(_run_one_threaded, run, agent, 0)
            _raise_if_fatal(outcome, method, s)
        else:
            [outcome] = _run_threaded([agent], method, args, kwargs, s)
        outcomes.append(outcome)
    return _report(outcomes, method, "sequential", s)
