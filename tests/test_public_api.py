"""The public namespaces: every name in ``__all__`` resolves, and importing them stays cheap."""

from __future__ import annotations

import subprocess
import sys

import pytest

import mesa_llm
import mesa_llm_testing


@pytest.mark.parametrize("package", [mesa_llm, mesa_llm_testing], ids=lambda p: p.__name__)
def test_every_public_name_is_exported(package: object) -> None:
    names = package.__all__  # type: ignore[attr-defined]
    assert len(set(names)) == len(names), "duplicate names in __all__"
    missing = [name for name in names if getattr(package, name, None) is None]
    assert missing == []
    assert set(names) <= set(dir(package))


def test_unknown_names_raise_attribute_error_naming_the_package() -> None:
    with pytest.raises(AttributeError, match="module 'mesa_llm' has no attribute 'Nope'"):
        mesa_llm.Nope  # type: ignore[attr-defined]  # noqa: B018
    with pytest.raises(AttributeError, match="'mesa_llm_testing' has no attribute 'Nope'"):
        mesa_llm_testing.Nope  # type: ignore[attr-defined]  # noqa: B018


def test_importing_the_packages_imports_neither_litellm_nor_hypothesis_nor_respx() -> None:
    code = (
        "import sys, mesa_llm, mesa_llm_testing, mesa_llm_testing.plugin\n"
        "heavy = {'litellm', 'hypothesis', 'respx'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_record_model_is_exported_lazily_as_in_mesa_llm_0_3() -> None:
    code = (
        "import sys, mesa_llm\n"
        "assert 'mesa_llm.recording' not in sys.modules\n"
        "from mesa_llm import record_model\n"
        "from mesa_llm.recording import record_model as from_package\n"
        "assert record_model is from_package and 'litellm' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
