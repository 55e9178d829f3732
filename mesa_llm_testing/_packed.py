"""Long runs' traces in little memory: finished steps of a big ``RunTrace``, packed.

A ``StepTrace`` holds about 0.4 KB per agent (mostly digests of every LLM call),
so a 1,000-agent x 500-step run would hold some 200 MB of trace. Once a run's
trace holds more than :data:`PACK_AFTER` agent-steps, ``ScenarioRun`` packs
each finished step: its per-agent fields (:data:`PER_AGENT`) become one
compressed pickle (about 50 bytes per agent), read back when a field is used.

Even packed, a long run's trace would grow resident memory by some 50 KB a step
at 1,000 agents (about 6 % over 450 steps). So, with :data:`SPILL` on (the
default), the payloads of a run's packed steps go to one unnamed temporary file
(``tempfile.TemporaryFile``: in ``TMPDIR``, deleted when the run's trace is
garbage-collected, or at once where the OS allows) and memory keeps only their
offsets. Nothing is summarised away: every call digest stays readable, so
diffs, checks and the timeline of old steps are as exact as of new ones. Where
no temporary file can be made or written, payloads stay in memory. Pickling or
copying a trace carries its payloads along.

A packed step is a ``StepTrace``: the same fields, equality, ``to_dict`` and
JSON; only its memory changes. The two packed steps read last are kept
unpacked, so code that loops over one step's fields does not unpack it again.
Packed steps are read-only records: a change made to a field read from one is
not kept.
"""

from __future__ import annotations

import logging
import os
import pickle
import tempfile
import threading
import weakref
import zlib
from collections import OrderedDict
from typing import Any, Final

from mesa_llm_testing._trace import PER_AGENT_FIELDS, StepTrace

__all__ = ["PACK_AFTER", "PER_AGENT", "SPILL", "PackedStep", "pack", "pack_finished_steps"]

logger = logging.getLogger(__name__)

#: How many agent-steps a run's trace holds unpacked before its finished steps are packed.
PACK_AFTER: int = 20_000

#: Whether ``pack_finished_steps`` moves packed payloads to a temporary file
#: (where the OS has positional file I/O, ``os.pread``/``os.pwrite``).
SPILL: bool = hasattr(os, "pread") and hasattr(os, "pwrite")

#: The fields of a step that grow with its number of agents: what packing compresses.
PER_AGENT: Final = PER_AGENT_FIELDS

_RECENT = 2  # unpacked steps kept for repeated reads
# Weak references: the cache must not keep a dropped trace's step (and the run's
# temporary file, closed when its last packed step goes) alive.
_recent: OrderedDict[int, tuple[weakref.ref[PackedStep], dict[str, Any]]] = OrderedDict()
_recent_lock = threading.Lock()


class PackedStep(StepTrace):
    """A ``StepTrace`` whose per-agent fields live in one compressed payload.

    Built by :func:`pack`; the payload is unpacked on first use of one of
    :data:`PER_AGENT` (instance attributes it lacks, so ``__getattr__`` runs).
    """

    _payload: bytes

    def __getattr__(self, name: str) -> Any:
        if name in PER_AGENT and _is_packed(self):
            return _fields(self)[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _packed_payload(self) -> bytes | None:
        """The compressed per-agent fields (None once rebuilt unpacked, e.g. by ``replace``)."""
        spilled = self.__dict__.get("_spilled")
        if spilled is not None:
            return spilled[0].read(spilled[1], spilled[2])
        return self.__dict__.get("_payload")

    def __getstate__(self) -> dict[str, Any]:
        # Pickles and copies carry the payload itself, not the run's temporary file.
        state = dict(self.__dict__)
        if state.pop("_spilled", None) is not None:
            state["_payload"] = self._packed_payload()
        return state


class _Spill:
    """The packed payloads of one run's trace, in an unnamed temporary file."""

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile(prefix="mesa_llm_trace_")  # noqa: SIM115 (closed below)
        weakref.finalize(self, self._file.close)  # when the run's packed steps are gone
        self._fd = self._file.fileno()
        self._pid = os.getpid()
        self._end = 0
        self._lock = threading.Lock()

    def write(self, payload: bytes) -> tuple[_Spill, int, int] | None:
        """Append ``payload``; where it went, or None (keep it in memory) if it cannot be."""
        if os.getpid() != self._pid:
            return None  # a forked child shares the file: only its parent appends
        with self._lock:
            offset = self._end
            try:
                written = os.pwrite(self._fd, payload, offset)
            except OSError as exc:
                logger.debug("mesa_llm_testing: packed step kept in memory: %s", exc)
                return None
            if written != len(payload):
                return None
            self._end += written
        return self, offset, len(payload)

    def read(self, offset: int, size: int) -> bytes:
        """The payload written at ``offset``."""
        return os.pread(self._fd, size, offset)


def pack(
    step: StepTrace, previous: StepTrace | None = None, spill: _Spill | None = None
) -> StepTrace:
    """``step`` with its per-agent fields packed (``step`` itself if they cannot be pickled).

    ``previous`` (the step before) lets an unchanged population be stored once;
    with ``spill``, the payload goes to that temporary file.
    """
    if _is_packed(step):
        return step
    fields = {name: getattr(step, name) for name in PER_AGENT}
    if fields["phases"] and all(order == fields["start_order"] for _, order in fields["phases"]):
        # The usual single phase repeats the start order: share the list, pickled once.
        fields["phases"] = [(method, fields["start_order"]) for method, _ in fields["phases"]]
    if previous is not None and fields["population"] == getattr(previous, "population", None):
        fields["population"] = _SAME_AS_PREVIOUS
    try:
        payload = zlib.compress(pickle.dumps(fields, protocol=pickle.HIGHEST_PROTOCOL), 6)
    except (pickle.PicklingError, TypeError, AttributeError):
        return step  # an agent id that cannot be pickled: keep this step as it is
    packed = object.__new__(PackedStep)
    light = {k: v for k, v in step.__dict__.items() if k not in PER_AGENT}
    spilled = spill.write(payload) if spill is not None else None
    if spilled is not None:
        packed.__dict__.update(light, _spilled=spilled)
    else:
        packed.__dict__.update(light, _payload=payload)
    if fields["population"] is _SAME_AS_PREVIOUS:
        packed.__dict__["population"] = previous.population  # type: ignore[union-attr]
    return packed


def pack_finished_steps(steps: list[StepTrace]) -> None:
    """Pack every step but the newest once ``steps`` hold over :data:`PACK_AFTER` agent-steps.

    Called after each appended step; the unpacked part stays under the budget
    plus one step, so the cost is one packing per step.
    """
    if len(steps) < 2:
        return
    unpacked = [i for i, s in enumerate(steps[:-1]) if not _is_packed(s)]
    if not unpacked:
        return
    held = sum(len(steps[i].__dict__.get("outcomes", ())) for i in unpacked)
    held += len(steps[-1].outcomes)
    if held <= PACK_AFTER:
        return
    spill = _spill_of(steps) if SPILL else None
    for i in unpacked:
        steps[i] = pack(steps[i], steps[i - 1] if i else None, spill)


def _spill_of(steps: list[StepTrace]) -> _Spill | None:
    """The temporary file of these steps' run (a new one for its first packing), or None."""
    for step in steps:
        spilled = step.__dict__.get("_spilled")
        if spilled is not None:
            return spilled[0]  # in a forked child, its write() declines: memory is used
    try:
        return _Spill()
    except OSError as exc:  # no writable temporary directory: keep payloads in memory
        logger.debug("mesa_llm_testing: packed steps kept in memory: %s", exc)
        return None


class _SameAsPrevious:
    """Marks a population equal to the previous step's (stored there, shared here)."""

    def __reduce__(self) -> str:
        return "_SAME_AS_PREVIOUS"


_SAME_AS_PREVIOUS: Final = _SameAsPrevious()


def _is_packed(step: StepTrace) -> bool:
    return isinstance(step, PackedStep) and (
        "_payload" in step.__dict__ or "_spilled" in step.__dict__
    )


def _fields(step: PackedStep) -> dict[str, Any]:
    key = id(step)
    with _recent_lock:
        hit = _recent.get(key)
        if hit is not None and hit[0]() is step:
            _recent.move_to_end(key)
            return hit[1]
    fields = pickle.loads(zlib.decompress(step._packed_payload() or b""))
    if "population" in step.__dict__:
        fields["population"] = step.__dict__["population"]
    with _recent_lock:
        _recent[key] = (weakref.ref(step), fields)
        _recent.move_to_end(key)
        while len(_recent) > _RECENT:
            _recent.popitem(last=False)
    return fields
