"""Installing mesa-llm: scenarios live in the harness's namespace and are found by entry point.

One fresh virtualenv (no pip of its own) gets a real, non-editable ``pip install`` of
this project and of a tiny third-party package that registers one scenario. Its
dependencies (Mesa, litellm, ...) come from the running environment through a ``.pth``
file, so nothing is downloaded but the build backend. Every command runs from an
empty folder, so the source tree cannot stand in for the installed copy.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

import pytest

pytestmark = pytest.mark.subprocess  # see pyproject.toml's markers

ROOT = Path(__file__).resolve().parent.parent
BIN = "Scripts" if os.name == "nt" else "bin"
_NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", ".tox", ".ci-tox", "build", "dist", "*.egg-info", "__pycache__", ".*_cache",
    ".hypothesis", "tests", "benchmarks", "traces",
)  # fmt: skip

TINY_PYPROJECT = """
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "tiny-town"
version = "1.0"

[project.entry-points."mesa_llm_testing.scenarios"]
tiny_town = "tiny_town:TinyTownModel"

[tool.setuptools]
py-modules = ["tiny_town"]
"""

TINY_MODULE = '''
"""A downstream package's scenario, built on the harness's public example models."""

from mesa_llm_testing.scenarios import NegotiationModel


class TinyTownModel(NegotiationModel):
    """Tiny town: traders of a downstream package."""

    scenario_name = "tiny_town"
'''


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with this project and ``tiny-town`` pip-installed; its bin folder."""
    base = tmp_path_factory.mktemp("packaging")
    source = base / "mesa-llm"
    shutil.copytree(ROOT, source, ignore=_NOT_SOURCE)
    tiny = base / "tiny-town"
    tiny.mkdir()
    (tiny / "pyproject.toml").write_text(TINY_PYPROJECT)
    (tiny / "tiny_town.py").write_text(TINY_MODULE)

    env_dir = base / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / BIN / "python"
    purelib = _output(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
    )
    # The running environment's packages (Mesa, litellm, ...) without installing them again.
    # Plain paths: .pth files found there (an editable mesa-llm's finder) are not run.
    running = [p for p in site.getsitepackages() if Path(p).is_dir()]
    Path(purelib.strip(), "_running_env.pth").write_text("\n".join(running) + "\n")

    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps"]
    _output([*pip, str(source), str(tiny)], timeout=240)
    return env_dir / BIN


def test_installed_scenarios_live_in_the_harness_namespace(installed: Path) -> None:
    python = str(installed / "python")
    missing = _run([python, "-c", "import scenarios"])
    assert missing.returncode != 0 and "No module named 'scenarios'" in missing.stderr

    where = _output([python, "-c", "import mesa_llm_testing.scenarios as s; print(s.__file__)"])
    assert "site-packages" in where and str(ROOT) not in where  # the installed copy, not ours


def test_the_running_install_has_no_top_level_scenarios_either() -> None:
    # The suite's own install (editable, in the README's test command) hides them too.
    missing = _run([sys.executable, "-c", "import scenarios"])
    assert missing.returncode != 0 and "No module named 'scenarios'" in missing.stderr


def test_list_shows_the_built_ins_and_a_registered_package(installed: Path) -> None:
    out = _output([str(installed / "mesa-llm-testing"), "list"])
    names = [line.split()[0] for line in out.splitlines()]
    assert names == [
        "civil_violence",
        "island_commons",
        "negotiation",
        "release_market",
        "tiny_town",
    ]
    assert "Tiny town: traders of a downstream package. [from tiny-town]" in out


def test_run_runs_a_registered_package_scenario(installed: Path) -> None:
    out = _output([str(installed / "mesa-llm-testing"), "run", "tiny_town", *_SMALL])
    assert "tiny_town: 2 agents, 1 steps" in out and "all checks passed" in out


def test_the_example_scripts_run_against_the_installed_package(installed: Path) -> None:
    script = ROOT / "scenarios" / "negotiation.py"
    out = _output([str(installed / "python"), str(script), *_SMALL])
    assert "negotiation: 2 agents, 1 steps" in out and "all checks passed" in out


_SMALL = ["--agents", "2", "--steps", "1", "--mode", "sequential", "-q"]


def _run(command: list[str], *, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONNOUSERSITE"] = "1"
    env.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    # An empty folder as the working directory: the checkout must not stand in for the install.
    with tempfile.TemporaryDirectory() as empty:
        return subprocess.run(
            command, capture_output=True, text=True, env=env, cwd=empty, timeout=timeout
        )


def _output(command: list[str], *, timeout: float = 60) -> str:
    done = _run(command, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(command)}\n{done.stdout}\n{done.stderr}"
    return done.stdout
