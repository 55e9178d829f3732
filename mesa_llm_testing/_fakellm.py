"""``FakeLLM``: a deterministic LLM in ``unittest.mock`` vocabulary, with call records and faults.

One behaviour (the core, :class:`~mesa_llm_testing._fake.FakeCore`), three ways in:
:meth:`FakeLLM.complete` (direct, in-process), the litellm custom provider
``mesa-fake/...`` (:meth:`FakeLLM.activate`), and an OpenAI-compatible HTTP server
on a loopback socket (:meth:`FakeLLM.http`). This module sits above both transports
and imports them on first use, so importing it imports neither litellm nor the
HTTP server.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mesa_llm_testing._calls import DEFAULT_KEEP_CALLS, FakeRequest
from mesa_llm_testing._fake import FakeCore
from mesa_llm_testing._faults import FaultKind, FaultPlan
from mesa_llm_testing._responses import FakeReply

if TYPE_CHECKING:
    from mesa_llm_testing._cassettes import CassetteReplies
    from mesa_llm_testing._limits import Refusal

__all__ = ["CassetteLLM", "FakeLLM"]


class FakeLLM(FakeCore):
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

    ``latency`` is waited before every answer (asyncio paths do not block the loop):
    seconds, ``uniform(a, b)`` or ``lognormal(p50=..., p99=...)``, drawn per call from
    its identity (so the same call is as slow in every stepping mode and layer; the
    draw is ``call.request.delay``); ``time_scale`` multiplies what is really waited
    (``0.001`` keeps a realistic model and sleeps a thousandth of it). The last
    ``keep_calls`` calls (default 10,000; None: all) are
    recorded in :attr:`calls`, so memory stays flat over long runs; :attr:`call_count`
    counts them all. The fault plan's call index counts each agent's calls per step
    of its model (see :mod:`mesa_llm_testing._faults`). Retries requested while
    :meth:`activate` is active are recorded in :attr:`retry_sleeps` instead of slept.

    ``limits`` (``ProviderLimits(rpm=..., tpm=..., max_concurrent=...)`` or
    ``"rpm=600,tpm=100000"``) makes every way in answer 429 when the calls it actually
    receives exceed a limit (``clock`` replaces ``time.monotonic`` for the 60 s window).
    Such a call takes no call index, so it shifts no fault; it is recorded in
    :attr:`limited`, not in :attr:`calls` (see :mod:`mesa_llm_testing._limits`).
    """

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
        slot = self.admit(model, _messages(messages, prompt), tools, params, "direct")
        try:
            request = self._direct_request(
                messages, prompt, model, tools, tool_choice, response_format, params
            )
            if delay := self.wait_seconds(request):
                time.sleep(delay)
            return self.answer(request)
        finally:
            if slot is not None:
                slot.release()

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
        slot = self.admit(model, _messages(messages, prompt), tools, params, "direct")
        try:
            request = self._direct_request(
                messages, prompt, model, tools, tool_choice, response_format, params
            )
            if delay := self.wait_seconds(request):
                await asyncio.sleep(delay)
            return self.answer(request)
        finally:
            if slot is not None:
                slot.release()

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

    def fault_error(self, request: FakeRequest, kind: FaultKind) -> Exception:
        """The litellm exception a provider failure of ``kind`` arrives as (loads litellm)."""
        from mesa_llm_testing._provider_errors import fault_exception

        return fault_exception(self, request, kind)

    def limit_error(self, model: str, refusal: Refusal) -> Exception:
        """The ``RateLimitError`` of a load-driven 429 (loads litellm)."""
        from mesa_llm_testing._provider_errors import limit_exception

        return limit_exception(model, refusal)

    @classmethod
    def from_cassette(
        cls,
        path: str | Path,
        *,
        match: str = "strict",
        missing: str = "error",
        faults: FaultPlan | None = None,
        seed: int | None = None,
        test_id: str | None = None,
        keep_calls: int | None = DEFAULT_KEEP_CALLS,
    ) -> CassetteLLM:
        """A fake answering each call with its recording in the cassette at ``path``.

        Calls are found by who made them (model run, agent, step, call index), so a run
        recorded in one stepping mode replays in any other, offline. ``match``:
        ``"strict"`` (identity, then the request must equal the recorded one: a
        ``CassetteMismatchError`` naming agent, step and call with a diff of the
        messages), ``"identity"`` (identity only) or ``"fingerprint"`` (request content
        only, in order). ``missing``: ``"error"``, or ``"generate"`` (the seeded
        generator answers; the call is marked ``generated``). Recorded errors raise as the
        same litellm exceptions; ``faults`` inject faults on top. ``seed`` defaults to the
        cassette's; ``test_id`` picks one test's calls from a pytest session's cassette.
        Use it as ``with FakeLLM.from_cassette(path) as fake:`` (activates it; on a clean
        exit, raises the first call the cassette could not answer) or pass it on as ``llm=``.
        """
        from mesa_llm_testing._cassettes import CassetteReplies

        replies = CassetteReplies.load(path, test_id=test_id, match=match, missing=missing)
        recorded_seed = replies.header.get("seed")
        if seed is None:
            seed = recorded_seed if isinstance(recorded_seed, int) else 0
        fake = CassetteLLM(seed=seed, faults=faults, keep_calls=keep_calls)
        fake.reply_source = replies
        fake.cassette = replies
        return fake

    # ------------------------------------------------------------------ ways in

    def activate(
        self, *, intercept_all: bool = True, pipeline: str = "fast"
    ) -> AbstractContextManager[FakeLLM]:
        """Answer litellm calls with this fake while the ``with`` block runs.

        Registers the litellm custom provider ``mesa-fake`` (so ``model="mesa-fake/any"``
        works); with ``intercept_all`` every ``litellm.completion`` / ``acompletion``
        in the process, whatever the model string, is rerouted to it, so nothing
        leaves the machine. Also skips ModuleLLM's API-key check and records retry
        delays in :attr:`retry_sleeps` instead of sleeping. Nestable and thread-safe;
        everything is restored on exit.

        ``pipeline="fast"`` (default) answers at litellm's entry point with the
        ``ModelResponse`` / litellm exception litellm's pipeline would give, without
        running that pipeline (about 40x cheaper a call); ``pipeline="litellm"`` sends
        every call through litellm's full request pipeline to the ``mesa-fake`` provider.
        Streams always take litellm's pipeline.
        """
        from mesa_llm_testing._fastpath import check_pipeline
        from mesa_llm_testing._provider import activate

        check_pipeline(pipeline)
        return activate(self, intercept_all=intercept_all, pipeline=pipeline)  # type: ignore[return-value]

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
        from mesa_llm_testing._server import serve

        return serve(self, host=host, port=port, stall=stall)


class CassetteLLM(FakeLLM):
    """A ``FakeLLM`` replaying a cassette (see :meth:`FakeLLM.from_cassette`)."""

    cassette: CassetteReplies

    def __enter__(self) -> CassetteLLM:
        stack = contextlib.ExitStack()
        stack.enter_context(self.activate())
        self._stack = stack
        return self

    def __exit__(self, kind: Any, value: Any, traceback: Any) -> None:
        self._stack.close()
        if kind is None and self.cassette.problems:
            problems = self.cassette.problems
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise type(problems[0])(f"{problems[0]}{more}")

    @property
    def problems(self) -> list[Exception]:
        """The calls the cassette could not answer, as the errors raised for them."""
        return list(self.cassette.problems)


def _messages(messages: Sequence[Any] | None, prompt: str | None) -> list[Any]:
    result = list(messages or ())
    if prompt is not None:
        result.append({"role": "user", "content": prompt})
    if not result:
        raise ValueError("mesa_llm_testing: FakeLLM.complete() needs messages=[...] or prompt=...")
    return result
