"""Cassettes: record real litellm completions keyed by who made them, replay them offline.

A transport: :mod:`._format` (the file), :mod:`._record` (the recorder, through
``_provider``'s litellm wrappers), :mod:`._replay` (the reply source of a replaying
fake), :mod:`._errors` (provider errors as data and back).
"""

from __future__ import annotations

from mesa_llm_testing._cassettes._format import CASSETTE_FORMAT, is_cassette, read_cassette
from mesa_llm_testing._cassettes._record import CassetteRecorder, RecordingError, record_to
from mesa_llm_testing._cassettes._replay import CassetteMismatchError, CassetteReplies

__all__ = [
    "CASSETTE_FORMAT",
    "CassetteMismatchError",
    "CassetteRecorder",
    "CassetteReplies",
    "RecordingError",
    "is_cassette",
    "read_cassette",
    "record_to",
]
