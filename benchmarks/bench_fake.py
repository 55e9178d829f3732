"""How much a FakeLLM call costs: direct, through the litellm provider, and over HTTP.

Run: ``python benchmarks/bench_fake.py [--calls N]``. Prints figures, asserts nothing.
Targets (issue 4): a direct in-process reply <= 20 us; a call through the
``mesa-fake`` provider <= 1.2x ``litellm.acompletion(mock_response=...)``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from mesa_llm._litellm import import_litellm
from mesa_llm_testing import FakeLLM

MESSAGES = [{"role": "user", "content": "What do you do next?"}]
MOVE = {
    "type": "function",
    "function": {
        "name": "move",
        "parameters": {
            "type": "object",
            "properties": {
                "dx": {"type": "integer", "minimum": -1, "maximum": 1},
                "dy": {"type": "integer", "minimum": -1, "maximum": 1},
            },
            "required": ["dx", "dy"],
        },
    },
}


def per_call_us(fn: Callable[[], Any], calls: int, repeats: int = 5) -> float:
    """Median over ``repeats`` runs of the mean time of one ``fn()`` call, in microseconds."""
    for _ in range(min(calls, 200)):
        fn()
    runs = []
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        runs.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(runs)


def per_call_us_async(fn: Callable[[], Awaitable[Any]], calls: int, repeats: int = 5) -> float:
    """Async :func:`per_call_us`, awaiting calls one after another on one loop."""

    async def run() -> float:
        for _ in range(min(calls, 100)):
            await fn()
        runs = []
        for _ in range(repeats):
            gc.collect()
            start = time.perf_counter()
            for _ in range(calls):
                await fn()
            runs.append((time.perf_counter() - start) / calls * 1e6)
        return statistics.median(runs)

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=2000, help="calls per timed run")
    args = parser.parse_args()
    n = args.calls

    fake = FakeLLM(seed=1)

    def direct_text() -> Any:
        return fake.complete(MESSAGES)

    def direct_tool() -> Any:
        return fake.complete(MESSAGES, tools=[MOVE])

    text_us = per_call_us(direct_text, n * 10)
    fake.reset_mock()
    tool_us = per_call_us(direct_tool, n * 10)
    fake.reset_mock()
    print(f"direct FakeLLM.complete, text reply:      {text_us:8.2f} us/call  (target <= 20)")
    print(f"direct FakeLLM.complete, tool-call reply: {tool_us:8.2f} us/call")

    litellm: Any = import_litellm()
    litellm.suppress_debug_info = True
    calls = max(200, n // 4)

    async def mock_async() -> Any:
        return await litellm.acompletion(
            model="openai/gpt-4o-mini", messages=MESSAGES, mock_response="hello"
        )

    async def provider_async() -> Any:
        return await litellm.acompletion(model="mesa-fake/bench", messages=MESSAGES)

    async def intercepted_async() -> Any:
        return await litellm.acompletion(model="openai/gpt-4o-mini", messages=MESSAGES)

    def mock_sync() -> Any:
        return litellm.completion(
            model="openai/gpt-4o-mini", messages=MESSAGES, mock_response="hello"
        )

    def provider_sync() -> Any:
        return litellm.completion(model="mesa-fake/bench", messages=MESSAGES)

    # Interleave baseline and fake runs so drift in machine load hits both alike.
    results: dict[str, list[float]] = {k: [] for k in ("mock", "prov", "icpt", "mock_s", "prov_s")}
    fake = FakeLLM(return_value="hello")
    for _ in range(3):
        results["mock"].append(per_call_us_async(mock_async, calls, repeats=3))
        results["mock_s"].append(per_call_us(mock_sync, calls, repeats=3))
        with fake.activate():
            results["prov"].append(per_call_us_async(provider_async, calls, repeats=3))
            results["icpt"].append(per_call_us_async(intercepted_async, calls, repeats=3))
            results["prov_s"].append(per_call_us(provider_sync, calls, repeats=3))
            fake.reset_mock()
    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"litellm.acompletion(mock_response=...):   {med['mock']:8.1f} us/call")
    print(
        f"litellm.acompletion('mesa-fake/...'):     {med['prov']:8.1f} us/call  "
        f"ratio {med['prov'] / med['mock']:.2f}x (target <= 1.2x)"
    )
    print(
        f"litellm.acompletion('openai/...') intercepted: {med['icpt']:8.1f} us/call  "
        f"ratio {med['icpt'] / med['mock']:.2f}x"
    )
    print(f"litellm.completion(mock_response=...):    {med['mock_s']:8.1f} us/call")
    print(
        f"litellm.completion('mesa-fake/...'):      {med['prov_s']:8.1f} us/call  "
        f"ratio {med['prov_s'] / med['mock_s']:.2f}x"
    )

    http_fake = FakeLLM(return_value="hello")
    with http_fake.http() as api_base:

        def over_http() -> Any:
            return litellm.completion(
                model="openai/gpt-4o-mini",
                messages=MESSAGES,
                api_base=api_base,
                api_key="sk-bench",
                num_retries=0,
                max_retries=0,
            )

        http_us = per_call_us(over_http, max(100, n // 10), repeats=3)
    print(f"litellm.completion over FakeLLM.http():   {http_us:8.1f} us/call")


if __name__ == "__main__":
    main()
