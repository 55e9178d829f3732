"""The checks pass on well-behaved models and explain what a misbehaving model did wrong."""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

import pytest
from mesa import Model

from mesa_llm.llm_agent import LLMAgent
from mesa_llm.module_llm import RetryPolicy
from mesa_llm.reasoning import Plan
from mesa_llm.tools import ToolManager, tool
from mesa_llm_testing import FaultKind, FaultPlan, RunTrace, run_scenario
from mesa_llm_testing.checks import (
    EXPECTED_EXCEPTIONS,
    _other_hash_seed,
    check_isolation,
    check_ordering,
    check_reproducible,
    run_in_subprocess,
)
from mesa_llm_testing.scenarios import IslandCommonsModel
from mesa_llm_testing.scenarios._common import DirectReasoning, ScenarioModel

SEED = 99


@tool
def nod(agent: LLMAgent) -> str:
    """Nod."""
    agent.nods += 1
    return "nodded"


class Asker(LLMAgent):
    """Asks the LLM whether to nod; ``behaviour`` decides how it treats a failed call."""

    model: AskingModel

    def __init__(self, model: AskingModel) -> None:
        super().__init__(
            model,
            reasoning=DirectReasoning,
            llm_model="mesa-fake/asker",
            llm_kwargs=model.llm_kwargs,
        )
        self.tool_manager = ToolManager([nod], include_defaults=False)
        self.nods = 0

    def prompt(self) -> str:
        if self.model.behaviour == "mode_dependent":  # a bug: behaviour depends on the thread
            return f"Nod? (main thread: {threading.current_thread() is threading.main_thread()})"
        return "Nod?"

    def ask(self) -> Plan | None:
        behaviour = self.model.behaviour
        if behaviour == "buggy" and self.unique_id == 2:
            raise KeyError("a bug unrelated to the LLM")
        try:
            return self.reasoning.plan(prompt=self.prompt(), obs=self.generate_obs())
        except Exception as exc:
            if behaviour == "swallow":
                return None
            if behaviour == "wrap":
                raise RuntimeError("the LLM failed") from exc
            raise


class AskingModel(ScenarioModel):
    """A minimal plan-then-commit model whose agents misbehave on request."""

    scenario_name = "asking"

    def __init__(
        self,
        *,
        seed: int,
        n_agents: int = 4,
        behaviour: str = "honest",
        retry: RetryPolicy | None = None,
        parallel: bool = False,
    ) -> None:
        super().__init__(seed=seed, retry=retry)
        self.behaviour = behaviour
        self.parallel = parallel  # stepped in a parallel mode (the runner's sequential is not)
        for _ in range(n_agents):
            Asker(self)

    def step(self) -> None:
        if self.behaviour == "unshuffled" and self.parallel:
            report = self.run_phase(list(self.agents), "ask")  # a bug: forgets Mesa's shuffle
        else:
            report = self.shuffle_phase(self.agents, "ask")
        for outcome in report.succeeded:
            if outcome.value is not None:
                outcome.agent.apply_plan(outcome.value)

    def state(self) -> list[list[int]]:
        return [[a.unique_id, a.nods] for a in self.agents]


def run(mode: str = "sequential", *, behaviour: str = "honest", **kwargs: Any) -> RunTrace:
    def factory(seed: int, n_agents: int) -> Model:
        parallel = mode != "sequential"
        return AskingModel(seed=seed, n_agents=n_agents, behaviour=behaviour, parallel=parallel)

    return run_scenario(factory, steps=2, mode=mode, seed=SEED, agents=4, **kwargs)


def rate_limited(*, agent: int, calls: int) -> FaultPlan:
    """A plan failing ``agent``'s first ``calls`` attempts in step 1 with rate limits."""
    plan = FaultPlan()
    for call in range(calls):
        plan.at(agent=agent, step=1, call=call, kind="rate_limit")
    return plan


# --------------------------------------------------------------------------- isolation


@pytest.mark.parametrize("mode", ["sequential", "asyncio", "threading"])
def test_isolation_holds_for_an_honest_model(mode: str) -> None:
    trace = run(mode, faults=FaultPlan(0.5, seed=4))

    assert any(step.failed for step in trace.steps)
    check_isolation(trace)


def test_faults_absorbed_by_retries_leave_the_agent_succeeding() -> None:
    trace = run(faults=rate_limited(agent=1, calls=2))  # third attempt succeeds

    check_isolation(trace)
    assert trace.steps[0].outcomes[1] == ("ok", None)
    assert trace.steps[0].recovered == 2


def test_an_agent_that_swallows_an_unrecovered_fault_is_reported() -> None:
    trace = run(behaviour="swallow", faults=rate_limited(agent=1, calls=3))

    with pytest.raises(AssertionError) as info:
        check_isolation(trace)

    assert str(info.value) == (
        f"mesa_llm_testing: isolation check failed for the sequential run of 'asking' (seed "
        f"{SEED}) (max_attempts=3):\n"
        f"  step 1, agent 1: succeeded although its rate_limit fault on LLM call 2 was its "
        f"3rd failed attempt in a row"
    )


def test_a_failure_with_the_wrong_exception_type_is_reported() -> None:
    trace = run(behaviour="wrap", faults=rate_limited(agent=3, calls=3))

    with pytest.raises(
        AssertionError,
        match=(
            "step 1, agent 3: failed with RuntimeError after its rate_limit fault on LLM call 2; "
            "expected RateLimitError"
        ),
    ):
        check_isolation(trace)
    check_isolation(trace, expected={FaultKind.RATE_LIMIT: frozenset({"RuntimeError"})})


def test_a_failure_without_a_fault_is_reported() -> None:
    trace = run(behaviour="buggy")

    with pytest.raises(AssertionError) as info:
        check_isolation(trace)

    lines = str(info.value).splitlines()[1:]
    assert lines == [
        "  step 1, agent 2: failed with KeyError although no fault outlasted the retry policy",
        "  step 2, agent 2: failed with KeyError although no fault outlasted the retry policy",
    ]


def test_a_wrong_max_attempts_shows_up_as_calls_after_the_end() -> None:
    trace = run(faults=rate_limited(agent=1, calls=2))

    with pytest.raises(AssertionError) as info:
        check_isolation(trace, max_attempts=2)

    assert "(max_attempts=2)" in str(info.value)
    assert str(info.value).splitlines()[1:] == [
        "  step 1, agent 1: made LLM call 2 after its rate_limit fault on call 1 should have "
        "ended its step",
        "  step 1, agent 1: succeeded although its rate_limit fault on LLM call 1 was its 2nd "
        "failed attempt in a row",
    ]


def test_isolation_needs_max_attempts() -> None:
    trace = dataclasses.replace(run(), max_attempts=None)

    with pytest.raises(ValueError, match=r"pass max_attempts=\.\.\."):
        check_isolation(trace)
    check_isolation(trace, max_attempts=3)


def test_every_agent_must_be_accounted_for_once() -> None:
    trace = run()
    step = trace.steps[0]
    method, order = step.phases[0]
    broken = dataclasses.replace(
        step, population=[*step.population, 99], phases=[(method, [*order, order[0]])]
    )

    with pytest.raises(AssertionError) as info:
        check_isolation(dataclasses.replace(trace, steps=[broken]))

    assert str(info.value).splitlines()[1:] == [
        f"  step 1, phase 'ask': agent {order[0]} was started twice",
        "  step 1: agent 99 was never stepped (no outcome in any phase)",
    ]


def test_a_step_without_outcomes_cannot_be_checked() -> None:
    trace = run()
    blind = dataclasses.replace(trace.steps[0], phases=[], outcomes={}, start_order=[])

    with pytest.raises(AssertionError, match="no per-agent outcomes were recorded"):
        check_isolation(dataclasses.replace(trace, steps=[blind]))


def test_every_fault_kind_has_expected_exceptions() -> None:
    assert set(EXPECTED_EXCEPTIONS) == set(FaultKind)


# --------------------------------------------------------------------------- ordering


@pytest.mark.parametrize("mode", ["asyncio", "threading"])
def test_ordering_holds_for_parallel_runs(mode: str) -> None:
    faults = FaultPlan(0.3, seed=2)

    check_ordering(run(mode, faults=faults), run(faults=faults))


def test_a_model_that_forgets_to_shuffle_in_parallel_is_reported() -> None:
    sequential = run(behaviour="unshuffled")
    parallel = run("asyncio", behaviour="unshuffled")

    with pytest.raises(AssertionError) as info:
        check_ordering(parallel, sequential)

    lines = str(info.value).splitlines()
    assert lines[0] == (
        f"mesa_llm_testing: ordering check failed for the asyncio run of 'asking' (seed {SEED}):"
    )
    assert lines[1].startswith(
        "  step 1: agents were not started in the sequential shuffle order: position "
    )
    assert "in the asyncio run but agent" in lines[1]
    assert any("random number generator is in a different state" in line for line in lines)


def test_ordering_compares_with_a_sequential_run_of_the_same_scenario() -> None:
    with pytest.raises(ValueError, match="Run it with mode='sequential'"):
        check_ordering(run(), run("asyncio"))
    other_seed = dataclasses.replace(run(), seed=SEED + 1)
    with pytest.raises(AssertionError, match="ordering check compares different runs"):
        check_ordering(run("asyncio"), other_seed)


# --------------------------------------------------------------------------- reproducibility


def test_the_same_seed_reproduces_in_process() -> None:
    faults = FaultPlan(0.3, seed=5)

    check_reproducible(run(faults=faults), run(faults=faults))


def test_a_mode_dependent_model_is_reported_with_the_first_divergence() -> None:
    sequential = run(behaviour="mode_dependent")
    threaded = run("threading", behaviour="mode_dependent")
    first = sequential.steps[0].start_order[0]

    with pytest.raises(AssertionError) as info:
        check_reproducible(threaded, sequential)

    assert str(info.value) == (
        f"mesa_llm_testing: the threading run of 'asking' (seed {SEED}) and the sequential run "
        f"of 'asking' (seed {SEED}) are not identical: step 1, agent {first}, LLM call 0: the "
        f"request differs (the agent saw other state, memory or prompt)"
    )


def test_the_same_seed_reproduces_in_a_fresh_process_with_another_hash_seed() -> None:
    faults = FaultPlan(0.3, seed=8)
    here = run_scenario(
        IslandCommonsModel, steps=3, mode="sequential", seed=SEED, agents=6, faults=faults
    )

    there = run_in_subprocess(
        "island_commons", steps=3, seed=SEED, agents=6, faults=faults, mode="asyncio"
    )

    assert there.mode == "asyncio"
    assert any(step.faults for step in there.steps)
    check_reproducible(there, here)


def test_a_failing_subprocess_run_says_why() -> None:
    with pytest.raises(RuntimeError, match="unknown scenario 'no_such_scenario'"):
        run_in_subprocess("no_such_scenario", steps=1, seed=1)


def test_a_local_factory_cannot_go_to_a_subprocess() -> None:
    class Local(Model):
        pass

    with pytest.raises(ValueError, match="a subprocess cannot import"):
        run_in_subprocess(Local, steps=1, seed=1)


@pytest.mark.parametrize(("current", "expected"), [("7", 8), ("random", 1), (None, 1)])
def test_the_child_hash_seed_differs_from_this_process(
    monkeypatch: pytest.MonkeyPatch, current: str | None, expected: int
) -> None:
    if current is None:
        monkeypatch.delenv("PYTHONHASHSEED", raising=False)
    else:
        monkeypatch.setenv("PYTHONHASHSEED", current)

    assert _other_hash_seed() == expected
