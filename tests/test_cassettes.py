"""Cassettes: record real completions (a loopback server stands in for the provider), replay them.

The "real provider" is ``FakeLLM.http()`` on 127.0.0.1, reached by litellm's
OpenAI provider with ``api_base``; replays run with that server stopped.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import json
import re
import threading
from pathlib import Path
from typing import Any

import pytest

from mesa_llm._litellm import import_litellm
from mesa_llm.parallel_stepping import acting_as
from mesa_llm_testing import (
    CassetteMismatchError,
    FakeLLM,
    FaultKind,
    FaultPlan,
    record_to,
    run_scenario,
)
from mesa_llm_testing.scenarios import REGISTRY

litellm = import_litellm()

MODEL = "openai/gpt-4o-mini"
SECRET = "sk-test-DO-NOT-WRITE-1234"
MESSAGES: Any = [{"role": "user", "content": "Your move?"}]


def call(api_base: str | None, messages: Any = MESSAGES, **kwargs: Any) -> Any:
    """One litellm completion to the OpenAI provider at ``api_base``, no retries."""
    extra = {} if api_base is None else {"api_base": api_base, "api_key": SECRET}
    return litellm.completion(
        model=MODEL, messages=messages, num_retries=0, max_retries=0, **extra, **kwargs
    )


def scenario(api_base: str, name: str = "negotiation") -> Any:
    return functools.partial(
        REGISTRY[name], llm_model=MODEL, llm_kwargs={"api_base": api_base, "api_key": SECRET}
    )


class _Agent:
    """A stand-in agent: ``current_agent()`` reads ``unique_id`` and ``model.steps``."""

    def __init__(self, uid: int, model: Any) -> None:
        self.unique_id = uid
        self.model = model


class _Model:
    steps = 1


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_a_scenario_recorded_in_asyncio_mode_replays_offline_in_every_mode(
    tmp_path: Path, suffix: str
) -> None:
    path = tmp_path / f"run{suffix}"
    with FakeLLM(seed=5).http() as base:
        factory = scenario(base)
        with record_to(path, seed=1) as recorder:
            recorded = run_scenario(
                factory, steps=2, mode="asyncio", seed=1, agents=3, llm=recorder
            )
    assert recorder.call_count > 0
    if suffix == ".jsonl.gz":
        gzip.decompress(path.read_bytes())  # a complete gzip file
    for mode in ("threading", "sequential", "asyncio"):
        fake = FakeLLM.from_cassette(path)
        again = run_scenario(factory, steps=2, mode=mode, seed=1, agents=3, llm=fake)
        assert recorded.diff(again) is None, mode
        assert recorded == again
        assert fake.problems == []
        assert fake.call_count == recorder.call_count


def test_the_cassette_keeps_no_api_key_and_each_body_once(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    with FakeLLM().http() as base, record_to(path):
        call(base, extra_headers={"Authorization": f"Bearer {SECRET}", "x-api-key": SECRET})
        call(base)
    text = path.read_text()
    assert SECRET not in text
    assert "authorization" not in text.lower()
    lines = [json.loads(line) for line in text.splitlines()]
    assert lines[0]["mesa_llm_cassette"] == 1 and "litellm" in lines[0]["versions"]
    assert [line["value"] for line in lines if "blob" in line] == [MESSAGES[0]]  # stored once
    assert len([line for line in lines if "key" in line]) == 2


def test_a_recorded_429_and_a_malformed_reply_replay_as_the_same_exceptions(
    tmp_path: Path,
) -> None:
    path = tmp_path / "c.jsonl"
    plan = FaultPlan(0.0).at(agent=None, step=None, call=0, kind=FaultKind.RATE_LIMIT)
    plan.at(agent=None, step=None, call=1, kind=FaultKind.MALFORMED_JSON)
    tools = [{"type": "function", "function": {"name": "move", "parameters": {"type": "object"}}}]
    with FakeLLM(faults=plan).http() as base, record_to(path):
        with pytest.raises(litellm.RateLimitError) as recorded_429:
            call(base)
        malformed = call(base, tools=tools)
    with FakeLLM.from_cassette(path):
        with pytest.raises(litellm.RateLimitError) as replayed_429:
            call(None)
        again = call(None, tools=tools)
    assert str(replayed_429.value) == str(recorded_429.value)
    assert replayed_429.value.status_code == 429
    assert (
        replayed_429.value.litellm_response_headers["retry-after"]
        == (recorded_429.value.litellm_response_headers["retry-after"])
    )
    args = malformed.choices[0].message.tool_calls[0].function.arguments
    assert again.choices[0].message.tool_calls[0].function.arguments == args
    with pytest.raises(json.JSONDecodeError):
        json.loads(args)


def test_a_changed_prompt_fails_naming_agent_step_and_call(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    model = _Model()
    with FakeLLM().http() as base, record_to(path), acting_as(_Agent(7, model)):
        call(base)
        call(base, messages=[{"role": "user", "content": "Where to?"}])
    with FakeLLM.from_cassette(path) as fake, acting_as(_Agent(7, model)):
        call(None)
        with pytest.raises(CassetteMismatchError) as raised:
            call(None, messages=[{"role": "user", "content": "Where to now?"}])
        fake.cassette.problems.clear()  # seen; do not raise it again on exit
    message = str(raised.value)
    assert "agent 7, step 1, call 1" in message
    assert "-user: Where to?" in message and "+user: Where to now?" in message
    # match="identity" accepts the changed prompt and answers with the recording.
    with FakeLLM.from_cassette(path, match="identity"), acting_as(_Agent(7, model)):
        call(None)
        call(None, messages=[{"role": "user", "content": "Where to now?"}])


def test_a_problem_the_model_swallowed_still_fails_the_block(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    with FakeLLM().http() as base, record_to(path):
        call(base)
    missing = "no recorded call for a call outside any agent, step None, call 1"
    with pytest.raises(CassetteMismatchError, match=missing), FakeLLM.from_cassette(path):
        call(None)
        with pytest.raises(CassetteMismatchError):
            call(None)  # a second call was never recorded


def test_missing_generate_answers_with_the_seeded_generator_and_marks_it(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    with FakeLLM().http() as base, record_to(path):
        call(base)
    with FakeLLM.from_cassette(path, missing="generate") as fake:
        call(None)
        extra = call(None)
    assert [c.generated for c in fake.calls] == [False, True]
    generator = FakeLLM(seed=0)  # the cassette's seed; the same (agent, step, call 1)
    generator.complete(MESSAGES)
    assert extra.choices[0].message.content == generator.complete(MESSAGES).content


def test_match_fingerprint_answers_in_order_of_content(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    with FakeLLM(return_value="first").http() as base, record_to(path):
        call(base)
    with FakeLLM.from_cassette(path, match="fingerprint"), acting_as(_Agent(3, _Model())):
        assert call(None).choices[0].message.content == "first"  # recorded outside any agent


def test_faults_layered_over_a_replay_keep_later_calls_on_their_recordings(
    tmp_path: Path,
) -> None:
    path = tmp_path / "c.jsonl"
    with FakeLLM(side_effect=["one", "two"]).http() as base, record_to(path):
        assert call(base).choices[0].message.content == "one"
        assert call(base).choices[0].message.content == "two"
    plan = FaultPlan(0.0).at(agent=None, step=None, call=0, kind=FaultKind.RATE_LIMIT)
    with FakeLLM.from_cassette(path, faults=plan):
        with pytest.raises(litellm.RateLimitError):
            call(None)
        assert call(None).choices[0].message.content == "one"  # the retry gets call 0's reply
        assert call(None).choices[0].message.content == "two"
    assert [f.kind for f in plan.injected] == [FaultKind.RATE_LIMIT]


def test_recording_under_threads_and_tasks_loses_no_line(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    threads, tasks = 8, 8

    def in_thread(uid: int, model: Any) -> None:
        with acting_as(_Agent(uid, model)):
            for i in range(3):
                call(base, messages=[{"role": "user", "content": f"t{uid}-{i}"}])

    async def in_task(uid: int, model: Any) -> None:
        with acting_as(_Agent(uid, model)):
            for i in range(3):
                await litellm.acompletion(
                    model=MODEL,
                    messages=[{"role": "user", "content": f"a{uid}-{i}"}],
                    api_base=base,
                    api_key=SECRET,
                    num_retries=0,
                    max_retries=0,
                )

    async def all_tasks(model: Any) -> None:
        await asyncio.gather(*(in_task(100 + n, model) for n in range(tasks)))

    model = _Model()
    with FakeLLM().http() as base, record_to(path):
        workers = [threading.Thread(target=in_thread, args=(n, model)) for n in range(threads)]
        for worker in workers:
            worker.start()
        asyncio.run(all_tasks(model))
        for worker in workers:
            worker.join(timeout=60)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    keys = [tuple(line["key"]) for line in lines if "key" in line]
    assert len(keys) == len(set(keys)) == (threads + tasks) * 3
    with FakeLLM.from_cassette(path) as fake, acting_as(_Agent(3, model)):
        call(None, messages=[{"role": "user", "content": "t3-0"}])
    assert fake.problems == []


def test_bad_options_and_files_say_what_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    with FakeLLM().http() as base, record_to(path):
        call(base)
    with pytest.raises(ValueError, match="valid values: 'strict', 'identity', 'fingerprint'"):
        FakeLLM.from_cassette(path, match="loose")
    with pytest.raises(ValueError, match="valid values: 'error', 'generate'"):
        FakeLLM.from_cassette(path, missing="skip")
    with pytest.raises(ValueError, match="no such file"):
        FakeLLM.from_cassette(tmp_path / "none.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"x": 1}\n')
    with pytest.raises(ValueError, match="line 1"):
        FakeLLM.from_cassette(tmp_path / "bad.jsonl")


def test_fifty_agents_by_a_hundred_steps_stay_a_few_megabytes(tmp_path: Path) -> None:
    """Size of a cassette of 5,000 calls with memory-like growing prompts (no server needed)."""
    from mesa_llm_testing._cassettes._format import CassetteWriter, fingerprint

    path = tmp_path / "big.jsonl"
    system = {"role": "system", "content": "You are a trader in a market. " * 20}
    writer = CassetteWriter(path, {"seed": 0})
    reply_model = FakeLLM(seed=1)
    for step in range(1, 101):
        for agent in range(50):
            messages = [
                system,
                {
                    "role": "user",
                    "content": f"step {step}: you see agents "
                    + ", ".join(str(a) for a in range(agent, agent + 8)),
                },
            ]
            body = reply_model.complete(messages).to_openai(
                model="gpt-4o-mini", response_id=f"chatcmpl-{step}-{agent}", messages=messages
            )
            writer.write_call(
                {
                    "key": [1, agent, step, 0],
                    "model": MODEL,
                    "fingerprint": fingerprint(messages, None, None, None),
                    "reply": body,
                },
                messages,
                None,
            )
    writer.close()
    size = path.stat().st_size
    assert size < 5_000_000, size  # about 3.6 MB (0.5 MB gzipped)


def test_a_scenario_whose_prompt_changed_fails_its_replay_naming_the_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mesa_llm_testing.scenarios import negotiation

    path = tmp_path / "run.jsonl"
    with FakeLLM(seed=5).http() as base:
        factory = scenario(base)
        with record_to(path, seed=1) as recorder:
            run_scenario(factory, steps=1, mode="asyncio", seed=1, agents=2, llm=recorder)
    monkeypatch.setattr(negotiation, "_PERSONA", "You are a reckless trader.")
    with pytest.raises(CassetteMismatchError) as raised, FakeLLM.from_cassette(path) as fake:
        trace = run_scenario(factory, steps=1, mode="sequential", seed=1, agents=2, llm=fake)
    # Each agent's step failed with the mismatch; leaving the block raised the first one.
    assert set(trace.steps[0].failed.values()) == {"CassetteMismatchError"}
    assert len(fake.problems) == 2
    message = str(raised.value)
    assert re.search(r"agent \d+, step 1, call 0", message), message
    assert "+system: You are a reckless trader." in message
    assert "(and 1 more)" in message


@pytest.mark.parametrize("how", ["sync", "async"])
def test_a_streamed_completion_is_recorded_as_its_whole_reply(tmp_path: Path, how: str) -> None:
    path = tmp_path / "c.jsonl"

    def stream(api_base: str | None) -> str:
        extra = {} if api_base is None else {"api_base": api_base, "api_key": SECRET}
        options = {"model": MODEL, "messages": MESSAGES, "stream": True, "num_retries": 0}
        if how == "sync":
            chunks = list(litellm.completion(**options, **extra))
        else:

            async def collect() -> list[Any]:
                response = await litellm.acompletion(**options, **extra)
                return [chunk async for chunk in response]

            chunks = asyncio.run(collect())
        return "".join(c.choices[0].delta.content or "" for c in chunks)

    with FakeLLM(return_value="a streamed answer").http() as base, record_to(path) as recorder:
        assert stream(base) == "a streamed answer"
    assert recorder.calls.last.response.content == "a streamed answer"
    with FakeLLM.from_cassette(path):
        assert stream(None) == "a streamed answer"


def _three_calls(path: Path) -> list[str]:
    """Record three calls with different prompts to ``path``; their replies."""
    with FakeLLM(seed=4).http() as base, record_to(path):
        return [
            call(base, [{"role": "user", "content": f"move {n}?"}]).choices[0].message.content
            for n in range(3)
        ]


def _replayed(path: Path, calls: int) -> list[str]:
    with FakeLLM.from_cassette(path):
        return [
            call(None, [{"role": "user", "content": f"move {n}?"}]).choices[0].message.content
            for n in range(calls)
        ]


def test_a_gzip_recording_cut_off_before_its_trailer_replays_every_call(tmp_path: Path) -> None:
    whole = tmp_path / "whole.jsonl.gz"
    replies = _three_calls(whole)
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(whole.read_bytes()[:-8])  # a killed recorder: no gzip trailer
    with pytest.warns(UserWarning, match=rf"{re.escape(str(cut))} ends part-way.*kept its 7 "):
        assert _replayed(cut, 3) == replies


def test_a_plain_recording_whose_last_line_is_cut_keeps_the_complete_lines(
    tmp_path: Path,
) -> None:
    path = tmp_path / "c.jsonl"
    replies = _three_calls(path)
    text = path.read_text()
    path.write_text(text[:-30])  # the last call's line written in part
    with pytest.warns(UserWarning, match=rf"{re.escape(str(path))} ends part-way.*kept its 6 "):
        assert _replayed(path, 2) == replies[:2]
    lines = text.splitlines(keepends=True)
    lines[3] = lines[3][:20] + "\n"  # damage in the middle is not a cut-off recording
    path.write_text("".join(lines))
    with pytest.raises(ValueError, match=rf"cassette {re.escape(str(path))}, line 4: "):
        FakeLLM.from_cassette(path)


def test_a_cassette_missing_a_blob_fails_to_load_naming_file_line_and_blob(
    tmp_path: Path,
) -> None:
    path = tmp_path / "c.jsonl"
    _three_calls(path)
    lines = path.read_text().splitlines(keepends=True)
    blob = json.loads(lines[1])["blob"]
    path.write_text("".join(line for line in lines if '"blob"' not in line))
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}, line 2: .*blob '{blob}'"):
        FakeLLM.from_cassette(path)


def test_a_recording_that_cannot_be_replayed_is_one_of_the_problems(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    _three_calls(path)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    lines[-1]["reply"] = {"choices": ["not a choice"]}  # the last call's reply damaged
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    fake = FakeLLM.from_cassette(path)
    with pytest.raises(CassetteMismatchError, match=r"\(line 7\): AttributeError"), fake:
        for n in (0, 1):
            call(None, [{"role": "user", "content": f"move {n}?"}])
        with pytest.raises(Exception, match="cannot replay the recording of"):
            call(None, [{"role": "user", "content": "move 2?"}])
    assert len(fake.problems) == 1


def test_gzip_is_found_by_its_content_not_its_name(tmp_path: Path) -> None:
    gz = tmp_path / "c.jsonl.gz"
    replies = _three_calls(gz)
    named_plain = tmp_path / "saved.jsonl"
    named_plain.write_bytes(gz.read_bytes())
    named_gz = tmp_path / "plain.jsonl.gz"
    named_gz.write_bytes(gzip.decompress(gz.read_bytes()))
    assert _replayed(named_plain, 3) == replies
    assert _replayed(named_gz, 3) == replies
    garbled = tmp_path / "garbled.jsonl"
    garbled.write_bytes(gzip.decompress(gz.read_bytes()).replace(b"move 1?", b"move \xff?"))
    with pytest.raises(ValueError, match=rf"{re.escape(str(garbled))}, line \d+: not UTF-8"):
        FakeLLM.from_cassette(garbled)


def test_a_recording_that_fails_before_its_first_call_leaves_no_file(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / "c.jsonl"
    with pytest.raises(RuntimeError, match="model cannot be built"), record_to(path):
        raise RuntimeError("model cannot be built")
    assert not (tmp_path / "new").exists()
    with record_to(path):  # a finished recording with no call is still a cassette
        pass
    assert FakeLLM.from_cassette(path).cassette.cassette.entries == []
