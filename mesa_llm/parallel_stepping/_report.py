"""What happened in a step: the outcome of each agent, the report, and where failures are logged.

Every engine (asyncio, threading, sequential) builds its outcomes, raises in raise
mode and logs through the functions here, so the three report and log alike.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal, NoReturn

from mesa_llm._usage import FRESH, TokenUsage, fresh_tally, tally
from mesa_llm.errors import AgentTimeoutError, CircuitOpenError

if TYPE_CHECKING:
    from mesa_llm.parallel_stepping._options import _Settings

__all__ = ["AgentOutcome", "StepReport"]

# The package's logger, whichever of its modules logs: users filter on this one name.
logger = logging.getLogger("mesa_llm.parallel_stepping")

Status = Literal["ok", "error", "timeout", "cancelled"]

#: An async agent holding the event loop this long without awaiting is logged as blocking it.
BLOCKING_WARNING_SECONDS: Final = 0.1


@dataclass(slots=True)
class AgentOutcome:
    """What happened to one agent in a step.

    ``blocked`` is the longest stretch, in seconds, that the agent's async method
    held the event loop without awaiting (asyncio mode only; 0.0 otherwise). While
    it does, no other agent runs and no timeout can fire.

    Treat an outcome as read-only. In asyncio mode it is also the agent's context during
    its step: tasks the agent started and left running keep counting their tokens into
    its ``usage`` and take ``current_agent()`` from its ``agent``.
    """

    agent: Any
    unique_id: Any
    status: Status
    value: Any = None
    exception: BaseException | None = None
    elapsed: float = 0.0
    blocked: float = 0.0
    #: Tokens of the LLM replies ``ModuleLLM`` returned during the agent's step (None: not
    #: counted, e.g. an agent cancelled before it started).
    usage: TokenUsage | None = None

    @property
    def ok(self) -> bool:
        """True if the agent's method returned normally."""
        return self.status == "ok"

    def __str__(self) -> str:
        what = type(self.agent).__name__
        if self.exception is None:
            return f"agent {self.unique_id} ({what}): {self.status} in {self.elapsed * 1e3:.1f} ms"
        exc = self.exception
        return (
            f"agent {self.unique_id} ({what}): {self.status} {type(exc).__name__}: {exc} "
            f"after {self.elapsed * 1e3:.1f} ms"
        )


# ``usage`` is read through a property over its slot: an outcome made with ``usage=FRESH``
# (the asyncio engine's, which is also the agent's tally holder during its step, see
# ``mesa_llm._usage``) makes its own zero tally when first read or first counted in. Agents
# that make no LLM call then cost no ``TokenUsage`` unless someone looks; whoever looks sees
# one, the same each time, of that outcome alone.
_usage_slot: Any = AgentOutcome.__dict__["usage"]
AgentOutcome.usage = property(  # type: ignore[assignment,misc]
    lambda self: fresh_tally(_usage_slot.__get__, _usage_slot.__set__, self),
    _usage_slot.__set__,
    doc="Tokens of the LLM replies ``ModuleLLM`` returned during the agent's step (None: not "
    "counted, e.g. an agent cancelled before it started).",
)


#: ``_set_usage(outcome, usage)``: set the ``usage`` slot itself (no property in between).
_set_usage: Any = _usage_slot.__set__


def _counted(outcome: AgentOutcome) -> TokenUsage | None:
    """The outcome's tally if it counted anything (a fresh tally not made yet counts nothing)."""
    usage = _usage_slot.__get__(outcome)
    return None if usage is FRESH else usage  # type: ignore[no-any-return]


@dataclass(slots=True)
class StepReport:
    """One :class:`AgentOutcome` per agent, in the order the agents were started."""

    outcomes: list[AgentOutcome] = field(default_factory=list)
    method: str = "step"
    mode: str = "asyncio"

    @property
    def succeeded(self) -> list[AgentOutcome]:
        """Outcomes of the agents whose method returned normally, in start order."""
        return [o for o in self.outcomes if o.status == "ok"]

    @property
    def failed(self) -> list[AgentOutcome]:
        """Outcomes of the agents that raised, timed out or were cancelled, in start order."""
        return [o for o in self.outcomes if o.status != "ok"]

    @property
    def ok(self) -> bool:
        """True if every agent succeeded (an empty step is ok)."""
        return all(o.status == "ok" for o in self.outcomes)

    @property
    def errors(self) -> dict[Any, BaseException]:
        """Map of unique_id to the exception of every failed agent."""
        return {o.unique_id: o.exception for o in self.outcomes if o.exception is not None}

    @property
    def open_circuits(self) -> dict[str, list[Any]]:
        """Map of model to the unique_ids of agents failed fast by its open circuit."""
        circuits: dict[str, list[Any]] = {}
        for o in self.outcomes:
            if isinstance(o.exception, CircuitOpenError):
                circuits.setdefault(o.exception.model, []).append(o.unique_id)
        return circuits

    @property
    def usage(self) -> TokenUsage:
        """Prompt and completion tokens of every agent's LLM replies in this step, summed."""
        return TokenUsage.total(map(_counted, self.outcomes))

    def __len__(self) -> int:
        return len(self.outcomes)

    def __iter__(self) -> Iterator[AgentOutcome]:
        return iter(self.outcomes)

    def raise_for_failures(self) -> None:
        """Raise an ``ExceptionGroup`` of the failures (each noted with its agent), if any."""
        failed = self.failed
        if not failed:
            return
        excs = []
        for o in failed:
            assert o.exception is not None
            _note_agent(o.exception, o.agent, self.method)
            excs.append(o.exception)
        raise BaseExceptionGroup(
            f"mesa_llm: {len(failed)} of {len(self.outcomes)} agents failed in "
            f"'{self.method}' ({self.mode} mode)",
            excs,
        )

    def __str__(self) -> str:
        n_failed = sum(o.status != "ok" for o in self.outcomes)
        lines = [
            f"StepReport({self.method!r}, {self.mode}): {len(self.outcomes)} agents, "
            f"{len(self.outcomes) - n_failed} ok, {n_failed} failed"
        ]
        lines += [f"  {o}" for o in self.outcomes if o.status != "ok"]
        return "\n".join(lines)


# --------------------------------------------------------------------------- outcomes


def _since(start: float) -> float:
    return time.perf_counter() - start


def _succeeded(
    agent: Any, value: Any, elapsed: float, blocked: float = 0.0, usage: TokenUsage | None = None
) -> AgentOutcome:
    """The outcome of an agent whose method returned ``value`` (``usage``: this context's tally)."""
    if usage is None:
        usage = tally()
    return AgentOutcome(agent, agent.unique_id, "ok", value, None, elapsed, blocked, usage)


def _failed(agent: Any, exc: BaseException, elapsed: float) -> AgentOutcome:
    """The outcome of an agent that raised ``exc`` (its status says error, timeout or cancelled)."""
    status = _status_of(exc, agent)
    return AgentOutcome(agent, agent.unique_id, status, None, exc, elapsed, usage=tally())


def _fail(outcome: AgentOutcome, exc: BaseException, elapsed: float) -> AgentOutcome:
    """Make ``outcome`` (made before its agent ran) say that the agent raised ``exc``."""
    outcome.status = _status_of(exc, outcome.agent)
    outcome.value = None
    outcome.exception = exc
    outcome.elapsed = elapsed
    return outcome


def _cancelled(agent: Any, exc: BaseException | None = None) -> AgentOutcome:
    """The outcome of an agent stopped before it finished (or started) by the step itself."""
    return AgentOutcome(agent, agent.unique_id, "cancelled", None, exc)


def _status_of(exc: BaseException, agent: Any) -> Status:
    if isinstance(exc, AgentTimeoutError) and exc.agent is agent:
        return "timeout"
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    return "error"


def _is_abort(exc: BaseException | None) -> bool:
    """True for what stops the whole step (KeyboardInterrupt, SystemExit), not one agent."""
    return exc is not None and not isinstance(exc, (Exception, asyncio.CancelledError))


# --------------------------------------------------------------------------- raising


def _note_agent(exc: BaseException, agent: Any, method: str) -> None:
    note = (
        f"mesa_llm: raised by agent {getattr(agent, 'unique_id', None)} "
        f"({type(agent).__name__}.{method})"
    )
    if note not in getattr(exc, "__notes__", ()):
        exc.add_note(note)


def _raise_failure(exc: BaseException, agent: Any, method: str) -> NoReturn:
    """Raise an agent's failure in raise mode, noted with the agent that raised it."""
    _note_agent(exc, agent, method)
    raise exc


def _raise_if_fatal(outcome: AgentOutcome, method: str, s: _Settings) -> None:
    """Raise an interrupt from an agent, or in raise mode its failure (noted with the agent)."""
    exc = outcome.exception
    if exc is None:
        return
    if _is_abort(exc):
        raise exc
    if s.on_error == "raise":
        _raise_failure(exc, outcome.agent, method)


# --------------------------------------------------------------------------- the report


def _log_failure(agent: Any, method: str, exc: BaseException) -> None:
    model = getattr(agent, "model", None)
    logger.error(
        "mesa_llm: agent %s (%s.%s) failed at step %s: %s: %s",
        getattr(agent, "unique_id", None),
        type(agent).__name__,
        method,
        getattr(model, "steps", "?"),
        type(exc).__name__,
        exc,
        exc_info=(type(exc), exc, exc.__traceback__),
    )


def _report(outcomes: list[AgentOutcome], method: str, mode: str, s: _Settings) -> StepReport:
    """The step's report; the one place every engine logs failures and loop-blocking agents.

    Agents failed fast by an open circuit are logged as one warning per model, not one
    error each: a provider outage is one event, however many agents it stops.
    """
    warn_after = BLOCKING_WARNING_SECONDS
    if s.timeout is not None:
        warn_after = min(warn_after, s.timeout)
    report = StepReport(outcomes, method, mode)
    isolate = s.on_error == "isolate"
    circuit_open = False
    for o in outcomes:  # once per agent of every step: the common case costs two tests
        exc = o.exception
        if exc is not None:
            if isinstance(exc, CircuitOpenError):
                circuit_open = True
                continue
            if isolate:
                _log_failure(o.agent, method, exc)
        if o.blocked >= warn_after:
            logger.warning(
                "mesa_llm: agent %s (%s.a%s) blocked the event loop for %.3f s without "
                "awaiting; no other agent ran and no timeout could fire meanwhile. Await "
                "blocking work (asyncio.to_thread), give the agent a sync %s() instead, "
                "or use threading mode",
                o.unique_id,
                type(o.agent).__name__,
                method,
                o.blocked,
                method,
            )
    if isolate and circuit_open:
        _log_open_circuits(report)
    return report


def _log_open_circuits(report: StepReport) -> None:
    for model, ids in report.open_circuits.items():
        first = next(o for o in report.outcomes if o.unique_id == ids[0])
        shown = ", ".join(map(str, ids[:10])) + (", ..." if len(ids) > 10 else "")
        logger.warning(
            "mesa_llm: %d agent%s failed fast in '%s' at step %s: the circuit for %s is open "
            "(%s); agents: %s",
            len(ids),
            "s" * (len(ids) > 1),
            report.method,
            getattr(getattr(first.agent, "model", None), "steps", "?"),
            model,
            first.exception,
            shown,
        )
