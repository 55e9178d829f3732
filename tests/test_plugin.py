"""The mesa-llm pytest plugin, exercised with ``pytester`` the way a downstream project uses it."""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path

# Imported before any in-process pytester run: pytester drops modules imported during a
# run, and numpy (under Mesa) cannot be imported a second time in one process.
import mesa  # noqa: F401
import pytest

import mesa_llm.module_llm  # noqa: F401

# Downstream model tests: they call litellm as a model written for OpenAI would and fail
# whenever a fault was injected, so the failure report and repro command can be checked;
# the last one fails without using the plugin's fixtures (so gets no mesa-llm section).
MODEL_TESTS = """
import litellm
import pytest


def ask_many(n):
    for _ in range(n):
        try:
            litellm.completion(
                model="openai/gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
            )
        except Exception:
            pass


def test_many_calls(fake_llm):
    ask_many(20)
    assert not fake_llm.faults.injected


@pytest.mark.parametrize("n", [10, 15])
def test_some_calls(fake_llm, n):
    ask_many(n)
    assert not fake_llm.faults.injected


@pytest.mark.mesa_llm(faults=0)
def test_faults_off(fake_llm):
    ask_many(10)
    assert fake_llm.call_count == 10
    assert not fake_llm.faults.injected


def test_without_fixtures():
    assert False, "fails without the plugin's fixtures: no mesa-llm section"
"""

INI = "[pytest]\nasyncio_default_fixture_loop_scope = function\n"
HEADER = re.compile(
    r"^mesa-llm: --mesa-llm-faults=(\S+) --mesa-llm-seed=(\d+) --mesa-llm-fault-kinds=(\S+)$",
    re.MULTILINE,
)


@pytest.fixture(autouse=True)
def _quiet_pytest_asyncio(pytester: pytest.Pytester) -> None:
    """Inner sessions set pytest-asyncio's loop scope, so its deprecation warning stays out."""
    pytester.makeini(INI)


@pytest.fixture(scope="session")
def litellm_preloaded() -> None:
    """Import litellm in this process before inner sessions that use it.

    pytester restores ``sys.modules`` after each in-process run but not
    ``sys.meta_path``; litellm adds an ``importlib_metadata`` finder there, which
    breaks entry-point discovery (so plugin loading) in the next in-process run
    once its module is gone. Imported before the first pytester snapshot (session
    scope), it stays, and is imported once.
    """
    from mesa_llm._litellm import import_litellm

    import_litellm()


def header_of(result: pytest.RunResult) -> tuple[str, int, str]:
    """(rate, seed, kinds) from the ``mesa-llm:`` header line."""
    match = HEADER.search(result.stdout.str())
    assert match, result.stdout.str()
    return match[1], int(match[2]), match[3]


def faults_in(trace: Path) -> list[dict[str, object]]:
    return json.loads(trace.read_text())["faults"]


# -- options ---------------------------------------------------------------------------------


def test_header_is_a_pastable_flag_line(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_ok(): pass")
    result = pytester.runpytest_inprocess(
        "--mesa-llm-faults=0.25",
        "--mesa-llm-seed=1234",
        "--mesa-llm-fault-kinds=rate_limit,timeout",
    )
    result.stdout.fnmatch_lines(
        [
            "mesa-llm: --mesa-llm-faults=0.25 --mesa-llm-seed=1234 "
            "--mesa-llm-fault-kinds=rate_limit,timeout"
        ]
    )
    result.assert_outcomes(passed=1)
    # Every word after "mesa-llm:" is a flag: pasted back, it gives the same header.
    for args in ([], ["--mesa-llm-faults=0.1"]):
        line = HEADER.search(pytester.runpytest_inprocess(*args).stdout.str())
        assert line is not None
        again = pytester.runpytest_inprocess(*line[0].split()[1:])
        assert HEADER.search(again.stdout.str())[0] == line[0]  # type: ignore[index]


def test_default_is_no_faults_a_fresh_seed_and_every_kind(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_ok(): pass")
    seeds = {header_of(pytester.runpytest_inprocess())[1] for _ in range(3)}
    rate, _, kinds = header_of(pytester.runpytest_inprocess())
    assert rate == "0"
    assert kinds == "rate_limit,timeout,malformed_json,server_error,connection_error,empty_response"
    assert len(seeds) > 1


def test_seed_last_reuses_the_previous_sessions_seed(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_ok(): pass")
    _, first, _ = header_of(pytester.runpytest_inprocess())
    _, again, _ = header_of(pytester.runpytest_inprocess("--mesa-llm-seed=last"))
    assert again == first
    header_of(pytester.runpytest_inprocess("--mesa-llm-seed=77"))
    assert header_of(pytester.runpytest_inprocess("--mesa-llm-seed=last"))[1] == 77


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        (
            "--mesa-llm-faults=1.5",
            "--mesa-llm-faults='1.5' is not a fault rate; use a number from 0 to 1",
        ),
        (
            "--mesa-llm-faults=abc",
            "--mesa-llm-faults='abc' is not a fault rate; use a number from 0 to 1",
        ),
        (
            "--mesa-llm-seed=abc",
            "--mesa-llm-seed='abc' is not a seed; use a non-negative integer or 'last'",
        ),
        (
            "--mesa-llm-fault-kinds=rate_limit,bogus",
            "--mesa-llm-fault-kinds='rate_limit,bogus' is not a list of fault kinds; use a "
            "comma-separated subset of: rate_limit, timeout, malformed_json, server_error, "
            "connection_error, empty_response",
        ),
        ("--mesa-llm-replay=missing.json", "--mesa-llm-replay=missing.json: no such file"),
        ("--mesa-llm-trace=", "--mesa-llm-trace needs a file path, e.g. --mesa-llm-trace=run.json"),
        ("--mesa-llm-trace=.", "--mesa-llm-trace=. is a directory; name a file, e.g. *run.json"),
        ("--mesa-llm-record=", "--mesa-llm-record needs a file path*"),
        ("--mesa-llm-record=.", "--mesa-llm-record=. is a directory*"),
        ("--mesa-llm-cassette=.", "--mesa-llm-cassette=. is a directory*"),
        (
            "--mesa-llm-replay=conftest.py",
            "--mesa-llm-replay=*conftest.py: not a --mesa-llm-trace file",
        ),
    ],
)
def test_bad_option_is_a_usage_error_naming_the_valid_values(
    pytester: pytest.Pytester, arg: str, expected: str
) -> None:
    pytester.makeconftest("")
    pytester.makepyfile("def test_ok(): pass")
    result = pytester.runpytest_inprocess(arg)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: mesa_llm_testing: {expected}*"])


def test_recording_under_xdist_workers_is_one_usage_error_before_any_worker_starts(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest("")
    pytester.makepyfile("def test_ok(): pass")
    result = pytester.runpytest_inprocess("-p", "xdist", "-n", "2", "--mesa-llm-record=calls.jsonl")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: mesa_llm_testing: --mesa-llm-record=calls.jsonl: record without pytest-xdist *"]
    )
    assert "node down" not in result.stdout.str() + result.stderr.str()


def test_recording_with_dist_in_addopts_but_no_workers_records(pytester: pytest.Pytester) -> None:
    # A project whose CI adds -n: its addopts name a --dist mode, which starts no worker.
    pytester.makeini(INI + "addopts = -p xdist --dist loadfile\n")
    pytester.makepyfile("def test_ok(fake_llm): pass")
    result = pytester.runpytest_inprocess("--mesa-llm-record=calls.jsonl")
    result.assert_outcomes(passed=1)
    assert (pytester.path / "calls.jsonl").is_file()


def test_options_are_settable_in_the_ini_file(pytester: pytest.Pytester) -> None:
    pytester.makeini(
        INI + "mesa_llm_faults = 0.5\nmesa_llm_seed = 99\nmesa_llm_fault_kinds = timeout\n"
        "mesa_llm_trace = out/trace.json\n"
    )
    pytester.makepyfile("def test_ok(): pass")
    result = pytester.runpytest_inprocess()
    result.stdout.fnmatch_lines(
        ["mesa-llm: --mesa-llm-faults=0.5 --mesa-llm-seed=99 --mesa-llm-fault-kinds=timeout"]
    )
    assert faults_in(pytester.path / "out" / "trace.json") == []
    # The command line wins over the ini file.
    assert header_of(pytester.runpytest_inprocess("--mesa-llm-faults=0.1"))[0] == "0.1"

    pytester.makeini(INI + "mesa_llm_faults = lots\n")
    result = pytester.runpytest_inprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: mesa_llm_testing: ini option mesa_llm_faults='lots' is not a fault rate*"]
    )


# -- per-test seed and marker ---------------------------------------------------------------


def test_per_test_seed_and_plan_come_from_the_options(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import zlib
        from mesa_llm_testing import FaultKind

        def test_seed(request, mesa_llm_seed, llm_faults):
            nodeid = request.node.nodeid
            assert mesa_llm_seed == 1234 + zlib.crc32(nodeid.encode())
            assert llm_faults.seed == mesa_llm_seed
            assert llm_faults.test_id == nodeid
            assert llm_faults.rate == 0.2
            assert set(llm_faults.kinds) == {FaultKind.TIMEOUT, FaultKind.SERVER_ERROR}
        """
    )
    result = pytester.runpytest_inprocess(
        "--mesa-llm-faults=0.2",
        "--mesa-llm-seed=1234",
        "--mesa-llm-fault-kinds=timeout,server_error",
    )
    result.assert_outcomes(passed=1)


def test_marker_overrides_rate_kinds_and_seed(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        from mesa_llm_testing import FaultKind

        @pytest.mark.mesa_llm(faults=0)
        def test_off(llm_faults):
            assert llm_faults.rate == 0

        @pytest.mark.mesa_llm(kinds="rate_limit", seed=7)
        def test_kinds_and_seed(llm_faults, mesa_llm_seed):
            assert mesa_llm_seed == 7 and llm_faults.seed == 7
            assert llm_faults.rate == 0.5
            assert tuple(llm_faults.kinds) == (FaultKind.RATE_LIMIT,)
        """
    )
    result = pytester.runpytest_inprocess("--mesa-llm-faults=0.5")
    result.assert_outcomes(passed=2)


def test_marker_typo_or_bad_value_is_a_clear_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.mesa_llm(fault=0.1)
        def test_typo(llm_faults):
            pass

        @pytest.mark.mesa_llm(faults=1.5)
        def test_rate(llm_faults):
            pass

        @pytest.mark.mesa_llm(kinds="slow")
        def test_kind(llm_faults):
            pass

        @pytest.mark.mesa_llm(cassette=5)
        def test_cassette(fake_llm):
            pass
        """
    )
    result = pytester.runpytest_inprocess("-p", "no:randomly")  # the errors in file order
    result.assert_outcomes(errors=4)
    result.stdout.fnmatch_lines(
        [
            "E *TypeError: mesa_llm_testing: @pytest.mark.mesa_llm on *::test_typo got "
            "unexpected argument(s) fault=; it takes only the keywords faults=, kinds=, seed=, "
            "cassette=",
            "E *ValueError: mesa_llm_testing: bad @pytest.mark.mesa_llm on *::test_rate: "
            "fault rate must be from 0 to 1 *got 1.5",
            "E *ValueError: mesa_llm_testing: bad @pytest.mark.mesa_llm on *::test_kind: "
            "unknown fault kind 'slow'; valid kinds: rate_limit, timeout, *",
            "E *TypeError: mesa_llm_testing: @pytest.mark.mesa_llm on *::test_cassette: "
            "cassette=5 is not a path; *",
        ],
        consecutive=False,
    )


def test_marker_is_registered(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_inprocess("--markers")
    result.stdout.fnmatch_lines(
        [
            "@pytest.mark.mesa_llm([*], faults=None, kinds=None, seed=None, cassette=None): "
            "*faults=0 turns *"
        ]
    )


# -- fixtures ---------------------------------------------------------------------------------


def test_fixtures_are_documented(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_inprocess("--fixtures")
    docs = {
        "mesa_llm_seed": "The seed of this test: ``--mesa-llm-seed`` plus ``zlib.crc32`` of *",
        "llm_faults": "The ``FaultPlan`` of this test: rate, kinds and seed from the options *",
        "fake_llm": "A ``FakeLLM`` answering every litellm completion in the process during *",
        "fake_llm_http": "The ``api_base`` of an OpenAI-compatible HTTP endpoint served by *",
        "stepping_mode": 'Runs the test twice, with ``"asyncio"`` and ``"threading"`` parallel *',
    }
    for name, doc in docs.items():
        result.stdout.fnmatch_lines([f"{name} -- *mesa_llm_testing/plugin.py:*", f"    {doc}"])


def test_stepping_mode_parametrizes_and_turns_automatic_stepping_off(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        """
        import mesa
        from mesa_llm.parallel_stepping import enable_automatic_parallel_stepping

        MESA_SHUFFLE_DO = mesa.agent.AgentSet.__dict__["shuffle_do"]
        MODES = []

        def test_mode(stepping_mode):
            MODES.append(stepping_mode)
            enable_automatic_parallel_stepping(stepping_mode)
            assert mesa.agent.AgentSet.__dict__["shuffle_do"] is not MESA_SHUFFLE_DO

        def test_restored():
            assert MODES == ["asyncio", "threading"]
            assert mesa.agent.AgentSet.__dict__["shuffle_do"] is MESA_SHUFFLE_DO
        """
    )
    # In file order (pytest-randomly, if installed, would shuffle): test_restored runs last.
    result = pytester.runpytest_inprocess("-v", "-p", "no:randomly")
    result.stdout.fnmatch_lines(["*test_mode?asyncio? PASSED*", "*test_mode?threading? PASSED*"])
    result.assert_outcomes(passed=3)


def test_both_stepping_modes_of_a_test_get_the_same_faults(
    pytester: pytest.Pytester, litellm_preloaded: None
) -> None:
    pytester.makepyfile(
        """
        import json
        import pytest
        from mesa import Agent, Model
        from mesa_llm.module_llm import ModuleLLM, RetryPolicy
        from mesa_llm.parallel_stepping import step_agents_parallel_sync

        SEEN = {}

        class Caller(Agent):
            async def astep(self):
                llm = ModuleLLM("openai/gpt-4o-mini", retry=RetryPolicy(max_attempts=1))
                try:
                    await llm.agenerate("hi")
                except Exception as exc:
                    return type(exc).__name__

        @pytest.mark.parametrize("n", [4])
        def test_modes(fake_llm, llm_faults, mesa_llm_seed, stepping_mode, n):
            model = Model(seed=1)
            agents = [Caller(model) for _ in range(n)]
            report = step_agents_parallel_sync(agents, mode=stepping_mode)
            SEEN[stepping_mode] = (
                mesa_llm_seed,
                [o.value for o in report.outcomes],
                sorted((f.agent, f.call, f.kind.value) for f in llm_faults.injected),
            )

        def test_compare():
            assert SEEN["asyncio"] == SEEN["threading"]
            assert SEEN["asyncio"][2]  # faults were injected at all
            assert any(SEEN["asyncio"][1])  # and some ended an agent's call
        """
    )
    result = pytester.runpytest_inprocess(
        "--mesa-llm-faults=0.5", "--mesa-llm-seed=7", "-p", "no:randomly"
    )
    result.assert_outcomes(passed=3)


def test_fake_llm_http_serves_the_openai_api(
    pytester: pytest.Pytester, litellm_preloaded: None
) -> None:
    pytester.makepyfile(
        """
        import litellm
        import pytest

        REQUEST = dict(
            model="openai/gpt-4o-mini", api_key="sk-test", num_retries=0, max_retries=0,
            messages=[{"role": "user", "content": "hi"}],
        )

        def test_reply(fake_llm, fake_llm_http):
            fake_llm.return_value = "hello"
            reply = litellm.completion(api_base=fake_llm_http, **REQUEST)
            assert reply.choices[0].message.content == "hello"
            assert fake_llm.calls.last.layer == "http"

        def test_rate_limit(fake_llm_http, llm_faults):
            llm_faults.at(agent=None, step=None, call=0, kind="rate_limit")
            with pytest.raises(litellm.RateLimitError):
                litellm.completion(api_base=fake_llm_http, **REQUEST)
            assert [fault.layer for fault in llm_faults.injected] == ["http"]

        @pytest.mark.asyncio
        async def test_async_server_error(fake_llm_http, llm_faults):
            llm_faults.at(agent=None, step=None, call=0, kind="server_error")
            with pytest.raises(
                (litellm.InternalServerError, litellm.BadGatewayError,
                 litellm.ServiceUnavailableError, litellm.Timeout)
            ):
                await litellm.acompletion(api_base=fake_llm_http, **REQUEST)
            assert [fault.layer for fault in llm_faults.injected] == ["http"]
        """
    )
    pytester.runpytest_inprocess().assert_outcomes(passed=3)


# -- failure report, summary, trace and replay -------------------------------------------------


def test_failure_report_lists_faults_and_its_command_reproduces_them(
    pytester: pytest.Pytester,
    litellm_preloaded: None,
) -> None:
    pytester.makepyfile(test_model=MODEL_TESTS)
    first = pytester.runpytest_inprocess("--mesa-llm-faults=0.3", "--mesa-llm-trace=first.json")
    outcomes = first.parseoutcomes()
    assert outcomes["failed"] >= 2, first.stdout.str()
    out = first.stdout.str()
    # One section per failing test that used the fixtures (not test_without_fixtures).
    assert out.count("- mesa-llm faults -") == outcomes["failed"] - 1
    _, seed, _ = header_of(first)
    commands = re.findall(r"^  (pytest '.*)$", out, re.MULTILINE)
    assert len(commands) == outcomes["failed"] - 1
    assert all(c.endswith(f" --mesa-llm-faults=0.3 --mesa-llm-seed={seed}") for c in commands)

    recorded = faults_in(pytester.path / "first.json")
    command = shlex.split(commands[0])
    test_id = command[1]
    expected = [fault for fault in recorded if fault["test_id"] == test_id]
    assert expected
    for fault in expected:
        first.stdout.fnmatch_lines(
            [f"  {fault['kind']} at agent=None step=None call={fault['call']} ({fault['layer']})"]
        )

    rerun = pytester.runpytest_inprocess(*command[1:], "--mesa-llm-trace=rerun.json")
    rerun.assert_outcomes(failed=1)
    assert faults_in(pytester.path / "rerun.json") == expected


def test_summary_counts_faults_per_kind_and_matches_the_trace(
    pytester: pytest.Pytester, litellm_preloaded: None
) -> None:
    pytester.makepyfile(test_model=MODEL_TESTS)
    result = pytester.runpytest_inprocess(
        "--mesa-llm-faults=1",
        "--mesa-llm-fault-kinds=rate_limit,server_error",
        "--mesa-llm-trace=t.json",
    )
    faults = faults_in(pytester.path / "t.json")
    assert len(faults) == 20 + 10 + 15  # every call of the three tests without faults=0
    counts = {
        kind: sum(f["kind"] == kind for f in faults) for kind in ("rate_limit", "server_error")
    }
    assert all(counts.values())
    result.stdout.fnmatch_lines(
        [
            "*= mesa-llm =*",
            f"45 fault(s) injected in 3 of 5 test(s): rate_limit={counts['rate_limit']}, "
            f"server_error={counts['server_error']}",
            "mesa-llm: --mesa-llm-faults=1 --mesa-llm-seed=* "
            "--mesa-llm-fault-kinds=rate_limit,server_error",
            "fault trace written to *t.json",
        ]
    )
    result.assert_outcomes(failed=4, passed=1)


def test_replay_injects_exactly_the_recorded_faults(
    pytester: pytest.Pytester, litellm_preloaded: None
) -> None:
    pytester.makepyfile(test_model=MODEL_TESTS)
    pytester.runpytest_inprocess("--mesa-llm-faults=0.3", "--mesa-llm-trace=recorded.json")
    recorded = faults_in(pytester.path / "recorded.json")
    assert recorded

    result = pytester.runpytest_inprocess(
        "--mesa-llm-replay=recorded.json", "--mesa-llm-seed=5", "--mesa-llm-trace=replayed.json"
    )
    assert faults_in(pytester.path / "replayed.json") == recorded
    result.stdout.fnmatch_lines(["mesa-llm: * --mesa-llm-replay=recorded.json"])
    assert "--mesa-llm-seed=5 --mesa-llm-replay=recorded.json" in result.stdout.str()

    # Without --mesa-llm-seed, a replay keeps the recorded session's seed.
    recorded_seed = json.loads((pytester.path / "recorded.json").read_text())["seed"]
    result = pytester.runpytest_inprocess("--mesa-llm-replay=recorded.json", "-k", "faults_off")
    assert f"mesa-llm: --mesa-llm-seed={recorded_seed} --mesa-llm-replay=recorded.json\n" in (
        result.stdout.str()
    )


def test_options_a_replay_ignores_are_said_to_be_ignored_not_echoed(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile("def test_ok(): pass")
    (pytester.path / "t.json").write_text('{"mesa_llm_trace": 1, "seed": 3, "faults": []}')
    result = pytester.runpytest_inprocess("--mesa-llm-replay=t.json", "--mesa-llm-faults=0.3")
    result.stdout.fnmatch_lines(
        [
            "mesa-llm: --mesa-llm-seed=3 --mesa-llm-replay=t.json "
            "(ignored under --mesa-llm-replay: --mesa-llm-faults=0.3)"
        ]
    )
    assert "--mesa-llm-faults=0.3 --mesa-llm-seed" not in result.stdout.str()


# -- separate processes: xdist and import cost ------------------------------------------------


@pytest.mark.subprocess
def test_xdist_workers_use_the_controller_seed_and_match_a_serial_run(
    pytester: pytest.Pytester,
    litellm_preloaded: None,
) -> None:
    pytester.makepyfile(test_model=MODEL_TESTS)
    parallel = pytester.runpytest_subprocess(
        "-p", "xdist", "-n", "2", "--mesa-llm-faults=0.3", "--mesa-llm-trace=parallel.json"
    )
    _, seed, _ = header_of(parallel)
    serial = pytester.runpytest_inprocess(
        "--mesa-llm-faults=0.3", f"--mesa-llm-seed={seed}", "--mesa-llm-trace=serial.json"
    )
    assert faults_in(pytester.path / "parallel.json") == faults_in(pytester.path / "serial.json")
    outcomes = ("passed", "failed")
    assert [parallel.parseoutcomes().get(o) for o in outcomes] == [
        serial.parseoutcomes().get(o) for o in outcomes
    ]
    summary = re.compile(r"^\d+ fault\(s\) injected in \d+ of \d+ test\(s\).*$", re.MULTILINE)
    summary_lines = summary.findall(parallel.stdout.str())
    assert len(summary_lines) == 1
    assert summary_lines == summary.findall(serial.stdout.str())
    # Token usage comes back from the workers too (in the reports' user_properties).
    tokens = re.compile(r"^tokens: [\d,]+ prompt \+ [\d,]+ completion tokens in .*$", re.MULTILINE)
    assert len(tokens.findall(parallel.stdout.str())) == 1
    assert tokens.findall(parallel.stdout.str()) == tokens.findall(serial.stdout.str())


def test_the_summary_shows_tokens_and_the_cost_of_the_model_asked_for(
    pytester: pytest.Pytester, litellm_preloaded: None
) -> None:
    pytester.makepyfile(
        """
        import litellm

        def test_asks(fake_llm):
            for _ in range(3):
                litellm.completion(
                    model="openai/gpt-4o-mini", messages=[{"role": "user", "content": "x" * 400}]
                )

        def test_asks_nothing(fake_llm):
            pass
        """
    )
    result = pytester.runpytest_inprocess()
    result.assert_outcomes(passed=2)
    # 400 characters: 101 prompt tokens a call (the fake's estimate), 3 replies.
    result.stdout.fnmatch_lines(
        [
            "*= mesa-llm =*",
            "tokens: 303 prompt + * completion tokens in 3 LLM replies; the LLM calls of these "
            "1 test(s) would cost about $* (priced as openai/gpt-4o-mini)",
        ]
    )


@pytest.mark.subprocess
def test_loading_the_plugin_imports_neither_litellm_nor_respx(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import sys

        def test_cheap(pytestconfig, mesa_llm_seed, llm_faults):
            assert pytestconfig.pluginmanager.hasplugin("mesa_llm")
            assert "litellm" not in sys.modules
            assert "respx" not in sys.modules
        """
    )
    # respx's own pytest plugin imports respx; turn it off to see what this plugin imports.
    result = pytester.runpytest_subprocess("-p", "no:respx", "--mesa-llm-faults=0.1")
    result.assert_outcomes(passed=1)


def test_two_models_built_in_one_test_get_the_same_faults(
    pytester: pytest.Pytester, litellm_preloaded: None
) -> None:
    """Fault identity is per model run: a second model in the same test starts from call 0."""
    pytester.makepyfile(
        """
        from mesa import Agent, Model
        from mesa_llm.module_llm import ModuleLLM, RetryPolicy
        from mesa_llm.parallel_stepping import parallel_stepping

        class Asker(Agent):  # raises whatever the fake raises: no try/except
            def __init__(self, model):
                super().__init__(model)
                self.llm = ModuleLLM("openai/gpt-4o-mini", retry=RetryPolicy(max_attempts=1))

            async def astep(self):
                await self.llm.agenerate("hi")
                await self.llm.agenerate("again")

        class Market(Model):
            def __init__(self, seed):
                super().__init__(seed=seed)
                self.parallel_stepping = True
                for _ in range(10):
                    Asker(self)

            def step(self):
                self.agents.shuffle_do("step")

        def failures(mode, seed):
            model = Market(seed)
            seen = []
            with parallel_stepping(mode):
                for _ in range(3):
                    model.step()
                    seen += [
                        (model.steps, o.unique_id, type(o.exception).__name__)
                        for o in model.last_step_report.failed
                    ]
            return sorted(seen)

        def test_twice(fake_llm, mesa_llm_seed):
            first = failures("asyncio", mesa_llm_seed)
            assert first, "no failures at rate 0.3: the test shows nothing"
            assert failures("threading", mesa_llm_seed) == first
            assert failures("sequential", mesa_llm_seed) == first
        """
    )
    result = pytester.runpytest_inprocess(
        "--mesa-llm-faults=0.3", "--mesa-llm-seed=1234", "-p", "no:randomly"
    )
    result.assert_outcomes(passed=1)


def test_stepping_mode_offers_sequential_on_request(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        from mesa import Agent, Model
        from mesa_llm.parallel_stepping import step_agents_parallel_sync

        class Boom(Agent):
            def step(self):
                raise RuntimeError("boom")

        def test_default(stepping_mode):
            pass

        @pytest.mark.parametrize(
            "stepping_mode", ["sequential", "asyncio", "threading"], indirect=True
        )
        def test_all_three(stepping_mode):
            model = Model(seed=1)
            report = step_agents_parallel_sync([Boom(model), Boom(model)], mode=stepping_mode)
            assert report.mode == stepping_mode and len(report.failed) == 2

        @pytest.mark.parametrize("stepping_mode", ["serial"], indirect=True)
        def test_typo(stepping_mode):
            pass
        """
    )
    result = pytester.runpytest_inprocess("-v", "-p", "no:randomly")
    result.stdout.fnmatch_lines(
        ["*test_default?asyncio? PASSED*", "*test_all_three?sequential? PASSED*"]
    )
    result.stdout.fnmatch_lines(["*'serial' is not a stepping mode; valid modes: asyncio*"])
    result.assert_outcomes(passed=5, errors=1)


# -- hygiene: what a test changes process-wide is put back after it -------------------------


def test_automatic_stepping_a_model_turned_on_is_off_for_the_next_test(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        """
        import mesa
        from mesa_llm.parallel_stepping import enable_automatic_parallel_stepping

        MESA_SHUFFLE_DO = mesa.agent.AgentSet.__dict__["shuffle_do"]

        class MyModel(mesa.Model):  # as in the README's tour: the model opts in itself
            def __init__(self, seed=None):
                super().__init__(seed=seed)
                self.parallel_stepping = True
                enable_automatic_parallel_stepping(mode="threading")

        def test_model_turns_it_on():
            MyModel(seed=1)
            assert mesa.agent.AgentSet.__dict__["shuffle_do"] is not MESA_SHUFFLE_DO

        def test_next_test_gets_plain_mesa():
            assert mesa.agent.AgentSet.__dict__["shuffle_do"] is MESA_SHUFFLE_DO
        """
    )
    result = pytester.runpytest_inprocess("-p", "no:randomly")
    result.assert_outcomes(passed=2)
    assert "warning" not in result.stdout.str().lower()  # a model opting in is no bug


def test_the_stepping_mode_a_session_chose_is_restored_after_a_test_changes_it(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        """
        from mesa_llm import parallel_stepping as ps

        # The session's choice, made before any test starts (at import, during collection).
        ps.enable_automatic_parallel_stepping("asyncio", max_concurrency=3)

        def test_switches_to_threading():
            ps.enable_automatic_parallel_stepping("threading")

        def test_back_to_the_sessions_mode():
            settings = ps.automatic_stepping_settings()  # the settings chosen at import
            assert (settings["mode"], settings["max_concurrency"]) == ("asyncio", 3)
        """
    )
    result = pytester.runpytest_inprocess("-p", "no:randomly")
    result.assert_outcomes(passed=2)


def test_a_fake_left_active_is_deactivated_and_reported(
    pytester: pytest.Pytester, litellm_preloaded: None
) -> None:
    pytester.makepyfile(
        """
        import litellm
        from mesa_llm_testing import FakeLLM

        ORIGINAL = litellm.completion
        LEAKED = []

        def test_leaks_an_activation():
            LEAKED.append(FakeLLM(return_value="leaked").activate())
            LEAKED[0].__enter__()  # never exited
            assert litellm.completion is not ORIGINAL

        def test_next_test_gets_real_litellm():
            assert litellm.completion is ORIGINAL
        """
    )
    result = pytester.runpytest_inprocess("-p", "no:randomly")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        ["*mesa_llm_testing: a FakeLLM.activate() entered during the test was never exited*"]
    )


@pytest.mark.subprocess
def test_the_cost_map_variable_is_set_before_test_modules_import_litellm(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(
        """
        import os

        AT_IMPORT = os.environ.get("LITELLM_LOCAL_MODEL_COST_MAP")

        def test_value():
            print("COST_MAP=" + repr(AT_IMPORT))
        """
    )
    monkeypatch.delenv("LITELLM_LOCAL_MODEL_COST_MAP", raising=False)
    result = pytester.runpytest_subprocess("-s")
    result.stdout.fnmatch_lines(["*COST_MAP='True'"])
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "False")  # the user's choice stands
    result = pytester.runpytest_subprocess("-s")
    result.stdout.fnmatch_lines(["*COST_MAP='False'"])


def test_no_request_leaves_the_machine_while_fake_llm_is_active(
    pytester: pytest.Pytester, litellm_preloaded: None
) -> None:
    pytester.makepyfile(
        """
        import socket
        import threading
        import urllib.request

        import httpx
        import pytest
        from mesa_llm_testing._network_guard import NetworkBlockedError

        ORIGINAL_CONNECT = socket.socket.connect

        def test_names_and_addresses_are_refused(fake_llm):
            with pytest.raises(NetworkBlockedError, match="example.com:80 refused.*fake_llm"):
                socket.create_connection(("example.com", 80), timeout=1)
            with pytest.raises(NetworkBlockedError, match="203.0.113.5:443"):
                socket.create_connection(("203.0.113.5", 443), timeout=1)
            with pytest.raises(NetworkBlockedError, match="api.openai.com:443"):
                httpx.get("https://api.openai.com/v1/models")
            with pytest.raises(NetworkBlockedError, match="example.org:80"):
                urllib.request.urlopen("http://example.org/", timeout=1)

        def test_loopback_still_works(fake_llm):
            server = socket.create_server(("127.0.0.1", 0))
            port = server.getsockname()[1]
            accepting = threading.Thread(target=lambda: server.accept()[0].close(), daemon=True)
            accepting.start()
            socket.create_connection(("localhost", port), timeout=5).close()
            accepting.join(5)  # accept before closing: else accept() fails in the thread (EBADF)
            server.close()

        def test_guard_is_gone_after_the_fixture():
            assert socket.socket.connect is ORIGINAL_CONNECT
        """
    )
    result = pytester.runpytest_inprocess("-p", "no:randomly")
    result.assert_outcomes(passed=3)


RECORDING_TEST = """
import os
from pathlib import Path
from mesa import Model
from mesa_llm.recording import record_model

@record_model(save_at_exit=False)
class Recorded(Model):
    def step(self):
        pass

def test_records():
    model = Recorded(seed=1)
    model.step()
    path = model.recorder.save()
    Path("where.txt").write_text(str(path))
"""


@pytest.mark.parametrize("user_dir", [False, True], ids=["unset", "set-by-user"])
def test_recordings_never_land_in_the_working_directory(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, user_dir: bool
) -> None:
    mine = pytester.path / "mine"
    if user_dir:
        monkeypatch.setenv("MESA_LLM_RECORDINGS_DIR", str(mine))
    else:
        monkeypatch.delenv("MESA_LLM_RECORDINGS_DIR", raising=False)
    pytester.makepyfile(RECORDING_TEST)
    pytester.runpytest_inprocess().assert_outcomes(passed=1)
    saved = Path((pytester.path / "where.txt").read_text())
    assert saved.is_file()
    assert not (pytester.path / "recordings").exists()
    if user_dir:
        assert saved.parent == mine / "recordings"
    else:
        assert pytester.path not in saved.parents
        assert "MESA_LLM_RECORDINGS_DIR" not in os.environ  # put back after the test
