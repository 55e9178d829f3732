"""CircuitBreaker: a provider outage trips it, agents fail fast, one report per model step."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from resilience_models import PRIMARY, AskModel, FakeClock, outage, provider_error

from mesa_llm import CircuitBreaker, CircuitOpenError, RetryPolicy
from mesa_llm_testing import FakeLLM

MODES = ["sequential", "asyncio", "threading"]


@pytest.fixture
def fake() -> Iterator[FakeLLM]:
    with FakeLLM(seed=5).activate() as llm:
        yield llm


def unavailable() -> Exception:
    return provider_error(503, "ServiceUnavailableError")


# --------------------------------------------------------------------------- the state machine


def test_outages_in_a_row_open_the_circuit_then_a_probe_closes_it() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failures=3, reset_after=30, clock=clock)
    for _ in range(2):
        assert breaker.admit("m") is False
        assert breaker.record("m", unavailable(), probe=False) is False
    assert breaker.state("m") == "closed"
    breaker.admit("m")
    assert breaker.record("m", unavailable(), probe=False) is True
    assert breaker.state("m") == "open"

    clock.advance(10)
    with pytest.raises(CircuitOpenError) as caught:
        breaker.admit("m")
    assert caught.value.model == "m" and caught.value.failures == 3
    assert caught.value.retry_in == pytest.approx(20)
    assert isinstance(caught.value.__cause__, type(unavailable()))
    assert "circuit for m is open after 3 provider failures" in str(caught.value)
    assert breaker.state("other") == "closed"  # one circuit per model

    clock.advance(20)
    assert breaker.state("m") == "half-open"
    assert breaker.admit("m") is True  # the probe
    with pytest.raises(CircuitOpenError):  # everyone else still fails fast meanwhile
        breaker.admit("m")
    assert breaker.record("m", None, probe=True) is False
    assert breaker.state("m") == "closed"
    assert breaker.admit("m") is False


def test_a_failed_probe_opens_the_circuit_for_another_reset_after() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failures=1, reset_after=5, clock=clock)
    breaker.record("m", unavailable(), probe=False)
    clock.advance(5)
    assert breaker.admit("m") is True
    assert breaker.record("m", unavailable(), probe=True) is True
    assert breaker.state("m") == "open"
    clock.advance(4.9)
    with pytest.raises(CircuitOpenError):
        breaker.check("m")
    clock.advance(0.1)
    breaker.check("m")  # due for a probe again
    assert breaker.admit("m") is True
    breaker.abandon("m")  # the probe was cancelled: the next call probes
    assert breaker.admit("m") is True


@pytest.mark.parametrize(
    "error",
    [
        provider_error(429, "RateLimitError"),
        provider_error(400, "BadRequestError"),
        provider_error(404, "NotFoundError"),
        ValueError("not a provider error"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_rate_limits_and_client_errors_are_not_outages(error: Exception) -> None:
    breaker = CircuitBreaker(failures=1, reset_after=5, clock=FakeClock())
    assert breaker.record("m", error, probe=False) is False
    assert breaker.state("m") == "closed"


def test_a_success_resets_the_count_of_failures_in_a_row() -> None:
    breaker = CircuitBreaker(failures=2, reset_after=5, clock=FakeClock())
    breaker.record("m", unavailable(), probe=False)
    breaker.record("m", None, probe=False)
    breaker.record("m", unavailable(), probe=False)
    assert breaker.state("m") == "closed"
    breaker.record("m", provider_error(500, "InternalServerError"), probe=False)
    assert breaker.state("m") == "open"
    breaker.reset("m")
    assert breaker.state("m") == "closed"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"failures": 0}, r"failures=0\) is invalid; valid values are integers >= 1"),
        ({"failures": True}, r"failures=True\) is invalid"),
        ({"reset_after": -1}, r"reset_after=-1\) is invalid; valid values are finite"),
        ({"reset_after": float("inf")}, r"reset_after=inf\) is invalid"),
    ],
)
def test_bad_settings_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=r"mesa_llm: CircuitBreaker\(" + message):
        CircuitBreaker(**kwargs)


def test_module_llm_takes_only_a_circuit_breaker(fake: FakeLLM) -> None:
    from mesa_llm import ModuleLLM

    with pytest.raises(TypeError, match=r"circuit_breaker=5\) must be a CircuitBreaker or None"):
        ModuleLLM(PRIMARY, circuit_breaker=5)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- a 100 % outage


@pytest.mark.parametrize("mode", MODES)
def test_an_outage_trips_the_breaker_and_every_agent_is_reported_once_per_step(
    fake: FakeLLM, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    n, failures, attempts = 12, 3, 4
    fake.side_effect = outage
    clock = FakeClock()
    breaker = CircuitBreaker(failures=failures, reset_after=60, clock=clock)
    model = AskModel(n, mode, circuit_breaker=breaker, retry=RetryPolicy(max_attempts=attempts))
    ids = sorted(agent.unique_id for agent in model.agents)

    with caplog.at_level(logging.WARNING):
        first = model.run_step()
    # No retry storm: each agent reaches the provider at most once after the circuit opened;
    # without the breaker this outage costs n * attempts calls.
    assert fake.call_count <= n + failures - 1
    assert len(fake.retry_sleeps) <= failures - 1
    if mode == "sequential":
        assert fake.call_count == failures
    assert sorted(o.unique_id for o in first.outcomes) == ids
    assert not first.succeeded
    failed_fast = first.open_circuits[PRIMARY]
    assert failed_fast and set(failed_fast) <= set(ids)
    assert all(
        isinstance(o.exception, CircuitOpenError)
        for o in first.outcomes
        if o.unique_id in failed_fast
    )
    circuit_reports = [r for r in caplog.records if "failed fast in 'step'" in r.getMessage()]
    assert len(circuit_reports) == 1
    assert f"circuit for {PRIMARY} is open" in circuit_reports[0].getMessage()
    assert "at step 1" in circuit_reports[0].getMessage()
    per_agent_errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(per_agent_errors) == n - len(failed_fast) <= failures

    caplog.clear()
    calls = fake.call_count
    with caplog.at_level(logging.WARNING):
        second = model.run_step()  # still down, circuit still open: nobody reaches it
    assert fake.call_count == calls
    assert second.open_circuits == {PRIMARY: [o.unique_id for o in second.outcomes]}
    assert [r.levelno for r in caplog.records if "mesa_llm" in r.getMessage()] == [logging.WARNING]
    assert "at step 2" in caplog.records[0].getMessage()
    assert f"{n} agents failed fast" in caplog.records[0].getMessage()

    fake.side_effect = None  # the provider is back
    clock.advance(60)
    model.run_step()  # one agent probes and closes the circuit
    assert breaker.state(PRIMARY) == "closed"
    assert model.run_step().ok


def test_the_breaker_is_shared_by_every_module_llm_given_it(fake: FakeLLM) -> None:
    fake.side_effect = outage
    breaker = CircuitBreaker(failures=2, reset_after=60, clock=FakeClock())
    one = AskModel(1, "sequential", circuit_breaker=breaker, retry=RetryPolicy(max_attempts=2))
    other = AskModel(3, "sequential", circuit_breaker=breaker)
    assert not one.run_step().ok
    assert fake.call_count == 2
    report = other.run_step()
    assert fake.call_count == 2  # the other model's agents fail fast
    assert len(report.open_circuits[PRIMARY]) == 3
