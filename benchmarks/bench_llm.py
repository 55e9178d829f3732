"""Measure `import mesa_llm` time and `ModuleLLM.agenerate` overhead over `litellm.acompletion`.

Prints figures only (no assertions). Targets from issue 3: import < 0.5 s without
litellm; agenerate <= 1.1x a bare acompletion on the same fake provider.

    python benchmarks/bench_llm.py [--calls 400] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

IMPORT_PROBE = (
    "import sys, time; t = time.perf_counter(); import mesa_llm; "
    "print(time.perf_counter() - t, 'litellm' in sys.modules)"
)


def measure_import(runs: int) -> tuple[float, bool]:
    """Median seconds of ``import mesa_llm`` in fresh interpreters; whether litellm was loaded."""
    seconds, loaded = [], False
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", IMPORT_PROBE], capture_output=True, text=True, check=True
        ).stdout.split()
        seconds.append(float(out[0]))
        loaded |= out[1] == "True"
    return statistics.median(seconds), loaded


async def time_calls(call: Callable[[], Awaitable[Any]], calls: int, concurrency: int) -> float:
    """Mean seconds per call for ``calls`` calls made ``concurrency`` at a time."""
    started = time.perf_counter()
    for _ in range(calls // concurrency):
        await asyncio.gather(*(call() for _ in range(concurrency)))
    return (time.perf_counter() - started) / calls


async def compare(
    bare: Callable[[], Awaitable[Any]],
    wrapped: Callable[[], Awaitable[Any]],
    *,
    calls: int,
    rounds: int,
    concurrency: int,
) -> tuple[float, float]:
    """Best-of-rounds per-call seconds of ``bare`` and ``wrapped``, interleaved round by round.

    The minimum is the figure least disturbed by other load on the machine.
    """
    await time_calls(bare, 50, 1)  # warm litellm's caches and logging worker
    await time_calls(wrapped, 50, 1)
    bare_times, wrapped_times = [], []
    for _ in range(rounds):
        bare_times.append(await time_calls(bare, calls, concurrency))
        wrapped_times.append(await time_calls(wrapped, calls, concurrency))
    return min(bare_times), min(wrapped_times)


def report(label: str, bare: float, wrapped: float) -> None:
    print(
        f"{label:<58} bare {bare * 1e6:8.1f} us/call   ModuleLLM {wrapped * 1e6:8.1f} us/call"
        f"   ratio {wrapped / bare:5.3f}x"
    )


@contextlib.contextmanager
def fake_provider() -> Iterator[str | None]:
    """Activate mesa_llm_testing.FakeLLM's "mesa-fake" provider if the harness provides it."""
    try:
        from mesa_llm_testing import FakeLLM
    except (ImportError, AttributeError):
        yield None
        return
    with FakeLLM(return_value="ok").activate(intercept_all=False):
        yield "mesa-fake/bench"


async def run(calls: int, rounds: int) -> None:
    from mesa_llm._litellm import import_litellm
    from mesa_llm.module_llm import BatchConfig, ModuleLLM

    litellm = import_litellm()
    messages = [{"role": "user", "content": "hello"}]
    mock: dict[str, Any] = {"mock_response": "ok"}

    def bare(model: str, extra: dict[str, Any]) -> Callable[[], Awaitable[Any]]:
        return lambda: litellm.acompletion(
            model=model, messages=messages, num_retries=0, max_retries=0, **extra
        )

    llm = ModuleLLM("openai/gpt-4o-mini", api_key="bench-key")
    key = {"api_key": "bench-key", **mock}
    for concurrency in (1, 16):
        report(
            f"litellm mock_response, {concurrency} concurrent",
            *await compare(
                bare("openai/gpt-4o-mini", key),
                lambda: llm.agenerate("hello", **mock),
                calls=calls,
                rounds=rounds,
                concurrency=concurrency,
            ),
        )
    batched = ModuleLLM(
        "openai/gpt-4o-mini",
        api_key="bench-key",
        batching=BatchConfig(max_batch=16, flush_interval=0.0),
    )
    report(
        "litellm mock_response, 16 concurrent, batching (default)",
        *await compare(
            bare("openai/gpt-4o-mini", key),
            lambda: batched.agenerate("hello", **mock),
            calls=calls,
            rounds=rounds,
            concurrency=16,
        ),
    )

    # ModuleLLM's own cost, with the provider call replaced by a no-op coroutine.
    async def no_op(**kwargs: Any) -> dict[str, Any]:
        return kwargs

    real_acompletion = litellm.acompletion
    setattr(litellm, "acompletion", no_op)  # noqa: B010  (as a harness would)
    try:
        bare_s, wrapped_s = await compare(
            bare("openai/gpt-4o-mini", key),
            lambda: llm.agenerate("hello", **mock),
            calls=calls * 10,
            rounds=rounds,
            concurrency=1,
        )
    finally:
        setattr(litellm, "acompletion", real_acompletion)  # noqa: B010
    print(
        f"{'ModuleLLM own overhead (no-op provider call)':<58} "
        f"{(wrapped_s - bare_s) * 1e6:8.1f} us/call"
    )

    with fake_provider() as fake_model:
        if fake_model is None:
            print("mesa-fake provider: mesa_llm_testing.FakeLLM not available, skipped")
            return
        fake = ModuleLLM(fake_model)
        for concurrency in (1, 16):
            report(
                f"mesa-fake provider, {concurrency} concurrent",
                *await compare(
                    bare(fake_model, {}),
                    lambda: fake.agenerate("hello"),
                    calls=calls,
                    rounds=rounds,
                    concurrency=concurrency,
                ),
            )


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=400, help="calls per round (default 400)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--import-runs", type=int, default=7, help="fresh interpreters (default 7)")
    args = parser.parse_args()

    seconds, loaded = measure_import(args.import_runs)
    print(
        json.dumps({"import_mesa_llm_s": round(seconds, 4), "litellm_imported": loaded}),
        f"(median of {args.import_runs} fresh interpreters; target < 0.5 s, litellm not imported)",
    )
    asyncio.run(run(args.calls, args.rounds))


if __name__ == "__main__":
    main()
