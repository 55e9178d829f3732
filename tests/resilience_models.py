"""Shared by the resilience-policy tests: a Mesa model of LLM agents, a fake clock, errors.

Provider errors are litellm's own exception classes, built as litellm builds them from
an OpenAI-compatible endpoint's answer, and raised by ``FakeLLM(side_effect=...)``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any
from unittest.mock import DEFAULT

import httpx
import mesa

from mesa_llm import LLMAgent, StepReport
from mesa_llm._litellm import import_litellm
from mesa_llm.parallel_stepping import parallel_stepping
from mesa_llm_testing import FakeRequest

litellm = import_litellm()

PRIMARY = "openai/gpt-4o"
FALLBACK = "openai/gpt-4o-mini"

# name -> (HTTP status, litellm class): the answers RetryPolicy must not retry.
NON_RETRYABLE = {
    "bad_request": (400, "BadRequestError"),
    "auth": (401, "AuthenticationError"),
    "permission": (403, "PermissionDeniedError"),
    "not_found": (404, "NotFoundError"),
    "context_window": (400, "ContextWindowExceededError"),
    "content_policy": (400, "ContentPolicyViolationError"),
}


def provider_error(status: int, name: str, model: str = PRIMARY) -> Exception:
    """litellm's exception ``name`` for an HTTP ``status`` answer from OpenAI about ``model``."""
    provider, _, wire_model = model.partition("/")
    request = httpx.Request("POST", "https://api.openai.com/v1/chat/completions")
    message = f"{name}: OpenAIException - status {status} from the fake provider"
    response = httpx.Response(
        status, json={"error": {"message": message, "type": "test"}}, request=request
    )
    return getattr(litellm, name)(
        message=message, llm_provider=provider, model=wire_model, response=response
    )


def outage(request: FakeRequest) -> Any:
    """A provider that is down: every call a 503 or a 500, alternately."""
    if request.call % 2:
        return _raise(provider_error(500, "InternalServerError", request.model))
    return _raise(provider_error(503, "ServiceUnavailableError", request.model))


def _raise(exc: Exception) -> Any:
    raise exc


def per_model(answers: dict[str, Callable[[FakeRequest], Any]]) -> Callable[[FakeRequest], Any]:
    """A side_effect answering per ``request.model``; other models get the seeded reply."""

    def side_effect(request: FakeRequest) -> Any:
        answer = answers.get(request.model)
        return DEFAULT if answer is None else answer(request)

    return side_effect


class FakeClock:
    """Virtual time: ``sleep(d)`` moves the clock to the sleeper's wake-up time at once."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.slept: list[float] = []
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.slept.append(seconds)
            self.now += max(seconds, 0.0)

    def advance(self, seconds: float) -> None:
        self.sleep(seconds)


class SyncAsker(LLMAgent):
    """Calls ``generate`` (sync): stepped in worker threads, or in the caller's thread."""

    def step(self) -> None:
        self.answered_by = _answered_by(self.llm.generate("hello"))


class AsyncAsker(LLMAgent):
    """Calls ``agenerate``: stepped as a task on the event loop."""

    async def astep(self) -> None:
        self.answered_by = _answered_by(await self.llm.agenerate("hello"))


def _answered_by(response: Any) -> str:
    return response._hidden_params["mesa_llm_model"]


class AskModel(mesa.Model):
    """``n`` agents asking the LLM once per step, stepped through ``shuffle_do``."""

    def __init__(self, n: int, mode: str, *, seed: int = 7, **llm_kwargs: Any) -> None:
        super().__init__(seed=seed)
        self.parallel_stepping = True
        self.mode = mode
        agent_class = AsyncAsker if mode == "asyncio" else SyncAsker
        agent_class.create_agents(self, n, llm_model=PRIMARY, llm_kwargs=llm_kwargs)

    def step(self) -> None:
        self.agents.shuffle_do("step")

    def run_step(self) -> StepReport:
        """One model step in this model's mode; its report."""
        with parallel_stepping(self.mode):  # type: ignore[arg-type]
            self.step()
        report = self.last_step_report
        assert report is not None
        return report
