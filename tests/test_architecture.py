"""The layers of docs/architecture.md hold: imports point one way and never go round in a circle.

Every ``import`` in ``mesa_llm/`` and ``mesa_llm_testing/`` is read with ``ast``,
wherever it stands: at module level, inside a function (a lazy import is still a
dependency, only a later one) and inside ``if TYPE_CHECKING:``. Type-only imports
count too: a module that names a higher layer's type in its signatures depends on
that layer for anyone reading or type-checking it, and the library's old circle
(``reasoning`` -> ``llm_agent`` -> ``reasoning``) was exactly such an import. Break
one with a protocol or a type moved down a layer, not by hiding it.

The layers, lowest first (a module may import its own layer and the ones below)::

    library  <-  harness core  <-  transports  <-  public fake  <-  runner  <-  plugin and CLI
                                                                                  ^
    examples (mesa_llm_testing.scenarios): the library and the harness's public names

Nothing imports the examples: the runner finds them by entry point.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from typing import Final, NamedTuple

import pytest

ROOT: Final = Path(__file__).resolve().parent.parent
PACKAGES: Final = ("mesa_llm", "mesa_llm_testing")
EXAMPLES: Final = "mesa_llm_testing.scenarios"

#: Layer name -> the modules in it (a name also covers its submodules), lowest layer first.
LAYERS: Final[dict[str, tuple[str, ...]]] = {
    "library": ("mesa_llm",),
    "harness core": (
        "mesa_llm_testing._fault_kinds",
        "mesa_llm_testing._bursts",
        "mesa_llm_testing._fault_records",
        "mesa_llm_testing._faults",
        "mesa_llm_testing._fault_answers",
        "mesa_llm_testing._latency",
        "mesa_llm_testing._limits",
        "mesa_llm_testing._responses",
        "mesa_llm_testing._rng",
        "mesa_llm_testing._schema_values",
        "mesa_llm_testing._model_responses",
        "mesa_llm_testing._calls",
        "mesa_llm_testing._fake",
        "mesa_llm_testing._side_effects",
        "mesa_llm_testing._plans",
        "mesa_llm_testing._identity",
    ),
    "transports": (
        "mesa_llm_testing._provider",
        "mesa_llm_testing._provider_errors",
        "mesa_llm_testing._fastpath",
        "mesa_llm_testing._http",
        "mesa_llm_testing._callers",
        "mesa_llm_testing._server",
        "mesa_llm_testing._stats",
        "mesa_llm_testing._cassettes",
    ),
    # FakeLLM: the core with its ways in, the one module that imports both transports.
    "public fake": ("mesa_llm_testing._fakellm",),
    "runner": (
        "mesa_llm_testing._trace",
        "mesa_llm_testing._cost",
        "mesa_llm_testing._recording",
        "mesa_llm_testing._packed",
        "mesa_llm_testing._runner",
        "mesa_llm_testing._process_state",
        "mesa_llm_testing._discovery",
        "mesa_llm_testing._summary",
        "mesa_llm_testing._verdict",
        "mesa_llm_testing._timeline",
        "mesa_llm_testing._sweep",
        "mesa_llm_testing._sweep_rows",
        "mesa_llm_testing._sweep_values",
        "mesa_llm_testing.checks",
        "mesa_llm_testing.strategies",
    ),
    "plugin and CLI": (
        "mesa_llm_testing",  # the package's public face re-exports from every layer below
        "mesa_llm_testing.plugin",
        "mesa_llm_testing._pytest_support",
        "mesa_llm_testing._pytest_settings",
        "mesa_llm_testing.cli",
        "mesa_llm_testing._cli_parser",
        "mesa_llm_testing._cli_args",
        "mesa_llm_testing._cli_run",
        "mesa_llm_testing._cli_cassette",
        "mesa_llm_testing._cli_output",
        "mesa_llm_testing._startup",
        "mesa_llm_testing._serve_cli",
        "mesa_llm_testing._cli_sweep",
        "mesa_llm_testing._cli_sweep_parser",
        "mesa_llm_testing._process_state",
        "mesa_llm_testing._network_guard",
    ),
    "examples": (EXAMPLES,),
}

#: Violations tolerated for now, each with why (none today). The test fails when a
#: new violation appears and when one listed here is gone (then delete its line).
KNOWN_VIOLATIONS: Final[frozenset[str]] = frozenset()


class Edge(NamedTuple):
    """One import: ``source`` imports ``target`` (both module names), at ``line``."""

    source: str
    target: str
    line: int


def test_imports_follow_the_layers_and_never_form_a_circle() -> None:
    modules = _modules()
    edges = list(_edges(modules))
    assert len(edges) > 50  # the walk found the imports (not a test of nothing)

    found = {*_layer_violations(edges), *_cycles(modules, edges)}

    new = sorted(found - KNOWN_VIOLATIONS)
    fixed = sorted(KNOWN_VIOLATIONS - found)
    assert not new, "imports against docs/architecture.md's layers:\n" + "\n".join(
        f"  {v}  [{_where(v, edges)}]" for v in new
    )
    assert not fixed, (
        "fixed, so delete from KNOWN_VIOLATIONS in tests/test_architecture.py:\n"
        + "\n".join(f"  {v}" for v in fixed)
    )


def test_every_module_has_a_layer() -> None:
    unplaced = [name for name in _modules() if _layer(name) is None]
    assert not unplaced, f"add these to LAYERS in tests/test_architecture.py: {unplaced}"


def test_the_walk_sees_lazy_and_type_only_imports(tmp_path: Path) -> None:
    package = tmp_path / "mesa_llm_testing"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "_faults.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from mesa_llm_testing._runner import RunTrace\n"
        "def later():\n    from . import cli\n"
    )
    (package / "_runner.py").write_text("import mesa_llm_testing._faults\n")
    (package / "cli.py").write_text("")

    modules = _modules(tmp_path)
    edges = list(_edges(modules, tmp_path))

    assert {(e.source, e.target) for e in edges} == {
        ("mesa_llm_testing._faults", "mesa_llm_testing._runner"),
        ("mesa_llm_testing._faults", "mesa_llm_testing.cli"),
        ("mesa_llm_testing._runner", "mesa_llm_testing._faults"),
    }
    assert _cycles(modules, edges) == ["cycle: mesa_llm_testing._faults, mesa_llm_testing._runner"]
    assert set(_layer_violations(edges)) == {
        "layer: mesa_llm_testing._faults -> mesa_llm_testing._runner (harness core imports runner)",
        "layer: mesa_llm_testing._faults -> mesa_llm_testing.cli (harness core imports plugin "
        "and CLI)",
    }


@pytest.mark.parametrize(
    ("source", "target", "allowed"),
    [
        ("mesa_llm_testing._runner", "mesa_llm.parallel_stepping", True),
        ("mesa_llm.llm_agent", "mesa_llm_testing._fake", False),
        ("mesa_llm_testing._http", "mesa_llm_testing._fake", True),
        ("mesa_llm_testing._fake", "mesa_llm_testing._provider", False),
        ("mesa_llm_testing._provider", "mesa_llm_testing._fakellm", False),
        ("mesa_llm_testing._fakellm", "mesa_llm_testing._server", True),
        ("mesa_llm_testing._runner", "mesa_llm_testing._fakellm", True),
        ("mesa_llm_testing._plans", "mesa_llm_testing._runner", False),
        ("mesa_llm_testing.cli", "mesa_llm_testing._runner", True),
        ("mesa_llm_testing._runner", "mesa_llm_testing.scenarios.negotiation", False),
        ("mesa_llm_testing.scenarios.negotiation", "mesa_llm.llm_agent", True),
        ("mesa_llm_testing.scenarios._common", "mesa_llm_testing.checks", True),
        ("mesa_llm_testing.scenarios._common", "mesa_llm_testing._fake", False),
        ("mesa_llm_testing.scenarios.negotiation", "mesa_llm_testing.scenarios._common", True),
    ],
)
def test_the_rules(source: str, target: str, allowed: bool) -> None:
    assert (not list(_layer_violations([Edge(source, target, 1)]))) is allowed


def test_no_module_imports_a_copy_of_a_global_another_module_rebinds() -> None:
    """``from m import x`` of a global that ``m`` rebinds (``global x``) is a stale copy.

    Module-level state (the enabled stepping mode, the library's event-loop thread,
    the fake's activations) lives in one module, rebound only there; other modules
    read it through that module's functions.
    """
    modules = _modules()
    rebound = {name: _rebound_globals(path) for name, path in modules.items()}
    assert rebound["mesa_llm.parallel_stepping._state"] >= {"_enabled", "_loop_thread"}
    copies = []
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                source = _known(_absolute(node, name, is_package), modules)
                for alias in node.names:
                    if source is not None and alias.name in rebound[source]:
                        copies.append(f"{name} line {node.lineno}: {source}.{alias.name}")
    assert not copies, "imports of rebound globals (read them through a function):\n" + "\n".join(
        copies
    )


def _rebound_globals(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    return {name for node in ast.walk(tree) if isinstance(node, ast.Global) for name in node.names}


# --------------------------------------------------------------------------- the walk


def _modules(root: Path = ROOT) -> dict[str, Path]:
    """Module name -> file, for every module of both packages."""
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _edges(modules: dict[str, Path], root: Path = ROOT) -> Iterator[Edge]:
    """Every import from one of ``modules`` to another, wherever it stands in the file."""
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [_known(alias.name, modules) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(node, name, is_package)
                targets = [
                    _known(f"{base}.{alias.name}", modules) or _known(base, modules)
                    for alias in node.names
                ]
            else:
                continue
            for target in dict.fromkeys(targets):  # one edge per target per line
                if target is not None and target != name:
                    yield Edge(name, target, node.lineno)


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _known(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of ``name`` that is one of our modules (None: a third-party one)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


# --------------------------------------------------------------------------- the rules


def _layer(module: str) -> str | None:
    best: tuple[int, str] | None = None
    for layer, members in LAYERS.items():
        for member in members:
            if (module == member or module.startswith(member + ".")) and (
                best is None or len(member) > best[0]
            ):
                best = (len(member), layer)
    return None if best is None else best[1]


def _layer_violations(edges: list[Edge]) -> Iterator[str]:
    order = list(LAYERS)
    for source, target, _ in edges:
        src, dst = _layer(source), _layer(target)
        if src is None or dst is None:
            continue
        if src == "examples" and dst != "examples":
            private = any(part.startswith("_") for part in target.split(".")[1:])
            if target.startswith("mesa_llm_testing") and private:
                yield f"layer: {source} -> {target} (examples use the harness's public names only)"
        elif order.index(dst) > order.index(src):
            yield f"layer: {source} -> {target} ({src} imports {dst})"


def _cycles(modules: dict[str, Path], edges: list[Edge]) -> list[str]:
    """Tarjan's strongly connected components of more than one module."""
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for source, target, _ in edges:
        graph[source].add(target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[str] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append("cycle: " + ", ".join(sorted(component)))

    for name in sorted(graph):
        if name not in index:
            visit(name)
    return sorted(found)


def _where(violation: str, edges: list[Edge]) -> str:
    """The import lines behind a violation, for the failure message."""
    if violation.startswith("cycle: "):
        members = set(violation.removeprefix("cycle: ").split(", "))
        lines = [e for e in edges if e.source in members and e.target in members]
    else:
        lines = [e for e in edges if f" {e.source} -> {e.target} " in violation]
    return "; ".join(f"{e.source} line {e.line} imports {e.target}" for e in lines[:6])


def test_no_module_is_over_600_lines() -> None:
    """Modules of one job stay readable: about 400 lines, never over 600."""
    too_long = {
        name: length
        for name, path in _modules().items()
        if (length := len(path.read_text().splitlines())) > 600
    }
    assert not too_long, f"split these modules by job: {too_long}"
