"""ProviderLimits: load-driven 429s in every layer, kept apart from the deterministic faults."""

from __future__ import annotations

import json
import urllib.request
import warnings
from typing import Any

import pytest
from resilience_models import FakeClock

from mesa_llm._litellm import import_litellm
from mesa_llm_testing import FakeLLM, FaultPlan, LimitedCall, ProviderLimits, run_scenario
from mesa_llm_testing._verdict import check_runs
from mesa_llm_testing.checks import (
    LoadLimitedWarning,
    check_isolation,
    check_ordering,
    check_reproducible,
)

litellm = import_litellm()

HI = [{"role": "user", "content": "hi"}]
MODEL = "openai/gpt-4o-mini"


def test_limits_are_checked_and_parsed_with_errors_naming_the_keys() -> None:
    assert ProviderLimits.parse("rpm=600, tpm=100000,max_concurrent=8") == ProviderLimits(
        rpm=600, tpm=100_000, max_concurrent=8
    )
    assert ProviderLimits.parse(ProviderLimits(rpm=5, max_concurrent=2).to_text()) == (
        ProviderLimits(rpm=5, max_concurrent=2)
    )
    with pytest.raises(ValueError, match=r"'rpx=3'.*valid keys: rpm, tpm, max_concurrent"):
        ProviderLimits.parse("rpx=3")
    with pytest.raises(ValueError, match=r"rpm='many' is not an integer"):
        ProviderLimits.parse("rpm=many")
    with pytest.raises(ValueError, match=r"sets no limit; valid keys: rpm, tpm, max_concurrent"):
        ProviderLimits.parse(" , ")
    with pytest.raises(ValueError, match=r"ProviderLimits\(tpm=0\) is invalid"):
        ProviderLimits(tpm=0)
    with pytest.raises(ValueError, match=r"needs at least one of rpm=..., tpm=..."):
        ProviderLimits()
    with pytest.raises(TypeError, match="FakeLLM limits must be ProviderLimits"):
        FakeLLM(limits=600)  # type: ignore[arg-type]
    assert FakeLLM(limits="rpm=3").limits == ProviderLimits(rpm=3)


def _rate_limited(call: Any) -> Any:
    with pytest.raises(litellm.RateLimitError) as caught:
        call()
    return caught.value


@pytest.mark.parametrize("pipeline", ["fast", "litellm"])
def test_over_rpm_the_provider_answers_429_with_when_to_retry(pipeline: str) -> None:
    clock = FakeClock(start=0.0)
    fake = FakeLLM(limits=ProviderLimits(rpm=2, tpm=10_000), clock=clock)
    with fake.activate(pipeline=pipeline):
        litellm.completion(model=MODEL, messages=HI)
        clock.advance(15)
        litellm.completion(model=MODEL, messages=HI)
        clock.advance(5)
        error = _rate_limited(lambda: litellm.completion(model=MODEL, messages=HI))
        clock.advance(40)  # the first request leaves the 60 s window: room again
        litellm.completion(model=MODEL, messages=HI)

    headers = error.litellm_response_headers
    assert error.status_code == 429 and "requests per min (RPM): Limit 2, Used 2" in str(error)
    assert headers["retry-after"] == "40" and headers["retry-after-ms"] == "40000"
    assert headers["x-ratelimit-limit-requests"] == "2"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-reset-requests"] == "40s"
    assert headers["x-ratelimit-limit-tokens"] == "10000"
    assert fake.call_count == 3  # the refused call never reached the fake's records
    assert list(fake.limited) == [LimitedCall(None, None, MODEL, "provider", "rpm", 40.0)]


def test_over_tpm_the_429_counts_tokens_as_the_library_limiter_estimates_them() -> None:
    from mesa_llm import estimate_tokens

    clock = FakeClock(start=0.0)
    long = [{"role": "user", "content": "x" * 400}]  # 100 tokens
    assert estimate_tokens({"messages": long, "max_tokens": 50}) == 150
    fake = FakeLLM(limits=ProviderLimits(tpm=300), clock=clock)
    fake.complete(long, max_tokens=50)
    clock.advance(10)
    fake.complete(long, max_tokens=50)
    clock.advance(10)
    with fake.activate():
        error = _rate_limited(lambda: litellm.completion(model=MODEL, messages=long, max_tokens=50))
    assert "tokens per min (TPM): Limit 300, Used 300, Requested 150" in str(error)
    assert error.litellm_response_headers["retry-after-ms"] == "40000"
    assert error.litellm_response_headers["x-ratelimit-remaining-tokens"] == "0"
    # A direct call is refused the same way.
    error = _rate_limited(lambda: fake.complete(long, max_tokens=50))
    assert [c.layer for c in fake.limited] == ["provider", "direct"]


def test_over_http_the_429_is_real_with_the_same_shape() -> None:
    fake = FakeLLM(limits=ProviderLimits(rpm=1))
    with fake.http() as base:
        kwargs: dict[str, Any] = {"api_base": base, "api_key": "sk-fake", "num_retries": 0}
        litellm.completion(model=MODEL, messages=HI, **kwargs)
        error = _rate_limited(
            lambda: litellm.completion(model=MODEL, messages=HI, max_retries=0, **kwargs)
        )
        with urllib.request.urlopen(base.removesuffix("/v1") + "/admin/stats") as answer:
            stats = json.load(answer)
    headers = error.litellm_response_headers
    assert error.status_code == 429 and "Limit 1, Used 1, Requested 1" in str(error)
    assert 59 <= float(headers["retry-after-ms"]) / 1000 <= 60
    assert headers["retry-after"] == "60" and headers["x-ratelimit-limit-requests"] == "1"
    assert stats["calls"] == 1 and stats["limited"] == 1
    assert fake.call_count == 1 and [c.layer for c in fake.limited] == ["http"]


def test_load_driven_429s_shift_no_deterministic_fault() -> None:
    plan_settings = {"rate": 0.4, "seed": 5}
    clock = FakeClock(start=0.0)
    calm = FakeLLM(seed=3, faults=FaultPlan(**plan_settings))
    busy = FakeLLM(seed=3, faults=FaultPlan(**plan_settings), limits="rpm=3", clock=clock)

    def answers(fake: FakeLLM, refused: int) -> list[str]:
        got = []
        with fake.activate():
            while len(got) < 12:
                try:
                    reply = litellm.completion(model=MODEL, messages=HI)
                    got.append(str(reply.choices[0].message.content))
                except Exception as exc:  # a fault, or a load-driven 429
                    if len(fake.limited) > refused:
                        refused += 1
                        clock.advance(20)
                        continue
                    got.append(type(exc).__name__)
        return got

    assert answers(busy, 0) == answers(calm, 0)
    assert len(busy.limited) > 0
    assert busy.faults.injected == calm.faults.injected


def test_max_concurrent_counts_calls_in_flight_and_asks_to_retry_soon() -> None:
    fake = FakeLLM(limits=ProviderLimits(max_concurrent=1))
    slot = fake.admit(MODEL, HI, None, None, "direct")  # a call in flight
    error = _rate_limited(lambda: fake.complete(HI))
    assert "concurrent requests: Limit 1, Used 1" in str(error)
    assert error.litellm_response_headers["retry-after"] == "1"
    assert slot is not None
    slot.release()
    assert fake.complete(HI).content


# --------------------------------------------------------------------------- in runs


def _limited_run(mode: str, limits: str) -> Any:
    fake = FakeLLM(seed=2, limits=limits, keep_calls=None)
    return run_scenario("negotiation", steps=3, mode=mode, seed=2, agents=6, llm=fake)


def test_a_run_records_load_driven_429s_apart_and_the_checks_say_so() -> None:
    calm = run_scenario("negotiation", steps=3, mode="sequential", seed=2, agents=6)
    busy = _limited_run("threading", "rpm=8")

    assert calm.limited == 0 and busy.limited > 0
    assert not any(step.faults for step in busy.steps)  # no fault was injected
    first = next(step for step in busy.steps if step.limited)
    assert all(isinstance(n, int) and n > 0 for n in first.limited.values())
    again = type(busy).from_json(busy.to_json())
    assert [s.limited for s in again.steps] == [s.limited for s in busy.steps]

    check_isolation(busy)  # agents failed by the load are not counted as leaked faults
    assert calm.diff(busy) is not None
    with pytest.warns(LoadLimitedWarning, match=r"not failed: the runs met load-driven 429s"):
        check_reproducible(calm, busy)

    # A difference before the first load-driven 429 still fails.
    early = type(busy).from_json(busy.to_json())
    early.steps[0].limited = {}
    early.steps[1].limited = {}
    early.steps[2].limited = {0: 1}
    early.steps[0].state_digest = "changed"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(AssertionError, match="are not identical: step 1"):
            check_reproducible(calm, early)


def test_the_ordering_check_excuses_random_draws_changed_after_load_driven_429s() -> None:
    calm = run_scenario("negotiation", steps=3, mode="sequential", seed=2, agents=6)
    busy = type(calm).from_json(calm.to_json())
    busy.mode = "threading"
    busy.steps[1].limited = {1: 1}  # a 429 in step 2: what the agents drew may differ after it
    busy.steps[1].rng_digest = "drawn otherwise"
    with pytest.warns(
        LoadLimitedWarning, match=r"(?s)ordering check failed .*not failed: the runs"
    ):
        check_ordering(busy, calm)

    busy.steps[0].rng_digest = "drawn otherwise before any 429"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(AssertionError, match="step 1: the model's random number generator"):
            check_ordering(busy, calm)

    # The CLI's verdict shows it as not run, with why, instead of failing.
    busy.steps[0].rng_digest = calm.steps[0].rng_digest
    ordering = next(r for r in check_runs([calm, busy]) if r.name == "ordering")
    assert ordering.status == "not run" and "load-driven 429s" in ordering.skipped
