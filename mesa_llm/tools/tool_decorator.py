"""The ``@tool`` decorator: a plain (sync or async) function becomes a ``Tool`` (OpenAI schema).

The schema is built from the function's type hints and its Google-style docstring.
A parameter named ``agent`` is not shown to the LLM: the manager passes the
calling agent in, so a tool acts on whoever called it.

Two spellings: ours (``@tool``, ``@tool(name=..., description=...)``, managers
given the tools explicitly) and mesa-llm 0.3's (``@tool(tool_manager=m)``
registers in ``m``; a bare ``@tool`` also registers the tool in the global registry
that every release-style ``ToolManager()`` starts from). Either way the result is
a ``Tool``: callable like the function, with ``__tool_schema__``.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mesa_llm.tools._schema import (
    _coerce,
    _describe,
    _Mismatch,
    _parse_docstring,
    _resolve_annotation,
    _schema_for,
)

__all__ = [
    "DocstringParsingError",
    "Tool",
    "ToolCall",
    "add_tool_callback",
    "tool",
]

#: Tools registered by a bare ``@tool`` (and the built-ins): mesa-llm 0.3's global registry.
_GLOBAL_TOOL_REGISTRY: dict[str, Tool] = {}
_callbacks: list[Callable[[Tool], None]] = []


class DocstringParsingError(ValueError):
    """mesa-llm 0.3's docstring error (ours is lenient: a missing docstring is no error)."""


def add_tool_callback(callback: Callable[[Tool], None]) -> None:
    """Call ``callback(tool)`` for every tool registered globally from now on."""
    _callbacks.append(callback)


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
        ignore_agent: bool = True,
    ) -> None:
        self.function = function
        self.name: str = name or function.__name__
        self.__name__ = self.name  # release-style code registers tools by ``fn.__name__``
        self.__qualname__ = getattr(function, "__qualname__", self.name)
        self.__module__ = getattr(function, "__module__", __name__)
        summary, arg_docs = _parse_docstring(function.__doc__)
        self.description: str = description if description is not None else summary
        self.__doc__ = function.__doc__
        self.__wrapped__ = function

        params = list(inspect.signature(function).parameters.values())
        # A parameter named ``agent`` (anywhere) receives the calling agent; with
        # ``ignore_agent`` (the default) the LLM does not see it.
        self.takes_agent: bool = any(param.name == "agent" for param in params)
        if ignore_agent:
            params = [param for param in params if param.name != "agent"]
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

    @property
    def __tool_schema__(self) -> dict[str, Any]:
        """The schema under mesa-llm 0.3's attribute name."""
        return self.schema

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
        unexpected = [
            name
            for name in call.arguments
            if name not in self._hints and not (name == "agent" and self.takes_agent)
        ]
        if unexpected:
            problems.append(f"unexpected {', '.join(map(repr, unexpected))}")
        kwargs: dict[str, Any] = {}
        for name, value in call.arguments.items():
            if name not in self._hints or (name == "agent" and self.takes_agent):
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


def tool(
    function: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    tool_manager: Any = None,
    ignore_agent: bool = True,
) -> Any:
    """Make ``function`` a ``Tool``.

    Use bare (``@tool``) or with arguments: ``name``/``description`` override the
    function's; ``tool_manager`` registers the tool in that manager only;
    ``ignore_agent=False`` shows an ``agent`` parameter to the LLM (it is still
    replaced by the calling agent). Without ``tool_manager`` the tool also goes to
    the global registry (mesa-llm 0.3): every release-style ``ToolManager()`` offers it.
    """

    def make(fn: Callable[..., Any]) -> Tool:
        made = Tool(
            getattr(fn, "function", fn),
            name=name,
            description=description,
            ignore_agent=ignore_agent,
        )
        if tool_manager is not None:
            tool_manager.register(made)
        else:
            register_global(made)
        return made

    return make(function) if function is not None else make


def register_global(made: Tool) -> None:
    """Put ``made`` in the global registry and in every release-style manager that exists."""
    _GLOBAL_TOOL_REGISTRY[made.name] = made
    for callback in list(_callbacks):
        callback(made)


def _arguments_error(
    message: str, call: ToolCall, agent: Any, *, raw: str | None = None
) -> Exception:
    from mesa_llm.errors import ToolArgumentsError

    if raw is None:
        raw = json.dumps(call.arguments, default=str)
    model = getattr(agent, "model", None)
    return ToolArgumentsError(
        message,
        raw=raw,
        agent_id=getattr(agent, "unique_id", None),
        step=getattr(model, "steps", None),
    )
