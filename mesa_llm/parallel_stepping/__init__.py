"""Parallel stepping for Mesa agents, resilient to per-agent failures.

Three modes run a method on many agents:

* ``"asyncio"``: agents with an async ``a<method>`` (e.g. ``astep``) are awaited
  concurrently on one event loop; agents with only the sync method run in worker
  threads so they never block the loop.
* ``"threading"``: agents run in a reusable thread pool; async methods run on an
  event loop owned by each worker thread and reused across steps.
* ``"sequential"``: agents run one at a time, in the order given (Mesa's shuffle
  order under automatic stepping), with the same isolation, report, ``on_error``,
  ``timeout`` and logging as the parallel modes: the reference the parallel runs
  are compared with. A sync agent without a timeout runs in the caller's thread;
  an async agent, or any agent with a timeout, runs in a worker thread.

By default (``on_error="isolate"``) every agent runs to completion whatever the
others raise; each failure is logged once on this package's logger
(``mesa_llm.parallel_stepping``) and returned
in a :class:`StepReport`. ``on_error="raise"`` is the debugging mode: the first
failure propagates as the original exception once the other agents have been
cancelled (asyncio) or finished (threads).

:func:`enable_automatic_parallel_stepping` patches Mesa's ``shuffle_do`` so that
``self.agents.shuffle_do("step")`` runs in parallel when ``model.parallel_stepping``
is truthy, with exactly Mesa's shuffle (same RNG draws, agents started in that
order). Importing this package patches nothing.

The package has one private module per job (see ``docs/architecture.md``); this
module only re-exports their public names.
"""

from __future__ import annotations

from mesa_llm._usage import TokenUsage

# `X as X`: also importable from here but not in __all__: constants and type aliases.
from mesa_llm.parallel_stepping._asyncio_engine import step_agents_parallel
from mesa_llm.parallel_stepping._automatic import (
    automatic_stepping_settings,
    disable_automatic_parallel_stepping,
    enable_automatic_parallel_stepping,
    parallel_stepping,
)
from mesa_llm.parallel_stepping._context import acting_as, current_agent
from mesa_llm.parallel_stepping._options import DEFAULT_MAX_WORKERS as DEFAULT_MAX_WORKERS
from mesa_llm.parallel_stepping._options import MODES as MODES
from mesa_llm.parallel_stepping._options import ON_ERROR as ON_ERROR
from mesa_llm.parallel_stepping._options import Mode as Mode
from mesa_llm.parallel_stepping._options import OnError as OnError
from mesa_llm.parallel_stepping._report import BLOCKING_WARNING_SECONDS as BLOCKING_WARNING_SECONDS
from mesa_llm.parallel_stepping._report import AgentOutcome, StepReport
from mesa_llm.parallel_stepping._report import Status as Status
from mesa_llm.parallel_stepping._sync import step_agents_parallel_sync
from mesa_llm.parallel_stepping._thread_engine import step_agents_multithreaded

__all__ = [
    "AgentOutcome",
    "StepReport",
    "TokenUsage",
    "acting_as",
    "automatic_stepping_settings",
    "current_agent",
    "disable_automatic_parallel_stepping",
    "enable_automatic_parallel_stepping",
    "parallel_stepping",
    "step_agents_multithreaded",
    "step_agents_parallel",
    "step_agents_parallel_sync",
]
