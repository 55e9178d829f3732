"""Scenario discovery: names come from the ``mesa_llm_testing.scenarios`` entry points.

Each test puts a distribution's metadata (a ``*.dist-info`` folder, as ``pip install``
writes it) on ``sys.path``, which is all ``importlib.metadata`` reads.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mesa_llm_testing import resolve_scenario
from mesa_llm_testing._discovery import _scan
from mesa_llm_testing.cli import main
from mesa_llm_testing.scenarios import DEFAULT_SCENARIO, REGISTRY, NegotiationModel


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder on ``sys.path`` to install distributions' metadata into."""
    monkeypatch.syspath_prepend(str(tmp_path))
    _scan.cache_clear()
    yield tmp_path
    _scan.cache_clear()


def install(site: Path, dist: str, entry_points: dict[str, str], module: str = "") -> None:
    info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    lines = [f"{name} = {value}" for name, value in entry_points.items()]
    (info / "entry_points.txt").write_text(
        "[mesa_llm_testing.scenarios]\n" + "\n".join(lines) + "\n"
    )
    if module:
        (site / f"{dist.replace('-', '_')}.py").write_text(module)


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_the_built_ins_are_entry_points_of_mesa_llm() -> None:
    from importlib.metadata import entry_points

    declared = {ep.name: ep.load() for ep in entry_points(group="mesa_llm_testing.scenarios")}
    assert {name: declared[name] for name in REGISTRY} == REGISTRY
    assert resolve_scenario(DEFAULT_SCENARIO) is REGISTRY[DEFAULT_SCENARIO]


def test_another_package_s_scenario_is_listed_and_runs(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    module = (
        "from mesa_llm_testing.scenarios import NegotiationModel\n\n"
        "class Market(NegotiationModel):\n    '''A market of a downstream package.'''\n"
    )
    install(site, "market-town", {"market": "market_town:Market"}, module)

    code, out, _ = cli(capsys, "list")
    assert code == 0
    assert out.splitlines()[-1].split() == [
        "market", "A", "market", "of", "a", "downstream", "package.", "[from", "market-town]",
    ]  # fmt: skip
    assert resolve_scenario("market").__mro__[1] is NegotiationModel
    code, out, _ = cli(capsys, "run", "market", "--agents", "2", "--steps", "1", "-q")
    assert code == 0 and "market: 2 agents, 1 steps" in out, out


def test_a_broken_registration_is_reported_without_hiding_the_others(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    install(site, "broken-town", {"broken": "no_such_module_anywhere:Model"})

    code, out, _ = cli(capsys, "list")
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()] == [*sorted(REGISTRY), "broken"]
    assert "'no_such_module_anywhere:Model' by distribution broken-town" in out
    code, _, err = cli(capsys, "run", "broken")
    assert code == 2
    assert "ModuleNotFoundError" in err and "broken-town" in err


def test_two_packages_claiming_one_name_is_an_error_naming_both(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    install(site, "one-town", {"twin": "one_town:Model"})
    install(site, "two-town", {"twin": "two_town:Model"})

    code, _, err = cli(capsys, "list")
    assert code == 2
    assert "'twin' is registered twice" in err
    assert "one-town" in err and "two-town" in err
    with pytest.raises(ValueError, match="uninstall or rename one"):
        resolve_scenario("twin")


def test_module_attr_and_file_names_still_work(tmp_path: Path) -> None:
    assert resolve_scenario("mesa_llm_testing.scenarios:NegotiationModel") is NegotiationModel
    path = tmp_path / "mine.py"
    path.write_text("from mesa import Model\n\nclass Mine(Model):\n    pass\n")
    assert resolve_scenario(str(path)).__name__ == "Mine"
