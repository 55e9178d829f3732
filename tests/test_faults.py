"""FaultKind, FaultPlan and InjectedFault: deterministic decisions, scripts, records, replay."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import pickle
import subprocess
import sys
import threading
import tracemalloc
from collections import Counter

import mesa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesa_llm_testing import DEFAULT_KINDS, TRANSIENT_KINDS, FaultKind, FaultPlan, InjectedFault

ALL_KINDS = [kind.value for kind in FaultKind]
GRID = [
    (agent, step, call)
    for agent in (None, 1, 2, 7)
    for step in (None, 0, 1, 5)
    for call in range(4)
]


def decisions(plan: FaultPlan) -> list[str | None]:
    out = []
    for agent, step, call in GRID:
        kind = plan.decide(agent=agent, step=step, call=call)
        out.append(None if kind is None else kind.value)
    return out


# --------------------------------------------------------------------------- FaultKind


def test_parse_accepts_values_members_and_any_case() -> None:
    assert FaultKind.parse("rate_limit") is FaultKind.RATE_LIMIT
    assert FaultKind.parse(" Timeout ") is FaultKind.TIMEOUT
    assert FaultKind.parse(FaultKind.EMPTY_RESPONSE) is FaultKind.EMPTY_RESPONSE
    assert str(FaultKind.SERVER_ERROR) == "server_error"


@pytest.mark.parametrize("bad", ["ratelimit", "", "429", 3, None])
def test_parse_rejects_unknown_kinds_naming_the_valid_ones(bad: object) -> None:
    with pytest.raises(ValueError, match="mesa_llm_testing: unknown fault kind") as info:
        FaultKind.parse(bad)  # type: ignore[arg-type]
    for value in ALL_KINDS:
        assert value in str(info.value)


def test_parse_many_gives_canonical_order_without_duplicates() -> None:
    assert FaultKind.parse_many("timeout,rate_limit,timeout") == (
        FaultKind.RATE_LIMIT,
        FaultKind.TIMEOUT,
    )
    assert FaultKind.parse_many(["empty_response", FaultKind.RATE_LIMIT]) == (
        FaultKind.RATE_LIMIT,
        FaultKind.EMPTY_RESPONSE,
    )
    assert FaultKind.parse_many(None) == DEFAULT_KINDS
    assert FaultKind.parse_many("all") == tuple(FaultKind)
    assert FaultKind.parse_many(" ") == DEFAULT_KINDS
    with pytest.raises(ValueError, match="rate_limit, timeout, malformed_json"):
        FaultKind.parse_many("rate_limit,nope")


# --------------------------------------------------------------------------- FaultPlan options


@pytest.mark.parametrize("bad", [1.5, -0.1, float("nan"), "0.1", True, None])
def test_a_bad_rate_is_a_value_error_naming_the_option_and_range(bad: object) -> None:
    with pytest.raises(ValueError, match=r"mesa_llm_testing: fault rate must be .*from 0 to 1"):
        FaultPlan(bad)  # type: ignore[arg-type]


def test_bad_kinds_and_seed_are_value_errors() -> None:
    with pytest.raises(ValueError, match="valid kinds: rate_limit"):
        FaultPlan(0.5, kinds=["rate_limit", "lightning"])
    with pytest.raises(ValueError, match="at least one fault kind"):
        FaultPlan(0.5, kinds=[])
    with pytest.raises(ValueError, match="seed must be an integer"):
        FaultPlan(0.5, seed="7")  # type: ignore[arg-type]


def test_kinds_default_to_the_original_six_and_accept_text() -> None:
    assert FaultPlan().kinds == DEFAULT_KINDS == tuple(FaultKind)[:6]
    assert FaultPlan(kinds="timeout,rate_limit").kinds == (FaultKind.RATE_LIMIT, FaultKind.TIMEOUT)


def test_a_default_plan_injects_the_faults_it_did_before_the_new_kinds() -> None:
    # Pinned from the plan as it was with six kinds: the new kinds are opt-in, so a
    # seed recorded then gives the same faults now.
    plan = FaultPlan(0.5, seed=3)
    text = ",".join(str(kind) for kind in decisions(plan))
    assert hashlib.blake2b(text.encode(), digest_size=8).hexdigest() == "1ae94752576ed01f"
    assert FaultPlan(1.0, kinds="all", seed=3).kinds == tuple(FaultKind)


def test_transient_kinds_are_documented() -> None:
    refusals = {"bad_request", "auth", "permission", "not_found", "context_window"}
    refusals |= {"content_policy", "truncated"}
    assert {kind.value for kind in FaultKind if not kind.transient} == refusals
    assert {kind for kind in FaultKind if kind.transient} == TRANSIENT_KINDS
    for kind in FaultKind:  # the catalogue table lists every kind
        assert kind.value in (FaultKind.__doc__ or "")


# --------------------------------------------------------------------------- decide


def test_decide_is_a_pure_function_of_seed_test_and_call_identity() -> None:
    a = FaultPlan(0.5, seed=11, test_id="tests/test_x.py::test_y")
    b = FaultPlan(0.5, seed=11, test_id="tests/test_x.py::test_y")
    # Interleave counters and records on one plan: decisions do not depend on them.
    for _ in range(5):
        a.next_call(agent=1, step=0)
    a.record(InjectedFault(1, 0, 0, FaultKind.TIMEOUT, "provider"))
    assert decisions(a) == decisions(b)
    assert decisions(a) == decisions(a)
    assert decisions(a) != decisions(FaultPlan(0.5, seed=12, test_id="tests/test_x.py::test_y"))
    assert decisions(a) != decisions(FaultPlan(0.5, seed=11, test_id="tests/test_x.py::test_z"))


def test_kind_order_given_does_not_change_decisions() -> None:
    one = FaultPlan(0.7, kinds=["timeout", "rate_limit", "empty_response"], seed=3)
    two = FaultPlan(0.7, kinds="empty_response,rate_limit,timeout", seed=3)
    assert decisions(one) == decisions(two)
    assert set(decisions(one)) <= {None, "timeout", "rate_limit", "empty_response"}


def test_decisions_are_the_same_in_other_processes_whatever_the_hash_seed() -> None:
    script = (
        "import json\n"
        "from mesa_llm_testing import FaultPlan\n"
        f"grid = {GRID!r}\n"
        "plan = FaultPlan(0.4, seed=2024, test_id='t::x')\n"
        "out = []\n"
        "for a, s, c in grid:\n"
        "    k = plan.decide(agent=a, step=s, call=c)\n"
        "    out.append(None if k is None else k.value)\n"
        "print(json.dumps(out))\n"
    )
    expected = decisions(FaultPlan(0.4, seed=2024, test_id="t::x"))
    assert any(expected) and not all(expected)
    for hash_seed in ("0", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True
        )
        assert json.loads(done.stdout) == expected


def test_fault_rate_and_kind_mix_are_roughly_as_asked() -> None:
    plan = FaultPlan(0.1, seed=5)
    kinds: Counter[str] = Counter()
    total = 0
    for agent in range(100):
        for step in range(20):
            for call in range(10):
                total += 1
                kind = plan.decide(agent=agent, step=step, call=call)
                if kind is not None:
                    kinds[kind.value] += 1
    faulted = sum(kinds.values())
    assert 0.08 * total < faulted < 0.12 * total
    assert set(kinds) == {kind.value for kind in DEFAULT_KINDS}
    for count in kinds.values():  # each of 6 kinds near 1/6 of the faults
        assert 0.10 * faulted < count < 0.23 * faulted


def test_rate_zero_never_faults_and_rate_one_always_does() -> None:
    assert not any(decisions(FaultPlan(0.0, seed=9)))
    assert all(decisions(FaultPlan(1.0, seed=9)))
    assert set(decisions(FaultPlan(1.0, kinds="timeout"))) == {"timeout"}


@given(
    seed=st.integers(min_value=-(2**63), max_value=2**63),
    agent=st.one_of(st.none(), st.integers(min_value=0, max_value=10**6)),
    step=st.one_of(st.none(), st.integers(min_value=0, max_value=10**6)),
    call=st.integers(min_value=0, max_value=10**4),
    rate=st.floats(min_value=0.0, max_value=1.0),
)
def test_decide_is_stable_for_any_identity(
    seed: int, agent: int | None, step: int | None, call: int, rate: float
) -> None:
    first = FaultPlan(rate, seed=seed).decide(agent=agent, step=step, call=call)
    again = FaultPlan(rate, seed=seed).decide(agent=agent, step=step, call=call)
    assert first is again
    if rate == 0.0:
        assert first is None


# --------------------------------------------------------------------------- scripted faults


def test_scripted_faults_take_precedence_and_chain() -> None:
    plan = (
        FaultPlan(1.0, kinds="rate_limit", seed=1)
        .at(agent=3, step=2, call=0, kind=FaultKind.TIMEOUT)
        .at(agent=None, step=None, call=1, kind="empty_response")
    )
    assert plan.decide(agent=3, step=2, call=0) is FaultKind.TIMEOUT
    assert plan.decide(agent=3, step=2, call=1) is FaultKind.RATE_LIMIT
    assert plan.decide(agent=None, step=None, call=1) is FaultKind.EMPTY_RESPONSE

    quiet = FaultPlan().at(agent=3, step=2, kind="server_error")
    assert quiet.decide(agent=3, step=2, call=0) is FaultKind.SERVER_ERROR
    assert quiet.decide(agent=3, step=2, call=1) is None
    assert quiet.decide(agent=4, step=2, call=0) is None
    assert quiet.decide(agent=3, step=3, call=0) is None


def test_at_validates_its_arguments() -> None:
    with pytest.raises(ValueError, match="unknown fault kind 'meteor'"):
        FaultPlan().at(agent=1, step=1, kind="meteor")
    with pytest.raises(ValueError, match=r"at\(call=...\) must be an integer >= 0"):
        FaultPlan().at(agent=1, step=1, call=-1, kind="timeout")


# --------------------------------------------------------------------------- counters and records


def test_next_call_counts_per_agent_and_step() -> None:
    plan = FaultPlan()
    assert [plan.next_call(agent=1, step=0) for _ in range(3)] == [0, 1, 2]
    assert plan.next_call(agent=2, step=0) == 0
    assert plan.next_call(agent=1, step=1) == 0
    plan.reset()
    assert plan.next_call(agent=1, step=0) == 0


def test_each_model_run_counts_its_calls_from_zero() -> None:
    first, second = mesa.Model(seed=1), mesa.Model(seed=1)
    plan = FaultPlan()
    assert [plan.next_call(agent=1, step=1, model=first) for _ in range(2)] == [0, 1]
    assert plan.next_call(agent=1, step=1, model=second) == 0  # another model run
    assert plan.next_call(agent=1, step=1, model=first) == 2


def test_counters_of_finished_steps_and_models_are_dropped() -> None:
    import gc

    plan = FaultPlan()
    model = mesa.Model(seed=1)
    for step in range(200):
        for agent in range(50):
            plan.next_call(agent=agent, step=step, model=model)
    assert len(plan._runs) <= 2 * 50  # only the current and the previous step are kept
    assert plan.next_call(agent=0, step=199, model=model) == 1  # the current step still counts
    del model
    gc.collect()
    assert len(plan._runs) == 0  # a model's counters go with it


def test_counters_and_records_are_thread_safe() -> None:
    plan = FaultPlan(0.5, seed=4)
    seen: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(16)

    def work() -> None:
        barrier.wait()
        mine = []
        for _ in range(500):
            call = plan.next_call(agent=1, step=0)
            mine.append(call)
            kind = plan.decide(agent=1, step=0, call=call)
            if kind is not None:
                plan.record(InjectedFault(1, 0, call, kind, "provider"))
        with lock:
            seen.extend(mine)

    threads = [threading.Thread(target=work) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(seen) == list(range(16 * 500))
    expected = {c for c in range(16 * 500) if plan.decide(agent=1, step=0, call=c) is not None}
    assert {f.call for f in plan.injected} == expected
    assert len(plan.injected) == len(expected)
    assert sum(plan.counts_by_kind().values()) == len(expected)


def test_reset_clears_counters_and_records_but_keeps_settings_and_script() -> None:
    plan = FaultPlan(0.2, kinds="timeout", seed=8, test_id="t").at(
        agent=1, step=1, kind="rate_limit"
    )
    plan.next_call(agent=1, step=1)
    plan.record(InjectedFault(1, 1, 0, FaultKind.RATE_LIMIT, "provider", "t"))
    assert plan.counts_by_kind() == {"rate_limit": 1}
    plan.reset()
    assert plan.injected == []
    assert plan.counts_by_kind() == {}
    assert (plan.rate, plan.kinds, plan.seed, plan.test_id) == (0.2, (FaultKind.TIMEOUT,), 8, "t")
    assert plan.decide(agent=1, step=1, call=0) is FaultKind.RATE_LIMIT


def test_counts_by_kind_follow_kind_order() -> None:
    plan = FaultPlan()
    for kind in ("timeout", "rate_limit", "timeout"):
        plan.record(InjectedFault(None, None, 0, FaultKind.parse(kind), "http"))
    assert list(plan.counts_by_kind().items()) == [("rate_limit", 1), ("timeout", 2)]


def test_injected_is_a_snapshot_sequence_that_compares_like_a_list() -> None:
    plan = FaultPlan()
    odd_ids = [1, "1", 1.0, ("a", 2), ["unhashable"], None]
    records = [
        InjectedFault(agent, step, call, kind, layer, test_id)
        for call, (agent, step, kind, layer, test_id) in enumerate(
            zip(
                odd_ids,
                [1, None, 1, 2, 3, 1],
                [FaultKind.TIMEOUT, FaultKind.RATE_LIMIT, *list(FaultKind)[-4:]],
                ["provider", "http"] * 3,
                ["t::a", "", "t::a", "t::b", "", ""],
                strict=True,
            )
        )
    ]
    for fault in records[:4]:
        plan.record(fault)
    snapshot = plan.injected
    for fault in records[4:]:
        plan.record(fault)
    assert len(snapshot) == 4 and snapshot == records[:4] and records[:4] == snapshot
    assert list(plan.injected) == records  # every field, with each id's own type, comes back
    assert [type(f.agent) for f in plan.injected] == [type(i) for i in odd_ids]
    assert plan.injected[-1] == records[-1] and plan.injected[2:] == records[2:]
    assert plan.injected != records[:-1] and plan.injected != "not a sequence"
    with pytest.raises(IndexError):
        snapshot[4]
    (first, *_), seen = plan.injected, sorted(plan.injected, key=InjectedFault.sort_key)
    assert first == records[0] and seen == sorted(records, key=InjectedFault.sort_key)
    for again in (pickle.loads(pickle.dumps(snapshot)), copy.deepcopy(snapshot)):
        assert again == records[:4] and type(again) is type(snapshot)
    plan.reset()
    assert plan.injected == [] and snapshot == records[:4]  # older snapshots keep theirs


def test_injected_faults_are_kept_in_a_few_bytes_each() -> None:
    plan = FaultPlan(seed=1)
    kinds = list(FaultKind)

    def record(n: int, first_step: int) -> None:
        for i in range(n):
            kind = kinds[i % len(kinds)]
            plan.record(InjectedFault(i % 1000, first_step + i // 1000, i % 3, kind, "provider"))

    record(2_000, 1)  # agents and steps seen once are interned; measure what each fault adds
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        record(20_000, 3)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert grown / 20_000 < 40  # an InjectedFault object in a list costs over 100 bytes
    assert len(plan.injected) == 22_000 and plan.injected[-1].step == 3 + 19_999 // 1000


# --------------------------------------------------------------------------- JSON


def test_injected_fault_round_trips_through_a_dict() -> None:
    fault = InjectedFault(5, 3, 2, FaultKind.MALFORMED_JSON, "http", "t::x")
    assert fault.to_dict() == {
        "agent": 5,
        "step": 3,
        "call": 2,
        "kind": "malformed_json",
        "layer": "http",
        "test_id": "t::x",
    }
    assert InjectedFault.from_dict(json.loads(json.dumps(fault.to_dict()))) == fault
    with pytest.raises(ValueError, match="valid layers: provider, http"):
        InjectedFault.from_dict({**fault.to_dict(), "layer": "socket"})
    with pytest.raises(ValueError, match="integer 'call'"):
        InjectedFault.from_dict({"kind": "timeout"})


def run_calls(plan: FaultPlan) -> list[InjectedFault]:
    """Simulate the fake: every agent makes 3 calls in each of 4 steps."""
    for step in range(4):
        for agent in range(10):
            for _ in range(3):
                call = plan.next_call(agent=agent, step=step)
                kind = plan.decide(agent=agent, step=step, call=call)
                if kind is not None:
                    plan.record(InjectedFault(agent, step, call, kind, "provider", plan.test_id))
    return sorted(plan.injected, key=InjectedFault.sort_key)


def test_json_round_trip_replays_exactly_the_recorded_faults() -> None:
    original = FaultPlan(0.3, kinds="rate_limit,timeout,malformed_json", seed=77, test_id="t::a")
    recorded = run_calls(original)
    assert recorded

    text = original.to_json()
    data = json.loads(text)
    assert data["rate"] == 0.3
    assert data["kinds"] == ["rate_limit", "timeout", "malformed_json"]
    assert (data["seed"], data["test_id"]) == (77, "t::a")

    replay = FaultPlan.from_json(text)
    assert replay.rate == 0.0
    assert (replay.seed, replay.test_id) == (77, "t::a")
    assert run_calls(replay) == recorded


def test_replay_injects_recorded_faults_even_with_other_settings() -> None:
    recorded = [
        InjectedFault(1, 0, 0, FaultKind.TIMEOUT, "http", "t::b"),
        InjectedFault(2, 3, 1, FaultKind.EMPTY_RESPONSE, "provider", "t::b"),
        InjectedFault(2, 3, 0, FaultKind.RATE_LIMIT, "provider", "t::other"),
    ]
    text = json.dumps([f.to_dict() for f in recorded])
    only_b = FaultPlan.from_json(text, test_id="t::b")
    assert only_b.test_id == "t::b"
    assert only_b.decide(agent=1, step=0, call=0) is FaultKind.TIMEOUT
    assert only_b.decide(agent=2, step=3, call=1) is FaultKind.EMPTY_RESPONSE
    assert only_b.decide(agent=2, step=3, call=0) is None
    assert len(only_b.scripted) == 2
    assert FaultPlan.from_json(text).decide(agent=2, step=3, call=0) is FaultKind.RATE_LIMIT


@pytest.mark.parametrize("text", ["{not json", "42"])
def test_from_json_rejects_bad_input(text: str) -> None:
    with pytest.raises(ValueError, match=r"mesa_llm_testing: .*fault plan JSON"):
        FaultPlan.from_json(text)


def test_to_json_includes_scripted_faults() -> None:
    plan = FaultPlan(seed=1).at(agent=4, step=2, call=1, kind="connection_error")
    data = json.loads(plan.to_json(indent=2))
    assert data["scripted"] == [
        {
            "agent": 4,
            "step": 2,
            "call": 1,
            "kind": "connection_error",
            "layer": "provider",
            "test_id": "",
        }
    ]
    assert data["injected"] == []


def test_from_json_of_a_plan_that_has_not_run_keeps_rate_kinds_seed_and_script() -> None:
    plan = FaultPlan(0.3, kinds="rate_limit,timeout", seed=11, test_id="t").at(
        agent=3, step=2, call=0, kind=FaultKind.SERVER_ERROR
    )
    rebuilt = FaultPlan.from_json(plan.to_json())
    assert (rebuilt.rate, set(rebuilt.kinds), rebuilt.seed) == (0.3, set(plan.kinds), 11)
    assert rebuilt.decide(agent=3, step=2, call=0) is FaultKind.SERVER_ERROR
    calls = [(a, s, c) for a in range(1, 6) for s in range(1, 4) for c in range(3)]
    assert [rebuilt.decide(agent=a, step=s, call=c) for a, s, c in calls] == [
        plan.decide(agent=a, step=s, call=c) for a, s, c in calls
    ]
