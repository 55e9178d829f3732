"""Replies of the fake LLM: the reply type, the seeded generator, and malformed variants.

Everything here is pure and cheap: no litellm import until a reply is turned into a
``litellm.ModelResponse``. Randomness comes from a SplitMix64 stream seeded by
``hashlib.blake2b``, so a reply is a pure function of its seed material.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Final

from mesa_llm_testing._model_responses import build_model_response
from mesa_llm_testing._rng import _SENTENCES, _WORDS, Rng
from mesa_llm_testing._schema_values import SchemaValues, violate_schema

__all__ = ["FakeReply", "FakeToolCall", "RequestShape", "Rng"]

#: ``created`` of every fake completion: a fixed instant keeps replies reproducible.
CREATED: Final = 1_700_000_000
SYSTEM_FINGERPRINT: Final = "fp_mesa_fake"

_MAPS: Final = (dict, Mapping)  # dict first: isinstance on the ABC alone is slow

# --------------------------------------------------------------------------- reply types


@dataclass(frozen=True, slots=True)
class FakeToolCall:
    """One tool call in a fake reply; ``arguments`` is the JSON text exactly as sent."""

    name: str
    arguments: str = "{}"
    id: str | None = None

    def to_openai(self) -> dict[str, Any]:
        """The OpenAI ``tool_calls[i]`` object."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass(frozen=True, slots=True)
class FakeReply:
    """What the fake LLM answers: text and/or tool calls (or a ``ModelResponse`` as given).

    Reads like a ``ModelResponse`` where it matters: ``reply.choices[0].message.content``
    and ``.tool_calls[i].function.arguments`` work; :meth:`to_model_response` and
    :meth:`to_openai` give the real objects.
    """

    content: str | None = None
    tool_calls: tuple[FakeToolCall, ...] = ()
    finish_reason: str | None = None
    raw: Any = field(default=None, compare=False, repr=False)
    #: Answered by the seeded generator where a cassette had no recording (``missing="generate"``).
    generated: bool = field(default=False, compare=False, repr=False)

    @property
    def finish(self) -> str:
        """The finish reason sent: given, else ``tool_calls`` or ``stop``."""
        if self.finish_reason is not None:
            return self.finish_reason
        return "tool_calls" if self.tool_calls else "stop"

    @property
    def message(self) -> dict[str, Any]:
        """The OpenAI assistant message."""
        return {
            "role": "assistant",
            "content": self.content,
            "tool_calls": [tc.to_openai() for tc in self.tool_calls] or None,
            "refusal": None,
        }

    @property
    def choices(self) -> list[Any]:
        """``ModelResponse``-like attribute access: ``choices[0].message.content``."""
        calls = [
            SimpleNamespace(
                id=tc.id,
                type="function",
                function=SimpleNamespace(name=tc.name, arguments=tc.arguments),
            )
            for tc in self.tool_calls
        ]
        message = SimpleNamespace(role="assistant", content=self.content, tool_calls=calls or None)
        return [SimpleNamespace(index=0, message=message, finish_reason=self.finish)]

    def json(self) -> Any:
        """``content`` parsed as JSON (raises ``json.JSONDecodeError`` if it is not JSON)."""
        return json.loads(self.content or "")

    def with_ids(self, rng: Rng) -> FakeReply:
        """This reply with an id on every tool call that has none (ids drawn from ``rng``)."""
        calls = self.tool_calls
        if not calls:
            return self
        if len(calls) == 1:  # the usual case, without the generators below
            if calls[0].id:
                return self
            call = calls[0]
            calls = (FakeToolCall(call.name, call.arguments, "call_" + rng.hex(24)),)
        elif all(tc.id for tc in calls):
            return self
        else:
            calls = tuple(
                tc if tc.id else FakeToolCall(tc.name, tc.arguments, "call_" + rng.hex(24))
                for tc in calls
            )
        return FakeReply(self.content, calls, self.finish_reason, self.raw)

    def usage(self, messages: Sequence[Any]) -> dict[str, int]:
        """Rough token counts (4 characters a token), like a provider's ``usage``."""
        chars = 0
        for message in messages:
            chars += len(str(_content_of(message) or ""))
        prompt = chars // 4 + 1
        chars = len(self.content or "")
        for call in self.tool_calls:
            chars += len(call.name) + len(call.arguments)
        completion = chars // 4 + 1
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    def to_openai(
        self, *, model: str, response_id: str, messages: Sequence[Any] = ()
    ) -> dict[str, Any]:
        """The OpenAI ``chat.completion`` JSON body."""
        if self.raw is not None:
            body: dict[str, Any] = self.raw.model_dump(exclude_none=False)
            body.pop("_hidden_params", None)
            return body
        return {
            "id": response_id,
            "object": "chat.completion",
            "created": CREATED,
            "model": model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": [
                {
                    "index": 0,
                    "message": self.message,
                    "logprobs": None,
                    "finish_reason": self.finish,
                }
            ],
            "usage": self.usage(messages),
        }

    def to_model_response(
        self,
        *,
        model: str,
        response_id: str,
        messages: Sequence[Any] = (),
        with_usage: bool = True,
        hidden_params: dict[str, Any] | None = None,
    ) -> Any:
        """A ``litellm.ModelResponse`` (a deep copy of ``raw`` when one was given).

        ``hidden_params``: its ``_hidden_params`` (None: litellm's for a new response).
        """
        if self.raw is not None:
            response = self.raw.model_copy(deep=True)
            if hidden_params is not None:
                response._hidden_params = hidden_params
            return response
        return build_model_response(
            response_id=response_id,
            created=CREATED,
            model=model,
            system_fingerprint=SYSTEM_FINGERPRINT,
            content=self.content,
            tool_calls=[(tc.id, tc.name, tc.arguments) for tc in self.tool_calls],
            finish_reason=self.finish,
            usage=self.usage(messages) if with_usage else None,
            hidden_params=hidden_params,
        )

    @classmethod
    def from_model_response(cls, response: Any) -> FakeReply:
        """Wrap a ``ModelResponse`` given as a reply; content and tool calls are read from it."""
        content: str | None = None
        calls: tuple[FakeToolCall, ...] = ()
        finish: str | None = None
        choices = getattr(response, "choices", None) or []
        if choices:
            message = getattr(choices[0], "message", None)
            finish = getattr(choices[0], "finish_reason", None)
            content = getattr(message, "content", None)
            calls = tuple(
                FakeToolCall(tc.function.name, tc.function.arguments or "", tc.id)
                for tc in (getattr(message, "tool_calls", None) or [])
            )
        return cls(content, calls, finish, raw=response)


def _content_of(message: Any) -> Any:
    if isinstance(message, _MAPS):
        return message.get("content")
    return getattr(message, "content", None)


def _role_of(message: Any) -> Any:
    if isinstance(message, _MAPS):
        return message.get("role")
    return getattr(message, "role", None)


# --------------------------------------------------------------------------- request shape


@dataclass(frozen=True, slots=True)
class RequestShape:
    """What a request asks for: which tools may be called, and which output format."""

    tools: tuple[tuple[str, Mapping[str, Any]], ...]
    forced_tool: str | None  # a tool the request names in tool_choice
    tool_mode: str  # "auto" | "required" | "none"
    output: str  # "text" | "json_object" | "json_schema"
    schema: Mapping[str, Any] | None
    after_tool_result: bool  # the last message is a tool result

    @classmethod
    def of(
        cls, messages: Sequence[Any], tools: Any, tool_choice: Any, response_format: Any
    ) -> RequestShape:
        """Read the shape of an OpenAI-style request."""
        specs: list[tuple[str, Mapping[str, Any]]] = []
        for tool in tools or ():
            fn = tool.get("function") if isinstance(tool, _MAPS) else None
            if isinstance(fn, _MAPS) and fn.get("name"):
                specs.append((str(fn["name"]), fn.get("parameters") or {}))
        forced: str | None = None
        mode = "auto"
        if isinstance(tool_choice, str):
            mode = tool_choice if tool_choice in ("none", "required") else "auto"
        elif isinstance(tool_choice, _MAPS):
            fn = tool_choice.get("function")
            if isinstance(fn, _MAPS) and fn.get("name"):
                forced, mode = str(fn["name"]), "required"
        output, schema = _output_of(response_format)
        last_role = _role_of(messages[-1]) if messages else None
        return cls(tuple(specs), forced, mode, output, schema, last_role in ("tool", "function"))

    @property
    def wants_tool_call(self) -> bool:
        """A tool call is the natural reply: tools offered, allowed, and no tool result to read."""
        if not self.tools or self.tool_mode == "none":
            return False
        return self.tool_mode == "required" or not self.after_tool_result

    def pick_tool(self, rng: Rng) -> tuple[str, Mapping[str, Any]]:
        """The forced tool if any, else one drawn from ``rng``."""
        if self.forced_tool is not None:
            for spec in self.tools:
                if spec[0] == self.forced_tool:
                    return spec
            return (self.forced_tool, {})
        return self.tools[rng.below(len(self.tools))]


def _output_of(response_format: Any) -> tuple[str, Mapping[str, Any] | None]:
    if response_format is None:
        return "text", None
    schema_fn = getattr(response_format, "model_json_schema", None)
    if isinstance(response_format, type) and callable(schema_fn):
        return "json_schema", schema_fn()
    if isinstance(response_format, _MAPS):
        kind = response_format.get("type")
        if kind == "json_object":
            return "json_object", None
        if kind == "json_schema":
            spec = response_format.get("json_schema") or {}
            schema = spec.get("schema") if isinstance(spec, _MAPS) else None
            return "json_schema", schema if isinstance(schema, _MAPS) else {}
    return "text", None


# --------------------------------------------------------------------------- generation


def generate_reply(shape: RequestShape, rng: Rng) -> FakeReply:
    """The seeded default reply: a tool call, JSON matching the schema, or a short sentence."""
    if shape.wants_tool_call:
        name, params = shape.pick_tool(rng)
        args = SchemaValues(params, rng).value()
        if not isinstance(args, dict):
            args = {}
        return FakeReply(None, (FakeToolCall(name, json.dumps(args)),))
    if shape.output == "json_schema":
        return FakeReply(json.dumps(SchemaValues(shape.schema or {}, rng).value()))
    if shape.output == "json_object":
        return FakeReply(json.dumps({"response": rng.choice(_SENTENCES), "confidence": 0.9}))
    return FakeReply(rng.choice(_SENTENCES))


def malformed_reply(shape: RequestShape, rng: Rng) -> FakeReply:
    """A reply shaped like the request but unusable.

    Invalid tool-call arguments when tools are offered, schema-violating JSON when a
    schema is requested, else truncated JSON.
    """
    if shape.tools and shape.tool_mode != "none":
        name, params = shape.pick_tool(rng)
        args = SchemaValues(params, rng).value()
        text = json.dumps(args if isinstance(args, dict) and args else {"value": 1})
        return FakeReply(None, (FakeToolCall(name, truncate_json(text)),))
    if shape.output == "json_schema":
        return FakeReply(json.dumps(violate_schema(shape.schema or {}, rng)))
    sample = {"action": rng.choice(_WORDS), "target": {"x": rng.below(10), "y": rng.below(10)}}
    return FakeReply(truncate_json(json.dumps(sample)))


def empty_reply() -> FakeReply:
    """A 200 with empty content and no tool calls."""
    return FakeReply("", (), "stop")


def truncate_json(text: str) -> str:
    """``text`` cut short so that it no longer parses as JSON."""
    cut = text[: max(1, (len(text) * 2) // 3)]
    while True:
        try:
            json.loads(cut)
        except ValueError:
            return cut
        cut += ',"'  # a complete prefix (e.g. a bare number) made invalid


def rate_limit_headers(retry_after: float, request_id: str) -> dict[str, str]:
    """The headers OpenAI sends with a 429: ``retry-after`` (+ ``-ms``) and ``x-ratelimit-*``."""
    return {
        "retry-after": f"{retry_after:g}",
        "retry-after-ms": str(round(retry_after * 1000)),
        "x-ratelimit-limit-requests": "500",
        "x-ratelimit-limit-tokens": "200000",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-remaining-tokens": "199500",
        "x-ratelimit-reset-requests": f"{retry_after:g}s",
        "x-ratelimit-reset-tokens": "150ms",
        "x-request-id": request_id,
    }


def rate_limit_error(model: str, retry_after: float) -> dict[str, Any]:
    """OpenAI's 429 ``error`` object for a requests-per-minute limit."""
    return {
        "message": (
            f"Rate limit reached for {model} in organization org-mesa-fake on requests per min "
            f"(RPM): Limit 500, Used 500, Requested 1. Please try again in {retry_after:g}s. "
            "Visit https://platform.openai.com/account/rate-limits to learn more."
        ),
        "type": "requests",
        "param": None,
        "code": "rate_limit_exceeded",
    }


#: (status, ``error`` object) of the server errors OpenAI returns, chosen per call: its own
#: 500 and 503, and the 502 and 504 its Cloudflare front answers with (``cf_*`` types).
SERVER_ERRORS: Final = (
    (
        500,
        {
            "message": "The server had an error while processing your request. Sorry about that!",
            "type": "server_error",
            "param": None,
            "code": None,
        },
    ),
    (
        503,
        {
            "message": "The server is overloaded or not ready yet.",
            "type": "server_error",
            "param": None,
            "code": None,
        },
    ),
    (
        502,
        {"message": "Bad gateway.", "type": "cf_bad_gateway", "param": None, "code": 502},
    ),
    (
        504,
        {"message": "Gateway timeout.", "type": "cf_gateway_timeout", "param": None, "code": 504},
    ),
)
