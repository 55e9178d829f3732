"""Time the garbage collector held the program: not counted as an agent blocking the loop.

A full collection of a large heap (a step of 50,000 agents) pauses the interpreter
for a tenth of a second or more, inside whichever agent's ``send`` allocated last.
``AgentOutcome.blocked`` subtracts the pauses that fell inside a stretch, so that
agent is not reported as blocking the event loop. The callback is installed on the
first asyncio-mode step, not at import.
"""

from __future__ import annotations

import gc
import time
from typing import Any, Final

__all__ = ["PAUSES"]


class _Pauses:
    """A ``gc.callbacks`` entry adding up the seconds spent in collections (``total``).

    Collections never overlap (the interpreter runs one at a time, holding the GIL),
    so one start time serves every thread.
    """

    __slots__ = ("_clock", "_started", "installed", "total")

    def __init__(self) -> None:
        self._clock = time.perf_counter
        self._started = 0.0
        self.total = 0.0
        self.installed = False

    def __call__(self, phase: str, info: Any) -> None:
        if phase == "start":
            self._started = self._clock()
        else:
            self.total += self._clock() - self._started

    def install(self) -> None:
        if not self.installed:
            self.installed = True
            gc.callbacks.append(self)


#: The one pause counter.
PAUSES: Final = _Pauses()
