"""The pytest plugin's settings: its options read from the command line, the ini file and
pytest's cache (``FaultSettings``), and the arguments of ``@pytest.mark.mesa_llm``.

Bad values are ``pytest.UsageError``s naming the option and its valid values. Needs only the
standard library, pytest and :mod:`mesa_llm_testing._faults` (no litellm).
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
from collections.abc import Iterable
from pathlib import Path

import pytest

from mesa_llm_testing._faults import DEFAULT_KINDS, FaultKind, InjectedFault

LIBRARY = "mesa_llm_testing"  # prefix of error messages
WORKER_SEED = "mesa_llm_seed"  # key in xdist's workerinput
_CACHE_KEY = "mesa_llm/seed"


@dataclasses.dataclass(frozen=True)
class FaultSettings:
    """The session-wide fault settings, resolved from the command line, ini file and cache."""

    rate: float
    seed: int
    kinds: tuple[FaultKind, ...] | None  # None: DEFAULT_KINDS
    trace: Path | None
    replay_text: str | None = None  # --mesa-llm-replay as given, for the repro command
    replay: dict[str, list[InjectedFault]] | None = None  # recorded faults by test id
    ignored: tuple[str, ...] = ()  # options given but overridden by --mesa-llm-replay
    record: Path | None = None  # --mesa-llm-record: the session's cassette
    cassette: Path | None = None  # --mesa-llm-cassette: replay every test from it

    def header(self) -> str:
        """The ``mesa-llm: ...`` header line; every flag on it can be pasted back."""
        if self.replay_text is not None:
            line = f"mesa-llm: --mesa-llm-seed={self.seed} --mesa-llm-replay={self.replay_text}"
            if self.ignored:
                line += f" (ignored under --mesa-llm-replay: {', '.join(self.ignored)})"
            return line
        return "mesa-llm: " + " ".join(
            [
                f"--mesa-llm-faults={format_rate(self.rate)}",
                f"--mesa-llm-seed={self.seed}",
                f"--mesa-llm-fault-kinds={join_kinds(self.kinds or DEFAULT_KINDS)}",
            ]
        )

    def repro_flags(self) -> list[str]:
        """The options that reproduce this session's faults."""
        if self.replay_text is not None:  # a replay injects exactly the recorded faults
            return [f"--mesa-llm-seed={self.seed}", f"--mesa-llm-replay={self.replay_text}"]
        flags = [f"--mesa-llm-faults={format_rate(self.rate)}", f"--mesa-llm-seed={self.seed}"]
        if self.kinds is not None:
            flags.append(f"--mesa-llm-fault-kinds={join_kinds(self.kinds)}")
        return flags


@dataclasses.dataclass(frozen=True, kw_only=True)
class MarkerOptions:
    """Arguments of ``@pytest.mark.mesa_llm``; keyword-only, so a typo is an error."""

    faults: float | None = None
    kinds: str | Iterable[FaultKind | str] | None = None
    seed: int | None = None
    cassette: str | None = None

    @classmethod
    def from_item(cls, item: pytest.Item) -> MarkerOptions:
        """Read the closest ``mesa_llm`` marker of ``item``; TypeError naming the valid keywords."""
        marker = item.get_closest_marker("mesa_llm")
        if marker is None:
            return cls()
        valid = [field.name for field in dataclasses.fields(cls)]
        unknown = sorted(set(marker.kwargs) - set(valid))
        if marker.args or unknown:
            got = ", ".join([repr(arg) for arg in marker.args] + [f"{k}=" for k in unknown])
            raise TypeError(
                f"{LIBRARY}: @pytest.mark.mesa_llm on {item.nodeid} got unexpected argument(s) "
                f"{got}; it takes only the keywords {', '.join(k + '=' for k in valid)}"
            )
        cassette = marker.kwargs.get("cassette")
        if cassette is not None and (not isinstance(cassette, str | os.PathLike) or not cassette):
            raise TypeError(
                f"{LIBRARY}: @pytest.mark.mesa_llm on {item.nodeid}: cassette={cassette!r} is "
                f"not a path; give the cassette file's path (relative to the test file) as a str"
            )
        return cls(**marker.kwargs)


def _starts_workers(config: pytest.Config) -> bool:
    """Whether this is an xdist controller that will start workers (``-n N`` or ``--tx``).

    Asked in the controller, so a refusal is one usage error, not a "node down" traceback
    from every worker. ``--dist`` alone (say in ``addopts``) starts none.
    """
    option = config.option
    wants = bool(getattr(option, "numprocesses", None)) or bool(getattr(option, "tx", None))
    return wants and getattr(option, "dist", "no") != "no"


def read_settings(config: pytest.Config) -> FaultSettings:
    rate_text, rate_source = _raw_value(config, "faults")
    kinds_text, kinds_source = _raw_value(config, "fault_kinds")
    trace_text, trace_source = _raw_value(config, "trace")
    replay_text, replay_source = _raw_value(config, "replay")
    record_text, record_source = _raw_value(config, "record")
    cassette_text, cassette_source = _raw_value(config, "cassette")
    if record_text is not None and (_starts_workers(config) or hasattr(config, "workerinput")):
        raise pytest.UsageError(
            f"{LIBRARY}: {record_source}={record_text}: record without pytest-xdist workers "
            "(-p no:xdist or -n 0), so the cassette is written by one process"
        )
    replay, trace_seed = None, None
    if replay_text is not None:
        replay, trace_seed = _load_trace(
            _resolve_path(config, replay_text, replay_source), f"{replay_source}={replay_text}"
        )
    return FaultSettings(
        rate=0.0 if rate_text is None else _parse_rate(rate_text, rate_source),
        # A replay keeps the traced session's seed unless told otherwise, so replies match too.
        seed=_resolve_seed(config, default=trace_seed),
        kinds=None if kinds_text is None else _parse_kinds(kinds_text, kinds_source),
        trace=None if trace_text is None else _file_path(config, trace_text, trace_source),
        replay_text=replay_text,
        replay=replay,
        record=None if record_text is None else _file_path(config, record_text, record_source),
        cassette=(
            None if cassette_text is None else _file_path(config, cassette_text, cassette_source)
        ),
        ignored=tuple(
            f"{source}={text}"
            for text, source in ((rate_text, rate_source), (kinds_text, kinds_source))
            if replay_text is not None and text is not None
        ),
    )


def _raw_value(config: pytest.Config, name: str) -> tuple[str | None, str]:
    """The option's text (command line first, then ini) and how to name it in an error."""
    dest = f"mesa_llm_{name}"
    value = config.getoption(dest)
    if value is not None:
        return str(value), f"--mesa-llm-{name.replace('_', '-')}"
    ini_value = str(config.getini(dest)).strip()
    return (ini_value or None), f"ini option {dest}"


def _resolve_path(config: pytest.Config, text: str, source: str) -> Path:
    # Command-line paths are relative to where pytest runs; ini paths to the ini file.
    base = config.invocation_params.dir
    if source.startswith("ini") and config.inipath is not None:
        base = config.inipath.parent
    return base / text


def _file_path(config: pytest.Config, text: str, source: str) -> Path:
    """A file the plugin writes or reads: UsageError for an empty value or a directory."""
    if not text.strip():
        raise pytest.UsageError(f"{LIBRARY}: {source} needs a file path, e.g. {source}=run.json")
    path = _resolve_path(config, text, source)
    if path.is_dir():
        raise pytest.UsageError(
            f"{LIBRARY}: {source}={text} is a directory; name a file, "
            f"e.g. {source}={Path(text) / 'run.json'}"
        )
    return path


def _parse_rate(text: str, source: str) -> float:
    try:
        rate = float(text)
    except ValueError:
        rate = float("nan")
    if not 0.0 <= rate <= 1.0:  # also rejects nan
        raise pytest.UsageError(
            f"{LIBRARY}: {source}={text!r} is not a fault rate; "
            "use a number from 0 to 1, e.g. --mesa-llm-faults=0.1"
        )
    return rate


def _parse_kinds(text: str, source: str) -> tuple[FaultKind, ...] | None:
    """The chosen kinds, or None for the default kinds."""
    try:
        kinds = FaultKind.parse_many(text)
    except ValueError:
        raise pytest.UsageError(
            f"mesa_llm_testing: {source}={text!r} is not a list of fault kinds; "
            f"use a comma-separated subset of: {join_kinds(FaultKind, ', ')}"
        ) from None
    return None if kinds == DEFAULT_KINDS else kinds


def _resolve_seed(config: pytest.Config, *, default: int | None) -> int:
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None and WORKER_SEED in workerinput:
        return int(workerinput[WORKER_SEED])
    text, source = _raw_value(config, "seed")
    cache = getattr(config, "cache", None)
    seed: int | None = None
    if text == "last":
        if cache is None:
            raise pytest.UsageError(
                f"{LIBRARY}: {source}=last needs pytest's cache; "
                "drop -p no:cacheprovider or pass an integer seed"
            )
        seed = cache.get(_CACHE_KEY, None)
    elif text is not None:
        try:
            seed = int(text)
        except ValueError:
            seed = -1
        if seed < 0:
            raise pytest.UsageError(
                f"{LIBRARY}: {source}={text!r} is not a seed; "
                "use a non-negative integer or 'last' (the previous session's seed)"
            )
    if seed is None:
        seed = default if default is not None else secrets.randbits(32)
    if cache is not None:
        cache.set(_CACHE_KEY, seed)
    return seed


def _load_trace(path: Path, source: str) -> tuple[dict[str, list[InjectedFault]], int]:
    """The faults of a --mesa-llm-trace file by test id, and its seed; UsageError otherwise."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        faults = [InjectedFault.from_dict(record) for record in data["faults"]]
        seed = int(data["seed"])
    except FileNotFoundError:
        raise pytest.UsageError(
            f"{LIBRARY}: {source}: no such file; pass a file written by --mesa-llm-trace"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise pytest.UsageError(
            f"{LIBRARY}: {source}: not a --mesa-llm-trace file ({type(exc).__name__}: {exc})"
        ) from None
    by_test: dict[str, list[InjectedFault]] = {}
    for fault in faults:
        by_test.setdefault(fault.test_id, []).append(fault)
    return by_test, seed


# -- formatting -----------------------------------------------------------------------------


def format_rate(rate: float) -> str:
    text = repr(rate)  # shortest text that round-trips, so the repro rate is exact
    return text.removesuffix(".0")


def join_kinds(kinds: Iterable[FaultKind], separator: str = ",") -> str:
    return separator.join(kind.value for kind in kinds)
