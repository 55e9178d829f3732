"""``ToolManager``: the tools one agent may call; lists their schemas and executes calls."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import json
import logging
import weakref
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar, TypeVar

from mesa_llm.errors import UnknownToolError
from mesa_llm.tools.tool_decorator import (
    _GLOBAL_TOOL_REGISTRY,
    Tool,
    ToolCall,
    _arguments_error,
    add_tool_callback,
)

__all__ = ["ToolManager"]

logger = logging.getLogger(__name__)
_T = TypeVar("_T")


class ToolManager:
    """The tools one agent may call: the global defaults plus its own; lists and executes them.

    Tools registered with ``ToolManager.register_default`` are copied into every
    manager created afterwards (unless ``include_defaults=False``).

    Two spellings. Ours: ``ToolManager([fn, ...])`` holds exactly the defaults and
    those tools. mesa-llm 0.3's: ``ToolManager()`` or ``ToolManager(extra_tools)``
    (a ``{name: function}`` mapping) also starts from the global registry (the
    built-in ``move_one_step``, ``teleport_to_location``, ``speak_to`` and every
    bare ``@tool``) and receives tools registered globally later.
    """

    defaults: ClassVar[dict[str, Tool]] = {}
    #: Release-style managers, weakly held (the release keeps every manager alive).
    instances: ClassVar[weakref.WeakSet[ToolManager]] = weakref.WeakSet()

    def __init__(
        self,
        tools: Iterable[Callable[..., Any]] | Mapping[str, Callable[..., Any]] | None = None,
        *,
        include_defaults: bool = True,
        extra_tools: Mapping[str, Callable[..., Any]] | None = None,
    ) -> None:
        self._tools: dict[str, Tool] = dict(self.defaults) if include_defaults else {}
        release_style = tools is None or isinstance(tools, Mapping)
        if release_style and include_defaults:
            import mesa_llm.tools.inbuilt_tools  # noqa: F401  (registers the built-ins once)

            self._tools.update(_GLOBAL_TOOL_REGISTRY)
            ToolManager.instances.add(self)
        if isinstance(tools, Mapping):
            extra_tools = {**tools, **(extra_tools or {})}
        else:
            for fn in tools or ():
                self.register(fn)
        for name, fn in (extra_tools or {}).items():
            self._tools[name] = _as_tool(fn, name)

    @property
    def tools(self) -> dict[str, Tool]:
        """The tools by name (live: mesa-llm 0.3 code adds to it directly)."""
        return self._tools

    @classmethod
    def add_tool_to_all(cls, function: Callable[..., Any]) -> None:
        """Register ``function`` on every release-style manager that exists."""
        for manager in list(cls.instances):
            manager.register(function)

    @classmethod
    def register_default(cls, function: Callable[..., Any]) -> Tool:
        """Register a tool every ``ToolManager`` created from now on has; usable as a decorator."""
        registered = _as_tool(function)
        cls.defaults[registered.name] = registered
        return registered

    @classmethod
    def unregister_default(cls, name: str) -> None:
        """Remove a default tool (managers already created keep it)."""
        cls.defaults.pop(name, None)

    def register(self, function: Callable[..., Any]) -> Tool:
        """Add a tool (a function or a ``Tool``) to this manager, replacing one of the same name."""
        registered = _as_tool(function)
        self._tools[registered.name] = registered
        return registered

    def unregister(self, name: str) -> None:
        """Remove the tool called ``name`` (no error if absent)."""
        self._tools.pop(name, None)

    @property
    def names(self) -> list[str]:
        """Registered tool names, in registration order."""
        return list(self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> Iterator[Tool]:
        return iter([self.get(name) for name in list(self._tools)])

    def __len__(self) -> int:
        return len(self._tools)

    def get(self, name: str) -> Tool:
        """The tool called ``name``; ``UnknownToolError`` if there is none."""
        try:
            found = self._tools[name]
        except KeyError:
            raise UnknownToolError(name, self.names) from None
        if not isinstance(found, Tool):  # put into ``.tools`` by hand
            found = self._tools[name] = _as_tool(found, name)
        return found

    def schemas(self) -> list[dict[str, Any]]:
        """The ``tools=`` list to send to the LLM."""
        return [self.get(name).schema for name in list(self._tools)]

    def parse(self, tool_calls: Iterable[Any] | None, *, agent: Any = None) -> list[ToolCall]:
        """Turn the provider's tool calls (litellm objects or dicts) into checked ``ToolCall``s.

        Raises ``UnknownToolError`` for a tool that is not registered and
        ``ToolArgumentsError`` (with the raw argument text) for arguments that are
        not a JSON object or do not match the tool's signature.
        """
        calls: list[ToolCall] = []
        for index, raw_call in enumerate(tool_calls or ()):
            function = _field(raw_call, "function")
            name = str(_field(function, "name") or "")
            raw_arguments = _field(function, "arguments")
            call_id = str(_field(raw_call, "id") or f"call_{index}")
            if isinstance(raw_arguments, dict):
                arguments = raw_arguments
            else:
                text = raw_arguments or "{}"
                try:
                    arguments = json.loads(text)
                except (TypeError, ValueError) as exc:
                    raise _arguments_error(
                        f"arguments of tool {name!r} are not valid JSON ({exc})",
                        ToolCall(name, {}, call_id),
                        agent,
                        raw=str(text),
                    ) from exc
                if not isinstance(arguments, dict):
                    raise _arguments_error(
                        f"arguments of tool {name!r} must be a JSON object",
                        ToolCall(name, {}, call_id),
                        agent,
                        raw=str(text),
                    )
            call = ToolCall(name, arguments, call_id)
            self.get(name).bind(call, agent)
            calls.append(call)
        return calls

    def execute(self, agent: Any, call: ToolCall) -> Any:
        """Run one tool call for ``agent`` and return the tool's result.

        An async tool is run to completion here: on a fresh event loop, or, when
        this thread already runs a loop, on one in a helper thread (blocking the
        caller's loop meanwhile; in async code prefer ``aexecute``).
        """
        registered = self.get(call.name)
        result = registered.function(**registered.bind(call, agent))
        if inspect.isawaitable(result):
            result = _run_blocking(result)
        return result

    async def aexecute(self, agent: Any, call: ToolCall) -> Any:
        """Run one tool call for ``agent``, awaiting it if the tool is async."""
        registered = self.get(call.name)
        result = registered.function(**registered.bind(call, agent))
        if inspect.isawaitable(result):
            result = await result
        return result

    # -- mesa-llm 0.3 spellings ------------------------------------------------------------

    def has_tool(self, name: str) -> bool:
        """Whether a tool called ``name`` is registered."""
        return name in self._tools

    def get_tool_schema(self, function: Callable[..., Any], schema_name: str) -> dict[str, Any]:
        """``function``'s schema (release spelling)."""
        schema = getattr(function, "__tool_schema__", None)
        return schema if schema is not None else {"error": f"Tool {schema_name} has no schema"}

    def get_all_tools_schema(self, selected_tools: list[str] | None = None) -> list[dict[str, Any]]:
        """The schemas of ``selected_tools`` in that order (None: every tool; ``[]``: none).

        Raises ``ValueError`` naming unknown tools and the available ones.
        """
        if selected_tools is None:
            return self.schemas()
        unknown = [name for name in selected_tools if name not in self._tools]
        if unknown:
            raise ValueError(
                f"mesa_llm: unknown tool name(s) {unknown}; available tools: {sorted(self._tools)}"
            )
        return [self.get(name).schema for name in selected_tools]

    def call(self, name: str, arguments: dict[str, Any]) -> Any:
        """Call the tool ``name`` with ``arguments`` as they are (no agent passed in)."""
        return self.get(name).function(**arguments)

    def call_tools(self, agent: Any, llm_response: Any) -> list[dict[str, Any]]:
        """Run the tool calls of an LLM message, in order; one result dict per call.

        Each result is ``{"tool_call_id", "role": "tool", "name", "response"}``; a
        failing call (unknown tool, bad arguments, the tool raising an ``Exception``)
        gives ``"response": "Error: ..."`` and is logged with the agent's id, so the
        LLM sees it in its next prompt. Async tools are run to completion.
        """
        return [self._respond(agent, raw, index, False) for index, raw in _raw_calls(llm_response)]

    async def acall_tools(self, agent: Any, llm_response: Any) -> list[dict[str, Any]]:
        """Async ``call_tools``: async tools are awaited, in order."""
        results = []
        for index, raw in _raw_calls(llm_response):
            result = self._respond(agent, raw, index, True)
            if inspect.isawaitable(result):
                result = await result
            results.append(result)
        return results

    def _respond(self, agent: Any, raw: Any, index: int, in_loop: bool) -> Any:
        function = _field(raw, "function")
        name = str(_field(function, "name") or "unknown")
        call_id = str(_field(raw, "id") or f"call_{index}")
        try:
            (call,) = self.parse([raw], agent=agent)
            registered = self.get(call.name)
            result = registered.function(**registered.bind(call, agent))
            if inspect.isawaitable(result):
                if in_loop:
                    return _awaited_response(result, agent, call_id, name)
                result = _run_blocking(result)
        except Exception as exc:  # the LLM sees the error as the call's result
            return _error_response(agent, call_id, name, exc)
        return _response(call_id, name, result)


async def _awaited_response(
    awaitable: Awaitable[Any], agent: Any, call_id: str, name: str
) -> dict[str, Any]:
    try:
        result = await awaitable
    except Exception as exc:
        return _error_response(agent, call_id, name, exc)
    return _response(call_id, name, result)


def _response(call_id: str, name: str, result: Any) -> dict[str, Any]:
    text = f"{name} executed successfully" if result is None else str(result)
    return {"tool_call_id": call_id, "role": "tool", "name": name, "response": text}


def _error_response(agent: Any, call_id: str, name: str, exc: Exception) -> dict[str, Any]:
    logger.warning(
        "mesa_llm: tool call %r of agent %s failed: %s: %s",
        name,
        getattr(agent, "unique_id", agent),
        type(exc).__name__,
        exc,
    )
    return {"tool_call_id": call_id, "role": "tool", "name": name, "response": f"Error: {exc}"}


def _raw_calls(llm_response: Any) -> list[tuple[int, Any]]:
    calls = _field(llm_response, "tool_calls") if not isinstance(llm_response, str) else None
    return list(enumerate(calls or ()))


def _as_tool(function: Callable[..., Any], name: str | None = None) -> Tool:
    if isinstance(function, Tool):
        return function
    made = Tool(function, name=name)
    schema = getattr(function, "__tool_schema__", None)
    if isinstance(schema, Mapping) and isinstance(schema.get("function"), Mapping):
        declared = schema["function"]  # a hand-written schema wins over the inferred one
        made.description = declared.get("description", made.description)
        made.parameters = dict(declared.get("parameters", made.parameters))
    return made


def _field(obj: Any, name: str) -> Any:
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


def _run_blocking(awaitable: Awaitable[_T]) -> _T:
    async def wait() -> _T:
        return await awaitable

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(wait())
    context = contextvars.copy_context()  # keeps current_agent() in the helper thread
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(context.run, asyncio.run, wait()).result()


add_tool_callback(ToolManager.add_tool_to_all)
