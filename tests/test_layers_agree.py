"""The provider layer raises what litellm raises for the same fault over real HTTP.

The fake's promise is that it behaves like the real provider. For each error fault the
HTTP layer (``FakeLLM.http()``) answers with real HTTP and litellm's own exception
mapping decides what the caller sees; the provider layer (``FakeLLM.activate()``) builds
its exception itself. Both must agree on class, ``status_code``, ``llm_provider`` and
message, sync and async, so traces from either layer name the same exceptions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from typing import Any

import mesa
import pytest

from mesa_llm._litellm import import_litellm
from mesa_llm.module_llm import RetryPolicy
from mesa_llm.parallel_stepping import acting_as
from mesa_llm_testing import FakeLLM, FaultKind, FaultPlan

litellm = import_litellm()

MESSAGES: Any = [{"role": "user", "content": "Your move?"}]
CLIENT_TIMEOUT = 0.5  # clients give up on a stalled (TIMEOUT) answer after this
#: Calls per kind: enough for every variant (e.g. 500, 502, 503, 504) at this seed.
CALLS = {"server_error": 4, "timeout": 1, "overloaded": 4, "bad_gateway": 4, "missing_fields": 4}
#: The statuses each kind with variants must show over its calls.
VARIANTS = {
    FaultKind.SERVER_ERROR: {500, 502, 503, 504},
    FaultKind.OVERLOADED: {529, 503},
    FaultKind.BAD_GATEWAY: {502, 504},
}
# litellm's async path appends the measured time to a timeout's message; it is not a fault.
TIMING = re.compile(r" - timeout value=[\d.]+, time taken=[\d.]+ seconds$")
# litellm quotes the objects it failed to convert (ids, times) after a broken body's traceback.
RECEIVED = re.compile(r"\n\nreceived_args=.*", re.DOTALL)
#: Every kind that ends a call in an exception (the rest are 200 replies).
ERROR_KINDS = [
    kind
    for kind in FaultKind
    if kind not in (FaultKind.MALFORMED_JSON, FaultKind.EMPTY_RESPONSE, FaultKind.TRUNCATED)
]
#: What litellm raises for each kind from a real OpenAI-compatible answer.
EXPECTED = {
    FaultKind.BAD_REQUEST: ("BadRequestError", {400}),
    FaultKind.AUTH: ("AuthenticationError", {401}),
    FaultKind.PERMISSION: ("APIError", {403}),
    FaultKind.NOT_FOUND: ("NotFoundError", {404}),
    FaultKind.CONTEXT_WINDOW: ("ContextWindowExceededError", {400}),
    FaultKind.CONTENT_POLICY: ("ContentPolicyViolationError", {400}),
    FaultKind.OVERLOADED: ({"APIError", "ServiceUnavailableError"}, {529, 503}),
    FaultKind.BAD_GATEWAY: ({"BadGatewayError", "Timeout"}, {502, 504}),
    FaultKind.CONNECTION_RESET: ("InternalServerError", {500}),
    FaultKind.MISSING_FIELDS: ("InternalServerError", {500}),
}


def call(mode: str, **kwargs: Any) -> Any:
    kwargs = {
        "model": "openai/gpt-4o-mini",
        "messages": MESSAGES,
        "num_retries": 0,
        "max_retries": 0,
        "timeout": CLIENT_TIMEOUT,
        **kwargs,
    }
    if mode == "sync":
        return litellm.completion(**kwargs)
    return asyncio.run(litellm.acompletion(**kwargs))


def seen(exc: Exception) -> tuple[str, Any, Any, str]:
    text = RECEIVED.sub("", TIMING.sub("", str(exc)))
    return type(exc).__name__, exc.status_code, exc.llm_provider, text  # type: ignore[attr-defined]


def failures(kind: FaultKind, mode: str, layer: str) -> list[tuple[str, Any, Any, str]]:
    """What each call raises through ``layer`` when every call gets a ``kind`` fault.

    Each call is one agent's call in its own step: both layers key the fault (and its
    variant, e.g. 500 or 504) on that identity, so call i gets the same fault in both.
    """
    model = mesa.Model(seed=0)
    agent = mesa.Agent(model)
    fake = FakeLLM(faults=FaultPlan(1.0, kinds=kind.value, seed=2), return_value="unused")
    found = []
    with contextlib.ExitStack() as stack:
        if layer == "http":  # litellm's own OpenAI provider, over a real socket
            stack.enter_context(fake.activate(intercept_all=False))  # identity headers
            where = {"api_base": stack.enter_context(fake.http(stall=3.0)), "api_key": "sk-fake"}
        else:
            stack.enter_context(fake.activate())
            where = {}
        for step in range(CALLS.get(kind.value, 3)):
            model.steps = step
            with acting_as(agent), pytest.raises(Exception) as info:
                call(mode, **where)
            if kind.transient:  # the default policy retries exactly the transient kinds
                assert RetryPolicy().is_retryable(info.value)
            found.append(seen(info.value))
    assert [(c.step, c.fault, c.layer) for c in fake.calls] == [
        (step, kind, layer) for step in range(len(found))
    ]
    return found


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("kind", ERROR_KINDS, ids=lambda k: k.value)
def test_provider_and_http_raise_the_same_exception_for_every_fault(
    kind: FaultKind, mode: str
) -> None:
    over_http = failures(kind, mode, "http")
    in_process = failures(kind, mode, "provider")
    assert in_process == over_http
    if kind in VARIANTS:  # every variant was compared
        assert {status for _, status, _, _ in over_http} == VARIANTS[kind]
    if kind is FaultKind.MISSING_FIELDS:  # a body without choices, and a choice without message
        assert any("no 'choices'" in text for *_, text in over_http)
        assert any("Invalid response object" in text for *_, text in over_http)
    if kind in EXPECTED:
        names, statuses = EXPECTED[kind]
        names = {names} if isinstance(names, str) else names
        assert {name for name, _, _, _ in over_http} == names
        assert {status for _, status, _, _ in over_http} == statuses


def replies(mode: str, layer: str) -> list[tuple[str | None, str | None, list[Any]]]:
    """(content, finish_reason, tool calls) of three TRUNCATED replies through ``layer``."""
    model = mesa.Model(seed=0)
    agent = mesa.Agent(model)
    fake = FakeLLM(faults=FaultPlan(1.0, kinds="truncated", seed=2))
    tools = [
        {
            "type": "function",
            "function": {
                "name": "move",
                "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}},
            },
        }
    ]
    found = []
    with contextlib.ExitStack() as stack:
        if layer == "http":
            stack.enter_context(fake.activate(intercept_all=False))
            where = {"api_base": stack.enter_context(fake.http()), "api_key": "sk-fake"}
        else:
            stack.enter_context(fake.activate())
            where = {}
        for step in range(3):
            model.steps = step
            with acting_as(agent):
                response = call(mode, tools=tools if step else None, **where)
            choice = response.choices[0]
            calls = [
                (tc.function.name, tc.function.arguments)
                for tc in (choice.message.tool_calls or [])
            ]
            found.append((choice.message.content, choice.finish_reason, calls))
    return found


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_truncated_reply_is_the_same_cut_reply_in_both_layers(mode: str) -> None:
    over_http = replies(mode, "http")
    assert replies(mode, "provider") == over_http
    assert {finish for _, finish, _ in over_http} == {"length"}
    text, _, _ = over_http[0]
    assert text  # a cut sentence, not an empty reply
    (_, _, [(name, arguments)]) = over_http[1]
    assert name == "move"
    with pytest.raises(ValueError):  # the arguments were cut mid-JSON
        json.loads(arguments)
