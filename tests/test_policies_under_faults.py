"""The library's policies against the fake's fault catalogue, limits and bursts, in both layers.

Faults come from a ``FaultPlan`` (not a ``side_effect``), so what reaches the library
is what the fake's provider layer raises and what litellm makes of the fake HTTP
server's answers. Time is a fake clock or a ``time_scale``; retry waits are recorded.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from resilience_models import FALLBACK, PRIMARY, AskModel, FakeClock

from mesa_llm import CircuitBreaker, LLMAgent, RateLimiter, RetryPolicy
from mesa_llm.errors import CircuitOpenError, MalformedResponseError
from mesa_llm.reasoning import ReActReasoning
from mesa_llm_testing import Burst, FakeLLM, FaultKind, FaultPlan, ProviderLimits
from mesa_llm_testing.checks import EXPECTED_EXCEPTIONS

MODES = ["asyncio", "threading"]
LAYERS = ["provider", "http"]
NOT_RETRIED = ["bad_request", "auth", "permission", "not_found", "context_window", "content_policy"]
OUTAGES = ["overloaded", "bad_gateway", "connection_reset", "missing_fields"]


@contextlib.contextmanager
def serving(fake: FakeLLM, layer: str) -> Iterator[dict[str, Any]]:
    """The fake active (retry waits recorded); over HTTP, the agents' endpoint settings."""
    with fake.activate():
        if layer == "provider":
            yield {}
            return
        with fake.http() as api_base:
            yield {"api_base": api_base, "api_key": "sk-fake"}


def test_the_catalogue_and_the_library_agree_on_what_is_transient() -> None:
    assert set(NOT_RETRIED) | {"truncated"} == {k.value for k in FaultKind if not k.transient}
    assert set(OUTAGES) <= {k.value for k in FaultKind if k.transient}


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", NOT_RETRIED)
def test_non_transient_faults_fail_the_agent_at_once_noted_with_agent_and_step(
    kind: str, mode: str, layer: str, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeLLM(seed=4, faults=FaultPlan(1.0, kinds=[kind], seed=4))
    with serving(fake, layer) as endpoint:
        model = AskModel(3, mode, retry=RetryPolicy(max_attempts=5), **endpoint)
        with caplog.at_level(logging.ERROR, logger="mesa_llm.parallel_stepping"):
            report = model.run_step()

    assert fake.call_count == 3 and list(fake.retry_sleeps) == []  # one call each, no retry
    assert {c.layer for c in fake.calls} == {layer}
    assert len(report.failed) == 3
    for outcome in report.outcomes:
        assert type(outcome.exception).__name__ in EXPECTED_EXCEPTIONS[FaultKind(kind)]
        notes = "\n".join(getattr(outcome.exception, "__notes__", []))
        assert f"by agent {outcome.unique_id} at step 1 failed" in notes
        assert "is not retried" in notes
    assert sum("failed at step 1" in r.getMessage() for r in caplog.records) == 3


@pytest.mark.parametrize("layer", LAYERS)
def test_a_truncated_reply_is_returned_not_retried_and_reasoning_calls_it_malformed(
    layer: str,
) -> None:
    fake = FakeLLM(seed=4, faults=FaultPlan(1.0, kinds=["truncated"], seed=4))
    with serving(fake, layer) as endpoint:
        agent = LLMAgent(
            AskModel(0, "asyncio"),
            ReActReasoning,
            llm_model=PRIMARY,
            llm_kwargs={"retry": RetryPolicy(max_attempts=5), **endpoint},
        )
        with pytest.raises(MalformedResponseError) as caught:
            agent.reasoning.plan()
    assert fake.call_count == 1 and list(fake.retry_sleeps) == []
    assert fake.calls.last.fault is FaultKind.TRUNCATED
    assert fake.calls.last.response is not None
    assert fake.calls.last.response.finish_reason == "length"
    assert caught.value.raw == fake.calls.last.response.content


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", OUTAGES)
def test_transient_faults_are_retried_and_counted_as_outages(
    kind: str, mode: str, layer: str
) -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failures=3, reset_after=30, clock=clock)
    fake = FakeLLM(seed=4, faults=FaultPlan(1.0, kinds=[kind], seed=4))
    with serving(fake, layer) as endpoint:
        model = AskModel(
            1, mode, retry=RetryPolicy(max_attempts=3), circuit_breaker=breaker, **endpoint
        )
        report = model.run_step()

    assert fake.call_count == 3 and len(fake.retry_sleeps) == 2  # retried to max_attempts
    (outcome,) = report.outcomes
    # The third outage in a row opened the circuit: the agent is told it is open.
    assert isinstance(outcome.exception, CircuitOpenError)
    assert type(outcome.exception.__cause__).__name__ in EXPECTED_EXCEPTIONS[FaultKind(kind)]
    circuit = PRIMARY if layer == "provider" else f"{PRIMARY}@{endpoint['api_base']}"
    assert breaker.state(circuit) == "open"


@pytest.mark.parametrize("mode", MODES)
def test_a_burst_of_overloads_trips_the_breaker_which_closes_after_it(mode: str) -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failures=3, reset_after=30, clock=clock)
    burst = Burst(steps=range(1, 3), rate=1.0, kinds=["overloaded"])
    fake = FakeLLM(seed=4, faults=FaultPlan(0.0, seed=4, bursts=[burst]))
    with fake.activate():
        model = AskModel(6, mode, retry=RetryPolicy(max_attempts=2), circuit_breaker=breaker)
        first = model.run_step()
        assert breaker.state(PRIMARY) == "open" and PRIMARY in str(first.open_circuits)
        calls = fake.call_count
        assert calls <= 6 * 2  # at most every agent's attempts; the breaker cut some short

        second = model.run_step()  # still in the burst, and the circuit is open: fail fast
        assert fake.call_count == calls
        assert all(isinstance(o.exception, CircuitOpenError) for o in second.outcomes)

        clock.advance(31)  # the burst is over (step 3) and the circuit half-open: a probe
        model.run_step()
        assert breaker.state(PRIMARY) == "closed"
        fourth = model.run_step()
    assert fourth.ok and fake.faults.counts_by_kind() == {"overloaded": len(fake.faults.injected)}
    assert {f.step for f in fake.faults.injected} == {1}  # step 2 sent nothing


def test_a_not_found_primary_falls_back_over_http_on_the_same_endpoint() -> None:
    plan = FaultPlan(0.0, seed=4)
    for uid in (1, 2):
        plan.at(agent=uid, step=1, call=0, kind="not_found")
    fake = FakeLLM(seed=4, faults=plan)
    with serving(fake, "http") as endpoint:
        model = AskModel(2, "asyncio", fallbacks=[FALLBACK], **endpoint)
        report = model.run_step()
    assert report.ok
    assert {agent.answered_by for agent in model.agents} == {FALLBACK}
    for uid in (1, 2):
        calls = fake.calls_for(uid)
        assert [(c.model, c.status_code, c.layer) for c in calls] == [
            ("gpt-4o", 404, "http"),  # the primary, unknown to the endpoint
            ("gpt-4o-mini", 200, "http"),  # the string fallback, sent to the same api_base
        ]


# --------------------------------------------------------------------------- load


@pytest.mark.parametrize("mode", MODES)
def test_a_limiter_set_to_the_providers_limits_keeps_1000_agents_free_of_429s(mode: str) -> None:
    clock = FakeClock(start=0.0)
    limits = ProviderLimits(rpm=400, tpm=20_000)
    limiter = RateLimiter(rpm=limits.rpm, tpm=limits.tpm, clock=clock, sleep=clock.sleep)
    fake = FakeLLM(seed=4, limits=limits, clock=clock, keep_calls=None)
    with fake.activate():
        model = AskModel(1000, mode, retry=RetryPolicy(max_attempts=1), rate_limiter=limiter)
        report = model.run_step()

    assert list(fake.limited) == [] and report.ok, str(report)
    assert fake.call_count == 1000
    assert clock.now >= 120  # 1,000 requests at 400 a minute: the limiter made them wait

    # The same step without the limiter meets the fake's limits.
    unlimited = FakeLLM(seed=4, limits=limits, clock=FakeClock(start=0.0))
    with unlimited.activate():
        report = AskModel(1000, mode, retry=RetryPolicy(max_attempts=1)).run_step()
    assert len(unlimited.limited) == len(report.failed) >= 600


@pytest.mark.parametrize("mode", MODES)
def test_max_concurrent_is_met_with_real_overlap(mode: str) -> None:
    limits = ProviderLimits(max_concurrent=4)
    # Each call really waits 1 s x 0.04 = 40 ms, so calls overlap.
    fake = FakeLLM(seed=4, limits=limits, latency=1.0, time_scale=0.04)
    with fake.activate():
        model = AskModel(
            12,
            mode,
            retry=RetryPolicy(max_attempts=1),
            rate_limiter=RateLimiter(max_concurrent=4),
        )
        report = model.run_step()
    assert report.ok and list(fake.limited) == []
    assert fake.load is not None and fake.load.peak_in_flight == 4  # really four at once

    crowded = FakeLLM(seed=4, limits=limits, latency=1.0, time_scale=0.04)
    with crowded.activate():
        report = AskModel(12, mode, retry=RetryPolicy(max_attempts=1)).run_step()
    assert {c.limit for c in crowded.limited} == {"max_concurrent"}
    assert len(report.failed) == len(crowded.limited) > 0
