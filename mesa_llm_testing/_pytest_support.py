"""Machinery of the mesa-llm pytest plugin: per-test fault plans, reports, summary (its
settings are read by :mod:`mesa_llm_testing._pytest_settings`).

Imported by :mod:`mesa_llm_testing.plugin` when pytest configures. It needs only
the standard library, pytest and :mod:`mesa_llm_testing._faults` (no litellm).
"""

from __future__ import annotations

import contextlib
import json
import os
import zlib
from collections import Counter
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from mesa_llm_testing._faults import DEFAULT_KINDS, FaultKind, FaultPlan, InjectedFault
from mesa_llm_testing._process_state import ProcessState, recordings_kept_out_of_cwd
from mesa_llm_testing._pytest_settings import (
    LIBRARY,
    WORKER_SEED,
    FaultSettings,
    MarkerOptions,
    read_settings,
)

SECTION_TITLE = "mesa-llm faults"
"""Title of the report section added to a failing test that used the plugin's fixtures."""

_MARKER_ERROR = f"{LIBRARY}: bad @pytest.mark.mesa_llm"
_PLUGIN_NAME = "mesa-llm-session"
_FAULTS_PROPERTY = "mesa_llm_faults"  # report.user_properties entry, carried across xdist
_USAGE_PROPERTY = "mesa_llm_usage"  # the test's token usage, carried the same way
_TRACE_FORMAT = 1
_SESSION_KEY = pytest.StashKey["SessionFaults"]()
_PLAN_KEY = pytest.StashKey[FaultPlan]()
_STATE_KEY = pytest.StashKey[ProcessState]()
_RECORDINGS_KEY = pytest.StashKey[Any]()  # the test's recordings_kept_out_of_cwd()
_USAGE_KEY = pytest.StashKey[dict[str, Any]]()  # TokenUsage.to_dict() of the test's fake_llm


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
        session = cls(config, read_settings(config))
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
            reason = str(exc).removeprefix(f"{LIBRARY}: ")
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
                    item.warn(pytest.PytestWarning(f"{LIBRARY}: {leak}"))

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        """xdist: workers use the controller's seed (so ``last`` and fresh seeds agree)."""
        node.workerinput[WORKER_SEED] = self.settings.seed

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


# -- formatting -----------------------------------------------------------------------------


def _shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def _describe(fault: InjectedFault) -> str:
    return (
        f"{fault.kind.value} at agent={fault.agent} step={fault.step} call={fault.call} "
        f"({fault.layer})"
    )
