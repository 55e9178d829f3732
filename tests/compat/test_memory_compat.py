"""mesa-llm 0.3.2 memories, used as a release user uses them, offline on the fake LLM.

The agents here are small Mesa agents that drive the release's two-phase step
protocol themselves (``process_step(pre_step=True)``, the step, ``process_step()``;
``abort_step`` when the step raised), exactly what ``LLMAgent`` does around a step.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import pytest
from mesa import Agent, Model

from mesa_llm.memory.episodic_memory import EpisodicMemory, EventGrade, normalize_dict_values
from mesa_llm.memory.lt_memory import LongTermMemory
from mesa_llm.memory.memory import Memory, MemoryEntry
from mesa_llm.memory.st_lt_memory import STLTMemory
from mesa_llm.memory.st_memory import ShortTermMemory
from mesa_llm.parallel_stepping import step_agents_parallel_sync
from mesa_llm_testing import FakeLLM

LLM = "openai/gpt-4o-mini"


class Trader(Agent):
    """A release-style agent: observes, talks to its peers, and fails when told to."""

    def __init__(self, model: Model, make_memory: Any, fail_at: int | None = None) -> None:
        super().__init__(model)
        self.step_prompt = "Trade sugar for spice."
        self.fail_at = fail_at
        self.memory = make_memory(self)

    def act(self) -> None:
        self.memory.add_to_memory("observation", {"step": self.model.steps, "id": self.unique_id})
        for other in self.model.agents:
            if other is not self:
                other.memory.add_to_memory(
                    "message", {"message": f"hi from {self.unique_id}", "sender": self.unique_id}
                )
        if self.model.steps == self.fail_at:
            raise RuntimeError("the trade went wrong")
        self.memory.add_to_memory("action", {"name": "trade", "response": "ok"})

    def step(self) -> None:
        self.memory.process_step(pre_step=True)
        try:
            self.act()
        except Exception as exc:
            self.memory.abort_step(exc)
            raise
        self.memory.process_step()

    async def astep(self) -> None:
        await self.memory.aprocess_step(pre_step=True)
        try:
            self.act()
        except Exception as exc:
            self.memory.abort_step(exc)
            raise
        await self.memory.aprocess_step()


def run_steps(model: Model, steps: int) -> None:
    for _ in range(steps):
        model.steps += 1
        for agent in list(model.agents):
            agent.step()


def consolidations(fake: FakeLLM) -> list[str]:
    return [
        call.request.prompt or ""
        for call in fake.calls
        if "Memories to consolidate" in (call.request.prompt or "")
    ]


def test_release_import_paths_and_protocol() -> None:
    assert issubclass(ShortTermMemory, Memory) and issubclass(STLTMemory, Memory)
    entry = MemoryEntry(content={"observation": {"x": 1}}, step=3, agent=None)
    assert (entry.content, entry.step, entry.agent) == ({"observation": {"x": 1}}, 3, None)
    assert "[Observation]" in str(entry) and "x: 1" in str(entry)
    memory = ShortTermMemory(agent=Trader(Model(seed=1), lambda a: None), n=2, display=False)
    with pytest.raises(TypeError, match="Expected 'content' to be dict, got str"):
        memory.add_to_memory("observation", "not a dict")
    with pytest.raises(ValueError, match="n must be >= 1 for ShortTermMemory"):
        ShortTermMemory(agent=None, n=0)
    with pytest.raises(ValueError, match="llm_model must be provided"):
        STLTMemory(agent=None)


def test_short_term_memory_files_one_entry_per_step_and_keeps_n() -> None:
    model = Model(seed=1)
    a, b = (Trader(model, lambda agent: ShortTermMemory(agent, n=2, display=False)) for _ in "ab")
    run_steps(model, 3)
    assert [entry.step for entry in a.memory.short_term_memory] == [2, 3]
    last = a.memory.short_term_memory[-1].content
    assert last["observation"] == {"step": 3, "id": a.unique_id}
    assert last["action"] == [{"name": "trade", "response": "ok"}]
    # b spoke after a stepped, in the same model step: filed with a's step 3, as it would be
    # had it arrived during a's step (in parallel modes), so nothing depends on the order
    assert last["message"] == [{"message": f"hi from {b.unique_id}", "sender": 2}]
    assert a.memory.step_content == {}
    assert "Short term memory:\n Step 2: \n{" in a.memory.get_prompt_ready()
    assert f"Step 3: Agent {b.unique_id} says: hi from {b.unique_id}" in (
        a.memory.get_communication_history()
    )


def test_stlt_memory_consolidates_through_the_llm(fake_llm: FakeLLM) -> None:
    fake_llm.return_value = "They trade a lot."
    model = Model(seed=1)
    make = lambda agent: STLTMemory(  # noqa: E731
        agent, short_term_capacity=2, consolidation_capacity=1, display=False, llm_model=LLM
    )
    agent = Trader(model, make)
    run_steps(model, 3)
    assert consolidations(fake_llm) == [] and agent.memory.long_term_memory == ""
    run_steps(model, 1)  # four entries > 2 + 1: the oldest is summarised
    [prompt] = consolidations(fake_llm)
    assert "Step 1: \n{'observation': {'step': 1" in prompt
    assert fake_llm.calls.last.request.agent == agent.unique_id  # attributed to its agent
    system = fake_llm.calls.last.request.messages[0]
    assert "summarizes the short term memory" in system["content"]
    assert "Trade sugar for spice." in system["content"]
    assert agent.memory.long_term_memory == "They trade a lot."
    assert [entry.step for entry in agent.memory.short_term_memory] == [2, 3, 4]
    assert agent.memory.get_prompt_ready().endswith("Long term memory: \nThey trade a lot.")
    assert agent.memory.format_long_term() == "They trade a lot."


def test_stlt_memory_async_twin_awaits_the_consolidation(fake_llm: FakeLLM) -> None:
    fake_llm.return_value = "summary"
    model = Model(seed=1)
    make = lambda agent: STLTMemory(agent, 1, 1, display=False, llm_model=LLM)  # noqa: E731
    agents = [Trader(model, make) for _ in range(3)]

    async def steps(n: int) -> None:
        for _ in range(n):
            model.steps += 1
            await asyncio.gather(*(agent.astep() for agent in agents))

    asyncio.run(steps(3))
    assert len(consolidations(fake_llm)) == 3  # one per agent, at step 3
    assert all(agent.memory.long_term_memory == "summary" for agent in agents)


def test_stlt_memory_prompt_shows_finished_steps_with_their_numbers() -> None:
    model = Model(seed=1)
    with FakeLLM().activate():
        agent = Trader(model, lambda a: STLTMemory(a, display=False, llm_model=LLM))
    agent.memory.add_to_memory("message", {"message": "psst", "sender": 7})
    model.steps = 1
    agent.memory.process_step(pre_step=True)
    # The step in progress is not in the prompt (what arrives during it would depend on
    # the stepping mode); never as a "Step None" placeholder either.
    assert agent.memory.format_short_term() == "No recent memory."
    assert "Step None" not in agent.memory.get_prompt_ready()
    assert agent.memory.get_communication_history().startswith("Step 1: Agent 7 says: psst")
    agent.memory.process_step()
    assert agent.memory.format_short_term().startswith("Step 1: \n{'message'")


def test_a_failing_consolidation_keeps_the_entries_and_is_retried(fake_llm: FakeLLM) -> None:
    model = Model(seed=1)
    agent = Trader(model, lambda a: STLTMemory(a, 1, 1, display=False, llm_model=LLM))
    run_steps(model, 2)
    fake_llm.side_effect = RuntimeError("provider down")
    with pytest.raises(RuntimeError, match="provider down"):
        run_steps(model, 1)
    assert [entry.step for entry in agent.memory.short_term_memory] == [1, 2, 3]
    fake_llm.side_effect = None
    fake_llm.return_value = "recovered"
    run_steps(model, 1)
    assert "Step 1: \n" in consolidations(fake_llm)[-1]
    assert agent.memory.long_term_memory == "recovered"
    assert [entry.step for entry in agent.memory.short_term_memory] == [2, 3, 4]


def test_long_term_memory_summarises_every_step(fake_llm: FakeLLM) -> None:
    fake_llm.side_effect = lambda request: f"summary {len(fake_llm.calls)}"
    model = Model(seed=1)
    agent = Trader(model, lambda a: LongTermMemory(a, display=False, llm_model=LLM))
    run_steps(model, 2)
    prompts = [call.request.prompt for call in fake_llm.calls]
    assert len(prompts) == 2
    assert "This is the new memory entry:" in prompts[1] and "summary 0" in prompts[1]
    assert agent.memory.buffer.step == 2
    assert agent.memory.get_prompt_ready() == "Long term memory: \nsummary 1"


def test_long_term_memory_async_twin(fake_llm: FakeLLM) -> None:
    fake_llm.return_value = "async summary"
    model = Model(seed=1)
    agent = Trader(model, lambda a: LongTermMemory(a, display=False, llm_model=LLM))
    model.steps = 1
    asyncio.run(agent.astep())
    assert agent.memory.long_term_memory == "async summary"
    assert len(fake_llm.calls) == 1


def test_episodic_memory_grades_each_event(fake_llm: FakeLLM) -> None:
    grades = iter([5, 1, 3])
    fake_llm.side_effect = lambda request: {"grade": next(grades)}
    model = Model(seed=1)
    agent = Trader(model, lambda a: EpisodicMemory(a, llm_model=LLM, considered_entries=2))
    model.steps = 1
    agent.memory.add_to_memory("observation", {"seen": "sugar"})
    asyncio.run(agent.memory.aadd_to_memory("message", {"message": "hello", "sender": 4}))
    agent.memory.add_to_memory("plan", {"content": "wait"})
    schemas = {call.request.shape.schema["title"] for call in fake_llm.calls}
    assert schemas == {EventGrade.__name__}  # the release's pydantic reply format
    assert "observation: {'seen': 'sugar'}" in fake_llm.calls[0].request.prompt
    importances = [
        next(iter(e.content.values()))["importance"] for e in agent.memory.memory_entries
    ]
    assert importances == [5, 1, 3]
    top = agent.memory.retrieve_top_k_entries(2)
    assert [next(iter(entry.content)) for entry in top] == ["observation", "plan"]
    assert agent.memory.get_prompt_ready().startswith("Top 2 memory entries:\n\n[Observation]")
    assert agent.memory.get_communication_history() == "Step 1: Agent 4 says: hello\n\n"
    agent.memory.process_step(pre_step=True)  # events are stored as they arrive: no-op
    assert len(agent.memory.memory_entries) == 3


def test_episodic_memory_keeps_an_event_whose_grade_is_unreadable(fake_llm: FakeLLM) -> None:
    fake_llm.return_value = "very important!"
    model = Model(seed=1)
    agent = Trader(model, lambda a: EpisodicMemory(a, llm_model=LLM))
    agent.memory.add_to_memory("observation", {"seen": "spice"})
    [entry] = agent.memory.memory_entries
    assert entry.content == {"observation": {"seen": "spice", "importance": None}}
    assert normalize_dict_values({"a": 1, "b": 3}, 0, 1) == {"a": 0.0, "b": 1.0}
    assert normalize_dict_values({"a": 2, "b": 2}, 0, 1) == {"a": 0.5, "b": 0.5}


@pytest.mark.parametrize("kind", ["short", "stlt"])
def test_a_failed_step_leaves_memory_consistent(fake_llm: FakeLLM, kind: str) -> None:
    model = Model(seed=1)
    make = {
        "short": lambda a: ShortTermMemory(a, n=5, display=False),
        "stlt": lambda a: STLTMemory(a, display=False, llm_model=LLM),
    }[kind]
    a = Trader(model, make, fail_at=2)
    b = Trader(model, make)
    model.steps = 1
    a.step()
    b.step()
    model.steps = 2
    with pytest.raises(RuntimeError):
        a.step()
    b.step()
    model.steps = 3
    a.fail_at = None
    a.step()
    entries = list(a.memory.short_term_memory)
    assert [entry.step for entry in entries] == [1, 2, 3]  # no "Step None" placeholder
    failed, after = entries[1].content, entries[2].content
    assert failed["step_error"] == {"error": "RuntimeError: the trade went wrong"}
    assert failed["observation"] == {"step": 2, "id": a.unique_id}
    assert "action" not in failed
    assert after["observation"] == {"step": 3, "id": a.unique_id}  # its own, not step 2's
    assert "step_error" not in after
    # b's message of step 2 (sent after a failed) is filed with a's step 2: nothing lost
    assert failed["message"] == [{"message": f"hi from {b.unique_id}", "sender": b.unique_id}]
    assert "message" not in after
    assert "Step None" not in a.memory.get_prompt_ready()


def test_an_unfinished_step_is_closed_by_the_next_pre_step() -> None:
    model = Model(seed=1)
    agent = Trader(model, lambda a: ShortTermMemory(a, display=False))
    model.steps = 1
    agent.memory.process_step(pre_step=True)
    agent.memory.add_to_memory("observation", {"x": 1})
    model.steps = 2
    agent.step()  # the wrapper of step 1 never ran its post-step
    steps = [
        (entry.step, "step_error" in entry.content) for entry in agent.memory.short_term_memory
    ]
    assert steps == [(1, True), (2, False)]
    assert agent.memory.short_term_memory[1].content["observation"]["step"] == 2


@pytest.mark.parametrize("mode", ["asyncio", "threading"])
def test_no_message_is_lost_when_agents_step_in_parallel(fake_llm: FakeLLM, mode: str) -> None:
    model = Model(seed=1)
    agents = [Trader(model, lambda a: ShortTermMemory(a, n=50, display=False)) for _ in range(8)]
    for _ in range(5):
        model.steps += 1
        report = step_agents_parallel_sync(list(model.agents), mode=mode)
        assert report.ok, report.errors
    for agent in agents:
        stored = [m for e in agent.memory.short_term_memory for m in e.content.get("message", [])]
        staged = agent.memory.step_content.get("message", [])
        assert len(stored) + len(staged) == 7 * 5  # every peer, every step
        assert [e.step for e in agent.memory.short_term_memory] == [1, 2, 3, 4, 5]


def test_a_message_is_filed_with_the_model_step_it_was_sent_in_whatever_the_order() -> None:
    # Sequential order decides whether a peer's message arrives before, during or after
    # the recipient's step; the entry it lands in, and its key order, must not depend on it.
    contents = []
    for when in ("before", "during", "after"):
        model = Model(seed=1)
        agent = Trader(model, lambda a: ShortTermMemory(a, n=5, display=False))
        model.steps = 1

        def send(agent: Trader = agent) -> None:
            agent.memory.add_to_memory("message", {"message": "hi", "sender": 9})

        if when == "before":
            send()
        agent.memory.process_step(pre_step=True)
        agent.memory.add_to_memory("observation", {"seen": 1})
        if when == "during":
            send()
        agent.memory.process_step()
        if when == "after":
            send()
        assert agent.memory.step_content == {}
        [entry] = agent.memory.short_term_memory
        contents.append((entry.step, list(entry.content.items())))
    assert contents[0] == contents[1] == contents[2]
    assert contents[0] == (
        1,
        [("observation", {"seen": 1}), ("message", [{"message": "hi", "sender": 9}])],
    )


def test_concurrent_writers_from_threads_lose_nothing() -> None:
    model = Model(seed=1)
    agent = Trader(model, lambda a: ShortTermMemory(a, n=1000, display=False))
    start = threading.Barrier(9)

    def write(sender: int) -> None:
        start.wait()
        for i in range(200):
            agent.memory.add_to_memory("message", {"message": str(i), "sender": sender})

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    start.wait()
    for step in range(1, 50):
        model.steps = step
        agent.memory.process_step(pre_step=True)
        agent.memory.process_step()
    for thread in threads:
        thread.join()
    stored = [m for e in agent.memory.short_term_memory for m in e.content.get("message", [])]
    assert len(stored) + len(agent.memory.step_content.get("message", [])) == 8 * 200


def test_ours_spelling_is_the_same_memory() -> None:
    memory = ShortTermMemory(capacity=2)
    assert memory.n == memory.capacity == 2 and memory.agent is None
    entry = MemoryEntry(4, "plan", "thoughts")
    assert (entry.step, entry.kind, entry.content) == (4, "plan", "thoughts")
    assert json.loads(json.dumps({"s": str(entry)})) == {"s": "[step 4] plan: thoughts"}


def test_an_llm_agent_with_a_release_memory_consolidates(fake_llm: FakeLLM) -> None:
    from mesa_llm.llm_agent import LLMAgent

    class Villager(LLMAgent):
        def __init__(self, model: Model) -> None:
            super().__init__(model, llm_model=LLM, step_prompt="Stay alive.")
            self.memory = STLTMemory(self, 2, 1, display=False, llm_model=LLM)

        def step(self) -> None:  # wrapped by LLMAgent: the memory's pre/post step run once
            super().step()

    model = Model(seed=3)
    agent = Villager(model)
    for _ in range(4):
        model.steps += 1
        agent.step()
    assert [entry.step for entry in agent.memory.short_term_memory] == [2, 3, 4]
    assert all(
        "observation" in e.content and "plan" in e.content for e in agent.memory.short_term_memory
    )
    [prompt] = consolidations(fake_llm)
    assert prompt.startswith("Memories to consolidate") and "Step 1: \n" in prompt
    assert agent.memory.long_term_memory  # the fake's summary
