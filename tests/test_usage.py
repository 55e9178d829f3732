"""Token usage per agent, per step and per run, and the estimated cost of a run."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import os
import signal
import threading
import warnings
from typing import Any

import mesa
import pytest

from mesa_llm.module_llm import ModuleLLM
from mesa_llm.parallel_stepping import step_agents_parallel_sync
from mesa_llm_testing import FakeLLM, FaultPlan, run_scenario
from mesa_llm_testing.cli import main
from mesa_llm_testing.scenarios import DEFAULT_SCENARIO, REGISTRY

MODEL = "openai/gpt-4o-mini"


class Talker(mesa.Agent):
    """Asks its LLM once or twice per step (sync agents)."""

    def __init__(self, model: mesa.Model, api_base: str | None) -> None:
        super().__init__(model)
        self.llm = ModuleLLM(MODEL, api_base=api_base, api_key="sk-fake", agent=self)

    def step(self) -> None:
        for i in range(1 + self.unique_id % 2):
            self.llm.generate(f"Agent {self.unique_id}, turn {i}: what now?" * (1 + i))


class AsyncTalker(Talker):
    async def astep(self) -> None:
        await self.llm.agenerate(f"Agent {self.unique_id}: your move?")


def step_once(mode: str, layer: str, cls: type[Talker] = Talker) -> tuple[Any, FakeLLM]:
    fake = FakeLLM(seed=1, faults=FaultPlan(0.0))
    with contextlib.ExitStack() as stack:
        if layer == "http":
            stack.enter_context(fake.activate(intercept_all=False))
            api_base = stack.enter_context(fake.http())
        else:
            stack.enter_context(fake.activate())
            api_base = None
        model = mesa.Model(seed=1)
        agents = [cls(model, api_base) for _ in range(4)]
        report = step_agents_parallel_sync(agents, mode=mode)  # type: ignore[arg-type]
    assert report.ok, report.errors
    return report, fake


@pytest.mark.parametrize("mode", ["asyncio", "threading", "sequential"])
def test_a_sync_agent_that_times_out_reports_the_replies_it_had_counted(mode: str) -> None:
    release, done = threading.Event(), threading.Event()

    class Stuck(Talker):
        def step(self) -> None:
            self.llm.generate(f"Agent {self.unique_id}: one question, then a hang")
            release.wait(10)
            done.set()

    try:
        with FakeLLM(seed=1, faults=FaultPlan(0.0)).activate():
            model = mesa.Model(seed=1)
            stuck, talker = Stuck(model, None), Talker(model, None)
            report = step_agents_parallel_sync([stuck, talker], mode=mode, timeout=0.2)  # type: ignore[arg-type]
            release.set()
            assert done.wait(10)  # its reply is counted by now, whenever the deadline fell
    finally:
        release.set()
    assert [o.status for o in report] == ["timeout", "ok"]
    stuck_usage = report.outcomes[0].usage
    assert stuck_usage is not None and stuck_usage.calls == 1
    assert stuck_usage is not report.outcomes[1].usage


def test_an_agent_cancelled_from_outside_keeps_the_replies_it_had_counted() -> None:
    tasks: dict[Any, asyncio.Task[Any]] = {}

    class Waits(AsyncTalker):
        async def astep(self) -> None:
            tasks[self.unique_id] = asyncio.current_task()  # type: ignore[assignment]
            await self.llm.agenerate(f"Agent {self.unique_id}: one question, then a wait")
            await asyncio.Event().wait()

    class Canceller(AsyncTalker):
        async def astep(self) -> None:
            await self.llm.agenerate(f"Agent {self.unique_id}: and one more")
            while not tasks:
                await asyncio.sleep(0)
            for task in tasks.values():  # cancelled by something outside the step
                task.cancel()

    with FakeLLM(seed=1, faults=FaultPlan(0.0)).activate():
        model = mesa.Model(seed=1)
        agents = [Waits(model, None), Canceller(model, None)]
        report = step_agents_parallel_sync(agents, mode="asyncio")
    assert [o.status for o in report] == ["cancelled", "ok"]
    cancelled = report.outcomes[0].usage
    assert cancelled is not None and cancelled.calls == 1
    assert report.usage.calls == 2


@pytest.mark.parametrize("layer", ["provider", "http"])
@pytest.mark.parametrize("mode", ["asyncio", "threading", "sequential"])
def test_step_report_usage_sums_each_agents_replies(mode: str, layer: str) -> None:
    report, fake = step_once(mode, layer)
    assert {c.layer for c in fake.calls} == {layer}
    per_agent: dict[Any, list[int]] = {}
    for c in fake.calls:
        tokens = c.response.usage(c.request.messages)  # type: ignore[union-attr]
        row = per_agent.setdefault(c.agent, [0, 0, 0])
        row[0] += tokens["prompt_tokens"]
        row[1] += tokens["completion_tokens"]
        row[2] += 1
    for outcome in report:
        usage = outcome.usage
        assert usage is not None
        expected = per_agent[outcome.unique_id]
        assert [usage.prompt_tokens, usage.completion_tokens, usage.calls] == expected
        assert usage.by_model == {MODEL: expected}
    total = report.usage
    assert total.calls == len(fake.calls) == 6
    assert total.prompt_tokens == sum(row[0] for row in per_agent.values()) > 0
    assert total.total_tokens == total.prompt_tokens + total.completion_tokens


@pytest.mark.parametrize("mode", ["asyncio", "threading"])
def test_async_agents_count_their_usage_too(mode: str) -> None:
    report, fake = step_once(mode, "provider", AsyncTalker)
    assert report.usage.calls == len(fake.calls) == 4
    assert all(o.usage is not None and o.usage.calls == 1 for o in report)


class Quiet(mesa.Agent):
    """Makes no LLM call."""

    def step(self) -> None:
        pass


class AsyncQuiet(mesa.Agent):
    """Makes no LLM call; every other one awaits once."""

    async def astep(self) -> None:
        if self.unique_id % 2:
            await asyncio.sleep(0)


@pytest.mark.parametrize("cls", [Quiet, AsyncQuiet])
@pytest.mark.parametrize("mode", ["asyncio", "threading", "sequential"])
def test_an_agent_without_llm_calls_has_a_zero_tally_of_its_own(
    mode: str, cls: type[mesa.Agent]
) -> None:
    from mesa_llm.parallel_stepping import TokenUsage

    model = mesa.Model(seed=1)
    agents = [cls(model) for _ in range(4)]
    report = step_agents_parallel_sync(agents, mode=mode)  # type: ignore[arg-type]
    assert report.ok, report.errors
    assert report.usage.to_dict() == TokenUsage().to_dict()
    # Every field is set, as the constructor sets it (asyncio mode makes outcomes field by field).
    assert [dataclasses.replace(o) for o in report] == report.outcomes
    tallies = [o.usage for o in report]
    assert all(type(u) is TokenUsage and u == TokenUsage() for u in tallies)
    assert all(o.usage is u for o, u in zip(report, tallies, strict=True))  # the same each read
    assert len({id(u) for u in tallies}) == len(tallies)  # each agent's own
    tallies[0].add(MODEL, 5, 2)
    assert [u.calls for u in tallies] == [1, 0, 0, 0]
    assert report.usage.total_tokens == 7


class ThreadedTalker(Talker):
    """Asks from two threads it starts and from its own task, at once."""

    async def astep(self) -> None:
        await asyncio.gather(
            asyncio.to_thread(self.llm.generate, f"Agent {self.unique_id}: left?"),
            asyncio.to_thread(self.llm.generate, f"Agent {self.unique_id}: right?"),
            self.llm.agenerate(f"Agent {self.unique_id}: or stay?"),
        )


@pytest.mark.parametrize("mode", ["asyncio", "threading"])
def test_replies_counted_from_threads_an_agent_starts_all_land_in_its_tally(mode: str) -> None:
    report, fake = step_once(mode, "provider", ThreadedTalker)
    assert len(fake.calls) == 12
    assert [o.usage.calls for o in report] == [3, 3, 3, 3]  # type: ignore[union-attr]
    assert report.usage.calls == 12


class Delegator(Talker):
    """Asks once as itself and once ``acting_as`` its neighbour, reporting who it was."""

    def step(self) -> None:
        from mesa_llm.parallel_stepping import acting_as, current_agent

        self.seen = [current_agent()]
        other = next(a for a in self.model.agents if a is not self)
        with acting_as(other):
            self.seen.append(current_agent())
            self.llm.generate(f"Agent {self.unique_id} for {other.unique_id}: what now?")
        self.seen.append(current_agent())
        self.llm.generate(f"Agent {self.unique_id}: and you?")


class AsyncDelegator(Delegator):
    async def astep(self) -> None:
        self.step()


@pytest.mark.parametrize("cls", [Delegator, AsyncDelegator])
@pytest.mark.parametrize("mode", ["asyncio", "threading", "sequential"])
def test_replies_made_acting_as_another_agent_count_in_the_stepping_agents_tally(
    mode: str, cls: type[Talker]
) -> None:
    report, fake = step_once(mode, "provider", cls)
    for o in report:
        other = o.agent.seen[1]
        assert o.agent.seen == [o.agent, other, o.agent] and other is not o.agent
        assert o.usage is not None and o.usage.calls == 2
    assert report.usage.calls == len(fake.calls) == 8


def scenario_run(mode: str, llm_model: str) -> Any:
    factory = functools.partial(REGISTRY[DEFAULT_SCENARIO], llm_model=llm_model)
    return run_scenario(factory, steps=3, mode=mode, faults=FaultPlan(0.2, seed=3), seed=3)


def test_run_usage_is_the_same_in_every_mode_and_priced_as_the_model_asked_for() -> None:
    from mesa_llm_testing._cost import estimate_cost, usage_line

    runs = [scenario_run(mode, MODEL) for mode in ("sequential", "asyncio", "threading")]
    usages = [run.usage for run in runs]
    assert usages[0].calls > 0 and usages[0].prompt_tokens > 0
    assert all(u.to_dict() == usages[0].to_dict() for u in usages)
    assert [s.usage for s in runs[1].steps] == [s.usage for s in runs[0].steps]
    dollars, unknown = estimate_cost(usages[0])
    assert unknown == []
    expected = usages[0].prompt_tokens * 0.15e-6 + usages[0].completion_tokens * 0.6e-6
    assert dollars == pytest.approx(expected)
    line = usage_line(usages[0], agents=10, steps=3)
    assert "this 10-agent x 3-step run would cost about $" in line and "gpt-4o-mini" in line


def test_an_unknown_model_has_an_unknown_cost_and_does_not_crash() -> None:
    from mesa_llm_testing._cost import usage_line

    usage = scenario_run("sequential", "mesa-fake/scenario").usage
    assert "cost unknown: litellm has no price for mesa-fake/scenario" in usage_line(
        usage, agents=3, steps=3
    )


def test_usage_survives_the_trace_json() -> None:
    run = scenario_run("sequential", MODEL)
    again = type(run).from_json(run.to_json())
    assert again.usage.to_dict() == run.usage.to_dict()


def test_cli_run_prints_tokens_and_cost(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--agents", "3", "--steps", "2", "-q"]) == 0
    out = capsys.readouterr().out
    assert "tokens: " in out and "prompt +" in out and "completion tokens" in out


def test_cli_run_prices_the_tokens_as_the_model_given(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["run", "--agents", "3", "--steps", "2", "-q"]
    assert main([*args, "--price-as", "openai/gpt-4o-mini"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("tokens: "))
    assert "this 3-agent x 2-step run would cost about $" in line
    assert line.endswith("(priced as openai/gpt-4o-mini)")
    dollars = float(line.split("about $")[1].split()[0])
    assert dollars > 0


def test_cli_price_as_an_unpriced_model_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["run", "--steps", "1", "--price-as", "nosuch/model"]) == 2
    err = capsys.readouterr().err
    assert "--price-as 'nosuch/model'" in err and "e.g. openai/gpt-4o-mini" in err


class _HeldWhileAdding(dict):
    """A ``by_model`` whose update waits for a signal: an ``add`` stays in progress."""

    def __init__(self, entered: Any, release: Any) -> None:
        super().__init__()
        self.entered, self.release = entered, release

    def setdefault(self, key: Any, default: Any = None) -> Any:
        self.entered.set()
        self.release.wait(10)
        return super().setdefault(key, default)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX-only")
def test_a_process_forked_while_another_thread_adds_usage_can_count_its_own() -> None:
    import threading

    from mesa_llm.parallel_stepping import TokenUsage

    entered, release = threading.Event(), threading.Event()
    busy = TokenUsage(by_model=_HeldWhileAdding(entered, release))
    adder = threading.Thread(target=busy.add, args=("m", 1, 1))
    adder.start()
    try:
        assert entered.wait(10)
        with warnings.catch_warnings():  # "use of fork() may lead to deadlocks": the subject
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # the child: summing and adding must not wait on the parent's adder
            signal.alarm(5)
            code = 1
            try:
                fresh = TokenUsage()
                fresh.add("m", 2, 3)
                total = TokenUsage.total([fresh, TokenUsage.from_dict(fresh.to_dict())])
                code = 0 if total.total_tokens == 10 else 1
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
    finally:
        release.set()
        adder.join(10)
    assert os.waitstatus_to_exitcode(status) == 0, "the child hung on the usage lock"
    assert busy.total_tokens == 2
