"""Fault kinds, deterministic fault plans and the record of injected faults.

Whether a call faults, and with which kind, is a pure function of
``(seed, test_id, agent unique_id, model step, call index)`` hashed with
``hashlib.blake2b``: the same calls fault in asyncio, threading and sequential
runs, on any machine, whatever order the calls complete in.

The call index counts an agent's calls within one step of one *model run*. A
model run is one Mesa model object: each model built in a test counts its calls
from 0 again, so two models built one after the other with the same seed (say one
stepped in asyncio mode, then one in threading mode) see the same faults on the
same calls. Only the counters of a model's current and previous step are kept;
older ones are dropped, and a model's counters go with the model.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import weakref
from collections.abc import Iterable, Mapping
from typing import Any, Final

from mesa_llm_testing._bursts import (
    Burst,
    Schedule,
    check_no_schedule,
    rate_and_kinds,
    schedule_name,
)
from mesa_llm_testing._fault_kinds import DEFAULT_KINDS, TRANSIENT_KINDS, FaultKind, valid_kinds
from mesa_llm_testing._fault_records import LAYERS, FaultColumns, InjectedFault, InjectedFaults

__all__ = [
    "DEFAULT_KINDS",
    "LAYERS",
    "TRANSIENT_KINDS",
    "FaultKind",
    "FaultPlan",
    "InjectedFault",
    "InjectedFaults",
]

_TRACE_VERSION: Final = 1
_TWO_64: Final = float(1 << 64)


def _check_rate(rate: Any) -> float:
    if isinstance(rate, bool) or not isinstance(rate, int | float):
        raise ValueError(
            f"mesa_llm_testing: fault rate must be a number from 0 to 1 "
            f"(0 = no faults, 1 = every call faults); got {rate!r}"
        )
    value = float(rate)
    if not (0.0 <= value <= 1.0) or math.isnan(value):
        raise ValueError(
            f"mesa_llm_testing: fault rate must be from 0 to 1 "
            f"(0 = no faults, 1 = every call faults); got {rate!r}"
        )
    return value


class _RunCounters:
    """Call counters per model run, agent and step; only recent steps are kept.

    A model run is keyed on the model object (weakly, so a finished model's counters
    go with it); objects that cannot be weakly referenced, and calls outside any
    model, share one run keyed on None.
    """

    __slots__ = ("_by_model", "_shared")

    def __init__(self) -> None:
        self._by_model: weakref.WeakKeyDictionary[Any, dict[Any, dict[Any, int]]] = (
            weakref.WeakKeyDictionary()
        )
        self._shared: dict[Any, dict[Any, int]] = {}

    def next(self, model: Any, agent: Any, step: Any) -> int:
        steps = self._steps_of(model)
        counts = steps.get(step)
        if counts is None:
            counts = steps[step] = {}
            if isinstance(step, int):  # a new step: drop steps that finished before the last
                for old in [s for s in steps if isinstance(s, int) and s < step - 1]:
                    del steps[old]
        index = counts.get(agent, 0)
        counts[agent] = index + 1
        return index

    def _steps_of(self, model: Any) -> dict[Any, dict[Any, int]]:
        if model is None:
            return self._shared
        try:
            steps = self._by_model.get(model)
            if steps is None:
                steps = self._by_model[model] = {}
        except TypeError:  # not weakly referenceable, or unhashable
            return self._shared
        return steps

    def __len__(self) -> int:
        """How many (step, agent) counters are held, for memory checks."""
        runs = [*self._by_model.values(), self._shared]
        return sum(len(counts) for steps in runs for counts in steps.values())


def _key_part(value: Any) -> str:
    # Stable across processes: ints, strs and None render the same everywhere.
    return "None" if value is None else str(value)


class FaultPlan:
    """Which LLM calls fault, decided deterministically, plus the record of faults injected.

    ``rate`` is the probability (0 to 1) that a call faults; the kind is drawn from
    ``kinds`` (default: :data:`DEFAULT_KINDS`, the original six; see
    :class:`FaultKind` for the others) by the same hash. Scripted faults added with
    :meth:`at` take precedence over the rate. Counters and records are thread-safe.
    """

    def __init__(
        self,
        rate: float = 0.0,
        *,
        kinds: Iterable[FaultKind | str] | str | None = None,
        seed: int = 0,
        test_id: str = "",
        bursts: Iterable[Burst] = (),
        schedule: Schedule | None = None,
    ) -> None:
        self.rate = _check_rate(rate)
        self.bursts = tuple(bursts)
        if not all(isinstance(b, Burst) for b in self.bursts):
            raise ValueError(
                f"mesa_llm_testing: FaultPlan bursts must be Burst(...) objects; got {bursts!r}"
            )
        if schedule is not None and not callable(schedule):
            raise ValueError(
                f"mesa_llm_testing: FaultPlan schedule must be a callable of the model step "
                f"returning None, a rate, or (rate, kinds); got {schedule!r}"
            )
        self.schedule = schedule
        self.kinds = FaultKind.parse_many(kinds)
        if not self.kinds:
            raise ValueError(
                f"mesa_llm_testing: FaultPlan kinds must name at least one fault kind; "
                f"valid kinds: {valid_kinds()}"
            )
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"mesa_llm_testing: FaultPlan seed must be an integer; got {seed!r}")
        self.seed = seed
        self.test_id = str(test_id)
        self._script: dict[tuple[str, str, int], tuple[Any, int | None, int, FaultKind]] = {}
        self._runs = _RunCounters()
        self._injected = FaultColumns()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        kinds = ",".join(k.value for k in self.kinds)
        extra = f"bursts={len(self.bursts)}, " if self.bursts else ""
        extra += "schedule=..., " if self.schedule is not None else ""
        return (
            f"FaultPlan(rate={self.rate:g}, kinds={kinds!r}, seed={self.seed}, {extra}"
            f"test_id={self.test_id!r}, scripted={len(self._script)}, "
            f"injected={len(self._injected)})"
        )

    # ------------------------------------------------------------------ deciding

    def at(
        self, *, agent: Any, step: int | None, call: int = 0, kind: FaultKind | str
    ) -> FaultPlan:
        """Script a fault for ``agent``'s ``call``-th LLM call in model step ``step``; chainable.

        ``agent=None`` / ``step=None`` match calls made outside any agent's step.
        """
        if isinstance(call, bool) or not isinstance(call, int) or call < 0:
            raise ValueError(
                f"mesa_llm_testing: FaultPlan.at(call=...) must be an integer >= 0; got {call!r}"
            )
        parsed = FaultKind.parse(kind)
        key = (_key_part(agent), _key_part(step), call)
        with self._lock:
            self._script[key] = (agent, step, call, parsed)
        return self

    @property
    def scripted(self) -> list[InjectedFault]:
        """The faults added with :meth:`at`, as records (layer "provider", not yet injected)."""
        with self._lock:
            items = list(self._script.values())
        return [InjectedFault(a, s, c, k, "provider", self.test_id) for (a, s, c, k) in items]

    def decide(self, *, agent: Any, step: int | None, call: int) -> FaultKind | None:
        """The fault for this call, or None: a pure function of the plan and the call's identity."""
        if self._script:
            hit = self._script.get((_key_part(agent), _key_part(step), call))
            if hit is not None:
                return hit[3]
        rate, kinds = self.rate, self.kinds
        if self.bursts or self.schedule is not None:
            rate, kinds = rate_and_kinds(step, rate, kinds, self.bursts, self.schedule)
        if rate <= 0.0:
            return None
        digest = self._digest(agent, step, call, b"fault")
        if int.from_bytes(digest[:8], "big") / _TWO_64 >= rate:
            return None
        return kinds[int.from_bytes(digest[8:], "big") % len(kinds)]

    def variant(self, *, agent: Any, step: int | None, call: int, choices: int) -> int:
        """A deterministic index in ``range(choices)`` for shaping a fault (e.g. 500 vs 503)."""
        digest = self._digest(agent, step, call, b"variant")
        return int.from_bytes(digest[:8], "big") % choices

    def _digest(self, agent: Any, step: Any, call: int, purpose: bytes) -> bytes:
        key = "\x1f".join(
            (str(self.seed), self.test_id, _key_part(agent), _key_part(step), str(call))
        )
        return hashlib.blake2b(key.encode(), digest_size=16, person=purpose).digest()

    # ------------------------------------------------------------------ counting and recording

    def next_call(self, *, agent: Any, step: int | None, model: Any = None) -> int:
        """Return the next call index (0, 1, ...) of ``agent`` in ``step`` of this model run.

        ``model`` is the Mesa model the agent belongs to (None outside any model):
        every model object counts its calls from 0, so each model built with the
        same seed gets the same faults. Thread-safe.
        """
        with self._lock:
            return self._runs.next(model, agent, step)

    def record(self, fault: InjectedFault) -> None:
        """Add ``fault`` to :attr:`injected`; thread-safe."""
        self._injected.append(fault)

    @property
    def injected(self) -> InjectedFaults:
        """The faults injected so far, in record order: a read-only snapshot sequence.

        Records are kept column by column (about 18 bytes a fault) and built when
        read, so ``len(plan.injected)`` and ``plan.injected[i]`` cost O(1) and
        ``plan.injected[n:]`` only the records after ``n``. It compares equal to a
        list of the same records; sort with ``InjectedFault.sort_key``.
        """
        with self._lock:
            return InjectedFaults(self._injected)

    def counts_by_kind(self) -> dict[str, int]:
        """How many faults of each kind were injected, keyed by kind value, in kind order."""
        counts = self.injected.counts_by_kind()
        return {kind.value: counts[kind] for kind in FaultKind if kind in counts}

    def reset(self) -> None:
        """Clear call counters and records; keep rate, kinds, seed, test id and scripted faults."""
        with self._lock:
            self._runs = _RunCounters()
            self._injected = FaultColumns()  # snapshots taken before keep their records

    # ------------------------------------------------------------------ JSON

    def to_json(self, *, indent: int | None = None) -> str:
        """Serialise the settings, scripted faults and injected faults."""
        data = {
            "version": _TRACE_VERSION,
            "rate": self.rate,
            "kinds": [k.value for k in self.kinds],
            "seed": self.seed,
            "test_id": self.test_id,
            "scripted": [f.to_dict() for f in self.scripted],
            "injected": [f.to_dict() for f in self.injected],
        }
        if self.bursts:
            data["bursts"] = [b.to_dict() for b in self.bursts]
        if self.schedule is not None:  # code: named, not serialised (see from_json)
            data["schedule"] = schedule_name(self.schedule)
        return json.dumps(data, indent=indent)

    @classmethod
    def from_json(cls, text: str, *, test_id: str | None = None) -> FaultPlan:
        """A plan replaying exactly the faults recorded in ``text`` (rate 0, each one scripted).

        ``text`` is :meth:`to_json` output or a JSON list of :meth:`InjectedFault.to_dict`
        records. With ``test_id``, only that test's faults are replayed. A plan that has
        recorded nothing yet comes back as itself (rate, kinds, seed, scripted faults).
        """
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"mesa_llm_testing: cannot read fault plan JSON: {exc}") from None
        if isinstance(data, list):
            settings: Mapping[str, Any] = {}
            records = data
        elif isinstance(data, dict):
            settings = data
            records = data.get("injected", [])
        else:
            raise ValueError(
                "mesa_llm_testing: fault plan JSON must be an object from FaultPlan.to_json() "
                f"or a list of injected faults; got {type(data).__name__}"
            )
        if isinstance(data, dict) and not records:
            # Nothing recorded yet: rebuild the plan itself. Its decisions are a pure
            # function of these settings, so it injects the same faults on the same calls.
            check_no_schedule(data)
            plan = cls(
                float(data.get("rate", 0.0)),
                kinds=data.get("kinds"),
                seed=int(data.get("seed", 0)),
                test_id=test_id if test_id is not None else str(data.get("test_id", "")),
                bursts=[Burst.from_dict(b) for b in data.get("bursts") or ()],
            )
            for item in data.get("scripted", []):
                plan.at(
                    agent=item.get("agent"),
                    step=item.get("step"),
                    call=int(item.get("call", 0)),
                    kind=item["kind"],
                )
            return plan
        faults = [InjectedFault.from_dict(r) for r in records]
        if test_id is not None:
            faults = [f for f in faults if f.test_id == test_id]
        return cls.replay(
            faults,
            kinds=settings.get("kinds"),
            seed=int(settings.get("seed", 0)),
            test_id=test_id if test_id is not None else str(settings.get("test_id", "")),
        )

    @classmethod
    def replay(
        cls,
        faults: Iterable[InjectedFault],
        *,
        kinds: Iterable[FaultKind | str] | str | None = None,
        seed: int = 0,
        test_id: str = "",
    ) -> FaultPlan:
        """A plan (rate 0) that injects exactly ``faults`` at the same (agent, step, call)."""
        plan = cls(0.0, kinds=kinds or None, seed=seed, test_id=test_id)
        for f in faults:
            plan.at(agent=f.agent, step=f.step, call=f.call, kind=f.kind)
        return plan
