"""Long runs keep their traces small: finished steps are packed, and read back unchanged.

A run's trace packs its finished steps once it holds more than
``_packed.PACK_AFTER`` agent-steps (20,000 by default); these tests lower that
budget so a short run crosses it, and check that nothing a user reads changes.
"""

from __future__ import annotations

import dataclasses
import io
import pickle

import pytest

import mesa_llm_testing._packed as packed
from mesa_llm_testing import FaultPlan, RunTrace, run_scenario
from mesa_llm_testing._packed import PackedStep, pack
from mesa_llm_testing._summary import print_summary
from mesa_llm_testing.scenarios import IslandCommonsModel

SEED = 7


def run(mode: str = "sequential", steps: int = 6, seed: int = SEED) -> RunTrace:
    return run_scenario(
        IslandCommonsModel,
        steps=steps,
        mode=mode,
        seed=seed,
        agents=6,
        faults=FaultPlan(0.3, seed=seed),
    )


@pytest.fixture
def small_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(packed, "PACK_AFTER", 10)


@pytest.fixture(scope="module")
def unpacked() -> RunTrace:
    return run()


def test_a_short_run_is_not_packed(unpacked: RunTrace) -> None:
    assert not any(isinstance(s, PackedStep) for s in unpacked.steps)


@pytest.mark.usefixtures("small_budget")
def test_a_long_run_packs_its_finished_steps_and_reads_the_same(unpacked: RunTrace) -> None:
    trace = run()
    kinds = [isinstance(s, PackedStep) for s in trace.steps]
    assert kinds == [True] * 5 + [False]  # every finished step; the newest stays as built
    assert trace == unpacked and unpacked == trace
    assert trace.diff(unpacked) is None
    assert RunTrace.from_json(trace.to_json()) == trace
    for a, b in zip(trace.steps, unpacked.steps, strict=True):
        assert {**a.to_dict(), "seconds": 0} == {**b.to_dict(), "seconds": 0}
        assert a.failed == b.failed
        assert a.llm_calls == b.llm_calls and a.outcomes == b.outcomes
    assert _summary(trace) == _summary(unpacked)


@pytest.mark.usefixtures("small_budget")
@pytest.mark.parametrize("mode", ["asyncio", "threading"])
def test_packed_traces_of_every_mode_are_equal(unpacked: RunTrace, mode: str) -> None:
    assert run(mode) == unpacked


@pytest.mark.usefixtures("small_budget")
def test_packed_runs_of_another_seed_are_not_equal(unpacked: RunTrace) -> None:
    other = run(seed=SEED + 1)
    other.seed, other.faults = SEED, unpacked.faults  # only the steps tell them apart now
    assert other != unpacked
    assert (other.diff(unpacked) or "").startswith("step ")


@pytest.mark.usefixtures("small_budget")
def test_a_change_inside_a_packed_step_is_found_by_equality_and_diff(unpacked: RunTrace) -> None:
    trace = run()
    step = trace.steps[2]
    assert isinstance(step, PackedStep)
    uid = step.start_order[0]
    outcomes = dict(step.outcomes)
    outcomes[uid] = ("error", "RateLimitError")
    changed = dataclasses.replace(step, outcomes=outcomes)  # a StepTrace again, unpacked
    other = dataclasses.replace(trace, steps=[*trace.steps[:2], changed, *trace.steps[3:]])
    assert other != unpacked
    assert f"step {step.step}, agent {uid}" in (other.diff(unpacked) or "")


def test_an_unchanged_population_is_stored_once(unpacked: RunTrace) -> None:
    first = pack(unpacked.steps[0])
    second = pack(unpacked.steps[1], first)
    assert second.population == unpacked.steps[1].population
    assert second.population is first.population


def test_a_step_whose_agent_ids_cannot_be_pickled_stays_unpacked(unpacked: RunTrace) -> None:
    step = unpacked.steps[0]
    odd = dataclasses.replace(step, start_order=[*step.start_order, lambda: None])
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        pickle.dumps(odd.start_order)
    assert pack(odd) is odd


def test_packing_makes_a_step_several_times_smaller(unpacked: RunTrace) -> None:
    step = unpacked.steps[-1]
    plain = len(pickle.dumps({k: getattr(step, k) for k in packed.PER_AGENT}))
    payload = pack(step)._packed_payload()
    assert payload is not None and len(payload) * 2 < plain


def _summary(trace: RunTrace) -> str:
    for step in trace.steps:
        step.seconds = 0.0  # wall times are the only thing allowed to differ
    out = io.StringIO()
    print_summary([trace], spec="island_commons", plan=FaultPlan(0.3, seed=SEED), out=out)
    return out.getvalue()
