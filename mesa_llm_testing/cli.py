"""``mesa-llm-testing``: run scenarios offline under injected faults, replay traces, list them.

::

    mesa-llm-testing run [SCENARIO] [--agents N] [--steps S] [--faults R] [--kinds K,...]
                         [--seed N] [--mode asyncio|threading|sequential|all]
                         [--trace PATH] [--timeline PATH]
    mesa-llm-testing replay TRACE [--mode asyncio|threading|sequential]
    mesa-llm-testing list
    mesa-llm-testing serve [--port P] [--faults R] [--seed N] ...   (see _serve_cli)
    mesa-llm-testing sweep [SCENARIO] [--seeds 1-50] [--faults 0,0.1] ...   (see _cli_sweep)

SCENARIO is a registered name (``mesa-llm-testing list``), a path to a ``.py`` file
(optionally ``file.py:factory``) or ``module:factory``; without it the default
built-in scenario runs. Every LLM call is answered by the deterministic fake LLM:
no API key, no network. Exit status: 0 when every check passes, 1 when a check
fails (the divergence is printed), 2 for usage errors.

This module holds the commands and :func:`main`; the parser is ``_cli_parser``,
input checks ``_cli_args``, running a scenario ``_cli_run``, what ``run`` prints
and writes ``_cli_output``, and ``serve`` is ``_serve_cli``.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TextIO

from mesa_llm_testing._cli_args import (
    REPLAY_KEY,
    UsageError,
    parse_faults,
    read_run_trace,
    replay_scenario,
)
from mesa_llm_testing._cli_output import report_run
from mesa_llm_testing._cli_parser import (
    ALL_MODES,
    EXIT_CHECK_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    PROG,
    TIMELINE_LATENCY,
    build_parser,
)
from mesa_llm_testing._cli_run import announce, default_scenario, resolve_scenario, run_modes
from mesa_llm_testing._cli_sweep import cmd_sweep
from mesa_llm_testing._serve_cli import cmd_serve

if TYPE_CHECKING:
    from mesa_llm_testing._faults import FaultPlan

__all__ = ["main"]


def _check_run_args(args: argparse.Namespace) -> FaultPlan:
    """Validate every ``run`` option that needs more than argparse; UsageError otherwise."""
    if args.timeline_step is not None:
        if args.timeline is None:
            raise UsageError(
                f"--timeline-step {args.timeline_step}: only used with --timeline PATH"
            )
        if args.timeline_step > args.steps:
            raise UsageError(
                f"--timeline-step {args.timeline_step}: the run has steps 1 to {args.steps} "
                f"(--steps {args.steps}); valid values: 1 to {args.steps}"
            )
    if args.timeline is not None:
        suffix = Path(args.timeline).suffix.lower()
        if suffix not in (".png", ".svg"):
            raise UsageError(
                f"--timeline {args.timeline!r}: unknown picture format {suffix or '(none)'!r}; "
                f"valid formats: .png, .svg"
            )
        from mesa_llm_testing._timeline import PlotUnavailableError, import_figure

        try:
            import_figure()  # fail before the run, not after it
        except PlotUnavailableError as exc:
            raise UsageError(_unprefixed(exc)) from None
    if args.price_as is not None:
        from mesa_llm_testing._cost import is_priced  # loads litellm's cost map

        if not is_priced(args.price_as):
            raise UsageError(
                f"--price-as {args.price_as!r}: litellm's cost map has no price for this "
                "model; give one it prices, e.g. openai/gpt-4o-mini"
            )
    return parse_faults(args.faults, kinds=args.kinds, seed=args.seed)


def _unprefixed(exc: BaseException) -> str:
    return str(exc).removeprefix("mesa_llm_testing: ")


def cmd_run(args: argparse.Namespace, out: TextIO) -> int:
    """``run``: run the scenario in one mode or all three, print the summary and the checks."""
    from mesa_llm_testing._cli_cassette import (
        check_llm_model,
        check_record_args,
        recorder_for,
        with_llm_model,
    )
    from mesa_llm_testing._summary import fault_summary

    plan = _check_run_args(args)
    check_record_args(args, plan)
    check_llm_model(args)
    scenario = with_llm_model(resolve_scenario(args.scenario), args.llm_model)
    recorder = None if args.record is None else recorder_for(args, scenario)
    latency = args.latency
    if latency is None:
        latency = TIMELINE_LATENCY if args.timeline is not None else 0.0
    modes = ALL_MODES if args.mode == "all" else (args.mode,)
    what = f"{', '.join(modes)} mode" + "s" * (len(modes) > 1)
    announce(
        args,
        f"running {scenario.spec}: {args.steps} steps, {what}, seed {args.seed}, "
        f"{fault_summary(plan)}",
    )
    runs = run_modes(args, scenario, modes, plan=plan, steps=args.steps, seed=args.seed,
                      agents=args.agents, latency=latency, llm=recorder,
                      limits=args.limits)  # fmt: skip
    if recorder is not None:
        print(f"cassette written to {args.record} ({recorder.call_count} calls)", file=out)
    return report_run(args, runs, scenario, plan, out)


def _describe(factory: Callable[..., Any]) -> str:
    doc = inspect.getdoc(factory) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def cmd_replay(args: argparse.Namespace, out: TextIO) -> int:
    """``replay``: re-run a recorded trace (same scenario, seed, mode, faults) and compare."""
    from mesa_llm_testing._cassettes import is_cassette

    if is_cassette(args.trace):
        from mesa_llm_testing._cli_cassette import replay_cassette

        return replay_cassette(args, out)
    data = read_run_trace(args.trace, mode=args.mode)  # every field checked, no heavy imports
    extra = data.pop(REPLAY_KEY, None) or {}
    # A trace from 'run --trace' names the scenario as given (a file, module:factory);
    # one from run_scenario() itself has the scenario's name.
    spec = replay_scenario(extra.get("scenario") or data["scenario"], args.trace)
    from mesa_llm_testing._faults import FaultPlan
    from mesa_llm_testing._trace import RunTrace

    try:
        recorded = RunTrace.from_json(json.dumps(data))
    except (ValueError, KeyError, TypeError) as exc:
        raise UsageError(
            f"TRACE {args.trace!r}: not a trace written by '{PROG} run --trace': {_unprefixed(exc)}"
        ) from None
    scenario = resolve_scenario(spec)
    plan = recorded.fault_plan() or FaultPlan(0.0, seed=recorded.seed)
    mode = args.mode or recorded.mode
    steps = len(recorded.steps)
    announce(args, f"replaying {args.trace}: {scenario.spec}, {steps} steps, {mode} mode, "
                    f"seed {recorded.seed}")  # fmt: skip
    (again,) = run_modes(args, scenario, [mode], plan=plan, steps=steps, seed=recorded.seed,
                          agents=recorded.agents, latency=0.0)  # fmt: skip
    mode = (
        recorded.mode
        if args.mode in (None, recorded.mode)
        else f"{args.mode} (recorded: {recorded.mode})"
    )
    what = f"{scenario.spec}, {steps} steps, seed {recorded.seed}, {mode} mode"
    difference = recorded.diff(again.trace)
    if difference is None:
        print(f"reproduced: {what}: the new run's trace is identical to {args.trace}", file=out)
        return EXIT_OK
    print(f"NOT reproduced: {what}:\n  {difference}", file=out)
    return EXIT_CHECK_FAILED


def cmd_list(args: argparse.Namespace, out: TextIO) -> int:
    """``list``: the registered scenarios, one per line, with the first line of each docstring.

    Built-ins come first; another package's scenario is followed by ``[from DIST]``,
    and one that fails to load says why instead of stopping the listing.
    """
    from mesa_llm_testing._discovery import load_scenario, registered_scenarios

    try:
        registry = registered_scenarios()
    except ValueError as exc:
        raise UsageError(str(exc).removeprefix("mesa_llm_testing: ")) from None
    default = default_scenario()
    width = max((len(name) for name in registry), default=0)
    for name, entry in registry.items():
        try:
            about = _describe(load_scenario(name))
        except ValueError as exc:
            about = str(exc).removeprefix("mesa_llm_testing: ")
        mark = " (default)" if name == default else ""
        origin = "" if entry.builtin else f" [from {entry.distribution}]"
        print(f"{name.ljust(width)}  {about}{mark}{origin}".rstrip(), file=out)
    return EXIT_OK


COMMANDS: Final[dict[str, Callable[[argparse.Namespace, TextIO], int]]] = {
    "run": cmd_run,
    "replay": cmd_replay,
    "list": cmd_list,
    "serve": cmd_serve,
    "sweep": cmd_sweep,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``mesa-llm-testing``; return the exit status (0 ok, 1 check failed, 2 usage error)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help and on usage errors
        return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_USAGE
    try:
        return COMMANDS[args.command](args, sys.stdout)
    except UsageError as exc:
        args.subparser.print_usage(sys.stderr)
        print(f"{args.subparser.prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
