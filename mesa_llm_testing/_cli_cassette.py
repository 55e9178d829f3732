"""``run --record PATH --llm-model M`` and ``replay CASSETTE``: a real run to a cassette and back.

``run --record`` runs the scenario once, its agents using model ``M`` through
litellm (a key and the network needed), every completion recorded. ``replay`` of
a cassette (detected by its header line) runs the recorded scenario, seed, steps
and agents again, offline, each call answered by its recording, in the recorded
stepping mode or ``--mode``, and prints the summary and verdict ``run`` prints;
exit 1 also when a call could not be answered (a changed prompt, a call never made).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import inspect
from typing import TYPE_CHECKING, Any, TextIO

from mesa_llm_testing._cli_args import UsageError, portable_scenario, replay_scenario
from mesa_llm_testing._cli_parser import EXIT_CHECK_FAILED, PROG

if TYPE_CHECKING:
    from mesa_llm_testing._cli_run import Scenario
    from mesa_llm_testing._faults import FaultPlan

__all__ = [
    "check_llm_model",
    "check_record_args",
    "recorder_for",
    "replay_cassette",
    "with_llm_model",
]

#: The fake LLM's litellm provider: nothing to record behind it.
_FAKE_PROVIDER = "mesa-fake"


def with_llm_model(scenario: Scenario, llm_model: str | None) -> Scenario:
    """``scenario`` whose agents use ``llm_model`` (UsageError if its factory takes none)."""
    if llm_model is None:
        return scenario
    try:
        accepts = "llm_model" in inspect.signature(scenario.factory).parameters
    except (TypeError, ValueError):
        accepts = True
    if not accepts:
        raise UsageError(
            f"--llm-model {llm_model!r}: scenario {scenario.spec!r} takes no llm_model "
            f"argument, so its agents cannot be pointed at a real model"
        )
    factory = functools.partial(scenario.factory, llm_model=llm_model)
    return dataclasses.replace(scenario, factory=factory)


def check_record_args(args: argparse.Namespace, plan: FaultPlan) -> None:
    """``--record`` needs ``--llm-model``, one stepping mode and no injected faults."""
    if args.record is None:
        return
    if args.llm_model is None:
        raise UsageError(
            f"--record {args.record!r}: also give --llm-model (e.g. openai/gpt-4o-mini): a "
            f"cassette records a real provider's replies"
        )
    if args.mode == "all":
        raise UsageError(
            f"--record {args.record!r}: record one run (--mode asyncio, threading or "
            f"sequential); '{PROG} replay' runs it again in any mode"
        )
    if plan.rate or plan.scripted:
        raise UsageError(
            f"--record {args.record!r}: no --faults while recording (calls go to the real "
            f"provider); inject faults when replaying the cassette"
        )


def check_llm_model(args: argparse.Namespace) -> None:
    """``--llm-model`` as ``ModuleLLM`` checks it: litellm resolves it, and, with ``--record``,
    its API key is set and it is a real provider's; UsageError otherwise, before any work."""
    if args.llm_model is None:
        return
    from mesa_llm import ModuleLLM
    from mesa_llm.module_llm import skip_api_key_check

    # Without --record the fake LLM answers every call: no key needed, as in the run itself.
    keys = contextlib.nullcontext() if args.record is not None else skip_api_key_check()
    try:
        with keys:
            provider = ModuleLLM(args.llm_model).provider
    except ValueError as exc:  # UnknownModelError, MissingAPIKeyError, an empty name
        reason = str(exc).removeprefix("mesa_llm: ")
        raise UsageError(f"--llm-model {args.llm_model!r}: {reason}") from None
    if args.record is not None and provider == _FAKE_PROVIDER:
        raise UsageError(
            f"--record {args.record!r}: --llm-model {args.llm_model!r} is the fake LLM's "
            f"model, with no real provider to record; give a real one (e.g. "
            f"openai/gpt-4o-mini)"
        )


def recorder_for(args: argparse.Namespace, scenario: Scenario) -> Any:
    """The cassette recorder of a ``run --record``, its header naming the run."""
    from mesa_llm_testing._cassettes import CassetteRecorder

    header = {
        "scenario": portable_scenario(scenario.spec),
        "steps": args.steps,
        "agents": args.agents,
        "mode": args.mode,
        "llm_model": args.llm_model,
    }
    return CassetteRecorder(args.record, seed=args.seed, header=header)


def replay_cassette(args: argparse.Namespace, out: TextIO) -> int:
    """``replay`` of a cassette: run it again offline; print the summary and the verdict."""
    from mesa_llm_testing._cli_output import report_run
    from mesa_llm_testing._cli_run import announce, resolve_scenario, run_modes
    from mesa_llm_testing._fakellm import FakeLLM

    try:
        llm = FakeLLM.from_cassette(args.trace, keep_calls=None)
    except ValueError as exc:
        raise UsageError(str(exc).removeprefix("mesa_llm_testing: ")) from None
    header = llm.cassette.header
    if not header.get("scenario"):
        raise UsageError(
            f"CASSETTE {args.trace!r}: recorded by record_to() or pytest, not by "
            f"'{PROG} run --record'; replay it with FakeLLM.from_cassette(path)"
        )
    spec = replay_scenario(str(header["scenario"]), args.trace)
    scenario = with_llm_model(resolve_scenario(spec), header.get("llm_model"))
    mode = args.mode or header.get("mode") or "asyncio"
    steps, seed = int(header.get("steps") or 0), int(header.get("seed") or 0)
    announce(args, f"replaying cassette {args.trace}: {scenario.spec}, {steps} steps, "
                   f"{mode} mode, seed {seed}")  # fmt: skip
    runs = run_modes(args, scenario, [mode], plan=llm.faults, steps=steps, seed=seed,
                     agents=header.get("agents"), latency=0.0, llm=llm)  # fmt: skip
    shown = argparse.Namespace(
        **{**vars(args), "mode": mode, "seed": seed, "trace": None, "timeline": None}
    )
    status = report_run(shown, runs, scenario, llm.faults, out)
    if llm.problems:
        print(
            f"\nNOT replayed: {len(llm.problems)} call(s) the cassette could not answer; "
            f"the first:\n  {llm.problems[0]}",
            file=out,
        )
        return EXIT_CHECK_FAILED
    return status
