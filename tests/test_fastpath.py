"""The fast path (``activate()``) answers as litellm's pipeline (``activate(pipeline="litellm")``).

For every fault kind (and none) and every reply shape (text, tool calls, JSON object,
JSON schema from a pydantic model, a scripted ``ModelResponse``), sync and async,
through ``litellm.completion`` / ``acompletion`` and ``ModuleLLM.agenerate``: the same
reply (every field, ``usage``, ``_hidden_params`` but the timing), or the same
exception (class, ``status_code``, message, ``llm_provider``, headers), and the same
request recorded by the fake.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import Any

import pydantic
import pytest
from mesa import Agent, Model

from mesa_llm._litellm import import_litellm
from mesa_llm.module_llm import ModuleLLM, RetryPolicy
from mesa_llm.parallel_stepping import acting_as
from mesa_llm_testing import FakeLLM, FakeReply, FaultKind, FaultPlan
from mesa_llm_testing._responses import FakeToolCall, Rng

litellm = import_litellm()

MESSAGES: Any = [
    {"role": "system", "content": "You are a farmer."},
    {"role": "user", "content": "Next?"},
]
MOVE = {
    "type": "function",
    "function": {
        "name": "move",
        "parameters": {
            "type": "object",
            "properties": {"dx": {"type": "integer", "minimum": -1, "maximum": 1}},
            "required": ["dx"],
        },
    },
}


class Harvest(pydantic.BaseModel):
    crop: str
    tons: int


SHAPES: dict[str, dict[str, Any]] = {
    "text": {"temperature": 0.2, "max_completion_tokens": 50},
    "tools": {"tools": [MOVE], "tool_choice": "auto", "seed": 3},
    "json": {"response_format": {"type": "json_object"}},
    "json_schema": {"response_format": Harvest},
    "scripted": {"user": "u1", "top_p": None},
}
KINDS = [None, *FaultKind]
#: Calls per case: every SERVER_ERROR variant shows up within these at the seeds used.
CALLS = 4
#: Varies per call in both paths (a clock reading); the call id is passed in to compare.
TIMING_KEYS = ("_response_ms",)


def _fake(kind: FaultKind | None, shape: str) -> FakeLLM:
    plan = FaultPlan(1.0 if kind else 0.0, kinds=[kind] if kind else None, seed=7)
    fake = FakeLLM(seed=5, faults=plan)
    if shape == "scripted":
        fake.return_value = litellm.ModelResponse(
            id="chatcmpl-scripted",
            created=1_700_000_001,
            model="scripted-model",
            choices=[{"message": {"role": "assistant", "content": "scripted"}}],
        )
    return fake


def _seen_reply(response: Any) -> dict[str, Any]:
    hidden = {k: v for k, v in response._hidden_params.items() if k not in TIMING_KEYS}
    return {
        "type": type(response).__name__,
        "body": response.model_dump(),
        "usage": response.usage.model_dump(),
        "hidden": hidden,
        "has_response_ms": isinstance(getattr(response, "_response_ms", None), float),
    }


def _without_fresh_ids(message: str) -> str:
    """``message`` without the id and time of the empty ``ModelResponse`` litellm makes per call.

    A reply litellm cannot convert (``missing_fields``) raises with the conversion's
    arguments in the message, among them a fresh ``ModelResponse(id='chatcmpl-<uuid4>',
    created=<now>)``: random for a real provider too, so not compared.
    """
    message = re.sub(
        r"chatcmpl-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
        "chatcmpl-<uuid>",
        message,
    )
    return re.sub(r"created=\d+", "created=<now>", message)


def _seen_error(exc: BaseException) -> dict[str, Any]:
    return {
        "class": type(exc),
        "status_code": getattr(exc, "status_code", None),
        "message": _without_fresh_ids(str(exc)),
        "llm_provider": getattr(exc, "llm_provider", None),
        "model": getattr(exc, "model", None),
        "headers": getattr(exc, "headers", None),
        "response_headers": dict(getattr(exc, "litellm_response_headers", None) or {}),
        "body": getattr(exc, "body", None),
    }


def _seen_request(fake: FakeLLM) -> list[tuple[Any, ...]]:
    return [
        (
            c.request.model,
            c.request.messages,
            c.request.tools,
            c.request.tool_choice,
            c.request.response_format,
            c.request.params,
            c.request.agent,
            c.request.call,
            c.fault,
            c.status_code,
            c.response,
        )
        for c in fake.calls
    ]


def _run(pipeline: str, kind: FaultKind | None, shape: str, style: str) -> list[Any]:
    fake = _fake(kind, shape)
    model = Model(seed=1)
    agent = Agent(model)
    seen: list[Any] = []
    with fake.activate(pipeline=pipeline), acting_as(agent):
        for i in range(CALLS):
            kwargs = {
                "model": "openai/gpt-4o-mini",
                "messages": MESSAGES,
                "num_retries": 0,
                "max_retries": 0,
                "litellm_call_id": f"call-{i}",
                **SHAPES[shape],
            }
            try:
                if style == "sync":
                    response = litellm.completion(**kwargs)
                else:
                    response = asyncio.run(litellm.acompletion(**kwargs))
            except Exception as exc:
                seen.append(_seen_error(exc))
            else:
                seen.append(_seen_reply(response))
    return [seen, _seen_request(fake), fake.faults.counts_by_kind()]


@pytest.mark.parametrize("style", ["sync", "async"])
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("kind", KINDS, ids=lambda k: str(k or "no_fault"))
def test_fast_path_answers_as_litellm_pipeline(
    kind: FaultKind | None, shape: str, style: str
) -> None:
    fast = _run("fast", kind, shape, style)
    assert fast == _run("litellm", kind, shape, style)
    assert fast[0], "no call was made"


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: str(k or "no_fault"))
def test_module_llm_agenerate_agrees_on_both_paths(kind: FaultKind | None) -> None:
    def run(pipeline: str) -> list[Any]:
        fake = _fake(kind, "tools")
        model = Model(seed=1)
        with fake.activate(pipeline=pipeline):
            llm = ModuleLLM(
                "openai/gpt-4o-mini", retry=RetryPolicy(max_attempts=2), seed=1, agent=Agent(model)
            )
            try:
                out = _seen_reply(asyncio.run(llm.agenerate("Next?", tools=[MOVE])))
                out["hidden"].pop("litellm_call_id")
            except Exception as exc:
                out = _seen_error(exc)
        return [out, _seen_request(fake), fake.retry_sleeps]

    assert run("fast") == run("litellm")


@pytest.mark.parametrize("style", ["sync", "async"])
def test_streams_take_litellm_pipeline_on_both_paths(style: str) -> None:
    def run(pipeline: str) -> tuple[str, list[str]]:
        fake = FakeLLM(seed=2, return_value="A streamed answer.")
        kwargs = {"model": "openai/gpt-4o-mini", "messages": MESSAGES, "stream": True}
        with fake.activate(pipeline=pipeline):
            if style == "sync":
                stream = litellm.completion(**kwargs)
                chunks = [c.choices[0].delta.content for c in stream]
            else:

                async def collect() -> list[Any]:
                    stream = await litellm.acompletion(**kwargs)
                    return [c.choices[0].delta.content async for c in stream]

                chunks = asyncio.run(collect())
        return type(stream if style == "sync" else None).__name__, chunks

    fast, slow = run("fast"), run("litellm")
    assert fast == slow
    assert "A streamed answer." in fast[1]


@pytest.mark.parametrize("pipeline", ["fast", "litellm"])
def test_side_effect_exception_reaches_the_caller_unwrapped(pipeline: str) -> None:
    class Boom(Exception):
        pass

    fake = FakeLLM(side_effect=Boom("scripted failure"))
    with fake.activate(pipeline=pipeline), pytest.raises(Boom, match="scripted failure"):
        litellm.completion(model="openai/gpt-4o-mini", messages=MESSAGES)
    assert fake.call_count == 1


def test_mock_response_is_left_to_litellm_on_the_fast_path() -> None:
    fake = FakeLLM()
    with fake.activate():
        response = litellm.completion(
            model="openai/gpt-4o-mini", messages=MESSAGES, mock_response="from litellm"
        )
    assert response.choices[0].message.content == "from litellm"


FUNCTIONS = [{"name": "f", "parameters": {"type": "object", "properties": {}}}]


@pytest.mark.parametrize(
    "extra",
    [
        {"functions": FUNCTIONS, "function_call": "auto"},  # kept, as the pipeline keeps them
        {"timeout": 5.0, "base_url": "http://127.0.0.1:9/v1"},  # client options: dropped
        {"messages": "hello"},  # not a list: the pipeline's own error, on both paths
    ],
    ids=["functions", "client-options", "string-messages"],
)
def test_both_paths_hand_the_fake_the_same_params_and_errors(extra: dict[str, Any]) -> None:
    def seen(pipeline: str) -> tuple[Any, ...]:
        fake = FakeLLM(seed=1)
        with fake.activate(pipeline=pipeline):
            try:
                litellm.completion(**{"model": "openai/gpt-4o-mini", "messages": MESSAGES, **extra})
                outcome: Any = "ok"
            except Exception as exc:
                outcome = type(exc)
        return outcome, [c.request.params for c in fake.calls]

    assert seen("fast") == seen("litellm")


def test_unknown_pipeline_is_rejected_naming_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"pipeline='slow'.*'fast', 'litellm'"):
        FakeLLM().activate(pipeline="slow")


def _structure(obj: Any) -> Any:
    """What pydantic keeps of a model, recursively: type, fields, set fields, extra, private."""
    if isinstance(obj, pydantic.BaseModel):
        return (
            type(obj),
            {k: _structure(v) for k, v in obj.__dict__.items()},
            sorted(obj.model_fields_set),
            {k: _structure(v) for k, v in (obj.__pydantic_extra__ or {}).items()},
            {k: _structure(v) for k, v in (obj.__pydantic_private__ or {}).items()},
        )
    if isinstance(obj, list | tuple):
        return [_structure(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _structure(v) for k, v in obj.items()}
    return obj


@pytest.mark.parametrize(
    "reply",
    [
        FakeLLM.text("Plain text."),
        FakeLLM.text(""),
        FakeLLM.tool_call("move", dx=1),
        FakeLLM.tool_calls(("move", {"dx": 1}), ("say", {"text": "hi"})),
        FakeReply("Thinking aloud", (FakeToolCall("move", "{", "call_x"),), "length"),
        FakeReply(None, (), "content_filter"),
    ],
    ids=["text", "empty", "tool", "two_tools", "content_and_tool", "filtered"],
)
@pytest.mark.parametrize("with_usage", [True, False])
def test_replies_built_from_templates_equal_those_litellm_builds(
    reply: FakeReply, with_usage: bool
) -> None:
    from mesa_llm_testing import _model_responses

    reply = reply.with_ids(Rng(1, 2, 3, 4, "ids"))
    made = [
        reply.to_model_response(
            model=f"m{i}", response_id=f"chatcmpl-{i}", messages=MESSAGES, with_usage=with_usage
        )
        for i in range(3)
    ]
    _model_responses._templates.clear()  # each built by litellm from scratch
    for i, response in enumerate(made):
        fresh = reply.to_model_response(
            model=f"m{i}", response_id=f"chatcmpl-{i}", messages=MESSAGES, with_usage=with_usage
        )
        _model_responses._templates.clear()
        assert _structure(response) == _structure(fresh)
        assert response.model_dump_json() == fresh.model_dump_json()
    made[0]._hidden_params["touched"] = True
    assert "touched" not in made[1]._hidden_params


@pytest.mark.parametrize("pipeline", ["fast", "litellm"])
def test_each_reply_has_a_fresh_uuid4_call_id_and_its_time_on_both_paths(pipeline: str) -> None:
    fake = FakeLLM(seed=1)
    with fake.activate(pipeline=pipeline):
        replies = [
            litellm.completion(model="openai/gpt-4o-mini", messages=MESSAGES) for _ in range(3)
        ]
    ids = [r._hidden_params["litellm_call_id"] for r in replies]
    assert all(str(uuid.UUID(i)) == i and uuid.UUID(i).version == 4 for i in ids)
    assert len(set(ids)) == 3
    for reply in replies:
        assert reply._response_ms == reply._hidden_params["_response_ms"] >= 0
        assert "_response_ms" not in reply.model_dump()
