"""Fault bursts and schedules: rates that change with the model step, the same in every mode."""

from __future__ import annotations

import functools
import json

import pytest

from mesa_llm_testing import Burst, FakeLLM, FaultKind, FaultPlan, RunTrace, run_scenario
from mesa_llm_testing.cli import main
from mesa_llm_testing.scenarios import DEFAULT_SCENARIO, REGISTRY

SEED = 4
STORM = Burst(steps=range(2, 4), rate=0.8, kinds=["rate_limit", "overloaded"])


def stormy() -> FaultPlan:
    return FaultPlan(0.05, seed=SEED, bursts=[STORM])


def faults_of(trace: RunTrace) -> list[tuple[object, object, int, str]]:
    return sorted((f.agent, f.step, f.call, f.kind.value) for f in trace.injected())


def test_a_burst_faults_only_within_its_steps() -> None:
    plan = FaultPlan(0.0, bursts=[Burst(range(10, 15), rate=1.0, kinds="rate_limit,overloaded")])
    for step in (None, 0, 9, 15, 40):
        assert plan.decide(agent=1, step=step, call=0) is None
    inside = {plan.decide(agent=a, step=s, call=0) for a in range(20) for s in range(10, 15)}
    assert inside == {FaultKind.RATE_LIMIT, FaultKind.OVERLOADED}


def test_the_last_overlapping_burst_wins_and_keeps_the_plan_kinds() -> None:
    plan = FaultPlan(0.0, kinds="timeout", bursts=[Burst([1, 2], 1.0), Burst([2], 0.0)])
    assert plan.decide(agent=1, step=1, call=0) is FaultKind.TIMEOUT
    assert plan.decide(agent=1, step=2, call=0) is None


@pytest.mark.parametrize("mode", ["asyncio", "threading"])
def test_a_burst_gives_the_same_faults_in_every_mode(mode: str) -> None:
    scenario = REGISTRY[DEFAULT_SCENARIO]
    reference = run_scenario(scenario, steps=5, mode="sequential", faults=stormy(), seed=SEED)
    found = faults_of(reference)
    in_burst = [f for f in found if f[1] in STORM.steps]
    assert len(in_burst) > 2 * len(found) / 3  # the burst dominates
    assert {kind for *_, kind in in_burst} <= {"rate_limit", "overloaded"}
    assert faults_of(run_scenario(scenario, steps=5, mode=mode, faults=stormy(), seed=SEED)) == (
        found
    )


def test_a_burst_gives_the_same_faults_over_http() -> None:
    scenario = REGISTRY[DEFAULT_SCENARIO]
    # The plan stalls no answer (no timeout fault): the client timeout only cuts off an
    # answer slowed by a loaded machine, so 1 s as in test_http_parity, not 0.3 s.
    kwargs = {"timeout": 1.0}
    reference = run_scenario(
        functools.partial(scenario, llm_kwargs=kwargs),
        steps=4,
        mode="threading",
        faults=stormy(),
        seed=SEED,
    )
    fake = FakeLLM(seed=SEED, faults=stormy())
    with fake.http(stall=3) as api_base:
        over_http = run_scenario(
            functools.partial(
                scenario,
                llm_model="openai/mesa-fake/scenario",
                llm_kwargs={"api_base": api_base, "api_key": "sk-fake", **kwargs},
            ),
            steps=4,
            mode="threading",
            llm=fake,
            seed=SEED,
        )
    assert {f.layer for f in over_http.injected()} == {"http"}
    assert faults_of(over_http) == faults_of(reference)


def test_bursts_survive_json_and_trace_settings_so_replays_reproduce_them() -> None:
    plan = FaultPlan(0.1, seed=SEED, bursts=[STORM, Burst([7, 9], 0.5)])
    again = FaultPlan.from_json(plan.to_json())
    assert again.bursts == plan.bursts
    grid = [(a, s, c) for a in range(6) for s in range(10) for c in range(3)]
    assert [again.decide(agent=a, step=s, call=c) for a, s, c in grid] == [
        plan.decide(agent=a, step=s, call=c) for a, s, c in grid
    ]
    trace = run_scenario(
        REGISTRY[DEFAULT_SCENARIO], steps=4, mode="sequential", faults=plan, seed=SEED
    )
    assert trace.faults is not None and trace.faults["bursts"][0]["steps"] == {
        "start": 2,
        "stop": 4,
        "step": 1,
    }
    restored = RunTrace.from_json(trace.to_json())
    replayed = run_scenario(
        REGISTRY[DEFAULT_SCENARIO],
        steps=4,
        mode="asyncio",
        faults=restored.fault_plan(),
        seed=SEED,
    )
    assert faults_of(replayed) == faults_of(trace)


def test_a_schedule_decides_the_rate_by_step_and_says_it_cannot_be_saved() -> None:
    def outage(step: int | None) -> tuple[float, str] | None:
        return (1.0, "server_error") if step == 3 else None

    plan = FaultPlan(0.0, schedule=outage)
    assert plan.decide(agent=1, step=3, call=0) is FaultKind.SERVER_ERROR
    assert plan.decide(agent=1, step=4, call=0) is None
    dumped = json.loads(plan.to_json())
    assert dumped["schedule"].endswith("outage")
    with pytest.raises(
        ValueError, match=r"schedule=.*outage, a callable, which cannot be serialised"
    ):
        FaultPlan.from_json(plan.to_json())
    trace = run_scenario(
        REGISTRY[DEFAULT_SCENARIO], steps=1, mode="sequential", faults=plan, seed=1
    )
    with pytest.raises(ValueError, match="cannot be serialised"):
        trace.fault_plan()


def test_bad_bursts_say_what_is_valid() -> None:
    with pytest.raises(ValueError, match="Burst rate must be a number from 0 to 1"):
        Burst(range(3), rate=2)
    with pytest.raises(ValueError, match="unknown fault kind 'hail'"):
        Burst(range(3), rate=0.5, kinds="hail")
    with pytest.raises(ValueError, match="bursts must be Burst"):
        FaultPlan(0.1, bursts=[{"steps": [1], "rate": 1}])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="schedule must be a callable"):
        FaultPlan(0.1, schedule=0.5)  # type: ignore[arg-type]


def test_cli_faults_json_accepts_bursts(capsys: pytest.CaptureFixture[str]) -> None:
    plan = json.dumps({"rate": 0, "bursts": [{"steps": [1], "rate": 1.0, "kinds": ["overloaded"]}]})
    assert main(["run", "--agents", "3", "--steps", "2", "-q", "--faults", plan]) in (0, 1)
    out = capsys.readouterr().out
    assert "overloaded" in out
    bad = json.dumps({"rate": 0, "bursts": [{"rate": 1.0}]})
    assert main(["run", "--faults", bad]) == 2
    assert "a burst is an object with 'steps' and 'rate'" in capsys.readouterr().err
