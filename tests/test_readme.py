"""The README's examples run as written: every fenced block marked runnable is executed.

Markers (an HTML comment on the line before the fence):

* ``<!-- runnable -->`` before a ``python`` block: run in a process of its own in a tmp dir;
  before a ``bash`` block: each ``mesa-llm-testing`` line runs (exit status 0).
* ``<!-- runnable: exit 2 -->``: the same, expecting a usage error (exit status 2).
* ``<!-- runnable: serve -->`` before a ``console`` block: the ``mesa-llm-testing serve``
  session, replayed against a fresh server (its curl requests sent with urllib).
* ``<!-- runnable: NAME.py -->``: the block is a file written as NAME.py (the downstream test
  file); ``<!-- runnable: pytest -->`` is the pytest command run on it, and its output must show
  what the README's sample output shows (the failures, the faults and the repro line).

Each command runs as a fork of a warm Python that has imported litellm once
(``warm_python.py``: a process of its own, as ``python -c`` would run it, without paying the
import again); the ``serve`` session starts a real ``mesa-llm-testing serve`` process.
"""

from __future__ import annotations

import json
import re
import shlex
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from warm_python import Run, command_env

pytestmark = pytest.mark.subprocess  # see pyproject.toml's markers

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCK = re.compile(
    r"<!-- runnable(?::\s*(?P<arg>[^>]*?))?\s*-->\n```(?P<lang>\w+)\n(?P<body>.*?)```", re.S
)
BIN = Path(sys.executable).parent


def blocks(lang: str, arg: str | None = None) -> list[str]:
    found = [
        m["body"] for m in BLOCK.finditer(README.read_text(encoding="utf-8"))
        if m["lang"] == lang and (m["arg"] or None) == arg
    ]  # fmt: skip
    return found


@pytest.fixture
def run(warm_run: Run) -> Run:
    """``run(argv, cwd)``: the command's ``CompletedProcess``, from a fork of a warm Python."""
    return warm_run


def test_the_readme_marks_its_examples_runnable() -> None:
    assert len(blocks("python")) >= 4
    assert blocks("python", "test_election.py") and blocks("bash", "pytest")
    assert len(blocks("bash")) >= 3 and blocks("bash", "exit 2")


@pytest.mark.parametrize("n", range(len(blocks("python"))))
def test_python_example_runs(n: int, tmp_path: Path, run: Run) -> None:
    result = run([sys.executable, "-c", blocks("python")[n]], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_cli_examples_run_in_order(tmp_path: Path, run: Run) -> None:
    for body in blocks("bash"):  # list; run --trace --timeline; replay run.json
        for line in body.strip().splitlines():
            result = run(shlex.split(line), tmp_path)
            assert result.returncode == 0, (line, result.stdout, result.stderr)
            assert "Traceback" not in result.stderr
    assert (tmp_path / "run.json").exists() and (tmp_path / "timeline.png").exists()
    assert "reproduced: civil_violence, 3 steps, seed 7" in result.stdout
    for body in blocks("bash", "exit 2"):
        result = run(shlex.split(body.strip()), tmp_path)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert "valid values: integers >= 0" in result.stderr


def test_the_downstream_test_file_fails_and_reproduces_as_shown(tmp_path: Path, run: Run) -> None:
    (tmp_path / "test_election.py").write_text(blocks("python", "test_election.py")[0])
    (command,) = blocks("bash", "pytest")
    argv = [sys.executable, "-m", *shlex.split(command.strip()), "-p", "no:cacheprovider"]
    result = run(argv, tmp_path)
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    shown = README.read_text(encoding="utf-8")
    for line in (
        "2 fault(s) injected in this test:",
        "  rate_limit at agent=5 step=2 call=0 (provider)",
        "  timeout at agent=4 step=2 call=0 (provider)",
        "  pytest 'test_election.py::test_everyone_always_votes[threading]' "
        "--mesa-llm-faults=0.1 --mesa-llm-seed=7",
        "8 fault(s) injected in 4 of 6 test(s): rate_limit=2, timeout=4, malformed_json=2",
        "E           AssertionError: StepReport('step', threading): 5 agents, 3 ok, 2 failed",
    ):
        assert line in out, line
        assert line in shown, line  # the README shows the real output
    # Mesa 3.5 adds deprecation warnings to the count: "2 failed, 4 passed, 6 warnings in".
    assert re.search(r"= 2 failed, 4 passed(, \d+ warnings?)? in ", out)
    # The repro line reruns that test alone, with the same faults and the same failure.
    repro = next(
        line.strip() for line in out.splitlines() if line.strip().startswith("pytest 'test_")
    )
    again = run([sys.executable, "-m", *shlex.split(repro), "-p", "no:cacheprovider"], tmp_path)
    assert "1 failed" in again.stdout
    assert "  timeout at agent=4 step=2 call=0 (provider)" in again.stdout


def test_the_serve_session_answers_as_shown() -> None:
    """The README's ``serve`` session, replayed against a fresh server: same answers."""
    (session,) = blocks("console", "serve")
    commands: list[tuple[str, list[str]]] = []  # (command, the output lines shown after it)
    for line in session.replace("\\\n", " ").splitlines():
        if line.startswith("$ "):
            commands.append((line[2:], []))
        else:
            commands[-1][1].append(line)
    (serve, (shown_url,)), *curls = commands
    argv = shlex.split(serve.removesuffix("&").strip())
    assert argv[:2] == ["mesa-llm-testing", "serve"]
    process = subprocess.Popen(
        [str(BIN / argv[0]), *argv[1:]], stdout=subprocess.PIPE, text=True, env=command_env()
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()  # the first line is the base URL
        for base in (url, shown_url):
            assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1", base), base
        for command, (shown,) in curls:
            args = shlex.split(command.replace(shown_url.removesuffix("/v1"), url[:-3]))
            body = args[args.index("-d") + 1].encode() if "-d" in args else None
            headers = dict([args[args.index("-H") + 1].split(": ", 1)]) if "-H" in args else {}
            (target,) = [arg for arg in args if arg.startswith("http:")]
            request = urllib.request.Request(target, data=body, headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    got = json.loads(response.read())
            except urllib.error.HTTPError as exc:
                assert exc.code >= 400
                got = json.loads(exc.read())
            expected = json.loads(shown)
            if "latency_ms" in expected:  # timings differ from run to run; their shape does not
                assert got.pop("latency_ms").keys() == expected.pop("latency_ms").keys()
            assert got == expected, command
        process.send_signal(signal.SIGINT)  # Ctrl-C: a clean exit
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
