"""``FakeLLM``: a deterministic LLM in ``unittest.mock`` vocabulary, with call records and faults.

One behaviour, three ways in: :meth:`FakeLLM.complete` (direct, in-process), the
litellm custom provider ``mesa-fake/...`` (:meth:`FakeLLM.activate`), and an
OpenAI-compatible HTTP server on a loopback socket (:meth:`FakeLLM.http`). Importing
this module imports neither litellm nor the HTTP server.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final
from unittest.mock import DEFAULT

from mesa_llm_testing._faults import FaultKind, FaultPlan, InjectedFault
from mesa_llm_testing._responses import (
    FakeReply,
    FakeToolCall,
    RequestShape,
    Rng,
    empty_reply,
    generate_reply,
    malformed_reply,
)

if TYPE_CHECKING:
    from mesa import Agent

__all__ = [
    "DEFAULT",
    "CallList",
    "FakeCall",
    "FakeLLM",
    "FakeReply",
    "FakeRequest",
    "FakeToolCall",
    "SideEffectExhaustedError",
]

#: Fault kinds that end a call in an error instead of a (bad) 200 reply.
ERROR_KINDS: Final = frozenset(
    {
        FaultKind.RATE_LIMIT,
        FaultKind.TIMEOUT,
        FaultKind.SERVER_ERROR,
        FaultKind.CONNECTION_ERROR,
    }
)
#: Attribute set on exceptions the fake raised on purpose, so litellm's wrapping can be undone.
PASSTHROUGH_MARK: Final = "_mesa_fake_raised"


#: Base URLs of the ``FakeLLM.http()`` endpoints now serving. Calls aimed at one of them
#: go through litellm's real HTTP stack even while ``activate()`` intercepts every call.
ACTIVE_HTTP_BASES: Final[set[str]] = set()


class SideEffectExhaustedError(RuntimeError):
    """``FakeLLM.side_effect`` was an iterable and every item has been used."""


@dataclass(frozen=True, slots=True)
class FakeRequest:
    """One request to the fake: what was asked, by whom (agent unique_id, step), which call."""

    model: str
    messages: list[Any]
    tools: list[Any] | None
    tool_choice: Any
    response_format: Any
    params: dict[str, Any]
    agent: Any
    step: int | None
    call: int
    layer: str  # "direct" | "provider" | "http"
    agent_object: Any = field(default=None, repr=False, compare=False)
    started: float = field(default=0.0, repr=False, compare=False)  # time.perf_counter()

    @property
    def prompt(self) -> str | None:
        """The text of the last user message, if any."""
        for message in reversed(self.messages):
            role = (
                message.get("role")
                if isinstance(message, Mapping)
                else getattr(message, "role", None)
            )
            if role == "user":
                content = (
                    message.get("content")
                    if isinstance(message, Mapping)
                    else getattr(message, "content", None)
                )
                if isinstance(content, list):  # content parts
                    return " ".join(
                        str(p.get("text", "")) for p in content if isinstance(p, Mapping)
                    )
                return None if content is None else str(content)
        return None

    @property
    def shape(self) -> RequestShape:
        """Which tools and output format the request asks for."""
        return RequestShape.of(self.messages, self.tools, self.tool_choice, self.response_format)


@dataclass(frozen=True, slots=True)
class FakeCall:
    """The record of one call: the request, and the reply or exception it ended in."""

    request: FakeRequest
    response: FakeReply | None
    exception: BaseException | None
    fault: FaultKind | None
    status_code: int | None  # HTTP status sent (200 for replies); None for transport errors
    ended: float = field(default=0.0, repr=False, compare=False)  # time.perf_counter()

    @property
    def agent(self) -> Any:
        """The calling agent's unique_id (None outside any agent's step)."""
        return self.request.agent

    @property
    def step(self) -> int | None:
        """The model step (``agent.model.steps``) of the call."""
        return self.request.step

    @property
    def call(self) -> int:
        """The call's index among its agent's calls in that step."""
        return self.request.call

    @property
    def model(self) -> str:
        """The model string the caller asked for."""
        return self.request.model

    @property
    def messages(self) -> list[Any]:
        """The messages sent."""
        return self.request.messages

    @property
    def tools(self) -> list[Any] | None:
        """The tools offered, if any."""
        return self.request.tools

    @property
    def layer(self) -> str:
        """``"direct"``, ``"provider"`` or ``"http"``."""
        return self.request.layer


#: How many call records a FakeLLM keeps by default (``FakeLLM(keep_calls=...)``).
DEFAULT_KEEP_CALLS: Final = 10_000


class CallList(list[FakeCall]):
    """The calls made to a fake, oldest first; ``.last`` is the newest.

    Holds at most ``keep`` records (None: all): the oldest are dropped first, so a
    long run's memory stays flat. :attr:`total` counts every call ever recorded.
    """

    def __init__(self, keep: int | None = DEFAULT_KEEP_CALLS) -> None:
        super().__init__()
        self.keep = keep
        self.total = 0
        self._append_lock = threading.Lock()

    def append(self, call: FakeCall) -> None:
        """Record ``call``, dropping the oldest record beyond ``keep``; thread-safe."""
        with self._append_lock:
            super().append(call)
            self.total += 1
            if self.keep is not None and len(self) > self.keep:
                del self[0]

    def clear(self) -> None:
        """Forget every record and restart :attr:`total`."""
        with self._append_lock:
            super().clear()
            self.total = 0

    @property
    def last(self) -> FakeCall:
        """The most recent call; IndexError if there was none."""
        if not self:
            raise IndexError("mesa_llm_testing: FakeLLM has not been called yet")
        return self[-1]


class _ItemIterator:
    """A thread-safe iterator over a ``side_effect`` iterable, counting what it gave."""

    __slots__ = ("_it", "_lock", "used")

    def __init__(self, items: Iterable[Any]) -> None:
        self._it = iter(items)
        self._lock = threading.Lock()
        self.used = 0

    def next(self, request: FakeRequest) -> Any:
        with self._lock:
            try:
                item = next(self._it)
            except StopIteration:
                raise _marked(
                    SideEffectExhaustedError(
                        f"mesa_llm_testing: FakeLLM.side_effect is exhausted: it gave {self.used} "
                        f"replies and call #{self.used + 1} (agent {request.agent}, "
                        f"step {request.step}, "
                        f"call {request.call}) asked for another; give more items, or set "
                        f"return_value and side_effect=None"
                    )
                ) from None
            self.used += 1
        return item


def _is_exception(value: Any) -> bool:
    return isinstance(value, BaseException) or (
        isinstance(value, type) and issubclass(value, BaseException)
    )


def _is_reply_spec(value: Any) -> bool:
    return (
        isinstance(value, str | bytes | Mapping | FakeReply)
        or callable(getattr(value, "model_dump", None))  # ModelResponse / pydantic models
    )


_current_agent_getter: Callable[[], Any] | None = None


def _current_agent() -> Any:
    global _current_agent_getter
    if _current_agent_getter is None:
        from mesa_llm.parallel_stepping import current_agent

        _current_agent_getter = current_agent
    return _current_agent_getter()


def _coerce(spec: Any, where: str) -> FakeReply:
    """Turn a reply spec (text, JSON value, ModelResponse, pydantic model) into a reply."""
    import json

    if isinstance(spec, FakeReply):
        return spec
    if isinstance(spec, str):
        return FakeReply(spec)
    if isinstance(spec, dict | list):
        return FakeReply(json.dumps(spec))
    if hasattr(spec, "choices") and callable(getattr(spec, "model_dump", None)):
        return FakeReply.from_model_response(spec)
    if callable(getattr(spec, "model_dump_json", None)):
        return FakeReply(spec.model_dump_json())
    raise TypeError(
        f"mesa_llm_testing: {where} must be str (text), dict or list (JSON content), a "
        f"litellm ModelResponse, a pydantic model, or FakeLLM.text/tool_call/json_reply(...); "
        f"got {type(spec).__name__}"
    )


class FakeLLM:
    """A deterministic fake LLM with ``unittest.mock`` vocabulary.

    What a call answers, in order: a fault from ``faults`` (the plan decides per
    agent, step and call index); else ``side_effect`` (an exception to raise, a
    callable of the :class:`FakeRequest`, or an iterable consumed one item per
    call); else ``return_value`` (text, a dict or list as JSON content, a
    ``ModelResponse``, or a helper reply); else a seeded reply that is a pure
    function of ``(seed, agent, step, call index)``: a tool call to one of the
    request's tools with arguments generated from its JSON schema (text once the
    last message is a tool result), JSON matching a requested schema, or a short
    sentence. A ``side_effect`` callable may return ``unittest.mock.DEFAULT`` to
    fall through to ``return_value`` / the generator. Error faults do not consume
    ``side_effect`` items.

    ``latency`` (seconds) is waited before every answer (asyncio paths do not block
    the loop). The last ``keep_calls`` calls (default 10,000; None: all) are
    recorded in :attr:`calls`, so memory stays flat over long runs; :attr:`call_count`
    counts them all. The fault plan's call index counts each agent's calls per step
    of its model (see :mod:`mesa_llm_testing._faults`). Retries requested while
    :meth:`activate` is active are recorded in :attr:`retry_sleeps` instead of slept.
    """

    def __init__(
        self,
        *,
        return_value: Any = None,
        side_effect: Any = None,
        seed: int = 0,
        faults: FaultPlan | None = None,
        latency: float = 0.0,
        retry_after: float = 1.0,
        keep_calls: int | None = DEFAULT_KEEP_CALLS,
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
        if latency < 0:
            raise ValueError(
                f"mesa_llm_testing: FakeLLM latency must be >= 0 seconds; got {latency!r}"
            )
        if retry_after < 0:
            raise ValueError(
                f"mesa_llm_testing: FakeLLM retry_after must be >= 0 seconds; got {retry_after!r}"
            )
        self.return_value = return_value
        self.side_effect = side_effect
        self.seed = seed
        self.faults = faults if faults is not None else FaultPlan(0.0, seed=seed)
        self.latency = float(latency)
        self.retry_after = float(retry_after)
        self.calls = CallList(keep_calls)
        self.retry_sleeps: list[float] = []

    def __repr__(self) -> str:
        return f"<FakeLLM seed={self.seed} calls={len(self.calls)} faults={self.faults!r}>"

    # ------------------------------------------------------------------ mock vocabulary

    @property
    def side_effect(self) -> Any:
        """An exception (class or instance), a callable of the request, or an iterable; or None."""
        return self._side_effect

    @side_effect.setter
    def side_effect(self, value: Any) -> None:
        self._side_items: _ItemIterator | None = None
        if value is None or _is_exception(value) or callable(value):
            self._side_effect = value
            return
        if _is_reply_spec(value) or not isinstance(value, Iterable):
            raise TypeError(
                "mesa_llm_testing: FakeLLM.side_effect must be an exception (class or instance), "
                "a callable taking the request, or an iterable of replies/exceptions; "
                f"got {type(value).__name__} (for one fixed reply use return_value=...)"
            )
        self._side_items = _ItemIterator(value)
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
        return _coerce(obj, "json_reply(obj)")

    # ------------------------------------------------------------------ direct calls

    def complete(
        self,
        messages: Sequence[Any] | None = None,
        *,
        prompt: str | None = None,
        model: str = "mesa-fake/direct",
        tools: Sequence[Any] | None = None,
        tool_choice: Any = None,
        response_format: Any = None,
        **params: Any,
    ) -> FakeReply:
        """Answer in-process (no litellm); error faults raise the provider's litellm exceptions."""
        request = self._direct_request(
            messages, prompt, model, tools, tool_choice, response_format, params
        )
        if self.latency:
            time.sleep(self.latency)
        return self.answer(request)

    async def acomplete(
        self,
        messages: Sequence[Any] | None = None,
        *,
        prompt: str | None = None,
        model: str = "mesa-fake/direct",
        tools: Sequence[Any] | None = None,
        tool_choice: Any = None,
        response_format: Any = None,
        **params: Any,
    ) -> FakeReply:
        """Async :meth:`complete`; ``latency`` is awaited, not slept."""
        request = self._direct_request(
            messages, prompt, model, tools, tool_choice, response_format, params
        )
        if self.latency:
            await asyncio.sleep(self.latency)
        return self.answer(request)

    def _direct_request(
        self,
        messages: Sequence[Any] | None,
        prompt: str | None,
        model: str,
        tools: Sequence[Any] | None,
        tool_choice: Any,
        response_format: Any,
        params: dict[str, Any],
    ) -> FakeRequest:
        return self.make_request(
            model,
            _messages(messages, prompt),
            tools,
            tool_choice,
            response_format,
            params,
            "direct",
        )

    # ------------------------------------------------------------------ the core (every layer)

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
        run = None if agent is None else getattr(agent, "model", None)  # the model run (over HTTP: _callers.RemoteModel)
        call = self.faults.next_call(agent=uid, step=step, model=run)
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
        )

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
        """The 200 reply: malformed/empty on those faults, else scripted or generated."""
        rng = self.rng(request)
        if fault is FaultKind.MALFORMED_JSON:
            return malformed_reply(request.shape, rng).with_ids(rng)
        if fault is FaultKind.EMPTY_RESPONSE:
            return empty_reply()
        spec = self._scripted(request)
        if spec is DEFAULT or spec is None:
            return generate_reply(request.shape, rng).with_ids(rng)
        return _coerce(spec, "FakeLLM reply").with_ids(rng)

    def _scripted(self, request: FakeRequest) -> Any:
        effect = self._side_effect
        if effect is not None:
            if self._side_items is not None:
                item = self._side_items.next(request)
                if _is_exception(item):
                    raise _marked(item)
                if item is not DEFAULT:
                    return item
            elif _is_exception(effect):
                raise _marked(effect)
            else:
                result = effect(request)
                if result is not DEFAULT:
                    return result
        return self.return_value

    def answer(self, request: FakeRequest) -> FakeReply:
        """Answer ``request`` at the direct/provider layer: raise a litellm error or reply."""
        fault = self.decide_fault(request)
        if fault in ERROR_KINDS:
            from mesa_llm_testing._provider import fault_exception

            exc = fault_exception(self, request, fault)
            self.record(request, None, exc, fault, getattr(exc, "status_code", None))
            raise exc
        try:
            reply = self.content_reply(request, fault)
        except Exception as exc:
            # Raised on purpose (side_effect) or by a bad reply spec: surface it unchanged,
            # not as the APIConnectionError litellm would wrap it in.
            _marked(exc)
            self.record(request, None, exc, fault, None)
            raise
        self.record(request, reply, None, fault, 200)
        return reply

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

    # ------------------------------------------------------------------ ways in

    def activate(self, *, intercept_all: bool = True) -> AbstractContextManager[FakeLLM]:
        """Answer litellm calls with this fake while the ``with`` block runs.

        Registers the litellm custom provider ``mesa-fake`` (so ``model="mesa-fake/any"``
        works); with ``intercept_all`` every ``litellm.completion`` / ``acompletion``
        in the process, whatever the model string, is rerouted to it, so nothing
        leaves the machine. Also skips ModuleLLM's API-key check and records retry
        delays in :attr:`retry_sleeps` instead of sleeping. Nestable and thread-safe;
        everything is restored on exit.
        """
        from mesa_llm_testing._provider import activate

        return activate(self, intercept_all=intercept_all)

    def http(
        self, *, host: str = "127.0.0.1", port: int = 0, stall: float = 60.0
    ) -> AbstractContextManager[str]:
        """Serve this fake as an OpenAI-compatible endpoint on a real socket; yield its api_base.

        An ``aiohttp`` server on ``host:port`` (default 127.0.0.1, a free port), run by a
        background thread with its own event loop; the block yields
        ``http://127.0.0.1:PORT/v1`` and stops the server on exit (bounded). Every client
        reaches it: litellm, the OpenAI SDK, httpx, urllib, other processes. Faults are
        real HTTP; a TIMEOUT stalls ``stall`` seconds (or until the client hangs up), so
        give clients a shorter timeout. Callers are identified by their ``X-Mesa-LLM-*``
        headers (see ``mesa_llm_testing._callers``).
        """
        from mesa_llm_testing._server import serve  # the core never imports its transports

        return serve(self, host=host, port=port, stall=stall)


def _messages(messages: Sequence[Any] | None, prompt: str | None) -> list[Any]:
    result = list(messages or ())
    if prompt is not None:
        result.append({"role": "user", "content": prompt})
    if not result:
        raise ValueError("mesa_llm_testing: FakeLLM.complete() needs messages=[...] or prompt=...")
    return result


def _marked(effect: BaseException | type[BaseException]) -> BaseException:
    exc = effect() if isinstance(effect, type) else effect
    # Exceptions with __slots__ cannot be marked; litellm may then wrap them.
    with contextlib.suppress(AttributeError):
        setattr(exc, PASSTHROUGH_MARK, True)
    return exc
