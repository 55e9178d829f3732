"""Transparent batching: counts, per-item isolation, batch-wide errors, cancellation, loops."""

from __future__ import annotations

import asyncio
import gc
import json
import weakref
from collections.abc import Iterator
from contextlib import suppress
from typing import Any

import httpx
import mesa
import pytest
import respx

from mesa_llm._litellm import import_litellm
from mesa_llm.errors import MalformedResponseError, MesaLLMError
from mesa_llm.module_llm import BatchConfig, BatchProcessor, ModuleLLM, RetryPolicy
from mesa_llm.parallel_stepping import acting_as, current_agent

litellm = import_litellm()

API_BASE = "https://llm.test/v1"
NO_WAIT = RetryPolicy(sleep=lambda _: None)


def reply(content: str) -> Any:
    """A ModelResponse whose message content is ``content``."""
    return litellm.ModelResponse(
        choices=[
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ]
    )


def prompt_of(request: dict[str, Any]) -> str:
    return str(request["messages"][-1]["content"])


def content_of(response: Any) -> str:
    return str(response.choices[0].message.content)


class EchoBatchBackend:
    """A true batch backend: one call per batch, answering each request with its prompt.

    ``answers`` maps a prompt to what to return for it instead (an exception, or a
    list of outcomes consumed one per attempt); ``gate`` holds every call until set.
    """

    def __init__(self, answers: dict[str, Any] | None = None) -> None:
        self.batches: list[list[str]] = []
        self.answers = answers or {}
        self.gate: asyncio.Event | None = None
        self.cancelled = 0
        self.agents_seen: list[Any] = []

    async def __call__(self, requests: list[dict[str, Any]]) -> list[Any]:
        self.batches.append([prompt_of(r) for r in requests])
        self.agents_seen.append(current_agent())
        try:
            if self.gate is not None:
                await self.gate.wait()
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return [self._answer(prompt_of(r)) for r in requests]

    def _answer(self, prompt: str) -> Any:
        answer = self.answers.get(prompt, reply(prompt))
        if isinstance(answer, list):
            return answer.pop(0) if len(answer) > 1 else answer[0]
        return answer


def batched_llm(
    backend: Any = None, *, max_batch: int = 16, flush_interval: float = 0.01, **kwargs: Any
) -> ModuleLLM:
    config = BatchConfig(max_batch=max_batch, flush_interval=flush_interval, batch_backend=backend)
    kwargs.setdefault("retry", NO_WAIT)
    return ModuleLLM("mesa-fake/batch-test", batching=config, **kwargs)


def mesa_llm_tasks(loop: asyncio.AbstractEventLoop | None = None) -> set[asyncio.Task[Any]]:
    """Unfinished tasks running mesa_llm code (litellm keeps its own logging worker task)."""
    return {
        task
        for task in asyncio.all_tasks(loop)
        if "/mesa_llm/" in getattr(getattr(task.get_coro(), "cr_code", None), "co_filename", "")
    }


# --- counts ---


async def test_160_concurrent_calls_make_10_batches_of_16() -> None:
    backend = EchoBatchBackend()
    llm = batched_llm(backend, max_batch=16, flush_interval=60.0)  # only size can flush

    answers = await asyncio.wait_for(
        asyncio.gather(*(llm.agenerate(f"p{i}") for i in range(160))), timeout=10
    )

    assert len(backend.batches) == 10
    assert [len(batch) for batch in backend.batches] == [16] * 10
    assert [content_of(a) for a in answers] == [f"p{i}" for i in range(160)]


async def test_a_partial_batch_flushes_after_the_interval() -> None:
    backend = EchoBatchBackend()
    llm = batched_llm(backend, max_batch=16, flush_interval=0.05)
    loop = asyncio.get_running_loop()

    started = loop.time()
    answers = await asyncio.gather(*(llm.agenerate(f"p{i}") for i in range(5)))

    assert loop.time() - started >= 0.05
    assert backend.batches == [[f"p{i}" for i in range(5)]]
    assert [content_of(a) for a in answers] == [f"p{i}" for i in range(5)]


async def test_modules_with_the_same_configuration_share_a_processor() -> None:
    backend = EchoBatchBackend()
    first, second = batched_llm(backend, max_batch=8), batched_llm(backend, max_batch=8)
    different = batched_llm(backend, max_batch=8, temperature=0.3)

    await asyncio.gather(
        *(first.agenerate(f"a{i}") for i in range(4)),
        *(second.agenerate(f"b{i}") for i in range(4)),
        *(different.agenerate(f"c{i}") for i in range(4)),
    )

    assert sorted(sorted(batch) for batch in backend.batches) == [
        ["a0", "a1", "a2", "a3", "b0", "b1", "b2", "b3"],
        ["c0", "c1", "c2", "c3"],
    ]


async def test_sync_generate_with_batching_calls_directly() -> None:
    backend = EchoBatchBackend()
    config = BatchConfig(batch_backend=backend)
    llm = ModuleLLM("openai/gpt-4o-mini", api_key="k", batching=config)

    response = await asyncio.to_thread(llm.generate, "direct", mock_response="answered directly")

    assert content_of(response) == "answered directly"
    assert backend.batches == []


# --- per-item and batch-wide outcomes ---


async def test_one_failing_item_fails_only_its_caller() -> None:
    bad = MalformedResponseError("unparseable", raw="{oops")
    backend = EchoBatchBackend({"p3": bad})
    llm = batched_llm(backend, max_batch=8)

    outcomes = await asyncio.gather(
        *(llm.agenerate(f"p{i}") for i in range(8)), return_exceptions=True
    )

    assert outcomes[3] is bad
    assert [content_of(o) for i, o in enumerate(outcomes) if i != 3] == [
        f"p{i}" for i in range(8) if i != 3
    ]
    assert len(backend.batches) == 1


async def test_a_transient_item_error_is_retried_in_a_later_batch() -> None:
    rate_limited = litellm.RateLimitError("slow down", llm_provider="fake", model="m")
    backend = EchoBatchBackend({"flaky": [rate_limited, reply("second try")]})
    sleeps: list[float] = []
    llm = batched_llm(backend, max_batch=4, retry=RetryPolicy(sleep=sleeps.append))

    outcomes = await asyncio.gather(
        llm.agenerate("flaky"), *(llm.agenerate(f"p{i}") for i in range(3))
    )

    assert [content_of(o) for o in outcomes] == ["second try", "p0", "p1", "p2"]
    assert backend.batches == [["flaky", "p0", "p1", "p2"], ["flaky"]]
    assert len(sleeps) == 1


async def test_a_batch_wide_error_reaches_every_caller() -> None:
    crash = RuntimeError("pipeline crashed")

    async def crashing(requests: list[dict[str, Any]]) -> list[Any]:
        raise crash

    llm = batched_llm(crashing, max_batch=16)
    outcomes = await asyncio.gather(
        *(llm.agenerate(f"p{i}") for i in range(16)), return_exceptions=True
    )

    assert all(o is crash for o in outcomes)


async def test_a_batch_wide_rate_limit_is_retried_by_each_caller_then_given_up() -> None:
    calls: list[int] = []

    async def rate_limited(requests: list[dict[str, Any]]) -> list[Any]:
        calls.append(len(requests))
        raise litellm.RateLimitError("slow down", llm_provider="fake", model="m")

    llm = batched_llm(
        rate_limited, max_batch=8, retry=RetryPolicy(max_attempts=3, sleep=lambda _: None)
    )
    outcomes = await asyncio.gather(
        *(llm.agenerate(f"p{i}") for i in range(8)), return_exceptions=True
    )

    assert calls == [8, 8, 8]
    assert all(isinstance(o, litellm.RateLimitError) for o in outcomes)
    notes = [n for n in getattr(outcomes[0], "__notes__", []) if "gave up" in n]
    assert notes == ["mesa_llm: gave up after 3 attempts (RetryPolicy.max_attempts=3)"]


async def test_a_backend_returning_the_wrong_count_fails_every_caller_clearly() -> None:
    async def short(requests: list[dict[str, Any]]) -> list[Any]:
        return [reply("only one")]

    llm = batched_llm(short, max_batch=3)
    outcomes = await asyncio.gather(
        *(llm.agenerate(f"p{i}") for i in range(3)), return_exceptions=True
    )

    assert all(isinstance(o, MesaLLMError) for o in outcomes)
    assert "returned 1 results for 3 requests" in str(outcomes[0])


# --- default backend: concurrent litellm.acompletion requests ---


@pytest.fixture
def provider() -> Iterator[respx.Route]:
    """An OpenAI-compatible provider echoing the prompt; prompt "bad" gets a 400, "hang" hangs."""

    async def answer(request: httpx.Request) -> httpx.Response:
        prompt = json.loads(request.content)["messages"][-1]["content"]
        if prompt == "bad":
            return httpx.Response(400, json={"error": {"message": "bad request"}})
        if prompt == "hang":
            await asyncio.sleep(60)
        message = {"role": "assistant", "content": prompt}
        return httpx.Response(
            200,
            json={
                "id": "x",
                "object": "chat.completion",
                "created": 0,
                "model": "gpt-4o-mini",
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            },
        )

    with respx.mock(using="httpx", assert_all_called=False) as router:
        yield router.post(f"{API_BASE}/chat/completions").mock(side_effect=answer)


def note_hanging(provider: respx.Route) -> asyncio.Event:
    """An event set once the provider has received the "hang" request."""
    entered = asyncio.Event()
    answer = provider.side_effect

    async def noting(request: httpx.Request) -> httpx.Response:
        if json.loads(request.content)["messages"][-1]["content"] == "hang":
            entered.set()
        return await answer(request)  # type: ignore[misc,operator]

    provider.mock(side_effect=noting)
    return entered


def http_llm(max_batch: int = 8) -> ModuleLLM:
    return ModuleLLM(
        "openai/gpt-4o-mini",
        api_base=API_BASE,
        api_key="test-key",
        retry=NO_WAIT,
        batching=BatchConfig(max_batch=max_batch),
    )


async def test_default_backend_sends_each_request_and_isolates_failures(
    provider: respx.Route,
) -> None:
    prompts = ["p0", "bad", "p2", "p3"]
    outcomes = await asyncio.gather(
        *(http_llm().agenerate(p) for p in prompts), return_exceptions=True
    )

    assert isinstance(outcomes[1], litellm.BadRequestError)
    assert [content_of(o) for i, o in enumerate(outcomes) if i != 1] == ["p0", "p2", "p3"]
    assert provider.call_count == 4


async def test_default_backend_requests_run_in_each_callers_context(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: dict[str, Any] = {}
    acompletion = litellm.acompletion

    async def recording(**kwargs: Any) -> Any:
        seen[prompt_of(kwargs)] = current_agent()
        return await acompletion(**kwargs)

    monkeypatch.setattr(litellm, "acompletion", recording)
    model = mesa.Model(seed=3)
    agents = [mesa.Agent(model) for _ in range(20)]
    llm = ModuleLLM(
        "openai/gpt-4o-mini", api_key="k", retry=NO_WAIT, batching=BatchConfig(max_batch=8)
    )

    async def step(agent: mesa.Agent) -> None:
        with acting_as(agent):
            await llm.agenerate(f"agent {agent.unique_id}", mock_response="ok")

    owner = mesa.Agent(model)
    owned = ModuleLLM(
        "openai/gpt-4o-mini", api_key="k", batching=BatchConfig(max_batch=8), agent=owner
    )
    await asyncio.gather(*(step(a) for a in agents), owned.agenerate("owned", mock_response="ok"))

    assert seen == {f"agent {a.unique_id}": a for a in agents} | {"owned": owner}


async def test_a_true_batch_backend_runs_outside_any_agents_context() -> None:
    backend = EchoBatchBackend()
    agent = mesa.Agent(mesa.Model(seed=1))
    with acting_as(agent):
        await batched_llm(backend, max_batch=1).agenerate("x")
    assert backend.agents_seen == [None]


# --- cancellation ---


async def test_a_caller_cancelled_while_queued_is_dropped_from_the_batch() -> None:
    backend = EchoBatchBackend()
    llm = batched_llm(backend, max_batch=16, flush_interval=0.05)

    tasks = [asyncio.create_task(llm.agenerate(f"p{i}")) for i in range(4)]
    await asyncio.sleep(0)
    tasks[1].cancel()
    done = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=5)

    assert isinstance(done[1], asyncio.CancelledError)
    assert [content_of(done[i]) for i in (0, 2, 3)] == ["p0", "p2", "p3"]
    assert backend.batches == [["p0", "p2", "p3"]]


async def test_a_caller_cancelled_mid_batch_does_not_hang_or_break_the_others() -> None:
    backend = EchoBatchBackend()
    backend.gate = asyncio.Event()
    llm = batched_llm(backend, max_batch=4)

    tasks = [asyncio.create_task(llm.agenerate(f"p{i}")) for i in range(4)]
    while not backend.batches:
        await asyncio.sleep(0)
    tasks[2].cancel()
    await asyncio.sleep(0)
    backend.gate.set()
    done = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=5)

    assert isinstance(done[2], asyncio.CancelledError)
    assert [content_of(done[i]) for i in (0, 1, 3)] == ["p0", "p1", "p3"]
    assert backend.cancelled == 0


async def test_when_every_caller_of_a_batch_is_cancelled_the_batch_call_is_cancelled() -> None:
    backend = EchoBatchBackend()
    backend.gate = asyncio.Event()  # never set
    llm = batched_llm(backend, max_batch=2)

    tasks = [asyncio.create_task(llm.agenerate(f"p{i}")) for i in range(2)]
    while not backend.batches:
        await asyncio.sleep(0)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for _ in range(3):
        await asyncio.sleep(0)

    assert backend.cancelled == 1


async def test_default_backend_cancels_only_the_cancelled_callers_request(
    provider: respx.Route,
) -> None:
    llm = http_llm(max_batch=3)
    entered = note_hanging(provider)
    hanging = asyncio.create_task(llm.agenerate("hang"))
    others = [asyncio.create_task(llm.agenerate(p)) for p in ("p1", "p2")]

    answers = await asyncio.wait_for(asyncio.gather(*others), timeout=5)
    await asyncio.wait_for(entered.wait(), timeout=5)
    assert len(mesa_llm_tasks() - {hanging}) == 1  # the hanging request is still in flight
    hanging.cancel()
    with pytest.raises(asyncio.CancelledError):
        await hanging
    await asyncio.sleep(0)

    assert [content_of(a) for a in answers] == ["p1", "p2"]
    assert mesa_llm_tasks() == set()


# --- event loops ---


def test_no_task_is_left_running_when_the_loop_closes() -> None:
    backend = EchoBatchBackend()
    llm = batched_llm(backend, max_batch=16, flush_interval=0.02)

    async def simulation() -> set[asyncio.Task[Any]]:
        steps = [asyncio.create_task(llm.agenerate(f"p{i}")) for i in range(37)]
        await asyncio.sleep(0)
        steps[36].cancel()  # queued alone in the last partial batch
        await asyncio.gather(*steps, return_exceptions=True)
        return asyncio.all_tasks() - {asyncio.current_task()}  # type: ignore[operator]

    loop = asyncio.new_event_loop()
    try:
        leftover = loop.run_until_complete(simulation())
        assert leftover == set()
        assert asyncio.all_tasks(loop) == set()
    finally:
        loop.close()
    assert [len(b) for b in backend.batches] == [16, 16, 4]


def test_no_request_is_left_when_a_cancelled_caller_ends_the_loop(provider: respx.Route) -> None:
    llm = http_llm(max_batch=1)

    async def simulation() -> None:
        entered = note_hanging(provider)
        step = asyncio.create_task(llm.agenerate("hang"))
        await asyncio.wait_for(entered.wait(), timeout=5)
        step.cancel()
        with suppress(asyncio.CancelledError):
            await step

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(simulation())
        assert mesa_llm_tasks(loop) == set()
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def test_processors_are_per_loop_and_do_not_outlive_it() -> None:
    config = BatchConfig(batch_backend=EchoBatchBackend())

    async def processor() -> BatchProcessor:
        shared = BatchProcessor.shared("key", config)
        assert BatchProcessor.shared("key", config) is shared
        await shared.submit({"messages": [{"role": "user", "content": "x"}]})
        return shared

    first = asyncio.run(processor())
    second = asyncio.run(processor())
    assert first is not second

    dead = weakref.ref(first)
    del first
    gc.collect()
    assert dead() is None


def test_a_processor_refuses_to_cross_loops() -> None:
    processor = BatchProcessor(BatchConfig(batch_backend=EchoBatchBackend()))
    request = {"messages": [{"role": "user", "content": "x"}]}
    asyncio.run(processor.submit(request))

    with pytest.raises(RuntimeError, match="mesa_llm: a BatchProcessor is bound to the event loop"):
        asyncio.run(processor.submit(request))


# --- configuration ---


@pytest.mark.parametrize(
    ("kwargs", "error", "named"),
    [
        ({"max_batch": 0}, ValueError, "max_batch"),
        ({"max_batch": 2.5}, TypeError, "max_batch"),
        ({"flush_interval": -0.1}, ValueError, "flush_interval"),
        ({"flush_interval": float("nan")}, ValueError, "flush_interval"),
        ({"batch_backend": "hf-pipeline"}, TypeError, "batch_backend"),
    ],
)
def test_invalid_batch_config_names_the_option(
    kwargs: dict[str, Any], error: type[Exception], named: str
) -> None:
    with pytest.raises(error, match=rf"mesa_llm: BatchConfig\({named}="):
        BatchConfig(**kwargs)


def test_batch_config_defaults() -> None:
    assert (BatchConfig().max_batch, BatchConfig().flush_interval) == (16, 0.01)
    assert hash(BatchConfig()) == hash(BatchConfig())  # part of the processor's key
