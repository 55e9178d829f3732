"""How a step starts each agent: through the event loop's own task factory, and through an
``a<method>`` that is not itself a coroutine function (a sync decorator around one).

Both were found by an adversarial review (session 18): on Python 3.12+ the asyncio engine
bypassed a loop's task factory, and an ``astep`` behind an ordinary decorator was skipped
for Mesa's no-op ``step`` with every outcome "ok".
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any

import pytest
from mesa import Agent, Model

from mesa_llm.parallel_stepping import (
    parallel_stepping,
    step_agents_parallel,
    step_agents_parallel_sync,
)

MODES = ["asyncio", "threading", "sequential"]

# ----------------------------------------------------------------------- the loop's task factory

#: ``asyncio.eager_task_factory`` exists from Python 3.12; on 3.11 only a lazy factory can be set.
EAGER: Callable[..., asyncio.Task[Any]] | None = getattr(asyncio, "eager_task_factory", None)
FACTORIES = ["lazy", "eager"] if EAGER is not None else ["lazy"]


def _recording_factory(kind: str, made: list[asyncio.Task[Any]]) -> Callable[..., Any]:
    """A loop task factory (tracing, context set-up) that records every task it makes."""

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        if kind == "eager":
            assert EAGER is not None
            task = EAGER(loop, coro, **kwargs)
        else:
            task = asyncio.Task(coro, loop=loop, **kwargs)
        made.append(task)
        return task

    return factory


class Recorder(Agent):
    """Records its start and resume; fails before its first await if told to."""

    def __init__(self, model: Model, events: list[tuple[str, int]], fail: Any = None) -> None:
        super().__init__(model)
        self.events = events
        self.fail = fail

    async def astep(self) -> int:
        self.events.append(("start", self.unique_id))
        if self.fail is not None:
            raise self.fail
        await asyncio.sleep(0)
        self.events.append(("resume", self.unique_id))
        return self.unique_id


@pytest.mark.parametrize("kind", FACTORIES)
async def test_agents_start_through_the_loops_own_task_factory(kind: str) -> None:
    loop = asyncio.get_running_loop()
    made: list[asyncio.Task[Any]] = []
    events: list[tuple[str, int]] = []
    agents = [Recorder(Model(seed=1), events) for _ in range(5)]
    ids = [a.unique_id for a in agents]
    loop.set_task_factory(_recording_factory(kind, made))
    try:
        report = await step_agents_parallel(agents)
    finally:
        loop.set_task_factory(None)
    assert len(made) == len(agents)  # every agent's task, none bypassing the factory
    assert report.ok and [o.value for o in report] == ids
    # The start order is the given order, whichever factory starts the tasks.
    assert events == [("start", uid) for uid in ids] + [("resume", uid) for uid in ids]


@pytest.mark.parametrize("kind", FACTORIES)
@pytest.mark.parametrize("failure", ["raise mode", "interrupt"])
async def test_a_loop_task_factory_never_starts_agents_after_the_step_failed(
    kind: str, failure: str
) -> None:
    """With the loop's factory eager, a task created after the failure would start at once:
    the step creates those cancelled, never started (as a lazy start cancels them)."""
    loop = asyncio.get_running_loop()
    made: list[asyncio.Task[Any]] = []
    events: list[tuple[str, int]] = []
    model = Model(seed=1)
    exc = ValueError("boom") if failure == "raise mode" else KeyboardInterrupt()
    on_error = "raise" if failure == "raise mode" else "isolate"  # an interrupt aborts either way
    agents = [Recorder(model, events, fail=exc)] + [Recorder(model, events) for _ in range(4)]
    loop.set_task_factory(_recording_factory(kind, made))
    try:
        with pytest.raises(type(exc)):
            await step_agents_parallel(agents, on_error=on_error)  # type: ignore[arg-type]
    finally:
        loop.set_task_factory(None)
    assert events == [("start", agents[0].unique_id)]  # nobody started after the failure
    assert made and all(task.done() for task in made)
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []


def test_without_a_loop_task_factory_agents_start_as_their_tasks_are_made() -> None:
    """Python 3.12+ keeps the eager start when the loop has no factory of its own (3.11: lazy)."""
    events: list[tuple[str, int]] = []

    class Spy(Recorder):
        async def astep(self) -> int:
            # How many agent tasks exist when this agent starts: 1 when started eagerly.
            self.events.append(("tasks", len(asyncio.all_tasks()) - 1))
            return await super().astep()

    agents = [Spy(Model(seed=1), events) for _ in range(4)]

    async def main() -> Any:
        assert asyncio.get_running_loop().get_task_factory() is None
        return await step_agents_parallel(agents)

    report = asyncio.run(main())
    assert report.ok
    seen = [n for what, n in events if what == "tasks"]
    assert seen == ([1, 2, 3, 4] if EAGER is not None else [4, 4, 4, 4])


def test_a_loop_class_with_its_own_create_task_makes_every_agents_task_and_the_step_waits() -> None:
    """A loop subclass that wraps each task's coroutine (tracing, as uvloop-like loops do)."""
    log: list[str] = []

    class TracingLoop(asyncio.SelectorEventLoop):
        def create_task(self, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
            async def traced() -> Any:
                log.append("start")
                try:
                    return await coro
                finally:
                    await asyncio.sleep(0)  # an async clean-up (flushing a span)
                    log.append("end")

            return super().create_task(traced(), **kwargs)

    agents = [Recorder(Model(seed=1), []) for _ in range(3)]

    async def main() -> tuple[Any, list[asyncio.Task[Any]]]:
        report = await step_agents_parallel(agents)
        return report, [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]

    with asyncio.Runner(loop_factory=TracingLoop) as runner:
        log.clear()  # the runner's own main task went through create_task too
        report, left = runner.run(main())
        traced = list(log)
    assert report.ok and [o.value for o in report] == [a.unique_id for a in agents]
    assert left == []  # nothing of the step outlived it
    # main() and the 3 agents, all through create_task, all ended (clean-ups included).
    assert traced.count("start") == traced.count("end") == 4


# ------------------------------------------------------------------ a<method> behind a decorator


def logged(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A typical sync decorator around a method: calls it and returns what it returns."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return wrapper


class Later:
    """An awaitable that is not a coroutine."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __await__(self) -> Any:
        yield from asyncio.sleep(0).__await__()
        return self.value


class Trader(Agent):
    def __init__(self, model: Model) -> None:
        super().__init__(model)
        self.traded = 0
        self.stepped = 0

    @logged
    async def astep(self) -> str:
        await asyncio.sleep(0)
        self.traded += 1
        return f"traded {self.unique_id}"


class LaterTrader(Trader):
    @logged
    def astep(self) -> Later:  # type: ignore[override]
        self.traded += 1
        return Later(f"traded {self.unique_id}")


class TraderWithStep(Trader):
    def step(self) -> None:
        self.stepped += 1


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("timeout", [None, 30.0])
@pytest.mark.parametrize("cls", [Trader, LaterTrader])
def test_an_astep_behind_a_sync_decorator_is_called_and_awaited(
    mode: str, timeout: float | None, cls: type[Trader]
) -> None:
    model = Model(seed=1)
    agents = [cls(model) for _ in range(3)]
    report = step_agents_parallel_sync(agents, mode=mode, timeout=timeout)  # type: ignore[arg-type]
    assert report.ok, report
    assert [o.value for o in report] == [f"traded {a.unique_id}" for a in agents]
    assert [a.traded for a in agents] == [1, 1, 1]


@pytest.mark.parametrize("mode", MODES)
def test_automatic_and_nested_steps_run_an_astep_behind_a_decorator(mode: str) -> None:
    model = Model(seed=1)
    model.parallel_stepping = True
    traders = [TraderWithStep(model) for _ in range(3)]
    model.traders = model.agents.select(lambda a: a in traders)

    class Leader(Agent):
        async def astep(self) -> None:
            self.model.traders.shuffle_do("step")

    with parallel_stepping(mode):  # type: ignore[arg-type]
        model.traders.shuffle_do("step")  # automatic
        assert model.last_step_report.ok
        report = step_agents_parallel_sync([Leader(model), Leader(model)])  # nested
    assert report.ok, report
    # a<method> is preferred to <method>, as for a coroutine function.
    assert [(a.traded, a.stepped) for a in traders] == [(3, 0)] * 3


def test_mesa_plain_stepping_still_calls_step_not_a_decorated_astep() -> None:
    model = Model(seed=1)
    agents = [TraderWithStep(model) for _ in range(3)]
    model.agents.shuffle_do("step")  # parallel stepping never enabled
    with parallel_stepping("asyncio"):
        model.agents.shuffle_do("step")  # enabled, but this model does not ask for it
    assert [(a.traded, a.stepped) for a in agents] == [(0, 2)] * 3


class NotAwaitable(Trader):
    @logged
    def astep(self) -> int:  # type: ignore[override]
        self.traded += 1
        return 42


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("timeout", [None, 30.0])
def test_an_astep_that_returns_no_awaitable_is_that_agents_error(
    mode: str, timeout: float | None
) -> None:
    model = Model(seed=1)
    bad, good = NotAwaitable(model), Trader(model)
    report = step_agents_parallel_sync([bad, good], mode=mode, timeout=timeout)  # type: ignore[arg-type]
    first, second = report.outcomes
    assert first.status == "error" and isinstance(first.exception, TypeError)
    message = str(first.exception)
    assert message.startswith("mesa_llm: ")
    for part in (f"agent {bad.unique_id}", "NotAwaitable", "astep", "42", "int", "awaitable"):
        assert part in message, (part, message)
    assert bad.traded == 1 and bad.stepped == 0  # called once, never replaced by step()
    assert second.status == "ok" and good.traded == 1

    with pytest.raises(TypeError, match="astep"):
        step_agents_parallel_sync([bad], mode=mode, on_error="raise")  # type: ignore[arg-type]
