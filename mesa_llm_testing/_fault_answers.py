"""How each fault kind looks on the wire: the status and OpenAI ``error`` body, or the 200 body.

Pure and cheap (no litellm, no server). Both layers use these shapes: the HTTP
server sends them, and the litellm provider builds from them the exception litellm
raises for the same answer (``_provider_errors.fault_exception``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from mesa_llm_testing._fault_kinds import FaultKind
from mesa_llm_testing._responses import SERVER_ERRORS, FakeReply, FakeToolCall, truncate_json

__all__ = [
    "STATUS_KINDS",
    "missing_fields_body",
    "status_answers",
    "truncated_reply",
]

Error = dict[str, Any]


def _error(message: str, kind: str, code: Any, param: str | None = None) -> Error:
    return {"message": message, "type": kind, "param": param, "code": code}


def _bad_request(model: str) -> tuple[tuple[int, Error], ...]:
    return (
        (
            400,
            _error(
                "Invalid type for 'temperature': expected a decimal, but got a string instead.",
                "invalid_request_error",
                "invalid_type",
                "temperature",
            ),
        ),
    )


def _auth(model: str) -> tuple[tuple[int, Error], ...]:
    return (
        (
            401,
            _error(
                "Incorrect API key provided: sk-mesa*****fake. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                "invalid_request_error",
                "invalid_api_key",
            ),
        ),
    )


def _permission(model: str) -> tuple[tuple[int, Error], ...]:
    return (
        (
            403,
            _error(
                "Country, region, or territory not supported",
                "request_forbidden",
                "unsupported_country_region_territory",
            ),
        ),
    )


def _not_found(model: str) -> tuple[tuple[int, Error], ...]:
    return (
        (
            404,
            _error(
                f"The model `{model}` does not exist or you do not have access to it.",
                "invalid_request_error",
                "model_not_found",
            ),
        ),
    )


def _context_window(model: str) -> tuple[tuple[int, Error], ...]:
    return (
        (
            400,
            _error(
                "This model's maximum context length is 128000 tokens. However, your messages "
                "resulted in 131072 tokens. Please reduce the length of the messages.",
                "invalid_request_error",
                "context_length_exceeded",
                "messages",
            ),
        ),
    )


def _content_policy(model: str) -> tuple[tuple[int, Error], ...]:
    return (
        (
            400,
            _error(
                "Invalid prompt: your prompt was flagged as potentially violating our usage "
                "policy. Please try again with a different prompt.",
                "invalid_request_error",
                "content_policy_violation",
            ),
        ),
    )


def _overloaded(model: str) -> tuple[tuple[int, Error], ...]:
    return (
        (529, _error("Overloaded", "overloaded_error", None)),
        (
            503,
            _error(
                "The engine is currently overloaded, please try again later.",
                "server_error",
                None,
            ),
        ),
    )


def _bad_gateway(model: str) -> tuple[tuple[int, Error], ...]:
    return tuple(answer for answer in SERVER_ERRORS if answer[0] in (502, 504))


def _server_error(model: str) -> tuple[tuple[int, Error], ...]:
    return SERVER_ERRORS


_ANSWERS: Final[Mapping[FaultKind, Callable[[str], tuple[tuple[int, Error], ...]]]] = {
    FaultKind.SERVER_ERROR: _server_error,
    FaultKind.BAD_REQUEST: _bad_request,
    FaultKind.AUTH: _auth,
    FaultKind.PERMISSION: _permission,
    FaultKind.NOT_FOUND: _not_found,
    FaultKind.CONTEXT_WINDOW: _context_window,
    FaultKind.CONTENT_POLICY: _content_policy,
    FaultKind.OVERLOADED: _overloaded,
    FaultKind.BAD_GATEWAY: _bad_gateway,
}

#: Kinds answered with an HTTP error status and an OpenAI ``error`` body (not 429: it has
#: its own headers, see ``_responses.rate_limit_headers``).
STATUS_KINDS: Final = frozenset(_ANSWERS)


def status_answers(kind: FaultKind, model: str) -> tuple[tuple[int, Error], ...]:
    """The (status, ``error`` object) shapes of ``kind``; a call gets one, chosen per call."""
    return _ANSWERS[kind](model)


def truncated_reply(reply: FakeReply) -> FakeReply:
    """``reply`` cut off at ``max_tokens``: ``finish_reason="length"`` and the text cut short.

    Text keeps its first two thirds; a tool call keeps only the first, with its
    arguments cut so they no longer parse (as OpenAI sends a call cut mid-arguments).
    """
    if reply.tool_calls:
        first = reply.tool_calls[0]
        cut = FakeToolCall(first.name, truncate_json(first.arguments), first.id)
        return FakeReply(None, (cut,), "length")
    text = reply.content or ""
    return FakeReply(text[: max(1, (len(text) * 2) // 3)], (), "length")


def missing_fields_body(body: Mapping[str, Any], variant: int) -> dict[str, Any]:
    """A ``chat.completion`` body missing ``choices`` (variant 0) or the choice's ``message``."""
    broken = dict(body)
    if variant == 0:
        broken.pop("choices", None)
    else:
        broken["choices"] = [
            {k: v for k, v in choice.items() if k != "message"} for choice in body["choices"]
        ]
    return broken
