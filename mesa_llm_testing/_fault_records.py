"""The record of injected faults: ``InjectedFault``, stored column by column.

A long run under faults injects many faults (about 44,000 over 1,000 agents x
500 steps at rate 0.1). One ``InjectedFault`` object each would cost some 100
bytes; :class:`FaultColumns` keeps each field in a compact array instead (about
18 bytes a fault, agents, steps and test ids interned), and
:class:`InjectedFaults` is the read-only sequence ``FaultPlan.injected`` returns:
records are built only when read, and its ``len`` and indexing cost O(1).
"""

from __future__ import annotations

import threading
from array import array
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, overload

from mesa_llm_testing._fault_kinds import FaultKind

__all__ = ["LAYERS", "FaultColumns", "InjectedFault", "InjectedFaults"]

#: Where a fault can be injected: the litellm custom provider or the HTTP endpoint.
LAYERS: Final = ("provider", "http")

_KINDS: Final = tuple(FaultKind)
_KIND_CODE: Final = {kind: code for code, kind in enumerate(_KINDS)}


@dataclass(frozen=True, slots=True)
class InjectedFault:
    """One fault the harness injected: who called, when, which kind, at which layer."""

    agent: Any
    step: int | None
    call: int
    kind: FaultKind
    layer: str
    test_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``kind`` as its string value)."""
        return {
            "agent": self.agent,
            "step": self.step,
            "call": self.call,
            "kind": self.kind.value,
            "layer": self.layer,
            "test_id": self.test_id,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InjectedFault:
        """Rebuild a fault from :meth:`to_dict` output; ValueError on a bad kind or layer."""
        layer = data.get("layer", "provider")
        if layer not in LAYERS:
            raise ValueError(
                f"mesa_llm_testing: unknown fault layer {layer!r}; "
                f"valid layers: {', '.join(LAYERS)}"
            )
        try:
            call = int(data["call"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(
                f"mesa_llm_testing: an injected fault needs an integer 'call'; got {dict(data)!r}"
            ) from None
        return cls(
            agent=data.get("agent"),
            step=data.get("step"),
            call=call,
            kind=FaultKind.parse(data["kind"]),
            layer=layer,
            test_id=str(data.get("test_id", "")),
        )

    def sort_key(self) -> tuple[str, str, str, int, str]:
        """A total order for comparing records made in different orders."""
        return (self.test_id, repr(self.agent), repr(self.step), self.call, self.kind.value)


class _Interned:
    """Distinct values, each stored once, addressed by a small integer code."""

    __slots__ = ("_codes", "values")

    def __init__(self) -> None:
        self.values: list[Any] = []
        self._codes: dict[tuple[type, Any], int] = {}

    def code(self, value: Any) -> int:
        key = (type(value), value)  # the type too: 1, 1.0 and True stay apart
        try:
            found = self._codes.get(key)
        except TypeError:  # an unhashable agent id: stored as it is, once per fault
            self.values.append(value)
            return len(self.values) - 1
        if found is None:
            found = self._codes[key] = len(self.values)
            self.values.append(value)
        return found


class FaultColumns:
    """Injected faults, one compact array per field; append-only and thread-safe."""

    __slots__ = ("_agents", "_calls", "_kinds", "_layers", "_lock", "_steps", "_tests", "_values")

    def __init__(self) -> None:
        self._values = {"agent": _Interned(), "step": _Interned(), "test_id": _Interned()}
        self._agents = array("L")
        self._steps = array("L")
        self._tests = array("L")
        self._calls = array("Q")
        self._kinds = array("B")
        self._layers = array("B")
        self._lock = threading.Lock()

    def append(self, fault: InjectedFault) -> None:
        """Record ``fault``."""
        values = self._values
        with self._lock:
            self._agents.append(values["agent"].code(fault.agent))
            self._steps.append(values["step"].code(fault.step))
            self._tests.append(values["test_id"].code(fault.test_id))
            self._calls.append(fault.call)
            self._kinds.append(_KIND_CODE[fault.kind])
            self._layers.append(LAYERS.index(fault.layer))

    def __len__(self) -> int:
        return len(self._calls)

    def get(self, index: int) -> InjectedFault:
        """The record at ``index`` (0 <= index < len), built now."""
        values = self._values
        with self._lock:
            return InjectedFault(
                values["agent"].values[self._agents[index]],
                values["step"].values[self._steps[index]],
                self._calls[index],
                _KINDS[self._kinds[index]],
                LAYERS[self._layers[index]],
                values["test_id"].values[self._tests[index]],
            )

    def kind_codes(self, stop: int) -> bytes:
        """The kinds of the first ``stop`` records, as codes into ``FaultKind`` order."""
        with self._lock:
            return self._kinds[:stop].tobytes()


class InjectedFaults(Sequence[InjectedFault]):
    """The faults injected up to the moment it was taken, in record order; read-only.

    What ``FaultPlan.injected`` returns: a snapshot (faults injected later are not
    in it), whose records are built when read. Compares equal to any sequence
    (``list``, ``tuple`` or another snapshot) of the same records; ``list(...)``
    or ``sorted(..., key=InjectedFault.sort_key)`` for a list.
    """

    __slots__ = ("_columns", "_stop")

    def __init__(self, columns: FaultColumns, stop: int | None = None) -> None:
        self._columns = columns
        self._stop = len(columns) if stop is None else stop

    def __len__(self) -> int:
        return self._stop

    @overload
    def __getitem__(self, index: int) -> InjectedFault: ...

    @overload
    def __getitem__(self, index: slice) -> list[InjectedFault]: ...

    def __getitem__(self, index: int | slice) -> InjectedFault | list[InjectedFault]:
        if isinstance(index, slice):
            return [self._columns.get(i) for i in range(*index.indices(self._stop))]
        if index < 0:
            index += self._stop
        if not 0 <= index < self._stop:
            raise IndexError("InjectedFaults index out of range")
        return self._columns.get(index)

    def __iter__(self) -> Iterator[InjectedFault]:
        return (self._columns.get(i) for i in range(self._stop))

    def counts_by_kind(self) -> dict[FaultKind, int]:
        """How many faults of each kind, without building the records."""
        codes = self._columns.kind_codes(self._stop)
        return {kind: n for code, kind in enumerate(_KINDS) if (n := codes.count(code))}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str | bytes):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(list(self))

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickles and copies hold the records, not the plan's live columns and lock.
        return (_snapshot_of, (list(self),))


def _snapshot_of(records: list[InjectedFault]) -> InjectedFaults:
    columns = FaultColumns()
    for fault in records:
        columns.append(fault)
    return InjectedFaults(columns)
