"""``ModuleLLM``: one litellm model endpoint with bounded retries and optional transparent batching.

Hooks the test harness relies on (see docs/architecture.md): every request goes
through ``litellm.completion`` / ``litellm.acompletion`` looked up at call time,
always with ``num_retries=0, max_retries=0``; :func:`skip_api_key_check` and
:func:`override_retry_sleep` are process-wide switches.
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

from mesa_llm._batching import BatchBackend, BatchConfig, BatchProcessor
from mesa_llm._circuit import CircuitBreaker
from mesa_llm._fallbacks import (
    Fallback,
    RateLimiters,
    Route,
    build_routes,
    check_circuit_breaker,
)
from mesa_llm._identity import identity_headers
from mesa_llm._litellm import import_litellm
from mesa_llm._rate_limit import RateLimiter
from mesa_llm._resilience import Policies, asend, hidden_params, send
from mesa_llm._retry import TRANSIENT_ERRORS, RetryPolicy, override_retry_sleep
from mesa_llm._usage import record_usage
from mesa_llm.errors import MissingAPIKeyError, UnknownModelError
from mesa_llm.parallel_stepping import acting_as, current_agent

if TYPE_CHECKING:
    from litellm import ModelResponse
    from mesa import Agent

__all__ = [
    "TRANSIENT_ERRORS",
    "BatchBackend",
    "BatchConfig",
    "BatchProcessor",
    "CircuitBreaker",
    "ModuleLLM",
    "RateLimiter",
    "RetryPolicy",
    "override_retry_sleep",
    "skip_api_key_check",
]

_FAKE_PROVIDER = "mesa-fake"
# Providers whose missing "key" litellm reports is only a base URL with a working default.
_KEYLESS_PROVIDERS = frozenset({"ollama", "ollama_chat"})
# Owned by RetryPolicy / the return type; passing them would silently change behaviour.
_RESERVED_KWARGS = {
    "num_retries": "retries are owned by retry=RetryPolicy(max_attempts=...)",
    "max_retries": "retries are owned by retry=RetryPolicy(max_attempts=...)",
    "stream": "generate/agenerate return a complete ModelResponse; streaming is not supported",
}

_MAPS = (dict, Mapping)  # dict first: isinstance on the Mapping ABC alone is slow

_skip_key_check_depth = 0
_skip_key_check_lock = threading.Lock()
_provider_lookup_lock = threading.Lock()


@contextmanager
def skip_api_key_check() -> Iterator[None]:
    """While active (process-wide, re-entrant, thread-safe), ``ModuleLLM`` demands no API key."""
    global _skip_key_check_depth
    with _skip_key_check_lock:
        _skip_key_check_depth += 1
    try:
        yield
    finally:
        with _skip_key_check_lock:
            _skip_key_check_depth -= 1


def _api_key_check_skipped() -> bool:
    with _skip_key_check_lock:
        return _skip_key_check_depth > 0


class ModuleLLM:
    """One configured LLM (litellm ``provider/model``) with bounded retries and optional batching.

    ``seed`` seeds the retry-jitter RNG (None: OS entropy, so unseeded modules do
    not retry in lockstep). ``agent``: calls made while ``current_agent()`` is None
    are attributed to it. ``completion_kwargs`` (temperature, ...) go to every call.

    With ``batching``, ``agenerate`` calls are grouped by a :class:`BatchProcessor`
    shared by every ``ModuleLLM`` of the same configuration on the running loop;
    sync ``generate`` always calls the provider directly.

    Resilience policies (``mesa_llm._resilience``): ``fallbacks`` are models tried in
    order when ``llm_model`` fails with a provider error retrying did not fix;
    ``rate_limiter`` (a :class:`RateLimiter` for ``llm_model``, or a mapping of model
    to limiter) and ``circuit_breaker`` (a :class:`CircuitBreaker`, one circuit per
    model) are shared objects: give the same one to many ``ModuleLLM``s.
    """

    def __init__(
        self,
        llm_model: str,
        api_base: str | None = None,
        system_prompt: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
        batching: BatchConfig | None = None,
        seed: int | None = None,
        agent: Agent | None = None,
        fallbacks: Sequence[Fallback] | None = None,
        rate_limiter: RateLimiters | None = None,
        circuit_breaker: CircuitBreaker | None = None,
        **completion_kwargs: Any,
    ) -> None:
        if not isinstance(llm_model, str) or not llm_model.strip():
            raise ValueError(
                f"mesa_llm: ModuleLLM(llm_model={llm_model!r}) must be litellm's "
                f"'provider/model' string, e.g. 'openai/gpt-4o-mini'"
            )
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise TypeError(f"mesa_llm: ModuleLLM(retry={retry!r}) must be a RetryPolicy or None")
        if batching is not None and not isinstance(batching, BatchConfig):
            raise TypeError(
                f"mesa_llm: ModuleLLM(batching={batching!r}) must be a BatchConfig or None"
            )
        _reject_reserved(completion_kwargs, "ModuleLLM(...)")
        self.llm_model = llm_model
        self.api_base = api_base
        self.system_prompt = system_prompt
        self.api_key = api_key
        self.timeout = timeout
        self.retry = retry if retry is not None else RetryPolicy()
        self.batching = batching
        self.seed = seed
        self.agent = agent
        self.completion_kwargs = completion_kwargs
        self.provider = self._resolve_provider(llm_model, api_base, api_key)
        self._rng = random.Random(seed)
        self._batch_key = self._configuration_key()
        self.rate_limiter = rate_limiter
        self.circuit_breaker = check_circuit_breaker(circuit_breaker)
        self._routes = build_routes(
            (llm_model, self.provider, api_base, api_key),
            fallbacks,
            rate_limiter,
            self._resolve_provider,
        )
        self.fallbacks: tuple[Fallback, ...] = tuple(fallbacks or ())
        self._last_policies: Policies | None = None

    def __repr__(self) -> str:
        base = f", api_base={self.api_base!r}" if self.api_base else ""
        return f"ModuleLLM({self.llm_model!r}{base})"

    def generate(
        self,
        prompt: str | Sequence[str] | None = None,
        tool_schema: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: Any = "auto",
        response_format: Any = None,
        system_prompt: str | None = None,
        *,
        messages: Sequence[Any] | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        **kwargs: Any,
    ) -> ModelResponse:
        """Send one chat completion (retrying per ``retry``) and return litellm's ``ModelResponse``.

        ``prompt`` is one user message, or a list of strings: one user message each,
        in order. ``tool_schema`` is mesa-llm 0.3's name for ``tools`` (give one).
        ``system_prompt`` replaces the instance's for this call. Safe to call from
        many threads at once. Never batched.
        """
        tools = _tools_alias(tools, tool_schema)
        with self._attributed():
            request = self._request(
                prompt, messages, tools, tool_choice, response_format, kwargs, system_prompt
            )
            response = send(self._policies(), self._rng, request, _complete)
        record_usage(_answered_by(response, self.llm_model), response)
        return response

    async def agenerate(
        self,
        prompt: str | Sequence[str] | None = None,
        tool_schema: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: Any = "auto",
        response_format: Any = None,
        system_prompt: str | None = None,
        *,
        messages: Sequence[Any] | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        **kwargs: Any,
    ) -> ModelResponse:
        """Async :meth:`generate`; with ``batching``, each attempt is queued in the shared batch."""
        tools = _tools_alias(tools, tool_schema)
        with self._attributed():
            request = self._request(
                prompt, messages, tools, tool_choice, response_format, kwargs, system_prompt
            )
            response = await asend(self._policies(), self._rng, request, self._asend_one)
        record_usage(_answered_by(response, self.llm_model), response)
        return response

    def _policies(self) -> Policies:
        # retry and circuit_breaker are plain attributes users may swap: rebuilt when they do.
        policies = self._last_policies
        if (
            policies is None
            or policies.retry is not self.retry
            or policies.breaker is not self.circuit_breaker
        ):
            policies = self._last_policies = Policies(
                self._routes, self.retry, self.circuit_breaker
            )
        return policies

    async def _asend_one(self, route: Route, request: dict[str, Any]) -> ModelResponse:
        if self.batching is None:
            return await import_litellm().acompletion(**request)
        key = self._batch_key
        if route is not self._routes[0]:  # a fallback batches with its own configuration
            key = (route.provider, route.model, route.api_base, key[3] + repr(route.api_key))
        return await BatchProcessor.shared(key, self.batching).submit(request)

    def _request(
        self,
        prompt: str | Sequence[str] | None,
        messages: Sequence[Any] | None,
        tools: Sequence[Mapping[str, Any]] | None,
        tool_choice: Any,
        response_format: Any,
        kwargs: dict[str, Any],
        system_prompt: str | None = None,
    ) -> dict[str, Any]:
        """The ``litellm.completion`` keyword arguments of one call."""
        if kwargs:
            _reject_reserved(kwargs, "generate(...)")
        request: dict[str, Any] = {
            "model": self.llm_model,
            "messages": self._messages(prompt, messages, system_prompt),
        }
        if tools:
            request["tools"] = list(tools)
            request["tool_choice"] = tool_choice
            if _mcp_gateway_needs_skip() and all(_get(t, "type") == "function" for t in tools):
                # litellm routes any call with tools through its MCP gateway check, which
                # imports the optional `mcp` package (ModuleNotFoundError without it).
                # Function tools never use that gateway; litellm strips this flag itself.
                request["_skip_mcp_handler"] = True
        if response_format is not None:
            request["response_format"] = response_format
        for name in ("api_base", "api_key", "timeout"):
            if (value := getattr(self, name)) is not None:
                request[name] = value
        request.update(self.completion_kwargs)
        request.update(kwargs)
        # Who is calling, for fault-injecting servers (mesa_llm._identity); the caller's own
        # extra_headers win.
        request["extra_headers"] = {**identity_headers(), **(request.get("extra_headers") or {})}
        request["num_retries"] = 0
        request["max_retries"] = 0
        return request

    def _messages(
        self,
        prompt: str | Sequence[str] | None,
        messages: Sequence[Any] | None,
        system_prompt: str | None = None,
    ) -> list[Any]:
        system = self.system_prompt if system_prompt is None else system_prompt
        if prompt is None and not messages and system is None:
            raise ValueError(
                "mesa_llm: generate() needs prompt=... or messages=[...] (or a system "
                "prompt); prompt is a str or a list of str"
            )
        result = list(messages or ())
        if system is not None and not (result and _get(result[0], "role") == "system"):
            result.insert(0, {"role": "system", "content": system})
        result.extend({"role": "user", "content": text} for text in _prompt_texts(prompt))
        return result

    def _attributed(self) -> AbstractContextManager[Any]:
        """Attribute the call to ``agent`` unless a step already set ``current_agent()``."""
        if self.agent is None or current_agent() is not None:
            return nullcontext()
        return acting_as(self.agent)

    def _resolve_provider(self, llm_model: str, api_base: str | None, api_key: str | None) -> str:
        """The provider of a model; raise if litellm cannot resolve it or a key is missing."""
        prefix, _, rest = llm_model.partition("/")
        if prefix == _FAKE_PROVIDER and rest:
            return _FAKE_PROVIDER
        litellm = import_litellm()
        with _provider_lookup_lock:
            # litellm prints a provider list to stdout on failure; the library never prints.
            quiet, litellm.suppress_debug_info = litellm.suppress_debug_info, True  # type: ignore[attr-defined]
            try:
                model, provider, _, _ = litellm.get_llm_provider(
                    model=llm_model,
                    custom_llm_provider=self.completion_kwargs.get("custom_llm_provider"),
                    api_base=api_base,
                )
            except Exception as exc:
                raise UnknownModelError(llm_model) from exc
            finally:
                litellm.suppress_debug_info = quiet  # type: ignore[attr-defined]
        if api_key or api_base or provider in _KEYLESS_PROVIDERS or _api_key_check_skipped():
            return provider
        missing = litellm.validate_environment(model=f"{provider}/{model}")["missing_keys"]
        if missing:
            raise MissingAPIKeyError(llm_model, tuple(missing))
        return provider

    def _configuration_key(self) -> tuple[str, str, str | None, str]:
        """(provider, model, api_base, parameters): calls with equal keys may share a batch."""
        parameters = dict(self.completion_kwargs, timeout=self.timeout)
        if self.api_key is not None:  # tell keys apart without keeping another copy around
            parameters["api_key"] = hashlib.blake2b(
                self.api_key.encode(), digest_size=8
            ).hexdigest()
        frozen = json.dumps(parameters, sort_keys=True, default=repr)
        return (self.provider, self.llm_model, self.api_base, frozen)


def _prompt_texts(prompt: Any) -> list[str]:
    """A prompt as user-message texts: a str is one, a list of str one each, None none."""
    if prompt is None:
        return []
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list | tuple):
        for index, item in enumerate(prompt):
            if not isinstance(item, str):
                raise TypeError(
                    f"mesa_llm: generate(prompt=[...]) item {index} is "
                    f"{type(item).__name__}; every item must be a str"
                )
        return list(prompt)
    raise TypeError(
        f"mesa_llm: generate(prompt=...) must be a str, a list of str or None, "
        f"got {type(prompt).__name__}"
    )


def _tools_alias(tools: Any, tool_schema: Any) -> Any:
    if tools is not None and tool_schema is not None:
        raise ValueError(
            "mesa_llm: generate() got both tools=... and tool_schema=... (the same option "
            "under mesa-llm 0.3's name); give one"
        )
    return tools if tools is not None else tool_schema


def _get(item: Any, name: str) -> Any:
    return item.get(name) if isinstance(item, _MAPS) else getattr(item, name, None)


def _reject_reserved(kwargs: Mapping[str, Any], where: str) -> None:
    for name, reason in _RESERVED_KWARGS.items():
        if name in kwargs and (name != "stream" or kwargs[name]):
            raise ValueError(f"mesa_llm: {where} does not accept {name}=...; {reason}")


@functools.cache
def _mcp_gateway_needs_skip() -> bool:
    """True when litellm has an MCP gateway check (it knows the skip flag) but no `mcp`."""
    from importlib.util import find_spec

    try:
        has_gateway = find_spec("litellm.responses.mcp") is not None
    except ModuleNotFoundError:
        has_gateway = False
    return has_gateway and find_spec("mcp") is None


def _complete(route: Route, request: dict[str, Any]) -> ModelResponse:
    # Looked up at call time, so a harness wrapping litellm.completion sees the call.
    return import_litellm().completion(**request)


def _answered_by(response: Any, asked: str) -> str:
    """The model that answered (a fallback's, see ``_resilience``), else the one asked for."""
    hidden = hidden_params(response)
    model = None if hidden is None else hidden.get("mesa_llm_model")
    return model if isinstance(model, str) else asked
