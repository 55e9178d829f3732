"""Wall time of the main command: ``mesa-llm-testing run`` (default scenario), 50 agents x 10 steps.

Prints figures only (no assertions). Target from issue 5: under 10 s for
``--agents 50 --steps 10 --mode all`` on this machine, start-up included. Each
round runs the installed console script in a fresh process, as a user would::

    python benchmarks/bench_cli.py                 # 3 rounds, --faults 0.1
    python benchmarks/bench_cli.py --rounds 1 --faults 0
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGET_SECONDS = 10.0


def console_script() -> list[str]:
    """The installed ``mesa-llm-testing`` next to this interpreter, else ``python -m``."""
    found = shutil.which("mesa-llm-testing", path=str(Path(sys.executable).parent))
    return [found] if found else [sys.executable, "-m", "mesa_llm_testing.cli"]


def time_run(argv: list[str]) -> tuple[float, int, str]:
    """Seconds, exit status and the last lines of output of one run in a fresh process."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}  # offline, no key
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    seconds = time.perf_counter() - start
    tail = "\n".join(proc.stdout.strip().splitlines()[-8:])
    return seconds, proc.returncode, tail


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--agents", type=int, default=50)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--faults", default="0.1")
    args = parser.parse_args()

    run = [
        *console_script(),
        "run",
        "--agents",
        str(args.agents),
        "--steps",
        str(args.steps),
        "--faults",
        args.faults,
        "--mode",
        "all",
        "-q",
    ]
    print("command:", " ".join(run))
    seconds: list[float] = []
    tail = ""
    for n in range(args.rounds):
        elapsed, status, tail = time_run(run)
        seconds.append(elapsed)
        print(f"round {n + 1}: {elapsed:.2f} s (exit status {status})")
    startup, _, _ = time_run([*console_script(), "list"])
    median = statistics.median(seconds)
    verdict = "under" if median < TARGET_SECONDS else "OVER"
    print(f"\nmedian wall time: {median:.2f} s ({verdict} the {TARGET_SECONDS:g} s target)")
    print(f"start-up ('mesa-llm-testing list', no litellm import): {startup:.2f} s")
    print("\nlast lines of the last run:\n" + tail)


if __name__ == "__main__":
    main()
