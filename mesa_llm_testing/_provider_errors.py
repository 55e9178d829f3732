"""Provider failures as the litellm exceptions they arrive as: faults and load-driven 429s.

For each fault kind (and a refusal under ``ProviderLimits``), the exception litellm
raises when an OpenAI-compatible endpoint answers the same way (``FakeLLM.http()``);
``tests/test_layers_agree.py`` compares the two layers for every fault. Built from the
wire shapes in ``_fault_answers`` / ``_responses``. Imports litellm.
"""

from __future__ import annotations

from typing import Any, Final

import httpx

from mesa_llm._litellm import import_litellm
from mesa_llm_testing._calls import FakeRequest
from mesa_llm_testing._fake import FakeCore
from mesa_llm_testing._fastpath import PROVIDER
from mesa_llm_testing._fault_answers import STATUS_KINDS, missing_fields_body, status_answers
from mesa_llm_testing._faults import FaultKind
from mesa_llm_testing._limits import Refusal
from mesa_llm_testing._responses import rate_limit_error, rate_limit_headers

__all__ = ["ENDPOINT", "fault_exception", "limit_exception"]

litellm: Any = import_litellm()

#: The URL errors claim to come from (nothing is ever sent there).
ENDPOINT: Final = "https://mesa-fake.invalid/v1/chat/completions"


#: For each error status, the exception litellm raises when an OpenAI(-compatible)
#: endpoint answers with it, and the label litellm puts before the provider's name
#: (``litellm_core_utils/exception_mapping_utils.py``: 504 is a gateway *timeout*;
#: 403 and 529 have no class of their own there and arrive as ``APIError``).
_STATUS_CLASSES: Final = {
    400: ("BadRequestError", ""),
    401: ("AuthenticationError", "AuthenticationError: "),
    403: ("APIError", "APIError: "),
    404: ("NotFoundError", "NotFoundError: "),
    500: ("InternalServerError", "InternalServerError: "),
    502: ("BadGatewayError", "BadGatewayError: "),
    503: ("ServiceUnavailableError", "ServiceUnavailableError: "),
    504: ("Timeout", "Timeout Error: "),
    529: ("APIError", "APIError: "),
}
#: The OpenAI SDK's ``ChatCompletion`` fields, in its order.
_SDK_FIELDS: Final = (
    "id",
    "choices",
    "created",
    "model",
    "object",
    "service_tier",
    "system_fingerprint",
    "usage",
)
#: 400s that litellm tells apart by the error's code or message.
_KIND_CLASSES: Final = {
    FaultKind.CONTEXT_WINDOW: ("ContextWindowExceededError", "ContextWindowExceededError: "),
    FaultKind.CONTENT_POLICY: ("ContentPolicyViolationError", "ContentPolicyViolationError: "),
}


def _as_sent(model: str) -> tuple[str, str]:
    """(provider, model on the wire) of ``model`` as litellm splits it; no prefix is OpenAI."""
    prefix, slash, rest = model.partition("/")
    if slash and (prefix == PROVIDER or prefix in litellm.provider_list):
        return prefix, rest
    return "openai", model


def fault_exception(fake: FakeCore, request: FakeRequest, kind: FaultKind) -> Exception:
    """The litellm exception a real provider failure of ``kind`` arrives as.

    Class, ``status_code`` and message are what litellm raises for the same HTTP answer
    from an OpenAI-compatible endpoint (``FakeLLM.http()``); ``tests/test_layers_agree.py``
    compares the two layers for every fault.
    """
    provider, model = _as_sent(request.model)
    source = _source(provider)
    http_request = httpx.Request("POST", ENDPOINT)
    request_id = "req_" + fake.rng(request, "request-id").hex(24)
    exc: Exception
    if kind is FaultKind.RATE_LIMIT:
        return _rate_limit_exception(
            request.model,
            rate_limit_error(model, fake.retry_after),
            rate_limit_headers(fake.retry_after, request_id),
        )
    if kind is FaultKind.TIMEOUT:
        # The OpenAI SDK's APITimeoutError, as litellm reports it (no HTTP answer at all).
        return litellm.Timeout(
            message="APITimeoutError - Request timed out. Error_str: Request timed out.",
            model=model,
            llm_provider=provider,
        )
    elif kind in STATUS_KINDS:
        answers = status_answers(kind, model)
        status, error = answers[fake.fault_variant(request, len(answers))]
        response = httpx.Response(
            status,
            headers={"x-request-id": request_id},
            json={"error": error},
            request=http_request,
        )
        name, label = _KIND_CLASSES.get(kind) or _STATUS_CLASSES[status]
        message = f"{label}{source} - {error['message']}"
        common = {"message": message, "model": model, "llm_provider": provider}
        if name == "Timeout":
            exc = litellm.Timeout(**common, exception_status_code=status, response=response)
        elif name == "APIError":
            exc = litellm.APIError(status_code=status, **common, request=http_request)
        else:
            exc = getattr(litellm, name)(**common, response=response)
    elif kind in (FaultKind.CONNECTION_ERROR, FaultKind.CONNECTION_RESET):
        # litellm's OpenAI path turns the SDK's APIConnectionError into a 500 with this text
        # (also when the answer's headers came and its body was cut).
        return litellm.InternalServerError(
            message=f"InternalServerError: {source} - Connection error.",
            llm_provider=provider,
            model=model,
        )
    elif kind is FaultKind.MISSING_FIELDS:
        return _missing_fields_error(fake, request, model, provider, source)
    else:
        raise ValueError(f"mesa_llm_testing: fault kind {kind.value!r} is not an error fault")
    # Where litellm keeps a real provider's response headers (e.response.headers is rebuilt).
    exc.litellm_response_headers = response.headers  # type: ignore[attr-defined]
    return exc


def limit_exception(model: str, refusal: Refusal) -> Exception:
    """The ``RateLimitError`` of a load-driven 429 (``FakeLLM(limits=...)``) for ``model``.

    Shaped as the RATE_LIMIT fault's (body, headers, where litellm keeps them), with the
    limit that was hit, a ``retry-after`` of when the call would fit, and the
    ``x-ratelimit-*`` headers of the fake's limits.
    """
    return _rate_limit_exception(model, refusal.error(_as_sent(model)[1]), refusal.headers())


def _source(provider: str) -> str:
    """litellm's own naming (exception_mapping_utils): "OpenAIException", "AnthropicException"."""
    if provider == "openai":
        return "OpenAIException"
    return provider[0].upper() + provider[1:] + "Exception"


def _rate_limit_exception(asked: str, error: dict[str, Any], headers: dict[str, str]) -> Exception:
    """litellm's ``RateLimitError`` for a 429 with ``error`` and ``headers``."""
    provider, model = _as_sent(asked)
    http_request = httpx.Request("POST", ENDPOINT)
    response = httpx.Response(429, headers=headers, json={"error": error}, request=http_request)
    exc = litellm.RateLimitError(
        message=f"RateLimitError: {_source(provider)} - {error['message']}",
        llm_provider=provider,
        model=model,
        response=response,
        headers={k: headers[k] for k in ("retry-after", "retry-after-ms")},
        body=error,
    )
    # Where litellm keeps a real provider's response headers (e.response.headers is rebuilt).
    exc.litellm_response_headers = response.headers  # type: ignore[attr-defined]
    return exc


def _missing_fields_error(
    fake: FakeCore, request: FakeRequest, model: str, provider: str, source: str
) -> Exception:
    """What litellm raises for a 200 body without ``choices`` or ``message``: its own words."""
    reply = fake.content_reply(request, FaultKind.MISSING_FIELDS)
    response_id = "chatcmpl-" + fake.rng(request, "response-id").hex(29)
    sent = missing_fields_body(
        reply.to_openai(model=model, response_id=response_id, messages=request.messages),
        fake.fault_variant(request, 2),
    )
    # Over HTTP the body reaches litellm through the OpenAI SDK's ChatCompletion, in its
    # field order (the order shows in litellm's message).
    body = {k: sent[k] for k in _SDK_FIELDS if k in sent} | sent
    from litellm.litellm_core_utils.llm_response_utils.convert_dict_to_response import (
        convert_to_model_response_object,
    )

    try:
        convert_to_model_response_object(body, litellm.ModelResponse())
    except Exception as exc:  # the conversion's complaint is the message litellm reports
        text = str(exc)
    else:  # pragma: no cover - a litellm that accepts the broken body
        text = "Invalid response object"
    return litellm.InternalServerError(
        message=f"InternalServerError: {source} - {text}", llm_provider=provider, model=model
    )
