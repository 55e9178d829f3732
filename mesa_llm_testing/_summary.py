"""The plain-text tables ``mesa-llm-testing run`` prints at the end of a run.

Fault outcomes are counted as what they are. A fault the agent was retried past
(it made another LLM call after it) ended either in success ("retried, then ok")
or in the agent's failure anyway ("retried, failed anyway"); a fault on the
agent's last call either ended its step or was absorbed (free text that tolerates
a malformed reply). Nothing is called "recovered" unless the agent succeeded.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, TextIO

from mesa_llm_testing._faults import DEFAULT_KINDS, FaultKind

if TYPE_CHECKING:
    from mesa_llm_testing._faults import FaultPlan
    from mesa_llm_testing._trace import RunTrace, StepTrace

__all__ = [
    "FAULT_OUTCOMES",
    "all_agents_failed",
    "failures_line",
    "fault_outcomes",
    "format_table",
    "kinds_table",
    "limited_line",
    "modes_table",
    "print_summary",
    "retry_outcomes",
    "steps_table",
]

#: What became of an injected fault, in table order.
FAULT_OUTCOMES: Final = ("retried, then ok", "retried, failed anyway", "ended the step", "absorbed")
_LEGEND: Final = (
    "  retried: the agent called the LLM again after the fault (its step then succeeded,\n"
    "  or failed anyway); ended the step: the fault was the agent's last call and it failed;\n"
    "  absorbed: the fault was its last call and it succeeded (free text takes a bad reply)"
)


def format_table(
    header: Sequence[str], rows: Sequence[Sequence[Any]], *, indent: str = "  "
) -> str:
    """Columns padded to fit; the first column left-aligned, the others right-aligned."""
    cells = [[str(c) for c in header], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = []
    for n, row in enumerate(cells):
        parts = [
            cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row)
        ]
        lines.append(indent + "  ".join(parts).rstrip())
        if n == 0:
            lines.append(indent + "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _seconds(value: float) -> str:
    return f"{value * 1e3:.1f} ms" if value < 1 else f"{value:.2f} s"


def fault_outcomes(st: StepTrace) -> Iterator[tuple[str, str]]:
    """``(fault kind, outcome)`` for each fault of the step; outcome from :data:`FAULT_OUTCOMES`."""
    for fault in st.faults:
        uid = fault.get("agent")
        calls = st.llm_calls.get(uid) or []
        last = max((c.call for c in calls), default=fault.get("call"))
        failed = uid in st.failed
        if fault.get("call") is not None and last is not None and fault["call"] < last:
            outcome = FAULT_OUTCOMES[1] if failed else FAULT_OUTCOMES[0]
        else:
            outcome = FAULT_OUTCOMES[2] if failed else FAULT_OUTCOMES[3]
        yield str(fault["kind"]), outcome


def retry_outcomes(st: StepTrace) -> tuple[int, int]:
    """Agents of the step that were retried past a fault: ``(then ok, failed anyway)``."""
    retried: dict[Any, bool] = {}
    for fault in st.faults:
        uid = fault.get("agent")
        calls = st.llm_calls.get(uid) or []
        if calls and fault.get("call") is not None and fault["call"] < calls[-1].call:
            retried[uid] = uid in st.failed
    failed_anyway = sum(retried.values())
    return len(retried) - failed_anyway, failed_anyway


def steps_table(trace: RunTrace) -> str:
    """Per step: agents ok and failed, faults, retries, agents retried then ok / failed, time."""
    keys = ("ok", "failed", "faults", "retries", "retried_ok", "retried_failed")
    rows = []
    totals = Counter[str]()
    for st in trace.steps:
        failed = len(st.failed)
        retried_ok, retried_failed = retry_outcomes(st)
        values = (len(st.outcomes) - failed, failed, len(st.faults), st.retries)
        row = dict(zip(keys, (*values, retried_ok, retried_failed), strict=True))
        totals.update(row)
        rows.append([st.step, *row.values(), _seconds(st.seconds)])
    rows.append(["total", *(totals[k] for k in keys), _seconds(trace.seconds)])
    header = [
        "step", "agents ok", "failed", "faults", "retries",
        "retried, then ok", "retried, failed anyway", "time",
    ]  # fmt: skip
    return format_table(header, rows)


def kinds_table(trace: RunTrace) -> str:
    """Per fault kind: injected, and what became of each (:data:`FAULT_OUTCOMES`)."""
    counts: dict[str, Counter[str]] = {}
    for st in trace.steps:
        for kind, outcome in fault_outcomes(st):
            counts.setdefault(kind, Counter())[outcome] += 1
    if not counts:
        return "  (no faults injected)"
    order = [k.value for k in FaultKind]
    rows = []
    totals = Counter[str]()
    for kind in sorted(counts, key=lambda k: order.index(k) if k in order else len(order)):
        totals.update(counts[kind])
        rows.append([kind, counts[kind].total(), *(counts[kind][o] for o in FAULT_OUTCOMES)])
    rows.append(["total", totals.total(), *(totals[o] for o in FAULT_OUTCOMES)])
    return format_table(["fault kind", "injected", *FAULT_OUTCOMES], rows) + "\n" + _LEGEND


def failures_line(trace: RunTrace) -> str:
    """The agents' failures by exception type, most common first: ``"3 RateLimitError, ..."``."""
    counts = Counter(
        exc or status
        for st in trace.steps
        for status, exc in st.outcomes.values()
        if status != "ok"
    )
    return ", ".join(f"{n} {name}" for name, n in counts.most_common()) or "none"


def all_agents_failed(trace: RunTrace) -> bool:
    """True when the run had agents and every agent failed in every step."""
    outcomes = [status for st in trace.steps for status, _ in st.outcomes.values()]
    return bool(outcomes) and all(status != "ok" for status in outcomes)


def modes_table(traces: Mapping[str, RunTrace]) -> str:
    """Per mode: total wall time, agent-steps ok and failed, faults, agents retried then ok."""
    rows = []
    for mode, trace in traces.items():
        total = sum(len(st.outcomes) for st in trace.steps)
        failed = sum(len(st.failed) for st in trace.steps)
        retried = [retry_outcomes(st) for st in trace.steps]
        rows.append(
            [
                mode,
                _seconds(trace.seconds),
                total - failed,
                failed,
                sum(len(st.faults) for st in trace.steps),
                sum(ok for ok, _ in retried),
                sum(failed for _, failed in retried),
            ]
        )
    header = ["mode", "time", "agents ok", "failed", "faults"]
    return format_table([*header, "retried, then ok", "retried, failed anyway"], rows)


def limited_line(traces: Sequence[RunTrace]) -> str:
    """The calls the fake refused under its provider limits, per mode, apart from faults."""
    counts = ", ".join(f"{t.limited:,} ({t.mode})" for t in traces)
    return f"{counts}; over the fake's provider limits, timing-dependent, not faults"


def fault_summary(plan: FaultPlan) -> str:
    """``"faults 0.1 (default kinds)"``, ``"3 scripted faults"`` or ``"no faults"``."""
    if not plan.rate and not plan.scripted:
        return "no faults"
    parts = []
    if plan.rate:
        if set(plan.kinds) == set(DEFAULT_KINDS):
            kinds = "default kinds"
        elif set(plan.kinds) == set(FaultKind):
            kinds = "all kinds"
        else:
            kinds = ",".join(plan.kinds)
        parts.append(f"faults {plan.rate:g} ({kinds})")
    if plan.scripted:
        parts.append(f"{len(plan.scripted)} scripted faults")
    return ", ".join(parts)


def print_summary(
    traces: Sequence[RunTrace],
    *,
    spec: str,
    plan: FaultPlan,
    out: TextIO,
    price_as: str | None = None,
) -> None:
    """The summary tables: per step, per fault kind, and per mode when several modes ran."""
    first = traces[0]  # with --mode all: the sequential reference run
    agents = len(first.steps[0].population or first.steps[0].outcomes) if first.steps else 0
    print(
        f"\n{spec}: {agents} agents, {len(first.steps)} steps, seed {first.seed}, "
        f"{fault_summary(plan)}",
        file=out,
    )
    print(f"\nper step ({first.mode}):", file=out)
    print(steps_table(first), file=out)
    print("\nfaults by kind:", file=out)
    print(kinds_table(first), file=out)
    print(f"\nagent failures: {failures_line(first)}", file=out)
    if any(t.limited for t in traces):
        print(f"load-driven 429s: {limited_line(traces)}", file=out)
    from mesa_llm_testing._cost import usage_line  # loads litellm's cost map

    line = usage_line(first.usage, agents=agents, steps=len(first.steps), price_as=price_as)
    print(f"tokens: {line}", file=out)
    if len(traces) > 1:
        print("\nper mode:", file=out)
        print(modes_table({t.mode: t for t in traces}), file=out)
