"""Call records of a fake LLM: ``FakeRequest`` (what was asked), ``FakeCall``, ``CallList``."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from mesa_llm_testing._faults import FaultKind
from mesa_llm_testing._responses import FakeReply, RequestShape

_T = TypeVar("_T")

__all__ = ["DEFAULT_KEEP_CALLS", "CallList", "FakeCall", "FakeRequest", "KeptList"]


@dataclass(frozen=True, slots=True)
class FakeRequest:
    """One request to the fake: what was asked, by whom (agent unique_id, step), which call."""

    model: str
    messages: list[Any]
    tools: list[Any] | None
    tool_choice: Any
    response_format: Any
    params: dict[str, Any]
    agent: Any
    step: int | None
    call: int
    layer: str  # "direct" | "provider" | "http"
    agent_object: Any = field(default=None, repr=False, compare=False)
    started: float = field(default=0.0, repr=False, compare=False)  # time.perf_counter()
    #: The latency model's delay for this call (seconds, before ``time_scale``).
    delay: float = field(default=0.0, compare=False)

    @property
    def prompt(self) -> str | None:
        """The text of the last user message, if any."""
        for message in reversed(self.messages):
            role = (
                message.get("role")
                if isinstance(message, Mapping)
                else getattr(message, "role", None)
            )
            if role == "user":
                content = (
                    message.get("content")
                    if isinstance(message, Mapping)
                    else getattr(message, "content", None)
                )
                if isinstance(content, list):  # content parts
                    return " ".join(
                        str(p.get("text", "")) for p in content if isinstance(p, Mapping)
                    )
                return None if content is None else str(content)
        return None

    @property
    def shape(self) -> RequestShape:
        """Which tools and output format the request asks for."""
        return RequestShape.of(self.messages, self.tools, self.tool_choice, self.response_format)


@dataclass(frozen=True, slots=True)
class FakeCall:
    """The record of one call: the request, and the reply or exception it ended in."""

    request: FakeRequest
    response: FakeReply | None
    exception: BaseException | None
    fault: FaultKind | None
    status_code: int | None  # HTTP status sent (200 for replies); None for transport errors
    ended: float = field(default=0.0, repr=False, compare=False)  # time.perf_counter()

    @property
    def agent(self) -> Any:
        """The calling agent's unique_id (None outside any agent's step)."""
        return self.request.agent

    @property
    def step(self) -> int | None:
        """The model step (``agent.model.steps``) of the call."""
        return self.request.step

    @property
    def call(self) -> int:
        """The call's index among its agent's calls in that step."""
        return self.request.call

    @property
    def model(self) -> str:
        """The model string the caller asked for."""
        return self.request.model

    @property
    def messages(self) -> list[Any]:
        """The messages sent."""
        return self.request.messages

    @property
    def tools(self) -> list[Any] | None:
        """The tools offered, if any."""
        return self.request.tools

    @property
    def layer(self) -> str:
        """``"direct"``, ``"provider"``, ``"http"`` (or ``"record"``: a cassette recorder's)."""
        return self.request.layer

    @property
    def generated(self) -> bool:
        """Whether a cassette replay had no recording and the seeded generator answered."""
        return self.response is not None and self.response.generated


#: How many call records a FakeLLM keeps by default (``FakeLLM(keep_calls=...)``).
DEFAULT_KEEP_CALLS: Final = 10_000


class KeptList(list[_T]):
    """A list that holds at most ``keep`` items (None: all), dropping the oldest first.

    So a long run's records stay flat in memory; :attr:`total` counts every
    item ever appended. Appends are thread-safe.
    """

    def __init__(self, keep: int | None = DEFAULT_KEEP_CALLS) -> None:
        super().__init__()
        self.keep = keep
        self.total = 0
        self._append_lock = threading.Lock()

    def append(self, item: _T) -> None:
        """Add ``item``, dropping the oldest beyond ``keep``; thread-safe."""
        with self._append_lock:
            super().append(item)
            self.total += 1
            if self.keep is not None and len(self) > self.keep:
                del self[0]

    def clear(self) -> None:
        """Forget every item and restart :attr:`total`."""
        with self._append_lock:
            super().clear()
            self.total = 0


class CallList(KeptList[FakeCall]):
    """The calls made to a fake, oldest first; ``.last`` is the newest.

    Holds at most ``keep`` records (None: all): the oldest are dropped first, so a
    long run's memory stays flat. :attr:`total` counts every call ever recorded.
    """

    @property
    def last(self) -> FakeCall:
        """The most recent call; IndexError if there was none."""
        if not self:
            raise IndexError("mesa_llm_testing: FakeLLM has not been called yet")
        return self[-1]
