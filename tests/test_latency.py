"""Latency models: a constant, uniform(a, b) or lognormal(p50, p99), drawn per call."""

from __future__ import annotations

import asyncio
import functools
import statistics

import pytest

from mesa_llm_testing import FakeLLM, FaultPlan, lognormal, run_scenario, uniform
from mesa_llm_testing.cli import main
from mesa_llm_testing.scenarios import DEFAULT_SCENARIO, REGISTRY

SEED = 11
TAIL = lognormal(p50=0.2, p99=2.0)


def delays(mode: str, layer: str) -> dict[tuple[object, object, int], float]:
    """Each call's drawn delay, keyed by (agent, step, call), in one run of the scenario."""
    scenario = REGISTRY[DEFAULT_SCENARIO]
    fake = FakeLLM(seed=SEED, latency=TAIL, time_scale=0.001, faults=FaultPlan(0.2, seed=SEED))
    if layer == "http":
        with fake.http() as api_base:
            factory = functools.partial(
                scenario,
                llm_model="openai/mesa-fake/scenario",
                llm_kwargs={"api_base": api_base, "api_key": "sk-fake", "timeout": 5},
            )
            run_scenario(factory, steps=3, mode=mode, llm=fake, seed=SEED, agents=5)
    else:
        run_scenario(scenario, steps=3, mode=mode, llm=fake, seed=SEED, agents=5)
    assert {c.layer for c in fake.calls} == {layer}
    return {(c.agent, c.step, c.request.call): c.request.delay for c in fake.calls}


def test_the_same_calls_are_slow_in_every_mode_and_layer() -> None:
    reference = delays("sequential", "provider")
    assert len(reference) >= 15
    assert len(set(reference.values())) == len(reference)  # drawn per call, not constant
    assert max(reference.values()) > 2 * statistics.median(reference.values())  # a tail
    for mode in ("asyncio", "threading"):
        assert delays(mode, "provider") == reference, mode
    assert delays("threading", "http") == reference


def test_time_scale_shortens_the_wait_but_not_the_draw() -> None:
    fake = FakeLLM(latency=uniform(10, 20), time_scale=0)
    reply = fake.complete(prompt="hi")  # would wait 10-20 s at time_scale=1
    assert reply.content
    (call,) = fake.calls
    assert 10 <= call.request.delay <= 20
    assert fake.wait_seconds(call.request) == 0
    scaled = FakeLLM(latency=uniform(10, 20), time_scale=0.0001)
    asyncio.run(scaled.acomplete(prompt="hi"))
    assert scaled.wait_seconds(scaled.calls[0].request) == pytest.approx(
        call.request.delay * 0.0001
    )


def test_lognormal_has_the_asked_median_and_tail() -> None:
    fake = FakeLLM(seed=3, latency=lognormal(p50=0.2, p99=2.0), time_scale=0)
    for i in range(2000):
        fake.complete(prompt=f"call {i}")
    drawn = sorted(c.request.delay for c in fake.calls)
    assert drawn[1000] == pytest.approx(0.2, rel=0.15)
    assert drawn[1980] == pytest.approx(2.0, rel=0.35)


def test_a_constant_latency_is_the_same_for_every_call() -> None:
    fake = FakeLLM(latency=0.5, time_scale=0)
    fake.complete(prompt="a")
    fake.complete(prompt="b")
    assert [c.request.delay for c in fake.calls] == [0.5, 0.5]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: uniform(2, 1), "low must be <= high"),
        (lambda: uniform(-1, 1), "must be >= 0 seconds"),
        (lambda: lognormal(p50=1, p99=0.5), "need 0 < p50 < p99"),
        (lambda: FakeLLM(latency="slow"), "uniform\\(a, b\\) or lognormal"),
        (lambda: FakeLLM(time_scale=-1), "time_scale must be a number >= 0"),
    ],
)
def test_bad_latency_settings_say_what_is_valid(make, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("text", ["0.01", "uniform:0,0.01", "lognormal:p50=0.001,p99=0.01"])
def test_cli_latency_accepts_every_model(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--agents", "3", "--steps", "1", "-q", "--latency", text]) == 0


@pytest.mark.parametrize("text", ["-1", "uniform:1", "lognormal:p50=2,p99=1", "gamma:1,2", "x"])
def test_cli_latency_errors_name_the_forms(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--latency", text]) == 2
    err = capsys.readouterr().err
    assert "--latency" in err
    assert "uniform:0.01,0.05" in err and "lognormal:p50=0.2,p99=2" in err
