"""Long runs' traces in little memory: finished steps of a big ``RunTrace``, packed.

A ``StepTrace`` holds about 0.4 KB per agent (mostly digests of every LLM call),
so a 1,000-agent x 500-step run would hold some 200 MB of trace. Once a run's
trace holds more than :data:`PACK_AFTER` agent-steps, ``ScenarioRun`` packs
each finished step: its per-agent fields (:data:`PER_AGENT`) become one
compressed pickle (about 35 bytes per agent), read back when a field is used.

A packed step is a ``StepTrace``: the same fields, equality, ``to_dict`` and
JSON; only its memory changes. The two packed steps read last are kept
unpacked, so code that loops over one step's fields does not unpack it again.
Packed steps are read-only records: a change made to a field read from one is
not kept.
"""

from __future__ import annotations

import pickle
import threading
import zlib
from collections import OrderedDict
from typing import Any, Final

from mesa_llm_testing._trace import PER_AGENT_FIELDS, StepTrace

__all__ = ["PACK_AFTER", "PER_AGENT", "PackedStep", "pack", "pack_finished_steps"]

#: How many agent-steps a run's trace holds unpacked before its finished steps are packed.
PACK_AFTER: int = 20_000

#: The fields of a step that grow with its number of agents: what packing compresses.
PER_AGENT: Final = PER_AGENT_FIELDS

_RECENT = 2  # unpacked steps kept for repeated reads
_recent: OrderedDict[int, tuple[PackedStep, dict[str, Any]]] = OrderedDict()
_recent_lock = threading.Lock()


class PackedStep(StepTrace):
    """A ``StepTrace`` whose per-agent fields live in one compressed payload.

    Built by :func:`pack`; the payload is unpacked on first use of one of
    :data:`PER_AGENT` (instance attributes it lacks, so ``__getattr__`` runs).
    """

    _payload: bytes

    def __getattr__(self, name: str) -> Any:
        if name in PER_AGENT and "_payload" in self.__dict__:
            return _fields(self)[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _packed_payload(self) -> bytes | None:
        """The compressed per-agent fields (None once rebuilt unpacked, e.g. by ``replace``)."""
        return self.__dict__.get("_payload")


def pack(step: StepTrace, previous: StepTrace | None = None) -> StepTrace:
    """``step`` with its per-agent fields packed (``step`` itself if they cannot be pickled).

    ``previous`` (the step before) lets an unchanged population be stored once.
    """
    if isinstance(step, PackedStep) and step._packed_payload() is not None:
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
    for i in unpacked:
        steps[i] = pack(steps[i], steps[i - 1] if i else None)


class _SameAsPrevious:
    """Marks a population equal to the previous step's (stored there, shared here)."""

    def __reduce__(self) -> str:
        return "_SAME_AS_PREVIOUS"


_SAME_AS_PREVIOUS: Final = _SameAsPrevious()


def _is_packed(step: StepTrace) -> bool:
    return isinstance(step, PackedStep) and step._packed_payload() is not None


def _fields(step: PackedStep) -> dict[str, Any]:
    key = id(step)
    with _recent_lock:
        hit = _recent.get(key)
        if hit is not None and hit[0] is step:
            _recent.move_to_end(key)
            return hit[1]
    fields = pickle.loads(zlib.decompress(step.__dict__["_payload"]))
    if "population" in step.__dict__:
        fields["population"] = step.__dict__["population"]
    with _recent_lock:
        _recent[key] = (step, fields)
        _recent.move_to_end(key)
        while len(_recent) > _RECENT:
            _recent.popitem(last=False)
    return fields
