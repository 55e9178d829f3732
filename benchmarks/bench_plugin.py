"""What loading the mesa-llm pytest plugin costs a session that does not use its fixtures.

Runs pytest on a trivial test file in fresh processes, alternating ``-p no:mesa_llm``
(plugin off), the plugin on with default settings, and the plugin on with
``--mesa-llm-faults=0.1``; also times importing the plugin modules after pytest and
checks that neither pulls in litellm or respx. Prints figures, asserts nothing.
Child processes run with bytecode caching on (``PYTHONDONTWRITEBYTECODE`` removed),
as in a normal install; otherwise every run pays for compiling the modules.

    python benchmarks/bench_plugin.py [--rounds 15] [--tests 50]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS: dict[str, list[str]] = {
    "plugin off (-p no:mesa_llm)": ["-p", "no:mesa_llm"],
    "plugin on": [],
    "plugin on, --mesa-llm-faults=0.1": ["--mesa-llm-faults=0.1"],
}

IMPORT_PROBE = """
import sys, time
import pytest
start = time.perf_counter()
import mesa_llm_testing.plugin, mesa_llm_testing._pytest_support
elapsed = time.perf_counter() - start
print(elapsed, "litellm" in sys.modules, "respx" in sys.modules)
"""


def child_env() -> dict[str, str]:
    """The environment of the measured processes: offline litellm, bytecode caching on."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    return env


def session_seconds(directory: Path, extra: list[str]) -> float:
    """Wall time of one ``pytest -q`` process on ``directory``."""
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *extra]
    start = time.perf_counter()
    subprocess.run(command, cwd=directory, env=child_env(), check=True, capture_output=True)
    return time.perf_counter() - start


def import_probe() -> tuple[float, bool, bool]:
    """(seconds to import the plugin modules after pytest, litellm imported?, respx imported?)."""
    out = subprocess.run(
        [sys.executable, "-c", IMPORT_PROBE],
        env=child_env(),
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return float(out[0]), out[1] == "True", out[2] == "True"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="pytest runs per variant")
    parser.add_argument("--tests", type=int, default=50, help="trivial tests in the file")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        body = "".join(f"def test_{i}():\n    assert {i} == {i}\n\n" for i in range(args.tests))
        (directory / "test_trivial.py").write_text(body)
        (directory / "pytest.ini").write_text("[pytest]\n")
        times: dict[str, list[float]] = {name: [] for name in VARIANTS}
        for extra in VARIANTS.values():  # warm the file system and bytecode caches
            session_seconds(directory, extra)
        for _ in range(args.rounds):
            for name, extra in VARIANTS.items():  # interleaved, so drift hits every variant
                times[name].append(session_seconds(directory, extra))

    base = statistics.median(times["plugin off (-p no:mesa_llm)"])
    print(f"pytest session on {args.tests} trivial tests, {args.rounds} rounds (wall seconds)")
    print(f"{'variant':<36}{'median':>9}{'min':>9}{'vs off':>10}")
    for name, samples in times.items():
        median = statistics.median(samples)
        print(f"{name:<36}{median:>9.3f}{min(samples):>9.3f}{(median - base) * 1000:>+8.1f}ms")

    probes = [import_probe() for _ in range(5)]
    seconds = statistics.median(p[0] for p in probes)
    print(
        f"\nimport mesa_llm_testing.plugin + _pytest_support after pytest: {seconds * 1000:.1f} ms"
    )
    print(
        f"imports litellm: {any(p[1] for p in probes)}; imports respx: {any(p[2] for p in probes)}"
    )


if __name__ == "__main__":
    main()
