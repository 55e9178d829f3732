"""Find scenarios: by name (the ``mesa_llm_testing.scenarios`` entry points) or by spec.

:func:`resolve_scenario` turns any scenario spec into a model factory: a
registered name, ``module:attr`` or ``path.py[:attr]``.

Every installed distribution may register Mesa model factories under this group,
so ``mesa-llm-testing run NAME`` and ``list`` find them without touching this
package. mesa-llm declares its own built-ins there too (see ``pyproject.toml``)::

    [project.entry-points."mesa_llm_testing.scenarios"]
    my_model = "my_package.models:MyModel"

Entry points are loaded on first use, one by one, so a broken third-party package
only fails the scenario that names it. The harness never imports the example
models directly; this module is the one place that reaches them.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from mesa import Model

__all__ = [
    "BUILTIN_MODULE",
    "DEFAULT_SCENARIO",
    "ENTRY_POINT_GROUP",
    "RegisteredScenario",
    "builtin_names",
    "load_scenario",
    "registered_scenarios",
    "resolve_scenario",
]

logger = logging.getLogger(__name__)

#: The entry-point group scenarios are registered in.
ENTRY_POINT_GROUP: Final = "mesa_llm_testing.scenarios"
#: The package holding mesa-llm's own example models.
BUILTIN_MODULE: Final = "mesa_llm_testing.scenarios"
#: The scenario ``mesa-llm-testing run`` runs when none is named.
DEFAULT_SCENARIO: Final = "civil_violence"


@dataclass(frozen=True, slots=True)
class RegisteredScenario:
    """A scenario name and where its factory lives (``module:attr``), not yet imported."""

    name: str
    value: str
    distribution: str

    @property
    def builtin(self) -> bool:
        """Whether this is one of mesa-llm's own example models."""
        return self.value.startswith(BUILTIN_MODULE + ".") or self.value.startswith(
            BUILTIN_MODULE + ":"
        )


def registered_scenarios() -> dict[str, RegisteredScenario]:
    """Every registered scenario by name: the built-ins first, then the others, each by name.

    Two distributions registering one name is an error naming both, since which
    one ``run NAME`` means would otherwise depend on install order. The installed
    distributions are read once per process (reading them takes tens of ms).
    """
    return dict(_scan())


@functools.cache
def _scan() -> dict[str, RegisteredScenario]:
    found: dict[str, RegisteredScenario] = {}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist is not None else "?"
        entry = RegisteredScenario(ep.name, ep.value, dist)
        other = found.get(ep.name)
        if other is not None and other.value != entry.value:
            raise ValueError(
                f"mesa_llm_testing: scenario name {ep.name!r} is registered twice in the "
                f"{ENTRY_POINT_GROUP!r} entry points: {other.value} (distribution "
                f"{other.distribution}) and {entry.value} (distribution {dist}); uninstall "
                f"or rename one"
            )
        found[ep.name] = entry
    if not any(e.builtin for e in found.values()):
        found.update(_builtins_without_metadata())
    return dict(sorted(found.items(), key=lambda item: (not item[1].builtin, item[0])))


def builtin_names() -> list[str]:
    """The names of mesa-llm's own example scenarios, in registration order."""
    return [name for name, entry in registered_scenarios().items() if entry.builtin]


def load_scenario(name: str) -> Callable[..., Any]:
    """Import and return the factory registered as ``name`` (KeyError if none is)."""
    entry = registered_scenarios()[name]
    try:
        found = metadata.EntryPoint(name, entry.value, ENTRY_POINT_GROUP).load()
    except (ImportError, AttributeError) as exc:
        raise ValueError(
            f"mesa_llm_testing: scenario {name!r} is registered as {entry.value!r} by "
            f"distribution {entry.distribution}, but loading it failed: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if not callable(found):
        raise ValueError(
            f"mesa_llm_testing: scenario {name!r} ({entry.value}) is not callable; register a "
            f"Mesa Model class or a factory function"
        )
    return found  # type: ignore[no-any-return]


def _builtins_without_metadata() -> dict[str, RegisteredScenario]:
    # A source tree used without (re)installing has no entry points for the built-ins;
    # name them from the package itself so the examples still run.
    logger.warning(
        "mesa_llm_testing: the built-in scenarios are not registered as %r entry points "
        "(an install from before they were, or none); reinstall mesa-llm "
        "(pip install -e .) to register them",
        ENTRY_POINT_GROUP,
    )
    package = importlib.import_module(BUILTIN_MODULE)
    return {
        name: RegisteredScenario(
            name, f"{factory.__module__}:{factory.__qualname__}", "mesa-llm (source tree)"
        )
        for name, factory in package.REGISTRY.items()
    }


# --------------------------------------------------------------------------- any scenario spec


def resolve_scenario(spec: str) -> Callable[..., Model]:
    """The model factory named by ``spec``: a scenario name, ``module:attr`` or ``path.py[:attr]``.

    Names are the ``mesa_llm_testing.scenarios`` entry points (the built-ins and any
    installed package's). A file without ``:attr`` must define exactly one Mesa
    ``Model`` subclass.
    """
    registry = registered_scenarios()
    if spec in registry:
        return load_scenario(spec)
    target, sep, attr = spec.rpartition(":")
    if not sep or not attr.replace(".", "_").isidentifier():
        target, attr = spec, ""
    if target.endswith(".py") or Path(target).is_file():
        module = _load_file(Path(target))
    elif attr:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise ValueError(
                f"mesa_llm_testing: cannot import {target!r} for scenario {spec!r}: {exc}"
            ) from None
    else:
        raise ValueError(
            f"mesa_llm_testing: unknown scenario {spec!r}; use a registered name "
            f"({', '.join(registry)}), 'module:factory' or 'path/to/file.py[:factory]'"
        )
    if attr:
        found: Any = module
        for part in attr.split("."):
            if not hasattr(found, part):
                raise ValueError(
                    f"mesa_llm_testing: {module.__name__!r} has no attribute {attr!r} "
                    f"(scenario {spec!r})"
                )
            found = getattr(found, part)
        if not callable(found):
            raise ValueError(f"mesa_llm_testing: scenario {spec!r} is not callable")
        return found  # type: ignore[no-any-return]
    return _single_model_class(module, spec)


def _load_file(path: Path) -> Any:
    if not path.is_file():
        raise ValueError(f"mesa_llm_testing: scenario file {str(path)!r} does not exist")
    from mesa_llm_testing._recording import digest

    name = "mesa_llm_scenario_" + digest(str(path.resolve()))
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"mesa_llm_testing: cannot load scenario file {str(path)!r}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _single_model_class(module: Any, spec: str) -> Callable[..., Model]:
    from mesa import Model

    classes = [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type) and issubclass(obj, Model) and obj.__module__ == module.__name__
    ]
    if len(classes) != 1:
        names = ", ".join(sorted(c.__name__ for c in classes)) or "none"
        raise ValueError(
            f"mesa_llm_testing: scenario file {spec!r} defines {len(classes)} Mesa Model "
            f"classes ({names}); name one as '{spec}:ClassName'"
        )
    return classes[0]
