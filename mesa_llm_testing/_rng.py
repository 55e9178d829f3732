"""A tiny deterministic random stream for the fake's replies, and the words it picks from.

A reply is a pure function of its seed material: the stream is SplitMix64 seeded by
``hashlib.blake2b``, never ``random`` or ``hash()``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, Final

__all__ = ["Rng"]

_MASK64: Final = (1 << 64) - 1
_HASHER: Final = hashlib.blake2b(digest_size=8, person=b"mesa-fake-reply")

_SENTENCES: Final = (
    "I will stay where I am and observe my surroundings.",
    "I will move towards the nearest neighbour.",
    "I agree with the proposal.",
    "I decline; the offer does not suit me.",
    "I will share what I know with the others.",
    "Let me wait one more step before deciding.",
    "I will explore the area to the north.",
    "I will trade with the agent next to me.",
    "I need more information before I act.",
    "I will cooperate this round.",
)
_WORDS: Final = (
    "alpha", "bravo", "cedar", "delta", "ember", "falcon", "garnet", "harbor",
    "iris", "juniper", "kestrel", "lumen", "meadow", "nova", "orchid", "pebble",
)  # fmt: skip


class Rng:
    """A tiny deterministic SplitMix64 stream (cheaper to seed than ``random.Random``)."""

    __slots__ = ("_state",)

    def __init__(self, *parts: object) -> None:
        hasher = _HASHER.copy()  # cheaper than a new blake2b with a personalisation
        hasher.update("\x1f".join([str(p) for p in parts]).encode())  # str(None) == "None"
        self._state = int.from_bytes(hasher.digest(), "big")

    def next(self) -> int:
        """The next 64-bit value."""
        self._state = (self._state + 0x9E3779B97F4A7C15) & _MASK64
        z = self._state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        return z ^ (z >> 31)

    def below(self, n: int) -> int:
        """An integer in ``range(n)``."""
        return self.next() % n if n > 0 else 0

    def uniform(self) -> float:
        """A float in ``[0, 1)``."""
        return (self.next() >> 11) / float(1 << 53)

    def choice(self, items: Sequence[Any]) -> Any:
        """One of ``items``."""
        return items[self.below(len(items))]

    def hex(self, length: int) -> str:
        """``length`` hex digits."""
        blocks = -(-length // 16)  # as many 64-bit draws as it takes, none for 0
        return "".join([f"{self.next():016x}" for _ in range(blocks)])[:length]
