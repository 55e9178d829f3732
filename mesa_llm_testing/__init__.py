"""mesa_llm_testing: fake LLMs, injectable faults and a pytest plugin for Mesa-LLM models.

Importing this package is cheap (no litellm, no respx); each public name loads
its module on first access.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mesa_llm_testing import checks, strategies
    from mesa_llm_testing._fake import FakeCall, FakeLLM, FakeRequest, SideEffectExhaustedError
    from mesa_llm_testing._faults import FaultKind, FaultPlan, InjectedFault
    from mesa_llm_testing._responses import FakeReply
    from mesa_llm_testing._runner import (
        CallTrace,
        RunTrace,
        ScenarioRun,
        StepTrace,
        resolve_scenario,
        run_scenario,
    )

_LAZY: dict[str, str] = {
    "FakeCall": "mesa_llm_testing._fake",
    "FakeLLM": "mesa_llm_testing._fake",
    "FakeReply": "mesa_llm_testing._responses",
    "FakeRequest": "mesa_llm_testing._fake",
    "SideEffectExhaustedError": "mesa_llm_testing._fake",
    "FaultKind": "mesa_llm_testing._faults",
    "FaultPlan": "mesa_llm_testing._faults",
    "InjectedFault": "mesa_llm_testing._faults",
    "CallTrace": "mesa_llm_testing._runner",
    "RunTrace": "mesa_llm_testing._runner",
    "ScenarioRun": "mesa_llm_testing._runner",
    "StepTrace": "mesa_llm_testing._runner",
    "resolve_scenario": "mesa_llm_testing._runner",
    "run_scenario": "mesa_llm_testing._runner",
}
_SUBMODULES = {"checks", "strategies"}

__all__ = [
    "CallTrace",
    "FakeCall",
    "FakeLLM",
    "FakeReply",
    "FakeRequest",
    "FaultKind",
    "FaultPlan",
    "InjectedFault",
    "RunTrace",
    "ScenarioRun",
    "SideEffectExhaustedError",
    "StepTrace",
    "checks",
    "resolve_scenario",
    "run_scenario",
    "strategies",
]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        value: Any = importlib.import_module(f"mesa_llm_testing.{name}")
    elif name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    else:
        raise AttributeError(f"module 'mesa_llm_testing' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
