"""RetryPolicy: bounded, seeded, Retry-After-aware retries, against real litellm over respx."""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import time
from collections.abc import Iterator

import httpx
import pytest
import respx

from mesa_llm._litellm import import_litellm
from mesa_llm.module_llm import (
    TRANSIENT_ERRORS,
    ModuleLLM,
    RetryPolicy,
    override_retry_sleep,
)

litellm = import_litellm()

API_BASE = "https://llm.test/v1"


def chat_completion(content: str = "ok") -> httpx.Response:
    """An OpenAI chat-completions answer."""
    return httpx.Response(
        200,
        json={
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": 0,
            "model": "gpt-4o-mini",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        },
    )


def error(status: int, headers: dict[str, str] | None = None) -> httpx.Response:
    """An OpenAI-style error answer."""
    return httpx.Response(
        status, json={"error": {"message": f"status {status}", "type": "test"}}, headers=headers
    )


@pytest.fixture
def provider() -> Iterator[respx.Route]:
    """The chat-completions route of an OpenAI-compatible provider at API_BASE."""
    with respx.mock(using="httpx", assert_all_called=False) as router:
        yield router.post(f"{API_BASE}/chat/completions")


def make_llm(retry: RetryPolicy, seed: int | None = 0) -> ModuleLLM:
    return ModuleLLM(
        "openai/gpt-4o-mini", api_base=API_BASE, api_key="test-key", retry=retry, seed=seed
    )


@pytest.mark.parametrize("max_attempts", [1, 3, 5])
def test_always_429_stops_after_max_attempts(provider: respx.Route, max_attempts: int) -> None:
    provider.mock(return_value=error(429))
    sleeps: list[float] = []
    llm = make_llm(RetryPolicy(max_attempts=max_attempts, sleep=sleeps.append))

    with pytest.raises(litellm.RateLimitError) as caught:
        llm.generate("hello")

    assert provider.call_count == max_attempts
    assert len(sleeps) == max_attempts - 1
    plural = "s" * (max_attempts > 1)
    assert f"mesa_llm: gave up after {max_attempts} attempt{plural}" in caught.value.__notes__[-1]


async def test_always_429_stops_after_max_attempts_async(provider: respx.Route) -> None:
    provider.mock(return_value=error(429))
    sleeps: list[float] = []
    llm = make_llm(RetryPolicy(max_attempts=4, sleep=sleeps.append))

    with pytest.raises(litellm.RateLimitError) as caught:
        await llm.agenerate("hello")

    assert provider.call_count == 4
    assert len(sleeps) == 3
    assert "gave up after 4 attempts" in caught.value.__notes__[-1]


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "7"}, 7.0),
        ({"retry-after": "2.5"}, 2.5),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after": "9", "retry-after-ms": "8250"}, 8.25),
    ],
)
def test_retry_after_is_honoured(
    provider: respx.Route, headers: dict[str, str], expected: float
) -> None:
    provider.mock(side_effect=[error(429, headers), error(429, headers), chat_completion("done")])
    sleeps: list[float] = []
    llm = make_llm(RetryPolicy(max_attempts=3, sleep=sleeps.append))

    response = llm.generate("hello")

    assert response.choices[0].message.content == "done"
    assert sleeps == [expected, expected]
    assert provider.call_count == 3


async def test_retry_after_http_date_is_honoured_async(provider: respx.Route) -> None:
    when = email.utils.formatdate(time.time() + 10, usegmt=True)
    provider.mock(side_effect=[error(503, {"retry-after": when}), chat_completion()])
    sleeps: list[float] = []

    await make_llm(RetryPolicy(sleep=sleeps.append)).agenerate("hello")

    assert len(sleeps) == 1
    assert 8.0 <= sleeps[0] <= 10.0


def test_retry_after_beyond_max_delay_gives_up_at_once(provider: respx.Route) -> None:
    provider.mock(return_value=error(429, {"retry-after": "60"}))
    sleeps: list[float] = []
    llm = make_llm(RetryPolicy(max_attempts=5, max_delay=20.0, sleep=sleeps.append))

    with pytest.raises(litellm.RateLimitError) as caught:
        llm.generate("hello")

    assert provider.call_count == 1
    assert sleeps == []
    note = caught.value.__notes__[-1]
    assert "asked to wait 60s" in note
    assert "max_delay=20s" in note


@pytest.mark.parametrize(
    ("status", "exception"),
    [(400, "BadRequestError"), (401, "AuthenticationError"), (404, "NotFoundError")],
)
def test_client_errors_are_not_retried(provider: respx.Route, status: int, exception: str) -> None:
    provider.mock(return_value=error(status))
    sleeps: list[float] = []

    with pytest.raises(getattr(litellm, exception)) as caught:
        make_llm(RetryPolicy(max_attempts=5, sleep=sleeps.append)).generate("hello")

    assert provider.call_count == 1
    assert sleeps == []
    assert not getattr(caught.value, "__notes__", [])


def test_non_retryable_after_retries_says_how_many_attempts(provider: respx.Route) -> None:
    provider.mock(side_effect=[error(429), error(400)])

    with pytest.raises(litellm.BadRequestError) as caught:
        make_llm(RetryPolicy(max_attempts=5, sleep=lambda _: None)).generate("hello")

    assert provider.call_count == 2
    assert "failed after 2 attempts; BadRequestError is not retried" in caught.value.__notes__[-1]


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_server_errors_are_retried(provider: respx.Route, status: int) -> None:
    provider.mock(side_effect=[error(status), chat_completion("recovered")])

    response = await make_llm(RetryPolicy(sleep=lambda _: None)).agenerate("hello")

    assert response.choices[0].message.content == "recovered"
    assert provider.call_count == 2


def test_connection_errors_are_retried(provider: respx.Route) -> None:
    provider.mock(side_effect=[httpx.ConnectError("refused"), chat_completion("recovered")])

    response = make_llm(RetryPolicy(sleep=lambda _: None)).generate("hello")

    assert response.choices[0].message.content == "recovered"
    assert provider.call_count == 2


def test_custom_retry_on_replaces_the_transient_set(provider: respx.Route) -> None:
    provider.mock(side_effect=[error(400), chat_completion("second try")])
    only_bad_requests = RetryPolicy(retry_on=(litellm.BadRequestError,), sleep=lambda _: None)
    assert make_llm(only_bad_requests).generate("x").choices[0].message.content == "second try"

    provider.mock(return_value=error(429))
    provider.reset()
    with pytest.raises(litellm.RateLimitError):
        make_llm(RetryPolicy(retry_on=(), sleep=lambda _: None)).generate("x")
    assert provider.call_count == 1


def run_always_failing(provider: respx.Route, policy: RetryPolicy, seed: int | None) -> list[float]:
    """The waits requested before giving up on a provider that always answers 503."""
    provider.mock(return_value=error(503))
    sleeps: list[float] = []
    llm = make_llm(dataclasses.replace(policy, sleep=sleeps.append), seed=seed)
    with pytest.raises(litellm.ServiceUnavailableError):
        llm.generate("hello")
    return sleeps


def test_jitter_is_reproducible_from_the_seed(provider: respx.Route) -> None:
    policy = RetryPolicy(max_attempts=6, base_delay=1.0, max_delay=8.0)

    first = run_always_failing(provider, policy, seed=42)
    again = run_always_failing(provider, policy, seed=42)
    other = run_always_failing(provider, policy, seed=43)

    assert first == again
    assert first != other
    ceilings = [1.0, 2.0, 4.0, 8.0, 8.0]
    assert all(0.0 <= wait <= cap for wait, cap in zip(first, ceilings, strict=True))


def test_without_jitter_backoff_doubles_up_to_max_delay(provider: respx.Route) -> None:
    policy = RetryPolicy(max_attempts=6, base_delay=0.5, max_delay=3.0, jitter=False)
    assert run_always_failing(provider, policy, seed=None) == [0.5, 1.0, 2.0, 3.0, 3.0]


async def test_override_retry_sleep_applies_process_wide_without_waiting(
    provider: respx.Route,
) -> None:
    provider.mock(side_effect=[error(429), error(429), chat_completion()])
    recorded: list[float] = []
    slow = RetryPolicy(base_delay=30.0, max_delay=30.0, jitter=False)  # would really wait 90 s

    started = time.perf_counter()
    with override_retry_sleep(recorded.append):
        await make_llm(slow).agenerate("hello")

    assert recorded == [30.0, 30.0]
    assert time.perf_counter() - started < 5.0


def test_policy_sleep_wins_over_override_and_overrides_nest(provider: respx.Route) -> None:
    provider.mock(return_value=error(429))
    outer: list[float] = []
    inner: list[float] = []
    own: list[float] = []
    policy = RetryPolicy(max_attempts=2, jitter=False)

    with override_retry_sleep(outer.append):
        with override_retry_sleep(inner.append), pytest.raises(litellm.RateLimitError):
            make_llm(policy).generate("x")
        with pytest.raises(litellm.RateLimitError):
            make_llm(RetryPolicy(max_attempts=2, jitter=False, sleep=own.append)).generate("x")
        with pytest.raises(litellm.RateLimitError):
            make_llm(policy).generate("x")

    assert (inner, own, outer) == ([0.5], [0.5], [0.5])


async def test_async_sleep_is_awaited_by_agenerate(provider: respx.Route) -> None:
    provider.mock(side_effect=[error(429), chat_completion()])
    waited: list[float] = []

    async def record(seconds: float) -> None:
        waited.append(seconds)
        await asyncio.sleep(0)

    await make_llm(RetryPolicy(jitter=False, sleep=record)).agenerate("hello")
    assert waited == [0.5]


def test_async_sleep_in_sync_generate_is_a_clear_error(provider: respx.Route) -> None:
    provider.mock(side_effect=[error(429), chat_completion()])

    async def record(seconds: float) -> None:
        pass

    with pytest.raises(
        TypeError, match=r"mesa_llm: RetryPolicy\(sleep=...\) returned an awaitable"
    ):
        make_llm(RetryPolicy(sleep=record)).generate("hello")


async def test_cancellation_is_never_retried(provider: respx.Route) -> None:
    started = asyncio.Event()
    requests: list[httpx.Request] = []

    async def hang(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        started.set()
        await asyncio.sleep(60)
        return chat_completion()

    provider.mock(side_effect=hang)
    task = asyncio.create_task(make_llm(RetryPolicy(sleep=lambda _: None)).agenerate("x"))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.05)
    assert len(requests) == 1


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"base_delay": -1.0}, "base_delay"),
        ({"max_delay": float("inf")}, "max_delay"),
        ({"base_delay": 5.0, "max_delay": 1.0}, "base_delay"),
    ],
)
def test_invalid_values_name_the_argument(kwargs: dict[str, float], named: str) -> None:
    with pytest.raises(ValueError, match=rf"mesa_llm: RetryPolicy\({named}=") as caught:
        RetryPolicy(**kwargs)  # type: ignore[arg-type]
    assert "valid" in str(caught.value)


@pytest.mark.parametrize(
    "kwargs",
    [{"max_attempts": 2.0}, {"jitter": 1}, {"retry_on": ValueError}, {"sleep": 3}],
)
def test_invalid_types_are_type_errors(kwargs: dict[str, object]) -> None:
    with pytest.raises(TypeError, match=r"mesa_llm: RetryPolicy\("):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_defaults_and_frozen() -> None:
    policy = RetryPolicy()
    assert (policy.max_attempts, policy.base_delay, policy.max_delay, policy.jitter) == (
        3,
        0.5,
        20.0,
        True,
    )
    assert policy.retry_on is TRANSIENT_ERRORS
    with pytest.raises(AttributeError):
        policy.max_attempts = 10  # type: ignore[misc]
