"""The litellm custom provider ``mesa-fake`` and the "answer every litellm call" interception.

Imported only by ``FakeLLM.activate()`` and when a fault must raise a litellm
exception, so importing it may import litellm.

While at least one fake is active, ``litellm.custom_provider_map`` holds the
``mesa-fake`` handler and ``litellm.completion`` / ``litellm.acompletion`` are
wrapped. The wrapper (a) with ``intercept_all`` reroutes any model to
``mesa-fake/<model>``, remembering the model the caller asked for; (b) lets
exceptions the fake raised on purpose reach the caller unchanged rather than
wrapped by litellm; (c) tells litellm 1.10x not to look for MCP tools, which
imports the optional ``mcp`` package on every call with ``tools``; (d) attaches
``usage`` after litellm's post-processing (see ``_model_response``); (e) with
``pipeline="fast"`` (the default) hands the calls that are the fake's to ``_fastpath``,
which answers them without litellm's request pipeline. litellm's
"Give Feedback" banner is suppressed while active: faults are expected here.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import importlib.util
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from mesa_llm._identity import identity_headers
from mesa_llm._litellm import import_litellm
from mesa_llm_testing import _fastpath
from mesa_llm_testing._calls import FakeRequest
from mesa_llm_testing._fake import ACTIVE_HTTP_BASES, FakeCore
from mesa_llm_testing._provider_errors import fault_exception, limit_exception
from mesa_llm_testing._responses import (
    FakeReply,
    FakeToolCall,
)
from mesa_llm_testing._side_effects import PASSTHROUGH_MARK

if TYPE_CHECKING:
    from litellm.types.utils import GenericStreamingChunk

litellm: Any = import_litellm()
from litellm import CustomLLM  # noqa: E402  (litellm must be imported through import_litellm)

__all__ = [
    "PROVIDER",
    "MesaFakeProvider",
    "activate",
    "fault_exception",
    "installed",
    "limit_exception",
]

logger = logging.getLogger(__name__)

PROVIDER: Final = _fastpath.PROVIDER
#: optional_params the fake interprets itself or that only steer litellm / the SDK.
_NOT_PARAMS: Final = frozenset(
    {"tools", "tool_choice", "response_format", "max_retries", "stream", "extra_headers"}
)

# The model string the caller passed, set by the wrapper for the provider to record.
_asked_model: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "mesa_fake_asked_model", default=None
)


# --------------------------------------------------------------------------- the provider


class MesaFakeProvider(CustomLLM):
    """litellm custom provider answering ``mesa-fake/...`` with the innermost active ``FakeLLM``."""

    def completion(self, model: str, messages: list, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        """Answer a sync litellm call."""
        with _begin(model, messages, kwargs) as (fake, request):
            if delay := fake.wait_seconds(request):
                time.sleep(delay)
            return _model_response(fake, request, fake.answer(request), model)

    async def acompletion(self, model: str, messages: list, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        """Answer an async litellm call (``latency`` is awaited)."""
        with _begin(model, messages, kwargs) as (fake, request):
            if delay := fake.wait_seconds(request):
                await asyncio.sleep(delay)
            return _model_response(fake, request, fake.answer(request), model)

    def streaming(  # type: ignore[override]
        self, model: str, messages: list, *args: Any, **kwargs: Any
    ) -> Iterator[GenericStreamingChunk]:
        """Answer ``stream=True``: one chunk per tool call (or one text chunk)."""
        with _begin(model, messages, kwargs) as (fake, request):
            if delay := fake.wait_seconds(request):
                time.sleep(delay)
            return iter(_chunks(fake.answer(request)))

    async def astreaming(  # type: ignore[override]
        self, model: str, messages: list, *args: Any, **kwargs: Any
    ) -> AsyncIterator[GenericStreamingChunk]:
        """Async :meth:`streaming`."""
        with _begin(model, messages, kwargs) as (fake, request):
            if delay := fake.wait_seconds(request):
                await asyncio.sleep(delay)
            chunks = _chunks(fake.answer(request))
        for chunk in chunks:
            yield chunk


@contextmanager
def _begin(
    model: str, messages: list, kwargs: dict[str, Any]
) -> Iterator[tuple[FakeCore, FakeRequest]]:
    """The fake and the request of a call, admitted under the fake's limits until answered."""
    fake = _innermost()
    if fake is None:
        exc = RuntimeError(
            "mesa_llm_testing: the 'mesa-fake' litellm provider was called but no FakeLLM is "
            "active; wrap the code in 'with FakeLLM().activate():' (or use the fake_llm fixture)"
        )
        setattr(exc, PASSTHROUGH_MARK, True)
        raise exc
    optional: dict[str, Any] = kwargs.get("optional_params") or {}
    asked = _asked_model.get() or f"{PROVIDER}/{model}"
    params = {k: v for k, v in optional.items() if k not in _NOT_PARAMS}
    slot = fake.admit(asked, messages, optional.get("tools"), params, "provider")
    try:
        yield (
            fake,
            fake.make_request(
                asked,
                messages,
                optional.get("tools"),
                optional.get("tool_choice"),
                optional.get("response_format"),
                params,
                "provider",
            ),
        )
    finally:
        if slot is not None:
            slot.release()


def _model_response(fake: FakeCore, request: FakeRequest, reply: FakeReply, model: str) -> Any:
    # Called through the wrapper, usage is attached after litellm's post-processing: with
    # usage, litellm searches its cost map for the (unknown) model to explain a $0 cost,
    # which costs more than the rest of the fake call.
    return _fastpath.model_response(
        fake, request, reply, model, with_usage=_asked_model.get() is None
    )


def _attach_usage(response: Any, kwargs: dict[str, Any]) -> Any:
    """Give a fake ``ModelResponse`` the ``usage`` it was built without (see _model_response)."""
    if not isinstance(response, litellm.ModelResponse) or getattr(response, "usage", None):
        return response
    choices = response.choices or []
    message = getattr(choices[0], "message", None) if choices else None
    reply = FakeReply(
        getattr(message, "content", None),
        tuple(
            FakeToolCall(tc.function.name or "", tc.function.arguments or "", tc.id)
            for tc in (getattr(message, "tool_calls", None) or [])
        ),
    )
    return _fastpath.attach_usage(response, reply, kwargs.get("messages"))


def _chunks(reply: FakeReply) -> list[GenericStreamingChunk]:
    usage = None
    if not reply.tool_calls:
        return [
            {
                "text": reply.content or "",
                "tool_use": None,
                "is_finished": True,
                "finish_reason": reply.finish,
                "usage": usage,
                "index": 0,
            }
        ]
    chunks: list[GenericStreamingChunk] = []
    for i, tc in enumerate(reply.tool_calls):
        last = i == len(reply.tool_calls) - 1
        chunks.append(
            {
                "text": reply.content or "" if i == 0 else "",
                "tool_use": {
                    "id": tc.id,
                    "type": "function",
                    "function": {"name": tc.name, "arguments": tc.arguments},
                    "index": i,
                },
                "is_finished": last,
                "finish_reason": reply.finish if last else "",
                "usage": usage,
                "index": 0,
            }
        )
    return chunks


# --------------------------------------------------------------------------- activation


@dataclass(eq=False)
class _Activation:
    fake: FakeCore
    intercept_all: bool
    pipeline: str = "fast"


_lock = threading.RLock()
_active: list[_Activation] = []
_handler_item: dict[str, Any] | None = None
_originals: tuple[Callable[..., Any], Callable[..., Any]] | None = None
_wrappers: tuple[Callable[..., Any], Callable[..., Any]] | None = None
_added_names: list[tuple[list[str], str]] = []
_saved_suppress_debug_info: Any = None


def _innermost_activation() -> _Activation | None:
    try:
        return _active[-1]  # atomic under the GIL; another thread may empty the list
    except IndexError:
        return None


def _innermost() -> FakeCore | None:
    entry = _innermost_activation()
    return None if entry is None else entry.fake


@contextmanager
def activate(
    fake: FakeCore, *, intercept_all: bool = True, pipeline: str = "fast"
) -> Iterator[FakeCore]:
    """Context manager behind :meth:`FakeLLM.activate`."""
    from mesa_llm.module_llm import override_retry_sleep, skip_api_key_check

    pipeline = _fastpath.check_pipeline(pipeline)
    with ExitStack() as stack:
        stack.enter_context(skip_api_key_check())
        stack.enter_context(override_retry_sleep(fake.record_sleep))
        stack.enter_context(installed(fake, intercept_all=intercept_all, pipeline=pipeline))
        yield fake


@contextmanager
def installed(fake: FakeCore, *, intercept_all: bool, pipeline: str = "fast") -> Iterator[FakeCore]:
    """The litellm wrappers with ``fake`` innermost, and nothing else (recording uses this).

    A call the fake does not take goes to the real provider through ``fake.forward`` /
    ``fake.aforward`` when it has them (a cassette recorder), else unchanged.
    """
    entry = _Activation(fake, bool(intercept_all), pipeline)
    _push(entry)
    try:
        yield fake
    finally:
        _pop(entry)


def _push(entry: _Activation) -> None:
    with _lock:
        if not _active:
            _install()
        _active.append(entry)


def _pop(entry: _Activation) -> None:
    with _lock:
        for i in range(len(_active) - 1, -1, -1):
            if _active[i] is entry:
                del _active[i]
                break
        if not _active:
            _uninstall()


def _install() -> None:
    global _handler_item, _originals, _wrappers, _saved_suppress_debug_info
    # litellm prints a "Give Feedback" banner to stdout for every failed call; faults are expected.
    _saved_suppress_debug_info = litellm.suppress_debug_info
    litellm.suppress_debug_info = True
    _handler_item = {"provider": PROVIDER, "custom_handler": MesaFakeProvider()}
    litellm.custom_provider_map.append(_handler_item)
    for names in (litellm.provider_list, litellm._custom_providers):
        if PROVIDER not in names:
            names.append(PROVIDER)
            _added_names.append((names, PROVIDER))
    sync_original, async_original = litellm.completion, litellm.acompletion
    _originals = (sync_original, async_original)
    _wrappers = (_wrap_sync(sync_original), _wrap_async(async_original))
    litellm.completion, litellm.acompletion = _wrappers


def _uninstall() -> None:
    global _handler_item, _originals, _wrappers
    if _handler_item is not None:
        litellm.custom_provider_map[:] = [
            item for item in litellm.custom_provider_map if item is not _handler_item
        ]
        _handler_item = None
    while _added_names:
        names, name = _added_names.pop()
        if name in names:
            names.remove(name)
    if _originals is not None and _wrappers is not None:
        for attr, original, wrapper in zip(
            ("completion", "acompletion"), _originals, _wrappers, strict=True
        ):
            if getattr(litellm, attr) is wrapper:
                setattr(litellm, attr, original)
            else:  # someone patched over our wrapper; it passes calls through once inactive
                logger.warning(
                    "mesa_llm_testing: litellm.%s was replaced while a FakeLLM was active; "
                    "leaving the replacement in place",
                    attr,
                )
    _originals = _wrappers = None
    litellm.suppress_debug_info = _saved_suppress_debug_info


# --------------------------------------------------------------------------- the wrappers


@functools.cache
def _mcp_installed() -> bool:
    return importlib.util.find_spec("mcp") is not None


def _route(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], str, _Activation] | None:
    """Rewrite the call for the fake (``kwargs`` in place); None if the call is not the fake's."""
    entry = _innermost_activation()
    if entry is None:
        return None
    _skip_mcp_lookup(kwargs)
    base = kwargs.get("api_base") or kwargs.get("base_url")
    if base and str(base).rstrip("/") in ACTIVE_HTTP_BASES:
        # Aimed at a FakeLLM.http() endpoint: let the HTTP layer see it, saying who calls
        # (as ModuleLLM does), so the server keys faults as this provider would.
        kwargs["extra_headers"] = {**identity_headers(), **(kwargs.get("extra_headers") or {})}
        return None
    model = str((args[0] if args else kwargs.get("model")) or "")
    if not model.startswith(PROVIDER + "/") and not entry.intercept_all:
        return None
    if args:  # litellm.completion(model, messages, ...)
        if len(args) > 1:
            kwargs["messages"] = args[1]
        args = args[2:]
    kwargs["model"] = model if model.startswith(PROVIDER + "/") else f"{PROVIDER}/{model}"
    kwargs["custom_llm_provider"] = PROVIDER
    return args, model, entry


def _skip_mcp_lookup(kwargs: dict[str, Any]) -> None:
    # litellm 1.10x imports its MCP gateway (and the optional `mcp` package) for any call
    # with tools; without `mcp` installed every such call fails. Plain function tools never
    # need the gateway, so tell litellm to skip it (a no-op where `mcp` is installed).
    tools = kwargs.get("tools")
    if "_skip_mcp_handler" in kwargs or not tools or _mcp_installed():
        return
    if not any(_is_mcp_tool(t) for t in tools):
        kwargs["_skip_mcp_handler"] = True


def _is_mcp_tool(tool: Any) -> bool:
    return isinstance(tool, dict) and tool.get("type") == "mcp"


def _unwrapped(exc: BaseException) -> BaseException | None:
    """The exception the fake raised on purpose if litellm wrapped it, else None."""
    if getattr(exc, PASSTHROUGH_MARK, False):
        return None
    seen: BaseException | None = exc
    for _ in range(8):
        seen = seen.__cause__ or seen.__context__ if seen is not None else None
        if seen is None:
            return None
        if getattr(seen, PASSTHROUGH_MARK, False):
            return seen
    return None


def _wrap_sync(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def completion(*args: Any, **kwargs: Any) -> Any:
        routed = _route(args, kwargs)
        if routed is None:
            forward = getattr(_innermost(), "forward", None)
            return original(*args, **kwargs) if forward is None else forward(original, args, kwargs)
        rest, asked, entry = routed
        if entry.pipeline == "fast" and _fastpath.handles(kwargs):
            return _fastpath.complete(entry.fake, asked, kwargs)
        token = _asked_model.set(asked)
        try:
            return _attach_usage(original(*rest, **kwargs), kwargs)
        except Exception as exc:
            inner = _unwrapped(exc)
            if inner is None:
                raise
            raise inner from None
        finally:
            _asked_model.reset(token)

    return completion


def _wrap_async(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    async def acompletion(*args: Any, **kwargs: Any) -> Any:
        routed = _route(args, kwargs)
        if routed is None:
            forward = getattr(_innermost(), "aforward", None)
            if forward is None:
                return await original(*args, **kwargs)
            return await forward(original, args, kwargs)
        rest, asked, entry = routed
        if entry.pipeline == "fast" and _fastpath.handles(kwargs):
            return await _fastpath.acomplete(entry.fake, asked, kwargs)
        token = _asked_model.set(asked)
        try:
            return _attach_usage(await original(*rest, **kwargs), kwargs)
        except Exception as exc:
            inner = _unwrapped(exc)
            if inner is None:
                raise
            raise inner from None
        finally:
            _asked_model.reset(token)

    return acompletion
