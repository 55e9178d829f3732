"""RateLimiter: requests per minute, tokens per minute and requests in flight, on a fake clock."""

from __future__ import annotations

import asyncio
import bisect
import threading
from collections.abc import Iterator
from typing import Any
from unittest.mock import DEFAULT

import pytest
from resilience_models import PRIMARY, AskModel, FakeClock

from mesa_llm import ModuleLLM, RateLimiter, RetryPolicy
from mesa_llm._rate_limit import estimate_tokens
from mesa_llm_testing import FakeLLM, FakeRequest, ProviderLimits

MODES = ["sequential", "asyncio", "threading"]


@pytest.fixture
def fake() -> Iterator[FakeLLM]:
    with FakeLLM(seed=3).activate() as llm:
        yield llm


def limiter(clock: FakeClock, **limits: Any) -> RateLimiter:
    return RateLimiter(**limits, clock=clock, sleep=clock.sleep)


def in_any_window(times: list[float], width: float = 60.0) -> int:
    """The most of ``times`` that fall in one window of ``width`` seconds."""
    times = sorted(times)
    return max(
        (bisect.bisect_left(times, start + width) - i for i, start in enumerate(times)), default=0
    )


def test_rpm_admits_a_full_window_then_waits_for_its_oldest_request_to_expire() -> None:
    clock = FakeClock(start=0.0)
    rpm = limiter(clock, rpm=3)
    for _ in range(3):
        rpm.acquire().release()
        clock.now += 5
    assert clock.slept == [] and rpm.usage() == (3, 3)
    rpm.acquire().release()
    assert clock.now == 60.0  # the first request left the window
    assert rpm.usage() == (3, 3)


def test_tpm_counts_estimated_then_reported_tokens() -> None:
    clock = FakeClock(start=0.0)
    tpm = limiter(clock, tpm=100)
    with tpm.acquire(60) as permit:
        permit.record_tokens(30)  # the provider's usage replaces the estimate
    with tpm.acquire(70):
        pass
    assert clock.slept == [] and tpm.usage() == (2, 100)
    tpm.acquire(1).release()
    assert clock.now == 60.0
    clock.advance(60)
    tpm.acquire(500).release()  # larger than tpm on its own: admitted into an empty window
    assert clock.now == 120.0


def test_a_refunded_permit_was_never_sent() -> None:
    clock = FakeClock(start=0.0)
    rpm = limiter(clock, rpm=1)
    rpm.acquire().refund()
    rpm.acquire().release()
    assert clock.slept == []


def test_a_request_held_up_past_its_window_counts_until_a_window_after_its_release() -> None:
    # A permit granted at 0 whose request reaches the provider only after the window moved
    # on (a full connection pool, a pre-empted thread, a fake clock another thread moved):
    # the provider counts it when it arrives, so the limiter must not refill behind it.
    clock = FakeClock(start=0.0)
    shared = limiter(clock, rpm=2)
    with FakeLLM(seed=3, limits=ProviderLimits(rpm=2), clock=clock).activate() as fake:
        llm = ModuleLLM(PRIMARY, retry=RetryPolicy(max_attempts=1))
        held_up = shared.acquire()
        with shared.acquire():
            llm.generate("sent at once")
        on_time = shared.acquire()  # the window is full until 60
        assert clock.now == 60.0 and shared.usage() == (2, 2)  # the held-up one still counts
        with on_time:
            llm.generate("sent at 60")
        with held_up:
            llm.generate("sent late, at 60")
        with shared.acquire():  # two sent at 60: the next waits for 120
            llm.generate("sent at 120")
    assert clock.now == 120.0
    assert list(fake.limited) == [] and fake.call_count == 4


def test_every_request_counts_until_a_window_after_its_release() -> None:
    # Held up for 30 s before it reached the provider, released at 31: the provider may
    # have counted it as late as 31, so the next request waits until 91.
    clock = FakeClock(start=0.0)
    shared = limiter(clock, rpm=1)
    held_up = shared.acquire()
    clock.advance(31)
    held_up.release()
    shared.acquire().release()
    assert clock.now == 91.0


def test_a_request_released_after_its_window_counts_on_though_nobody_looked_meanwhile() -> None:
    clock = FakeClock(start=0.0)
    shared = limiter(clock, rpm=1)
    slow = shared.acquire()
    clock.advance(70)  # past its window, with no call to the limiter in between
    slow.release()
    shared.acquire().release()
    assert clock.now == 130.0  # a window after the release, not at once


def test_a_request_in_flight_past_its_window_waits_for_its_release_to_make_room() -> None:
    clock = FakeClock(start=0.0)
    shared = limiter(clock, rpm=1, tpm=10)
    slow = shared.acquire(5)
    clock.advance(61)
    assert shared.usage() == (1, 5)  # in flight: still counted
    admitted: list[float] = []
    waiter = threading.Thread(target=lambda: admitted.append(shared.acquire().release() or clock()))
    waiter.start()
    waiter.join(0.05)
    assert waiter.is_alive() and admitted == []  # no clock wait can make room: only a release
    slow.release()  # counted again from now, for a window
    waiter.join(5)
    assert admitted == [121.0] and clock.now == 121.0


async def test_max_concurrent_waits_in_fifo_order_without_blocking_the_loop() -> None:
    clock = FakeClock()
    slots = limiter(clock, max_concurrent=2)
    held = [await slots.aacquire(), await slots.aacquire()]
    admitted: list[int] = []

    async def wait_for_a_slot(n: int) -> None:
        permit = await slots.aacquire()
        admitted.append(n)
        held.append(permit)

    waiters = [asyncio.create_task(wait_for_a_slot(n)) for n in range(3)]
    for _ in range(5):
        await asyncio.sleep(0)  # the loop keeps running while they wait
    assert admitted == [] and slots.in_flight == 2
    held.pop(0).release()
    await asyncio.wait_for(waiters[0], 1)
    assert admitted == [0]
    held.pop(0).release()
    held.pop(0).release()
    await asyncio.wait_for(asyncio.gather(*waiters), 1)
    assert admitted == [0, 1, 2] and slots.in_flight == 2


async def test_threads_and_tasks_share_one_queue() -> None:
    slots = RateLimiter(max_concurrent=1)
    permit = slots.acquire()
    got: list[str] = []
    thread = threading.Thread(target=lambda: (slots.acquire().release(), got.append("thread")))
    thread.start()

    async def task() -> None:
        (await slots.aacquire()).release()
        got.append("task")

    waiting = asyncio.create_task(task())
    await asyncio.sleep(0.01)
    assert got == []
    permit.release()
    await asyncio.wait_for(waiting, 5)
    await asyncio.to_thread(thread.join, 5)
    assert sorted(got) == ["task", "thread"] and slots.in_flight == 0


async def test_a_cancelled_waiter_leaves_the_queue() -> None:
    slots = RateLimiter(max_concurrent=1)
    permit = await slots.aacquire()
    first = asyncio.create_task(slots.aacquire())
    second = asyncio.create_task(slots.aacquire())
    await asyncio.sleep(0)
    first.cancel()
    permit.release()
    (await asyncio.wait_for(second, 1)).release()
    assert first.cancelled() and slots.in_flight == 0


def test_the_token_estimate_is_documented_chars_over_four_plus_the_allowance() -> None:
    request = {
        "messages": [
            {"role": "user", "content": "x" * 40},
            {"role": "user", "content": [{"type": "text", "text": "y" * 8}]},
        ],
        "max_tokens": 5,
    }
    assert estimate_tokens(request) == 10 + 2 + 5
    assert estimate_tokens({"messages": []}) == 1


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({}, ValueError, r"\) needs at least one of rpm=\.\.\., tpm=\.\.\., max_concurrent"),
        ({"rpm": 0}, ValueError, r"rpm=0\) is invalid; valid values are None or integers >= 1"),
        ({"tpm": 1.5}, ValueError, r"tpm=1\.5\) is invalid"),
        ({"max_concurrent": True}, ValueError, r"max_concurrent=True\) is invalid"),
        ({"rpm": 1, "clock": lambda: 0.0}, TypeError, r"clock=\.\.\., sleep=\.\.\.\) go together"),
    ],
)
def test_bad_settings_are_named(kwargs: dict, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=r"mesa_llm: RateLimiter\(" + message):
        RateLimiter(**kwargs)


@pytest.mark.parametrize("mode", MODES)
def test_a_shared_limiter_keeps_every_window_of_a_step_within_rpm(fake: FakeLLM, mode: str) -> None:
    n, rpm = 25, 10
    clock = FakeClock(start=0.0)
    # One in flight: the fake clock never jumps while a request is between the limiter and
    # the provider, so the times the provider sees are the times the limiter admitted.
    shared = limiter(clock, rpm=rpm, max_concurrent=1)
    sent: list[float] = []
    in_flight: list[int] = []
    lock = threading.Lock()

    def provider(request: FakeRequest) -> Any:
        with lock:
            sent.append(clock())
            in_flight.append(shared.in_flight)
        return DEFAULT

    fake.side_effect = provider
    model = AskModel(n, mode, rate_limiter=shared)
    report = model.run_step()

    assert report.ok and len(sent) == n
    assert in_any_window(sent) == rpm
    assert 60.0 * 2 <= clock.now < 60.0 * 3  # 25 requests at 10 a minute: two waits
    assert set(in_flight) == {1}  # the permit is held while the provider answers


def test_a_limiter_is_shared_by_module_llms_and_counts_reported_usage(fake: FakeLLM) -> None:
    clock = FakeClock(start=0.0)
    shared = limiter(clock, tpm=10_000)
    one, other = ModuleLLM(PRIMARY, rate_limiter=shared), ModuleLLM(PRIMARY, rate_limiter=shared)
    responses = [one.generate("hello"), other.generate("hello")]
    reported = sum(response.usage.total_tokens for response in responses)
    assert reported != 2 * estimate_tokens({"messages": [{"content": "hello"}]})
    assert shared.usage() == (2, reported)


async def test_a_thousand_tasks_and_four_threads_stay_within_every_limit() -> None:
    rpm, most = 100, 8
    clock = FakeClock(start=0.0)
    shared = limiter(clock, rpm=rpm, max_concurrent=most)
    started: list[float] = []
    in_flight: list[int] = []
    lock = threading.Lock()

    def sent() -> None:
        with lock:
            started.append(clock())
            in_flight.append(shared.in_flight)

    async def task() -> None:
        with await shared.aacquire():
            sent()
            await asyncio.sleep(0)  # still in flight while other tasks run

    def thread() -> None:
        for _ in range(50):
            with shared.acquire():
                sent()

    threads = [threading.Thread(target=thread) for _ in range(4)]
    for t in threads:
        t.start()
    await asyncio.wait_for(asyncio.gather(*(task() for _ in range(1000))), 60)
    for t in threads:
        await asyncio.to_thread(t.join, 60)

    assert len(started) == 1200 and shared.in_flight == 0
    assert in_any_window(started) == rpm  # never more than rpm in any minute
    assert max(in_flight) <= most
    assert clock.now == pytest.approx(60.0 * 11)  # 1,200 requests at 100 a minute


def test_an_async_sleep_in_a_sync_acquire_is_refused_naming_the_async_way() -> None:
    clock = FakeClock(start=0.0)

    async def asleep(seconds: float) -> None:
        clock.sleep(seconds)

    rpm = RateLimiter(rpm=1, clock=clock, sleep=asleep)
    rpm.acquire().release()
    with pytest.raises(
        TypeError, match=r"RateLimiter\(sleep=...\) returned an awaitable.*aacquire"
    ):
        rpm.acquire()  # the window is full: it would have to wait with the async sleep
    assert rpm.in_flight == 0
