"""Memory and reliability of long runs of LLM agents under faults: prints figures, asserts nothing.

A model of ``--agents`` ``LLMAgent``s (real litellm, answered by the ``FakeLLM`` a
user gets from the ``fake_llm`` fixture: default ``keep_calls``, a rate fault plan)
is stepped ``--steps`` times in each mode. Printed per mode: agents x steps x fault
rate x mode, agents lost (an agent missing from a step's report: must be 0), the
library's threads left after the run (via the fake, the model keeps automatic stepping
on, so its loop thread or worker pool stays until ``disable_automatic_parallel_stepping()``:
both counts are printed; after it, must be 0), and resident memory growth from step
``--warmup`` to the end (issue 9's target: under 5 %)::

    python benchmarks/bench_memory.py                         # 1,000 agents x 500 steps
    python benchmarks/bench_memory.py --agents 200 --steps 200 # a smaller run
    python benchmarks/bench_memory.py --via run_scenario       # stepped by ScenarioRun,
                                                               # keeping the run's trace
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import threading
import time

from mesa import Model

from mesa_llm.llm_agent import LLMAgent
from mesa_llm.module_llm import RetryPolicy
from mesa_llm.parallel_stepping import disable_automatic_parallel_stepping, parallel_stepping
from mesa_llm_testing import FakeLLM, FaultPlan, ScenarioRun


class Crowd(Model):
    """LLM agents that raise whatever the fake raises (no try/except in the agents)."""

    def __init__(self, seed: int, n_agents: int) -> None:
        super().__init__(seed=seed)
        self.parallel_stepping = True
        for _ in range(n_agents):
            agent = LLMAgent(self, llm_model="openai/gpt-4o-mini")
            agent.llm.retry = RetryPolicy(max_attempts=2)

    def step(self) -> None:
        self.agents.shuffle_do("step")


def rss_mb() -> float:
    """Resident set size of this process, from /proc (Linux)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def ours() -> list[str]:
    return sorted(t.name for t in threading.enumerate() if t.name.startswith("mesa_llm"))


def _stepped(mode: str, agents: int, steps: int, fake: FakeLLM, seed: int, via: str):
    """Yield (step, failed agents, agents reported) after each step, the way ``via`` steps."""
    if via == "run_scenario":
        with ScenarioRun(Crowd, seed=seed, mode=mode, llm=fake, agents=agents) as run:
            for step in range(1, steps + 1):
                st = run.step()
                yield step, len(st.failed), len(st.outcomes)
        return
    with fake.activate():
        model = Crowd(seed, agents)
        with parallel_stepping(mode):  # type: ignore[arg-type]
            for step in range(1, steps + 1):
                model.step()
                report = model.last_step_report
                yield step, len(report.failed), len({o.unique_id for o in report.outcomes})


def run(mode: str, agents: int, steps: int, rate: float, warmup: int, seed: int, via: str) -> None:
    fake = FakeLLM(seed=seed, faults=FaultPlan(rate, seed=seed))
    lost = 0
    failed = 0
    rss_warm = rss_end = 0.0
    start = time.perf_counter()
    for step, failures, reported in _stepped(mode, agents, steps, fake, seed, via):
        lost += agents - reported
        failed += failures
        if step == warmup:
            gc.collect()
            rss_warm = rss_mb()
    gc.collect()
    rss_end = rss_mb()
    seconds = time.perf_counter() - start
    left = ours()
    # Via the fake, the model turned automatic stepping on itself (parallel_stepping = True),
    # so the library keeps its loop thread or worker pool until it is turned off.
    disable_automatic_parallel_stepping()
    left_after = ours()
    growth = (rss_end - rss_warm) / rss_warm * 100 if rss_warm else float("nan")
    print(
        f"{agents} agents x {steps} steps x fault rate {rate:g} x {mode:10s} via {via}: "
        f"agents lost {lost}, agent-steps failed {failed}, faults {len(fake.faults.injected)}, "
        f"threads left {len(left)} ({len(left_after)} after "
        f"disable_automatic_parallel_stepping() {left_after if left_after else ''}), "
        f"RSS {rss_warm:.0f} MB at step {warmup} -> {rss_end:.0f} MB at the end "
        f"({growth:+.1f} %), call records kept {len(fake.calls)} of {fake.call_count}, "
        f"{seconds:.0f} s",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--rate", type=float, default=0.1)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--modes", default="asyncio,threading")
    parser.add_argument("--via", choices=("fake", "run_scenario"), default="fake")
    args = parser.parse_args()
    # Agent failures are expected here; keep their log records (with tracebacks) quiet.
    logging.getLogger("mesa_llm").addHandler(logging.NullHandler())
    logging.getLogger("mesa_llm").propagate = False
    for mode in args.modes.split(","):
        run(mode, args.agents, args.steps, args.rate, args.warmup, args.seed, args.via)


if __name__ == "__main__":
    main()
