"""Cassettes from the command line and the pytest plugin, end to end."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mesa_llm_testing import FakeLLM
from mesa_llm_testing.cli import main

MODEL = "openai/gpt-4o-mini"
INI = "[pytest]\nasyncio_default_fixture_loop_scope = function\n"
SECRET = "sk-test-DO-NOT-WRITE-5678"


def _untimed(text: str) -> str:
    """``text`` without the step times (and the spaces that align them)."""
    text = re.sub(r"-{3,}", "---", re.sub(r"\d+\.\d+ m?s\b", "", text))
    return re.sub(r"[ \t]+", " ", text)


def test_cli_records_a_run_and_replays_it_offline_in_another_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "run.jsonl.gz"
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with FakeLLM(seed=2).http() as base:
        monkeypatch.setenv("OPENAI_API_BASE", base)
        argv = ["run", "negotiation", "--steps", "2", "--agents", "3", "-q", "--mode", "asyncio"]
        assert main([*argv, "--record", str(path), "--llm-model", MODEL]) == 0
    recorded = capsys.readouterr().out
    assert f"cassette written to {path}" in recorded
    monkeypatch.delenv("OPENAI_API_KEY")
    assert main(["replay", str(path), "--mode", "threading", "-q"]) == 0
    replayed = capsys.readouterr().out
    # The same summary and verdict as the recorded run's (the mode aside).
    first, report = recorded.split("\n", 1)
    assert first.startswith(f"cassette written to {path} (")
    assert _untimed(replayed.replace("threading", "asyncio")) == _untimed(report)
    assert "all checks passed" in report


def test_cli_record_needs_a_real_model_and_one_mode(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(tmp_path / "c.jsonl")
    assert main(["run", "negotiation", "--record", path]) == 2
    assert "also give --llm-model" in capsys.readouterr().err
    assert (
        main(["run", "negotiation", "--record", path, "--llm-model", MODEL, "--mode", "all"]) == 2
    )
    assert "record one run" in capsys.readouterr().err


INNER_TEST = """
import os

import pytest

from mesa_llm._litellm import import_litellm


def ask():
    return import_litellm().completion(
        model="openai/gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
        api_base=os.environ.get("PROVIDER_BASE", "http://127.0.0.1:9/v1"), api_key="sk-inner-key",
        num_retries=0, max_retries=0,
    )


def test_first(fake_llm):
    assert ask().choices[0].message.content == "from the provider"


def test_second(fake_llm):
    assert ask().choices[0].message.content == "from the provider"
    assert ask().choices[0].message.content == "from the provider"


@pytest.mark.mesa_llm(cassette="marked.jsonl")
def test_marked(fake_llm):
    assert ask().choices[0].message.content == "from the provider"
"""


def test_pytest_records_each_test_and_replays_it_offline(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(test_inner=INNER_TEST)
    with FakeLLM(return_value="from the provider").http() as base:
        monkeypatch.setenv("PROVIDER_BASE", base)
        recorded = pytester.runpytest("-p", "no:randomly", "--mesa-llm-record=calls.jsonl",
                                      "-k", "not marked")  # fmt: skip
        recorded.assert_outcomes(passed=2)
    monkeypatch.delenv("PROVIDER_BASE")
    text = (pytester.path / "calls.jsonl").read_text()
    assert "sk-inner-key" not in text
    assert '"test":"test_inner.py::test_first"' in text
    assert '"test":"test_inner.py::test_second"' in text
    # Offline: the provider is gone, each test gets its own recorded calls.
    replayed = pytester.runpytest("-p", "no:randomly", "--mesa-llm-cassette=calls.jsonl",
                                  "-k", "not marked")  # fmt: skip
    replayed.assert_outcomes(passed=2)
    # The marker replays a one-test cassette for that test.
    lines = text.splitlines()
    first = [line for line in lines[1:] if "test_second" not in line]
    (pytester.path / "marked.jsonl").write_text("\n".join([lines[0], *first]) + "\n")
    pytester.runpytest("-p", "no:randomly", "-k", "marked").assert_outcomes(passed=1)


def test_without_a_cassette_the_network_stays_closed_and_says_how_to_record(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(
        """
        import socket

        def test_leaves(fake_llm):
            socket.create_connection(("203.0.113.7", 443), timeout=1)
        """
    )
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*NetworkBlockedError*--mesa-llm-record=PATH*"])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--llm-model", "nosuch/model"], "--llm-model 'nosuch/model': litellm cannot resolve"),
        (
            ["--llm-model", MODEL, "--record", "{dir}/new/dir/c.jsonl"],
            f"--llm-model '{MODEL}': no API key for llm_model='{MODEL}': set the environment "
            "variable OPENAI_API_KEY",
        ),
        (
            ["--llm-model", "mesa-fake/x", "--record", "{dir}/new/dir/c.jsonl"],
            "--llm-model 'mesa-fake/x' is the fake LLM's model, with no real provider to record",
        ),
    ],
)
def test_cli_checks_the_model_and_its_key_before_any_work(
    extra: list[str],
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    argv = ["run", "negotiation", "--steps", "1", "--agents", "2", "--mode", "asyncio", "-q"]
    assert main([*argv, *(arg.format(dir=tmp_path) for arg in extra)]) == 2
    captured = capsys.readouterr()
    assert message in captured.err
    assert "Traceback" not in captured.err and captured.out == ""
    assert list(tmp_path.iterdir()) == []  # no cassette, no directory made for it


def test_cli_runs_a_real_model_name_on_the_fake_without_a_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    argv = ["run", "negotiation", "--steps", "1", "--agents", "2", "--mode", "asyncio", "-q"]
    assert main([*argv, "--llm-model", MODEL]) == 0
    assert "all checks passed" in capsys.readouterr().out
