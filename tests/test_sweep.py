"""Sweeps (``mesa_llm_testing.sweep``): every seed x fault rate x mode, on local processes and Dask.

Each sweep here is small (2 seeds x 2 fault rates x 2 modes, 4 agents, 2 steps) but
real: spawned worker processes (or a Dask ``LocalCluster`` on 127.0.0.1) run the
built-in scenario under the fake LLM, and the rows are compared across engines, with
the CLI's, and with the traces ``run_scenario`` gives in this process.
"""

from __future__ import annotations

import json
import sys
import textwrap
from concurrent.futures import Executor, Future
from pathlib import Path
from typing import Any

import pytest
from warm_python import Run

from mesa_llm_testing import SweepResult, SweepRow, run_scenario, sweep
from mesa_llm_testing._cli_sweep import dask_executor
from mesa_llm_testing._sweep import local_executor
from mesa_llm_testing.cli import main

SCENARIO = "civil_violence"
SMALL = {"seeds": [1, 2], "faults": [0.0, 0.3], "modes": ["asyncio", "threading"],
         "agents": 4, "steps": 2}  # fmt: skip
SMALL_ARGS = ["--seeds", "1-2", "--faults", "0,0.3", "--modes", "asyncio,threading",
              "--agents", "4", "--steps", "2"]  # fmt: skip


@pytest.fixture(scope="module")
def local_sweep() -> SweepResult:
    """The small sweep on two spawned local processes (run once for the module)."""
    with local_executor(2) as pool:
        return sweep(SCENARIO, executor=pool, **SMALL)


def test_a_sweep_has_a_row_per_fault_rate_and_mode_with_what_its_runs_did(
    local_sweep: SweepResult,
) -> None:
    assert [(row.fault, row.mode) for row in local_sweep] == [
        (0.0, "asyncio"), (0.0, "threading"), (0.3, "asyncio"), (0.3, "threading"),
    ]  # fmt: skip
    assert len(local_sweep.runs) == 8 and not local_sweep.failed_runs
    for row in local_sweep:
        runs = [r for r in local_sweep.runs if (r.fault, r.mode) == (row.fault, row.mode)]
        assert [r.seed for r in runs] == [1, 2]
        assert row.runs == 2 and row.failed_runs == 0
        assert row.agent_steps == sum(len(st.outcomes) for r in runs for st in r.trace.steps)
        assert row.agent_steps == 2 * 2 * 4  # seeds x steps x agents
        assert row.failed_agent_steps == sum(len(st.failed) for r in runs for st in r.trace.steps)
        assert row.faults_injected == sum(len(r.trace.injected()) for r in runs)
        assert row.identical is True
    quiet, faulty = local_sweep[0], local_sweep[2]
    assert quiet.faults_injected == 0 and quiet.failed_agent_steps == 0
    assert faulty.faults_injected > 0
    assert 0 <= faulty.faults_recovered <= faulty.faults_injected


def test_each_run_is_the_run_scenario_run_of_its_seed_fault_rate_and_mode(
    local_sweep: SweepResult,
) -> None:
    from mesa_llm_testing import FaultPlan

    for run in (local_sweep.runs[0], local_sweep.runs[-1]):  # quiet asyncio, faulty threading
        here = run_scenario(SCENARIO, steps=2, mode=run.mode, seed=run.seed, agents=4,
                            faults=FaultPlan(run.fault, seed=run.seed))  # fmt: skip
        assert run.trace == here, run.trace.diff(here)


def test_the_same_sweep_on_a_dask_local_cluster_gives_identical_rows(
    local_sweep: SweepResult, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from distributed import get_client

    # The cluster `sweep --engine dask` starts: a LocalCluster of two single-threaded worker
    # processes on 127.0.0.1, used through Client.get_executor(), closed on leaving.
    with dask_executor(None, workers=2) as executor:
        assert type(executor).__name__ == "ClientExecutor"
        on_dask = sweep(SCENARIO, executor=executor, **SMALL)
        # The command, sent to that cluster's scheduler.
        address = get_client().scheduler_info()["address"]
        assert address.startswith("tcp://127.0.0.1:")
        rows_json = tmp_path / "rows.json"
        code = main(["sweep", SCENARIO, *SMALL_ARGS, "--engine", "dask", "--scheduler", address,
                     "--json", str(rows_json), "-q"])  # fmt: skip
    assert code == 0, capsys.readouterr()
    assert "8 runs in" in capsys.readouterr().out
    assert on_dask == local_sweep  # rows, wall time aside
    assert [r.trace for r in on_dask.runs] == [r.trace for r in local_sweep.runs]
    assert [row.seconds for row in on_dask] != [0.0] * 4
    assert rows_from_json(rows_json) == list(local_sweep)


def rows_from_json(path: Path) -> list[SweepRow]:
    """The rows a ``sweep --json`` file holds."""
    data = json.loads(path.read_text())
    return [SweepRow(**{k: v for k, v in row.items() if k != "failure_rate"})
            for row in data["rows"]]  # fmt: skip


CRASHING = """
    import os

    from mesa_llm_testing.scenarios import REGISTRY

    def factory(*, seed, n_agents=None):
        if seed == 2:
            raise RuntimeError("this scenario raises for seed 2")
        if seed == 3:
            os._exit(7)  # the worker process dies, as on a segfault
        return REGISTRY["civil_violence"](seed=seed, n_agents=n_agents)
"""


def test_a_run_that_raises_and_one_that_kills_its_process_fail_and_the_others_finish(
    tmp_path: Path,
) -> None:
    path = tmp_path / "crashing.py"
    path.write_text(textwrap.dedent(CRASHING))
    seen = []

    with local_executor(2) as pool:
        result = sweep(f"{path}:factory", seeds=[1, 2, 3, 4], faults=[0.2], modes=["asyncio"],
                       agents=3, steps=2, executor=pool, progress=seen.append)  # fmt: skip

    by_seed = {run.seed: run for run in result.runs}
    assert sorted(by_seed) == sorted(r.seed for r in seen) == [1, 2, 3, 4]
    assert by_seed[1].ok and by_seed[4].ok
    assert by_seed[1].trace.steps and by_seed[4].trace.steps
    raised = by_seed[2]
    assert raised.trace is None
    assert "Traceback" in raised.error and "this scenario raises for seed 2" in raised.error
    died = by_seed[3]
    assert died.trace is None and "worker process running this run died" in died.error
    (row,) = result
    assert (row.runs, row.failed_runs) == (4, 2)
    assert row.agent_steps == 2 * 2 * 3  # the two finished runs: steps x agents
    assert result.failed_runs == [raised, died]


@pytest.mark.subprocess
def test_the_command_writes_the_table_json_csv_and_plot(
    tmp_path: Path, local_sweep: SweepResult, warm_run: Run
) -> None:
    out = {name: tmp_path / name for name in ("rows.json", "rows.csv", "plot.png")}
    # The console script in a process of its own (a fork of the warm Python); its workers
    # come from a forkserver of their own, as for a user.
    result = warm_run(
        ["mesa-llm-testing", "sweep", SCENARIO, *SMALL_ARGS, "--workers", "2",
         "--json", str(out["rows.json"]), "--csv", str(out["rows.csv"]),
         "--plot", str(out["plot.png"])],
        tmp_path, 300,
    )  # fmt: skip

    assert result.returncode == 0, result.stdout + result.stderr
    assert "agent-steps failed" in result.stdout and "identical across modes" in result.stdout
    assert "8 runs in" in result.stdout and "0 failed" in result.stdout
    assert rows_from_json(out["rows.json"]) == list(local_sweep)
    data = json.loads(out["rows.json"].read_text())
    assert data["scenario"] == SCENARIO and data["seeds"] == [1, 2]
    assert len(data["runs"]) == 8 and all(run["ok"] for run in data["runs"])
    csv_lines = out["rows.csv"].read_text().splitlines()
    assert csv_lines[0].startswith("fault,mode,runs,failed_runs,agent_steps,failed_agent_steps")
    assert len(csv_lines) == 5
    assert out["plot.png"].read_bytes().startswith(b"\x89PNG")


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--seeds", "5-1"], "argument --seeds: invalid value '5-1'; valid values: whole"),
        (["--seeds", "a,b"], "argument --seeds: invalid value 'a,b'"),
        (["--faults", "0,1.5"], "argument --faults: invalid value '1.5' in '0,1.5'; valid values"),
        (["--modes", "asyncio,fast"],
         "argument --modes: invalid mode 'fast'; valid values: asyncio, threading, sequential"),
        (["--workers", "0"], "argument --workers: invalid value '0'; valid values: integers >= 1"),
        (["--scheduler", "tcp://127.0.0.1:1"], "--scheduler 'tcp://127.0.0.1:1': only used with"),
        (["--plot", "out.gif"], "--plot 'out.gif': unknown picture format '.gif'; valid formats"),
        (["--json", "no/such/dir/x.json"], "--json 'no/such/dir/x.json': the directory does"),
        (["--engine", "dask", "--scheduler", "tcp://127.0.0.1:1", "--workers", "2"],
         "--workers: the cluster at --scheduler has its own workers"),
        (["--engine", "spark"], "argument --engine: invalid choice: 'spark'"),
        (["--seeds", "1,1"], "argument --seeds: 1 appears twice in '1,1'; give each value once"),
        (["--seeds", "1-3,2"], "argument --seeds: 2 appears twice in '1-3,2'"),
        (["--faults", "0,0.0"], "argument --faults: 0.0 appears twice in '0,0.0'"),
        (["--modes", "asyncio,asyncio"], "argument --modes: 'asyncio' appears twice"),
    ],
)  # fmt: skip
def test_bad_options_are_usage_errors_before_any_run(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sweep", SCENARIO, *argv]) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert "usage: mesa-llm-testing sweep" in err


def test_an_unknown_scenario_is_a_usage_error_naming_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["sweep", "no_such_scenario", "-q"]) == 2
    err = capsys.readouterr().err
    assert "SCENARIO 'no_such_scenario'" in err and "civil_violence" in err


@pytest.mark.parametrize(
    ("missing", "argv", "message"),
    [
        ("matplotlib", ["--plot", "out.png"], "--plot needs matplotlib, which is not installed"),
        ("distributed", ["--engine", "dask"], "--engine dask needs dask.distributed, which is"),
    ],
)
def test_an_option_whose_extra_is_missing_is_a_usage_error(
    missing: str,
    argv: list[str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name in [m for m in sys.modules if m == missing or m.startswith(f"{missing}.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, missing, None)  # import ... -> ImportError
    assert main(["sweep", SCENARIO, *argv]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"seeds": []}, "seeds=[]; valid values: integers >= 0"),
        ({"seeds": [1, -1]}, "seeds=[1, -1]; valid values: integers >= 0"),
        ({"faults": [0.1, 2]}, "faults=[0.1, 2]; valid values: rates from 0 to 1"),
        ({"modes": ["turbo"]}, "modes=['turbo']; valid values: sequential, asyncio, threading"),
        ({"modes": ["asyncio", "asyncio"]}, "modes=['asyncio', 'asyncio'] repeats a value"),
        ({"steps": 0}, "steps=0; valid values: integers >= 1"),
        ({"agents": 0}, "agents=0; valid values: None, integers >= 1"),
        ({"seeds": "1,1"}, "seeds='1,1': 1 appears twice in '1,1'; give each value once"),
        ({"seeds": [1, 1]}, "seeds=[1, 1] repeats a value; give each value once"),
        ({"seeds": "5-1"}, "seeds='5-1': invalid value '5-1'; valid values: whole numbers"),
        ({"faults": "0,2"}, "faults='0,2': invalid value '2' in '0,2'; valid values: fault rates"),
        ({"faults": None}, "faults=None; give a list, one value, or text as on the command line"),
        ({"modes": "asyncio,turbo"}, "modes=['asyncio', 'turbo']; valid values: sequential"),
        ({"executor": "x"}, "executor='x'; valid values: None (a local process pool) or a "),
    ],
)
def test_bad_sweep_arguments_raise_before_any_run(options: dict, message: str) -> None:
    class NoExecutor:  # a run submitted would fail the test
        def submit(self, *args: object, **kwargs: object) -> None:
            raise AssertionError("a run was submitted despite bad input")

    kwargs = {"executor": NoExecutor(), **SMALL, **options}
    with pytest.raises(ValueError, match=r"^mesa_llm_testing: ") as info:
        sweep(SCENARIO, **kwargs)  # type: ignore[arg-type]
    assert message in str(info.value)


def test_one_value_or_command_line_text_is_taken_as_the_cli_takes_it() -> None:
    class InThisProcess(Executor):  # runs each run here, at once: the tasks are what is checked
        def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
            future: Future[Any] = Future()
            future.set_result(fn(*args, **kwargs))
            return future

    small = {"agents": 2, "steps": 1, "executor": InThisProcess()}
    result = sweep(SCENARIO, seeds="1-2", faults=0.1, modes="asyncio", **small)
    assert [(r.seed, r.fault, r.mode) for r in result.runs] == [
        (1, 0.1, "asyncio"), (2, 0.1, "asyncio"),
    ]  # fmt: skip
    assert not result.failed_runs
    again = sweep(SCENARIO, seeds=1, faults="0,0.1", modes="asyncio,threading", **small)
    assert [(row.fault, row.mode) for row in again] == [
        (0.0, "asyncio"), (0.0, "threading"), (0.1, "asyncio"), (0.1, "threading"),
    ]  # fmt: skip


def test_an_unknown_scenario_or_a_factory_no_worker_can_load_raises() -> None:
    with pytest.raises(ValueError, match="no_such_scenario"):
        sweep("no_such_scenario", **SMALL)
    with pytest.raises(ValueError, match="cannot be sent to a worker process"):
        sweep(lambda seed: None, **SMALL)  # type: ignore[arg-type,return-value]


def test_rows_compare_without_wall_time_and_give_their_failure_rate() -> None:
    row = SweepRow(0.1, "asyncio", 2, 0, 10, 3, 4, 1, True, seconds=1.5)
    assert row.failure_rate == pytest.approx(0.3)
    assert row == SweepRow(0.1, "asyncio", 2, 0, 10, 3, 4, 1, True, seconds=9.0)
    result = SweepResult([row], [])
    assert json.loads(result.to_json(scenario="x"))["rows"][0]["failure_rate"] == 0.3
