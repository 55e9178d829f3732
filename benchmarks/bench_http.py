"""What a completion costs through ``FakeLLM.http()`` (a real loopback server), in one run.

Run: ``python benchmarks/bench_http.py [--calls N] [--concurrent C]``. Prints figures,
asserts nothing. Compares ``litellm.acompletion`` against the HTTP server, through the
``mesa-fake`` provider, and with ``mock_response=...`` (litellm alone), as ratios; then
fires C concurrent requests at the server (aiohttp client) and reports requests/s.
Target (issue 8): 500 concurrent requests at >= 1,000 requests/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from mesa_llm._litellm import import_litellm
from mesa_llm_testing import FakeLLM

MESSAGES = [{"role": "user", "content": "What do you do next?"}]


async def mean_us(call: Callable[[], Awaitable[Any]], calls: int, repeats: int = 3) -> float:
    """Median over ``repeats`` runs of the mean time of one awaited call, in microseconds."""
    for _ in range(min(calls, 50)):  # warm up
        await call()
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            await call()
        runs.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(runs)


async def concurrent_rps(api_base: str, concurrent: int) -> tuple[float, int]:
    """Send ``concurrent`` requests at once; (requests/s, number that got a 200)."""
    body = json.dumps({"model": "m", "messages": MESSAGES}).encode()
    headers = {"Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrent)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> int:
            async with session.post(
                f"{api_base}/chat/completions", data=body, headers=headers
            ) as response:
                await response.read()
                return response.status

        await asyncio.gather(*(one() for _ in range(50)))  # open connections, warm up
        start = time.perf_counter()
        statuses = await asyncio.gather(*(one() for _ in range(concurrent)))
        elapsed = time.perf_counter() - start
    return concurrent / elapsed, sum(s == 200 for s in statuses)


async def main(calls: int, concurrent: int) -> None:
    litellm = import_litellm()
    common: dict[str, Any] = {"messages": MESSAGES, "num_retries": 0, "max_retries": 0}

    async def mocked() -> Any:
        return await litellm.acompletion(
            model="openai/gpt-4o-mini", mock_response="hello", **common
        )

    mock_us = await mean_us(mocked, calls)

    fake = FakeLLM(return_value="hello")
    with fake.activate():

        async def provider() -> Any:
            return await litellm.acompletion(model="mesa-fake/bench", **common)

        provider_us = await mean_us(provider, calls)

    http_fake = FakeLLM(return_value="hello")
    with http_fake.http() as api_base:

        async def over_http() -> Any:
            return await litellm.acompletion(
                model="openai/gpt-4o-mini", api_base=api_base, api_key="sk-fake", **common
            )

        http_us = await mean_us(over_http, calls)
        rps, ok = await concurrent_rps(api_base, concurrent)

    print(f"litellm.acompletion(mock_response=...):  {mock_us:8.1f} us/call  (1.00x)")
    print(
        f"through the mesa-fake provider:          {provider_us:8.1f} us/call  "
        f"({provider_us / mock_us:.2f}x mock)"
    )
    print(
        f"over HTTP (FakeLLM.http(), litellm):     {http_us:8.1f} us/call  "
        f"({http_us / mock_us:.2f}x mock, {http_us / provider_us:.2f}x provider)"
    )
    print(
        f"{concurrent} concurrent requests (aiohttp client): {rps:8.0f} requests/s "
        f"({ok}/{concurrent} answered 200; target >= 1000/s)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--concurrent", type=int, default=500)
    options = parser.parse_args()
    asyncio.run(main(options.calls, options.concurrent))
