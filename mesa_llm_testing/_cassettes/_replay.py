"""Replay: answer each call from a cassette by who made it, offline, in any stepping mode.

:class:`CassetteReplies` is a fake's reply source (``FakeCore.reply_source``): the
core asks it for the reply of every call that no fault replaced. The identity key
is (model run, agent, step, n) where n counts the calls of that agent in that step
that reached the cassette, so a fault layered on top (a retried rate limit) does not
shift later calls off their recordings.
"""

from __future__ import annotations

import difflib
import json
import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from mesa_llm_testing._cassettes._errors import rebuild_error
from mesa_llm_testing._cassettes._format import (
    Cassette,
    CassetteEntry,
    RunOrdinals,
    canonical,
    read_cassette,
)
from mesa_llm_testing._cassettes._record import request_fingerprint
from mesa_llm_testing._responses import FakeReply, FakeToolCall, generate_reply

if TYPE_CHECKING:
    from mesa_llm_testing._calls import FakeRequest
    from mesa_llm_testing._fake import FakeCore

__all__ = ["MATCHES", "MISSING", "CassetteMismatchError", "CassetteReplies"]

MATCHES: Final = ("strict", "identity", "fingerprint")
MISSING: Final = ("error", "generate")
_DIFF_LINES: Final = 40


class CassetteMismatchError(AssertionError):
    """A call the cassette cannot answer: its request changed, or it was never recorded."""


class CassetteReplies:
    """The replies of one test's (or run's) calls in a cassette."""

    def __init__(
        self,
        cassette: Cassette,
        *,
        test_id: str | None = None,
        match: str = "strict",
        missing: str = "error",
    ) -> None:
        if match not in MATCHES:
            raise ValueError(
                f"mesa_llm_testing: from_cassette match={match!r} is not a matching rule; "
                f"valid values: {', '.join(map(repr, MATCHES))}"
            )
        if missing not in MISSING:
            raise ValueError(
                f"mesa_llm_testing: from_cassette missing={missing!r} is not valid; "
                f"valid values: {', '.join(map(repr, MISSING))}"
            )
        self.cassette = cassette
        self.match = match
        self.missing = missing
        self.test_id = _pick_test(cassette, test_id)
        entries = [e for e in cassette.entries if e.test == self.test_id]
        self._by_key = {_key(e.key): e for e in entries}
        self._by_content: dict[str, list[CassetteEntry]] = {}
        for entry in entries:
            self._by_content.setdefault(entry.fingerprint, []).append(entry)
        self._lock = threading.Lock()
        self._runs = RunOrdinals()
        self._counts: dict[tuple[int, str, Any], int] = {}
        self._used: dict[str, int] = {}
        #: Every call the cassette could not answer, as the error raised for it.
        self.problems: list[CassetteMismatchError] = []

    @classmethod
    def load(cls, path: str | Path, **options: Any) -> CassetteReplies:
        """Read the cassette at ``path`` (ValueError naming it if it is not one)."""
        return cls(read_cassette(path), **options)

    @property
    def header(self) -> dict[str, Any]:
        """The cassette's header line."""
        return self.cassette.header

    def reply(self, fake: FakeCore, request: FakeRequest) -> FakeReply:
        """The recorded reply of ``request``; raises the recorded error, or a mismatch."""
        run = self._runs.of(getattr(request.agent_object, "model", None))
        with self._lock:
            slot = (run, json.dumps(request.agent), request.step)
            index = self._counts.get(slot, 0)
            self._counts[slot] = index + 1
            # Steps only move forward: drop the counters of a finished step of this agent.
            self._counts.pop((run, slot[1], (request.step or 0) - 2), None)
        key = (run, request.agent, request.step, index)
        entry = None
        try:
            entry = self._find(key, request)
            if entry is None:
                return replace(
                    generate_reply(request.shape, fake.rng(request)).with_ids(fake.rng(request)),
                    generated=True,
                )
            if entry.error is None:
                return _reply_of(entry.reply or {})
            recorded = rebuild_error(entry.error)
        except CassetteMismatchError:
            raise  # already in problems
        except Exception as exc:  # a damaged recording: a failure of the replay, not the run
            where = "" if entry is None else f" (line {entry.line})"
            raise self._problem(
                f"mesa_llm_testing: cassette {self.cassette.path}: cannot replay the recording of "
                f"{_who(key)}{where}: {type(exc).__name__}: {exc}"
            ) from exc
        raise recorded

    def _find(
        self, key: tuple[int, Any, int | None, int], request: FakeRequest
    ) -> CassetteEntry | None:
        if self.match == "fingerprint":
            found = self._next_by_content(request_fingerprint(request))
        else:
            found = self._by_key.get(_key(key))
        if found is None:
            if self.missing == "generate":
                return None
            raise self._problem(
                f"mesa_llm_testing: cassette {self.cassette.path}: no recorded call for "
                f"{_who(key)} (match={self.match!r}); the run made a call the recording did "
                f"not. Record again, or pass missing='generate' to answer it with the "
                f"seeded generator"
            )
        if self.match == "strict" and found.fingerprint != request_fingerprint(request):
            raise self._problem(
                f"mesa_llm_testing: cassette {self.cassette.path}: the request of {_who(key)} "
                f"differs from the recorded one (line {found.line}); the model's prompt, tools "
                f"or response format changed. Record again, or replay with match='identity' "
                f"if the difference is harmless.\n"
                + _diff(self.cassette.messages_of(found), request.messages)
            )
        return found

    def _next_by_content(self, digest: str) -> CassetteEntry | None:
        with self._lock:
            candidates = self._by_content.get(digest, [])
            used = self._used.get(digest, 0)
            if used >= len(candidates):
                return None
            self._used[digest] = used + 1
            return candidates[used]

    def _problem(self, message: str) -> CassetteMismatchError:
        error = CassetteMismatchError(message)
        with self._lock:
            self.problems.append(error)
        return error


def _key(key: Sequence[Any]) -> str:
    return json.dumps(list(key))


def _who(key: tuple[int, Any, int | None, int]) -> str:
    run, agent, step, call = key
    who = "a call outside any agent" if agent is None else f"agent {agent!r}"
    return f"{who}, step {step}, call {call}" + (f" (model run {run})" if run > 1 else "")


def _render(messages: Sequence[Any]) -> list[str]:
    lines: list[str] = []
    for message in messages:
        plain = json.loads(canonical(message))
        role = plain.pop("role", "?") if isinstance(plain, dict) else "?"
        content = plain.pop("content", "") if isinstance(plain, dict) else plain
        text = content if isinstance(content, str) else json.dumps(content, sort_keys=True)
        lines.extend(f"{role}: {line}" for line in text.splitlines() or [""])
        if plain:
            lines.append(f"{role} (more): {json.dumps(plain, sort_keys=True)}")
    return lines


def _diff(recorded: Sequence[Any], sent: Sequence[Any]) -> str:
    lines = list(
        difflib.unified_diff(
            _render(recorded), _render(sent), "recorded messages", "sent messages", n=1, lineterm=""
        )
    )
    if not lines:
        return "(the messages are equal: the tools, response format or temperature changed)"
    if len(lines) > _DIFF_LINES:
        lines = [*lines[:_DIFF_LINES], f"... ({len(lines) - _DIFF_LINES} more diff lines)"]
    return "\n".join(lines)


def _pick_test(cassette: Cassette, test_id: str | None) -> str:
    tests = cassette.tests()
    if test_id is not None:
        if test_id in tests or not tests:
            return test_id
        if len(tests) == 1 and tests[0] == "":
            return ""
        raise ValueError(
            f"mesa_llm_testing: cassette {cassette.path} has no calls of test {test_id!r}; "
            f"it holds: {', '.join(map(repr, tests))}"
        )
    if len(tests) > 1:
        raise ValueError(
            f"mesa_llm_testing: cassette {cassette.path} holds the calls of several tests; "
            f"pass test_id=, one of: {', '.join(map(repr, tests))}"
        )
    return tests[0] if tests else ""


def _reply_of(body: dict[str, Any]) -> FakeReply:
    """The reply a recorded ``chat.completion`` body holds (content, tool calls, finish)."""
    choices = body.get("choices") or [{}]
    message = choices[0].get("message") or {}
    calls = tuple(
        FakeToolCall(
            (tc.get("function") or {}).get("name") or "",
            (tc.get("function") or {}).get("arguments") or "",
            tc.get("id"),
        )
        for tc in message.get("tool_calls") or ()
    )
    return FakeReply(message.get("content"), calls, choices[0].get("finish_reason"))
