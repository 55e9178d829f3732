"""Validation of ``mesa-llm-testing`` input, done before any work starts.

Every check here needs only the standard library and :mod:`mesa_llm_testing._faults`
(no Mesa, no litellm), so bad input is a usage error (exit status 2) within a
fraction of a second, and nothing is silently ignored: a fault-plan JSON with an
unknown key, a run trace passed as a fault plan, or a trace field out of range is
named with the valid values.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from mesa_llm_testing._bursts import Burst, check_no_schedule
from mesa_llm_testing._faults import FaultKind, FaultPlan, InjectedFault
from mesa_llm_testing._limits import ProviderLimits

__all__ = [
    "REPLAY_KEY",
    "REPLAY_MODES",
    "UsageError",
    "limits_arg",
    "non_negative_seed",
    "parse_faults",
    "portable_scenario",
    "read_run_trace",
    "replay_scenario",
]

#: Key added to a trace's JSON so ``replay`` can rebuild the run exactly.
REPLAY_KEY: Final = "mesa_llm_testing_run"
#: The stepping modes a run trace can be replayed in.
REPLAY_MODES: Final = ("sequential", "asyncio", "threading")
#: Keys of a fault-plan JSON object (``FaultPlan.to_json()`` or a trace's ``faults``).
PLAN_KEYS: Final = (
    "rate",
    "kinds",
    "seed",
    "test_id",
    "scripted",
    "injected",
    "bursts",
    "schedule",
    "version",
)
_RATE_HINT: Final = "a rate from 0 to 1 (0.1: one call in ten faults), or a FaultPlan JSON"


class UsageError(Exception):
    """Bad input on the command line: printed as ``mesa-llm-testing: error: ...``, exit status 2."""


# --------------------------------------------------------------------------- argparse types


def non_negative_seed(text: str) -> int:
    """``--seed``: a whole number >= 0 (Mesa seeds numpy, which rejects negative seeds)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}; valid values: integers >= 0")
    return value


def limits_arg(text: str) -> ProviderLimits:
    """``--limits``: ``rpm=600,tpm=100000,max_concurrent=8`` (errors name the valid keys)."""
    try:
        return ProviderLimits.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("mesa_llm_testing: ")) from None


# --------------------------------------------------------------------------- fault plans


def parse_faults(text: str, *, kinds: str | None, seed: int) -> FaultPlan:
    """``--faults``: a rate (with ``--kinds``), or a FaultPlan JSON, inline or in a file."""
    parsed_kinds = _parse_kinds(kinds)
    stripped = text.strip()
    if stripped.startswith(("{", "[")):
        source, where = stripped, "--faults"
    else:
        try:
            rate = float(stripped)
        except ValueError:
            rate = math.nan
        if 0.0 <= rate <= 1.0:
            return FaultPlan(rate, kinds=parsed_kinds, seed=seed)
        path = Path(stripped)
        if not (stripped.endswith(".json") or path.is_file()):
            raise UsageError(f"--faults {text!r}: valid values are {_RATE_HINT} (inline or a file)")
        try:
            source = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"--faults {text!r}: cannot read the fault plan file: {exc}") from None
        where = f"--faults {text!r}"
    if kinds is not None:
        raise UsageError("--kinds cannot be combined with a FaultPlan JSON in --faults")
    try:
        data = json.loads(source)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{where}: not a valid FaultPlan JSON: {exc}") from None
    check_plan_json(data, where)
    return FaultPlan.from_json(source)


def _parse_kinds(kinds: str | None) -> tuple[FaultKind, ...] | None:
    if kinds is None:
        return None
    try:
        return FaultKind.parse_many(kinds)
    except ValueError:
        valid = ", ".join(k.value for k in FaultKind)
        raise UsageError(
            f"--kinds {kinds!r}: unknown fault kind; valid values: {valid} (comma-separated), "
            "or all (default: the first six)"
        ) from None


def check_plan_json(data: Any, where: str) -> None:
    """UsageError unless ``data`` is a fault plan: settings, a ``to_json()`` dump, or faults."""
    if isinstance(data, list):
        _check_faults(data, f"{where}: injected fault")
        return
    if not isinstance(data, dict):
        raise UsageError(
            f"{where}: a FaultPlan JSON is an object (FaultPlan.to_json()) or a list of "
            f"injected faults; got a JSON {type(data).__name__}"
        )
    if "steps" in data and "scenario" in data:
        raise UsageError(
            f"{where}: this is a run trace (from 'run --trace'), not a fault plan; re-run it "
            "with 'mesa-llm-testing replay TRACE', or pass --faults the trace's \"faults\" object"
        )
    if "mesa_llm_trace" in data:
        raise UsageError(
            f"{where}: this is a pytest --mesa-llm-trace file, not a fault plan; "
            "replay it with pytest --mesa-llm-replay=PATH"
        )
    unknown = sorted(set(data) - set(PLAN_KEYS))
    if unknown:
        raise UsageError(
            f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; "
            f"valid keys: {', '.join(PLAN_KEYS)}"
        )
    rate = data.get("rate", 0.0)
    if not _is_number(rate) or not 0.0 <= rate <= 1.0:
        raise UsageError(f'{where}: "rate" is {rate!r}; valid values: numbers from 0 to 1')
    seed = data.get("seed", 0)
    if not _is_int(seed) or seed < 0:
        raise UsageError(f'{where}: "seed" is {seed!r}; valid values: integers >= 0')
    if not isinstance(data.get("test_id", ""), str):
        raise UsageError(f'{where}: "test_id" is {data["test_id"]!r}; valid values: strings')
    kinds = data.get("kinds")
    try:
        if kinds is not None and not isinstance(kinds, str | list):
            raise ValueError
        FaultKind.parse_many(kinds)
    except ValueError:
        valid = ", ".join(k.value for k in FaultKind)
        raise UsageError(
            f'{where}: "kinds" is {kinds!r}; valid values: a list of {valid}'
        ) from None
    try:
        check_no_schedule(data)
        for burst in data.get("bursts") or ():
            Burst.from_dict(burst)
    except ValueError as exc:
        raise UsageError(f"{where}: {str(exc).removeprefix('mesa_llm_testing: ')}") from None
    for key in ("scripted", "injected"):
        records = data.get(key, [])
        if not isinstance(records, list):
            raise UsageError(f'{where}: "{key}" is {records!r}; valid values: a list of faults')
        _check_faults(records, f'{where}: "{key}" fault')


def _check_faults(records: list[Any], where: str) -> None:
    for n, record in enumerate(records):
        try:
            if not isinstance(record, Mapping):
                raise TypeError("not an object")
            InjectedFault.from_dict(record)
        except (KeyError, TypeError, ValueError) as exc:
            reason = str(exc).removeprefix("mesa_llm_testing: ")
            raise UsageError(
                f"{where} {n} ({record!r}) is not valid: {reason}; a fault is an object with "
                '"agent", "step", "call" (an integer) and "kind"'
            ) from None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# --------------------------------------------------------------------------- run traces

_STEP_FIELDS: Final = {
    "step": int,
    "start_order": list,
    "outcomes": list,
    "faults": list,
    "llm_calls": list,
    "rng_digest": str,
    "state_digest": str,
}


def read_run_trace(text_path: str, *, mode: str | None) -> dict[str, Any]:
    """The JSON of a ``run --trace`` file, every field checked; UsageError naming the bad one.

    ``mode`` is ``replay --mode`` (None: the recorded mode, which must then be one
    of :data:`REPLAY_MODES`). A trace with no steps has nothing to compare and is
    rejected.
    """
    where = f"TRACE {text_path!r}"
    try:
        data = json.loads(Path(text_path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"{where}: cannot read a trace: {exc}") from None
    if not isinstance(data, dict) or "steps" not in data or "scenario" not in data:
        hint = ""
        if isinstance(data, dict) and "mesa_llm_trace" in data:
            hint = " (this is a pytest --mesa-llm-trace file: use pytest --mesa-llm-replay)"
        raise UsageError(
            f"{where}: not a trace written by 'mesa-llm-testing run --trace' (it needs "
            f'"scenario" and "steps"){hint}'
        )

    def bad(field: str, valid: str) -> UsageError:
        value = data.get(field)
        return UsageError(f'{where}: field "{field}" is {value!r}; valid values: {valid}')

    if not isinstance(data["scenario"], str) or not data["scenario"]:
        raise bad("scenario", "a scenario name, file.py[:factory] or module:factory")
    if not _is_int(data.get("seed")) or data["seed"] < 0:
        raise bad("seed", "integers >= 0")
    if mode is None and data.get("mode") not in REPLAY_MODES:
        raise bad("mode", ", ".join(REPLAY_MODES) + " (or pass replay --mode)")
    for field in ("agents", "max_attempts"):
        value = data.get(field)
        if value is not None and (not _is_int(value) or value < 1):
            raise bad(field, "null or integers >= 1")
    if data.get("faults") is not None:
        check_plan_json(data["faults"], f'{where}: field "faults"')
    steps = data["steps"]
    if not isinstance(steps, list):
        raise bad("steps", "a list of steps")
    if not steps:
        raise UsageError(f"{where}: the trace records no steps, so there is nothing to compare")
    for n, step in enumerate(steps, start=1):
        _check_step(step, n, where)
    extra = data.get(REPLAY_KEY)
    if extra is not None and not (
        isinstance(extra, dict) and isinstance(extra.get("scenario", ""), str)
    ):
        raise bad(REPLAY_KEY, 'an object {"scenario": "..."}')
    return data


def _check_step(step: Any, n: int, where: str) -> None:
    if not isinstance(step, dict):
        raise UsageError(f"{where}: steps[{n - 1}] is not an object")
    for name, kind in _STEP_FIELDS.items():
        value = step.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise UsageError(
                f"{where}: steps[{n - 1}].{name} is {value!r}; valid values: {kind.__name__}"
            )
    if step["step"] < 1:
        raise UsageError(f"{where}: steps[{n - 1}].step is {step['step']}; valid values: >= 1")
    for outcome in step["outcomes"]:
        if not (isinstance(outcome, list) and len(outcome) == 3):
            raise UsageError(
                f"{where}: steps[{n - 1}].outcomes has {outcome!r}; valid values: "
                "[unique_id, status, exception type or null]"
            )


# --------------------------------------------------------------------------- scenario paths


def _split_file_spec(spec: str) -> tuple[str, str]:
    """``("file.py", ":factory")`` for a file spec, else ``("", "")``."""
    path, sep, attr = spec.partition(":")
    if path.endswith(".py") and not (len(path) == 1 and sep):  # not a Windows drive letter
        return path, (sep + attr)
    return "", ""


def portable_scenario(spec: str) -> str:
    """``spec`` with a relative ``.py`` path made absolute, so a trace replays from anywhere."""
    path, rest = _split_file_spec(spec)
    if not path or Path(path).is_absolute():
        return spec
    return str(Path(path).resolve()) + rest


def replay_scenario(spec: str, trace_path: str) -> str:
    """The scenario of a trace: a relative file path that is not found here is tried next to
    the trace (traces written before paths were stored absolute)."""
    path, rest = _split_file_spec(spec)
    if not path or Path(path).is_absolute() or Path(path).exists():
        return spec
    beside = Path(trace_path).resolve().parent / path
    return str(beside) + rest if beside.exists() else spec
