"""The plain-text tables ``mesa-llm-testing run`` prints at the end of a run."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mesa_llm_testing._faults import FaultKind

if TYPE_CHECKING:
    from mesa_llm_testing._runner import RunTrace

__all__ = ["failures_line", "format_table", "kinds_table", "modes_table", "steps_table"]


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


def steps_table(trace: RunTrace) -> str:
    """Per step: agents ok and failed, faults injected and recovered, retries, wall time."""
    rows = []
    totals = Counter[str]()
    for st in trace.steps:
        failed = len(st.failed)
        ok = len(st.outcomes) - failed
        row = {
            "ok": ok,
            "failed": failed,
            "faults": len(st.faults),
            "recovered": st.recovered,
            "retries": st.retries,
        }
        totals.update(row)
        rows.append([st.step, *row.values(), _seconds(st.seconds)])
    keys = ("ok", "failed", "faults", "recovered", "retries")
    rows.append(["total", *(totals[k] for k in keys), _seconds(trace.seconds)])
    header = ["step", "agents ok", "failed", "faults", "recovered", "retries", "time"]
    return format_table(header, rows)


def _unrecovered(trace: RunTrace) -> set[tuple[int, Any, int]]:
    """(step, agent, call) of each fault that ended its agent's step (its last LLM call)."""
    ended = set()
    for st in trace.steps:
        for uid in st.failed:
            calls = st.llm_calls.get(uid)
            if calls and calls[-1].fault is not None:
                ended.add((st.step, uid, calls[-1].call))
    return ended


def kinds_table(trace: RunTrace) -> str:
    """Per fault kind: injected, recovered (retried or harmless), and ending an agent's step."""
    ended = _unrecovered(trace)
    injected = Counter[str]()
    fatal = Counter[str]()
    for st in trace.steps:
        for fault in st.faults:
            kind = str(fault["kind"])
            injected[kind] += 1
            if (st.step, fault.get("agent"), fault.get("call")) in ended:
                fatal[kind] += 1
    if not injected:
        return "  (no faults injected)"
    order = [k.value for k in FaultKind]
    rows = [
        [kind, injected[kind], injected[kind] - fatal[kind], fatal[kind]]
        for kind in sorted(injected, key=lambda k: order.index(k) if k in order else len(order))
    ]
    total, lost = sum(injected.values()), sum(fatal.values())
    rows.append(["total", total, total - lost, lost])
    return format_table(["fault kind", "injected", "recovered", "ended agent's step"], rows)


def failures_line(trace: RunTrace) -> str:
    """The agents' failures by exception type, most common first: ``"3 RateLimitError, ..."``."""
    counts = Counter(
        exc or status
        for st in trace.steps
        for status, exc in st.outcomes.values()
        if status != "ok"
    )
    return ", ".join(f"{n} {name}" for name, n in counts.most_common()) or "none"


def modes_table(traces: Mapping[str, RunTrace]) -> str:
    """Per mode: total wall time, agent-steps ok and failed, faults injected."""
    rows = []
    for mode, trace in traces.items():
        total = sum(len(st.outcomes) for st in trace.steps)
        failed = sum(len(st.failed) for st in trace.steps)
        rows.append(
            [
                mode,
                _seconds(trace.seconds),
                total - failed,
                failed,
                sum(len(st.faults) for st in trace.steps),
                sum(st.recovered for st in trace.steps),
            ]
        )
    return format_table(["mode", "time", "agents ok", "failed", "faults", "recovered"], rows)
