"""Values for a JSON schema: valid ones for tool arguments and structured output, and
valid JSON that breaks the schema (the fake's MALFORMED_JSON replies).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

from mesa_llm_testing._rng import _WORDS, Rng

__all__ = ["SchemaValues", "violate_schema"]

_MAPS: Final = (dict, Mapping)  # dict first: isinstance on the ABC alone is slow
_MAX_DEPTH: Final = 6


def violate_schema(schema: Mapping[str, Any], rng: Rng) -> Any:
    """Valid JSON that does not match ``schema``: a required field missing, or the wrong type."""
    resolved = SchemaValues(schema, rng).resolve(schema)
    valid = SchemaValues(schema, rng).value()
    required = resolved.get("required") or []
    if isinstance(valid, dict) and required:
        broken = dict(valid)
        broken.pop(required[rng.below(len(required))], None)
        return broken
    kind = _type_of(resolved)
    if kind == "object":
        return [valid]
    if kind == "array":
        return {"items": valid}
    if kind in ("integer", "number", "boolean", "null"):
        return "not a " + kind
    return {"unexpected": valid}


def _type_of(schema: Mapping[str, Any]) -> str | None:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), kind[0] if kind else None)
    if kind is None and "properties" in schema:
        return "object"
    return kind if isinstance(kind, str) else None


class SchemaValues:
    """Plausible values for a JSON schema (the subset tools and structured outputs use)."""

    __slots__ = ("_rng", "_root")

    def __init__(self, root: Mapping[str, Any], rng: Rng) -> None:
        self._root = root
        self._rng = rng

    def value(self) -> Any:
        """A value matching the root schema."""
        return self._gen(self._root, "value", 0)

    def resolve(self, schema: Mapping[str, Any]) -> Mapping[str, Any]:
        """``schema`` with local ``$ref`` and ``allOf`` merged in."""
        seen = 0
        while "$ref" in schema and seen < 16:
            schema = {
                **self._lookup(str(schema["$ref"])),
                **{k: v for k, v in schema.items() if k != "$ref"},
            }
            seen += 1
        if "allOf" in schema:
            merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
            for part in schema["allOf"]:
                part = self.resolve(part)
                for key, val in part.items():
                    if key == "properties":
                        merged["properties"] = {**merged.get("properties", {}), **val}
                    elif key == "required":
                        merged["required"] = [*merged.get("required", []), *val]
                    else:
                        merged.setdefault(key, val)
            schema = merged
        return schema

    def _lookup(self, ref: str) -> Mapping[str, Any]:
        if not ref.startswith("#/"):
            return {}
        node: Any = self._root
        for part in ref[2:].split("/"):
            node = (
                node.get(part.replace("~1", "/").replace("~0", "~"), {})
                if isinstance(node, _MAPS)
                else {}
            )
        return node if isinstance(node, _MAPS) else {}

    def _gen(self, schema: Any, name: str, depth: int) -> Any:
        if not isinstance(schema, _MAPS):
            return None
        if "$ref" in schema or "allOf" in schema:
            schema = self.resolve(schema)
        rng = self._rng
        if "const" in schema:
            return schema["const"]
        if schema.get("enum"):
            return rng.choice(schema["enum"])
        options = schema.get("anyOf") or schema.get("oneOf")
        if options:
            non_null = [
                o for o in options if not (isinstance(o, _MAPS) and o.get("type") == "null")
            ]
            return self._gen(rng.choice(non_null or options), name, depth + 1)
        if "default" in schema and rng.below(4) == 0:
            return schema["default"]
        kind = schema.get("type")
        if not isinstance(kind, str):
            kind = _type_of(schema)
        if kind == "object" or (kind is None and "properties" in schema):
            return self._object(schema, depth)
        if kind == "array":
            return self._array(schema, name, depth)
        if kind == "integer":
            lo, hi = self._bounds(schema, integer=True)
            return int(lo) + rng.below(int(hi) - int(lo) + 1)
        if kind == "number":
            lo, hi = self._bounds(schema, integer=False)
            return round(lo + (hi - lo) * rng.uniform(), 2) if hi > lo else lo
        if kind == "boolean":
            return rng.below(2) == 1
        if kind == "null":
            return None
        return self._string(schema, name)

    def _object(self, schema: Mapping[str, Any], depth: int) -> dict[str, Any]:
        props: Mapping[str, Any] = schema.get("properties") or {}
        required = set(schema.get("required") or [])
        out: dict[str, Any] = {}
        for key, sub in props.items():
            if depth >= _MAX_DEPTH and key not in required:
                continue
            out[key] = self._gen(sub, key, depth + 1)
        return out

    def _array(self, schema: Mapping[str, Any], name: str, depth: int) -> list[Any]:
        lo = int(schema.get("minItems", 0))
        hi = int(schema.get("maxItems", max(lo, 3)))
        count = lo if depth >= _MAX_DEPTH else min(hi, max(lo, 1 + self._rng.below(3)))
        prefix = schema.get("prefixItems") or []
        items = schema.get("items", {})
        out = [self._gen(prefix[i], name, depth + 1) for i in range(min(count, len(prefix)))]
        while len(out) < count:
            out.append(self._gen(items, name, depth + 1))
        if schema.get("uniqueItems"):
            unique: list[Any] = []
            for item in out:
                if item not in unique:
                    unique.append(item)
            out = unique if len(unique) >= lo else out
        return out

    @staticmethod
    def _bounds(schema: Mapping[str, Any], *, integer: bool) -> tuple[float, float]:
        step = 1.0 if integer else 0.01
        lo: float | None = schema.get("minimum")
        if "exclusiveMinimum" in schema and not isinstance(schema["exclusiveMinimum"], bool):
            lo = schema["exclusiveMinimum"] + step
        hi: float | None = schema.get("maximum")
        if "exclusiveMaximum" in schema and not isinstance(schema["exclusiveMaximum"], bool):
            hi = schema["exclusiveMaximum"] - step
        if lo is None:
            lo = 0.0 if hi is None else hi - 10
        if hi is None:
            hi = lo + 10
        if integer:
            lo, hi = float(math.ceil(lo)), float(math.floor(hi))
        return float(lo), float(max(lo, hi))

    def _string(self, schema: Mapping[str, Any], name: str) -> str:
        rng = self._rng
        fmt = schema.get("format")
        if fmt == "date-time":
            text = f"2024-01-{1 + rng.below(28):02d}T{rng.below(24):02d}:00:00Z"
        elif fmt == "date":
            text = f"2024-01-{1 + rng.below(28):02d}"
        elif fmt == "email":
            text = f"{rng.choice(_WORDS)}@example.com"
        elif fmt in ("uri", "url"):
            text = f"https://example.com/{rng.choice(_WORDS)}"
        elif fmt == "uuid":
            h = rng.hex(32)
            text = f"{h[:8]}-{h[8:12]}-4{h[13:16]}-8{h[17:20]}-{h[20:32]}"
        else:
            text = (
                f"{rng.choice(_WORDS)}-{rng.below(100)}"
                if name == "value"
                else f"{name}-{rng.choice(_WORDS)}"
            )
        lo = int(schema.get("minLength", 0))
        hi = schema.get("maxLength")
        if len(text) < lo:
            text += "x" * (lo - len(text))
        if hi is not None:
            text = text[: int(hi)]
        return text


# --------------------------------------------------------------------------- OpenAI-shaped errors
