"""The policies together: non-retryable errors fail at once; retries, fallbacks, breaker, limits."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from resilience_models import (
    FALLBACK,
    NON_RETRYABLE,
    PRIMARY,
    AskModel,
    FakeClock,
    outage,
    per_model,
    provider_error,
)

from mesa_llm import CircuitBreaker, CircuitOpenError, ModuleLLM, RateLimiter, RetryPolicy
from mesa_llm_testing import FakeLLM, FakeReply, FakeRequest


@pytest.fixture
def fake() -> Iterator[FakeLLM]:
    with FakeLLM(seed=13).activate() as llm:
        yield llm


@pytest.mark.parametrize("mode", ["asyncio", "threading"])
@pytest.mark.parametrize("kind", sorted(NON_RETRYABLE))
def test_non_retryable_errors_fail_at_once_noted_with_the_agent_and_step(
    fake: FakeLLM, mode: str, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    status, name = NON_RETRYABLE[kind]

    def refuse(request: FakeRequest) -> Any:
        raise provider_error(status, name, request.model)

    fake.side_effect = refuse
    model = AskModel(3, mode, retry=RetryPolicy(max_attempts=5))
    model.steps = 4  # noted as the step the calls were made in

    with caplog.at_level(logging.ERROR, logger="mesa_llm.parallel_stepping"):
        report = model.run_step()

    assert fake.call_count == 3 and fake.retry_sleeps == []  # one call per agent, no wait
    assert len(report.failed) == 3
    for outcome in report.outcomes:
        assert type(outcome.exception).__name__ == name
        assert getattr(outcome.exception, "status_code", None) == status
        assert (
            f"mesa_llm: request to {PRIMARY} by agent {outcome.unique_id} at step 5 failed; "
            f"{name} is not retried"
        ) in outcome.exception.__notes__
    logged = sorted(r.getMessage() for r in caplog.records)
    assert len(logged) == 3 and all("failed at step 5" in m and name in m for m in logged)


def test_transient_errors_are_retried_then_answered(fake: FakeLLM) -> None:
    fake.side_effect = [provider_error(503, "ServiceUnavailableError"), FakeLLM.text("ok")]
    response = ModuleLLM(PRIMARY, retry=RetryPolicy(max_attempts=3)).generate("hello")
    assert response.choices[0].message.content == "ok"
    assert fake.call_count == 2 and len(fake.retry_sleeps) == 1


def test_a_reply_cut_off_at_max_tokens_is_returned_once_not_retried(
    fake: FakeLLM, caplog: pytest.LogCaptureFixture
) -> None:
    fake.return_value = FakeReply(content="The answer is", finish_reason="length")
    llm = ModuleLLM(PRIMARY, fallbacks=[FALLBACK], retry=RetryPolicy(max_attempts=3))
    with caplog.at_level(logging.INFO, logger="mesa_llm"):
        response = llm.generate("hello", max_tokens=3)
    assert response.choices[0].finish_reason == "length"
    assert response.choices[0].message.content == "The answer is"
    assert fake.call_count == 1  # neither retried nor sent to the fallback
    assert any("cut its reply off at max_tokens" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("mode", ["sequential", "asyncio", "threading"])
def test_retries_fallbacks_breaker_and_limiter_compose(fake: FakeLLM, mode: str) -> None:
    n, failures, attempts = 8, 2, 3
    clock = FakeClock(start=0.0)
    # reset_after well beyond the limiter's waits on the same clock: no probe in this step
    breaker = CircuitBreaker(failures=failures, reset_after=3600, clock=clock)
    fallback_limit = RateLimiter(rpm=5, clock=clock, sleep=clock.sleep)
    fake.side_effect = per_model({PRIMARY: outage})
    model = AskModel(
        n,
        mode,
        retry=RetryPolicy(max_attempts=attempts),
        fallbacks=[FALLBACK],
        circuit_breaker=breaker,
        rate_limiter={FALLBACK: fallback_limit},
    )

    report = model.run_step()

    assert report.ok, str(report)
    assert {agent.answered_by for agent in model.agents} == {FALLBACK}
    to_primary = [c for c in fake.calls if c.request.model == PRIMARY]
    to_fallback = [c for c in fake.calls if c.request.model == FALLBACK]
    assert len(to_fallback) == n
    assert len(to_primary) <= n + failures - 1  # the breaker stopped the retries
    if mode == "sequential":
        assert len(to_primary) == failures
    assert breaker.state(PRIMARY) == "open" and breaker.state(FALLBACK) == "closed"
    assert clock.now >= 60.0  # 8 fallback requests at 5 a minute waited once
    assert fallback_limit.in_flight == 0


def test_an_open_circuit_outside_any_step_says_when_to_try_again(fake: FakeLLM) -> None:
    fake.side_effect = outage
    clock = FakeClock()
    llm = ModuleLLM(
        PRIMARY,
        retry=RetryPolicy(max_attempts=2),
        circuit_breaker=CircuitBreaker(failures=1, reset_after=30, clock=clock),
    )
    with pytest.raises(CircuitOpenError) as first:
        llm.generate("hello")
    assert fake.call_count == 1 and fake.retry_sleeps == []  # no retry of an open circuit
    assert type(first.value.__cause__).__name__ == "ServiceUnavailableError"
    clock.advance(12)
    with pytest.raises(CircuitOpenError, match=r"may try again in 18s"):
        llm.generate("hello")
    assert fake.call_count == 1


def test_an_agents_memory_shares_its_policies(fake: FakeLLM) -> None:
    import mesa

    from mesa_llm import LLMAgent

    limiter, breaker = RateLimiter(rpm=5), CircuitBreaker()
    agent = LLMAgent(
        mesa.Model(seed=1),
        llm_model=PRIMARY,
        llm_kwargs={"rate_limiter": limiter, "circuit_breaker": breaker, "fallbacks": [FALLBACK]},
    )
    memory_llm = agent.memory.llm  # its consolidation calls count against the same limits
    assert memory_llm is not agent.llm
    assert memory_llm.rate_limiter is limiter and memory_llm.circuit_breaker is breaker
    assert memory_llm.fallbacks == (FALLBACK,)
