"""An OpenAI-compatible ``/chat/completions`` endpoint on respx, answered by a ``FakeLLM``.

The real litellm + OpenAI SDK + httpx stack sees every fault as it would from
OpenAI: 429 with ``retry-after`` and ``x-ratelimit-*`` headers, 500/503 with
OpenAI error bodies, ``httpx.ReadTimeout`` and ``httpx.ConnectError`` raised by
the transport, and 200s with truncated JSON or empty content.

respx patches httpx at the client level (``using="httpx"``), so litellm's aiohttp
transport for async calls is intercepted too.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Final

import httpx
import respx

from mesa_llm_testing._fake import ACTIVE_HTTP_BASES, ERROR_KINDS, FakeLLM, FakeRequest
from mesa_llm_testing._faults import FaultKind
from mesa_llm_testing._responses import SERVER_ERRORS, rate_limit_error, rate_limit_headers

if TYPE_CHECKING:
    from mesa_llm_testing._responses import FakeReply

__all__ = ["serve"]

_REQUEST_KEYS: Final = frozenset({"model", "messages", "tools", "tool_choice", "response_format"})


@contextmanager
def serve(fake: FakeLLM, *, base_url: str) -> Iterator[str]:
    """Answer ``POST {base_url}/chat/completions`` with ``fake``; yield ``base_url``."""
    base = base_url.rstrip("/")
    router = respx.mock(base_url=base, using="httpx", assert_all_called=False)
    router.post("/chat/completions", name="mesa-fake-chat-completions").mock(
        side_effect=lambda request: _handle(fake, request)
    )
    with router:
        ACTIVE_HTTP_BASES.add(base)
        try:
            yield base
        finally:
            ACTIVE_HTTP_BASES.discard(base)


def _handle(
    fake: FakeLLM, http_request: httpx.Request
) -> httpx.Response | Awaitable[httpx.Response]:
    try:
        body = json.loads(http_request.content or b"{}")
    except ValueError as exc:
        return _error(
            400, "invalid_request_error", f"We could not parse the JSON body: {exc}", None
        )
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        return _error(400, "invalid_request_error", "'messages' is a required property", "messages")
    if body.get("stream"):
        return _error(
            400,
            "invalid_request_error",
            "mesa_llm_testing: the fake endpoint does not stream; call without stream=true",
            "stream",
        )
    request = fake.make_request(
        str(body.get("model", "")),
        body["messages"],
        body.get("tools"),
        body.get("tool_choice"),
        body.get("response_format"),
        {k: v for k, v in body.items() if k not in _REQUEST_KEYS},
        "http",
    )
    if fake.latency:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            time.sleep(fake.latency)
        else:  # an async client: respx awaits the side effect, so the loop keeps running
            return _after(fake.latency, fake, request, http_request)
    return _respond(fake, request, http_request)


async def _after(
    delay: float, fake: FakeLLM, request: FakeRequest, http_request: httpx.Request
) -> httpx.Response:
    await asyncio.sleep(delay)
    return _respond(fake, request, http_request)


def _respond(fake: FakeLLM, request: FakeRequest, http_request: httpx.Request) -> httpx.Response:
    request_id = "req_" + fake.rng(request, "request-id").hex(24)
    fault = fake.decide_fault(request)
    if fault in ERROR_KINDS:
        return _fault(fake, request, http_request, fault, request_id)  # type: ignore[arg-type]
    try:
        reply = fake.content_reply(request, fault)
    except Exception as exc:
        status = getattr(exc, "status_code", None)
        if (
            isinstance(status, int) and 400 <= status < 600
        ):  # e.g. side_effect=litellm.RateLimitError(...)
            fake.record(request, None, exc, fault, status)
            return _status_error(exc, status)
        fake.record(request, None, exc, fault, None)
        raise
    fake.record(request, reply, None, fault, 200)
    return _ok(fake, request, reply, request_id)


def _ok(fake: FakeLLM, request: FakeRequest, reply: FakeReply, request_id: str) -> httpx.Response:
    response_id = "chatcmpl-" + fake.rng(request, "response-id").hex(29)
    body = reply.to_openai(model=request.model, response_id=response_id, messages=request.messages)
    headers = {
        "x-request-id": request_id,
        "openai-processing-ms": "1",
        "x-ratelimit-limit-requests": "500",
        "x-ratelimit-remaining-requests": "499",
    }
    return httpx.Response(200, json=body, headers=headers)


def _fault(
    fake: FakeLLM,
    request: FakeRequest,
    http_request: httpx.Request,
    fault: FaultKind,
    request_id: str,
) -> httpx.Response:
    if fault is FaultKind.RATE_LIMIT:
        fake.record(request, None, None, fault, 429)
        return httpx.Response(
            429,
            json={"error": rate_limit_error(request.model, fake.retry_after)},
            headers=rate_limit_headers(fake.retry_after, request_id),
        )
    if fault is FaultKind.SERVER_ERROR:
        status, error = SERVER_ERRORS[fake.fault_variant(request, len(SERVER_ERRORS))]
        fake.record(request, None, None, fault, status)
        return httpx.Response(status, json={"error": error}, headers={"x-request-id": request_id})
    exc: httpx.TransportError
    if fault is FaultKind.TIMEOUT:
        exc = httpx.ReadTimeout("The read operation timed out", request=http_request)
    else:
        exc = httpx.ConnectError("[Errno 111] Connection refused", request=http_request)
    fake.record(request, None, exc, fault, None)
    raise exc


def _error(status: int, kind: str, message: str, param: str | None) -> httpx.Response:
    return httpx.Response(
        status, json={"error": {"message": message, "type": kind, "param": param, "code": None}}
    )


def _status_error(exc: Exception, status: int) -> httpx.Response:
    headers: dict[str, str] = {}
    for source in (
        getattr(exc, "litellm_response_headers", None),
        getattr(getattr(exc, "response", None), "headers", None),
        getattr(exc, "headers", None),
    ):
        if source:
            headers.update({str(k).lower(): str(v) for k, v in dict(source).items()})
    headers.pop("content-length", None)
    headers.pop("content-type", None)
    kind = (
        "requests"
        if status == 429
        else "server_error"
        if status >= 500
        else "invalid_request_error"
    )
    message = str(getattr(exc, "message", None) or exc)
    return httpx.Response(
        status,
        json={"error": {"message": message, "type": kind, "param": None, "code": None}},
        headers=headers,
    )
