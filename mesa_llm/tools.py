"""Tools an LLM agent can call: the ``@tool`` decorator and the ``ToolManager`` that runs them.

``@tool`` turns a plain (sync or async) function into an OpenAI function-calling
schema built from its type hints and its Google-style docstring. A first
parameter named ``agent`` is not shown to the LLM: the manager passes the
calling agent in, so a tool acts on whoever called it.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import json
import re
import types
from collections.abc import Awaitable, Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeVar, Union, get_args, get_origin, overload

from mesa_llm.errors import ToolArgumentsError, UnknownToolError

__all__ = ["Tool", "ToolCall", "ToolManager", "tool"]

_T = TypeVar("_T")
_NONE_TYPE = type(None)
_JSON_TYPES: dict[type, str] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    dict: "object",
}
_SECTION = re.compile(r"^(Args|Arguments|Parameters):\s*$")
_ARG_LINE = re.compile(r"^(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")


@dataclass(frozen=True)
class ToolCall:
    """One tool call chosen by the LLM: the tool's name, its keyword arguments and the call id."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    id: str = ""

    def __str__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.arguments.items())
        return f"{self.name}({args})"


class Tool:
    """A function the LLM can call, with its OpenAI schema; calling it calls the function."""

    def __init__(
        self,
        function: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
    ) -> None:
        self.function = function
        self.name: str = name or function.__name__
        summary, arg_docs = _parse_docstring(function.__doc__)
        self.description: str = description if description is not None else summary
        self.__doc__ = function.__doc__
        self.__wrapped__ = function

        params = list(inspect.signature(function).parameters.values())
        self.takes_agent: bool = bool(params) and params[0].name == "agent"
        if self.takes_agent:
            params = params[1:]
        self._hints: dict[str, Any] = {}
        self._required: list[str] = []
        properties: dict[str, Any] = {}
        for param in params:
            if param.kind not in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY):
                raise TypeError(
                    f"mesa_llm: tool {self.name!r} parameter {param.name!r} is "
                    f"{param.kind.description}; tools take named parameters only"
                )
            hint = _resolve_annotation(function, param)
            self._hints[param.name] = hint
            schema = _schema_for(hint, f"tool {self.name!r} parameter {param.name!r}")
            if param.name in arg_docs:
                schema = {**schema, "description": arg_docs[param.name]}
            properties[param.name] = schema
            if param.default is param.empty:
                self._required.append(param.name)
        self.parameters: dict[str, Any] = {
            "type": "object",
            "properties": properties,
            "required": list(self._required),
        }

    @property
    def schema(self) -> dict[str, Any]:
        """The OpenAI ``tools=`` entry for this tool."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.function(*args, **kwargs)

    def __repr__(self) -> str:
        return f"Tool({self.name!r})"

    def bind(self, call: ToolCall, agent: Any = None) -> dict[str, Any]:
        """Check ``call``'s arguments against the signature; return the keyword arguments to use.

        Raises ``ToolArgumentsError`` for missing, unexpected or wrongly typed arguments.
        """
        problems: list[str] = []
        missing = [name for name in self._required if name not in call.arguments]
        if missing:
            problems.append(f"missing {', '.join(map(repr, missing))}")
        unexpected = [name for name in call.arguments if name not in self._hints]
        if unexpected:
            problems.append(f"unexpected {', '.join(map(repr, unexpected))}")
        kwargs: dict[str, Any] = {}
        for name, value in call.arguments.items():
            if name not in self._hints:
                continue
            try:
                kwargs[name] = _coerce(value, self._hints[name])
            except _Mismatch:
                problems.append(f"{name!r} must be {_describe(self._hints[name])}, got {value!r}")
        if problems:
            raise _arguments_error(
                f"arguments of tool {self.name!r} do not match its signature: "
                + "; ".join(problems),
                call,
                agent,
            )
        if self.takes_agent:
            kwargs["agent"] = agent
        return kwargs


@overload
def tool(function: Callable[..., Any], /) -> Tool: ...
@overload
def tool(
    *, name: str | None = None, description: str | None = None
) -> Callable[[Callable[..., Any]], Tool]: ...
def tool(
    function: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Make ``function`` a ``Tool``; use bare (``@tool``) or with ``name``/``description``."""
    if function is not None:
        return Tool(function, name=name, description=description)
    return lambda fn: Tool(fn, name=name, description=description)


class ToolManager:
    """The tools one agent may call: the global defaults plus its own; lists and executes them.

    Tools registered with ``ToolManager.register_default`` are copied into every
    manager created afterwards (unless ``include_defaults=False``).
    """

    defaults: ClassVar[dict[str, Tool]] = {}

    def __init__(
        self,
        tools: Iterable[Callable[..., Any]] = (),
        *,
        include_defaults: bool = True,
    ) -> None:
        self._tools: dict[str, Tool] = dict(self.defaults) if include_defaults else {}
        for fn in tools:
            self.register(fn)

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
        return iter(list(self._tools.values()))

    def __len__(self) -> int:
        return len(self._tools)

    def get(self, name: str) -> Tool:
        """The tool called ``name``; ``UnknownToolError`` if there is none."""
        try:
            return self._tools[name]
        except KeyError:
            raise UnknownToolError(name, self.names) from None

    def schemas(self) -> list[dict[str, Any]]:
        """The ``tools=`` list to send to the LLM."""
        return [registered.schema for registered in self._tools.values()]

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


class _Mismatch(Exception):
    """A value does not fit a type hint."""


def _as_tool(function: Callable[..., Any]) -> Tool:
    return function if isinstance(function, Tool) else Tool(function)


def _field(obj: Any, name: str) -> Any:
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


def _arguments_error(
    message: str, call: ToolCall, agent: Any, *, raw: str | None = None
) -> ToolArgumentsError:
    if raw is None:
        raw = json.dumps(call.arguments, default=str)
    model = getattr(agent, "model", None)
    return ToolArgumentsError(
        message,
        raw=raw,
        agent_id=getattr(agent, "unique_id", None),
        step=getattr(model, "steps", None),
    )


def _parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """(first paragraph as one line, {argument: description}) of a Google-style docstring."""
    lines = inspect.cleandoc(doc or "").splitlines()
    summary: list[str] = []
    for line in lines:
        if not line.strip() or _SECTION.match(line):
            break
        summary.append(line.strip())
    arg_docs: dict[str, str] = {}
    in_args = False
    current: str | None = None
    arg_indent = 0
    for line in lines:
        if _SECTION.match(line):
            in_args, current = True, None
            continue
        if not in_args:
            continue
        if line.strip() and not line[0].isspace():
            break  # the next section ("Returns:", ...) starts at the left margin
        entry = _ARG_LINE.match(line.strip())
        indent = len(line) - len(line.lstrip())
        if entry and (current is None or indent <= arg_indent):
            current = entry.group(1).lstrip("*")
            arg_indent = indent
            arg_docs[current] = entry.group(2).strip()
        elif current is not None and line.strip():
            arg_docs[current] = f"{arg_docs[current]} {line.strip()}".strip()
    return " ".join(summary), arg_docs


def _resolve_annotation(function: Callable[..., Any], param: inspect.Parameter) -> Any:
    annotation = param.annotation
    if annotation is param.empty:
        return Any
    if isinstance(annotation, str):
        # Evaluated one by one (unlike typing.get_type_hints) so that an ``agent``
        # annotation imported only under TYPE_CHECKING does not break the others.
        namespace = getattr(inspect.unwrap(function), "__globals__", {})
        try:
            annotation = eval(annotation, namespace)
        except NameError as exc:
            raise TypeError(
                f"mesa_llm: tool {function.__name__!r} parameter {param.name!r} has type "
                f"{annotation!r}, which is not defined at run time ({exc}); import it outside "
                "`if TYPE_CHECKING:`"
            ) from exc
    return annotation


def _schema_for(hint: Any, where: str) -> dict[str, Any]:
    origin, args = get_origin(hint), get_args(hint)
    if hint is Any:
        return {}
    if hint in _JSON_TYPES:
        return {"type": _JSON_TYPES[hint]}
    if hint in (list, tuple):
        return {"type": "array"}
    if origin is dict:
        return {"type": "object"}
    if origin is list:
        return {"type": "array", "items": _schema_for(args[0], where)}
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return {"type": "array", "items": _schema_for(args[0], where)}
        if args and all(arg == args[0] for arg in args):
            items = _schema_for(args[0], where)
            return {"type": "array", "items": items, "minItems": len(args), "maxItems": len(args)}
    if origin is Literal:
        kinds = {_JSON_TYPES.get(type(value)) for value in args}
        schema: dict[str, Any] = {"enum": list(args)}
        if len(kinds) == 1 and None not in kinds:
            schema["type"] = kinds.pop()
        return schema
    if origin in (Union, types.UnionType):
        options = [_schema_for(arg, where) for arg in args if arg is not _NONE_TYPE]
        if _NONE_TYPE in args:
            options.append({"type": "null"})
        return {"anyOf": options}
    raise TypeError(
        f"mesa_llm: {where} has type {hint!r}, which a tool cannot take; use str, int, "
        "float, bool, dict, list[...], tuple[...], Literal[...], Optional[...] or a union"
    )


def _coerce(value: Any, hint: Any) -> Any:
    """``value`` converted to fit ``hint`` (arrays to tuples, ints to floats), or ``_Mismatch``."""
    origin, args = get_origin(hint), get_args(hint)
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif hint in (str, dict, list):
        if isinstance(value, hint):
            return value
    elif hint is tuple or origin is tuple:
        if isinstance(value, list | tuple):
            if not args:
                return tuple(value)
            if len(args) == 2 and args[1] is Ellipsis:
                return tuple(_coerce(item, args[0]) for item in value)
            if len(value) == len(args):
                return tuple(_coerce(item, arg) for item, arg in zip(value, args, strict=True))
    elif origin is list:
        if isinstance(value, list):
            return [_coerce(item, args[0]) for item in value]
    elif origin is dict:
        if isinstance(value, dict):
            return value
    elif origin is Literal:
        for option in args:
            if value == option and type(value) is type(option):
                return option
    elif origin in (Union, types.UnionType):
        if value is None and _NONE_TYPE in args:
            return None
        for arg in args:
            if arg is _NONE_TYPE:
                continue
            try:
                return _coerce(value, arg)
            except _Mismatch:
                continue
    raise _Mismatch


def _describe(hint: Any) -> str:
    if get_origin(hint) is Literal:
        return "one of " + ", ".join(repr(option) for option in get_args(hint))
    if isinstance(hint, type):
        return hint.__name__
    return str(hint).replace("typing.", "")


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
