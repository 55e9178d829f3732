"""Lazy package exports: a name is imported from its module on first use, then kept.

Used by ``mesa_llm``, ``mesa_llm.memory`` and ``mesa_llm_testing``, whose public names
would otherwise import litellm and the heavy modules at package import time.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Collection, Mapping, MutableMapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str,
    lazy: Mapping[str, str],
    names: Collection[str],
    namespace: MutableMapping[str, Any],
    *,
    submodules: Collection[str] = (),
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The package's ``__getattr__`` and ``__dir__``.

    ``lazy`` maps a public name to the module that defines it; ``submodules`` are
    names that are the package's own submodules; ``namespace`` is the package's
    ``globals()``, where each name is cached once loaded; ``names`` its ``__all__``.
    """

    def __getattr__(name: str) -> Any:
        if name in submodules:
            value: Any = importlib.import_module(f"{package}.{name}")
        elif name in lazy:
            value = getattr(importlib.import_module(lazy[name]), name)
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(names))

    return __getattr__, __dir__
