"""ModuleLLM: requests, API-key checks, hooks the harness relies on, attribution, threads."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import mesa
import pytest
import respx

from mesa_llm._litellm import import_litellm
from mesa_llm.errors import MesaLLMError, MissingAPIKeyError, UnknownModelError
from mesa_llm.module_llm import ModuleLLM, RetryPolicy, skip_api_key_check
from mesa_llm.parallel_stepping import acting_as, current_agent

litellm = import_litellm()

API_BASE = "https://llm.test/v1"


def echo(request: httpx.Request) -> httpx.Response:
    """An OpenAI chat-completions answer whose content is the last message's content."""
    body = json.loads(request.content)
    return httpx.Response(
        200,
        json={
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": body["messages"][-1]["content"]},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        },
    )


@pytest.fixture
def provider() -> Iterator[respx.Route]:
    """An OpenAI-compatible provider at API_BASE that echoes the last message."""
    with respx.mock(using="httpx", assert_all_called=False) as router:
        yield router.post(f"{API_BASE}/chat/completions").mock(side_effect=echo)


def sent_body(route: respx.Route) -> dict[str, Any]:
    return json.loads(route.calls.last.request.content)


def make_llm(**kwargs: Any) -> ModuleLLM:
    return ModuleLLM("openai/gpt-4o-mini", api_base=API_BASE, api_key="test-key", **kwargs)


@pytest.fixture
def recorded_completions(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Wrap litellm.completion/acompletion as a harness does; record kwargs and current_agent()."""
    calls: list[dict[str, Any]] = []
    completion, acompletion = litellm.completion, litellm.acompletion

    def record(kwargs: dict[str, Any]) -> None:
        calls.append({**kwargs, "current_agent": current_agent()})

    def wrapped(**kwargs: Any) -> Any:
        record(kwargs)
        return completion(**kwargs)

    async def awrapped(**kwargs: Any) -> Any:
        record(kwargs)
        return await acompletion(**kwargs)

    monkeypatch.setattr(litellm, "completion", wrapped)
    monkeypatch.setattr(litellm, "acompletion", awrapped)
    return calls


# --- requests ---


def test_generate_returns_a_model_response(provider: respx.Route) -> None:
    response = make_llm().generate("hello")

    assert isinstance(response, litellm.ModelResponse)
    assert response.choices[0].message.content == "hello"
    assert provider.call_count == 1


async def test_agenerate_returns_a_model_response(provider: respx.Route) -> None:
    response = await make_llm().agenerate("hello")

    assert isinstance(response, litellm.ModelResponse)
    assert response.choices[0].message.content == "hello"


def test_request_carries_system_prompt_options_and_call_kwargs(provider: respx.Route) -> None:
    llm = make_llm(system_prompt="You are a sheep.", temperature=0.2, max_tokens=50)
    tools = [{"type": "function", "function": {"name": "move", "parameters": {"type": "object"}}}]

    llm.generate("where to?", tools=tools, tool_choice="required", max_tokens=7)

    body = sent_body(provider)
    assert body["messages"] == [
        {"role": "system", "content": "You are a sheep."},
        {"role": "user", "content": "where to?"},
    ]
    assert body["tools"] == tools
    assert body["tool_choice"] == "required"
    assert body["temperature"] == 0.2
    assert body["max_tokens"] == 7  # the call's kwargs win over the module's


async def test_function_tools_work_sync_and_async(provider: respx.Route) -> None:
    tools = [{"type": "function", "function": {"name": "wait", "parameters": {"type": "object"}}}]
    llm = make_llm()

    llm.generate("sync", tools=tools)
    await llm.agenerate("async", tools=tools)

    assert provider.call_count == 2
    assert all("_skip_mcp_handler" not in json.loads(c.request.content) for c in provider.calls)


def test_no_tool_choice_without_tools_and_response_format_passed(provider: respx.Route) -> None:
    make_llm().generate("x", response_format={"type": "json_object"})

    body = sent_body(provider)
    assert "tools" not in body
    assert "tool_choice" not in body
    assert body["response_format"] == {"type": "json_object"}


def test_messages_keep_their_own_system_message(provider: respx.Route) -> None:
    history = [{"role": "system", "content": "own"}, {"role": "user", "content": "earlier"}]

    make_llm(system_prompt="default").generate("now", messages=history)

    assert [m["content"] for m in sent_body(provider)["messages"]] == ["own", "earlier", "now"]


def test_prompt_or_messages_is_required() -> None:
    with pytest.raises(ValueError, match=r"mesa_llm: generate\(\) needs prompt=... or messages="):
        make_llm().generate()


@pytest.mark.parametrize("name", ["num_retries", "max_retries"])
def test_litellm_retry_options_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match=rf"{name}=.*RetryPolicy"):
        make_llm(**{name: 2})
    with pytest.raises(ValueError, match=rf"{name}=.*RetryPolicy"):
        make_llm().generate("x", **{name: 2})  # type: ignore[arg-type]


# --- hooks the harness relies on ---


async def test_calls_go_through_litellm_attributes_with_retries_off(
    provider: respx.Route, recorded_completions: list[dict[str, Any]]
) -> None:
    llm = make_llm(timeout=12.5)
    llm.generate("sync")
    await llm.agenerate("async")

    assert [c["messages"][-1]["content"] for c in recorded_completions] == ["sync", "async"]
    for call in recorded_completions:
        assert (call["num_retries"], call["max_retries"]) == (0, 0)
        assert (call["api_base"], call["timeout"]) == (API_BASE, 12.5)
    assert provider.call_count == 2


# --- API keys and model names ---


@pytest.mark.parametrize(
    ("llm_model", "variable"),
    [
        ("openai/gpt-4o-mini", "OPENAI_API_KEY"),
        ("gpt-4o-mini", "OPENAI_API_KEY"),
        ("anthropic/claude-3-5-haiku-latest", "ANTHROPIC_API_KEY"),
        ("openrouter/openai/gpt-4o", "OPENROUTER_API_KEY"),
        ("gemini/gemini-1.5-flash", "GEMINI_API_KEY"),
    ],
)
def test_missing_key_fails_at_construction_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, llm_model: str, variable: str
) -> None:
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENROUTER_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)

    with pytest.raises(MissingAPIKeyError, match=variable) as caught:
        ModuleLLM(llm_model)

    assert isinstance(caught.value, MesaLLMError)
    assert str(caught.value).startswith("mesa_llm: ")
    assert variable in caught.value.variables


def test_key_from_environment_argument_or_local_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    ModuleLLM("openai/gpt-4o-mini", api_key="sk-test")
    ModuleLLM("openai/gpt-4o-mini", api_base="http://localhost:8000/v1")
    ModuleLLM("ollama/llama3")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    assert ModuleLLM("openai/gpt-4o-mini").provider == "openai"


def test_fake_provider_needs_no_key() -> None:
    assert ModuleLLM("mesa-fake/any-model").provider == "mesa-fake"


def test_skip_api_key_check_is_reentrant_and_thread_safe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    entered = threading.Barrier(8)

    def construct_inside() -> str:
        with skip_api_key_check():
            entered.wait()
            with skip_api_key_check():
                return ModuleLLM("openai/gpt-4o-mini").provider

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(lambda _: construct_inside(), range(8))) == {"openai"}
    with pytest.raises(MissingAPIKeyError):
        ModuleLLM("openai/gpt-4o-mini")


@pytest.mark.parametrize("llm_model", ["foo", "claude-typo", "nosuchprovider/model"])
def test_unresolvable_model_is_a_clear_error(
    llm_model: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(UnknownModelError, match=repr(llm_model)) as caught:
        ModuleLLM(llm_model, api_key="k")

    assert isinstance(caught.value, ValueError)
    assert "provider/model" in str(caught.value)
    assert capsys.readouterr().out == ""  # litellm's provider-list banner is silenced


def test_invalid_arguments_name_the_option() -> None:
    with pytest.raises(ValueError, match="llm_model"):
        ModuleLLM("")
    with pytest.raises(TypeError, match="retry="):
        make_llm(retry={"max_attempts": 3})
    with pytest.raises(TypeError, match="batching="):
        make_llm(batching=16)


def test_repr_never_shows_the_key() -> None:
    assert "test-key" not in repr(make_llm())


# --- attribution ---


async def test_owner_agent_is_current_agent_during_its_calls(
    provider: respx.Route, recorded_completions: list[dict[str, Any]]
) -> None:
    model = mesa.Model(seed=1)
    owner, stepping = mesa.Agent(model), mesa.Agent(model)
    llm = make_llm(agent=owner)

    llm.generate("sequential")
    await llm.agenerate("sequential async")
    with acting_as(stepping):
        llm.generate("inside another agent's step")

    assert [c["current_agent"] for c in recorded_completions] == [owner, owner, stepping]
    assert current_agent() is None


# --- threads ---


def test_generate_is_safe_from_many_threads(provider: respx.Route) -> None:
    llm = make_llm(retry=RetryPolicy(sleep=lambda _: None))

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda i: llm.generate(f"p{i}"), range(64)))

    assert [a.choices[0].message.content for a in answers] == [f"p{i}" for i in range(64)]
    assert provider.call_count == 64


def test_threads_retrying_concurrently_each_stop_at_max_attempts() -> None:
    attempts_by_prompt: dict[str, int] = {}
    lock = threading.Lock()

    def rate_limited(request: httpx.Request) -> httpx.Response:
        prompt = json.loads(request.content)["messages"][-1]["content"]
        with lock:
            attempts_by_prompt[prompt] = attempts_by_prompt.get(prompt, 0) + 1
        return httpx.Response(429, json={"error": {"message": "slow down"}})

    llm = make_llm(retry=RetryPolicy(max_attempts=3, sleep=lambda _: None), seed=7)

    def call(i: int) -> BaseException | None:
        try:
            llm.generate(f"p{i}")
        except litellm.RateLimitError as exc:
            return exc
        return None

    with respx.mock(using="httpx") as router:
        router.post(f"{API_BASE}/chat/completions").mock(side_effect=rate_limited)
        with ThreadPoolExecutor(8) as pool:
            errors = list(pool.map(call, range(24)))

    assert all(isinstance(e, litellm.RateLimitError) for e in errors)
    assert attempts_by_prompt == {f"p{i}": 3 for i in range(24)}


def test_swapped_retry_policy_and_circuit_breaker_apply_to_the_next_call() -> None:
    from mesa_llm import CircuitBreaker, CircuitOpenError
    from mesa_llm_testing import FakeLLM, FaultPlan

    fake = FakeLLM(seed=1, faults=FaultPlan(1.0, kinds=["timeout"], seed=1))
    with fake.activate():
        llm = ModuleLLM("mesa-fake/m", retry=RetryPolicy(max_attempts=2), seed=1)
        with pytest.raises(litellm.Timeout):
            llm.generate("a")
        assert len(fake.calls) == 2
        llm.retry = RetryPolicy(max_attempts=4)
        with pytest.raises(litellm.Timeout):
            llm.generate("b")
        assert len(fake.calls) == 2 + 4
        llm.circuit_breaker = CircuitBreaker(failures=1, reset_after=60)
        with pytest.raises(CircuitOpenError):
            llm.generate("c")
        assert len(fake.calls) == 2 + 4 + 1  # the first outage opened the circuit


# --- cheap imports ---


@pytest.mark.subprocess
def test_import_mesa_llm_does_not_import_litellm() -> None:
    code = (
        "import sys, mesa_llm, mesa_llm.module_llm, mesa_llm.errors;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('litellm', 'openai')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
