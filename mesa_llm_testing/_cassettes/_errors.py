"""A provider error as cassette data, and back as the exception the caller got.

Recorded: the exception's class (module and name), ``status_code``, the provider's
response headers (secret ones dropped), the message, ``llm_provider`` and ``model``.
Replayed: the same litellm exception class built the way ``_provider_errors.fault_exception``
builds a fault's (an ``httpx.Response`` with the status and headers, also in
``litellm_response_headers``), so class, ``status_code``, headers and ``str()`` match.
"""

from __future__ import annotations

import builtins
import inspect
from typing import Any, Final

from mesa_llm_testing._cassettes._format import SECRET_HEADERS

__all__ = ["ReplayedError", "error_record", "rebuild_error"]

_LITELLM_PREFIX: Final = "litellm."
_ENDPOINT: Final = "https://mesa-fake.invalid/v1/chat/completions"


class ReplayedError(RuntimeError):
    """A recorded error whose class cannot be rebuilt here (not litellm's, not a builtin)."""


def _headers(exc: BaseException) -> dict[str, str]:
    for source in (
        getattr(exc, "litellm_response_headers", None),
        getattr(getattr(exc, "response", None), "headers", None),
        getattr(exc, "headers", None),
    ):
        if source:
            try:
                items = dict(source).items()
            except (TypeError, ValueError):
                continue
            return {
                str(k).lower(): str(v) for k, v in items if str(k).lower() not in SECRET_HEADERS
            }
    return {}


def error_record(exc: BaseException) -> dict[str, Any]:
    """What a cassette keeps of an exception raised by a litellm call."""
    message = getattr(exc, "message", None)
    if not isinstance(message, str):
        message = str(exc)
    return {
        "module": type(exc).__module__,
        "type": type(exc).__name__,
        "status": getattr(exc, "status_code", None),
        "headers": _headers(exc),
        "message": message,
        "llm_provider": getattr(exc, "llm_provider", None),
        "model": getattr(exc, "model", None),
    }


def rebuild_error(record: dict[str, Any]) -> Exception:
    """The exception ``record`` describes, of the same class where it can be rebuilt."""
    name, module = str(record.get("type")), str(record.get("module") or "")
    message = str(record.get("message") or "")
    if module.startswith("litellm"):
        return _litellm_error(name, message, record)
    cls = getattr(builtins, name, None) if module == "builtins" else None
    if isinstance(cls, type) and issubclass(cls, Exception):
        try:
            return cls(message)
        except TypeError:
            pass
    return ReplayedError(f"mesa_llm_testing: replayed {module}.{name}: {message}")


def _litellm_error(name: str, message: str, record: dict[str, Any]) -> Exception:
    import httpx

    from mesa_llm._litellm import import_litellm

    litellm = import_litellm()
    cls = getattr(litellm, name, None)
    if not (isinstance(cls, type) and issubclass(cls, Exception)):
        return ReplayedError(f"mesa_llm_testing: replayed litellm {name}: {message}")
    # litellm prefixes "litellm.<Name>: " itself.
    message = message.removeprefix(f"{_LITELLM_PREFIX}{name}: ")
    status = record.get("status")
    headers = dict(record.get("headers") or {})
    response = None
    if isinstance(status, int):
        response = httpx.Response(status, headers=headers, request=httpx.Request("POST", _ENDPOINT))
    offered = {
        "message": message,
        "llm_provider": record.get("llm_provider") or "openai",
        "model": record.get("model") or "",
        "response": response,
        "request": httpx.Request("POST", _ENDPOINT),
        "exception_status_code": status,
        "status_code": status,
    }
    params = inspect.signature(cls.__init__).parameters
    exc = cls(**{k: v for k, v in offered.items() if k in params and v is not None})
    if isinstance(status, int) and getattr(exc, "status_code", status) != status:
        exc.status_code = status  # type: ignore[attr-defined]
    if response is not None:
        exc.litellm_response_headers = response.headers  # type: ignore[attr-defined]
    return exc
