"""Running a scenario for ``run`` and ``replay``: resolve it, load litellm, run it in each mode.

Each run gets a fresh fake LLM that keeps every call (for ``--timeline``), a
progress bar on stderr, and the model's steps timed (the timeline's step windows).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mesa_llm_testing._cli_args import UsageError
from mesa_llm_testing._cli_parser import PROG

if TYPE_CHECKING:
    from mesa_llm_testing._fakellm import FakeLLM
    from mesa_llm_testing._faults import FaultPlan
    from mesa_llm_testing._latency import LatencyModel
    from mesa_llm_testing._limits import ProviderLimits
    from mesa_llm_testing._timeline import StepWindow
    from mesa_llm_testing._trace import RunTrace

__all__ = [
    "ModeRun",
    "Scenario",
    "announce",
    "default_scenario",
    "load_litellm",
    "quiet_logs",
    "resolve_scenario",
    "run_modes",
    "run_one",
]


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
    from mesa_llm_testing._discovery import resolve_scenario as find_factory

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
    latency: float | LatencyModel,
    progress: bool,
    llm: FakeLLM | None = None,
    limits: ProviderLimits | None = None,
) -> ModeRun:
    """Run ``scenario`` in one mode on a fresh timed fake LLM, with a progress bar on stderr.

    ``llm``: answer with this one instead (a cassette's replay, or its recorder).
    ``limits``: the fresh fake's provider limits (load-driven 429s).
    """
    from tqdm import tqdm

    from mesa_llm_testing._fakellm import FakeLLM
    from mesa_llm_testing._runner import run_scenario
    from mesa_llm_testing._timeline import StepWindow

    if llm is None:
        # keep_calls=None: every call for --timeline
        llm = FakeLLM(seed=seed, faults=plan, latency=latency, keep_calls=None, limits=limits)
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
            faults=llm.faults,
            seed=seed,
            agents=agents,
            llm=llm,
        )
    return ModeRun(mode, trace, llm, windows)


@contextlib.contextmanager
def quiet_logs(verbose: bool) -> Iterator[None]:
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


def announce(args: argparse.Namespace, text: str) -> None:
    """Say what is about to happen, then load litellm (slow) with visible progress."""
    if not args.quiet:
        print(f"{PROG}: {text}", file=sys.stderr, flush=True)
    from mesa_llm_testing._startup import loading

    with loading(f"{PROG}: loading litellm", sys.stderr, enabled=not args.quiet):
        load_litellm()


def run_modes(
    args: argparse.Namespace, scenario: Scenario, modes: Sequence[str], **options: Any
) -> list[ModeRun]:
    with quiet_logs(args.verbose):
        return [run_one(scenario, mode=mode, progress=not args.quiet, **options) for mode in modes]


def load_litellm() -> None:
    """Import litellm and let it finish its lazy set-up, so neither counts as step time.

    The import takes about 4 s and the first completion loads more modules (about
    0.4 s); one throwaway call to a separate fake LLM does that before the runs.
    """
    from mesa_llm._litellm import import_litellm
    from mesa_llm_testing._fakellm import FakeLLM

    litellm = import_litellm()
    with FakeLLM(return_value="ready").activate():
        litellm.completion(model="mesa-fake/warm-up", messages=[{"role": "user", "content": "hi"}])
