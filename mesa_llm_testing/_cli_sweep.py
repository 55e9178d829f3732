"""``mesa-llm-testing sweep``: a scenario over seeds x fault rates x modes, on processes or Dask.

::

    mesa-llm-testing sweep [SCENARIO] [--seeds 1-50] [--faults 0,0.05,0.1,0.3]
                           [--modes asyncio,threading] [--agents N] [--steps S]
                           [--workers N] [--engine local|dask] [--scheduler ADDRESS]
                           [--json PATH] [--csv PATH] [--plot PATH] [-q] [-v]

Prints a table per fault rate and mode (runs, agent-steps failed, faults injected
and recovered, whether traces were identical across modes, wall time) and the runs
that failed with the last line of their traceback (the whole traceback is in
``--json``). Exit status: 0 when every run finished with traces identical across
modes, 1 otherwise, 2 for usage errors (found before any run starts).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from concurrent.futures import Executor
from pathlib import Path
from typing import Any, Final, TextIO

from mesa_llm_testing._cli_args import UsageError, portable_scenario
from mesa_llm_testing._cli_parser import EXIT_CHECK_FAILED, EXIT_OK, PROG
from mesa_llm_testing._cli_run import quiet_logs, resolve_scenario

__all__ = ["cmd_sweep", "dask_executor"]

#: Seconds the Dask cluster (or the connection to a scheduler) gets to start and to stop.
DASK_TIMEOUT: Final = 60.0


def _check_sweep_args(args: argparse.Namespace) -> None:
    """Every check that needs more than argparse, before any work; UsageError otherwise."""
    if args.scheduler is not None and args.engine != "dask":
        raise UsageError(f"--scheduler {args.scheduler!r}: only used with --engine dask")
    if args.scheduler is not None and args.workers is not None:
        raise UsageError("--workers: the cluster at --scheduler has its own workers; drop one")
    for option in ("json", "csv", "plot"):
        path = getattr(args, option)
        if path is not None and not Path(path).resolve().parent.is_dir():
            raise UsageError(f"--{option} {path!r}: the directory does not exist")
    if args.plot is not None:
        suffix = Path(args.plot).suffix.lower()
        if suffix not in (".png", ".svg"):
            raise UsageError(
                f"--plot {args.plot!r}: unknown picture format {suffix or '(none)'!r}; "
                "valid formats: .png, .svg"
            )
        try:
            import matplotlib.figure  # noqa: F401
        except ImportError:
            raise UsageError(
                "--plot needs matplotlib, which is not installed; install it with "
                "pip install matplotlib (or pip install 'mesa-llm[plot]')"
            ) from None
    if args.engine == "dask":
        try:
            import distributed  # noqa: F401
        except ImportError:
            raise UsageError(
                "--engine dask needs dask.distributed, which is not installed; install it "
                "with pip install 'dask[distributed]' (or pip install 'mesa-llm[dask]')"
            ) from None


@contextlib.contextmanager
def dask_executor(scheduler: str | None, workers: int | None) -> Iterator[Executor]:
    """An executor on the Dask scheduler at ``scheduler``, or on a fresh ``LocalCluster``.

    The local cluster runs ``workers`` single-threaded worker processes on
    127.0.0.1, without a dashboard, started as local sweep workers are
    (``_sweep.start_method``); starting and stopping are bounded by :data:`DASK_TIMEOUT`.
    """
    import dask
    from distributed import Client, LocalCluster

    from mesa_llm_testing._sweep import start_method

    with contextlib.ExitStack() as stack:
        if scheduler is None:
            method = {"distributed.worker.multiprocessing-method": start_method()}
            stack.enter_context(dask.config.set(method))
            cluster = LocalCluster(
                n_workers=workers or os.cpu_count() or 1,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=None,
                silence_logs=logging.ERROR,
                timeout=DASK_TIMEOUT,
            )
            stack.callback(cluster.close, timeout=DASK_TIMEOUT)
            client = Client(cluster, timeout=DASK_TIMEOUT)
        else:
            client = Client(scheduler, timeout=DASK_TIMEOUT)
        stack.callback(client.close, timeout=DASK_TIMEOUT)
        yield client.get_executor()


def cmd_sweep(args: argparse.Namespace, out: TextIO) -> int:
    """``sweep``: run every combination, print the table, write JSON/CSV/plot; 0, 1 or 2."""
    from tqdm import tqdm

    from mesa_llm_testing._sweep import local_executor, sweep

    _check_sweep_args(args)
    scenario = resolve_scenario(args.scenario)
    spec = portable_scenario(scenario.spec)  # workers may run elsewhere
    total = len(args.seeds) * len(args.faults) * len(args.modes)
    where = (
        (f"Dask at {args.scheduler}" if args.scheduler else "a Dask LocalCluster")
        if args.engine == "dask"
        else "local processes"
    )
    if not args.quiet:
        print(
            f"{PROG}: sweeping {scenario.spec}: {total} runs "
            f"({len(args.seeds)} seeds x {len(args.faults)} fault rates x "
            f"{len(args.modes)} modes), {args.steps} steps each, on {where}",
            file=sys.stderr,
            flush=True,
        )
    with contextlib.ExitStack() as stack:
        stack.enter_context(quiet_logs(args.verbose))
        if args.engine == "dask":
            executor = stack.enter_context(dask_executor(args.scheduler, args.workers))
        else:
            executor = stack.enter_context(local_executor(args.workers))
        bar = stack.enter_context(
            tqdm(
                total=total,
                desc=f"sweep {scenario.spec}",
                unit="run",
                file=sys.stderr,
                disable=True if args.quiet else None,
            )
        )
        failed = 0

        def progress(result: Any) -> None:
            nonlocal failed
            failed += not result.ok
            bar.set_postfix(failed=failed, refresh=False)
            bar.update(1)

        result = sweep(
            spec,
            seeds=args.seeds,
            faults=args.faults,
            modes=args.modes,
            agents=args.agents,
            steps=args.steps,
            executor=executor,
            progress=progress,
        )
    return _report(args, result, scenario.spec, where, out)


def _report(args: argparse.Namespace, result: Any, spec: str, where: str, out: TextIO) -> int:
    print(result.table(), file=out)
    failed = result.failed_runs
    print(
        f"{len(result.runs)} runs in {result.seconds:.1f} s on {where}; {len(failed)} failed",
        file=out,
    )
    for run in failed:
        last = (run.error or "").strip().splitlines()[-1:] or ["(no traceback)"]
        print(
            f"  FAILED seed {run.seed}, fault rate {run.fault:g}, {run.mode}: {last[0]}", file=out
        )
    differ = sorted({f"{row.fault:g}" for row in result if row.identical is False})
    if differ:
        print(f"traces differ across modes at fault rate(s) {', '.join(differ)}", file=out)
    if args.json is not None:
        settings = {
            "scenario": spec,
            "seeds": args.seeds,
            "faults": args.faults,
            "modes": args.modes,
            "agents": args.agents,
            "steps": args.steps,
            "engine": args.engine,
        }
        Path(args.json).write_text(result.to_json(**settings) + "\n", encoding="utf-8")
    if args.csv is not None:
        Path(args.csv).write_text(result.to_csv(), encoding="utf-8")
    if args.plot is not None:
        from mesa_llm_testing._sweep_rows import draw_sweep

        agents = f"{args.agents} agents x " if args.agents else ""
        title = f"{spec}: {agents}{args.steps} steps, {len(args.seeds)} seeds per point"
        draw_sweep(result, args.plot, title=title)
    return EXIT_CHECK_FAILED if failed or differ else EXIT_OK
