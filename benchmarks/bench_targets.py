"""Where we stand against issue 13's targets: prints ratios, writes them as JSON; asserts nothing.

One run measures, each interleaved with its baseline so drifts of a shared machine
hit both alike:

* fake call: one ``ModuleLLM.agenerate`` answered by the fast path, by litellm's
  pipeline (``activate(pipeline="litellm")``), and ``litellm.acompletion(mock_response=...)``
  (target: fast path <= 60 us a call);
* stepping: asyncio mode / raw ``asyncio.gather`` at 1,000 agents x 20 ms and 10,000
  agents x 0 ms (target <= 1.15x), threading mode us per agent at 0 ms (target <= 35)
  and / ideal ``latency x ceil(N / 64)`` with 64 workers at 20 ms (target <= 1.25x);
* the scenario: ``run_scenario`` of the default scenario, 1,000 agents x 50 steps at
  10 % faults: wall time and peak resident memory (run first, so the peak is its own
  plus litellm's import).

CPU seconds are printed beside wall seconds: on a loaded machine they say more::

    python benchmarks/bench_targets.py          # full sizes; JSON to benchmarks/results/
    python benchmarks/bench_targets.py --quick --json out.json
    python benchmarks/bench_targets.py --only fake  # one part (repeatable): fake, stepping, ...
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import math
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

from bench_stepping import BenchModel, SyncBenchAgent, _async_pair_ms, _best_ms
from mesa import Agent, Model

from mesa_llm import parallel_stepping as ps
from mesa_llm._litellm import import_litellm
from mesa_llm.module_llm import ModuleLLM
from mesa_llm_testing import FakeLLM, FaultPlan, run_scenario
from mesa_llm_testing.scenarios import DEFAULT_SCENARIO

RESULTS = Path(__file__).parent / "results" / "targets.json"
#: The parts one run measures (``--only`` picks some).
PARTS = ("scenario", "fake", "stepping")
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


def _us_per_call(make_call: Any, calls: int, repeats: int) -> tuple[float, float]:
    """(wall, CPU) microseconds per awaited call: the best of ``repeats`` runs."""

    async def run() -> tuple[float, float]:
        for _ in range(min(calls, 100)):
            await make_call()
        best = (math.inf, math.inf)
        for _ in range(repeats):
            gc.collect()
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(calls):
                await make_call()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            best = min(best, (wall / calls * 1e6, cpu / calls * 1e6))
        return best

    return asyncio.run(run())


def bench_fake_call(calls: int) -> dict[str, float]:
    """One agent's ``ModuleLLM.agenerate`` with a tool, on each path."""
    litellm: Any = import_litellm()
    litellm.suppress_debug_info = True
    agent = Agent(Model(seed=1))
    out: dict[str, float] = {}
    for pipeline in ("fast", "litellm"):
        fake = FakeLLM(seed=1, keep_calls=1000)
        with fake.activate(pipeline=pipeline):
            llm = ModuleLLM("openai/gpt-4o-mini", agent=agent)
            n = calls if pipeline == "fast" else max(100, calls // 20)
            wall, cpu = _us_per_call(lambda llm=llm: llm.agenerate("Next?", tools=[MOVE]), n, 3)
        out[f"{pipeline}_us"], out[f"{pipeline}_cpu_us"] = wall, cpu

    async def mock() -> Any:
        return await litellm.acompletion(
            model="openai/gpt-4o-mini",
            messages=[{"role": "user", "content": "Next?"}],
            mock_response="hello",
        )

    out["mock_response_us"], out["mock_response_cpu_us"] = _us_per_call(
        mock, max(100, calls // 20), 3
    )
    out["fast_over_pipeline"] = out["fast_cpu_us"] / out["litellm_cpu_us"]
    out["fast_over_mock_response"] = out["fast_cpu_us"] / out["mock_response_cpu_us"]
    out["pipeline_over_mock_response"] = out["litellm_cpu_us"] / out["mock_response_cpu_us"]
    return out


def bench_asyncio(n: int, latency: float, repeats: int) -> dict[str, float]:
    agents = list(BenchModel(n, latency).agents)
    floor, stepped = _async_pair_ms(
        lambda: asyncio.gather(*(a.astep() for a in agents)),
        lambda: ps.step_agents_parallel(agents),
        repeats,
    )
    return {"floor_ms": floor, "asyncio_ms": stepped, "ratio": stepped / floor}


def bench_threading(n: int, latency: float, workers: int | None, repeats: int) -> dict[str, float]:
    agents = list(BenchModel(n, latency, SyncBenchAgent).agents)
    ms = _best_ms(lambda: ps.step_agents_multithreaded(agents, max_workers=workers), repeats)
    row = {"threading_ms": ms, "us_per_agent": ms * 1e3 / n}
    if latency:
        ideal = latency * 1e3 * math.ceil(n / (workers or 32))
        row |= {"ideal_ms": ideal, "ratio": ms / ideal}
    return row


def bench_scenario(agents: int, steps: int, mode: str) -> dict[str, float]:
    import_litellm()  # its import (seconds, ~100 MB) is not the scenario's
    run_scenario(DEFAULT_SCENARIO, steps=1, mode=mode, seed=1, agents=10)
    gc.collect()
    rss_before = _peak_rss_mb()
    wall, cpu = time.perf_counter(), time.process_time()
    trace = run_scenario(
        DEFAULT_SCENARIO,
        steps=steps,
        mode=mode,
        seed=1,
        agents=agents,
        faults=FaultPlan(0.1, seed=1),
    )
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    failed = sum(len(s.failed) for s in trace.steps)
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "ms_per_agent_step": wall * 1e3 / (agents * steps),
        "peak_rss_mb": _peak_rss_mb(),
        "peak_rss_before_mb": rss_before,
        "agent_steps_failed": failed,
    }


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats")
    parser.add_argument("--json", type=Path, default=RESULTS, help=f"where to write ({RESULTS})")
    parser.add_argument("--skip-scenario", action="store_true", help="leave out the scenario run")
    parser.add_argument("--mode", default="asyncio", help="stepping mode of the scenario run")
    parser.add_argument(
        "--only",
        action="append",
        choices=PARTS,
        help="run only this part (repeatable; default: all of " + ", ".join(PARTS) + ")",
    )
    opts = parser.parse_args()
    quick = opts.quick
    parts = set(opts.only or PARTS)
    if opts.skip_scenario:
        parts.discard("scenario")
    # Failed agents are logged with their tracebacks; at 10 % faults that is the output.
    logging.getLogger("mesa_llm").setLevel(logging.CRITICAL)
    results: dict[str, Any] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "quick": quick,
    }
    if "scenario" in parts:
        agents, steps = (100, 5) if quick else (1_000, 50)
        row = bench_scenario(agents, steps, opts.mode)
        results[f"scenario_{agents}x{steps}_{opts.mode}"] = row
        print(
            f"scenario {DEFAULT_SCENARIO!r} {agents} agents x {steps} steps, 10 % faults, "
            f"{opts.mode}: {row['wall_s']:.1f} s wall ({row['cpu_s']:.1f} s CPU), "
            f"{row['ms_per_agent_step']:.2f} ms/agent-step, peak RSS {row['peak_rss_mb']:.0f} MB "
            f"(before: {row['peak_rss_before_mb']:.0f} MB)"
        )
    if "fake" in parts:
        _report_fake_call(results, 500 if quick else 4000)
    if "stepping" in parts:
        _report_stepping(results, quick)
    ps.disable_automatic_parallel_stepping()
    opts.json.parent.mkdir(parents=True, exist_ok=True)
    opts.json.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(f"wrote {opts.json}")


def _report_fake_call(results: dict[str, Any], calls: int) -> None:
    fake = bench_fake_call(calls)
    results["fake_call"] = fake
    print(
        f"fake call via ModuleLLM.agenerate (CPU us): fast {fake['fast_cpu_us']:.0f} "
        f"(wall {fake['fast_us']:.0f}; target <= 60), pipeline {fake['litellm_cpu_us']:.0f}, "
        f"mock_response {fake['mock_response_cpu_us']:.0f}; fast/pipeline "
        f"{fake['fast_over_pipeline']:.3f}, fast/mock_response "
        f"{fake['fast_over_mock_response']:.2f}, pipeline/mock_response "
        f"{fake['pipeline_over_mock_response']:.2f}"
    )


def _report_stepping(results: dict[str, Any], quick: bool) -> None:
    repeats = 3 if quick else 9
    sizes = [(200, 0.005), (2_000, 0.0)] if quick else [(1_000, 0.02), (10_000, 0.0)]
    for n, latency in sizes:
        row = bench_asyncio(n, latency, repeats)
        results[f"asyncio_{n}_{latency * 1e3:g}ms"] = row
        print(
            f"asyncio N={n} latency={latency * 1e3:g} ms: {row['asyncio_ms']:.1f} ms vs floor "
            f"{row['floor_ms']:.1f} ms = {row['ratio']:.2f}x floor (target <= 1.15)"
        )
    n = 200 if quick else 1_000
    row = bench_threading(n, 0.0, None, repeats)
    results[f"threading_{n}_0ms"] = row
    print(f"threading N={n} 0 ms: {row['us_per_agent']:.1f} us/agent (target <= 35)")
    row = bench_threading(n, 0.02, 64, 3)
    results[f"threading_{n}_20ms_64workers"] = row
    print(
        f"threading N={n} 20 ms, 64 workers: {row['threading_ms']:.0f} ms vs ideal "
        f"{row['ideal_ms']:.0f} ms = {row['ratio']:.2f}x ideal (target <= 1.25)"
    )


if __name__ == "__main__":
    main()
