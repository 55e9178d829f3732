"""The provider layer raises what litellm raises for the same fault over real HTTP.

The fake's promise is that it behaves like the real provider. For each error fault the
HTTP layer (``FakeLLM.http()``) answers with real HTTP and litellm's own exception
mapping decides what the caller sees; the provider layer (``FakeLLM.activate()``) builds
its exception itself. Both must agree on class, ``status_code``, ``llm_provider`` and
message, sync and async, so traces from either layer name the same exceptions.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from typing import Any

import mesa
import pytest

from mesa_llm._litellm import import_litellm
from mesa_llm.module_llm import RetryPolicy
from mesa_llm.parallel_stepping import acting_as
from mesa_llm_testing import FakeLLM, FaultKind, FaultPlan

litellm = import_litellm()

MESSAGES: Any = [{"role": "user", "content": "Your move?"}]
CLIENT_TIMEOUT = 0.5  # clients give up on a stalled (TIMEOUT) answer after this
#: Calls per kind: enough for every SERVER_ERROR variant (500, 502, 503, 504) at this seed.
CALLS = {"server_error": 4, "timeout": 1}
# litellm's async path appends the measured time to a timeout's message; it is not a fault.
TIMING = re.compile(r" - timeout value=[\d.]+, time taken=[\d.]+ seconds$")
ERROR_KINDS = [
    FaultKind.RATE_LIMIT,
    FaultKind.TIMEOUT,
    FaultKind.SERVER_ERROR,
    FaultKind.CONNECTION_ERROR,
]


def call(mode: str, **kwargs: Any) -> Any:
    kwargs = {
        "model": "openai/gpt-4o-mini",
        "messages": MESSAGES,
        "num_retries": 0,
        "max_retries": 0,
        "timeout": CLIENT_TIMEOUT,
        **kwargs,
    }
    if mode == "sync":
        return litellm.completion(**kwargs)
    return asyncio.run(litellm.acompletion(**kwargs))


def seen(exc: Exception) -> tuple[str, Any, Any, str]:
    return type(exc).__name__, exc.status_code, exc.llm_provider, TIMING.sub("", str(exc))  # type: ignore[attr-defined]


def failures(kind: FaultKind, mode: str, layer: str) -> list[tuple[str, Any, Any, str]]:
    """What each call raises through ``layer`` when every call gets a ``kind`` fault.

    Each call is one agent's call in its own step: both layers key the fault (and its
    variant, e.g. 500 or 504) on that identity, so call i gets the same fault in both.
    """
    model = mesa.Model(seed=0)
    agent = mesa.Agent(model)
    fake = FakeLLM(faults=FaultPlan(1.0, kinds=kind.value, seed=2), return_value="unused")
    found = []
    with contextlib.ExitStack() as stack:
        if layer == "http":  # litellm's own OpenAI provider, over a real socket
            stack.enter_context(fake.activate(intercept_all=False))  # identity headers
            where = {"api_base": stack.enter_context(fake.http(stall=3.0)), "api_key": "sk-fake"}
        else:
            stack.enter_context(fake.activate())
            where = {}
        for step in range(CALLS.get(kind.value, 3)):
            model.steps = step
            with acting_as(agent), pytest.raises(Exception) as info:
                call(mode, **where)
            assert RetryPolicy().is_retryable(info.value)  # every error fault is transient
            found.append(seen(info.value))
    assert [(c.step, c.fault, c.layer) for c in fake.calls] == [
        (step, kind, layer) for step in range(len(found))
    ]
    return found


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("kind", ERROR_KINDS, ids=lambda k: k.value)
def test_provider_and_http_raise_the_same_exception_for_every_fault(
    kind: FaultKind, mode: str
) -> None:
    over_http = failures(kind, mode, "http")
    in_process = failures(kind, mode, "provider")
    assert in_process == over_http
    if kind is FaultKind.SERVER_ERROR:  # every variant was compared
        assert {status for _, status, _, _ in over_http} == {500, 502, 503, 504}
