"""The warm Python (``warm_python.py``) runs a command as ``python`` would: what tests rely on."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest
from warm_python import Run

pytestmark = pytest.mark.subprocess  # see pyproject.toml's markers


@pytest.mark.parametrize(
    ("code", "status", "stderr"),
    [
        ("print('out')", 0, ""),
        ("raise SystemExit", 0, ""),
        ("raise SystemExit(3)", 3, ""),
        ("import sys; sys.exit(-1)", 255, ""),
        ("import sys; sys.exit('bad input')", 1, "bad input\n"),
        ("raise ValueError('boom')", 1, "ValueError: boom\n"),
        ("raise KeyboardInterrupt", -signal.SIGINT, "KeyboardInterrupt\n"),
    ],
)
def test_a_command_exits_with_the_status_python_gives(
    warm_run: Run, tmp_path: Path, code: str, status: int, stderr: str
) -> None:
    result = warm_run([sys.executable, "-c", code], tmp_path)
    assert result.returncode == status
    assert result.stderr.endswith(stderr)
    assert ("Traceback" in result.stderr) == (code.startswith("raise") and status in (1, -2))


def test_threads_are_joined_then_atexit_runs_and_output_is_flushed(
    warm_run: Run, tmp_path: Path
) -> None:
    code = (
        "import atexit, sys, threading, time\n"
        "atexit.register(lambda: print('atexit', file=sys.stderr))\n"
        "threading.Thread(target=lambda: (time.sleep(0.2), print('thread'))).start()\n"
        "sys.stdout.write('unflushed')\n"
    )
    result = warm_run([sys.executable, "-c", code, "arg"], tmp_path)
    assert result.returncode == 0
    assert result.stdout == "unflushedthread\n"
    assert result.stderr == "atexit\n"


def test_each_command_has_its_own_cwd_argv_and_main(warm_run: Run, tmp_path: Path) -> None:
    code = "import os, sys; print(os.getcwd(), sys.argv[1:], __name__, 'x' in globals()); x = 1"
    first = warm_run([sys.executable, "-c", code, "a"], tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    second = warm_run([sys.executable, "-c", code, "b"], other)
    assert first.stdout == f"{tmp_path} ['a'] __main__ False\n"
    assert second.stdout == f"{other} ['b'] __main__ False\n"  # nothing left by the first
