"""mesa_llm.parallel_stepping through its public API, in both modes, on real Mesa models."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import threading
import time
from typing import Any

import mesa
import pytest
from mesa import Agent, Model

from mesa_llm import AgentMethodMissingError, AgentTimeoutError
from mesa_llm.parallel_stepping import (
    AgentOutcome,
    StepReport,
    automatic_stepping_settings,
    current_agent,
    disable_automatic_parallel_stepping,
    enable_automatic_parallel_stepping,
    parallel_stepping,
    step_agents_multithreaded,
    step_agents_parallel,
    step_agents_parallel_sync,
)

MODES = ["asyncio", "threading"]


# --------------------------------------------------------------------------- models


class DummyModel(Model):
    def __init__(self, seed: int = 42) -> None:
        super().__init__(seed=seed)


class FailingAgent(Agent):
    async def astep(self) -> None:
        raise RuntimeError("LLM timeout")


class WorkingAgent(Agent):
    def __init__(self, model: Model) -> None:
        super().__init__(model)
        self.counter = 0

    async def astep(self) -> None:
        self.counter += 1


class SyncFailingAgent(Agent):
    def step(self) -> None:
        raise RuntimeError("LLM timeout")


class SyncWorkingAgent(Agent):
    def __init__(self, model: Model) -> None:
        super().__init__(model)
        self.counter = 0

    def step(self) -> None:
        self.counter += 1


class RecordingAgent(Agent):
    """Records which agent the library says is running, and returns its own id."""

    def __init__(self, model: Model, log: list[Any]) -> None:
        super().__init__(model)
        self.log = log

    async def astep(self, *args: Any, **kwargs: Any) -> Any:
        self.log.append((self.unique_id, current_agent(), args, kwargs))
        await asyncio.sleep(0)
        assert current_agent() is self
        return self.unique_id

    def step(self, *args: Any, **kwargs: Any) -> Any:
        self.log.append((self.unique_id, current_agent(), args, kwargs))
        return self.unique_id


class SeqModel(Model):
    """A model whose agents record their stepping order; the flag decides parallel or not."""

    def __init__(self, n: int = 12, seed: int = 7, parallel: bool = True) -> None:
        super().__init__(seed=seed)
        self.parallel_stepping = parallel
        self.log: list[Any] = []
        for _ in range(n):
            RecordingAgent(self, self.log)

    def step(self) -> None:
        self.agents.shuffle_do("step")


def _seed_002_agents() -> tuple[FailingAgent, WorkingAgent]:
    m = DummyModel()
    return FailingAgent(m), WorkingAgent(m)


# --------------------------------------------------------------------------- 1. isolation


async def test_seed_002_step_agents_parallel_isolates_failure() -> None:
    failing, working = _seed_002_agents()
    report = await step_agents_parallel([failing, working])
    assert working.counter == 1
    assert not report.ok
    assert [o.status for o in report.outcomes] == ["error", "ok"]
    assert isinstance(report.errors[failing.unique_id], RuntimeError)
    assert str(report.errors[failing.unique_id]) == "LLM timeout"


def test_seed_002_step_agents_multithreaded_isolates_failure() -> None:
    failing, working = _seed_002_agents()
    report = step_agents_multithreaded([failing, working])
    assert working.counter == 1
    assert isinstance(report.errors[failing.unique_id], RuntimeError)
    assert report.failed[0].agent is failing


@pytest.mark.parametrize("mode", MODES)
def test_seed_002_sync_wrapper_isolates_failure(mode: str) -> None:
    enable_automatic_parallel_stepping(mode=mode)  # type: ignore[arg-type]
    failing, working = _seed_002_agents()
    report = step_agents_parallel_sync([failing, working])
    assert report.mode == mode
    assert working.counter == 1
    assert isinstance(report.errors[failing.unique_id], RuntimeError)


@pytest.mark.parametrize("mode", MODES)
def test_seed_002_automatic_shuffle_do_isolates_failure(mode: str) -> None:
    enable_automatic_parallel_stepping(mode=mode)  # type: ignore[arg-type]
    model = DummyModel()
    model.parallel_stepping = True
    failing, working = FailingAgent(model), WorkingAgent(model)
    result = model.agents.shuffle_do("step")
    assert result is model.agents
    assert working.counter == 1
    report = model.last_step_report
    assert isinstance(report.errors[failing.unique_id], RuntimeError)
    assert {o.unique_id for o in report.succeeded} == {working.unique_id}


async def test_seed_002_do_async_isolates_failure(capsys: pytest.CaptureFixture[str]) -> None:
    enable_automatic_parallel_stepping()
    failing, working = _seed_002_agents()
    report = await failing.model.agents.do_async("step")
    assert isinstance(report, StepReport)
    assert working.counter == 1
    assert isinstance(report.errors[failing.unique_id], RuntimeError)
    assert capsys.readouterr().out == ""  # never prints


@pytest.mark.parametrize("mode", MODES)
def test_every_failure_logged_once_with_agent_details(
    mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    m = DummyModel()
    agents = [SyncFailingAgent(m), SyncWorkingAgent(m), SyncFailingAgent(m)]
    with caplog.at_level(logging.ERROR, logger="mesa_llm.parallel_stepping"):
        report = step_agents_parallel_sync(agents, mode=mode)  # type: ignore[arg-type]
    records = [r for r in caplog.records if r.name == "mesa_llm.parallel_stepping"]
    assert len(records) == 2 == len(report.failed)
    for record, agent in zip(records, [agents[0], agents[2]], strict=True):
        text = record.getMessage()
        assert f"agent {agent.unique_id}" in text
        assert "SyncFailingAgent.step" in text and "RuntimeError: LLM timeout" in text
        assert record.exc_info is not None and record.exc_info[1] is report.errors[agent.unique_id]


# --------------------------------------------------------------------------- 2. raise mode


class SlowAgent(Agent):
    def __init__(self, model: Model) -> None:
        super().__init__(model)
        self.started = self.finished = self.cancelled = False

    async def astep(self) -> None:
        self.started = True
        try:
            await asyncio.sleep(10)
            self.finished = True
        except asyncio.CancelledError:
            self.cancelled = True
            raise


async def test_raise_mode_asyncio_raises_original_and_cancels_the_rest() -> None:
    m = DummyModel()
    slow = [SlowAgent(m) for _ in range(3)]
    failing = FailingAgent(m)
    with pytest.raises(RuntimeError, match="LLM timeout") as info:
        await step_agents_parallel([*slow, failing], on_error="raise")
    exc = info.value
    assert any(f"agent {failing.unique_id}" in n and "astep" not in n for n in exc.__notes__)
    assert any("FailingAgent.step" in n for n in exc.__notes__)
    # the traceback still reaches into the agent's own frame
    tb, frames = exc.__traceback__, []
    while tb is not None:
        frames.append(tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    assert "astep" in frames
    assert all(a.started and a.cancelled and not a.finished for a in slow)
    pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert pending == []


def test_raise_mode_threading_finishes_running_and_skips_unstarted() -> None:
    m = DummyModel()
    gate = threading.Event()
    ran: list[int] = []

    class Blocker(Agent):
        def step(self) -> None:
            ran.append(self.unique_id)
            gate.wait(5)

    class Boom(Agent):
        def step(self) -> None:
            gate.set()
            raise ValueError("bad JSON")

    blocker, boom = Blocker(m), Boom(m)
    later = [SyncWorkingAgent(m) for _ in range(5)]
    with pytest.raises(ValueError, match="bad JSON") as info:
        step_agents_multithreaded([blocker, boom, *later], on_error="raise", max_workers=2)
    assert any(f"agent {boom.unique_id}" in n for n in info.value.__notes__)
    assert ran == [blocker.unique_id]  # the running one finished before the raise
    assert sum(a.counter for a in later) < len(later)  # not every later agent was started


@pytest.mark.parametrize("mode", MODES)
def test_raise_mode_sync_wrapper_works_with_pytest_raises(mode: str) -> None:
    enable_automatic_parallel_stepping(mode=mode, on_error="raise")  # type: ignore[arg-type]
    failing, working = _seed_002_agents()
    with pytest.raises(RuntimeError, match="LLM timeout"):
        step_agents_parallel_sync([working, failing])


# --------------------------------------------------------------------------- 3. BaseException


class InterruptingAgent(Agent):
    async def astep(self) -> None:
        await asyncio.sleep(0)
        raise KeyboardInterrupt

    def step(self) -> None:
        raise KeyboardInterrupt


async def test_keyboard_interrupt_from_agent_propagates_after_cancelling_others() -> None:
    m = DummyModel()
    slow = [SlowAgent(m) for _ in range(3)]
    with pytest.raises(KeyboardInterrupt):
        await step_agents_parallel([*slow, InterruptingAgent(m)])
    assert all(a.cancelled for a in slow)
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []


def test_keyboard_interrupt_from_agent_threading_propagates() -> None:
    m = DummyModel()
    working = [SyncWorkingAgent(m) for _ in range(3)]
    with pytest.raises(KeyboardInterrupt):
        step_agents_multithreaded([InterruptingAgent(m), *working], max_workers=1)
    # one worker: the interrupt stops agents that had not started yet
    assert sum(a.counter for a in working) == 0


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
@pytest.mark.parametrize("mode", MODES)
def test_base_exceptions_propagate_through_sync_wrapper(mode: str, exc_type: type) -> None:
    m = DummyModel()

    class Raiser(Agent):
        def step(self) -> None:
            raise exc_type

    with pytest.raises(exc_type):
        step_agents_parallel_sync([Raiser(m), SyncWorkingAgent(m)], mode=mode)  # type: ignore[arg-type]
    # and the library is still usable afterwards
    assert step_agents_parallel_sync([SyncWorkingAgent(m)], mode=mode).ok  # type: ignore[arg-type]


async def test_cancelling_the_caller_cancels_and_awaits_agents() -> None:
    m = DummyModel()
    slow = [SlowAgent(m) for _ in range(4)]
    task = asyncio.create_task(step_agents_parallel(slow))
    while not all(a.started for a in slow):
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert all(a.cancelled and not a.finished for a in slow)
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []


def test_no_task_destroyed_warnings_or_leftover_threads(recwarn: pytest.WarningsRecorder) -> None:
    before = {t for t in threading.enumerate()}
    for mode in MODES:
        enable_automatic_parallel_stepping(mode=mode)  # type: ignore[arg-type]
        failing, working = _seed_002_agents()
        step_agents_parallel_sync([failing, working])
        disable_automatic_parallel_stepping()
    deadline = time.monotonic() + 5
    while {t for t in threading.enumerate()} - before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert {t.name for t in threading.enumerate()} - {t.name for t in before} == set()
    assert not [w for w in recwarn if "destroyed" in str(w.message)]


# --------------------------------------------------------------------------- 4. timeouts


async def test_asyncio_timeout_cancels_agent_and_reports_timeout() -> None:
    m = DummyModel()
    slow, working = SlowAgent(m), WorkingAgent(m)
    report = await step_agents_parallel([slow, working], timeout=0.05)
    assert [o.status for o in report.outcomes] == ["timeout", "ok"]
    exc = report.errors[slow.unique_id]
    assert isinstance(exc, AgentTimeoutError) and isinstance(exc, TimeoutError)
    assert "timeout=0.05" in str(exc)
    assert slow.cancelled and not slow.finished


def test_threading_timeout_returns_without_waiting_for_the_thread() -> None:
    m = DummyModel()
    release = threading.Event()
    done = threading.Event()

    class Stuck(Agent):
        def step(self) -> None:
            release.wait(10)
            done.set()

    stuck, working = Stuck(m), SyncWorkingAgent(m)
    report = step_agents_multithreaded([stuck, working], timeout=0.05)
    # the call returned while the stuck thread was still blocked
    assert not done.is_set()
    assert [o.status for o in report.outcomes] == ["timeout", "ok"]
    assert isinstance(report.errors[stuck.unique_id], AgentTimeoutError)
    release.set()
    assert done.wait(5)  # the abandoned thread finishes in the background


def test_threading_timeout_cancels_async_agents_on_worker_loop() -> None:
    m = DummyModel()
    slow = SlowAgent(m)
    report = step_agents_multithreaded([slow], timeout=0.05)
    assert report.outcomes[0].status == "timeout"
    assert slow.cancelled


@pytest.mark.parametrize("mode", ["sequential", *MODES])
def test_an_agent_that_swallows_its_timeout_is_still_reported_as_timed_out(mode: str) -> None:
    m = DummyModel()

    class Swallows(Agent):
        async def astep(self) -> str:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                return "carried on"
            return "finished"

    swallows, working = Swallows(m), WorkingAgent(m)
    report = step_agents_parallel_sync([swallows, working], mode=mode, timeout=0.05)  # type: ignore[arg-type]
    assert [o.status for o in report.outcomes] == ["timeout", "ok"]
    assert isinstance(report.errors[swallows.unique_id], AgentTimeoutError)


async def test_agent_raising_its_own_timeout_error_is_an_error_not_a_timeout() -> None:
    m = DummyModel()

    class OwnTimeout(Agent):
        async def astep(self) -> None:
            raise TimeoutError("provider said so")

    report = await step_agents_parallel([OwnTimeout(m)], timeout=5)
    assert report.outcomes[0].status == "error"


# --------------------------------------------------------------------------- 5. limits


async def test_max_concurrency_bounds_agents_in_flight() -> None:
    m = DummyModel()
    state = {"now": 0, "peak": 0}

    class Counted(Agent):
        async def astep(self) -> None:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
            await asyncio.sleep(0.001)
            state["now"] -= 1

    report = await step_agents_parallel([Counted(m) for _ in range(50)], max_concurrency=5)
    assert report.ok and len(report) == 50
    assert state["peak"] == 5


def test_max_workers_sizes_the_pool_and_the_pool_is_reused() -> None:
    m = DummyModel()
    threads: list[set[int]] = []
    seen: set[int] = set()
    lock = threading.Lock()

    class Where(Agent):
        def step(self) -> None:
            time.sleep(0.002)
            with lock:
                seen.add(threading.get_ident())

    agents = [Where(m) for _ in range(30)]
    for _ in range(3):
        seen.clear()
        assert step_agents_multithreaded(agents, max_workers=4).ok
        threads.append(set(seen))
    all_threads = set().union(*threads)
    assert len(all_threads) <= 4  # never more than max_workers, across all steps


# --------------------------------------------------------------------------- 6. asyncio mode


async def test_sync_agents_run_in_threads_without_blocking_the_loop() -> None:
    m = DummyModel()

    class Sleeper(Agent):
        def step(self) -> None:
            time.sleep(0.05)

    start = time.perf_counter()
    report = await step_agents_parallel([Sleeper(m) for _ in range(20)])
    elapsed = time.perf_counter() - start
    assert report.ok
    assert elapsed < 0.8  # sequential would be 1.0 s: coarse "is it parallel at all"


@pytest.mark.parametrize("mode", MODES)
def test_agent_without_method_is_an_error_outcome(mode: str) -> None:
    m = DummyModel()

    class Mute(Agent):
        pass

    mute, working = Mute(m), SyncWorkingAgent(m)
    report = step_agents_parallel_sync([mute, working], mode=mode, method="speak")  # type: ignore[arg-type]
    assert working.counter == 0  # method "speak" missing on both
    assert len(report.failed) == 2
    exc = report.errors[mute.unique_id]
    assert isinstance(exc, AgentMethodMissingError)
    assert "'aspeak' or 'speak'" in str(exc) and "Mute" in str(exc)


# --------------------------------------------------------------------------- 7./8. loops


def test_threading_mode_reuses_one_loop_per_worker_across_steps() -> None:
    m = DummyModel()
    loops: list[int] = []

    class LoopSpy(Agent):
        async def astep(self) -> None:
            loops.append(id(asyncio.get_running_loop()))

    agents = [LoopSpy(m) for _ in range(8)]
    for _ in range(5):
        assert step_agents_multithreaded(agents, max_workers=2).ok
    assert len(loops) == 40
    assert len(set(loops)) <= 2  # one loop per worker thread, never one per agent per step


@pytest.mark.parametrize("automatic", [False, True])
def test_asyncio_mode_uses_one_event_loop_across_steps(automatic: bool) -> None:
    loops: list[int] = []

    class LoopSpy(Agent):
        async def astep(self) -> None:
            loops.append(id(asyncio.get_running_loop()))

    enable_automatic_parallel_stepping("asyncio")
    m = DummyModel()
    m.parallel_stepping = True
    agents = [LoopSpy(m) for _ in range(3)]
    for _ in range(4):
        if automatic:
            m.agents.shuffle_do("step")
        else:
            step_agents_parallel_sync(agents)
    assert len(loops) == 12 and len(set(loops)) == 1


# --------------------------------------------------------------------------- 9. running loop


@pytest.mark.parametrize("mode", MODES)
async def test_sync_wrapper_inside_running_loop_reports_runtime_error_as_agent_failure(
    mode: str,
) -> None:
    enable_automatic_parallel_stepping(mode=mode)  # type: ignore[arg-type]
    failing, working = _seed_002_agents()
    report = step_agents_parallel_sync([failing, working])
    assert working.counter == 1
    assert isinstance(report.errors[failing.unique_id], RuntimeError)
    # automatic stepping from inside a running loop, too
    model = failing.model
    model.parallel_stepping = True
    model.agents.shuffle_do("step")
    assert working.counter == 2
    assert isinstance(model.last_step_report.errors[failing.unique_id], RuntimeError)


# --------------------------------------------------------------------------- 10. faithful to Mesa


@pytest.mark.parametrize("mode", MODES)
def test_shuffle_order_and_rng_state_match_a_sequential_run(mode: str) -> None:
    sequential = SeqModel(parallel=False)
    parallel = SeqModel(parallel=True)
    enable_automatic_parallel_stepping(mode=mode)  # type: ignore[arg-type]
    for _ in range(3):
        sequential.log.clear()
        sequential.step()
        parallel.step()
        order = [uid for uid, *_ in sequential.log]
        assert [o.unique_id for o in parallel.last_step_report.outcomes] == order
        assert [o.value for o in parallel.last_step_report.outcomes] == order
        assert parallel.random.getstate() == sequential.random.getstate()
    assert sequential.last_step_report is None  # Mesa stepped it: no stale report


@pytest.mark.parametrize("mode", MODES)
def test_shuffle_do_forwards_args_and_kwargs_for_any_method_name(mode: str) -> None:
    class Voter(Agent):
        def __init__(self, model: Model) -> None:
            super().__init__(model)
            self.got: Any = None

        async def avote(self, topic: str, *, weight: int = 1) -> str:
            self.got = (topic, weight, current_agent() is self)
            return topic

    enable_automatic_parallel_stepping(mode=mode)  # type: ignore[arg-type]
    m = DummyModel()
    m.parallel_stepping = True
    voters = [Voter(m) for _ in range(4)]
    assert m.agents.shuffle_do("vote", "tax", weight=3) is m.agents
    assert all(v.got == ("tax", 3, True) for v in voters)
    assert m.last_step_report.method == "vote"


def test_flag_off_or_callable_method_is_exactly_mesa() -> None:
    enable_automatic_parallel_stepping()
    m = SeqModel(parallel=False)
    m.step()
    assert m.last_step_report is None  # Mesa stepped it: no report, and none stale
    assert all(cur is None for _, cur, *_ in m.log)  # ran sequentially, outside our machinery
    m.parallel_stepping = True
    seen: list[Any] = []
    m.agents.shuffle_do(lambda agent, x: seen.append((agent.unique_id, x)), 5)
    assert len(seen) == 12 and m.last_step_report is None


def test_enable_is_idempotent_and_disable_restores_exact_originals() -> None:
    patched_types = [mesa.agent.AgentSet]
    try:
        from mesa.agentset import _HardKeyAgentSet  # Mesa >= 3.5

        patched_types.append(_HardKeyAgentSet)
    except ImportError:
        pass
    originals = {cls: cls.__dict__["shuffle_do"] for cls in patched_types}
    enable_automatic_parallel_stepping()
    first = {cls: cls.__dict__["shuffle_do"] for cls in patched_types}
    enable_automatic_parallel_stepping("threading")
    assert {cls: cls.__dict__["shuffle_do"] for cls in patched_types} == first
    assert all(first[cls] is not originals[cls] for cls in patched_types)
    assert hasattr(mesa.agent.AgentSet, "do_async")
    disable_automatic_parallel_stepping()
    disable_automatic_parallel_stepping()
    assert all(cls.__dict__["shuffle_do"] is originals[cls] for cls in patched_types)
    assert not hasattr(mesa.agent.AgentSet, "do_async")


def test_automatic_stepping_settings_reports_the_enabled_mode_and_restores_it() -> None:
    assert automatic_stepping_settings() is None
    enable_automatic_parallel_stepping("threading", timeout=2.5, max_workers=4)
    chosen = automatic_stepping_settings()
    assert chosen == {
        "mode": "threading",
        "on_error": "isolate",
        "timeout": 2.5,
        "max_concurrency": None,
        "max_workers": 4,
    }
    with parallel_stepping("sequential", on_error="raise"):
        assert automatic_stepping_settings() == {
            **chosen,
            "mode": "sequential",
            "on_error": "raise",
            "timeout": None,
            "max_workers": None,
        }
    assert automatic_stepping_settings() == chosen  # the block put the outer mode back
    assert chosen is not None
    disable_automatic_parallel_stepping()
    assert automatic_stepping_settings() is None
    enable_automatic_parallel_stepping(**chosen)  # the keys are enable's keywords
    m = SeqModel(n=3)
    m.step()
    assert m.last_step_report.mode == "threading" and m.last_step_report.ok
    disable_automatic_parallel_stepping()


def test_model_agents_set_type_is_patched_on_every_mesa_version() -> None:
    """On Mesa >= 3.5 model.agents is a _HardKeyAgentSet, which is not an AgentSet."""
    enable_automatic_parallel_stepping()
    m = SeqModel(n=3)
    assert getattr(type(m.agents).shuffle_do, "__mesa_llm_patched__", False)
    m.step()
    assert m.last_step_report.ok and len(m.last_step_report) == 3
    # and agent sets built by the user (AgentSet) too
    subset = m.agents.select(lambda a: a.unique_id != 1)
    subset.shuffle_do("step")
    assert len(m.last_step_report) == 2


@pytest.mark.subprocess
def test_import_mesa_llm_patches_nothing() -> None:
    code = (
        "import mesa.agent, mesa_llm, mesa_llm.parallel_stepping, sys\n"
        "assert not hasattr(mesa.agent.AgentSet.shuffle_do, '__mesa_llm_patched__')\n"
        "assert not hasattr(mesa.agent.AgentSet, 'do_async')\n"
        "assert 'litellm' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_parallel_stepping_context_manager_restores_previous_state() -> None:
    m = SeqModel(n=4)
    with parallel_stepping("threading", max_workers=2):
        m.step()
        assert m.last_step_report.mode == "threading"
        with parallel_stepping("asyncio"):
            m.step()
            assert m.last_step_report.mode == "asyncio"
        m.step()
        assert m.last_step_report.mode == "threading"
    del m.last_step_report
    m.step()
    assert not hasattr(m, "last_step_report")  # back to plain Mesa


# --------------------------------------------------------------------------- 12. bad input


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "processes"}, "mode='processes'; valid values are 'asyncio', 'threading'"),
        ({"on_error": "ignore"}, "on_error='ignore'; valid values are 'isolate', 'raise'"),
        ({"timeout": 0}, "timeout=0"),
        ({"timeout": -1.5}, "timeout=-1.5"),
        ({"max_workers": 0}, "max_workers=0; expected an integer >= 1"),
        ({"max_concurrency": 0}, "max_concurrency=0; expected an integer >= 1"),
        ({"max_concurrency": 2.5}, "max_concurrency=2.5"),
    ],
)
def test_bad_options_name_the_argument_and_valid_values(
    kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match="mesa_llm: invalid ") as info:
        enable_automatic_parallel_stepping(**kwargs)
    assert message in str(info.value)
    with pytest.raises(ValueError):
        step_agents_parallel_sync([], **kwargs)


async def test_bad_options_on_the_direct_calls() -> None:
    with pytest.raises(ValueError, match="on_error"):
        await step_agents_parallel([], on_error="skip")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_workers"):
        step_agents_multithreaded([], max_workers=-1)
    with pytest.raises(TypeError, match="agents must be"):
        await step_agents_parallel(None)  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", MODES)
def test_empty_agent_set_gives_empty_report(mode: str) -> None:
    m = DummyModel()
    report = step_agents_parallel_sync(m.agents, mode=mode)  # type: ignore[arg-type]
    assert report.outcomes == [] and report.ok and str(report).startswith("StepReport")


# --------------------------------------------------------------------------- 13. current_agent


@pytest.mark.parametrize("mode", MODES)
def test_current_agent_in_async_and_sync_agents(mode: str) -> None:
    m = DummyModel()
    seen: list[tuple[Any, Any]] = []

    class AsyncSpy(Agent):
        async def astep(self) -> None:
            await asyncio.sleep(0)
            seen.append((self, current_agent()))

    class SyncSpy(Agent):
        def step(self) -> None:
            seen.append((self, current_agent()))

    agents = [AsyncSpy(m), SyncSpy(m), AsyncSpy(m), SyncSpy(m)]
    assert step_agents_parallel_sync(agents, mode=mode).ok  # type: ignore[arg-type]
    assert len(seen) == 4
    assert all(me is current for me, current in seen)
    assert current_agent() is None


# --------------------------------------------------------------------------- report API


async def test_step_report_api() -> None:
    m = DummyModel()
    agents = [WorkingAgent(m), FailingAgent(m), WorkingAgent(m)]
    report = await step_agents_parallel(agents)
    assert [o.agent for o in report.outcomes] == agents
    assert [o.agent for o in report.succeeded] == [agents[0], agents[2]]
    assert [o.unique_id for o in report.failed] == [agents[1].unique_id]
    assert all(isinstance(o, AgentOutcome) and o.elapsed >= 0 for o in report)
    assert report.outcomes[1].exception is report.errors[agents[1].unique_id]
    text = str(report)
    assert "3 agents, 2 ok, 1 failed" in text and "FailingAgent" in text and "LLM timeout" in text
    with pytest.raises(ExceptionGroup) as info:
        report.raise_for_failures()
    (only,) = info.value.exceptions
    assert isinstance(only, RuntimeError)
    assert any(f"agent {agents[1].unique_id}" in n for n in only.__notes__)
    ok_report = await step_agents_parallel(agents[::2])
    assert ok_report.ok and ok_report.raise_for_failures() is None


async def test_plan_in_parallel_commit_in_order() -> None:
    """The pattern the report enables: values come back in start order."""
    m = DummyModel()

    class Planner(Agent):
        async def astep(self) -> int:
            await asyncio.sleep(0.001 * (10 - self.unique_id))  # finish in reverse order
            return self.unique_id * 10

    agents = [Planner(m) for _ in range(5)]
    report = await step_agents_parallel(agents)
    assert [o.value for o in report.succeeded] == [a.unique_id * 10 for a in agents]


# --------------------------------------------------------------------------- review regressions


class SlowSyncAgent(Agent):
    """A sync agent still busy when the step is aborted; it cannot be interrupted."""

    def __init__(self, model: Model) -> None:
        super().__init__(model)
        self.finished = False

    def step(self) -> None:
        time.sleep(0.2)
        self.finished = True


class SlowCleanupAgent(Agent):
    """An async agent whose cancellation takes a while to complete."""

    def __init__(self, model: Model) -> None:
        super().__init__(model)
        self.cleaned_up = False

    async def astep(self) -> None:
        try:
            await asyncio.sleep(10)
        finally:
            await asyncio.sleep(0.05)
            self.cleaned_up = True


@pytest.mark.parametrize("trigger", ["raise_mode", "keyboard_interrupt", "caller_cancelled"])
async def test_nothing_still_runs_when_an_aborted_asyncio_step_returns(trigger: str) -> None:
    m = DummyModel()
    sync_agent, async_agent = SlowSyncAgent(m), SlowCleanupAgent(m)
    agents: list[Agent] = [sync_agent, async_agent]
    if trigger == "raise_mode":
        agents.append(FailingAgent(m))
        with pytest.raises(RuntimeError):
            await step_agents_parallel(agents, on_error="raise")
    elif trigger == "keyboard_interrupt":
        agents.append(InterruptingAgent(m))
        with pytest.raises(KeyboardInterrupt):
            await step_agents_parallel(agents)
    else:
        task = asyncio.create_task(step_agents_parallel(agents))
        await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert sync_agent.finished and async_agent.cleaned_up
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []


def test_nothing_still_runs_when_the_sync_wrapper_raises() -> None:
    m = DummyModel()
    sync_agent, async_agent = SlowSyncAgent(m), SlowCleanupAgent(m)
    with pytest.raises(RuntimeError):
        step_agents_parallel_sync([sync_agent, async_agent, FailingAgent(m)], on_error="raise")
    assert sync_agent.finished and async_agent.cleaned_up


async def test_a_sync_agent_raising_stop_iteration_is_reported_not_hung() -> None:
    m = DummyModel()

    class Exhausted(Agent):
        def step(self) -> None:
            next(iter([]))

    working = SyncWorkingAgent(m)
    report = await asyncio.wait_for(step_agents_parallel([Exhausted(m), working]), 5)
    assert [o.status for o in report.outcomes] == ["error", "ok"]
    assert isinstance(report.outcomes[0].exception, StopIteration)
    threaded = step_agents_multithreaded([Exhausted(m)])
    assert isinstance(threaded.outcomes[0].exception, StopIteration)


@pytest.mark.parametrize("mode", MODES)
def test_a_sync_agents_timeout_counts_from_its_start_not_its_queueing(mode: str) -> None:
    m = DummyModel()
    ran_after: list[int] = []
    returned = threading.Event()

    class Short(Agent):
        def step(self) -> None:
            time.sleep(0.02)
            if returned.is_set():
                ran_after.append(self.unique_id)

    # 25 rounds of 2 workers: the last start at ~0.5 s, past the timeout counted from queueing
    # (a loaded machine only starts it later), while each agent runs 0.02 s: a 20x margin
    # under its own timeout, so a stall of the process (seen: one of 50 runs under load
    # timed out at 0.1 s per agent) does not time it out.
    agents = [Short(m) for _ in range(50)]
    report = step_agents_parallel_sync(agents, mode=mode, timeout=0.4, max_workers=2)  # type: ignore[arg-type]
    returned.set()
    assert [o.status for o in report.outcomes] == ["ok"] * 50
    time.sleep(0.2)
    assert ran_after == []


NESTED_STEPS = """
import asyncio
from mesa import Agent, Model
from mesa_llm.parallel_stepping import (
    enable_automatic_parallel_stepping, step_agents_multithreaded, step_agents_parallel_sync,
)

class Leaf(Agent):
    def step(self):
        return "leaf"

class Group(Agent):
    def __init__(self, model, mode):
        super().__init__(model)
        self.mode = mode
        self.leaves = [Leaf(model) for _ in range(3)]

    def step(self):  # a nested step, from inside a worker thread
        if self.mode == "threading":
            report = step_agents_multithreaded(self.leaves, max_workers=2)
        else:
            report = step_agents_parallel_sync(self.leaves, mode="asyncio", max_workers=2)
        return [o.value for o in report.outcomes]

class AsyncGroup(Agent):
    async def astep(self):  # automatic shuffle_do nested inside an async agent
        self.model.sub.shuffle_do("step")
        return "async-group"

for mode in ("threading", "asyncio"):
    model = Model(seed=1)
    groups = [Group(model, mode) for _ in range(2)]
    report = step_agents_parallel_sync(groups, mode=mode, max_workers=2)
    assert [o.value for o in report.outcomes] == [["leaf"] * 3] * 2, report

enable_automatic_parallel_stepping("asyncio")
model = Model(seed=1)
model.parallel_stepping = True
model.sub = model.agents.select(lambda a: False)
asyncio_groups = [AsyncGroup(model) for _ in range(2)]
model.sub = model.agents.select(lambda a: False)
model.sub.add(Leaf(model))
report = step_agents_parallel_sync(asyncio_groups)
assert [o.value for o in report.outcomes] == ["async-group"] * 2, report
print("nested ok")
"""


def test_nested_steps_do_not_deadlock_the_pool() -> None:
    """A step started from inside an agent's step uses pools of its own nesting depth."""
    result = subprocess.run(
        [sys.executable, "-c", NESTED_STEPS], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "nested ok" in result.stdout


@pytest.mark.parametrize("mode", MODES)
def test_disable_waits_for_a_step_running_in_another_thread(mode: str) -> None:
    m = DummyModel()
    started = threading.Event()

    class Slow(Agent):
        def step(self) -> str:
            started.set()
            time.sleep(0.2)
            return "done"

    enable_automatic_parallel_stepping(mode)  # type: ignore[arg-type]
    reports: list[StepReport] = []
    stepper = threading.Thread(
        target=lambda: reports.append(step_agents_parallel_sync([Slow(m), Slow(m)]))
    )
    stepper.start()
    assert started.wait(5)
    disable_automatic_parallel_stepping()  # must not cancel the step in flight
    stepper.join(5)
    assert len(reports) == 1 and [o.value for o in reports[0].outcomes] == ["done", "done"]


@pytest.mark.parametrize("mode", MODES)
def test_disable_from_inside_an_agent_is_a_clear_error(mode: str) -> None:
    m = DummyModel()

    class Disabler(Agent):
        def step(self) -> None:
            disable_automatic_parallel_stepping()

    enable_automatic_parallel_stepping(mode)  # type: ignore[arg-type]
    report = step_agents_parallel_sync([Disabler(m)])
    exc = report.outcomes[0].exception
    assert isinstance(exc, RuntimeError)
    assert "called from inside an agent's step" in str(exc)


# --------------------------------------------------------------------------- start order (issue 13)


class OrderAgent(Agent):
    """Records when its step starts and resumes; every third agent never suspends."""

    def __init__(self, model: Model, events: list[tuple[str, int]]) -> None:
        super().__init__(model)
        self.events = events

    async def astep(self) -> str:
        self.events.append(("start", self.unique_id))
        assert current_agent() is self
        if self.unique_id % 3:
            await asyncio.sleep(0)
            assert current_agent() is self
            self.events.append(("resume", self.unique_id))
        return f"done {self.unique_id}"


def test_asyncio_mode_starts_agents_in_the_given_order_with_or_without_eager_tasks() -> None:
    """On Python 3.12+ agents start eagerly as their tasks are created: the order is the same."""
    events: list[tuple[str, int]] = []
    model = DummyModel()
    agents = [OrderAgent(model, events) for _ in range(9)]
    shuffled = [agents[i] for i in (4, 0, 8, 2, 6, 1, 7, 3, 5)]
    report = asyncio.run(step_agents_parallel(shuffled))
    ids = [a.unique_id for a in shuffled]
    assert [uid for what, uid in events if what == "start"] == ids
    # Every agent starts before any resumes; the ones that suspended resume in start order.
    assert events == [("start", uid) for uid in ids] + [("resume", uid) for uid in ids if uid % 3]
    assert [o.unique_id for o in report.outcomes] == ids
    assert [o.value for o in report.outcomes] == [f"done {uid}" for uid in ids]


def test_asyncio_raise_mode_never_starts_the_agents_after_one_that_fails_at_once() -> None:
    started: list[int] = []

    class FailsAtOnce(Agent):
        async def astep(self) -> None:
            started.append(self.unique_id)
            if self.unique_id == 3:
                raise ValueError("fails before its first await")
            await asyncio.sleep(0)

    model = DummyModel()
    agents = [FailsAtOnce(model) for _ in range(6)]
    with pytest.raises(ValueError, match="fails before its first await"):
        asyncio.run(step_agents_parallel(agents, on_error="raise"))
    assert started == [1, 2, 3]


class _Mortal(Agent):
    """Leaves the model's list when it dies during its step (a common Mesa idiom)."""

    dies = False

    def step(self) -> int:
        if self.dies:
            self.model.herd.remove(self)
        return self.unique_id

    async def astep(self) -> int:
        await asyncio.sleep(0)
        return self.step()


@pytest.mark.parametrize("mode", [*MODES, "sequential"])
def test_agents_that_leave_the_list_they_were_stepped_from_are_all_stepped(mode: str) -> None:
    model = Model(seed=1)
    model.herd = [_Mortal(model) for _ in range(4)]
    model.herd[1].dies = True
    ids = [agent.unique_id for agent in model.herd]

    report = step_agents_parallel_sync(model.herd, mode=mode)

    assert [o.unique_id for o in report.outcomes] == ids
    assert [o.value for o in report.outcomes] == ids and report.ok
    assert [agent.unique_id for agent in model.herd] == [ids[0], *ids[2:]]
