"""The fake LLM's core: what a call answers (a fault, ``side_effect``, ``return_value``, a reply).

``side_effect`` and the reply specs it and ``return_value`` accept are read by
:mod:`mesa_llm_testing._side_effects`.

:class:`FakeCore` knows no way in. The transports import it and feed it requests:
the litellm custom provider (``_provider``) and the OpenAI-compatible HTTP server
(``_http``, ``_server``). The public ``FakeLLM`` (``_fakellm``) is this core with
its ways in, and the one module that imports both. Importing this module imports
neither litellm nor the HTTP server.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol
from unittest.mock import DEFAULT

from mesa_llm_testing._calls import DEFAULT_KEEP_CALLS, CallList, FakeCall, FakeRequest, KeptList
from mesa_llm_testing._fault_answers import truncated_reply
from mesa_llm_testing._faults import FaultKind, FaultPlan, InjectedFault
from mesa_llm_testing._latency import ConstantLatency, LatencyModel, as_latency
from mesa_llm_testing._limits import (
    LimitedCall,
    LoadMeter,
    ProviderLimits,
    Refusal,
    Slot,
    estimate_request_tokens,
)
from mesa_llm_testing._responses import (
    FakeReply,
    FakeToolCall,
    Rng,
    empty_reply,
    generate_reply,
    malformed_reply,
)
from mesa_llm_testing._side_effects import (
    coerce,
    marked,
    scripted,
    side_effect_items,
)

if TYPE_CHECKING:
    from mesa import Agent

__all__ = [
    "ACTIVE_HTTP_BASES",
    "BODY_ERROR_KINDS",
    "DEFAULT",
    "ERROR_KINDS",
    "FakeCore",
    "ReplySource",
]

#: Fault kinds that end a call in an error at the provider layer instead of a (bad) 200
#: reply. Over HTTP, MISSING_FIELDS is a broken 200 and CONNECTION_RESET a cut one, which
#: litellm turns into the same errors.
ERROR_KINDS: Final = frozenset(FaultKind) - {
    FaultKind.MALFORMED_JSON,
    FaultKind.EMPTY_RESPONSE,
    FaultKind.TRUNCATED,
}
#: Error kinds the HTTP layer answers with (the start of) a 200 body.
BODY_ERROR_KINDS: Final = frozenset({FaultKind.MISSING_FIELDS, FaultKind.CONNECTION_RESET})


#: Base URLs of the ``FakeLLM.http()`` endpoints now serving. Calls aimed at one of them
#: go through litellm's real HTTP stack even while ``activate()`` intercepts every call.
ACTIVE_HTTP_BASES: Final[set[str]] = set()


class ReplySource(Protocol):
    """Replies from elsewhere than the core's own rules (a cassette): see ``reply_source``."""

    def reply(self, core: FakeCore, request: FakeRequest) -> FakeReply:
        """The reply of ``request`` (or raise the error it ends in)."""
        ...


_current_agent_getter: Callable[[], Any] | None = None


def _current_agent() -> Any:
    global _current_agent_getter
    if _current_agent_getter is None:
        from mesa_llm.parallel_stepping import current_agent

        _current_agent_getter = current_agent
    return _current_agent_getter()


class FakeCore:
    """What a fake LLM answers and what it records, for any way in (see ``FakeLLM``).

    A transport makes the request of a call (:meth:`make_request`), then either
    lets the core answer it (:meth:`answer`: a reply, or the exception of an error
    fault from :meth:`fault_error`) or decides and shapes the answer itself
    (:meth:`decide_fault`, :meth:`content_reply`, :meth:`record`), as HTTP does.
    """

    def __init__(
        self,
        *,
        return_value: Any = None,
        side_effect: Any = None,
        seed: int = 0,
        faults: FaultPlan | None = None,
        latency: float | LatencyModel = 0.0,
        time_scale: float = 1.0,
        retry_after: float = 1.0,
        keep_calls: int | None = DEFAULT_KEEP_CALLS,
        limits: ProviderLimits | str | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if keep_calls is not None and (
            isinstance(keep_calls, bool) or not isinstance(keep_calls, int) or keep_calls < 0
        ):
            raise ValueError(
                f"mesa_llm_testing: FakeLLM keep_calls must be an integer >= 0 or None "
                f"(keep every call); got {keep_calls!r}"
            )
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"mesa_llm_testing: FakeLLM seed must be an integer; got {seed!r}")
        if (
            isinstance(time_scale, bool)
            or not isinstance(time_scale, int | float)
            or not 0 <= time_scale < float("inf")
        ):
            raise ValueError(
                f"mesa_llm_testing: FakeLLM time_scale must be a number >= 0 (1: wait the "
                f"latency in full, 0.01: wait 1 %, 0: never wait); got {time_scale!r}"
            )
        if retry_after < 0:
            raise ValueError(
                f"mesa_llm_testing: FakeLLM retry_after must be >= 0 seconds; got {retry_after!r}"
            )
        self.return_value = return_value
        self.side_effect = side_effect
        self.seed = seed
        self.faults = faults if faults is not None else FaultPlan(0.0, seed=seed)
        self.latency: LatencyModel = as_latency(latency)
        self.time_scale = float(time_scale)
        self.retry_after = float(retry_after)
        self.calls = CallList(keep_calls)
        # The delays RetryPolicy asked for (the last keep_calls; .total counts all).
        self.retry_sleeps: KeptList[float] = KeptList(keep_calls)
        #: Where replies come from instead of side_effect / return_value / the generator
        #: (a cassette replay): ``reply(core, request) -> FakeReply``, or raises.
        self.reply_source: ReplySource | None = None
        if isinstance(limits, str):
            limits = ProviderLimits.parse(limits)
        if limits is not None and not isinstance(limits, ProviderLimits):
            raise TypeError(
                f"mesa_llm_testing: FakeLLM limits must be ProviderLimits(...), a string like "
                f"'rpm=600,tpm=100000,max_concurrent=8', or None; got {type(limits).__name__}"
            )
        #: The load the fake measures against ``limits`` (None: no limits).
        self.load: LoadMeter | None = None if limits is None else LoadMeter(limits, clock=clock)
        #: Calls refused with a load-driven 429 (not in ``calls``, not faults; see ``limits``).
        self.limited: KeptList[LimitedCall] = KeptList(keep_calls)

    @property
    def limits(self) -> ProviderLimits | None:
        """The provider limits the fake answers 429 beyond (``FakeLLM(limits=...)``), or None."""
        return None if self.load is None else self.load.limits

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"<{name} seed={self.seed} calls={len(self.calls)} faults={self.faults!r}>"

    # ------------------------------------------------------------------ mock vocabulary

    @property
    def side_effect(self) -> Any:
        """An exception (class or instance), a callable of the request, or an iterable; or None."""
        return self._side_effect

    @side_effect.setter
    def side_effect(self, value: Any) -> None:
        self._side_items = side_effect_items(value)  # TypeError for a bad one
        self._side_effect = value

    @property
    def call_count(self) -> int:
        """How many calls were made (also those whose records ``keep_calls`` dropped)."""
        return self.calls.total

    @property
    def called(self) -> bool:
        """Whether any call was made."""
        return bool(self.calls)

    def calls_for(self, agent_id: Any) -> list[FakeCall]:
        """The calls made by one agent (pass its unique_id or the agent)."""
        uid = getattr(agent_id, "unique_id", agent_id)
        return [c for c in list(self.calls) if c.agent == uid]

    def reset_mock(self, *, return_value: bool = False, side_effect: bool = False) -> None:
        """Forget recorded calls and retry sleeps (and optionally return_value / side_effect).

        The fault plan is left alone: use ``faults.reset()`` to restart its counters.
        """
        self.calls.clear()
        self.retry_sleeps.clear()
        self.limited.clear()
        if self.load is not None:
            self.load.reset()
        if return_value:
            self.return_value = None
        if side_effect:
            self.side_effect = None

    # ------------------------------------------------------------------ reply helpers

    @staticmethod
    def text(content: str) -> FakeReply:
        """A reply with text ``content``."""
        return FakeReply(str(content))

    @staticmethod
    def tool_call(name: str, /, **arguments: Any) -> FakeReply:
        """A reply calling tool ``name`` with ``arguments`` (JSON-encoded)."""
        import json

        return FakeReply(None, (FakeToolCall(name, json.dumps(arguments)),))

    @staticmethod
    def tool_calls(*calls: tuple[str, Mapping[str, Any]]) -> FakeReply:
        """A reply with several tool calls: ``tool_calls(("move", {"x": 1}), ("say", {...}))``."""
        import json

        return FakeReply(None, tuple(FakeToolCall(n, json.dumps(dict(a))) for n, a in calls))

    @staticmethod
    def json_reply(obj: Any) -> FakeReply:
        """A reply whose content is ``obj`` as JSON (a dict, list, or pydantic model)."""
        return coerce(obj, "json_reply(obj)")

    # ------------------------------------------------------------------ the core (every layer)

    def take_slot(
        self,
        model: str,
        messages: Sequence[Any] | None,
        tools: Sequence[Any] | None,
        params: Mapping[str, Any] | None,
        layer: str,
    ) -> Slot | Refusal | None:
        """Check ``limits`` before a call takes its call index: a slot, a refusal, or None.

        None: the fake has no limits. A refusal is recorded in :attr:`limited` (with
        the calling agent and step) and shifts no fault: the call never reaches
        :meth:`make_request`. Release the slot once the call is answered.
        """
        load = self.load
        if load is None:
            return None
        outcome = load.admit(estimate_request_tokens(messages, tools, params))
        if isinstance(outcome, Refusal):
            agent = _current_agent()
            uid = None if agent is None else getattr(agent, "unique_id", None)
            step = None if agent is None else getattr(getattr(agent, "model", None), "steps", None)
            self.limited.append(
                LimitedCall(uid, step, model, layer, outcome.limit, outcome.retry_after)
            )
        return outcome

    def admit(
        self,
        model: str,
        messages: Sequence[Any] | None,
        tools: Sequence[Any] | None,
        params: Mapping[str, Any] | None,
        layer: str,
    ) -> Slot | None:
        """:meth:`take_slot`, raising the provider's 429 (:meth:`limit_error`) on a refusal."""
        outcome = self.take_slot(model, messages, tools, params, layer)
        if isinstance(outcome, Refusal):
            raise self.limit_error(model, outcome)
        return outcome

    def limit_error(self, model: str, refusal: Refusal) -> Exception:
        """The exception a load-driven 429 raises at the provider layer (see ``FakeLLM``)."""
        raise NotImplementedError(
            f"mesa_llm_testing: {type(self).__name__} cannot raise a load-driven 429: "
            f"override limit_error(), or use FakeLLM"
        )

    def make_request(
        self,
        model: str,
        messages: Sequence[Any],
        tools: Sequence[Any] | None,
        tool_choice: Any,
        response_format: Any,
        params: dict[str, Any],
        layer: str,
    ) -> FakeRequest:
        """The request of one call: who calls (``current_agent()``), at which step, which index."""
        agent: Agent | None = _current_agent()
        if agent is None:
            uid = step = None
        else:
            uid = getattr(agent, "unique_id", None)
            step = getattr(getattr(agent, "model", None), "steps", None)
        # The model run (over HTTP: a _callers.RemoteModel).
        run = None if agent is None else getattr(agent, "model", None)
        call = self.faults.next_call(agent=uid, step=step, model=run)
        latency = self.latency
        if isinstance(latency, ConstantLatency):  # no draw needed
            delay = latency.delay
        else:
            delay = latency.seconds(Rng(self.seed, uid, step, call, "latency").uniform())
        return FakeRequest(
            model,
            list(messages),
            list(tools) if tools else None,
            tool_choice,
            response_format,
            params,
            uid,
            step,
            call,
            layer,
            agent,
            time.perf_counter(),
            delay,
        )

    def wait_seconds(self, request: FakeRequest) -> float:
        """How long to wait before answering ``request``: its delay times ``time_scale``."""
        return request.delay * self.time_scale

    def decide_fault(self, request: FakeRequest) -> FaultKind | None:
        """The plan's fault for ``request``, recorded as injected at the request's layer."""
        kind = self.faults.decide(agent=request.agent, step=request.step, call=request.call)
        if kind is not None:
            layer = "http" if request.layer == "http" else "provider"
            self.faults.record(
                InjectedFault(
                    request.agent, request.step, request.call, kind, layer, self.faults.test_id
                )
            )
        return kind

    def fault_variant(self, request: FakeRequest, choices: int) -> int:
        """A deterministic choice among ``choices`` shapes of a fault (e.g. 500 or 503)."""
        return self.faults.variant(
            agent=request.agent, step=request.step, call=request.call, choices=choices
        )

    def rng(self, request: FakeRequest, purpose: str = "") -> Rng:
        """The seeded random stream of ``request``: a function of (seed, agent, step, call)."""
        return Rng(self.seed, request.agent, request.step, request.call, purpose)

    def content_reply(self, request: FakeRequest, fault: FaultKind | None) -> FakeReply:
        """The 200 reply: malformed/empty/cut on those faults, else scripted or generated."""
        rng = self.rng(request)
        if fault is not None:  # (looking the kinds up costs more than this test)
            if fault is FaultKind.MALFORMED_JSON:
                return malformed_reply(request.shape, rng).with_ids(rng)
            if fault is FaultKind.EMPTY_RESPONSE:
                return empty_reply()
            if fault in BODY_ERROR_KINDS:  # an error fault: side_effect is not consumed
                return generate_reply(request.shape, rng).with_ids(rng)
        if self.reply_source is not None:  # a cassette replay
            reply = self.reply_source.reply(self, request)
        elif (spec := self._scripted(request)) is DEFAULT or spec is None:
            reply = generate_reply(request.shape, rng).with_ids(rng)
        else:
            reply = coerce(spec, "FakeLLM reply").with_ids(rng)
        if fault is not None and fault is FaultKind.TRUNCATED:
            return truncated_reply(reply)
        return reply

    def _scripted(self, request: FakeRequest) -> Any:
        return scripted(self._side_effect, self._side_items, request, self.return_value)

    def answer(self, request: FakeRequest) -> FakeReply:
        """Answer ``request`` at the direct/provider layer: raise a litellm error or reply."""
        fault = self.decide_fault(request)
        if fault in ERROR_KINDS:
            exc = self.fault_error(request, fault)
            self.record(request, None, exc, fault, getattr(exc, "status_code", None))
            raise exc
        try:
            reply = self.content_reply(request, fault)
        except Exception as exc:
            # Raised on purpose (side_effect) or by a bad reply spec: surface it unchanged,
            # not as the APIConnectionError litellm would wrap it in.
            marked(exc)
            self.record(request, None, exc, fault, None)
            raise
        self.record(request, reply, None, fault, 200)
        return reply

    def fault_error(self, request: FakeRequest, kind: FaultKind) -> Exception:
        """The exception :meth:`answer` raises for an error fault of ``kind``.

        The core knows no client library; ``FakeLLM`` answers with the exceptions a
        real litellm provider raises (``_provider_errors.fault_exception``).
        """
        raise NotImplementedError(
            f"mesa_llm_testing: {type(self).__name__} cannot raise a {kind.value} fault: "
            f"override fault_error(), or use FakeLLM"
        )

    def record(
        self,
        request: FakeRequest,
        response: FakeReply | None,
        exception: BaseException | None,
        fault: FaultKind | None,
        status_code: int | None,
    ) -> FakeCall:
        """Append the record of one call to :attr:`calls`."""
        entry = FakeCall(request, response, exception, fault, status_code, time.perf_counter())
        self.calls.append(entry)
        return entry

    def record_sleep(self, seconds: float) -> None:
        """The retry sleep installed by :meth:`activate`: record the delay, do not wait."""
        self.retry_sleeps.append(float(seconds))
