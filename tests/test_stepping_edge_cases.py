"""mesa_llm.parallel_stepping under adversarial use: each test is a bug an outside review found."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from mesa import Agent, Model

from mesa_llm.parallel_stepping import (
    StepReport,
    disable_automatic_parallel_stepping,
    enable_automatic_parallel_stepping,
    parallel_stepping,
    step_agents_multithreaded,
    step_agents_parallel,
    step_agents_parallel_sync,
)

MODES = ["asyncio", "threading", "sequential"]


class Counter(Agent):
    def __init__(self, model: Model) -> None:
        super().__init__(model)
        self.count = 0

    def step(self) -> int:
        self.count += 1
        return self.count


class AsyncCounter(Agent):
    def __init__(self, model: Model) -> None:
        super().__init__(model)
        self.count = 0

    async def astep(self) -> int:
        self.count += 1
        return self.count


# --------------------------------------------------------------------------- 1. interrupts


class ChildInterrupt(Agent):
    """An async agent whose child task raises an interrupt (gather / wait_for / create_task)."""

    def __init__(self, model: Model, how: str, exc_type: type[BaseException]) -> None:
        super().__init__(model)
        self.how = how
        self.exc_type = exc_type

    async def astep(self) -> None:
        async def child() -> None:
            await asyncio.sleep(0)
            raise self.exc_type()

        if self.how == "gather":
            await asyncio.gather(child())
        elif self.how == "wait_for":
            await asyncio.wait_for(child(), timeout=5)
        else:
            await asyncio.create_task(child())


@pytest.mark.parametrize("mode", ["asyncio", "threading"])
@pytest.mark.parametrize("how", ["gather", "wait_for", "create_task"])
@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_interrupt_in_a_child_task_propagates_and_later_steps_work(
    mode: str, how: str, exc_type: type[BaseException]
) -> None:
    model = Model(seed=1)
    enable_automatic_parallel_stepping(mode)  # type: ignore[arg-type]
    good = [AsyncCounter(model) for _ in range(4)]
    result: list[Any] = []

    def stepper() -> None:  # a thread, so a hang fails the test instead of the suite
        try:
            step_agents_parallel_sync([ChildInterrupt(model, how, exc_type), *good])
        except BaseException as exc:
            result.append(exc)
        # Later steps, with only well-behaved agents, work and raise nothing.
        for _ in range(3):
            result.append(step_agents_parallel_sync(good))

    thread = threading.Thread(target=stepper, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "a step hung after an interrupt in a child task"
    assert isinstance(result[0], exc_type)
    assert all(isinstance(r, StepReport) and r.ok for r in result[1:]), result
    assert len(result) == 4


# --------------------------------------------------------------------------- 2. disable vs nested


@pytest.mark.parametrize("mode", MODES)
def test_disable_from_another_thread_while_a_nested_step_is_in_flight(mode: str) -> None:
    model = Model(seed=1)
    inside, go = threading.Event(), threading.Event()
    leaves = [Counter(model) for _ in range(3)]

    class Group(Agent):
        def step(self) -> list[Any]:
            inside.set()
            go.wait(5)
            report = step_agents_parallel_sync(leaves)  # nested, in the outer step's mode
            return [o.value for o in report.outcomes]

    enable_automatic_parallel_stepping(mode)  # type: ignore[arg-type]
    report = disable_while_in_flight(lambda: step_agents_parallel_sync([Group(model)]), inside, go)
    assert report.outcomes[0].value == [1, 1, 1]


def disable_while_in_flight(
    step: Callable[[], StepReport], inside: threading.Event, go: threading.Event
) -> StepReport:
    """Run ``step`` in a thread; once its agent is ``inside``, disable from another thread.

    The agent waits for ``go`` (set once the disable waits for the step in flight) and
    then runs its nested step. Both threads must finish: neither waits for the other.
    """
    reports: list[StepReport] = []
    outer = threading.Thread(target=lambda: reports.append(step()), daemon=True)
    outer.start()
    assert inside.wait(5)
    disabler = threading.Thread(target=disable_automatic_parallel_stepping, daemon=True)
    disabler.start()
    time.sleep(0.05)  # let the disable start waiting for the step in flight
    go.set()
    outer.join(10)
    disabler.join(10)
    assert not outer.is_alive() and not disabler.is_alive(), "disable deadlocked"
    return reports[0]


def test_disable_from_another_thread_while_an_async_agents_nested_step_is_in_flight() -> None:
    # The user's own event loop steps an async agent that steps others: no worker thread
    # and no library loop thread mark the nested step as nested, only the current agent.
    model = Model(seed=1)
    inside, go = threading.Event(), threading.Event()
    leaves = [AsyncCounter(model) for _ in range(3)]

    class Group(Agent):
        async def astep(self) -> list[Any]:
            inside.set()
            await asyncio.to_thread(go.wait, 5)
            report = await step_agents_parallel(leaves)  # nested, on the same loop
            return [o.value for o in report.outcomes]

    report = disable_while_in_flight(
        lambda: asyncio.run(step_agents_parallel([Group(model)])), inside, go
    )
    assert report.outcomes[0].value == [1, 1, 1]


# --------------------------------------------------------------------------- 3. running loop


@pytest.mark.parametrize("leave", ["context manager", "disable"])
async def test_teardown_inside_a_running_loop_after_async_agents_in_threading_mode(
    leave: str,
) -> None:
    model = Model(seed=1)
    agents = [AsyncCounter(model) for _ in range(4)]
    if leave == "context manager":
        with parallel_stepping("threading"):
            report = step_agents_parallel_sync(agents)
    else:
        enable_automatic_parallel_stepping("threading")
        report = step_agents_parallel_sync(agents)
        disable_automatic_parallel_stepping()
    assert report.ok and [a.count for a in agents] == [1] * 4


# --------------------------------------------------------------------------- 4. nested asyncio


@pytest.mark.parametrize("mode", MODES)
def test_nested_shuffle_do_from_an_async_agent_runs_async_sub_agents(mode: str) -> None:
    model = Model(seed=1)
    model.parallel_stepping = True
    subs = [AsyncCounter(model) for _ in range(3)]
    model.sub = model.agents.select(lambda a: a in subs)

    class Leader(Agent):
        async def astep(self) -> None:
            self.model.sub.shuffle_do("step")

    enable_automatic_parallel_stepping(mode)  # type: ignore[arg-type]
    leaders = [Leader(model) for _ in range(2)]
    report = step_agents_parallel_sync(leaders)
    assert report.ok, report
    assert [a.count for a in subs] == [2, 2, 2]  # never skipped, once per leader


# --------------------------------------------------------------------------- 5. orphans


@pytest.mark.parametrize("mode", MODES)
def test_a_timed_out_agents_thread_never_blocks_the_next_step(mode: str) -> None:
    model = Model(seed=1)
    release = threading.Event()

    class Stuck(Agent):
        def step(self) -> None:
            release.wait(10)

    try:
        first = step_agents_parallel_sync(
            [Stuck(model)],
            mode=mode,
            timeout=0.05,
            max_workers=1,  # type: ignore[arg-type]
        )
        assert first.outcomes[0].status == "timeout"
        start = time.monotonic()
        second = step_agents_parallel_sync(
            [Counter(model), Counter(model)],
            mode=mode,  # type: ignore[arg-type]
            timeout=2.0,
            max_workers=1,
        )
        assert second.ok, second  # not queued behind the orphan, not timed out
        assert time.monotonic() - start < 1.5
    finally:
        release.set()


@pytest.mark.parametrize("mode", MODES)
def test_agents_queued_behind_timed_out_threads_start_in_the_same_step(mode: str) -> None:
    model = Model(seed=1)
    release, finished = threading.Event(), threading.Event()

    class Stuck(Agent):
        def step(self) -> None:
            release.wait(10)  # released only after the step has returned
            finished.set()

    agents = [Stuck(model), Stuck(model)] + [Counter(model) for _ in range(4)]
    try:
        report = step_agents_parallel_sync(agents, mode=mode, timeout=0.2, max_workers=2)  # type: ignore[arg-type]
        # The step returned while both workers' threads were still stuck: the agents queued
        # behind them ran on a fresh pool instead of waiting for threads that may never return.
        assert not finished.is_set()
    finally:
        release.set()
    assert [o.status for o in report] == ["timeout", "timeout", "ok", "ok", "ok", "ok"]


# --------------------------------------------------------------------------- 6. bad timeouts


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_timeouts_are_rejected_naming_the_option(bad: float) -> None:
    model = Model(seed=1)
    calls = [
        lambda: enable_automatic_parallel_stepping(timeout=bad),
        lambda: step_agents_parallel_sync([Counter(model)], timeout=bad),
        lambda: step_agents_multithreaded([Counter(model)], timeout=bad),
        lambda: asyncio.run(step_agents_parallel([Counter(model)], timeout=bad)),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=r"mesa_llm: invalid timeout=.*finite number"):
            call()


# --------------------------------------------------------------------------- 7. bad agent lists


@pytest.mark.parametrize("mode", MODES)
def test_a_non_agent_is_rejected_before_any_agent_runs(mode: str) -> None:
    model = Model(seed=1)
    agents = [Counter(model), Counter(model), "not an agent", Counter(model)]
    with pytest.raises(TypeError, match=r"agents\[2\] is a str, not a Mesa agent"):
        step_agents_parallel_sync(agents, mode=mode)  # type: ignore[arg-type]
    assert all(a.count == 0 for a in agents if isinstance(a, Counter))


@pytest.mark.parametrize("mode", MODES)
def test_a_duplicated_agent_is_rejected_before_any_agent_runs(mode: str) -> None:
    model = Model(seed=1)
    a, b = Counter(model), Counter(model)
    with pytest.raises(ValueError, match=r"listed twice \(agents\[0\] and agents\[2\]\)"):
        step_agents_parallel_sync([a, b, a], mode=mode)  # type: ignore[arg-type]
    assert a.count == b.count == 0


@pytest.mark.parametrize("method", [None, 42, "", b"step"])
def test_the_method_must_be_a_non_empty_string(method: Any) -> None:
    model = Model(seed=1)
    agent = Counter(model)
    for mode in MODES:
        with pytest.raises(ValueError, match=r"mesa_llm: invalid method=.*non-empty string"):
            step_agents_parallel_sync([agent], method=method, mode=mode)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-empty string"):
        step_agents_multithreaded([agent], method=method)
    with pytest.raises(ValueError, match="non-empty string"):
        asyncio.run(step_agents_parallel([agent], method=method))
    assert agent.count == 0


# --------------------------------------------------------------------------- 8. blocking agents


def test_an_async_agent_blocking_the_loop_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    model = Model(seed=1)

    class Blocker(Agent):
        async def astep(self) -> str:
            await asyncio.sleep(0)
            time.sleep(0.2)  # a sync SDK call inside astep
            return "done"

    blocker, polite = Blocker(model), AsyncCounter(model)
    with caplog.at_level(logging.WARNING, logger="mesa_llm.parallel_stepping"):
        report = step_agents_parallel_sync([blocker, polite], mode="asyncio", timeout=5)
    by_id = {o.unique_id: o for o in report.outcomes}
    assert by_id[blocker.unique_id].blocked >= 0.15
    assert by_id[polite.unique_id].blocked < 0.1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert f"agent {blocker.unique_id} (Blocker.astep) blocked the event loop" in warnings[0]


# --------------------------------------------------------------------------- sequential mode


class Recorder(Agent):
    def __init__(self, model: Model, log: list[Any], fail: bool = False) -> None:
        super().__init__(model)
        self.log = log
        self.fail = fail

    def step(self) -> int:
        self.log.append(("start", self.unique_id))
        self.log.append(("end", self.unique_id))
        if self.fail:
            raise RuntimeError(f"agent {self.unique_id} failed")
        return self.unique_id


class RecModel(Model):
    def __init__(self, seed: int = 3) -> None:
        super().__init__(seed=seed)
        self.log: list[Any] = []
        for i in range(8):
            Recorder(self, self.log, fail=i % 3 == 0)

    def step(self) -> None:
        self.agents.shuffle_do("step")


def test_sequential_mode_runs_one_at_a_time_in_mesas_order_isolated_and_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reference = RecModel()
    order = [a.unique_id for a in reference.agents]
    reference.random.shuffle(order)  # what Mesa's shuffle_do draws

    model = RecModel()
    model.parallel_stepping = True
    with parallel_stepping("sequential"), caplog.at_level(logging.ERROR):
        model.step()
        report = model.last_step_report
    assert report.mode == "sequential"
    assert [o.unique_id for o in report.outcomes] == order
    # one at a time: every agent ends before the next starts
    assert model.log == [(e, uid) for uid in order for e in ("start", "end")]
    failed = {o.unique_id for o in report.failed}
    assert failed == {a.unique_id for a in model.agents if a.fail}
    assert len([r for r in caplog.records if r.name == "mesa_llm.parallel_stepping"]) == len(failed)
    assert model.random.getstate() == reference.random.getstate()
    with pytest.raises(RuntimeError, match="failed"):  # raise mode stops at the first failure
        step_agents_parallel_sync(list(model.agents), mode="sequential", on_error="raise")


def test_sequential_mode_times_out_sync_and_async_agents() -> None:
    model = Model(seed=1)
    release = threading.Event()

    class Slow(Agent):
        def step(self) -> None:
            # Held until the step has returned: however late a loaded machine lets the
            # caller see its deadline, it cannot have finished (a 0.3 s sleep could).
            release.wait(5)

    class SlowAsync(Agent):
        async def astep(self) -> None:
            await asyncio.sleep(5)

    try:
        report = step_agents_parallel_sync(
            [Slow(model), SlowAsync(model), AsyncCounter(model)], mode="sequential", timeout=0.05
        )
    finally:
        release.set()
    assert [o.status for o in report.outcomes] == ["timeout", "timeout", "ok"]


# --------------------------------------------------------------------------- last_step_report


@pytest.mark.parametrize("mode", MODES)
def test_last_step_report_is_set_by_every_step_and_cleared_on_disable(mode: str) -> None:
    model = RecModel()
    model.parallel_stepping = True
    enable_automatic_parallel_stepping(mode)  # type: ignore[arg-type]
    model.step()
    first = model.last_step_report
    assert isinstance(first, StepReport) and first.mode == mode and len(first) == 8
    model.step()
    assert model.last_step_report is not first
    disable_automatic_parallel_stepping()
    assert model.last_step_report is None


# --------------------------------------------------------------------------- issue 13: bookkeeping
# The asyncio engine counts its agents' coroutines instead of gathering their tasks; these
# are the ways a task can end that the count must still see.


async def test_agent_tasks_cancelled_by_outside_code_before_they_start_are_reported() -> None:
    """A shutdown helper cancelling every other task must not leave the step waiting forever."""
    m = Model(seed=1)
    spared: set[asyncio.Task[Any] | None] = {asyncio.current_task()}
    cancelled_by_helper: list[asyncio.Task[Any]] = []

    class Canceller(Agent):
        async def astep(self) -> str:  # cancels before its first await: the others wait to start
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task() and task not in spared:
                    task.cancel()
                    cancelled_by_helper.append(task)
            return "done"

    others = [AsyncCounter(m) for _ in range(5)]
    step = asyncio.create_task(step_agents_parallel([Canceller(m), *others]))
    spared.add(step)
    done, _ = await asyncio.wait({step}, timeout=10)
    assert done, "the step is still waiting for agents that will never run"
    report = step.result()
    # Python 3.12+ starts each agent as its task is created (eager tasks): the others'
    # tasks do not exist yet when the first agent runs, so there is nothing to cancel.
    assert len(cancelled_by_helper) == (0 if hasattr(asyncio, "eager_task_factory") else 5)
    assert report.outcomes[0].status == "ok" and report.outcomes[0].value == "done"
    cancelled = [o for o in report.outcomes[1:] if o.status == "cancelled"]
    assert len(cancelled) == len(cancelled_by_helper)
    assert all(
        isinstance(o.exception, asyncio.CancelledError) and o.usage is None for o in cancelled
    )
    assert sum(a.count for a in others) == 5 - len(cancelled)
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []


async def test_a_caller_cancelled_twice_still_waits_for_every_agent_to_end() -> None:
    """Each cancellation of the caller is passed on to the agents (as gather does), and the
    step returns only once every agent has ended: nothing outlives it."""
    m = Model(seed=1)
    ended: list[int] = []
    interrupted: list[int] = []

    class SlowCleanup(Agent):
        async def astep(self) -> None:
            try:
                await asyncio.Event().wait()
            finally:
                try:
                    await asyncio.sleep(0.05)  # cleanup, still running at the second cancel
                except asyncio.CancelledError:
                    interrupted.append(self.unique_id)
                    raise
                finally:
                    ended.append(self.unique_id)

    agents = [SlowCleanup(m) for _ in range(3)]
    task = asyncio.create_task(step_agents_parallel(agents))
    await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.sleep(0.01)
    assert not task.done() and not ended  # the first cancellation waits for the cleanups
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sorted(ended) == sorted(interrupted) == sorted(a.unique_id for a in agents)
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []


async def test_a_task_factory_that_delays_first_steps_still_gets_every_outcome() -> None:
    loop = asyncio.get_running_loop()

    async def later(coro: Any) -> Any:
        await asyncio.sleep(0.01)  # the agent's coroutine starts a while after its task
        return await coro

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        return asyncio.Task(later(coro), loop=loop, **kwargs)

    m = Model(seed=1)
    agents = [AsyncCounter(m) for _ in range(4)]
    loop.set_task_factory(factory)
    try:
        report = await step_agents_parallel(agents)
    finally:
        loop.set_task_factory(None)
    assert report.ok and [o.agent for o in report] == agents
    assert [a.count for a in agents] == [1, 1, 1, 1]


async def test_an_agent_that_blocks_then_raises_without_awaiting_reports_the_block() -> None:
    m = Model(seed=1)

    class BlockThenFail(Agent):
        async def astep(self) -> None:
            time.sleep(0.05)  # holds the loop in the first (and only) send
            raise RuntimeError("boom")

    (outcome,) = (await step_agents_parallel([BlockThenFail(m)])).outcomes
    assert outcome.status == "error" and isinstance(outcome.exception, RuntimeError)
    assert outcome.blocked >= 0.05 and outcome.elapsed >= outcome.blocked


async def test_an_agent_cancelled_from_outside_after_blocking_the_loop_reports_the_block() -> None:
    m = Model(seed=1)
    held = asyncio.Event()

    class BlockThenWait(Agent):
        task: asyncio.Task[Any] | None = None

        async def astep(self) -> None:
            self.task = asyncio.current_task()
            await asyncio.sleep(0)
            time.sleep(0.05)  # holds the loop
            held.set()
            await asyncio.Event().wait()

    blocker = BlockThenWait(m)
    step = asyncio.ensure_future(step_agents_parallel([blocker]))
    await held.wait()
    assert blocker.task is not None
    blocker.task.cancel()  # from outside the step
    (outcome,) = (await step).outcomes
    assert outcome.status == "cancelled"
    assert outcome.blocked >= 0.05 and outcome.elapsed >= outcome.blocked


async def test_a_garbage_collection_inside_an_agent_is_not_counted_as_blocking_the_loop() -> None:
    m = Model(seed=1)
    heap = [(i, str(i)) for i in range(300_000)]  # so a full collection takes a while

    collecting = [0.0, 0.0]  # start of the running collection, seconds collected in all

    def timed(phase: str, info: Any) -> None:
        if phase == "start":
            collecting[0] = time.perf_counter()
        else:
            collecting[1] += time.perf_counter() - collecting[0]

    class Collects(Agent):
        async def astep(self) -> None:
            await asyncio.sleep(0)
            gc.collect()  # as if its allocations had set off a full collection
            time.sleep(0.02)  # and a real block of its own

    gc.callbacks.append(timed)
    try:
        (outcome,) = (await step_agents_parallel([Collects(m)])).outcomes
    finally:
        gc.callbacks.remove(timed)
    assert len(heap) == 300_000 and collecting[1] > 0
    assert 0.02 <= outcome.blocked < outcome.elapsed - 0.5 * collecting[1]


def test_token_usage_adds_from_many_threads_are_exact() -> None:
    from mesa_llm.parallel_stepping import TokenUsage

    shared, own = TokenUsage(), [TokenUsage() for _ in range(8)]

    def add(i: int) -> None:
        for _ in range(2000):
            shared.add("m", 2, 1)
            own[i].add("m", 1, 1)

    threads = [threading.Thread(target=add, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (shared.prompt_tokens, shared.completion_tokens, shared.calls) == (32000, 16000, 16000)
    assert shared.by_model == {"m": [32000, 16000, 16000]}
    assert all(u.to_dict()["by_model"] == {"m": [2000, 2000, 2000]} for u in own)
