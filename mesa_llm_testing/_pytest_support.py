"""Machinery of the mesa-llm pytest plugin: settings, per-test fault plans, reports, summary.

Imported by :mod:`mesa_llm_testing.plugin` when pytest configures. It needs only
the standard library, pytest and :mod:`mesa_llm_testing._faults` (no litellm).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import zlib
from collections import Counter
from collections.abc import Generator, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mesa_llm_testing._faults import DEFAULT_KINDS, FaultKind, FaultPlan, InjectedFault
from mesa_llm_testing._process_state import ProcessState, recordings_kept_out_of_cwd

SECTION_TITLE = "mesa-llm faults"
"""Title of the report section added to a failing test that used the plugin's fixtures."""

_LIBRARY = "mesa_llm_testing"  # prefix of error messages
_MARKER_ERROR = f"{_LIBRARY}: bad @pytest.mark.mesa_llm"
_PLUGIN_NAME = "mesa-llm-session"
_CACHE_KEY = "mesa_llm/seed"
_WORKER_SEED = "mesa_llm_seed"  # key in xdist's workerinput
_FAULTS_PROPERTY = "mesa_llm_faults"  # report.user_properties entry, carried across xdist
_USAGE_PROPERTY = "mesa_llm_usage"  # the test's token usage, carried the same way
_TRACE_FORMAT = 1
_SESSION_KEY = pytest.StashKey["SessionFaults"]()
_PLAN_KEY = pytest.StashKey[FaultPlan]()
_STATE_KEY = pytest.StashKey[ProcessState]()
_RECORDINGS_KEY = pytest.StashKey[Any]()  # the test's recordings_kept_out_of_cwd()
_USAGE_KEY = pytest.StashKey[dict[str, Any]]()  # TokenUsage.to_dict() of the test's fake_llm


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
                f"--mesa-llm-faults={_format_rate(self.rate)}",
                f"--mesa-llm-seed={self.seed}",
                f"--mesa-llm-fault-kinds={_join_kinds(self.kinds or DEFAULT_KINDS)}",
            ]
        )

    def repro_flags(self) -> list[str]:
        """The options that reproduce this session's faults."""
        if self.replay_text is not None:  # a replay injects exactly the recorded faults
            return [f"--mesa-llm-seed={self.seed}", f"--mesa-llm-replay={self.replay_text}"]
        flags = [f"--mesa-llm-faults={_format_rate(self.rate)}", f"--mesa-llm-seed={self.seed}"]
        if self.kinds is not None:
            flags.append(f"--mesa-llm-fault-kinds={_join_kinds(self.kinds)}")
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
                f"{_LIBRARY}: @pytest.mark.mesa_llm on {item.nodeid} got unexpected argument(s) "
                f"{got}; it takes only the keywords {', '.join(k + '=' for k in valid)}"
            )
        return cls(**marker.kwargs)


class SessionFaults:
    """Per-session state of the plugin, registered as a pytest plugin for its hooks."""

    def __init__(self, config: pytest.Config, settings: FaultSettings) -> None:
        self.config = config
        self.settings = settings
        self.is_worker = hasattr(config, "workerinput")
        self.faults: list[InjectedFault] = []  # from every test's teardown report
        self.tests = 0
        self.tests_with_faults = 0
        self.usage: dict[str, list[int]] = {}  # model asked for -> [prompt, completion, replies]
        self.tests_with_usage = 0
        self._recorder: Any = None  # the session's CassetteRecorder, opened on first use

    @classmethod
    def install(cls, config: pytest.Config) -> SessionFaults:
        """Resolve the settings (pytest.UsageError on a bad value) and register the hooks."""
        session = cls(config, _read_settings(config))
        config.stash[_SESSION_KEY] = session
        config.pluginmanager.register(session, _PLUGIN_NAME)
        return session

    @staticmethod
    def of(config: pytest.Config) -> SessionFaults:
        """The session state installed on ``config``."""
        return config.stash[_SESSION_KEY]

    # -- per test -----------------------------------------------------------------------

    def seed_for(self, item: pytest.Item) -> int:
        """The per-test seed: base seed + crc32(fault_id), unless the marker pins ``seed=``."""
        return self._seed(item, MarkerOptions.from_item(item))

    def _seed(self, item: pytest.Item, options: MarkerOptions) -> int:
        if options.seed is None:
            return self.settings.seed + zlib.crc32(fault_id(item).encode())
        if isinstance(options.seed, bool) or not isinstance(options.seed, int) or options.seed < 0:
            raise ValueError(
                f"{_MARKER_ERROR} on {item.nodeid}: "
                f"seed={options.seed!r} is not a non-negative integer"
            )
        return options.seed

    def plan_for(self, item: pytest.Item) -> FaultPlan:
        """The test's FaultPlan, created on first use and kept for its report."""
        plan = item.stash.get(_PLAN_KEY, None)
        if plan is None:
            plan = self._new_plan(item)
            item.stash[_PLAN_KEY] = plan
        return plan

    def _new_plan(self, item: pytest.Item) -> FaultPlan:
        options = MarkerOptions.from_item(item)
        seed = self._seed(item, options)
        if self.settings.replay is not None:
            recorded = self.settings.replay.get(fault_id(item), [])
            return FaultPlan.replay(recorded, seed=seed, test_id=fault_id(item))
        rate = self.settings.rate if options.faults is None else options.faults
        kinds = self.settings.kinds if options.kinds is None else options.kinds
        try:
            return FaultPlan(rate, kinds=kinds, seed=seed, test_id=fault_id(item))
        except (TypeError, ValueError) as exc:
            reason = str(exc).removeprefix(f"{_LIBRARY}: ")
            raise ValueError(f"{_MARKER_ERROR} on {item.nodeid}: {reason}") from None

    @contextlib.contextmanager
    def fake_for(self, item: pytest.Item, plan: FaultPlan, seed: int) -> Iterator[Any]:
        """The ``fake_llm`` of ``item``, active: a recorder, a cassette's replay, or a FakeLLM.

        Only the recorder lets calls leave the machine; the others block the network.
        """
        from mesa_llm_testing._fakellm import FakeLLM
        from mesa_llm_testing._network_guard import block_network

        recorder = self.recorder_for(item)
        if recorder is not None:  # --mesa-llm-record: real calls, recorded
            with recorder.activate(), _counting_usage(item, recorder):
                yield recorder
            return
        cassette = self.cassette_for(item)
        if cassette is not None:  # --mesa-llm-cassette or the marker: offline replay
            path, test_id = cassette
            replay = FakeLLM.from_cassette(path, test_id=test_id, faults=plan)
            blocked = block_network("the fake_llm fixture (replaying a cassette)")
            with replay, blocked, _counting_usage(item, replay):
                yield replay
            return
        fake = FakeLLM(seed=seed, faults=plan)
        blocked = block_network("the fake_llm fixture")
        with fake.activate(intercept_all=True), blocked, _counting_usage(item, fake):
            yield fake

    def recorder_for(self, item: pytest.Item) -> Any:
        """Under ``--mesa-llm-record``: the session's recorder, set to record ``item``."""
        if self.settings.record is None:
            return None
        from mesa_llm_testing._cassettes import CassetteRecorder

        if self._recorder is None:
            self._recorder = CassetteRecorder(self.settings.record, seed=self.settings.seed)
            self._recorder.open()
        self._recorder.test_id = fault_id(item)
        self._recorder.faults.reset()
        self._recorder.reset_mock()
        return self._recorder

    def cassette_for(self, item: pytest.Item) -> tuple[Path, str | None] | None:
        """The cassette ``item`` replays and the test id to take from it (None: its only test).

        The marker's ``cassette=`` (relative to the test file; a one-test cassette, whatever
        test recorded it) wins over ``--mesa-llm-cassette`` (the calls of this test id).
        """
        marked = MarkerOptions.from_item(item).cassette
        if marked is not None:
            return Path(str(item.path)).parent / marked, None
        if self.settings.cassette is None:
            return None
        return self.settings.cassette, fault_id(item)

    def repro_command(self, item: pytest.Item) -> str:
        """The shell command that reruns ``item`` with this session's faults."""
        path, sep, rest = item.nodeid.partition("::")
        invocation_dir = self.config.invocation_params.dir
        if invocation_dir != self.config.rootpath:  # node ids are relative to the rootdir
            path = Path(os.path.relpath(self.config.rootpath / path, invocation_dir)).as_posix()
        return " ".join(["pytest", _shell_quote(path + sep + rest), *self.settings.repro_flags()])

    def failure_section(self, item: pytest.Item, plan: FaultPlan) -> str:
        """The text of the report section shown when a test that used the fixtures fails."""
        faults = plan.injected
        lines = [f"{len(faults)} fault(s) injected in this test" + (":" if faults else ".")]
        lines += [f"  {_describe(fault)}" for fault in faults]
        lines += ["Reproduce with:", f"  {self.repro_command(item)}"]
        return "\n".join(lines)

    # -- hooks --------------------------------------------------------------------------

    def pytest_report_header(self) -> str:
        return self.settings.header()

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        item.stash[_STATE_KEY] = ProcessState.capture()
        recordings = recordings_kept_out_of_cwd()
        recordings.__enter__()
        item.stash[_RECORDINGS_KEY] = recordings

    @pytest.hookimpl(wrapper=True, trylast=True)
    def pytest_runtest_teardown(self, item: pytest.Item) -> Generator[None, None, None]:
        # After every fixture's teardown: undo what the test (or its model) left switched on.
        try:
            return (yield)
        finally:
            recordings = item.stash.get(_RECORDINGS_KEY, None)
            if recordings is not None:
                del item.stash[_RECORDINGS_KEY]
                recordings.__exit__(None, None, None)
            before = item.stash.get(_STATE_KEY, None)
            if before is not None:
                del item.stash[_STATE_KEY]
                for leak in before.restore():
                    item.warn(pytest.PytestWarning(f"{_LIBRARY}: {leak}"))

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        """xdist: workers use the controller's seed (so ``last`` and fresh seeds agree)."""
        node.workerinput[_WORKER_SEED] = self.settings.seed

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        plan = item.stash.get(_PLAN_KEY, None)
        if plan is None:
            return report
        if report.failed:
            report.sections.append((SECTION_TITLE, self.failure_section(item, plan)))
        if report.when == "teardown":
            del item.stash[_PLAN_KEY]
            usage = item.stash.get(_USAGE_KEY, None)
            if usage:
                report.user_properties.append((_USAGE_PROPERTY, json.dumps(usage)))
            if plan.injected:
                records = [fault.to_dict() for fault in plan.injected]
                report.user_properties.append((_FAULTS_PROPERTY, json.dumps(records)))
        return report

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # Runs on the controller for worker reports too, so this aggregates xdist runs.
        if report.when != "teardown" or self.is_worker:
            return
        self.tests += 1
        for name, value in report.user_properties:
            if name == _FAULTS_PROPERTY:
                self.tests_with_faults += 1
                self.faults.extend(map(InjectedFault.from_dict, json.loads(str(value))))
            elif name == _USAGE_PROPERTY:
                self.tests_with_usage += 1
                for model, row in json.loads(str(value)).items():
                    total = self.usage.setdefault(model, [0, 0, 0])
                    total[:] = [a + int(b) for a, b in zip(total, row, strict=True)]

    def pytest_sessionfinish(self) -> None:
        if self._recorder is not None:
            self._recorder.close()
        if self.settings.trace is None or self.is_worker:
            return
        trace = {
            "mesa_llm_trace": _TRACE_FORMAT,
            "seed": self.settings.seed,
            "rate": self.settings.rate,
            "kinds": [kind.value for kind in self.settings.kinds or DEFAULT_KINDS],
            "faults": [
                fault.to_dict() for fault in sorted(self.faults, key=InjectedFault.sort_key)
            ],
        }
        self.settings.trace.parent.mkdir(parents=True, exist_ok=True)
        self.settings.trace.write_text(json.dumps(trace, indent=2) + "\n", encoding="utf-8")

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        settings = self.settings
        if not (self.faults or settings.rate or settings.replay_text or settings.trace):
            if self.usage:
                terminalreporter.write_sep("=", "mesa-llm")
                terminalreporter.write_line(self._usage_line())
            return  # the session did not ask for faults and saw none: only the tokens
        counts = Counter(fault.kind for fault in self.faults)
        by_kind = ", ".join(f"{kind.value}={counts[kind]}" for kind in FaultKind if counts[kind])
        terminalreporter.write_sep("=", "mesa-llm")
        terminalreporter.write_line(
            f"{len(self.faults)} fault(s) injected in {self.tests_with_faults} of "
            f"{self.tests} test(s)" + (f": {by_kind}" if by_kind else "")
        )
        terminalreporter.write_line(settings.header())
        if settings.trace is not None:
            terminalreporter.write_line(f"fault trace written to {settings.trace}")
        if self.usage:
            terminalreporter.write_line(self._usage_line())

    def _usage_line(self) -> str:
        """Tokens of the fake_llm replies of every test, priced as the models asked for."""
        from mesa_llm.parallel_stepping import TokenUsage
        from mesa_llm_testing._cost import usage_line  # loads litellm's cost map

        usage = TokenUsage()
        for model, (prompt, completion, replies) in sorted(self.usage.items()):
            usage.add(model, prompt, completion, replies)
        what = f"the LLM calls of these {self.tests_with_usage} test(s)"
        return "tokens: " + usage_line(usage, what=what)


@contextlib.contextmanager
def _counting_usage(item: pytest.Item, fake: Any) -> Iterator[None]:
    """After the test: the token usage of the replies ``fake`` kept, by model asked for."""
    try:
        yield
    finally:
        usage: dict[str, list[int]] = {}
        for call in list(fake.calls):
            if call.response is not None:
                tokens = call.response.usage(call.messages)
                row = usage.setdefault(call.model, [0, 0, 0])
                row[0] += tokens["prompt_tokens"]
                row[1] += tokens["completion_tokens"]
                row[2] += 1
        item.stash[_USAGE_KEY] = usage


# -- settings -------------------------------------------------------------------------------


def _read_settings(config: pytest.Config) -> FaultSettings:
    rate_text, rate_source = _raw_value(config, "faults")
    kinds_text, kinds_source = _raw_value(config, "fault_kinds")
    trace_text, trace_source = _raw_value(config, "trace")
    replay_text, replay_source = _raw_value(config, "replay")
    record_text, record_source = _raw_value(config, "record")
    cassette_text, cassette_source = _raw_value(config, "cassette")
    if record_text is not None and hasattr(config, "workerinput"):
        raise pytest.UsageError(
            f"{_LIBRARY}: {record_source}={record_text}: record without pytest-xdist workers "
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
        trace=None if trace_text is None else _resolve_path(config, trace_text, trace_source),
        replay_text=replay_text,
        replay=replay,
        record=None if record_text is None else _resolve_path(config, record_text, record_source),
        cassette=(
            None if cassette_text is None else _resolve_path(config, cassette_text, cassette_source)
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


def _parse_rate(text: str, source: str) -> float:
    try:
        rate = float(text)
    except ValueError:
        rate = float("nan")
    if not 0.0 <= rate <= 1.0:  # also rejects nan
        raise pytest.UsageError(
            f"{_LIBRARY}: {source}={text!r} is not a fault rate; "
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
            f"use a comma-separated subset of: {_join_kinds(FaultKind, ', ')}"
        ) from None
    return None if kinds == DEFAULT_KINDS else kinds


def _resolve_seed(config: pytest.Config, *, default: int | None) -> int:
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None and _WORKER_SEED in workerinput:
        return int(workerinput[_WORKER_SEED])
    text, source = _raw_value(config, "seed")
    cache = getattr(config, "cache", None)
    seed: int | None = None
    if text == "last":
        if cache is None:
            raise pytest.UsageError(
                f"{_LIBRARY}: {source}=last needs pytest's cache; "
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
                f"{_LIBRARY}: {source}={text!r} is not a seed; "
                "use a non-negative integer or 'last' (the previous session's seed)"
            )
    if seed is None:
        seed = default if default is not None else secrets.randbits(32)
    if cache is not None:
        cache.set(_CACHE_KEY, seed)
    return seed


def fault_id(item: pytest.Item) -> str:
    """The test id faults are keyed on: the node id without its ``stepping_mode`` parameter.

    The asyncio and threading runs of one test then see the same faults on the same
    calls, which is what comparing the modes needs.
    """
    callspec = getattr(item, "callspec", None)
    mode = callspec.params.get("stepping_mode") if callspec is not None else None
    base, bracket, params = item.nodeid.partition("[")
    if not isinstance(mode, str) or not bracket:
        return item.nodeid
    parts = params.removesuffix("]").split("-")
    if mode in parts:
        parts.remove(mode)
    return base + (f"[{'-'.join(parts)}]" if parts else "")


def _load_trace(path: Path, source: str) -> tuple[dict[str, list[InjectedFault]], int]:
    """The faults of a --mesa-llm-trace file by test id, and its seed; UsageError otherwise."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        faults = [InjectedFault.from_dict(record) for record in data["faults"]]
        seed = int(data["seed"])
    except FileNotFoundError:
        raise pytest.UsageError(
            f"{_LIBRARY}: {source}: no such file; pass a file written by --mesa-llm-trace"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise pytest.UsageError(
            f"{_LIBRARY}: {source}: not a --mesa-llm-trace file ({type(exc).__name__}: {exc})"
        ) from None
    by_test: dict[str, list[InjectedFault]] = {}
    for fault in faults:
        by_test.setdefault(fault.test_id, []).append(fault)
    return by_test, seed


# -- formatting -----------------------------------------------------------------------------


def _format_rate(rate: float) -> str:
    text = repr(rate)  # shortest text that round-trips, so the repro rate is exact
    return text.removesuffix(".0")


def _join_kinds(kinds: Iterable[FaultKind], separator: str = ",") -> str:
    return separator.join(kind.value for kind in kinds)


def _shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def _describe(fault: InjectedFault) -> str:
    return (
        f"{fault.kind.value} at agent={fault.agent} step={fault.step} call={fault.call} "
        f"({fault.layer})"
    )
