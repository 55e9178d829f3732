"""FakeLLM, direct path: mock vocabulary, seeded generator, records, attribution, faults."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from typing import Any
from unittest.mock import DEFAULT

import jsonschema
import mesa
import pydantic
import pytest

from mesa_llm.parallel_stepping import acting_as, step_agents_parallel_sync
from mesa_llm_testing import (
    FakeLLM,
    FakeRequest,
    FaultKind,
    FaultPlan,
    SideEffectExhaustedError,
)

MOVE: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "move",
        "description": "Move on the grid.",
        "parameters": {
            "type": "object",
            "properties": {
                "dx": {"type": "integer", "minimum": -1, "maximum": 1},
                "dy": {"type": "integer", "minimum": -1, "maximum": 1},
                "reason": {"type": "string", "maxLength": 40},
            },
            "required": ["dx", "dy"],
            "additionalProperties": False,
        },
    },
}
TRADE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "$defs": {
        "Offer": {
            "type": "object",
            "properties": {
                "good": {"type": "string", "enum": ["sugar", "spice"]},
                "amount": {"type": "number", "exclusiveMinimum": 0, "maximum": 5},
            },
            "required": ["good", "amount"],
        }
    },
    "properties": {
        "partner": {"type": "integer", "minimum": 0},
        "offers": {
            "type": "array",
            "items": {"$ref": "#/$defs/Offer"},
            "minItems": 1,
            "maxItems": 3,
        },
        "accept": {"type": "boolean"},
        "note": {"anyOf": [{"type": "string", "format": "date"}, {"type": "null"}]},
        "tags": {"type": ["array", "null"], "items": {"type": "string", "minLength": 3}},
    },
    "required": ["partner", "offers", "accept"],
}
TRADE = {"type": "function", "function": {"name": "trade", "parameters": TRADE_SCHEMA}}
WAIT = {"type": "function", "function": {"name": "wait"}}


def json_schema_format(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "out", "schema": schema, "strict": True}}


class Decision(pydantic.BaseModel):
    action: str
    confidence: float
    targets: list[int]


# --------------------------------------------------------------------------- Mesa models


class Talker(mesa.Agent):
    """Makes two LLM calls per step, in either stepping mode."""

    def __init__(self, model: mesa.Model, fake: FakeLLM) -> None:
        super().__init__(model)
        self.fake = fake
        self.replies: list[Any] = []

    def step(self) -> None:
        for _ in range(2):
            self.replies.append(_attempt(lambda: self.fake.complete(prompt=f"hi {self.unique_id}")))

    async def astep(self) -> None:
        for _ in range(2):
            await asyncio.sleep(0.001 * (self.unique_id % 3))  # scramble completion order
            try:
                self.replies.append(await self.fake.acomplete(prompt=f"hi {self.unique_id}"))
            except Exception as exc:
                self.replies.append(type(exc).__name__)


def _attempt(fn: Any) -> Any:
    try:
        return fn()
    except Exception as exc:
        return type(exc).__name__


class Village(mesa.Model):
    def __init__(self, fake: FakeLLM, mode: str, n: int = 6) -> None:
        super().__init__(seed=1)
        self.mode = mode
        for _ in range(n):
            Talker(self, fake)

    def step(self) -> None:
        if self.mode == "sequential":
            for agent in self.agents:
                with acting_as(agent):
                    agent.step()
        else:
            step_agents_parallel_sync(self.agents, mode=self.mode, on_error="raise")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- mock vocabulary


def test_return_value_text_dict_list_and_helpers() -> None:
    fake = FakeLLM(return_value="hello")
    assert fake.complete(prompt="x").content == "hello"
    fake.return_value = {"action": "move", "n": 2}
    assert fake.complete(prompt="x").json() == {"action": "move", "n": 2}
    fake.return_value = [1, 2]
    assert fake.complete(prompt="x").json() == [1, 2]
    fake.return_value = FakeLLM.text("plain")
    assert fake.complete(prompt="x").content == "plain"
    fake.return_value = FakeLLM.json_reply(Decision(action="go", confidence=0.5, targets=[1]))
    assert Decision.model_validate_json(fake.complete(prompt="x").content or "").action == "go"

    fake.return_value = FakeLLM.tool_call("move", dx=1, dy=0)
    reply = fake.complete(prompt="x", tools=[MOVE])
    assert reply.content is None
    (call,) = reply.tool_calls
    assert (call.name, json.loads(call.arguments)) == ("move", {"dx": 1, "dy": 0})
    assert call.id and call.id.startswith("call_")
    assert reply.finish == "tool_calls"
    # reads like a ModelResponse
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls[0].function.name == "move"

    fake.return_value = FakeLLM.tool_calls(("move", {"dx": 0, "dy": 1}), ("wait", {}))
    names = [tc.name for tc in fake.complete(prompt="x").tool_calls]
    assert names == ["move", "wait"]
    ids = [tc.id for tc in fake.complete(prompt="x").tool_calls]
    assert len(set(ids)) == 2


def test_a_bad_return_value_is_a_type_error_naming_what_works() -> None:
    fake = FakeLLM(return_value=3.5)
    with pytest.raises(TypeError, match=r"must be str .*dict or list .*ModelResponse"):
        fake.complete(prompt="x")
    assert isinstance(fake.calls.last.exception, TypeError)


def test_side_effect_callable_sees_the_request_and_can_defer() -> None:
    seen: list[FakeRequest] = []

    def answer(request: FakeRequest) -> Any:
        seen.append(request)
        if request.prompt == "defer":
            return DEFAULT
        return f"echo {request.prompt}"

    fake = FakeLLM(side_effect=answer, return_value="fallback")
    assert fake.complete(prompt="ping", model="mesa-fake/m", temperature=0.3).content == "echo ping"
    assert fake.complete(prompt="defer").content == "fallback"
    assert seen[0].model == "mesa-fake/m"
    assert seen[0].params == {"temperature": 0.3}
    assert (seen[0].agent, seen[0].step, seen[0].call, seen[0].layer) == (None, None, 0, "direct")
    assert seen[1].call == 1


@pytest.mark.parametrize("effect", [KeyError, KeyError("missing"), TimeoutError("slow")])
def test_side_effect_exception_is_raised_and_recorded(effect: Any) -> None:
    fake = FakeLLM(side_effect=effect)
    with pytest.raises(type(effect) if not isinstance(effect, type) else effect):
        fake.complete(prompt="x")
    assert fake.call_count == 1
    assert fake.calls.last.response is None
    assert isinstance(fake.calls.last.exception, KeyError | TimeoutError)


def test_side_effect_iterable_is_consumed_one_item_per_call() -> None:
    fake = FakeLLM(
        side_effect=iter(["first", ValueError("second fails"), {"third": 3}, DEFAULT]),
        return_value="default",
    )
    assert fake.complete(prompt="x").content == "first"
    with pytest.raises(ValueError, match="second fails"):
        fake.complete(prompt="x")
    assert fake.complete(prompt="x").json() == {"third": 3}
    assert fake.complete(prompt="x").content == "default"
    with pytest.raises(SideEffectExhaustedError, match=r"exhausted: it gave 4 replies and call #5"):
        fake.complete(prompt="x")
    assert fake.call_count == 5
    assert isinstance(fake.calls.last.exception, SideEffectExhaustedError)


def test_side_effect_items_are_handed_out_once_across_threads() -> None:
    fake = FakeLLM(side_effect=[f"r{i}" for i in range(400)])
    got: list[str] = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(50):
            text = fake.complete(prompt="x").content or ""
            with lock:
                got.append(text)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == sorted(f"r{i}" for i in range(400))


@pytest.mark.parametrize("bad", ["text", {"a": 1}, FakeLLM.text("x"), 7])
def test_side_effect_rejects_values_that_are_not_effects(bad: Any) -> None:
    with pytest.raises(TypeError, match=r"side_effect must be an exception .*use return_value"):
        FakeLLM(side_effect=bad)


def test_constructor_validates_options() -> None:
    with pytest.raises(ValueError, match="seed must be an integer"):
        FakeLLM(seed="1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="latency must be seconds >= 0"):
        FakeLLM(latency=-1)
    with pytest.raises(ValueError, match=r"needs messages=\[...\] or prompt="):
        FakeLLM().complete()


# --------------------------------------------------------------------------- call records


def test_calls_are_recorded_with_the_mock_vocabulary() -> None:
    fake = FakeLLM()
    assert not fake.called and fake.call_count == 0
    with pytest.raises(IndexError, match="has not been called"):
        _ = fake.calls.last
    fake.complete(messages=[{"role": "system", "content": "be brief"}], prompt="one", tools=[MOVE])
    fake.complete(prompt="two", model="mesa-fake/other")
    assert fake.called and fake.call_count == 2
    first, last = fake.calls
    assert last is fake.calls.last
    assert first.messages[-1] == {"role": "user", "content": "one"}
    assert first.tools == [MOVE]
    assert first.response is not None and first.response.tool_calls
    assert (first.status_code, first.fault, first.exception) == (200, None, None)
    assert last.model == "mesa-fake/other" and last.tools is None and last.layer == "direct"
    assert fake.calls_for(None) == [first, last]

    fake.reset_mock()
    assert fake.call_count == 0 and not fake.called
    fake.return_value = "kept"
    fake.reset_mock(return_value=True)
    assert fake.return_value is None


def test_calls_are_attributed_to_the_current_agent_and_its_model_step() -> None:
    fake = FakeLLM()
    model = mesa.Model(seed=0)
    a, b = mesa.Agent(model), mesa.Agent(model)
    with acting_as(a):
        fake.complete(prompt="x")
        fake.complete(prompt="x")
    with acting_as(b):
        fake.complete(prompt="x")
    model.steps = 1  # what Model.step() does
    with acting_as(a):
        fake.complete(prompt="x")
    assert [(c.agent, c.step, c.call) for c in fake.calls] == [
        (a.unique_id, 0, 0),
        (a.unique_id, 0, 1),
        (b.unique_id, 0, 0),
        (a.unique_id, 1, 0),
    ]
    assert [c.call for c in fake.calls_for(a)] == [0, 1, 0]
    assert fake.calls_for(b.unique_id) == fake.calls_for(b)
    assert fake.calls[0].request.agent_object is a


def record_of(mode: str, *, faults: FaultPlan, seed: int = 3) -> tuple[dict[Any, Any], list[Any]]:
    fake = FakeLLM(seed=seed, faults=faults)
    model = Village(fake, mode)
    for _ in range(3):
        model.step()
    replies = {
        (c.agent, c.step, c.call): (c.response, type(c.exception).__name__, c.fault)
        for c in fake.calls
    }
    assert len(replies) == fake.call_count == 6 * 3 * 2
    injected = sorted((f.agent, f.step, f.call, f.kind) for f in faults.injected)
    return replies, injected


def test_replies_and_faults_are_identical_in_asyncio_threading_and_sequential_runs() -> None:
    runs = {
        mode: record_of(mode, faults=FaultPlan(0.4, seed=21, test_id="t"))
        for mode in ("asyncio", "threading", "sequential")
    }
    replies, injected = runs["sequential"]
    assert injected, "the rate should have injected some faults"
    assert {k[2] for k in replies} == {0, 1} and {k[1] for k in replies} == {1, 2, 3}
    for mode in ("asyncio", "threading"):
        assert runs[mode] == runs["sequential"], mode


# --------------------------------------------------------------------------- the seeded generator


def test_generated_replies_are_a_pure_function_of_seed_agent_step_and_call() -> None:
    def replies(seed: int) -> list[Any]:
        fake = FakeLLM(seed=seed)
        model = mesa.Model(seed=0)
        agents = [mesa.Agent(model) for _ in range(3)]
        out = []
        for step in range(3):
            model.steps = step
            for agent in reversed(agents) if step % 2 else agents:
                with acting_as(agent):
                    for _ in range(2):
                        reply = fake.complete(
                            prompt=f"different prompt {step}", tools=[MOVE, TRADE]
                        )
                        out.append((agent.unique_id, step, fake.calls.last.call, reply))
        return sorted(out, key=lambda r: r[:3])

    assert replies(5) == replies(5)
    assert replies(5) != replies(6)


def test_generated_replies_are_the_same_in_another_process() -> None:
    script = (
        "from mesa_llm_testing import FakeLLM\n"
        "import json, sys\n"
        f"tools = json.loads({json.dumps([MOVE, TRADE])!r})\n"
        "fake = FakeLLM(seed=99)\n"
        "out = [fake.complete(prompt='x', tools=tools).tool_calls[0].arguments for _ in range(5)]\n"
        "out.append(fake.complete(prompt='x').content)\n"
        "print(json.dumps(out))\n"
    )
    fake = FakeLLM(seed=99)
    expected: list[str | None] = [
        fake.complete(prompt="x", tools=[MOVE, TRADE]).tool_calls[0].arguments for _ in range(5)
    ]
    expected.append(fake.complete(prompt="x").content)
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "777"},
    )
    assert json.loads(done.stdout) == expected


def test_with_tools_the_default_reply_calls_one_with_schema_valid_arguments() -> None:
    fake = FakeLLM(seed=2)
    schemas = {"move": MOVE["function"]["parameters"], "trade": TRADE_SCHEMA, "wait": {}}
    names = set()
    for _ in range(60):
        reply = fake.complete(prompt="act", tools=[MOVE, TRADE, WAIT])
        (call,) = reply.tool_calls
        names.add(call.name)
        jsonschema.validate(json.loads(call.arguments), schemas[call.name])
    assert names == {"move", "trade", "wait"}


def test_tool_choice_and_tool_results_steer_the_default_reply() -> None:
    fake = FakeLLM(seed=4)
    forced = {"type": "function", "function": {"name": "trade"}}
    for _ in range(10):
        assert (
            fake.complete(prompt="x", tools=[MOVE, TRADE], tool_choice=forced).tool_calls[0].name
            == "trade"
        )
    assert fake.complete(prompt="x", tools=[MOVE], tool_choice="none").tool_calls == ()
    after_tool = [
        {"role": "user", "content": "go"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "move", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "moved"},
    ]
    reply = fake.complete(after_tool, tools=[MOVE])
    assert reply.tool_calls == () and reply.content
    assert fake.complete(after_tool, tools=[MOVE], tool_choice="required").tool_calls


def test_structured_output_matches_the_requested_schema() -> None:
    fake = FakeLLM(seed=8)
    for _ in range(40):
        jsonschema.validate(
            fake.complete(prompt="x", response_format=json_schema_format(TRADE_SCHEMA)).json(),
            TRADE_SCHEMA,
        )
        Decision.model_validate_json(
            fake.complete(prompt="x", response_format=Decision).content or ""
        )
        assert isinstance(
            fake.complete(prompt="x", response_format={"type": "json_object"}).json(), dict
        )
    text = fake.complete(prompt="x").content
    assert text and not text.startswith("{")


# --------------------------------------------------------------------------- faults, direct path


def test_malformed_json_is_really_unusable_for_each_request_shape() -> None:
    fake = FakeLLM(faults=FaultPlan(1.0, kinds="malformed_json"), return_value="never used")
    for _ in range(20):
        (call,) = fake.complete(prompt="x", tools=[MOVE, TRADE]).tool_calls
        assert call.name in {"move", "trade"}
        with pytest.raises(json.JSONDecodeError):
            json.loads(call.arguments)

        with pytest.raises(json.JSONDecodeError):
            json.loads(fake.complete(prompt="x").content or "")
        with pytest.raises(json.JSONDecodeError):
            json.loads(
                fake.complete(prompt="x", response_format={"type": "json_object"}).content or ""
            )

        violating = json.loads(
            fake.complete(prompt="x", response_format=json_schema_format(TRADE_SCHEMA)).content
            or ""
        )
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(violating, TRADE_SCHEMA)
    assert {c.fault for c in fake.calls} == {FaultKind.MALFORMED_JSON}
    assert all(c.status_code == 200 for c in fake.calls)


def test_empty_response_has_no_content_and_no_tool_calls() -> None:
    fake = FakeLLM(faults=FaultPlan(1.0, kinds="empty_response"), return_value="never used")
    reply = fake.complete(prompt="x", tools=[MOVE])
    assert (reply.content, reply.tool_calls, reply.finish) == ("", (), "stop")
    assert fake.faults.injected[0].layer == "provider"


def test_faults_do_not_consume_side_effect_items() -> None:
    plan = FaultPlan().at(agent=None, step=None, call=0, kind="empty_response")
    fake = FakeLLM(side_effect=["a", "b"], faults=plan)
    assert fake.complete(prompt="x").content == ""
    assert fake.complete(prompt="x").content == "a"
    assert fake.complete(prompt="x").content == "b"


# --------------------------------------------------------------------------- latency and cost


def test_latency_is_slept_sync_and_awaited_async() -> None:
    fake = FakeLLM(latency=0.05)
    start = time.perf_counter()
    fake.complete(prompt="x")
    assert time.perf_counter() - start >= 0.05

    async def many() -> float:
        start = time.perf_counter()
        await asyncio.gather(*(fake.acomplete(prompt="x") for _ in range(10)))
        return time.perf_counter() - start

    assert asyncio.run(many()) < 0.4  # concurrent, not 10 x 0.05 s back to back


@pytest.mark.subprocess
def test_importing_and_using_the_fake_directly_imports_neither_litellm_nor_respx() -> None:
    script = (
        "import sys\n"
        "import mesa_llm_testing\n"
        "fake = mesa_llm_testing.FakeLLM(seed=1)\n"
        "fake.complete(prompt='x')\n"
        "plan = mesa_llm_testing.FaultPlan(0.5)\n"
        "print(sorted(m for m in ('litellm', 'respx', 'openai') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"


def test_each_call_record_carries_when_it_was_asked_and_answered() -> None:
    import time

    fake = FakeLLM(return_value="hi")
    before = time.perf_counter()
    fake.complete(prompt="hello")
    after = time.perf_counter()
    call = fake.calls.last
    assert before <= call.request.started <= call.ended <= after


# --------------------------------------------------------------------------- bounded records


def test_keep_calls_bounds_the_records_and_call_count_counts_every_call() -> None:
    fake = FakeLLM(keep_calls=5)
    for i in range(12):
        fake.return_value = f"reply {i}"
        fake.complete(prompt="hi")
    assert fake.call_count == 12
    assert len(fake.calls) == 5
    assert fake.calls.last.response.content == "reply 11"
    assert fake.calls[0].response.content == "reply 7"  # the oldest records went first
    fake.reset_mock()
    assert fake.call_count == 0 and not fake.calls


def test_keep_calls_none_keeps_every_record_and_bad_values_are_rejected() -> None:
    fake = FakeLLM(keep_calls=None)
    for _ in range(30):
        fake.complete(prompt="hi")
    assert len(fake.calls) == fake.call_count == 30
    for bad in (-1, 2.5, True, "10"):
        with pytest.raises(ValueError, match="keep_calls must be an integer >= 0 or None"):
            FakeLLM(keep_calls=bad)  # type: ignore[arg-type]
