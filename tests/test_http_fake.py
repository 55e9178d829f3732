"""FakeLLM.http(): an OpenAI-compatible endpoint seen by real httpx, OpenAI SDK and litellm."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import openai
import pytest

from mesa_llm._litellm import import_litellm
from mesa_llm.parallel_stepping import acting_as
from mesa_llm_testing import FakeLLM, FaultKind, FaultPlan

litellm = import_litellm()

MESSAGES: Any = [{"role": "user", "content": "Your move?"}]
MOVE: Any = {
    "type": "function",
    "function": {
        "name": "move",
        "parameters": {
            "type": "object",
            "properties": {"heading": {"type": "string", "enum": ["n", "e", "s", "w"]}},
            "required": ["heading"],
        },
    },
}
MODES = ["sync", "async"]


def faulty(kind: str, **kwargs: Any) -> FakeLLM:
    return FakeLLM(faults=FaultPlan(1.0, kinds=kind), return_value="unused", **kwargs)


def via_litellm(mode: str, api_base: str, **kwargs: Any) -> Any:
    """A real litellm call to the OpenAI provider at ``api_base`` (one attempt)."""
    kwargs = {
        "model": "openai/gpt-4o-mini",
        "messages": MESSAGES,
        "api_base": api_base,
        "api_key": "sk-fake",
        "num_retries": 0,
        "max_retries": 0,
        **kwargs,
    }
    if kwargs.get("tools"):
        kwargs["_skip_mcp_handler"] = (
            True  # litellm 1.10x needs the optional `mcp` package otherwise
        )
    if mode == "sync":
        return litellm.completion(**kwargs)
    return asyncio.run(litellm.acompletion(**kwargs))


# --------------------------------------------------------------------------- the wire format


def test_replies_are_openai_chat_completion_json() -> None:
    fake = FakeLLM(seed=5)
    with fake.http() as api_base:
        response = httpx.post(
            f"{api_base}/chat/completions",
            json={"model": "gpt-4o-mini", "messages": MESSAGES, "tools": [MOVE], "temperature": 0},
        )
    assert api_base == "https://fake-llm.test/v1"
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-request-id"].startswith("req_")
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert body["model"] == "gpt-4o-mini"
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    (tool_call,) = choice["message"]["tool_calls"]
    assert tool_call["type"] == "function" and tool_call["id"].startswith("call_")
    assert json.loads(tool_call["function"]["arguments"])["heading"] in "nesw"
    assert set(body["usage"]) == {"prompt_tokens", "completion_tokens", "total_tokens"}
    assert fake.calls.last.layer == "http"
    assert fake.calls.last.request.params == {"temperature": 0}


def test_rate_limit_response_has_openai_body_and_headers() -> None:
    fake = faulty("rate_limit", retry_after=2)
    with fake.http(base_url="https://llm.example.test/v1/") as api_base:
        response = httpx.post(
            f"{api_base}/chat/completions", json={"model": "gpt-4o", "messages": MESSAGES}
        )
    assert api_base == "https://llm.example.test/v1"
    assert response.status_code == 429
    assert response.headers["retry-after"] == "2"
    assert response.headers["retry-after-ms"] == "2000"
    for name in (
        "limit-requests",
        "remaining-requests",
        "reset-requests",
        "limit-tokens",
        "remaining-tokens",
        "reset-tokens",
    ):
        assert f"x-ratelimit-{name}" in response.headers
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "rate_limit_exceeded" and "gpt-4o" in error["message"]
    assert fake.calls.last.status_code == 429
    assert fake.faults.injected[0].layer == "http"


def test_bad_requests_get_openai_400s() -> None:
    fake = FakeLLM()
    with fake.http() as api_base:
        not_json = httpx.post(f"{api_base}/chat/completions", content=b"{nope")
        no_messages = httpx.post(f"{api_base}/chat/completions", json={"model": "m"})
        streaming = httpx.post(
            f"{api_base}/chat/completions",
            json={"model": "m", "messages": MESSAGES, "stream": True},
        )
    assert [r.status_code for r in (not_json, no_messages, streaming)] == [400, 400, 400]
    assert streaming.json()["error"]["param"] == "stream"
    assert not fake.called


def test_other_hosts_are_not_reached() -> None:
    with FakeLLM().http(), pytest.raises(Exception, match="not mocked"):
        httpx.get("https://api.openai.com/v1/models")


# --------------------------------------------------------------------------- the OpenAI SDK


def test_openai_sdk_reads_replies_and_faults() -> None:
    plan = (
        FaultPlan()
        .at(agent=None, step=None, call=1, kind="rate_limit")
        .at(agent=None, step=None, call=2, kind="server_error")
        .at(agent=None, step=None, call=3, kind="timeout")
        .at(agent=None, step=None, call=4, kind="connection_error")
    )
    fake = FakeLLM(seed=2, faults=plan)
    with fake.http() as api_base:
        client = openai.OpenAI(base_url=api_base, api_key="sk-fake", max_retries=0)
        ok = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, tools=[MOVE])
        assert ok.choices[0].message.tool_calls
        assert ok.choices[0].message.tool_calls[0].function.name == "move"  # type: ignore[union-attr]
        with pytest.raises(openai.RateLimitError) as limited:
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        assert limited.value.status_code == 429
        assert limited.value.response.headers["retry-after"] == "1"
        assert limited.value.code == "rate_limit_exceeded"
        with pytest.raises(openai.APIStatusError) as server:
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        assert server.value.status_code in (500, 503)
        with pytest.raises(openai.APITimeoutError):
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        with pytest.raises(openai.APIConnectionError):
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert [c.fault for c in fake.calls] == [
        None,
        FaultKind.RATE_LIMIT,
        FaultKind.SERVER_ERROR,
        FaultKind.TIMEOUT,
        FaultKind.CONNECTION_ERROR,
    ]
    assert isinstance(fake.calls[3].exception, httpx.ReadTimeout)
    assert isinstance(fake.calls[4].exception, httpx.ConnectError)


async def test_async_openai_sdk_goes_through_the_endpoint() -> None:
    fake = FakeLLM(return_value="async hello")
    with fake.http() as api_base:
        client = openai.AsyncOpenAI(base_url=api_base, api_key="sk-fake", max_retries=0)
        response = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert response.choices[0].message.content == "async hello"


# --------------------------------------------------------------------------- litellm (OpenAI)


@pytest.mark.parametrize("mode", MODES)
def test_litellm_gets_replies_with_tool_calls(mode: str) -> None:
    fake = FakeLLM(seed=9)
    with fake.http() as api_base:
        response = via_litellm(mode, api_base, tools=[MOVE])
        text = via_litellm(mode, api_base)
    (tool_call,) = response.choices[0].message.tool_calls
    assert tool_call.function.name == "move"
    assert text.choices[0].message.content
    assert [c.layer for c in fake.calls] == ["http", "http"]
    assert fake.calls[0].model == "gpt-4o-mini"  # the model litellm sent on the wire


@pytest.mark.parametrize("mode", MODES)
def test_litellm_sees_a_429_as_rate_limit_error_with_retry_after(mode: str) -> None:
    fake = faulty("rate_limit", retry_after=4)
    with fake.http() as api_base, pytest.raises(litellm.RateLimitError) as info:
        via_litellm(mode, api_base)
    assert info.value.status_code == 429
    assert info.value.litellm_response_headers["retry-after"] == "4"
    assert info.value.litellm_response_headers["x-ratelimit-remaining-requests"] == "0"


@pytest.mark.parametrize("mode", MODES)
def test_litellm_sees_a_read_timeout_as_timeout(mode: str) -> None:
    with faulty("timeout").http() as api_base, pytest.raises(litellm.Timeout):
        via_litellm(mode, api_base)


@pytest.mark.parametrize("mode", MODES)
def test_litellm_sees_server_errors_as_500_or_503(mode: str) -> None:
    fake = faulty("server_error")
    statuses = set()
    with fake.http() as api_base:
        for _ in range(12):
            with pytest.raises(
                (litellm.InternalServerError, litellm.ServiceUnavailableError)
            ) as info:
                via_litellm(mode, api_base)
            statuses.add(info.value.status_code)
    assert statuses == {500, 503}


@pytest.mark.parametrize("mode", MODES)
def test_litellm_sees_a_connect_error_as_a_connection_failure(mode: str) -> None:
    # litellm's OpenAI provider reports the SDK's APIConnectionError as a 500 "Connection error."
    with (
        faulty("connection_error").http() as api_base,
        pytest.raises(
            (litellm.APIConnectionError, litellm.InternalServerError), match="Connection error"
        ),
    ):
        via_litellm(mode, api_base)


@pytest.mark.parametrize("mode", MODES)
def test_litellm_gets_malformed_and_empty_200s(mode: str) -> None:
    with faulty("malformed_json").http() as api_base:
        tools = via_litellm(mode, api_base, tools=[MOVE])
        text = via_litellm(mode, api_base, response_format={"type": "json_object"})
    with pytest.raises(json.JSONDecodeError):
        json.loads(tools.choices[0].message.tool_calls[0].function.arguments)
    with pytest.raises(json.JSONDecodeError):
        json.loads(text.choices[0].message.content)
    with faulty("empty_response").http() as api_base:
        empty = via_litellm(mode, api_base, tools=[MOVE])
    assert not empty.choices[0].message.content and not empty.choices[0].message.tool_calls


def test_side_effect_provider_errors_become_http_statuses() -> None:
    error = litellm.RateLimitError(
        "slow down",
        llm_provider="openai",
        model="gpt-4o-mini",
        response=httpx.Response(
            429, headers={"retry-after": "7"}, request=httpx.Request("POST", "https://x")
        ),
    )
    fake = FakeLLM(side_effect=[error])
    with fake.http() as api_base, pytest.raises(litellm.RateLimitError) as info:
        via_litellm("sync", api_base)
    assert info.value.litellm_response_headers["retry-after"] == "7"
    assert fake.calls.last.status_code == 429


def test_http_calls_are_attributed_to_the_current_agent() -> None:
    import mesa

    model = mesa.Model(seed=0)
    agent = mesa.Agent(model)
    model.steps = 4
    plan = FaultPlan().at(agent=agent.unique_id, step=4, call=1, kind="timeout")
    fake = FakeLLM(faults=plan)
    with fake.http() as api_base, acting_as(agent):
        via_litellm("sync", api_base)
        with pytest.raises(litellm.Timeout):
            via_litellm("async", api_base)
    assert [(c.agent, c.step, c.call, c.fault) for c in fake.calls] == [
        (agent.unique_id, 4, 0, None),
        (agent.unique_id, 4, 1, FaultKind.TIMEOUT),
    ]
    (fault,) = plan.injected
    assert (fault.agent, fault.step, fault.call, fault.layer) == (agent.unique_id, 4, 1, "http")


async def test_latency_does_not_block_the_event_loop() -> None:
    fake = FakeLLM(latency=0.1)
    with fake.http() as api_base:
        client = openai.AsyncOpenAI(base_url=api_base, api_key="sk-fake", max_retries=0)
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.gather(
            *(client.chat.completions.create(model="m", messages=MESSAGES) for _ in range(6))
        )
        assert loop.time() - start < 0.45
    assert fake.call_count == 6


def test_with_the_provider_active_http_calls_still_reach_the_endpoint() -> None:
    """The plugin's fake_llm_http: the provider (not intercepting) and the endpoint together."""
    fake = FakeLLM(return_value="over http")
    with fake.activate(intercept_all=False), fake.http() as api_base:
        # No _skip_mcp_handler here: while active, the fake's litellm wrapper adds it.
        response = litellm.completion(
            model="openai/gpt-4o-mini",
            messages=MESSAGES,
            tools=[MOVE],
            api_base=api_base,
            api_key="sk-fake",
            num_retries=0,
            max_retries=0,
        )
    assert response.choices[0].message.content == "over http"
    assert fake.calls.last.layer == "http"


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_intercept_all_lets_calls_to_the_endpoint_through_and_answers_the_rest(mode: str) -> None:
    """fake_llm + fake_llm_http: HTTP faults stay HTTP faults, other calls stay answered."""
    plan = FaultPlan(0).at(agent=None, step=None, call=0, kind=FaultKind.RATE_LIMIT)
    fake = FakeLLM(return_value="hello", faults=plan)
    with fake.activate(), fake.http() as api_base:
        with pytest.raises(litellm.RateLimitError):
            via_litellm(mode, api_base)
        assert fake.calls.last.layer == "http"
        assert plan.injected[-1].layer == "http"
        # no api_base, no key: still answered by the fake's provider, offline
        response = litellm.completion(model="openai/gpt-4o-mini", messages=MESSAGES)
        assert response.choices[0].message.content == "hello"
        assert fake.calls.last.layer == "provider"
