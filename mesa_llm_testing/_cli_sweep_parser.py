"""The ``mesa-llm-testing sweep`` options: seeds, fault rates and modes checked as argparse types.

Cheap to import (the parser is built for every command); ``_cli_sweep`` runs the sweep.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from mesa_llm_testing._sweep_values import parse_modes, parse_rates, parse_seeds

__all__ = ["add_sweep_parser", "parse_numbers"]


def _argument_type(parse: Callable[[str], list[Any]]) -> Callable[[str], list[Any]]:
    """``parse`` as an argparse type: its ValueError becomes argparse's usage error."""

    def parsed(text: str) -> list[Any]:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parsed


parse_numbers = _argument_type(parse_seeds)
_rates = _argument_type(parse_rates)


def _modes(text: str) -> list[str]:
    from mesa_llm.parallel_stepping import MODES

    modes = _argument_type(parse_modes)(text)
    unknown = [mode for mode in modes if mode not in MODES]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"invalid mode {unknown[0]!r}; valid values: {', '.join(MODES)}, comma-separated"
        )
    return modes


def _workers(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}; valid values: integers >= 1")
    return int(text)


def add_sweep_parser(commands: Any) -> argparse.ArgumentParser:
    """Add the ``sweep`` subcommand to ``commands`` (an argparse subparsers object)."""
    sweep = commands.add_parser(
        "sweep",
        help="run a scenario over seeds x fault rates x modes in parallel and tabulate "
        "(exit 1 if a run fails or traces differ across modes)",
        description="Run a scenario for every seed, fault rate and stepping mode, each run in "
        "a worker process (local processes, or a Dask cluster), and print per fault rate "
        "and mode: runs, agent-steps failed, faults injected and recovered, whether traces "
        "were identical across modes, wall time.",
    )
    sweep.add_argument(
        "scenario",
        nargs="?",
        metavar="SCENARIO",
        help="as for 'run' (default: the default built-in scenario)",
    )
    sweep.add_argument(
        "--seeds",
        type=parse_numbers,
        default=[1],
        metavar="1-50",
        help="seeds: numbers and ranges, comma-separated (default 1)",
    )
    sweep.add_argument(
        "--faults",
        type=_rates,
        default=[0.0, 0.1],
        metavar="R,...",
        help="fault rates from 0 to 1, comma-separated (default 0,0.1)",
    )
    sweep.add_argument(
        "--modes",
        type=_modes,
        default=["asyncio", "threading"],
        metavar="M,...",
        help="stepping modes, comma-separated (default asyncio,threading)",
    )
    sweep.add_argument(
        "--agents",
        type=_workers,
        metavar="N",
        help="number of agents (default: the scenario's own)",
    )
    sweep.add_argument(
        "--steps", type=_workers, default=5, metavar="S", help="model steps per run (default 5)"
    )
    sweep.add_argument(
        "--workers", type=_workers, metavar="N", help="worker processes (default: one per CPU)"
    )
    sweep.add_argument(
        "--engine",
        choices=("local", "dask"),
        default="local",
        help="local processes (default), or a Dask cluster (the 'dask' "
        "extra): a LocalCluster, or the one at --scheduler",
    )
    sweep.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="a Dask scheduler to run on (tcp://HOST:PORT; with --engine dask)",
    )
    sweep.add_argument("--json", metavar="PATH", help="write the rows and every run to PATH")
    sweep.add_argument("--csv", metavar="PATH", help="write the rows to PATH as CSV")
    sweep.add_argument(
        "--plot",
        metavar="PATH",
        help="draw failure rate against fault rate per mode (PNG or SVG; the 'plot' extra)",
    )
    sweep.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    sweep.add_argument("-v", "--verbose", action="store_true", help="show the library's logs")
    return sweep
