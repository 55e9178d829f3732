"""FakeLLM through real litellm: the ``mesa-fake`` custom provider and intercept-all.

Every test here goes through ``litellm.completion`` / ``litellm.acompletion`` and
litellm's own dispatch, exception mapping and ``ModelResponse`` handling.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import mesa
import pytest

from mesa_llm._litellm import import_litellm
from mesa_llm.module_llm import ModuleLLM, RetryPolicy
from mesa_llm.parallel_stepping import acting_as, step_agents_parallel_sync
from mesa_llm_testing import FakeLLM, FaultKind, FaultPlan

litellm = import_litellm()

MESSAGES = [{"role": "user", "content": "What do you do next?"}]
MOVE = {
    "type": "function",
    "function": {
        "name": "move",
        "parameters": {
            "type": "object",
            "properties": {"x": {"type": "integer", "minimum": 0, "maximum": 9}},
            "required": ["x"],
        },
    },
}
NO_RETRIES: dict[str, Any] = {"num_retries": 0, "max_retries": 0}


def call(mode: str, **kwargs: Any) -> Any:
    """One litellm completion, sync or async."""
    kwargs = {"messages": MESSAGES, **NO_RETRIES, **kwargs}
    if mode == "sync":
        return litellm.completion(**kwargs)
    return asyncio.run(litellm.acompletion(**kwargs))


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """No provider keys in the environment, and any attempt to open a socket fails the test."""
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "AZURE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    attempts: list[Any] = []
    real_connect = socket.socket.connect

    def connect(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            attempts.append(address)
            raise OSError(f"test: network access attempted to {address!r}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    yield attempts
    assert attempts == [], "a request tried to leave the machine"


MODES = ["sync", "async"]


# --------------------------------------------------------------------------- the provider


@pytest.mark.parametrize("mode", MODES)
def test_mesa_fake_models_answer_through_litellm(mode: str, offline: list[Any]) -> None:
    fake = FakeLLM(return_value="hello from the fake")
    with fake.activate(intercept_all=False):
        response = call(mode, model="mesa-fake/any-name", temperature=0.2)
    assert isinstance(response, litellm.ModelResponse)
    assert response.choices[0].message.content == "hello from the fake"
    assert response.choices[0].finish_reason == "stop"
    assert response.usage.total_tokens > 0
    assert fake.calls.last.model == "mesa-fake/any-name"
    assert fake.calls.last.layer == "provider"
    assert fake.calls.last.request.params == {"temperature": 0.2}


@pytest.mark.parametrize("mode", MODES)
def test_intercept_all_answers_any_model_without_a_key_or_network(
    mode: str, offline: list[Any]
) -> None:
    fake = FakeLLM(seed=3)
    with fake.activate():
        response = call(mode, model="openai/gpt-4o-mini", tools=[MOVE], tool_choice="auto")
        plain = call(mode, model="gpt-4o-mini", api_base="https://api.openai.com/v1")
    (tool_call,) = response.choices[0].message.tool_calls
    assert tool_call.function.name == "move"
    assert 0 <= json.loads(tool_call.function.arguments)["x"] <= 9
    assert response.choices[0].finish_reason == "tool_calls"
    assert plain.choices[0].message.content
    assert [c.model for c in fake.calls] == ["openai/gpt-4o-mini", "gpt-4o-mini"]


def test_without_intercept_all_other_models_are_left_alone() -> None:
    import httpx
    import respx

    fake = FakeLLM()
    with fake.activate(intercept_all=False), respx.mock(using="httpx") as router:
        route = router.post("https://api.openai.com/v1/chat/completions").mock(
            return_value=httpx.Response(
                503,
                json={
                    "error": {
                        "message": "real path",
                        "type": "server_error",
                        "param": None,
                        "code": None,
                    }
                },
            )
        )
        with pytest.raises(litellm.ServiceUnavailableError, match="real path"):
            litellm.completion(
                model="openai/gpt-4o-mini", messages=MESSAGES, api_key="sk-x", **NO_RETRIES
            )
    assert route.called
    assert not fake.called


def test_activation_is_restored_on_exit_even_after_an_error() -> None:
    before = (litellm.completion, litellm.acompletion, list(litellm.custom_provider_map))
    with pytest.raises(RuntimeError, match="inside"), FakeLLM().activate():
        assert litellm.completion is not before[0]
        assert any(item["provider"] == "mesa-fake" for item in litellm.custom_provider_map)
        raise RuntimeError("inside")
    assert (litellm.completion, litellm.acompletion, litellm.custom_provider_map) == before
    with pytest.raises(litellm.exceptions.BadRequestError):
        litellm.completion(model="mesa-fake/x", messages=MESSAGES, **NO_RETRIES)


def test_activation_nests_and_the_innermost_fake_answers(offline: list[Any]) -> None:
    outer, inner = FakeLLM(return_value="outer"), FakeLLM(return_value="inner")
    with outer.activate():
        with outer.activate():
            assert call("sync", model="m").choices[0].message.content == "outer"
        assert call("sync", model="m").choices[0].message.content == "outer"
        with inner.activate():
            assert call("sync", model="m").choices[0].message.content == "inner"
        assert call("sync", model="m").choices[0].message.content == "outer"
    assert (outer.call_count, inner.call_count) == (3, 1)


# --------------------------------------------------------------------------- replies


@pytest.mark.parametrize("mode", MODES)
def test_return_value_model_response_is_returned_as_given(mode: str) -> None:
    given = litellm.ModelResponse(
        model="custom",
        choices=[
            {
                "index": 0,
                "message": {"role": "assistant", "content": "exactly this"},
                "finish_reason": "length",
            }
        ],
    )
    fake = FakeLLM(return_value=given)
    with fake.activate():
        first = call(mode, model="openai/gpt-4o-mini")
        second = call(mode, model="openai/gpt-4o-mini")
    for response in (first, second):
        assert response.choices[0].message.content == "exactly this"
        assert response.choices[0].finish_reason == "length"
    assert first is not given and second is not first


@pytest.mark.parametrize("mode", MODES)
def test_structured_output_requests_get_json_matching_the_schema(mode: str) -> None:
    schema = {
        "type": "object",
        "properties": {
            "vote": {"type": "string", "enum": ["yes", "no"]},
            "weight": {"type": "integer"},
        },
        "required": ["vote", "weight"],
    }
    fake = FakeLLM(seed=1)
    with fake.activate():
        response = call(
            mode,
            model="openai/gpt-4o-mini",
            response_format={"type": "json_schema", "json_schema": {"name": "v", "schema": schema}},
        )
    data = json.loads(response.choices[0].message.content)
    assert data["vote"] in ("yes", "no") and isinstance(data["weight"], int)


def test_streaming_answers_in_chunks() -> None:
    fake = FakeLLM(return_value="streamed text")
    with fake.activate():
        chunks = list(
            litellm.completion(model="openai/gpt-4o-mini", messages=MESSAGES, stream=True)
        )
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == "streamed text"


@pytest.mark.parametrize("mode", MODES)
def test_side_effect_exceptions_reach_the_caller_unwrapped(mode: str) -> None:
    fake = FakeLLM(side_effect=[ValueError("scripted failure"), "then fine"])
    with fake.activate():
        with pytest.raises(ValueError, match="scripted failure"):
            call(mode, model="openai/gpt-4o-mini")
        assert call(mode, model="openai/gpt-4o-mini").choices[0].message.content == "then fine"
        with pytest.raises(Exception, match="side_effect is exhausted") as info:
            call(mode, model="openai/gpt-4o-mini")
    assert type(info.value).__name__ == "SideEffectExhaustedError"


# --------------------------------------------------------------------------- faults as exceptions


def faulty(kind: str, **kwargs: Any) -> FakeLLM:
    return FakeLLM(faults=FaultPlan(1.0, kinds=kind), return_value="unused", **kwargs)


@pytest.mark.parametrize("mode", MODES)
def test_rate_limit_is_a_litellm_rate_limit_error_with_retry_after(mode: str) -> None:
    fake = faulty("rate_limit", retry_after=2.5)
    with fake.activate(), pytest.raises(litellm.RateLimitError) as info:
        call(mode, model="openai/gpt-4o-mini")
    exc = info.value
    assert exc.status_code == 429
    assert exc.response.status_code == 429
    assert exc.response.headers["retry-after"] == "2.5"
    assert exc.litellm_response_headers["retry-after-ms"] == "2500"
    assert exc.litellm_response_headers["x-ratelimit-remaining-requests"] == "0"
    assert exc.body["code"] == "rate_limit_exceeded"
    assert fake.calls.last.fault is FaultKind.RATE_LIMIT
    assert fake.calls.last.exception is exc
    assert fake.faults.injected[0].layer == "provider"


@pytest.mark.parametrize("mode", MODES)
def test_timeout_is_a_litellm_timeout(mode: str) -> None:
    fake = faulty("timeout")
    with fake.activate(), pytest.raises(litellm.Timeout) as info:
        call(mode, model="openai/gpt-4o-mini")
    assert info.value.status_code == 408


@pytest.mark.parametrize("mode", MODES)
def test_server_errors_are_500_502_503_or_504_as_litellm_maps_them(mode: str) -> None:
    fake = faulty("server_error")
    seen = set()
    with fake.activate():
        for _ in range(16):
            with pytest.raises(Exception) as info:
                call(mode, model="openai/gpt-4o-mini")
            exc = info.value
            assert "OpenAIException - " in str(exc)  # as litellm names an OpenAI endpoint
            seen.add((type(exc), exc.status_code))
    # What litellm raises for these answers from an OpenAI endpoint: a 504 is a Timeout.
    assert seen == {
        (litellm.InternalServerError, 500),
        (litellm.BadGatewayError, 502),
        (litellm.ServiceUnavailableError, 503),
        (litellm.Timeout, 504),
    }


@pytest.mark.parametrize("mode", MODES)
def test_connection_error_is_the_500_litellm_makes_of_an_openai_connection_error(
    mode: str,
) -> None:
    fake = faulty("connection_error")
    with fake.activate(), pytest.raises(litellm.InternalServerError) as info:
        call(mode, model="openai/gpt-4o-mini")
    assert info.value.status_code == 500
    assert str(info.value).endswith("OpenAIException - Connection error.")
    assert RetryPolicy().is_retryable(info.value)  # still retried as transient


@pytest.mark.parametrize("mode", MODES)
def test_malformed_json_arrives_as_a_200_that_does_not_parse(mode: str) -> None:
    fake = faulty("malformed_json")
    with fake.activate():
        text = call(mode, model="openai/gpt-4o-mini", response_format={"type": "json_object"})
        tools = call(mode, model="openai/gpt-4o-mini", tools=[MOVE])
    with pytest.raises(json.JSONDecodeError):
        json.loads(text.choices[0].message.content)
    (tool_call,) = tools.choices[0].message.tool_calls
    assert tool_call.function.name == "move"
    with pytest.raises(json.JSONDecodeError):
        json.loads(tool_call.function.arguments)


@pytest.mark.parametrize("mode", MODES)
def test_empty_response_has_no_content_and_no_tool_calls(mode: str) -> None:
    fake = faulty("empty_response")
    with fake.activate():
        response = call(mode, model="openai/gpt-4o-mini", tools=[MOVE])
    message = response.choices[0].message
    assert not message.content and not message.tool_calls


# --------------------------------------------------------------------------- ModuleLLM on the fake


def test_module_llm_needs_no_key_and_retries_a_rate_limit_without_sleeping(
    offline: list[Any],
) -> None:
    plan = FaultPlan().at(agent=None, step=None, call=0, kind="rate_limit")
    fake = FakeLLM(faults=plan, retry_after=3.0, return_value=FakeLLM.tool_call("move", x=4))
    with fake.activate():
        llm = ModuleLLM("openai/gpt-4o-mini", retry=RetryPolicy(max_attempts=3))
        response: Any = llm.generate("Where to?", tools=[MOVE])
    assert json.loads(response.choices[0].message.tool_calls[0].function.arguments) == {"x": 4}
    assert fake.retry_sleeps == [3.0]
    assert [c.fault for c in fake.calls] == [FaultKind.RATE_LIMIT, None]


def test_retry_delays_are_bounded_like_call_records_and_counted_in_total() -> None:
    fake = FakeLLM(faults=FaultPlan(1.0, kinds=["rate_limit"]), retry_after=2.0, keep_calls=5)
    with fake.activate():
        llm = ModuleLLM("openai/gpt-4o-mini", retry=RetryPolicy(max_attempts=4))
        for _ in range(3):
            with pytest.raises(Exception, match=r"RateLimitError|rate limit"):
                llm.generate("Where to?")
    assert fake.retry_sleeps.total == 9  # three retries per call, none of them slept
    assert fake.retry_sleeps == [2.0] * 5  # the last keep_calls delays are kept


async def test_module_llm_agenerate_through_the_provider() -> None:
    fake = FakeLLM(return_value="async answer")
    with fake.activate():
        llm = ModuleLLM("mesa-fake/agent-brain")
        response = await llm.agenerate("hi")
    assert response.choices[0].message.content == "async answer"
    assert fake.calls.last.model == "mesa-fake/agent-brain"


# --------------------------------------------------------------------------- attribution, threads


class Caller(mesa.Agent):
    """Calls litellm twice per step: sync in threads, async in the event loop."""

    def step(self) -> None:
        for _ in range(2):
            with contextlib.suppress(Exception):
                litellm.completion(model="openai/gpt-4o-mini", messages=MESSAGES, **NO_RETRIES)

    async def astep(self) -> None:
        for _ in range(2):
            with contextlib.suppress(Exception):
                await litellm.acompletion(
                    model="openai/gpt-4o-mini", messages=MESSAGES, **NO_RETRIES
                )


class Town(mesa.Model):
    def __init__(self, mode: str) -> None:
        super().__init__(seed=2)
        self.mode = mode
        for _ in range(5):
            Caller(self)

    def step(self) -> None:
        if self.mode == "sequential":
            for agent in self.agents:
                with acting_as(agent):
                    agent.step()
        else:
            step_agents_parallel_sync(self.agents, mode=self.mode, on_error="raise")  # type: ignore[arg-type]


def town_run(mode: str) -> tuple[FakeLLM, list[tuple[Any, ...]]]:
    fake = FakeLLM(seed=4, faults=FaultPlan(0.3, seed=4, test_id="town"))
    with fake.activate():
        model = Town(mode)
        for _ in range(2):
            model.step()
    injected = sorted((f.agent, f.step, f.call, f.kind.value) for f in fake.faults.injected)
    return fake, injected


def test_calls_through_litellm_are_attributed_and_fault_alike_in_every_mode() -> None:
    results = {mode: town_run(mode) for mode in ("asyncio", "threading", "sequential")}
    fake, injected = results["sequential"]
    assert injected
    keys = sorted((c.agent, c.step, c.call) for c in fake.calls)
    assert keys == sorted(
        (uid, step, i) for uid in range(1, 6) for step in (1, 2) for i in range(2)
    )
    for mode in ("asyncio", "threading"):
        other, other_injected = results[mode]
        assert other_injected == injected, mode
        assert sorted((c.agent, c.step, c.call) for c in other.calls) == keys, mode
        replies = {(c.agent, c.step, c.call): c.response for c in other.calls}
        assert replies == {(c.agent, c.step, c.call): c.response for c in fake.calls}, mode


def test_many_threads_share_one_activation() -> None:
    fake = FakeLLM(seed=1)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(10):
                response = litellm.completion(
                    model="openai/gpt-4o-mini", messages=MESSAGES, **NO_RETRIES
                )
                assert response.choices[0].message.content
        except BaseException as exc:  # collected and re-raised in the main thread
            errors.append(exc)

    with fake.activate():
        threads = [threading.Thread(target=work) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
    assert fake.call_count == 160
    assert sorted(c.call for c in fake.calls) == list(range(160))


async def test_latency_is_awaited_so_calls_overlap() -> None:
    fake = FakeLLM(latency=0.25)
    with fake.activate():
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.gather(
            *(litellm.acompletion(model="openai/gpt-4o-mini", messages=MESSAGES) for _ in range(8))
        )
        elapsed = loop.time() - start
    assert fake.call_count == 8
    # 8 x 0.25 = 2 s if the latency blocked the loop; overlapped, about 0.25 s. The bound
    # leaves several times the overlapped time for a loaded machine.
    assert elapsed < 1.0


class Thinker(mesa.Agent):
    """An agent whose LLM is a ModuleLLM, as a downstream model writes it."""

    def __init__(self, model: mesa.Model) -> None:
        super().__init__(model)
        self.llm = ModuleLLM("openai/gpt-4o-mini", agent=self, retry=RetryPolicy(max_attempts=2))
        self.moves: list[int] = []

    async def astep(self) -> None:
        response: Any = await self.llm.agenerate("Where to?", tools=[MOVE])
        self.moves.append(
            json.loads(response.choices[0].message.tool_calls[0].function.arguments)["x"]
        )


async def test_step_agents_parallel_attributes_module_llm_calls_and_retries_scripted_faults() -> (
    None
):
    from mesa_llm.parallel_stepping import step_agents_parallel

    plan = FaultPlan(seed=6).at(agent=2, step=1, call=0, kind=FaultKind.TIMEOUT)
    fake = FakeLLM(seed=6, faults=plan)
    with fake.activate():
        model = mesa.Model(seed=6)
        agents = [Thinker(model) for _ in range(4)]
        for step in (1, 2):
            model.steps = step
            report = await step_agents_parallel(model.agents)
            assert all(outcome.status == "ok" for outcome in report.outcomes)
    assert all(len(agent.moves) == 2 for agent in agents)
    by_agent = {a.unique_id: [(c.step, c.call, c.fault) for c in fake.calls_for(a)] for a in agents}
    assert by_agent[2] == [(1, 0, FaultKind.TIMEOUT), (1, 1, None), (2, 0, None)]
    for uid in (1, 3, 4):
        assert by_agent[uid] == [(1, 0, None), (2, 0, None)]
    assert len(fake.retry_sleeps) == 1
