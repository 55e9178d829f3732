"""ModuleLLM(fallbacks=[...]): other models tried in order when a model fails for good."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from resilience_models import (
    FALLBACK,
    PRIMARY,
    AskModel,
    outage,
    per_model,
    provider_error,
)

from mesa_llm import (
    BatchConfig,
    ModuleLLM,
    RateLimiter,
    RetryPolicy,
    UnknownModelError,
)
from mesa_llm_testing import FakeLLM, FakeRequest

MODES = ["sequential", "asyncio", "threading"]


@pytest.fixture
def fake() -> Iterator[FakeLLM]:
    with FakeLLM(seed=11).activate() as llm:
        yield llm


def not_found(request: FakeRequest) -> Any:
    raise provider_error(404, "NotFoundError", request.model)


def models_called(fake: FakeLLM) -> list[str]:
    return [call.request.model for call in fake.calls]


@pytest.mark.parametrize("mode", MODES)
def test_a_fallback_answers_when_the_primary_model_is_not_found(
    fake: FakeLLM, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    fake.side_effect = per_model({PRIMARY: not_found})
    model = AskModel(5, mode, fallbacks=[FALLBACK], retry=RetryPolicy(max_attempts=3))

    with caplog.at_level(logging.WARNING, logger="mesa_llm"):
        report = model.run_step()

    assert report.ok and len(report) == 5
    assert {agent.answered_by for agent in model.agents} == {FALLBACK}
    # 404 is not retried: one call to each model per agent
    assert sorted(models_called(fake)) == [PRIMARY] * 5 + [FALLBACK] * 5
    assert fake.retry_sleeps == []
    fell_back = [r.getMessage() for r in caplog.records if "falling back" in r.getMessage()]
    assert len(fell_back) == 5
    assert all(f"{PRIMARY} failed for agent" in m and "NotFoundError" in m for m in fell_back)


def test_the_response_says_which_model_answered_and_what_failed_before(fake: FakeLLM) -> None:
    fake.side_effect = per_model({PRIMARY: not_found})
    llm = ModuleLLM(PRIMARY, fallbacks=[FALLBACK])
    response = llm.generate("hello")
    assert response._hidden_params["mesa_llm_model"] == FALLBACK
    assert response._hidden_params["mesa_llm_fallbacks"] == [(PRIMARY, "NotFoundError")]
    assert llm.fallbacks == (FALLBACK,)
    fake.side_effect = None
    response = llm.generate("hello")
    assert response._hidden_params["mesa_llm_model"] == PRIMARY
    assert response._hidden_params["mesa_llm_fallbacks"] == []


@pytest.mark.parametrize("mode", ["asyncio", "threading"])
def test_exhausted_retries_fall_back(fake: FakeLLM, mode: str) -> None:
    fake.side_effect = per_model({PRIMARY: outage})
    model = AskModel(3, mode, fallbacks=[FALLBACK], retry=RetryPolicy(max_attempts=2))
    assert model.run_step().ok
    assert sorted(models_called(fake)) == [PRIMARY] * 6 + [FALLBACK] * 3
    assert len(fake.retry_sleeps) == 3


def test_fallbacks_are_tried_in_order_and_the_last_error_names_them_all(fake: FakeLLM) -> None:
    third = "anthropic/claude-3-5-haiku-latest"
    fake.side_effect = per_model({PRIMARY: not_found, FALLBACK: outage, third: not_found})
    model = AskModel(
        1, "sequential", fallbacks=[FALLBACK, third], retry=RetryPolicy(max_attempts=2)
    )
    report = model.run_step()
    assert models_called(fake) == [PRIMARY, FALLBACK, FALLBACK, third]
    (outcome,) = report.failed
    exc = outcome.exception
    assert type(exc).__name__ == "NotFoundError"
    notes = "\n".join(exc.__notes__)
    assert f"by agent {outcome.unique_id} at step 1 failed; NotFoundError is not retried" in notes
    assert (
        f"every model failed: {PRIMARY} (NotFoundError), {FALLBACK} (ServiceUnavailableError), "
        f"{third} (NotFoundError)"
    ) in notes


def test_errors_of_our_own_or_bugs_do_not_fall_back(fake: FakeLLM) -> None:
    def bug(request: FakeRequest) -> Any:
        raise KeyError("a bug in a side effect")

    fake.side_effect = per_model({PRIMARY: bug})
    with pytest.raises(KeyError):
        ModuleLLM(PRIMARY, fallbacks=[FALLBACK]).generate("hello")
    assert models_called(fake) == [PRIMARY]


async def test_a_batched_fallback_batches_with_its_own_configuration(fake: FakeLLM) -> None:
    fake.side_effect = per_model({PRIMARY: not_found})
    llm = ModuleLLM(PRIMARY, fallbacks=[FALLBACK], batching=BatchConfig(max_batch=4))
    response = await llm.agenerate("hello")
    assert response._hidden_params["mesa_llm_model"] == FALLBACK
    assert models_called(fake) == [PRIMARY, FALLBACK]


def test_a_string_fallback_of_the_same_provider_keeps_the_endpoint_and_key(fake: FakeLLM) -> None:
    other = "anthropic/claude-3-5-haiku-latest"
    llm = ModuleLLM(
        PRIMARY,
        api_base="http://127.0.0.1:9/v1",
        api_key="sk-primary",
        fallbacks=[FALLBACK, other, {"model": "openai/o3-mini", "api_key": "sk-own"}],
    )
    routes = {route.model: (route.api_base, route.api_key) for route in llm._routes}
    assert routes == {
        PRIMARY: ("http://127.0.0.1:9/v1", "sk-primary"),
        FALLBACK: ("http://127.0.0.1:9/v1", "sk-primary"),
        other: (None, None),  # the primary's key is never sent to another provider
        "openai/o3-mini": (None, "sk-own"),
    }


@pytest.mark.parametrize(
    ("fallbacks", "error", "message"),
    [
        (FALLBACK, TypeError, r"'openai/gpt-4o-mini'\) must be a list of models"),
        (
            [FALLBACK, FALLBACK],
            ValueError,
            r"\[\.\.\.\]\) .*item 1 is 'openai/gpt-4o-mini', which is listed twice",
        ),
        (
            [PRIMARY],
            ValueError,
            r"\[\.\.\.\]\) .*item 0 is 'openai/gpt-4o', which is llm_model itself",
        ),
        ([""], TypeError, r"\[\.\.\.\]\) .*item 0 is ''; give litellm's 'provider/model' string"),
        ([3], TypeError, r"\[\.\.\.\]\) .*item 0 is 3"),
        (
            [{"model": FALLBACK, "base": "x"}],
            ValueError,
            r"\[\.\.\.\]\) .*unknown keys \['base'\]; valid keys",
        ),
        (
            [{"model": FALLBACK, "api_key": 1}],
            TypeError,
            r"\[\.\.\.\]\) .*api_key=1 must be a str or None",
        ),
    ],
)
def test_bad_fallbacks_are_named(
    fake: FakeLLM, fallbacks: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=r"mesa_llm: ModuleLLM\(fallbacks=" + message):
        ModuleLLM(PRIMARY, fallbacks=fallbacks)


def test_an_unknown_fallback_model_fails_at_construction(fake: FakeLLM) -> None:
    with pytest.raises(UnknownModelError, match="'no-such-provider/x'"):
        ModuleLLM(PRIMARY, fallbacks=["no-such-provider/x"])


def test_rate_limiters_per_model_are_checked(fake: FakeLLM) -> None:
    limiter = RateLimiter(rpm=10)
    llm = ModuleLLM(PRIMARY, fallbacks=[FALLBACK], rate_limiter={FALLBACK: limiter})
    assert [route.limiter for route in llm._routes] == [None, limiter]
    with pytest.raises(ValueError, match=r"names models \['openai/o3'\] that this ModuleLLM never"):
        ModuleLLM(PRIMARY, rate_limiter={"openai/o3": limiter})
    with pytest.raises(TypeError, match=r"rate_limiter=5\) must be a RateLimiter, a mapping"):
        ModuleLLM(PRIMARY, rate_limiter=5)  # type: ignore[arg-type]
