"""The ``mesa-llm-testing`` argument parser: commands, options, and the exit statuses."""

from __future__ import annotations

import argparse
import sys
from typing import Final, NoReturn

from mesa_llm_testing._cli_args import limits_arg, non_negative_seed
from mesa_llm_testing._cli_sweep_parser import add_sweep_parser
from mesa_llm_testing._latency import LatencyModel, parse_latency
from mesa_llm_testing._serve_cli import add_serve_parser

__all__ = [
    "ALL_MODES",
    "EXIT_CHECK_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "MODES",
    "PROG",
    "TIMELINE_LATENCY",
    "build_parser",
]

PROG: Final = "mesa-llm-testing"
MODES: Final = ("asyncio", "threading", "sequential", "all")
#: The order ``--mode all`` runs in: the sequential run is the reference.
ALL_MODES: Final = ("sequential", "asyncio", "threading")
EXIT_OK: Final = 0
EXIT_CHECK_FAILED: Final = 1
EXIT_USAGE: Final = 2
#: Simulated LLM latency when ``--timeline`` is given without ``--latency``: wide enough bars.
TIMELINE_LATENCY: Final = 0.004


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"invalid value {text!r}; valid values: whole numbers >= 1"
        )
    return value


def _latency(text: str) -> LatencyModel:
    try:
        return parse_latency(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class _Parser(argparse.ArgumentParser):
    """argparse, with errors that name the option and list the valid values."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``mesa-llm-testing`` argument parser."""
    parser = _Parser(
        prog=PROG,
        description="Run Mesa-LLM scenarios offline on a deterministic fake LLM, under injected "
        "faults, and check isolation, ordering and reproducibility.",
    )
    commands = parser.add_subparsers(
        dest="command", metavar="{run,replay,list,serve,sweep}", required=True
    )

    run = commands.add_parser(
        "run",
        help="run a scenario and print a summary (exit 1 if a check fails)",
        description="Run a scenario on the fake LLM and print a summary; with --mode all, "
        "check that sequential, asyncio and threading runs give identical traces.",
    )
    run.add_argument(
        "scenario",
        nargs="?",
        metavar="SCENARIO",
        help="a built-in scenario (see 'list'), a path to a .py file (file.py[:factory]), or "
        "module:factory; default: the default built-in scenario",
    )
    run.add_argument(
        "--agents", type=_positive_int, metavar="N", help="number of agents "
        "(default: the scenario's own)"
    )  # fmt: skip
    run.add_argument(
        "--steps",
        type=_positive_int,
        default=5,
        metavar="S",
        help="model steps (default 5)",
    )
    run.add_argument(
        "--faults",
        default="0",
        metavar="R",
        help="fault rate from 0 to 1 (0.1: one call in ten faults), or a FaultPlan JSON "
        "(inline, or a path to a .json file) (default 0)",
    )
    run.add_argument(
        "--kinds",
        metavar="K,...",
        help="fault kinds to inject, comma-separated (default: all): rate_limit, timeout, "
        "malformed_json, server_error, connection_error, empty_response",
    )
    run.add_argument(
        "--seed",
        type=non_negative_seed,
        default=0,
        metavar="N",
        help="seed, an integer >= 0 (default 0)",
    )
    run.add_argument(
        "--mode",
        choices=MODES,
        default="asyncio",
        help="stepping mode; 'all' runs sequential, asyncio and threading and compares the "
        "traces (default asyncio)",
    )
    run.add_argument("--trace", metavar="PATH", help="write the run's trace (JSON) to PATH")
    run.add_argument(
        "--timeline",
        metavar="PATH",
        help="draw one step (PNG or SVG): a row per agent, a bar per LLM call, faults and "
        "retries marked (needs the 'plot' extra)",
    )
    run.add_argument(
        "--timeline-step",
        type=_positive_int,
        metavar="N",
        help="the step to draw (default: the step with the most faults)",
    )
    run.add_argument(
        "--latency",
        type=_latency,
        metavar="MODEL",
        help="simulated LLM latency per call, drawn per call from its identity: seconds "
        "(0.02), uniform:LOW,HIGH or lognormal:p50=S,p99=S (default 0; "
        f"{TIMELINE_LATENCY * 1e3:g} ms with --timeline)",
    )
    run.add_argument(
        "--limits",
        type=limits_arg,
        metavar="LIMITS",
        help="the fake provider's limits, e.g. rpm=600,tpm=100000,max_concurrent=8 (keys: "
        "rpm, tpm, max_concurrent): calls beyond them get a 429 with Retry-After, counted "
        "apart from faults (they depend on timing)",
    )
    run.add_argument(
        "--price-as",
        metavar="MODEL",
        help="price the run's tokens as this model from litellm's cost map (e.g. "
        "openai/gpt-4o-mini), whatever model the scenario asked the fake for",
    )
    run.add_argument(
        "--record",
        metavar="PATH",
        help="record every LLM call of the run, sent to the real provider, to the cassette "
        "PATH (.jsonl or .jsonl.gz); needs --llm-model and a key",
    )
    run.add_argument(
        "--llm-model",
        metavar="MODEL",
        help="the litellm model the scenario's agents use (e.g. openai/gpt-4o-mini)",
    )
    run.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bar"
    )  # fmt: skip
    run.add_argument(
        "-v", "--verbose", action="store_true", help="show the library's logs (agent failures)"
    )

    replay = commands.add_parser(
        "replay",
        help="re-run a recorded trace and report whether it reproduces (exit 1 if not)",
        description="Re-run the scenario, seed, mode and faults recorded in TRACE and compare.",
    )
    replay.add_argument(
        "trace",
        metavar="TRACE",
        help="a trace written by 'run --trace', or a cassette written by 'run --record' "
        "(replayed offline, every call answered by its recording)",
    )
    replay.add_argument(
        "--mode",
        choices=ALL_MODES,
        help="replay in another stepping mode (default: the recorded one); the traces must "
        "still be identical",
    )
    replay.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    replay.add_argument("-v", "--verbose", action="store_true", help="show the library's logs")

    listing = commands.add_parser(
        "list", help="list the scenarios: the built-ins and those other packages register"
    )
    serve = add_serve_parser(commands)
    sweep = add_sweep_parser(commands)
    for sub in (run, replay, listing, serve, sweep):
        sub.set_defaults(subparser=sub)  # usage errors found later print this one's usage
    return parser
