"""FakeLLM.http(): a real loopback server seen by the OpenAI SDK, litellm, httpx and urllib."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from typing import Any

import httpx
import mesa
import openai
import pytest

from mesa_llm._identity import AGENT_HEADER, RUN_HEADER, STEP_HEADER
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
SERVER_ERRORS = (
    litellm.InternalServerError,
    litellm.BadGatewayError,
    litellm.ServiceUnavailableError,
    litellm.Timeout,
)
CLIENT_TIMEOUT = 0.5  # clients give up on a stalled (TIMEOUT) answer after this
STALL = 3.0  # the server stalls at most this long (it stops as soon as the client hangs up)


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
        "timeout": CLIENT_TIMEOUT,
        **kwargs,
    }
    if kwargs.get("tools"):
        kwargs["_skip_mcp_handler"] = True  # litellm 1.10x needs the optional `mcp` otherwise
    if mode == "sync":
        return litellm.completion(**kwargs)
    return asyncio.run(litellm.acompletion(**kwargs))


def post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """POST with urllib (no third-party client at all); (status, parsed JSON body)."""
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def chat(api_base: str, **body: Any) -> bytes:
    return json.dumps({"model": "gpt-4o-mini", "messages": MESSAGES, **body}).encode()


# --------------------------------------------------------------------------- the wire format


def test_it_is_a_real_socket_on_loopback_with_openai_chat_completion_json() -> None:
    fake = FakeLLM(seed=5)
    with fake.http() as api_base:
        response = httpx.post(
            f"{api_base}/chat/completions",
            json={"model": "gpt-4o-mini", "messages": MESSAGES, "tools": [MOVE], "temperature": 0},
        )
    assert api_base.startswith("http://127.0.0.1:") and api_base.endswith("/v1")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
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


def test_the_server_stops_on_exit() -> None:
    with FakeLLM().http() as api_base:
        assert httpx.get(api_base.removesuffix("/v1") + "/health").json() == {"status": "ok"}
    with pytest.raises(httpx.ConnectError):
        httpx.get(api_base.removesuffix("/v1") + "/health", timeout=2)


def test_urllib_gets_replies_and_every_fault_kind() -> None:
    fake = FakeLLM(return_value="plain urllib")
    with fake.http() as api_base:
        assert post(f"{api_base}/chat/completions", chat(api_base))[1]["choices"][0]["message"][
            "content"
        ] == ("plain urllib")
    for kind, status in (("rate_limit", 429), ("server_error", None)):
        with faulty(kind, retry_after=3).http() as api_base:
            code, body = post(f"{api_base}/chat/completions", chat(api_base))
        assert code == status if status else code in (500, 502, 503, 504)
        assert set(body["error"]) == {"message", "type", "param", "code"}
    with faulty("timeout").http(stall=STALL) as api_base, pytest.raises(TimeoutError):
        post_with_timeout(f"{api_base}/chat/completions", chat(api_base))
    with (
        faulty("connection_error").http() as api_base,
        pytest.raises((ConnectionError, urllib.error.URLError, OSError)),
    ):
        post(f"{api_base}/chat/completions", chat(api_base))
    for kind in ("malformed_json", "empty_response"):
        with faulty(kind).http() as api_base:
            code, body = post(
                f"{api_base}/chat/completions",
                chat(api_base, response_format={"type": "json_object"}),
            )
        assert code == 200
        content = body["choices"][0]["message"]["content"]
        if kind == "empty_response":
            assert not content
        else:
            with pytest.raises(json.JSONDecodeError):
                json.loads(content)


def post_with_timeout(url: str, body: bytes) -> None:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=CLIENT_TIMEOUT):
        pass


def test_rate_limit_response_has_openai_body_and_headers() -> None:
    fake = faulty("rate_limit", retry_after=2)
    with fake.http() as api_base:
        response = httpx.post(
            f"{api_base}/chat/completions", json={"model": "gpt-4o", "messages": MESSAGES}
        )
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
    with fake.http(stall=STALL) as api_base:
        client = openai.OpenAI(
            base_url=api_base,
            api_key="sk-fake",
            max_retries=0,
            timeout=CLIENT_TIMEOUT,
            # A run id without an agent: keyed like calls outside any agent's step.
            default_headers={RUN_HEADER: "sdk-test"},
        )
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
        assert server.value.status_code in (500, 502, 503, 504)
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
    assert [c.status_code for c in fake.calls][:2] == [200, 429]
    assert [c.status_code for c in fake.calls][3:] == [None, None]  # no answer sent


@pytest.mark.parametrize("kind", ["malformed_json", "empty_response"])
def test_openai_sdk_gets_bad_200s(kind: str) -> None:
    with faulty(kind).http() as api_base:
        client = openai.OpenAI(base_url=api_base, api_key="sk-fake", max_retries=0)
        reply = client.chat.completions.create(
            model="m", messages=MESSAGES, response_format={"type": "json_object"}
        )
    content = reply.choices[0].message.content
    if kind == "empty_response":
        assert not content
    else:
        with pytest.raises(json.JSONDecodeError):
            json.loads(content or "")


async def test_async_openai_sdk_goes_through_the_endpoint() -> None:
    fake = FakeLLM(return_value="async hello")
    with fake.http() as api_base:
        client = openai.AsyncOpenAI(base_url=api_base, api_key="sk-fake", max_retries=0)
        response = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert response.choices[0].message.content == "async hello"


def test_streaming_is_server_sent_events_in_the_openai_chunk_shape() -> None:
    fake = FakeLLM(seed=3)
    with fake.http() as api_base:
        client = openai.OpenAI(base_url=api_base, api_key="sk-fake", max_retries=0)
        text = "".join(
            chunk.choices[0].delta.content or ""
            for chunk in client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
        )
        chunks = list(
            client.chat.completions.create(model="m", messages=MESSAGES, tools=[MOVE], stream=True)
        )
        raw = httpx.post(f"{api_base}/chat/completions", content=chat(api_base, stream=True))
    assert text == fake.calls[0].response.content
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    (call,) = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
    assert call.function.name == "move"  # type: ignore[union-attr]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert raw.text.rstrip().endswith("data: [DONE]")


def test_litellm_streams_through_the_endpoint() -> None:
    fake = FakeLLM(return_value="streamed reply")
    with fake.http() as api_base:
        stream = via_litellm("sync", api_base, stream=True)
        text = "".join(chunk.choices[0].delta.content or "" for chunk in stream)
    assert text == "streamed reply"


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
def test_litellm_sees_a_stalled_answer_as_timeout(mode: str) -> None:
    started = time.perf_counter()
    with faulty("timeout").http(stall=STALL) as api_base, pytest.raises(litellm.Timeout):
        via_litellm(mode, api_base)
    # The client gave up after CLIENT_TIMEOUT; the server let go as soon as it hung up.
    assert time.perf_counter() - started < STALL


@pytest.mark.parametrize("mode", MODES)
def test_litellm_sees_server_errors_as_500_502_503_or_504(mode: str) -> None:
    fake = faulty("server_error")
    seen = set()
    with fake.http() as api_base:
        for _ in range(16):
            with pytest.raises(SERVER_ERRORS) as info:
                via_litellm(mode, api_base)
            seen.add((type(info.value), info.value.status_code))
    # litellm's mapping for an OpenAI endpoint: a 504 is a gateway *timeout*.
    assert seen == {
        (litellm.InternalServerError, 500),
        (litellm.BadGatewayError, 502),
        (litellm.ServiceUnavailableError, 503),
        (litellm.Timeout, 504),
    }


@pytest.mark.parametrize("mode", MODES)
def test_litellm_sees_a_reset_connection_as_openai_connection_error(mode: str) -> None:
    # litellm's OpenAI provider reports the SDK's APIConnectionError as a 500 "Connection error."
    with (
        faulty("connection_error").http() as api_base,
        pytest.raises(litellm.InternalServerError, match="Connection error"),
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
    fake = FakeLLM(side_effect=[error, ValueError("boom")])
    with fake.http() as api_base:
        with pytest.raises(litellm.RateLimitError) as info:
            via_litellm("sync", api_base)
        with pytest.raises(litellm.InternalServerError, match="boom"):
            via_litellm("sync", api_base)
    assert info.value.litellm_response_headers["retry-after"] == "7"
    assert [c.status_code for c in fake.calls] == [429, 500]


# --------------------------------------------------------------------------- who is calling


def test_identity_headers_key_faults_like_the_provider() -> None:
    model = mesa.Model(seed=0)
    agent = mesa.Agent(model)
    model.steps = 4
    plan = FaultPlan().at(agent=agent.unique_id, step=4, call=1, kind="timeout")
    fake = FakeLLM(faults=plan)
    # While a fake is active, plain litellm calls to the endpoint carry the caller's identity.
    with fake.activate(intercept_all=False), fake.http(stall=STALL) as api_base, acting_as(agent):
        via_litellm("sync", api_base)
        with pytest.raises(litellm.Timeout):
            via_litellm("async", api_base)
    assert [(c.agent, c.step, c.call, c.fault) for c in fake.calls] == [
        (agent.unique_id, 4, 0, None),
        (agent.unique_id, 4, 1, FaultKind.TIMEOUT),
    ]
    (fault,) = plan.injected
    assert (fault.agent, fault.step, fault.call, fault.layer) == (agent.unique_id, 4, 1, "http")


def test_runs_keep_their_call_counts_apart() -> None:
    plan = FaultPlan().at(agent=1, step=1, call=1, kind="rate_limit")
    fake = FakeLLM(faults=plan)
    with fake.http() as api_base:
        statuses = []
        for run in ("a", "b", "a", "b"):  # interleaved: each run's second call is its call 1
            headers = {RUN_HEADER: run, AGENT_HEADER: "1", STEP_HEADER: "1"}
            statuses.append(post(f"{api_base}/chat/completions", chat(api_base), headers)[0])
    assert statuses == [200, 200, 429, 429]
    assert [(f.agent, f.step, f.call) for f in plan.injected] == [(1, 1, 1), (1, 1, 1)]


def test_requests_without_identity_are_keyed_by_content_and_occurrence() -> None:
    def run(order: list[str]) -> dict[tuple[str, int], int]:
        fake = FakeLLM(faults=FaultPlan(0.5, kinds="rate_limit", seed=11))
        with fake.http() as api_base:
            seen: dict[str, int] = {}
            result = {}
            for text in order:
                body = json.dumps({"model": "m", "messages": [{"role": "user", "content": text}]})
                index = seen[text] = seen.get(text, -1) + 1
                result[(text, index)] = post(f"{api_base}/chat/completions", body.encode())[0]
        assert {c.agent for c in fake.calls} == {c.agent for c in fake.calls if "fp:" in c.agent}
        return result

    words = [f"prompt {i}" for i in range(8)] * 2
    forward, backward = run(words), run(list(reversed(words)))
    assert forward == backward  # the same content faults the same way, whatever the order
    assert set(forward.values()) == {200, 429}


# --------------------------------------------------------------------------- robustness


def test_bad_requests_get_openai_4xx_and_the_server_keeps_serving() -> None:
    fake = FakeLLM(return_value="still here")
    with fake.http() as api_base:
        url = f"{api_base}/chat/completions"
        answers = [
            post(url, b"{nope"),
            post(url, b"[1, 2]"),
            post(url, json.dumps({"model": "m"}).encode()),
            post(url, json.dumps({"model": "m", "messages": "hi"}).encode()),
            post(url, b"x" * (9 * 1024 * 1024)),
            post(f"{api_base}/nowhere", b"{}"),
        ]
        wrong_method = httpx.get(url)
        ok = post(url, chat(api_base))
    assert [status for status, _ in answers] == [400, 400, 400, 400, 413, 404]
    assert wrong_method.status_code == 405
    for _, body in [*answers, (0, wrong_method.json())]:
        assert set(body["error"]) == {"message", "type", "param", "code"}
    assert answers[2][1]["error"]["param"] == "messages"
    assert ok[1]["choices"][0]["message"]["content"] == "still here"
    assert fake.call_count == 1


async def test_latency_does_not_block_the_server() -> None:
    fake = FakeLLM(latency=0.25)
    with fake.http() as api_base:
        client = openai.AsyncOpenAI(base_url=api_base, api_key="sk-fake", max_retries=0)
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.gather(
            *(client.chat.completions.create(model="m", messages=MESSAGES) for _ in range(8))
        )
        # 8 x 0.25 = 2 s if the latency were served one at a time; overlapped, about 0.25 s.
        assert loop.time() - start < 1.0
    assert fake.call_count == 8


@pytest.mark.parametrize("mode", MODES)
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
