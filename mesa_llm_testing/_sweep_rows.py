"""What a sweep reports: a :class:`RunResult` per run, a :class:`SweepRow` per fault rate and mode.

A row sums its runs (agent-steps that failed, faults injected and recovered,
wall time) and says whether every one of its runs gave the same trace as the
runs of the same seed and fault rate in the other modes. Rows are written as a
plain-text table, JSON or CSV, and drawn as failure rate against fault rate.
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from mesa_llm_testing._summary import format_table

if TYPE_CHECKING:
    from mesa_llm_testing._trace import RunTrace

__all__ = ["CSV_FIELDS", "RunResult", "SweepResult", "SweepRow", "draw_sweep", "summarize"]


@dataclass(frozen=True, slots=True)
class RunResult:
    """One run of a sweep: its seed, fault rate and mode, and its trace or why it has none.

    ``trace`` is None when the run failed (its scenario raised, or its process
    died); ``error`` then holds the traceback (or what the executor reported).
    ``seconds`` is the run's own wall time, measured where it ran.
    """

    seed: int
    fault: float
    mode: str
    trace: RunTrace | None = None
    error: str | None = None
    seconds: float = field(default=0.0, compare=False)

    @property
    def ok(self) -> bool:
        """Whether the run finished and has a trace."""
        return self.trace is not None

    @property
    def agent_steps(self) -> int:
        """Agent-steps the run recorded (an agent stepped once in one model step)."""
        return sum(len(st.outcomes) for st in self.trace.steps) if self.trace else 0

    @property
    def failed_agent_steps(self) -> int:
        """Agent-steps that ended in the agent's failure."""
        return sum(len(st.failed) for st in self.trace.steps) if self.trace else 0

    @property
    def faults_injected(self) -> int:
        """Faults the fake LLM injected in the run."""
        return sum(len(st.faults) for st in self.trace.steps) if self.trace else 0

    @property
    def faults_recovered(self) -> int:
        """Injected faults that did not end an agent's step."""
        return sum(st.recovered for st in self.trace.steps) if self.trace else 0

    def summary(self) -> dict[str, Any]:
        """The run as JSON-ready numbers (no trace), with its error's traceback if it failed."""
        return {
            "seed": self.seed,
            "fault": self.fault,
            "mode": self.mode,
            "ok": self.ok,
            "agent_steps": self.agent_steps,
            "failed_agent_steps": self.failed_agent_steps,
            "faults_injected": self.faults_injected,
            "faults_recovered": self.faults_recovered,
            "seconds": round(self.seconds, 4),
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class SweepRow:
    """The runs of one fault rate in one mode, summed. ``seconds`` is never compared.

    ``identical`` is True when each of this row's seeds gave the same trace
    (``RunTrace.__eq__``) in every mode of the sweep, False when one differs or
    when a run of a seed failed in some modes but not in others, and None when the
    sweep has a single mode (nothing to compare) or every run of the seeds failed.
    """

    fault: float
    mode: str
    runs: int
    failed_runs: int
    agent_steps: int
    failed_agent_steps: int
    faults_injected: int
    faults_recovered: int
    identical: bool | None
    seconds: float = field(default=0.0, compare=False)

    @property
    def failure_rate(self) -> float:
        """The share of agent-steps that failed (0 when no agent stepped)."""
        return self.failed_agent_steps / self.agent_steps if self.agent_steps else 0.0

    def to_dict(self) -> dict[str, Any]:
        """The row as JSON-ready values, with its failure rate."""
        data = asdict(self)
        data["seconds"] = round(self.seconds, 4)
        data["failure_rate"] = round(self.failure_rate, 6)
        return data


#: The columns of ``--csv`` (and the keys of each row in ``--json``), in order.
CSV_FIELDS: Final = (
    "fault",
    "mode",
    "runs",
    "failed_runs",
    "agent_steps",
    "failed_agent_steps",
    "failure_rate",
    "faults_injected",
    "faults_recovered",
    "identical",
    "seconds",
)


class SweepResult(list[SweepRow]):
    """The rows of a sweep (a list, by fault rate then mode), with every run in :attr:`runs`.

    Compares as its rows; :attr:`runs` (ordered by fault rate, mode, seed) holds
    each run's trace or traceback, and :attr:`seconds` the sweep's wall time.
    """

    def __init__(
        self, rows: Iterable[SweepRow], runs: Sequence[RunResult], seconds: float = 0.0
    ) -> None:
        super().__init__(rows)
        self.runs: list[RunResult] = list(runs)
        self.seconds = seconds

    @property
    def failed_runs(self) -> list[RunResult]:
        """The runs that did not finish, each with its traceback in ``error``."""
        return [run for run in self.runs if not run.ok]

    def table(self) -> str:
        """The rows as a plain-text table."""
        header = (
            "fault rate",
            "mode",
            "runs",
            "failed runs",
            "agent-steps failed",
            "faults injected",
            "recovered",
            "identical across modes",
            "seconds",
        )
        body = [
            (
                f"{row.fault:g}",
                row.mode,
                row.runs,
                row.failed_runs,
                f"{row.failed_agent_steps}/{row.agent_steps} ({row.failure_rate:.1%})",
                row.faults_injected,
                row.faults_recovered,
                {True: "yes", False: "NO", None: "-"}[row.identical],
                f"{row.seconds:.2f}",
            )
            for row in self
        ]
        return format_table(header, body)

    def to_json(self, **settings: Any) -> str:
        """The rows and every run's summary (traceback included) as JSON, after ``settings``."""
        return json.dumps(
            {
                **settings,
                "seconds": round(self.seconds, 4),
                "rows": [row.to_dict() for row in self],
                "runs": [run.summary() for run in self.runs],
            },
            indent=2,
        )

    def to_csv(self) -> str:
        """The rows as CSV, one line per fault rate and mode (columns :data:`CSV_FIELDS`)."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
        writer.writeheader()
        for row in self:
            writer.writerow(row.to_dict())
        return buffer.getvalue()


def summarize(results: Iterable[RunResult], *, modes: Sequence[str]) -> SweepResult:
    """Group ``results`` into rows by fault rate and mode (in ``modes`` order)."""
    ordered = sorted(results, key=lambda r: (r.fault, modes.index(r.mode), r.seed))
    by_row: dict[tuple[float, str], list[RunResult]] = defaultdict(list)
    by_seed: dict[tuple[float, int], list[RunResult]] = defaultdict(list)
    for run in ordered:
        by_row[run.fault, run.mode].append(run)
        by_seed[run.fault, run.seed].append(run)
    rows = []
    for (fault, mode), runs in by_row.items():
        verdicts = {_identical(by_seed[fault, run.seed]) for run in runs} - {None}
        rows.append(
            SweepRow(
                fault=fault,
                mode=mode,
                runs=len(runs),
                failed_runs=sum(not run.ok for run in runs),
                agent_steps=sum(run.agent_steps for run in runs),
                failed_agent_steps=sum(run.failed_agent_steps for run in runs),
                faults_injected=sum(run.faults_injected for run in runs),
                faults_recovered=sum(run.faults_recovered for run in runs),
                identical=None if len(modes) < 2 or not verdicts else all(verdicts),
                seconds=sum(run.seconds for run in runs),
            )
        )
    return SweepResult(rows, ordered)


def _identical(runs: Sequence[RunResult]) -> bool | None:
    """Whether the runs of one seed and fault rate (one per mode) gave equal traces."""
    traces = [run.trace for run in runs]
    if all(trace is None for trace in traces):
        return None  # nothing to compare: the failure is counted in failed_runs
    first = traces[0]
    return first is not None and all(trace == first for trace in traces[1:])


def draw_sweep(rows: Sequence[SweepRow], path: str | Path, *, title: str = "") -> None:
    """Draw failure rate against fault rate, one line per mode, to ``path`` (PNG or SVG).

    Needs matplotlib (the ``plot`` extra): ImportError naming the extra otherwise.
    """
    try:
        from matplotlib.figure import Figure
        from matplotlib.ticker import PercentFormatter
    except ImportError:
        raise ImportError(
            "mesa_llm_testing: drawing a sweep needs matplotlib, which is not installed; "
            "install it with pip install matplotlib (or pip install 'mesa-llm[plot]')"
        ) from None
    figure = Figure(figsize=(6, 4), layout="constrained")
    axes = figure.add_subplot()
    modes = list(dict.fromkeys(row.mode for row in rows))
    # Modes that agree draw on top of each other: wider, solid lines underneath.
    styles = [("o", "-", 5.0), ("s", "--", 2.5), ("^", ":", 1.5)]
    for n, mode in enumerate(modes):
        marker, line, width = styles[n % len(styles)]
        points = [(row.fault, row.failure_rate) for row in rows if row.mode == mode]
        axes.plot(*zip(*points, strict=True), marker=marker, linestyle=line, linewidth=width,
                  markersize=4 + width, label=mode, alpha=0.85)  # fmt: skip
    axes.set_xlabel("fault rate (share of LLM calls that fault)")
    axes.set_ylabel("failure rate (share of agent-steps failed)")
    axes.xaxis.set_major_formatter(PercentFormatter(1.0))
    axes.yaxis.set_major_formatter(PercentFormatter(1.0))
    axes.set_ylim(bottom=0)
    axes.set_xlim(left=0)
    axes.grid(alpha=0.3)
    axes.legend(title="mode")
    if title:
        axes.set_title(title)
    figure.savefig(path)
