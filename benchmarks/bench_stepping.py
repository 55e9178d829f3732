"""Parallel stepping overhead: prints ms per step and ratios, asserts nothing.

Uses only the documented API (``step_agents_parallel``, ``step_agents_multithreaded``,
``enable_automatic_parallel_stepping``), so the same script runs against the published
``mesa-llm==0.2.0`` in another virtualenv for comparison::

    python benchmarks/bench_stepping.py            # this checkout
    python benchmarks/bench_stepping.py --quick    # smaller, for CI smoke runs
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import inspect
import math
import statistics
import threading
import time
import tracemalloc
from collections.abc import Awaitable, Callable

from mesa import Agent, Model

from mesa_llm import parallel_stepping as ps


class BenchAgent(Agent):
    """An agent whose step is a simulated LLM call of ``latency`` seconds (0: no wait)."""

    latency = 0.0

    async def astep(self) -> None:
        if self.latency:
            await asyncio.sleep(self.latency)

    def step(self) -> None:
        if self.latency:
            time.sleep(self.latency)


class SyncBenchAgent(Agent):
    """Only a sync step, for threading mode with blocking latency."""

    latency = 0.0

    def step(self) -> None:
        if self.latency:
            time.sleep(self.latency)


class BenchModel(Model):
    def __init__(self, n: int, latency: float, agent_cls: type[Agent] = BenchAgent) -> None:
        super().__init__(seed=1)
        self.parallel_stepping = False
        agent_cls.latency = latency  # type: ignore[attr-defined]
        for _ in range(n):
            agent_cls(self)

    def step(self) -> None:
        self.agents.shuffle_do("step")


def _best_ms(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn`` in ms over ``repeats`` runs (after one warm-up)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _async_pair_ms(
    floor: Callable[[], Awaitable[object]], candidate: Callable[[], Awaitable[object]], repeats: int
) -> tuple[float, float]:
    """Median ms of the floor and the candidate, interleaved in one running loop.

    Interleaving keeps slow drifts of a shared machine out of the ratio.
    """

    async def main() -> tuple[float, float]:
        await floor()
        await candidate()
        a, b = [], []
        for _ in range(repeats):
            for make, out in ((floor, a), (candidate, b)):
                gc.collect()
                t0 = time.perf_counter()
                await make()
                out.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(a), statistics.median(b)

    return asyncio.run(main())


def _supports(fn: Callable[..., object], name: str) -> bool:
    return name in inspect.signature(fn).parameters


def bench_size(n: int, latency: float, repeats: int, sequential: bool) -> dict[str, float]:
    model = BenchModel(n, latency)
    agents = list(model.agents)
    rows: dict[str, float] = {}
    floor, parallel = _async_pair_ms(
        lambda: asyncio.gather(*(a.astep() for a in agents)),
        lambda: ps.step_agents_parallel(agents),
        repeats,
    )
    rows["raw gather (floor)"] = floor
    rows["asyncio step_agents_parallel"] = parallel
    ps.enable_automatic_parallel_stepping(mode="asyncio")
    model.parallel_stepping = True
    rows["asyncio automatic shuffle_do"] = _best_ms(model.step, repeats)
    ps.enable_automatic_parallel_stepping(mode="threading")
    rows["threading automatic shuffle_do"] = _best_ms(model.step, repeats)
    rows["threading step_agents_multithreaded"] = _best_ms(
        lambda: ps.step_agents_multithreaded(agents), repeats
    )
    ps.disable_automatic_parallel_stepping()
    model.parallel_stepping = False
    if sequential:
        rows["sequential shuffle_do"] = _best_ms(model.step, repeats)
    return rows


def print_rows(title: str, rows: dict[str, float], n: int, ideal: float | None = None) -> None:
    floor = rows.get("raw gather (floor)")
    print(f"\n{title}")
    for name, ms in rows.items():
        extra = f"  {ms / floor:5.2f}x floor" if floor else ""
        if ideal:
            extra += f"  {ms / ideal:5.2f}x ideal"
        print(f"  {name:<38} {ms:9.2f} ms/step  {ms * 1e3 / n:8.1f} us/agent{extra}")


def bench_threading_latency(n: int, latency: float, workers: int, repeats: int) -> None:
    model = BenchModel(n, latency, SyncBenchAgent)
    agents = list(model.agents)
    kwargs = (
        {"max_workers": workers} if _supports(ps.step_agents_multithreaded, "max_workers") else {}
    )
    ms = _best_ms(lambda: ps.step_agents_multithreaded(agents, **kwargs), repeats)
    ideal = math.ceil(n / workers) * latency * 1e3
    print(
        f"\nthreading, sync agents, N={n}, {latency * 1e3:.0f} ms latency, max_workers={workers}: "
        f"{ms:.1f} ms/step, ideal ceil(N/{workers})x{latency * 1e3:.0f} ms = {ideal:.0f} ms, "
        f"{ms / ideal:.2f}x ideal"
    )
    ps.disable_automatic_parallel_stepping()


def bench_memory(n: int, steps: int) -> None:
    print(f"\nmemory over {steps} steps, N={n} (tracemalloc, after a 50-step warm-up)")
    for mode in ("asyncio", "threading"):
        model = BenchModel(n, 0.0)
        model.parallel_stepping = True
        ps.enable_automatic_parallel_stepping(mode=mode)
        for _ in range(50):
            model.step()
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.take_snapshot()
        threads0 = threading.active_count()
        for _ in range(steps):
            model.step()
        gc.collect()
        grown = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(base, "filename"))
        tracemalloc.stop()
        print(
            f"  {mode:<10} net allocation growth {grown / 1024:8.1f} KiB over {steps} steps "
            f"({grown / steps:6.1f} B/step), threads {threads0} -> {threading.active_count()}"
        )
        ps.disable_automatic_parallel_stepping()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats")
    opts = parser.parse_args()
    repeats = 3 if opts.quick else 15
    sizes = [(1_000, 0.0), (10_000, 0.0), (1_000, 0.02)]
    if opts.quick:
        sizes = [(200, 0.0), (200, 0.005)]
    for n, latency in sizes:
        rows = bench_size(n, latency, repeats if n <= 1000 else max(3, repeats // 3), latency == 0)
        print_rows(f"N={n}, latency={latency * 1e3:.0f} ms", rows, n)
    bench_threading_latency(200 if opts.quick else 1_000, 0.02, 64, 3)
    bench_memory(100, 200 if opts.quick else 1_000)


if __name__ == "__main__":
    main()
