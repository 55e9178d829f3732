"""What ``run`` prints and writes: the summary and the verdict, trace files, the timeline."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from mesa_llm_testing._cli_args import REPLAY_KEY, UsageError, portable_scenario
from mesa_llm_testing._cli_parser import EXIT_CHECK_FAILED, EXIT_OK

if TYPE_CHECKING:
    from mesa_llm_testing._cli_run import ModeRun, Scenario
    from mesa_llm_testing._faults import FaultPlan
    from mesa_llm_testing._trace import RunTrace

__all__ = ["report_run", "write_timeline", "write_trace"]


def report_run(
    args: argparse.Namespace, runs: list[ModeRun], scenario: Scenario, plan: FaultPlan, out: TextIO
) -> int:
    from mesa_llm_testing._summary import print_summary
    from mesa_llm_testing._verdict import check_runs, print_verdict

    print_summary(
        [r.trace for r in runs],
        spec=scenario.spec,
        plan=plan,
        out=out,
        price_as=getattr(args, "price_as", None),
    )
    results = check_runs([r.trace for r in runs])
    if args.mode == "all" and not any(r.name == "reproducibility" and r.problem for r in results):
        print(
            "\nreproducible: sequential, asyncio and threading traces are identical "
            f"(seed {args.seed})",
            file=out,
        )
    if args.trace:
        for written in write_trace(args.trace, runs, scenario.spec):
            print(f"trace written to {written}", file=out)
    if args.timeline:
        drawn = next((r for r in runs if r.mode == "asyncio"), runs[0])
        picture = write_timeline(args.timeline, drawn, scenario, args.timeline_step)
        print(f"timeline written to {picture}", file=out)
    return EXIT_OK if print_verdict(results, out) else EXIT_CHECK_FAILED


def write_trace(path: str, runs: Sequence[ModeRun], spec: str) -> list[Path]:
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


def write_timeline(path: str, run: ModeRun, scenario: Scenario, step: int | None) -> Path:
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
