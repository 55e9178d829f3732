"""The documented examples (seeds 000/001) run as written under both stepping modes, offline.

The model and agent classes below are the documentation's code; only the ``...`` of
``MyLLMAgent(self, ...)`` and the ``Citizen``/``Cop`` classes it leaves to the reader
are filled in. Every LLM call is answered by FakeLLM, whose replies depend only on
(seed, agent, step, call index), so each mode must reproduce a sequential run exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import pytest
from mesa import Model

from mesa_llm.llm_agent import LLMAgent
from mesa_llm.parallel_stepping import (
    disable_automatic_parallel_stepping,
    enable_automatic_parallel_stepping,
    step_agents_parallel_sync,
)
from mesa_llm.reasoning import CoTReasoning, ReActReasoning, Reasoning, ReWOOReasoning
from mesa_llm.tools import tool
from mesa_llm_testing import FakeLLM

STEPS = 2

# -- the documentation's code -------------------------------------------------------------


class ParallelAgent(LLMAgent):
    def step(self):
        """Synchronous step - will be executed in threads if parallel"""
        obs = self.generate_obs()
        plan = self.reasoning.plan(obs=obs)
        self.apply_plan(plan)

    async def astep(self):
        """Asynchronous step - preferred for parallel execution"""
        obs = self.generate_obs()
        # Use async planning for true concurrency
        plan = await self.reasoning.aplan(prompt=self.step_prompt, obs=obs)
        self.apply_plan(plan)


class MyModel(Model):
    def __init__(self):
        super().__init__()
        # Enable automatic parallel stepping
        self.parallel_stepping = True
        enable_automatic_parallel_stepping(mode=MODE)

        # Add agents as normal
        for _ in range(100):
            agent = MyLLMAgent(self, reasoning=REASONING)
            self.agents.add(agent)

    def step(self):
        # This will automatically execute agents in parallel
        self.agents.shuffle_do("step")


class CustomModel(Model):
    def step(self):
        # Manual parallel execution
        citizen_agents = [a for a in self.agents if isinstance(a, Citizen)]
        cop_agents = [a for a in self.agents if isinstance(a, Cop)]

        # Execute different agent types in parallel
        step_agents_parallel_sync(citizen_agents)
        step_agents_parallel_sync(cop_agents)


# -- what the documentation leaves to the reader ------------------------------------------

Mode = Literal["asyncio", "threading"]
MODE: Mode = "asyncio"
REASONING: type[Reasoning] = CoTReasoning


@tool
def write_down(agent: LLMAgent, note: str) -> None:
    """Write a note in the agent's diary.

    Args:
        note: The note.
    """
    agent.diary.append(note)  # type: ignore[attr-defined]


@tool
def raise_alarm(agent: LLMAgent, level: int) -> None:
    """Raise the alarm at a given level."""
    agent.diary.append(f"alarm {level}")  # type: ignore[attr-defined]


class MyLLMAgent(ParallelAgent):
    def __init__(self, model: Model, **kwargs: Any) -> None:
        super().__init__(
            model, step_prompt="Keep your diary.", tools=[write_down, raise_alarm], **kwargs
        )
        self.diary: list[str] = []


class Citizen(MyLLMAgent):
    pass


class Cop(MyLLMAgent):
    pass


def build_custom_model() -> CustomModel:
    model = CustomModel()
    for i in range(20):
        (Cop if i % 4 == 0 else Citizen)(model, reasoning=REASONING)
    return model


# -- the tests ------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _parallel_stepping_off() -> Iterator[None]:
    yield
    disable_automatic_parallel_stepping()


@pytest.fixture(params=[CoTReasoning, ReActReasoning, ReWOOReasoning])
def reasoning(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> type[Reasoning]:
    monkeypatch.setitem(globals(), "REASONING", request.param)
    return request.param  # type: ignore[no-any-return]


def outcome(model: Model, fake: FakeLLM) -> tuple[dict[int, Any], list[Any]]:
    """What a run produced: every agent's diary, and every LLM request keyed by who made it."""
    diaries = {a.unique_id: (type(a).__name__, a.diary) for a in model.agents}
    requests = sorted(
        (c.agent, c.step, c.call, repr(c.messages), repr(c.tools)) for c in fake.calls
    )
    return diaries, requests


def run(build: Any, stepper: Any) -> tuple[dict[int, Any], list[Any]]:
    fake = FakeLLM(seed=2024)
    with fake.activate():
        model = build()
        for _ in range(STEPS):
            stepper(model)
    assert all(c.exception is None for c in fake.calls)
    assert all(c.agent is not None for c in fake.calls)
    return outcome(model, fake)


def step_sequentially(model: Model) -> None:
    model.steps += 1  # as Mesa's wrapped Model.step does before the user's step
    for agent in sorted(model.agents, key=lambda a: a.unique_id):
        agent.step()


@pytest.mark.parametrize("mode", ["asyncio", "threading"])
def test_my_model_with_automatic_parallel_stepping(
    mode: Mode, reasoning: type[Reasoning], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(globals(), "MODE", mode)
    reports = []

    def step_model(model: Model) -> None:
        model.step()
        reports.append(model.last_step_report)  # type: ignore[attr-defined]

    parallel = run(MyModel, step_model)
    assert all(report.ok and len(report.outcomes) == 100 for report in reports)

    def build_sequential() -> MyModel:
        model = MyModel()
        model.parallel_stepping = False
        return model

    sequential = run(build_sequential, step_sequentially)
    assert parallel == sequential
    diaries = parallel[0]
    assert len(diaries) == 100
    assert all(len(diary) == STEPS for _, diary in diaries.values())


@pytest.mark.parametrize("mode", ["asyncio", "threading"])
def test_custom_model_with_manual_parallel_stepping(mode: Mode, reasoning: type[Reasoning]) -> None:
    enable_automatic_parallel_stepping(mode=mode)  # sets the mode step_agents_parallel_sync uses
    parallel = run(build_custom_model, lambda model: model.step())
    sequential = run(build_custom_model, step_sequentially)
    assert parallel == sequential
    diaries = parallel[0]
    assert sorted(kind for kind, _ in diaries.values()).count("Cop") == 5
    assert all(len(diary) == STEPS for _, diary in diaries.values())
