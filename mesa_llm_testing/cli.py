"""``mesa-llm-testing``: run scenarios offline under injected faults, replay traces, list them.

::

    mesa-llm-testing run [SCENARIO] [--agents N] [--steps S] [--faults R] [--kinds K,...]
                         [--seed N] [--mode asyncio|threading|sequential|all]
                         [--trace PATH] [--timeline PATH]
    mesa-llm-testing replay TRACE [--mode asyncio|threading|sequential]
    mesa-llm-testing list
    mesa-llm-testing serve [--port P] [--faults R] [--seed N] ...   (see _serve_cli)

SCENARIO is a registered name (``mesa-llm-testing list``), a path to a ``.py`` file
(optionally ``file.py:factory``) or ``module:factory``; without it the default
built-in scenario runs. Every LLM call is answered by the deterministic fake LLM:
no API key, no network. Exit status: 0 when every check passes, 1 when a check
fails (the divergence is printed), 2 for usage errors.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import inspect
import json
import logging
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NoReturn, TextIO

from mesa_llm_testing._cli_args import (
    REPLAY_KEY,
    UsageError,
    non_negative_seed,
    parse_faults,
    portable_scenario,
    read_run_trace,
    replay_scenario,
)
from mesa_llm_testing._serve_cli import add_serve_parser, cmd_serve

if TYPE_CHECKING:
    from mesa_llm_testing._fakellm import FakeLLM
    from mesa_llm_testing._faults import FaultPlan
    from mesa_llm_testing._runner import RunTrace
    from mesa_llm_testing._timeline import StepWindow

__all__ = ["main"]

PROG: Final = "mesa-llm-testing"
MODES: Final = ("asyncio", "threading", "sequential", "all")
#: The order ``--mode all`` runs in: the sequential run is the reference.
ALL_MODES: Final = ("sequential", "asyncio", "threading")
EXIT_OK: Final = 0
EXIT_CHECK_FAILED: Final = 1
EXIT_USAGE: Final = 2
#: Simulated LLM latency when ``--timeline`` is given without ``--latency``: wide enough bars.
TIMELINE_LATENCY: Final = 0.004


# --------------------------------------------------------------------------- arguments


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


def _latency(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(
            f"invalid value {text!r}; valid values: numbers of seconds >= 0"
        )
    return value


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
        dest="command", metavar="{run,replay,list,serve}", required=True
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
        metavar="SECONDS",
        help="simulated LLM latency per call (default 0; "
        f"{TIMELINE_LATENCY * 1e3:g} ms with --timeline)",
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
    replay.add_argument("trace", metavar="TRACE", help="a trace written by 'run --trace'")
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
    for sub in (run, replay, listing, serve):
        sub.set_defaults(subparser=sub)  # usage errors found later print this one's usage
    return parser


# --------------------------------------------------------------------------- scenarios


@dataclass(frozen=True, slots=True)
class Scenario:
    """A scenario to run: how the user named it, and the factory that builds its model."""

    spec: str
    factory: Callable[..., Any]


def default_scenario() -> str:
    """The built-in scenario ``run`` uses without a SCENARIO argument."""
    from mesa_llm_testing._discovery import DEFAULT_SCENARIO

    return DEFAULT_SCENARIO


def resolve_scenario(spec: str | None) -> Scenario:
    """The factory for a built-in name, ``file.py[:factory]`` or ``module:factory``."""
    from mesa_llm_testing._runner import resolve_scenario as find_factory

    if spec is None:
        spec = default_scenario()
    try:
        return Scenario(spec, find_factory(spec))
    except ValueError as exc:
        message = str(exc).removeprefix("mesa_llm_testing: ")
        raise UsageError(f"SCENARIO {spec!r}: {message}") from None
    except Exception as exc:  # the scenario file itself raised while loading
        raise UsageError(
            f"SCENARIO {spec!r}: loading it raised {type(exc).__name__}: {exc}"
        ) from exc


def _describe(factory: Callable[..., Any]) -> str:
    doc = inspect.getdoc(factory) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


# --------------------------------------------------------------------------- running


@dataclass
class ModeRun:
    """One run of the scenario in one mode: its trace, the fake LLM's call spans, step windows."""

    mode: str
    trace: RunTrace
    llm: FakeLLM
    windows: list[StepWindow] = field(default_factory=list)


def _instrumented(
    factory: Callable[..., Any], on_step: Callable[[int, float, float], None]
) -> Callable[..., Any]:
    """``factory``, with each model step timed and reported to ``on_step(step, start, end)``."""

    @functools.wraps(factory)
    def make(*args: Any, **kwargs: Any) -> Any:
        model = factory(*args, **kwargs)
        inner = model.step

        def step(*a: Any, **k: Any) -> Any:
            start = time.perf_counter()
            try:
                return inner(*a, **k)
            finally:
                on_step(model.steps, start, time.perf_counter())

        model.step = step
        return model

    return make


def run_one(
    scenario: Scenario,
    *,
    mode: str,
    plan: FaultPlan,
    steps: int,
    seed: int,
    agents: int | None,
    latency: float,
    progress: bool,
) -> ModeRun:
    """Run ``scenario`` in one mode on a fresh timed fake LLM, with a progress bar on stderr."""
    from tqdm import tqdm

    from mesa_llm_testing._fakellm import FakeLLM
    from mesa_llm_testing._runner import run_scenario
    from mesa_llm_testing._timeline import StepWindow

    llm = FakeLLM(seed=seed, faults=plan, latency=latency, keep_calls=None)  # for --timeline
    windows: list[StepWindow] = []
    with tqdm(
        total=steps,
        desc=f"{scenario.spec} [{mode}]",
        unit="step",
        file=sys.stderr,
        disable=None if progress else True,
        leave=True,
    ) as bar:

        def on_step(step: int, start: float, end: float) -> None:
            windows.append(StepWindow(step, start, end))
            bar.update(1)

        trace = run_scenario(
            _instrumented(scenario.factory, on_step),
            steps=steps,
            mode=mode,
            faults=plan,
            seed=seed,
            agents=agents,
            llm=llm,
        )
    return ModeRun(mode, trace, llm, windows)


@contextlib.contextmanager
def _quiet_logs(verbose: bool) -> Iterator[None]:
    """Keep agent-failure logs (expected under injected faults) off the terminal unless ``-v``.

    The summary reports every failure; ``-v`` shows the log records as they happen.
    """
    root = logging.getLogger()
    handler: logging.Handler
    if verbose:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    else:
        handler = logging.NullHandler()  # stops logging's last-resort printing to stderr
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)


# --------------------------------------------------------------------------- output


def _write_trace(path: str, runs: Sequence[ModeRun], spec: str) -> list[Path]:
    """Write the first run's trace to ``path``; runs that diverge from it go next to it."""
    target = Path(path)
    written = [target]
    _dump_trace(target, runs[0].trace, spec)
    for run in runs[1:]:
        if run.trace != runs[0].trace:
            other = target.with_name(f"{target.stem}.{run.mode}{target.suffix or '.json'}")
            _dump_trace(other, run.trace, spec)
            written.append(other)
    return written


def _dump_trace(path: Path, trace: RunTrace, spec: str) -> None:
    data = trace.to_dict()
    data[REPLAY_KEY] = {"scenario": portable_scenario(spec)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")


def _timeline(path: str, run: ModeRun, scenario: Scenario, step: int | None) -> Path:
    from mesa_llm_testing._summary import retry_outcomes
    from mesa_llm_testing._timeline import call_spans, draw_timeline

    steps = {s.step: s for s in run.trace.steps}
    if step is None:
        step = max(steps, key=lambda n: (len(steps[n].faults), -n)) if steps else 1
    if step not in steps:
        raise UsageError(f"--timeline-step {step}: the run has steps {min(steps)} to {max(steps)}")
    window = next((w for w in run.windows if w.step == step), None)
    spans = [s for s in call_spans(run.llm.calls) if s.step == step]
    if window is None:  # the runner stepped the model without calling model.step()
        from mesa_llm_testing._timeline import StepWindow

        start = min((s.start for s in spans), default=0.0)
        window = StepWindow(step, start, max((s.end for s in spans), default=start))
    st = steps[step]
    retried_ok, _ = retry_outcomes(st)
    failed = sum(1 for status, _ in st.outcomes.values() if status != "ok")
    title = (
        f"{scenario.spec}: step {step}, {run.mode} mode, seed {run.trace.seed}: "
        f"{len(spans)} LLM calls, {len(st.faults)} faults, {retried_ok} retried then ok, "
        f"{failed} agents failed"
    )
    return draw_timeline(
        path,
        window=window,
        spans=spans,
        rows=st.start_order or sorted(st.outcomes),
        outcomes=st.outcomes,
        title=title,
    )


# --------------------------------------------------------------------------- commands


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
    return parse_faults(args.faults, kinds=args.kinds, seed=args.seed)


def _unprefixed(exc: BaseException) -> str:
    return str(exc).removeprefix("mesa_llm_testing: ")


def cmd_run(args: argparse.Namespace, out: TextIO) -> int:
    """``run``: run the scenario in one mode or all three, print the summary and the checks."""
    from mesa_llm_testing._summary import fault_summary

    plan = _check_run_args(args)
    scenario = resolve_scenario(args.scenario)
    latency = args.latency
    if latency is None:
        latency = TIMELINE_LATENCY if args.timeline is not None else 0.0
    modes = ALL_MODES if args.mode == "all" else (args.mode,)
    what = f"{', '.join(modes)} mode" + "s" * (len(modes) > 1)
    _announce(
        args,
        f"running {scenario.spec}: {args.steps} steps, {what}, seed {args.seed}, "
        f"{fault_summary(plan)}",
    )
    runs = _run_modes(args, scenario, modes, plan=plan, steps=args.steps, seed=args.seed,
                      agents=args.agents, latency=latency)  # fmt: skip
    return _report_run(args, runs, scenario, plan, out)


def _announce(args: argparse.Namespace, text: str) -> None:
    """Say what is about to happen, then load litellm (slow) with visible progress."""
    if not args.quiet:
        print(f"{PROG}: {text}", file=sys.stderr, flush=True)
    from mesa_llm_testing._startup import loading

    with loading(f"{PROG}: loading litellm", sys.stderr, enabled=not args.quiet):
        _load_litellm()


def _run_modes(
    args: argparse.Namespace, scenario: Scenario, modes: Sequence[str], **options: Any
) -> list[ModeRun]:
    with _quiet_logs(args.verbose):
        return [run_one(scenario, mode=mode, progress=not args.quiet, **options) for mode in modes]


def _report_run(
    args: argparse.Namespace, runs: list[ModeRun], scenario: Scenario, plan: FaultPlan, out: TextIO
) -> int:
    from mesa_llm_testing._summary import print_summary
    from mesa_llm_testing._verdict import check_runs, print_verdict

    print_summary([r.trace for r in runs], spec=scenario.spec, plan=plan, out=out)
    results = check_runs([r.trace for r in runs])
    if args.mode == "all" and not any(r.name == "reproducibility" and r.problem for r in results):
        print(
            "\nreproducible: sequential, asyncio and threading traces are identical "
            f"(seed {args.seed})",
            file=out,
        )
    if args.trace:
        for written in _write_trace(args.trace, runs, scenario.spec):
            print(f"trace written to {written}", file=out)
    if args.timeline:
        drawn = next((r for r in runs if r.mode == "asyncio"), runs[0])
        print(
            f"timeline written to {_timeline(args.timeline, drawn, scenario, args.timeline_step)}",
            file=out,
        )
    return EXIT_OK if print_verdict(results, out) else EXIT_CHECK_FAILED


def _load_litellm() -> None:
    """Import litellm and let it finish its lazy set-up, so neither counts as step time.

    The import takes about 4 s and the first completion loads more modules (about
    0.4 s); one throwaway call to a separate fake LLM does that before the runs.
    """
    from mesa_llm._litellm import import_litellm
    from mesa_llm_testing._fakellm import FakeLLM

    litellm = import_litellm()
    with FakeLLM(return_value="ready").activate():
        litellm.completion(model="mesa-fake/warm-up", messages=[{"role": "user", "content": "hi"}])


def cmd_replay(args: argparse.Namespace, out: TextIO) -> int:
    """``replay``: re-run a recorded trace (same scenario, seed, mode, faults) and compare."""
    data = read_run_trace(args.trace, mode=args.mode)  # every field checked, no heavy imports
    extra = data.pop(REPLAY_KEY, None) or {}
    # A trace from 'run --trace' names the scenario as given (a file, module:factory);
    # one from run_scenario() itself has the scenario's name.
    spec = replay_scenario(extra.get("scenario") or data["scenario"], args.trace)
    from mesa_llm_testing._faults import FaultPlan
    from mesa_llm_testing._runner import RunTrace

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
    _announce(args, f"replaying {args.trace}: {scenario.spec}, {steps} steps, {mode} mode, "
                    f"seed {recorded.seed}")  # fmt: skip
    (again,) = _run_modes(args, scenario, [mode], plan=plan, steps=steps, seed=recorded.seed,
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
