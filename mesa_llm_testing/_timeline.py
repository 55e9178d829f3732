"""When each LLM call of a run started and ended, and the picture of one step (``--timeline``).

:func:`call_spans` reads the request and answer times the fake stamps on every
call record; :func:`draw_timeline` draws one step: a row per agent, a bar per LLM call,
faults and retries marked. matplotlib is imported only when drawing.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from mesa_llm_testing._calls import FakeCall
from mesa_llm_testing._fake import ERROR_KINDS
from mesa_llm_testing._faults import FaultKind

__all__ = ["CallSpan", "PlotUnavailableError", "StepWindow", "call_spans", "draw_timeline"]

PLOT_FORMATS: Final = (".png", ".svg")


class PlotUnavailableError(RuntimeError):
    """matplotlib (the ``plot`` extra) is not installed."""


@dataclass(frozen=True, slots=True)
class CallSpan:
    """One LLM call: who made it, when (``perf_counter`` seconds), and how it ended."""

    agent: Any
    step: int | None
    call: int
    start: float
    end: float
    fault: FaultKind | None
    failed: bool  # ended in an exception (an error fault, or side_effect)

    @property
    def error_fault(self) -> bool:
        """The call ended in an injected provider error (rate limit, timeout, 5xx, connection)."""
        return self.fault in ERROR_KINDS


@dataclass(frozen=True, slots=True)
class StepWindow:
    """When a model step started and ended (``perf_counter`` seconds)."""

    step: int
    start: float
    end: float


def call_spans(calls: Iterable[FakeCall]) -> list[CallSpan]:
    """The span of each recorded call, from its request to its answer."""
    return [
        CallSpan(
            c.request.agent,
            c.request.step,
            c.request.call,
            c.request.started,
            c.ended,
            c.fault,
            c.exception is not None,
        )
        for c in calls
    ]


def retries(spans: Iterable[CallSpan]) -> set[tuple[Any, int | None, int]]:
    """The calls that follow a failed call of the same agent in the same step: retries."""
    by_agent: dict[tuple[Any, int | None], list[CallSpan]] = {}
    for span in spans:
        by_agent.setdefault((span.agent, span.step), []).append(span)
    found: set[tuple[Any, int | None, int]] = set()
    for calls in by_agent.values():
        calls.sort(key=lambda s: s.call)
        for before, after in itertools.pairwise(calls):
            if before.failed or before.fault is not None:
                found.add((after.agent, after.step, after.call))
    return found


def import_figure() -> Any:
    """matplotlib's ``Figure`` (no pyplot, no global backend); PlotUnavailableError if absent."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise PlotUnavailableError(
            "mesa_llm_testing: --timeline needs matplotlib, which is not installed; install it "
            "with pip install matplotlib (or, in a checkout of this project, "
            "pip install -e '.[plot]')"
        ) from None
    return Figure


#: Short tags written above faulted calls.
_TAGS: Final = {
    FaultKind.RATE_LIMIT: "429",
    FaultKind.TIMEOUT: "timeout",
    FaultKind.SERVER_ERROR: "5xx",
    FaultKind.CONNECTION_ERROR: "conn",
    FaultKind.MALFORMED_JSON: "bad JSON",
    FaultKind.EMPTY_RESPONSE: "empty",
}
_COLOURS: Final = {
    "ok": "#4C72B0",
    "error": "#C44E52",
    "content": "#DD8452",
    "retry": "#55A868",
}


def draw_timeline(
    path: str | Path,
    *,
    window: StepWindow,
    spans: Sequence[CallSpan],
    rows: Sequence[Any],
    outcomes: Mapping[Any, tuple[str, str | None]],
    title: str,
) -> Path:
    """Draw one step to ``path`` (PNG or SVG): a row per agent, a bar per LLM call.

    ``rows`` are the agents' unique_ids top to bottom (the step's start order);
    ``outcomes`` maps unique_id to ``(status, exception type)``. Error faults are red
    with a tag naming the fault (429, 5xx, timeout, conn), malformed/empty replies orange, retries
    green; every retry is hatched; failed agents' labels are red.
    """
    target = Path(path)
    if target.suffix.lower() not in PLOT_FORMATS:
        raise ValueError(
            f"mesa_llm_testing: --timeline {str(path)!r}: unknown picture format "
            f"{target.suffix or '(none)'!r}; valid formats: .png, .svg"
        )
    figure = import_figure()
    from matplotlib.patches import Patch

    step_spans = [s for s in spans if s.step == window.step]
    retried = retries(step_spans)
    extra = sorted({s.agent for s in step_spans} - set(rows), key=repr)
    rows = [*rows, *extra]
    index = {agent: i for i, agent in enumerate(rows)}
    t0 = window.start
    # Show the calls, not the step's set-up before the first one (imports, observing).
    first = min(((s.start - t0) * 1e3 for s in step_spans), default=0.0)
    last = max(((s.end - t0) * 1e3 for s in step_spans), default=(window.end - t0) * 1e3)
    margin = max(last - first, 1e-3) * 0.04
    x_min, x_max = max(0.0, first - margin), last + margin
    span_ms = x_max - x_min
    height = max(2.5, 0.32 * len(rows) + 1.6)
    fig = figure(figsize=(11, height), dpi=110)
    ax = fig.subplots()
    min_width = span_ms / 400 or 0.01  # keep instant calls visible
    for s in step_spans:
        y = index[s.agent]
        left = (s.start - t0) * 1e3
        width = max((s.end - s.start) * 1e3, min_width)
        key = (s.agent, s.step, s.call)
        if s.error_fault or s.failed:
            colour = _COLOURS["error"]
        elif s.fault is not None:
            colour = _COLOURS["content"]
        elif key in retried:
            colour = _COLOURS["retry"]
        else:
            colour = _COLOURS["ok"]
        ax.barh(
            y,
            width,
            left=left,
            height=0.5,
            color=colour,
            edgecolor="black",
            linewidth=0.4,
            hatch="////" if key in retried else None,
        )
        if s.fault is not None:  # a short tag above the bar's start
            ax.text(
                left, y - 0.32, _TAGS[s.fault], va="bottom", ha="left", fontsize=6, color=colour
            )
    labels = []
    for agent in rows:
        status, exc = outcomes.get(agent, ("?", None))
        labels.append(f"agent {agent}" + ("" if status == "ok" else f" ✗ {exc or status}"))
    ax.set_yticks(range(len(rows)), labels=labels, fontsize=7 if len(rows) > 30 else 8)
    for tick, agent in zip(ax.get_yticklabels(), rows, strict=True):
        if outcomes.get(agent, ("ok", None))[0] != "ok":
            tick.set_color(_COLOURS["error"])
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlim(x_min, x_max)
    ax.set_xlabel(f"time since step {window.step} started (ms)")
    ax.grid(axis="x", linestyle=":", linewidth=0.5)
    ax.set_title(title, fontsize=10)
    fig.legend(
        handles=[
            Patch(color=_COLOURS["ok"], label="LLM call"),
            Patch(facecolor=_COLOURS["retry"], hatch="////", label="retry that succeeded"),
            Patch(facecolor="white", edgecolor="black", hatch="////", label="retry (hatched)"),
            Patch(color=_COLOURS["error"], label="provider error (fault)"),
            Patch(color=_COLOURS["content"], label="malformed / empty reply (fault)"),
        ],
        loc="lower center",
        ncol=5,
        fontsize=8,
        frameon=False,
    )
    fig.tight_layout(rect=(0, 0.45 / height, 1, 1))  # room for the legend below the axis
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target)
    return target
