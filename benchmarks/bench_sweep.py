"""Sweep throughput: runs per second of ``mesa_llm_testing.sweep`` with 1 local worker vs 2.

Prints figures only (no assertions), one run each, and writes them as JSON. Each
pool is warmed first (its workers started and litellm loaded, which a long sweep
pays once per worker), then the same sweep is timed. On a 2-core machine the ideal
ratio is 2.0; a loaded machine gives less::

    python benchmarks/bench_sweep.py                      # 16 runs: 8 seeds x 2 modes
    python benchmarks/bench_sweep.py --seeds 20 --agents 20 --json sweep-bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from mesa_llm_testing import sweep
from mesa_llm_testing._sweep import local_executor


def runs_per_second(workers: int, options: dict, runs: int) -> float:
    """Runs per second of the sweep ``options`` on ``workers`` warmed processes."""
    with local_executor(workers) as pool:
        warm_up = {**options, "seeds": range(1000, 1000 + 2 * workers), "steps": 1}
        sweep(executor=pool, **warm_up)
        start = time.perf_counter()
        result = sweep(executor=pool, **options)
        seconds = time.perf_counter() - start
    if result.failed_runs:
        raise RuntimeError(f"a run failed:\n{result.failed_runs[0].error}")
    return runs / seconds


def main() -> None:
    """Run the benchmark, print the figures and ratios, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="civil_violence")
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--agents", type=int, default=10)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--fault", type=float, default=0.1)
    parser.add_argument("--json", default="bench_sweep.json", help="where to write the figures")
    args = parser.parse_args()

    modes = ["asyncio", "threading"]
    options = {"scenario": args.scenario, "seeds": range(1, args.seeds + 1),
               "faults": [args.fault], "modes": modes, "agents": args.agents,
               "steps": args.steps}  # fmt: skip
    runs = args.seeds * len(modes)
    one = runs_per_second(1, options, runs)
    two = runs_per_second(2, options, runs)
    figures = {
        "benchmark": "sweep_throughput",
        "cpus": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
        "runs": runs,
        "scenario": args.scenario,
        "agents": args.agents,
        "steps": args.steps,
        "fault_rate": args.fault,
        "runs_per_second_1_worker": round(one, 3),
        "runs_per_second_2_workers": round(two, 3),
        "ratio_2_vs_1_workers": round(two / one, 3),
    }
    print(f"sweep of {runs} runs ({args.scenario}, {args.agents} agents x {args.steps} steps, "
          f"fault rate {args.fault:g}), load average {os.getloadavg()[0]:.1f}:")  # fmt: skip
    print(f"  1 worker:  {one:.2f} runs/s")
    print(f"  2 workers: {two:.2f} runs/s")
    print(f"  ratio 2/1 workers: {two / one:.2f} (ideal 2.00)")
    Path(args.json).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
