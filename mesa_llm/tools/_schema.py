"""Type hints and docstrings of tool functions: JSON schemas, argument coercion, descriptions."""

from __future__ import annotations

import inspect
import re
import types
from collections.abc import Callable
from typing import Any, Literal, Union, get_args, get_origin

__all__: list[str] = []

_NONE_TYPE = type(None)
_JSON_TYPES: dict[type, str] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    dict: "object",
}
# Sections may be indented (docstrings whose summary starts on the opening line).
_SECTION = re.compile(r"^\s*(Args|Arg|Arguments|Parameters):\s*$", re.IGNORECASE)
_OTHER_SECTION = re.compile(r"^\s*(Returns?|Raises?|Yields?|Examples?|Notes?):\s*$", re.IGNORECASE)
_ARG_LINE = re.compile(r"^(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")


class _Mismatch(Exception):
    """A value does not fit a type hint."""


def _parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """(first paragraph as one line, {argument: description}) of a Google-style docstring.

    The ``Args:`` section may be indented (as in a docstring whose summary starts on
    the opening quotes line); it ends at a line indented no deeper than its header
    or at another section header.
    """
    lines = inspect.cleandoc(doc or "").splitlines()
    summary: list[str] = []
    for line in lines:
        if not line.strip() or _SECTION.match(line) or _OTHER_SECTION.match(line):
            break
        summary.append(line.strip())
    arg_docs: dict[str, str] = {}
    section_indent: int | None = None
    current: str | None = None
    arg_indent = 0
    for line in lines:
        indent = len(line) - len(line.lstrip())
        if _SECTION.match(line):
            section_indent, current = indent, None
            continue
        if section_indent is None or not line.strip():
            continue
        if indent <= section_indent or _OTHER_SECTION.match(line):
            section_indent = None  # the next section ("Returns:", ...) starts
            continue
        entry = _ARG_LINE.match(line.strip())
        if entry and (current is None or indent <= arg_indent):
            current = entry.group(1).lstrip("*")
            arg_indent = indent
            arg_docs[current] = entry.group(2).strip()
        elif current is not None:
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
    if hint in (list, tuple, set, frozenset):
        return {"type": "array"}
    if origin is dict:
        return {"type": "object"}
    if origin in (list, set, frozenset):
        items = _schema_for(args[0], where) if args else {}
        unique = {"uniqueItems": True} if origin is not list else {}
        return {"type": "array", "items": items, **unique}
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return {"type": "array", "items": _schema_for(args[0], where)}
        if args and all(arg == args[0] for arg in args):
            items = _schema_for(args[0], where)
            return {"type": "array", "items": items, "minItems": len(args), "maxItems": len(args)}
        if args:  # mixed types, e.g. tuple[str, int]: each position typed
            return {
                "type": "array",
                "prefixItems": [_schema_for(arg, where) for arg in args],
                "items": {"anyOf": [_schema_for(arg, where) for arg in dict.fromkeys(args)]},
                "minItems": len(args),
                "maxItems": len(args),
            }
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
        "float, bool, dict, list[...], set[...], tuple[...], Literal[...], Optional[...] or a union"
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
    elif hint in (set, frozenset) or origin in (set, frozenset):
        if isinstance(value, list | tuple | set | frozenset):
            items = [_coerce(item, args[0]) for item in value] if args else list(value)
            try:
                return (origin or hint)(items)
            except TypeError:  # unhashable items
                raise _Mismatch from None
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
