"""The fast transport: litellm calls answered at litellm's entry point, without its pipeline.

While a ``FakeLLM`` is active with ``pipeline="fast"`` (the default), the wrappers
``_provider`` installs over ``litellm.completion`` / ``acompletion`` hand the calls
that are the fake's here instead of to litellm. What comes back is what the
``mesa-fake`` provider gives through litellm's request pipeline (``pipeline="litellm"``),
built directly: a real ``litellm.ModelResponse`` with ``usage`` and ``_hidden_params``
filled as litellm fills them, and the same litellm exceptions (the core raises them,
litellm passes them through unchanged). ``tests/test_fastpath.py`` compares the two
paths for every fault kind and reply shape.

Calls this path leaves to the pipeline (see :func:`handles`): ``stream=True`` (litellm's
own ``CustomStreamWrapper``), ``mock_response`` (litellm answers those itself), and
messages that are not a list (the pipeline's own errors).

In neither path does the fake enforce the client's ``timeout`` against its latency
model (a slow call still answers: inject a ``timeout`` fault, or go through
``FakeLLM.http()`` where the client's own timeout applies), nor answer ``n > 1``
with several choices (one choice, as the ``mesa-fake`` provider gives).
Known difference: the pipeline rejects a few OpenAI parameters for the ``mesa-fake``
provider (``reasoning_effort``, ``thinking``, ``verbosity``: ``UnsupportedParamsError``);
the fast path records them in ``request.params`` like any other.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Mapping
from typing import Any, Final

from mesa_llm_testing._calls import FakeRequest
from mesa_llm_testing._fake import FakeCore
from mesa_llm_testing._limits import Slot
from mesa_llm_testing._responses import FakeReply

__all__ = ["PIPELINES", "acomplete", "check_pipeline", "complete", "handles", "model_response"]

#: The ways ``FakeLLM.activate(pipeline=...)`` answers litellm calls.
PIPELINES: Final = ("fast", "litellm")
PROVIDER: Final = "mesa-fake"

#: Keyword arguments that are not request parameters: the request itself, litellm's own
#: options (also ``litellm.types.utils.all_litellm_params``, read once), and those the
#: fake interprets itself. ``user`` is dropped by litellm for custom providers.
_NOT_PARAMS: Final = frozenset(
    {
        "model",
        "messages",
        "tools",
        "tool_choice",
        "response_format",
        "max_retries",
        "stream",
        "extra_headers",
        "user",
        "timeout",
        "base_url",
        "_skip_mcp_handler",
    }
)
_litellm_params: frozenset[str] | None = None
_object_setattr: Final = object.__setattr__
#: Version 4 and the RFC 4122 variant in a 128-bit value (as ``uuid.UUID(version=4)`` sets them).
_UUID4_KEEP: Final = ~((0xF000 << 64) | (0xC000 << 48)) & ((1 << 128) - 1)
_UUID4_SET: Final = (4 << 76) | (0x8000 << 48)
#: Call ids need only be unique, as uuid4's are: a private stream seeded from os.urandom
#: (a system call less per call), reseeded in forked children; never the user's ``random``.
_call_ids: Final = random.Random()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_call_ids.seed)


def check_pipeline(pipeline: str) -> str:
    """``pipeline`` if it is one of :data:`PIPELINES`, else a ValueError naming them."""
    if pipeline not in PIPELINES:
        valid = ", ".join(repr(p) for p in PIPELINES)
        raise ValueError(
            f"mesa_llm_testing: FakeLLM.activate(pipeline={pipeline!r}) is not a pipeline; "
            f"valid: {valid} (fast: answered at litellm's entry point; litellm: through "
            f"litellm's full request pipeline)"
        )
    return pipeline


def handles(kwargs: Mapping[str, Any]) -> bool:
    """Whether the fast path answers a routed call.

    Not streams, ``mock_response``, nor messages that are not a list (litellm's pipeline
    raises its own errors for those, so they go there).
    """
    return (
        not kwargs.get("stream")
        and "mock_response" not in kwargs
        and isinstance(kwargs.get("messages", []), list | tuple)
    )


def complete(fake: FakeCore, asked: str, kwargs: dict[str, Any]) -> Any:
    """Answer a routed ``litellm.completion`` call (``kwargs`` as rewritten by the router)."""
    start = time.perf_counter()
    slot = _admit(fake, asked, kwargs)
    try:
        request = _request(fake, asked, kwargs)
        if delay := fake.wait_seconds(request):
            time.sleep(delay)
        return _reply(fake, request, fake.answer(request), kwargs, start)
    finally:
        if slot is not None:
            slot.release()


async def acomplete(fake: FakeCore, asked: str, kwargs: dict[str, Any]) -> Any:
    """Answer a routed ``litellm.acompletion`` call; ``latency`` is awaited."""
    start = time.perf_counter()
    slot = _admit(fake, asked, kwargs)
    try:
        request = _request(fake, asked, kwargs)
        if delay := fake.wait_seconds(request):
            await asyncio.sleep(delay)
        return _reply(fake, request, fake.answer(request), kwargs, start)
    finally:
        if slot is not None:
            slot.release()


def model_response(
    fake: FakeCore,
    request: FakeRequest,
    reply: FakeReply,
    model: str,
    *,
    with_usage: bool,
    hidden_params: dict[str, Any] | None = None,
) -> Any:
    """The ``ModelResponse`` of ``reply`` (``model`` as litellm names it: no provider prefix).

    ``hidden_params``: its ``_hidden_params`` as given; None: those of a new litellm
    response, with a cost of 0.
    """
    response_id = "chatcmpl-" + fake.rng(request, "response-id").hex(29)
    response = reply.to_model_response(
        model=model,
        response_id=response_id,
        messages=request.messages,
        with_usage=with_usage,
        hidden_params=hidden_params,
    )
    if hidden_params is None:
        # A fake costs nothing; saying so spares litellm computing a cost for an unknown model.
        hidden = getattr(response, "_hidden_params", None)
        if isinstance(hidden, dict) and hidden.get("response_cost") is None:
            hidden["response_cost"] = 0.0
    return response


def attach_usage(response: Any, reply: FakeReply, messages: Any) -> Any:
    """Give a ``ModelResponse`` without ``usage`` the fake's token counts (as litellm does)."""
    if getattr(response, "usage", None):
        return response
    from litellm import Usage

    response.usage = Usage(**reply.usage(messages or []))  # type: ignore[arg-type]
    return response


# --------------------------------------------------------------------------- internals


def _admit(fake: FakeCore, asked: str, kwargs: dict[str, Any]) -> Slot | None:
    """The fake's limits checked before the call takes its index (None: no limits)."""
    if fake.load is None:
        return None
    return fake.admit(asked, kwargs.get("messages"), kwargs.get("tools"), kwargs, "provider")


def _request(fake: FakeCore, asked: str, kwargs: dict[str, Any]) -> FakeRequest:
    """The fake's request, with the parameters litellm's pipeline would hand the provider."""
    skip = _not_params()
    params = {k: v for k, v in kwargs.items() if v is not None and k not in skip}
    if "max_completion_tokens" in params:  # litellm maps it for OpenAI-style providers
        params.setdefault("max_tokens", params.pop("max_completion_tokens"))
    response_format = kwargs.get("response_format")
    if isinstance(response_format, type):  # a pydantic model class, as litellm converts it
        from litellm.utils import type_to_response_format_param

        response_format = type_to_response_format_param(response_format)
    return fake.make_request(
        asked,
        kwargs.get("messages") or [],
        kwargs.get("tools"),
        kwargs.get("tool_choice"),
        response_format,
        params,
        "provider",
    )


def _reply(
    fake: FakeCore, request: FakeRequest, reply: FakeReply, kwargs: dict[str, Any], start: float
) -> Any:
    routed = str(kwargs["model"])
    # What litellm's post-processing leaves in _hidden_params for the mesa-fake provider.
    hidden: dict[str, Any] = {
        "response_cost": 0.0,
        "_response_ms": 0.0,  # set once the reply is built
        "callback_duration_ms": 0.0,
        "litellm_call_id": kwargs.get("litellm_call_id") or uuid4_text(),
        "api_base": kwargs.get("api_base") or kwargs.get("base_url"),
        "model_id": None,
        "additional_headers": {},
        "litellm_model_name": routed,
        "provider_response_model": None,  # set once the reply is built
    }
    model = routed.removeprefix(PROVIDER + "/")
    response = model_response(fake, request, reply, model, with_usage=True, hidden_params=hidden)
    if reply.raw is not None:
        attach_usage(response, reply, request.messages)
    hidden["provider_response_model"] = response.model
    elapsed_ms = hidden["_response_ms"] = (time.perf_counter() - start) * 1e3
    # Where pydantic's __setattr__ puts a name that is neither a field nor a private attribute.
    _object_setattr(response, "_response_ms", elapsed_ms)
    return response


def uuid4_text() -> str:
    """``str(uuid.uuid4())`` (litellm's call ids), without building a ``UUID``."""
    value = _call_ids.getrandbits(128) & _UUID4_KEEP | _UUID4_SET
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def _not_params() -> frozenset[str]:
    global _litellm_params
    if _litellm_params is None:
        from litellm.types.utils import all_litellm_params

        _litellm_params = _NOT_PARAMS | frozenset(all_litellm_params)
    return _litellm_params
