"""Long runs keep their traces small: finished steps are packed, and read back unchanged.

A run's trace packs its finished steps once it holds more than
``_packed.PACK_AFTER`` agent-steps (20,000 by default); these tests lower that
budget so a short run crosses it, and check that nothing a user reads changes.
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import io
import os
import pickle
import random
import tempfile
import tracemalloc
from pathlib import Path

import pytest

import mesa_llm_testing._packed as packed
from mesa_llm_testing import CallTrace, FaultPlan, RunTrace, StepTrace, run_scenario
from mesa_llm_testing._packed import PackedStep, pack, pack_finished_steps
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


@pytest.mark.usefixtures("small_budget")
@pytest.mark.parametrize("spill", [True, False])
def test_packed_traces_survive_pickling_and_copying(
    unpacked: RunTrace, spill: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(packed, "SPILL", spill)
    trace = run()
    assert isinstance(trace.steps[0], PackedStep)
    for again in (pickle.loads(pickle.dumps(trace)), copy.deepcopy(trace), copy.copy(trace)):
        assert again == trace == unpacked
        assert again.steps[0].llm_calls == unpacked.steps[0].llm_calls
    assert _summary(trace) == _summary(unpacked)


def big_step(step: int, rnd: random.Random, agents: int = 1_000) -> StepTrace:
    """A step of ``agents`` agents with 2 LLM calls each: digests that do not compress."""
    uids = list(range(agents))
    rnd.shuffle(uids)

    def calls() -> list[CallTrace]:
        digests = [rnd.randbytes(8).hex() for _ in range(4)]
        return [CallTrace(i, digests[2 * i], digests[2 * i + 1], "tools", None) for i in range(2)]

    return StepTrace(
        step=step,
        start_order=uids,
        outcomes={uid: ("ok", None) for uid in uids},
        faults=[],
        llm_calls={uid: calls() for uid in uids},
        rng_digest=rnd.randbytes(16).hex(),
        state_digest=rnd.randbytes(16).hex(),
        phases=[("step", uids)],
        population=sorted(uids),
    )


@pytest.mark.usefixtures("small_budget")
def test_packed_steps_of_a_long_run_hold_almost_no_memory() -> None:
    rnd = random.Random(SEED)
    expected = [big_step(n, rnd, agents=500) for n in range(1, 41)]
    steps: list[StepTrace] = []

    def add(upto: int) -> None:
        while len(steps) < upto:
            steps.append(copy.copy(expected[len(steps)]))  # shares the fields: no new memory
            pack_finished_steps(steps)
        for step in steps[-3:-1]:  # the two steps read last are kept unpacked: fill that cache
            assert step.llm_calls
        gc.collect()

    tracemalloc.start()  # before the cache of recently read steps is filled: it is freed later
    try:
        add(10)  # the run's file is made
        before = tracemalloc.take_snapshot()
        add(40)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    # Steps of 500 agents: some 20 KB of packed payload each if kept in memory.
    assert grown / 30 < 2_000
    assert all(isinstance(s, PackedStep) for s in steps[:-1])
    for got, want in zip(steps, expected, strict=True):
        assert got._same_as(want) and got.llm_calls == want.llm_calls


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts open files in /proc")
def test_a_long_runs_temporary_file_goes_with_its_trace() -> None:
    gc.collect()
    before = _open_deleted_temporary_files()
    rnd = random.Random(SEED)
    steps = [big_step(n, rnd) for n in range(1, 30)]
    pack_finished_steps(steps)
    new = _open_deleted_temporary_files() - before
    assert len(new) == 1, new  # one unnamed file for the whole run, not one per step
    assert len(steps[3].llm_calls) == 1_000  # read back from it
    del steps
    gc.collect()
    assert not new & _open_deleted_temporary_files()  # closed with its trace


def _open_deleted_temporary_files() -> set[tuple[str, str]]:
    """(fd, target) of this process's open, already deleted files in the temporary directory.

    Not a count of every open fd: another test's socket or file closed meanwhile (by the
    garbage collector or a background thread) would change that count.
    """
    tmp = os.path.realpath(tempfile.gettempdir())
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed since the listing (such as the listing's own fd)
            continue
        if target.startswith(tmp + os.sep) and target.endswith(" (deleted)"):
            found.add((fd, target))
    return found
