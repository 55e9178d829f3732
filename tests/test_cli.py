"""The ``mesa-llm-testing`` command: run, replay, list, pictures, usage errors and exit codes."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from warm_python import Run

from mesa_llm_testing.cli import main

SMALL = ["--agents", "4", "--steps", "2", "-q"]


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --------------------------------------------------------------------------- list and help


def test_list_shows_the_built_in_scenarios(capsys: pytest.CaptureFixture[str]) -> None:
    import mesa_llm_testing.scenarios as scenarios

    code, out, _ = run_cli(capsys, "list")
    assert code == 0
    lines = out.splitlines()
    assert [line.split()[0] for line in lines] == sorted(scenarios.REGISTRY)
    assert sum("(default)" in line for line in lines) == 1
    assert all(len(line.split()) > 1 for line in lines)  # each has a description


def test_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "run", "--help")
    assert code == 0
    for option in ("--agents", "--steps", "--faults", "--kinds", "--seed", "--mode", "--trace"):
        assert option in out


# --------------------------------------------------------------------------- run


def test_default_run_prints_the_summary(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "run", *SMALL)
    assert code == 0, out
    assert "per step (asyncio)" in out
    assert "agents ok" in out and "retried, then ok" in out and "time" in out
    assert "recovered" not in out
    assert "no faults injected" in out
    assert out.rstrip().endswith("all checks passed: isolation, progress")


def test_faults_are_summarised_by_kind(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(
        capsys, "run", "civil_violence", "--faults", "0.5", "--kinds", "rate_limit,empty_response",
        "--seed", "3", *SMALL,
    )  # fmt: skip
    assert code == 0, out
    kinds_section = out.split("faults by kind:")[1].split("\n\n")[0]
    assert "rate_limit" in kinds_section and "empty_response" in kinds_section
    assert "timeout" not in kinds_section
    assert "faults 0.5 (rate_limit,empty_response)" in out


def test_mode_all_gives_the_reproducibility_verdict(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "run", "--mode", "all", "--faults", "0.2", *SMALL)
    assert code == 0, out
    assert "per mode:" in out
    for mode in ("sequential", "asyncio", "threading"):
        assert f"\n  {mode}" in out
    assert "reproducible: sequential, asyncio and threading traces are identical (seed 0)" in out


@pytest.mark.parametrize("mode", ["sequential", "threading"])
def test_each_mode_runs(capsys: pytest.CaptureFixture[str], mode: str) -> None:
    code, out, _ = run_cli(capsys, "run", "negotiation", "--mode", mode, "--faults", "0.3", *SMALL)
    assert code == 0, out
    assert f"per step ({mode})" in out


def test_scenario_by_module_and_factory(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(
        capsys, "run", "mesa_llm_testing.scenarios.civil_violence:CivilViolenceModel", *SMALL
    )  # fmt: skip
    assert code == 0, out
    assert "mesa_llm_testing.scenarios.civil_violence:CivilViolenceModel: 4 agents, 2 steps" in out


def test_scenario_from_a_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "my_scenario.py"
    path.write_text(
        textwrap.dedent(
            '''
            from mesa_llm_testing.scenarios.civil_violence import CivilViolenceModel

            class RiotModel(CivilViolenceModel):
                """Civil violence with a low legitimacy."""

                scenario_name = "riot"

                def __init__(self, **kwargs):
                    super().__init__(legitimacy=0.1, **kwargs)
            '''
        )
    )
    code, out, _ = run_cli(capsys, "run", str(path), *SMALL)
    assert code == 0, out
    code, out, _ = run_cli(capsys, "run", f"{path}:RiotModel", *SMALL)
    assert code == 0, out


def test_a_failed_check_exits_1_with_the_divergence(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "leaky.py"
    path.write_text(
        textwrap.dedent(
            '''
            from mesa_llm_testing.scenarios.civil_violence import CivilViolenceModel

            class LeakyModel(CivilViolenceModel):
                """Its state depends on the stepping mode: not reproducible across modes."""

                scenario_name = "leaky"

                def state(self):
                    modes = [report.mode for report in self.step_reports]
                    return {**super().state(), "modes": modes}
            '''
        )
    )
    code, out, _ = run_cli(capsys, "run", str(path), "--mode", "all", *SMALL)
    assert code == 1, out
    assert "CHECK FAILED" in out
    assert "reproducibility (asyncio vs sequential)" in out
    assert "step 1" in out
    assert "reproducible: sequential" not in out


def test_scripted_faults_from_inline_json(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from mesa_llm_testing import FaultPlan, RunTrace

    plan = FaultPlan(0.0, seed=0).at(agent=2, step=1, call=0, kind="server_error")
    trace_path = tmp_path / "trace.json"
    code, out, _ = run_cli(
        capsys, "run", "--faults", plan.to_json(), "--trace", str(trace_path), *SMALL
    )  # fmt: skip
    assert code == 0, out
    assert "1 scripted faults" in out
    trace = RunTrace.from_json(trace_path.read_text())
    (fault,) = trace.steps[0].faults
    assert (fault["agent"], fault["step"], fault["kind"]) == (2, 1, "server_error")
    assert trace.steps[1].faults == []


# --------------------------------------------------------------------------- trace and replay


def test_trace_then_replay_reproduces(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    code, out, _ = run_cli(
        capsys, "run", "negotiation", "--faults", "0.3", "--seed", "5", "--trace", str(path), *SMALL
    )  # fmt: skip
    assert code == 0, out
    assert f"trace written to {path}" in out
    code, out, _ = run_cli(capsys, "replay", str(path), "-q")
    assert code == 0, out
    assert out.startswith("reproduced: negotiation, 2 steps, seed 5, asyncio mode")
    code, out, _ = run_cli(capsys, "replay", str(path), "--mode", "threading", "-q")
    assert code == 0, out
    assert "seed 5, threading (recorded: asyncio) mode" in out


def test_replay_reports_a_divergence(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    assert main(["run", "--trace", str(path), *SMALL]) == 0
    data = json.loads(path.read_text())
    data["steps"][1]["state_digest"] = "0" * 32  # as if the model had behaved differently
    path.write_text(json.dumps(data))
    capsys.readouterr()
    code, out, _ = run_cli(capsys, "replay", str(path), "-q")
    assert code == 1
    assert out.startswith("NOT reproduced")
    assert "step 2" in out


def test_replay_rejects_a_file_that_is_not_a_trace(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "nope.json"
    path.write_text('{"hello": 1}')
    code, _, err = run_cli(capsys, "replay", str(path))
    assert code == 2
    assert "TRACE" in err and "not a trace" in err
    code, _, err = run_cli(capsys, "replay", str(tmp_path / "missing.json"))
    assert code == 2 and "cannot read" in err


# --------------------------------------------------------------------------- timeline


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_timeline_picture(capsys: pytest.CaptureFixture[str], tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"timeline{suffix}"
    code, out, err = run_cli(
        capsys, "run", "--faults", "0.4", "--timeline", str(path), "--mode", "all", *SMALL
    )  # fmt: skip
    assert code == 0, out + err
    assert f"timeline written to {path}" in out
    data = path.read_bytes()
    if suffix == ".png":
        assert data.startswith(b"\x89PNG")
    else:
        assert b"<svg" in data and b"agent" in data


def test_timeline_without_matplotlib_names_the_extra(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [m for m in sys.modules if m.split(".")[0] == "matplotlib"] + ["matplotlib"]:
        monkeypatch.setitem(sys.modules, name, None)  # import matplotlib... -> ImportError
    code, _, err = run_cli(capsys, "run", "--timeline", str(tmp_path / "t.png"), *SMALL)
    assert code == 2
    assert "pip install matplotlib" in err
    assert "mesa-llm[plot]" not in err  # would pull the unrelated mesa-llm from PyPI


# --------------------------------------------------------------------------- usage errors


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["run", "--mode", "fast"], ["--mode", "'asyncio', 'threading', 'sequential', 'all'"]),
        (["run", "--faults", "2"], ["--faults '2'", "from 0 to 1"]),
        (["run", "--faults", "lots"], ["--faults 'lots'", "from 0 to 1"]),
        (["run", "--kinds", "rate_limit,gremlins"], ["--kinds", "rate_limit, timeout"]),
        (["run", "--agents", "0"], ["--agents", ">= 1"]),
        (["run", "--steps", "x"], ["--steps", ">= 1"]),
        (["run", "--seed", "one"], ["--seed", "integers >= 0"]),
        (["run", "no_such_scenario"], ["'no_such_scenario'", "civil_violence", "module:factory"]),
        (["run", "missing_file.py"], ["'missing_file.py' does not exist"]),
        (["run", "no_such_module_xyz:factory"], ["cannot import", "no_such_module_xyz"]),
        (["run", "mesa_llm_testing.scenarios.civil_violence:Nope"], ["no attribute 'Nope'"]),
        (["run", "--timeline", "picture.jpg"], ["--timeline", ".png, .svg"]),
        (["run", "--faults", '{"rate": 0.1}', "--kinds", "timeout"], ["--kinds", "FaultPlan JSON"]),
        (["run", "--faults", "{not json"], ["--faults", "FaultPlan JSON"]),
        (["run", "--limits", "rps=3"], ["--limits", "valid keys: rpm, tpm, max_concurrent"]),
        (["run", "--limits", "rpm=0"], ["--limits", "integers >= 1"]),
        (["serve", "--limits", "tpm=lots"], ["--limits", "tpm='lots' is not an integer"]),
        (["fly"], ["invalid choice: 'fly'", "run", "replay", "list"]),
        ([], ["the following arguments are required"]),
    ],
)
def test_bad_input_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], argv: list[str], words: list[str]
) -> None:
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert err.startswith("usage: mesa-llm-testing")
    assert all(w in err for w in words), err


def test_run_with_limits_counts_load_driven_429s_apart_from_faults(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run_cli(capsys, "run", "--limits", "rpm=5", "--mode", "all", *SMALL)
    assert code == 0, out
    assert "faults by kind:\n  (no faults injected)" in out
    assert "load-driven 429s: 3 (sequential), 3 (asyncio), 3 (threading); over the fake's " in out
    assert "isolation        passed" in out


def test_a_file_with_several_models_asks_for_the_factory(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "two.py"
    path.write_text("import mesa\nclass A(mesa.Model): pass\nclass B(mesa.Model): pass\n")
    code, _, err = run_cli(capsys, "run", str(path))
    assert code == 2
    assert f"{path}:ClassName" in err and "(A, B)" in err


# --------------------------------------------------------------------------- the console script


@pytest.mark.subprocess
def test_console_script_runs_offline_without_an_api_key(tmp_path: Path) -> None:
    script = shutil.which("mesa-llm-testing", path=str(Path(sys.executable).parent))
    assert script is not None, "the mesa-llm-testing console script is not installed"
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env["PYTHONHASHSEED"] = "12345"
    result = subprocess.run(
        [script, "run", "--steps", "2", "--agents", "3", "--faults", "0.2", "--mode", "all"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "reproducible: sequential, asyncio and threading" in result.stdout
    assert "Traceback" not in result.stderr


# --------------------------------------------------------------------------- numbers and verdict


def test_retried_faults_are_split_by_what_followed(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "run", "--faults", "0.3", "--seed", "2", *SMALL)
    assert code == 0, out
    kinds = out.split("faults by kind:\n")[1].split("\n\n")[0]
    header = kinds.splitlines()[0].split("  ")
    assert [h.strip() for h in header if h.strip()] == [
        "fault kind", "injected", "retried, then ok", "retried, failed anyway",
        "ended the step", "absorbed",
    ]  # fmt: skip
    total = next(line for line in kinds.splitlines() if line.strip().startswith("total"))
    injected, *parts = (int(n) for n in total.split()[1:])
    assert injected == sum(parts) > 0
    assert "recovered" not in out


@pytest.mark.parametrize("mode", ["asyncio", "sequential", "all"])
def test_a_run_where_every_agent_failed_exits_1_with_the_reason(
    capsys: pytest.CaptureFixture[str], mode: str
) -> None:
    argv = ["run", "--faults", "1", "--kinds", "empty_response", "--mode", mode, *SMALL]
    code, out, _ = run_cli(capsys, *argv)
    assert code == 1, out
    assert "retried, then ok" in out
    assert "CHECK FAILED: progress" in out
    assert "every agent failed in every step (8 agent-steps: 8 EmptyResponseError)" in out


def test_the_verdict_names_each_check_and_its_result(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "run", "--mode", "all", "--faults", "0.2", *SMALL)
    assert code == 0, out
    checks = out.split("\nchecks:\n")[1].splitlines()
    assert [line.split()[:2] for line in checks[:4]] == [
        ["isolation", "passed"], ["ordering", "passed"],
        ["reproducibility", "passed"], ["progress", "passed"],
    ]  # fmt: skip
    assert checks[4] == "all checks passed: isolation, ordering, reproducibility, progress"


# --------------------------------------------------------------------------- input validation
# Run as a user does (a subprocess): every bad input is a usage error (exit 2) naming the
# option and the valid values, with no traceback, before litellm is imported.

PROBE = (
    "import sys, runpy; sys.argv = ['mesa-llm-testing', *sys.argv[1:]]\n"
    "try:\n    runpy.run_module('mesa_llm_testing.cli', run_name='__main__')\n"
    "finally:\n    print('LITELLM_IMPORTED=' + str('litellm' in sys.modules), file=sys.stderr)\n"
)


def run_script(
    *argv: str, cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    return subprocess.run(
        [sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, env=env,
        cwd=cwd, timeout=timeout,
    )  # fmt: skip


def run_warm(warm_run: Run, *argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The console script, as a fork of the warm Python (conftest's ``warm_run``): for tests
    of what a command does, not of how a cold process starts."""
    return warm_run(["mesa-llm-testing", *argv], cwd)


def _trace_json(tmp_path: Path) -> dict:
    """A real trace (written once per test module run) to corrupt one field at a time."""
    path = tmp_path / "good.json"
    assert main(["run", "--trace", str(path), "--faults", "0.2", *SMALL]) == 0
    return json.loads(path.read_text())


BAD_TRACE_FIELDS = [
    ("mode", "foo", ['"mode"', "'foo'", "sequential, asyncio, threading"]),
    ("seed", "abc", ['"seed"', "integers >= 0"]),
    ("seed", -3, ['"seed"', "integers >= 0"]),
    ("faults", {"rate": 5}, ['"rate" is 5', "numbers from 0 to 1"]),
    ("faults", {"rat": 0.5}, ["unknown key(s) 'rat'", "valid keys: rate, kinds"]),
    ("scenario", 7, ['"scenario"', "module:factory"]),
    ("agents", 0, ['"agents"', "integers >= 1"]),
    ("steps", [], ["records no steps", "nothing to compare"]),
]


@pytest.mark.subprocess
def test_every_bad_input_is_a_usage_error_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = _trace_json(tmp_path)
    capsys.readouterr()
    (tmp_path / "run-trace.json").write_text(json.dumps(good))
    (tmp_path / "plugin-trace.json").write_text('{"mesa_llm_trace": 1, "seed": 1, "faults": []}')
    cases: list[tuple[list[str], list[str]]] = [
        (["run", "--seed", "-5"], ["--seed", "'-5'", "integers >= 0"]),
        (["run", "--faults", '{"rat": 0.5}'], ["--faults", "'rat'", "valid keys: rate"]),
        (["run", "--faults", '{"rate": 0.5, "kinds": ["gremlins"]}'], ['"kinds"', "rate_limit"]),
        (["run", "--faults", "[1, 2]"], ["injected fault 0", '"call" (an integer)']),
        (["run", "--faults", "run-trace.json"], ["run trace", "mesa-llm-testing replay"]),
        (["run", "--faults", "plugin-trace.json"], ["--mesa-llm-trace", "--mesa-llm-replay"]),
        (["run", "--faults", "missing.json"], ["cannot read the fault plan file"]),
        (["run", "--steps", "3", "--timeline", "t.png", "--timeline-step", "9"],
         ["--timeline-step 9", "valid values: 1 to 3"]),
        (["run", "--timeline-step", "1"], ["--timeline-step", "--timeline PATH"]),
    ]  # fmt: skip
    for field, value, words in BAD_TRACE_FIELDS:
        bad = {**good, field: value}
        name = f"bad-{field}-{len(cases)}.json"
        (tmp_path / name).write_text(json.dumps(bad))
        cases.append((["replay", name], ["TRACE", name, *words]))
    for argv, words in cases:
        result = run_script(*argv, cwd=tmp_path)
        assert result.returncode == 2, (argv, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr, (argv, result.stderr)
        assert result.stderr.startswith("usage: mesa-llm-testing"), (argv, result.stderr)
        assert all(w in result.stderr for w in words), (argv, words, result.stderr)
        assert "LITELLM_IMPORTED=False" in result.stderr, argv  # no work had started
        assert result.stdout == "", argv


@pytest.mark.subprocess
def test_startup_says_what_it_does_before_loading_litellm(tmp_path: Path, warm_run: Run) -> None:
    # What is printed does not depend on whether litellm is loaded yet, so a warm process
    # serves; that nothing loads it before a usage error is tested cold above.
    result = run_warm(warm_run, "run", "--steps", "1", "--agents", "2", "--seed", "4", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == (
        "mesa-llm-testing: running civil_violence: 1 steps, asyncio mode, seed 4, no faults"
    )
    # Not a terminal: one line, finished with the time the import took.
    assert re.fullmatch(r"mesa-llm-testing: loading litellm \.\.\. done in \d+\.\d s", lines[1])
    quiet = run_warm(warm_run, "run", "--steps", "1", "--agents", "2", "-q", cwd=tmp_path)
    assert quiet.returncode == 0
    assert "loading litellm" not in quiet.stderr


@pytest.mark.subprocess
def test_a_trace_with_a_relative_scenario_path_replays_from_elsewhere(
    tmp_path: Path, warm_run: Run
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "my_model.py").write_text(
        "from mesa_llm_testing.scenarios.negotiation import NegotiationModel\n\n"
        "class MyNegotiation(NegotiationModel):\n    scenario_name = 'mine'\n"
    )
    run = run_warm(warm_run, "run", "my_model.py", "--trace", "run.json", "--faults", "0.3",
                   *SMALL, cwd=project)  # fmt: skip
    assert run.returncode == 0, run.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    replay = run_warm(warm_run, "replay", str(project / "run.json"), "-q", cwd=elsewhere)
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert replay.stdout.startswith(f"reproduced: {project / 'my_model.py'}, 2 steps")
