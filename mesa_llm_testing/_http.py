"""A ``FakeLLM`` as an OpenAI-compatible HTTP endpoint: an ``aiohttp.web`` application.

Every client reaches it the same way, over a real socket (see ``_server``):
litellm (httpx and aiohttp), the OpenAI SDK (httpx2), httpx, urllib, curl,
another process. Faults are real HTTP: 429 with ``retry-after`` /
``retry-after-ms`` and ``x-ratelimit-*`` headers; 500/502/503/504 with OpenAI error
bodies; a timeout is a response that stalls (up to ``stall`` seconds, or until
the client hangs up) and then closes the connection without an answer; a
connection error is a reset connection, a connection reset a 200 cut off mid-body;
malformed, empty, truncated and missing-field replies are 200s; the 4xx kinds and
overloaded / bad gateway are OpenAI error bodies (``_fault_answers``).
``stream=true`` is answered as server-sent events in OpenAI's chunk shape.

Who calls is read from the ``X-Mesa-LLM-*`` headers (``_identity``). Bad input
gets an OpenAI-shaped 4xx JSON error; no request can stop the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import struct
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

from aiohttp import web

from mesa_llm_testing._callers import RemoteRuns
from mesa_llm_testing._calls import FakeRequest
from mesa_llm_testing._fake import BODY_ERROR_KINDS, ERROR_KINDS, FakeCore
from mesa_llm_testing._fault_answers import STATUS_KINDS, missing_fields_body, status_answers
from mesa_llm_testing._faults import FaultKind
from mesa_llm_testing._limits import Refusal
from mesa_llm_testing._responses import FakeReply, rate_limit_error
from mesa_llm_testing._responses import rate_limit_headers as _rate_limit_headers
from mesa_llm_testing._stats import ServerStats

__all__ = ["DEFAULT_STALL", "MAX_BODY", "build_app"]

logger = logging.getLogger(__name__)

#: Largest request body accepted (bytes); larger bodies get a 413.
MAX_BODY: Final = 8 * 1024 * 1024
#: How long a TIMEOUT fault stalls before closing the connection (seconds), unless the
#: client hangs up first. Set the client's timeout below it.
DEFAULT_STALL: Final = 60.0
_POLL: Final = 0.02
_REQUEST_KEYS: Final = frozenset(
    {"model", "messages", "tools", "tool_choice", "response_format", "stream", "stream_options"}
)
_FAKE: web.AppKey[FakeCore] = web.AppKey("fake", FakeCore)
_STATS: web.AppKey[ServerStats] = web.AppKey("stats", ServerStats)
_OPTIONS: web.AppKey[dict[str, Any]] = web.AppKey("options", dict)
_RUNS: web.AppKey[RemoteRuns] = web.AppKey("runs", RemoteRuns)


def build_app(
    fake: FakeCore,
    *,
    admin_token: str | None = None,
    stall: float = DEFAULT_STALL,
    max_body: int = MAX_BODY,
    stats: ServerStats | None = None,
) -> web.Application:
    """The endpoint's application: ``/v1/chat/completions``, ``/v1/models``, health, admin."""
    app = web.Application(client_max_size=max_body, middlewares=[_openai_errors])
    app[_FAKE] = fake
    app[_STATS] = stats if stats is not None else ServerStats()
    app[_OPTIONS] = {"admin_token": admin_token, "stall": float(stall)}
    app[_RUNS] = RemoteRuns()
    for prefix in ("/v1", ""):
        app.router.add_post(prefix + "/chat/completions", _chat_completions)
        app.router.add_get(prefix + "/models", _models)
    app.router.add_get("/health", _health)
    app.router.add_get("/admin/faults", _admin(_faults))
    app.router.add_get("/admin/stats", _admin(_stats))
    app.router.add_post("/admin/reset", _admin(_reset))
    return app


# --------------------------------------------------------------------------- errors


def error_response(
    status: int, message: str, *, kind: str = "invalid_request_error", param: str | None = None
) -> web.Response:
    """An OpenAI-shaped JSON error."""
    body = {"error": {"message": message, "type": kind, "param": param, "code": None}}
    return web.json_response(body, status=status)


@web.middleware
async def _openai_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every failure becomes a JSON error; the server keeps serving."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = {
            404: f"mesa_llm_testing: unknown path {request.path!r}; the fake serves "
            "POST /v1/chat/completions, GET /v1/models, GET /health and /admin/...",
            405: f"mesa_llm_testing: {request.method} is not allowed on {request.path!r}",
            413: f"mesa_llm_testing: request body over the limit of "
            f"{request.app._client_max_size} bytes",
        }.get(exc.status, exc.reason)
        return error_response(exc.status, message)
    except Exception as exc:
        logger.exception("mesa_llm_testing: the fake endpoint failed on %s", request.path)
        return error_response(
            500, f"mesa_llm_testing: {type(exc).__name__}: {exc}", kind="server_error"
        )


# --------------------------------------------------------------------------- chat completions


async def _chat_completions(http: web.Request) -> web.StreamResponse:
    fake, stats = http.app[_FAKE], http.app[_STATS]
    started = time.perf_counter()
    raw = await http.read()
    try:
        body = json.loads(raw or b"null")
    except ValueError as exc:
        return error_response(400, f"We could not parse the JSON body of your request: {exc}")
    if not isinstance(body, dict):
        return error_response(400, "The request body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return error_response(400, "'messages' is a required property", param="messages")
    runs = http.app[_RUNS]
    model = str(body.get("model", ""))
    params = {k: v for k, v in body.items() if k not in _REQUEST_KEYS}
    with runs.acting(runs.caller(http.headers, body)):
        # Limits first: a refused call takes no call index, so it shifts no fault.
        slot = fake.take_slot(model, messages, body.get("tools"), params, "http")
        if isinstance(slot, Refusal):
            stats.add_limited()
            return _limited(fake, model, slot)
        request = fake.make_request(
            model,
            messages,
            body.get("tools"),
            body.get("tool_choice"),
            body.get("response_format"),
            params,
            "http",
        )
    fault = None
    try:
        if delay := fake.wait_seconds(request):
            await asyncio.sleep(delay)
        fault = fake.decide_fault(request)
        if fault in ERROR_KINDS and fault not in BODY_ERROR_KINDS:
            return await _fault(http, fake, request, fault)  # type: ignore[arg-type]
        return await _reply(http, fake, request, fault, bool(body.get("stream")))
    finally:
        if slot is not None:
            slot.release()
        stats.add(fault, time.perf_counter() - started)


def _limited(fake: FakeCore, model: str, refusal: Refusal) -> web.Response:
    """A load-driven 429: the RATE_LIMIT fault's shape, with the limit that was hit."""
    return web.json_response({"error": refusal.error(model)}, status=429, headers=refusal.headers())


async def _reply(
    http: web.Request, fake: FakeCore, request: FakeRequest, fault: FaultKind | None, stream: bool
) -> web.StreamResponse:
    try:
        reply = fake.content_reply(request, fault)
    except Exception as exc:  # side_effect raised: a provider error keeps its status
        status = getattr(exc, "status_code", None)
        if not (isinstance(status, int) and 400 <= status < 600):
            status = 500
        fake.record(request, None, exc, fault, status)
        return _status_error(exc, status)
    response_id = "chatcmpl-" + fake.rng(request, "response-id").hex(29)
    headers = {
        "x-request-id": _request_id(fake, request),
        "openai-processing-ms": "1",
        "x-ratelimit-limit-requests": "500",
        "x-ratelimit-remaining-requests": "499",
    }
    body = reply.to_openai(model=request.model, response_id=response_id, messages=request.messages)
    if fault is FaultKind.CONNECTION_RESET:
        fake.record(request, None, None, fault, None)
        return await _cut_off(http, json.dumps(body).encode(), headers)
    fake.record(request, reply, None, fault, 200)
    if fault is FaultKind.MISSING_FIELDS:
        body = missing_fields_body(body, fake.fault_variant(request, 2))
    if not stream:
        return web.json_response(body, headers=headers)
    response = web.StreamResponse(headers={**headers, "Content-Type": "text/event-stream"})
    await response.prepare(http)
    for chunk in _chunks(reply, body):
        await response.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


def _chunks(reply: FakeReply, body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The ``chat.completion.chunk`` events of ``reply``: role, content, tool calls, finish."""
    head = {k: body[k] for k in ("id", "created", "model", "system_fingerprint")}

    def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {**head, "object": "chat.completion.chunk", "choices": [choice]}

    events = [chunk({"role": "assistant", "content": ""}, None)]
    if reply.content:
        events.append(chunk({"content": reply.content}, None))
    for i, tc in enumerate(reply.tool_calls):
        events.append(chunk({"tool_calls": [{"index": i, **tc.to_openai()}]}, None))
    events.append(chunk({}, reply.finish))
    return events


def _request_id(fake: FakeCore, request: FakeRequest) -> str:
    return "req_" + fake.rng(request, "request-id").hex(24)


async def _fault(
    http: web.Request, fake: FakeCore, request: FakeRequest, fault: FaultKind
) -> web.StreamResponse:
    request_id = _request_id(fake, request)
    if fault is FaultKind.RATE_LIMIT:
        fake.record(request, None, None, fault, 429)
        return web.json_response(
            {"error": rate_limit_error(request.model, fake.retry_after)},
            status=429,
            headers=_rate_limit_headers(fake.retry_after, request_id),
        )
    if fault in STATUS_KINDS:
        answers = status_answers(fault, request.model)
        status, error = answers[fake.fault_variant(request, len(answers))]
        fake.record(request, None, None, fault, status)
        return web.json_response(
            {"error": error}, status=status, headers={"x-request-id": request_id}
        )
    fake.record(request, None, None, fault, None)
    if fault is FaultKind.TIMEOUT:
        await _stall(http, http.app[_OPTIONS]["stall"])
    _reset_connection(http)
    return web.Response(status=500)  # never sent: the connection is gone


async def _cut_off(
    http: web.Request, data: bytes, headers: Mapping[str, str]
) -> web.StreamResponse:
    """Send the headers and the first half of the body, then reset the connection."""
    response = web.StreamResponse(
        status=200,
        headers={**headers, "Content-Type": "application/json", "Content-Length": str(len(data))},
    )
    await response.prepare(http)
    await response.write(data[: len(data) // 2])
    _reset_connection(http)
    return response


async def _stall(http: web.Request, seconds: float) -> None:
    """Wait ``seconds``, or until the client hangs up."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        transport = http.transport
        if transport is None or transport.is_closing():
            return
        await asyncio.sleep(min(_POLL, max(0.0, deadline - time.monotonic())))


def _reset_connection(http: web.Request) -> None:
    """Close the connection with a TCP reset (no answer)."""
    transport = http.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _status_error(exc: Exception, status: int) -> web.Response:
    headers: dict[str, str] = {}
    for source in (
        getattr(exc, "litellm_response_headers", None),
        getattr(getattr(exc, "response", None), "headers", None),
        getattr(exc, "headers", None),
    ):
        if source:
            headers.update({str(k).lower(): str(v) for k, v in dict(source).items()})
    for name in ("content-length", "content-type", "content-encoding", "transfer-encoding"):
        headers.pop(name, None)
    kind = "requests" if status == 429 else "invalid_request_error"
    if status >= 500:
        kind = "server_error"
    message = str(getattr(exc, "message", None) or exc) or type(exc).__name__
    body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    return web.json_response(body, status=status, headers=headers)


# --------------------------------------------------------------------------- other endpoints


async def _models(http: web.Request) -> web.Response:
    model = {"id": "mesa-fake", "object": "model", "created": 0, "owned_by": "mesa-llm-testing"}
    return web.json_response({"object": "list", "data": [model]})


async def _health(http: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def _admin(
    handler: Callable[[web.Request], Awaitable[web.Response]],
) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def guarded(http: web.Request) -> web.Response:
        token = http.app[_OPTIONS]["admin_token"]
        if token and http.headers.get("Authorization", "") != f"Bearer {token}":
            return error_response(
                401,
                "mesa_llm_testing: admin endpoints need 'Authorization: Bearer <admin token>'",
                kind="authentication_error",
            )
        return await handler(http)

    return guarded


async def _faults(http: web.Request) -> web.Response:
    plan = http.app[_FAKE].faults
    return web.Response(text=plan.to_json(), content_type="application/json")


async def _stats(http: web.Request) -> web.Response:
    return web.json_response(http.app[_STATS].summary())


async def _reset(http: web.Request) -> web.Response:
    fake = http.app[_FAKE]
    fake.faults.reset()
    fake.reset_mock()
    http.app[_STATS].reset()
    http.app[_RUNS].clear()
    return web.json_response({"status": "reset"})
