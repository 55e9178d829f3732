"""Recording a model step into a ``StepTrace``: who ran in which order, the LLM calls, digests.

:func:`recording_shuffle_do` collects the ``StepReport`` of every
``agents.shuffle_do(name)`` of a step (in every stepping mode); :func:`run_step`
steps the model and turns those reports, the fake's call records and the fault
plan's records into the step's trace, with stable digests (blake2b) of every
request and reply and of the model's random and plain state.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from mesa_llm.parallel_stepping import AgentOutcome, StepReport, TokenUsage
from mesa_llm.parallel_stepping._automatic import (
    _agent_set_types,  # the one list of Mesa set types that define shuffle_do
)
from mesa_llm_testing._calls import FakeCall
from mesa_llm_testing._fake import ERROR_KINDS, FakeCore
from mesa_llm_testing._faults import FaultKind, InjectedFault
from mesa_llm_testing._trace import CallTrace, StepTrace

if TYPE_CHECKING:
    from mesa import Model

__all__ = [
    "Recorder",
    "digest",
    "recording_shuffle_do",
    "rng_digest",
    "run_step",
    "state_digest",
]


# --------------------------------------------------------------------------- one step


def run_step(model: Model, fake: FakeCore, recorder: Recorder, mode: str) -> StepTrace:
    """Step ``model`` once and record the step: outcomes, faults, LLM calls, digests.

    Outcomes come from ``model.step_reports`` when the model keeps them, else from
    the reports ``recorder`` collected (see :func:`recording_shuffle_do`).
    """
    plan = fake.faults
    population = [a.unique_id for a in model.agents]
    calls_before = fake.calls.total
    faults_before = len(plan.injected)
    sleeps_before = fake.retry_sleeps.total
    limited_before = fake.limited.total
    recorder.reports.clear()
    start = time.perf_counter()
    model.step()
    seconds = time.perf_counter() - start

    reports = getattr(model, "step_reports", None)
    if not isinstance(reports, Sequence):
        reports = recorder.reports
    start_order: list[Any] = []
    outcomes: dict[Any, tuple[str, str | None]] = {}
    phases: list[tuple[str, list[Any]]] = []
    for report in reports:
        phases.append((report.method, [o.unique_id for o in report.outcomes]))
        for o in report.outcomes:
            if o.unique_id not in outcomes:
                start_order.append(o.unique_id)
                outcomes[o.unique_id] = ("ok", None)
            if o.status != "ok" and outcomes[o.unique_id][0] == "ok":
                exc = type(o.exception).__name__ if o.exception is not None else None
                outcomes[o.unique_id] = (o.status, exc)

    step_faults = sorted(plan.injected[faults_before:], key=InjectedFault.sort_key)
    llm_calls = _calls_by_agent(_calls_since(fake, calls_before, model.steps), start_order)
    # A fault on the last call of an agent that failed is what ended its step.
    ended = sum(
        1
        for uid, (status, _) in outcomes.items()
        if status != "ok" and llm_calls.get(uid) and llm_calls[uid][-1].fault is not None
    )
    return StepTrace(
        step=model.steps,
        start_order=start_order,
        outcomes=outcomes,
        faults=[f.to_dict() for f in step_faults],
        llm_calls=llm_calls,
        rng_digest=rng_digest(model),
        state_digest=state_digest(model),
        recovered=len(step_faults) - ended,
        retries=fake.retry_sleeps.total - sleeps_before,
        phases=phases,
        population=population,
        seconds=seconds,
        mode=mode,
        usage=TokenUsage.total(report.usage for report in reports).to_dict(),
        limited=_limited_since(fake, limited_before),
    )


def _limited_since(fake: FakeCore, total_before: int) -> dict[Any, int]:
    """uid -> load-driven 429s since the fake had counted ``total_before`` (kept ones by agent)."""
    made = fake.limited.total - total_before
    if not made:
        return {}
    kept = list(fake.limited)[-made:]
    counts = Counter(c.agent for c in kept)
    if made > len(kept):  # records dropped by keep_calls: counted, agent unknown
        counts[None] += made - len(kept)
    return dict(counts)


def _calls_since(fake: FakeCore, total_before: int, step: int) -> list[FakeCall]:
    """The records of the calls made since the fake had counted ``total_before`` calls."""
    made = fake.calls.total - total_before
    kept = list(fake.calls)
    if made > len(kept):
        raise RuntimeError(
            f"mesa_llm_testing: step {step} made {made} LLM calls but the fake keeps only the "
            f"last {len(kept)}; pass llm=FakeLLM(keep_calls=None) (or a larger keep_calls)"
        )
    return kept[len(kept) - made :] if made else []


# --------------------------------------------------------------------------- digests


def digest(text: str, *, size: int = 8) -> str:
    """A short stable digest (blake2b, hex) of ``text``."""
    return hashlib.blake2b(text.encode(), digest_size=size).hexdigest()


def _jsonable(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump()
    if isinstance(value, set | frozenset):
        return sorted(map(repr, value))
    return repr(value) if not isinstance(value, str) else value


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=_jsonable)


def _calls_by_agent(calls: list[FakeCall], start_order: list[Any]) -> dict[Any, list[CallTrace]]:
    grouped: dict[Any, list[FakeCall]] = {}
    for c in calls:
        grouped.setdefault(c.agent, []).append(c)
    order = [uid for uid in start_order if uid in grouped]
    order += sorted((uid for uid in grouped if uid not in set(start_order)), key=repr)
    return {
        uid: [_call_trace(c) for c in sorted(grouped[uid], key=lambda c: c.call)] for uid in order
    }


def _call_trace(c: FakeCall) -> CallTrace:
    request = c.request
    prompt = _dumps(
        {
            "model": request.model,
            "messages": request.messages,
            "tools": request.tools,
            "tool_choice": request.tool_choice,
            "response_format": request.response_format,
        }
    )
    if c.fault in ERROR_KINDS:
        # What the caller raised depends on the layer (the provider raises, the HTTP server
        # answers a status); the agent's outcome keeps the exception the agent saw.
        response = f"error:{c.fault.value}"
    elif c.exception is not None:
        response = f"error:{type(c.exception).__name__}"
    elif c.response is not None:
        reply = c.response
        response = digest(
            _dumps(
                [
                    reply.content,
                    [[tc.name, tc.arguments, tc.id] for tc in reply.tool_calls],
                    reply.finish,
                ]
            )
        )
    else:
        response = "none"
    shape = request.shape
    if shape.tools and shape.tool_mode != "none":
        expects = "tools"
    elif shape.output != "text":
        expects = "json"
    else:
        expects = "text"
    fault = c.fault.value if isinstance(c.fault, FaultKind) else None
    return CallTrace(c.call, digest(prompt), response, expects, fault, c.generated)


def rng_digest(model: Model) -> str:
    """Digest of the model's random state: ``model.random`` and, if present, ``model.rng``."""
    parts = [repr(model.random.getstate())]
    state = getattr(getattr(getattr(model, "rng", None), "bit_generator", None), "state", None)
    if state is not None:
        parts.append(_dumps(state))
    return digest("\n".join(parts), size=16)


def state_digest(model: Model) -> str:
    """``model.state_digest()`` if the model has one, else a digest of agents' plain attributes.

    The fallback covers each agent's public attributes holding plain data
    (numbers, strings, lists, tuples and dicts of them), and its ``pos``.
    """
    own = getattr(model, "state_digest", None)
    if callable(own):
        return str(own())
    agents = []
    for agent in model.agents:
        attrs = {k: v for k, v in vars(agent).items() if not k.startswith("_") and _is_plain(v, 0)}
        attrs["pos"] = getattr(agent, "pos", None)
        agents.append([repr(agent.unique_id), type(agent).__name__, attrs])
    return digest(_dumps(agents), size=16)


def _is_plain(value: Any, depth: int) -> bool:
    if value is None or isinstance(value, bool | int | float | str):
        return True
    if depth > 4:
        return False
    if isinstance(value, list | tuple):
        return all(_is_plain(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v, depth + 1) for k, v in value.items())
    return False


# --------------------------------------------------------------------------- observing shuffle_do


class Recorder:
    """The ``StepReport`` of every ``shuffle_do(name)`` call made during a step."""

    def __init__(self) -> None:
        self.reports: list[StepReport] = []


@contextlib.contextmanager
def recording_shuffle_do(recorder: Recorder) -> Iterator[Recorder]:
    """Record a ``StepReport`` for every ``agents.shuffle_do("method")`` while the block runs.

    In parallel modes the report is the one mesa_llm's automatic stepping leaves on
    ``model.last_step_report``. Otherwise Mesa's own ``shuffle_do`` runs unchanged
    (same shuffle, same calls; an agent's exception propagates) and the agents it
    calls, in order, are recorded.
    """
    saved = {cls: cls.__dict__["shuffle_do"] for cls in _agent_set_types()}
    for cls, underlying in saved.items():
        cls.shuffle_do = _make_recording(underlying, recorder)  # type: ignore[attr-defined]
    try:
        yield recorder
    finally:
        for cls, underlying in saved.items():
            cls.shuffle_do = underlying  # type: ignore[attr-defined]


def _make_recording(underlying: Callable[..., Any], recorder: Recorder) -> Callable[..., Any]:
    @functools.wraps(underlying)
    def shuffle_do(self: Any, method: Any, *args: Any, **kwargs: Any) -> Any:
        first = next(iter(self._agents), None) if isinstance(method, str) else None
        model = getattr(first, "model", None)
        if model is None:
            return underlying(self, method, *args, **kwargs)
        if getattr(model, "parallel_stepping", False) and getattr(
            underlying, "__mesa_llm_patched__", False
        ):
            before = getattr(model, "last_step_report", None)
            result = underlying(self, method, *args, **kwargs)
            report = getattr(model, "last_step_report", None)
            if report is not None and report is not before:
                recorder.reports.append(report)
            return result
        report = StepReport([], method, "sequential")
        recorder.reports.append(report)

        def call(agent: Any, *a: Any, **k: Any) -> Any:
            start = time.perf_counter()
            try:
                value = getattr(agent, method)(*a, **k)
            except BaseException as exc:
                elapsed = time.perf_counter() - start
                report.outcomes.append(
                    AgentOutcome(agent, agent.unique_id, "error", None, exc, elapsed)
                )
                raise
            elapsed = time.perf_counter() - start
            report.outcomes.append(AgentOutcome(agent, agent.unique_id, "ok", value, None, elapsed))
            return value

        return underlying(self, call, *args, **kwargs)

    return shuffle_do
