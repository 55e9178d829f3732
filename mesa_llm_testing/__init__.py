"""mesa_llm_testing: fake LLMs, injectable faults and a pytest plugin for Mesa-LLM models.

Importing this package is cheap (no litellm, no respx); each public name loads
its module on first access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mesa_llm._lazy import lazy_exports

if TYPE_CHECKING:
    from mesa_llm_testing import checks, strategies
    from mesa_llm_testing._bursts import Burst
    from mesa_llm_testing._calls import FakeCall, FakeRequest
    from mesa_llm_testing._cassettes import CassetteMismatchError, record_to
    from mesa_llm_testing._discovery import resolve_scenario
    from mesa_llm_testing._fakellm import FakeLLM
    from mesa_llm_testing._faults import (
        DEFAULT_KINDS,
        TRANSIENT_KINDS,
        FaultKind,
        FaultPlan,
        InjectedFault,
        InjectedFaults,
    )
    from mesa_llm_testing._latency import lognormal, uniform
    from mesa_llm_testing._limits import LimitedCall, ProviderLimits
    from mesa_llm_testing._responses import FakeReply
    from mesa_llm_testing._runner import ScenarioRun, run_scenario
    from mesa_llm_testing._side_effects import SideEffectExhaustedError
    from mesa_llm_testing._sweep import sweep
    from mesa_llm_testing._sweep_rows import RunResult, SweepResult, SweepRow
    from mesa_llm_testing._trace import CallTrace, RunTrace, StepTrace

_LAZY: dict[str, str] = {
    "CassetteMismatchError": "mesa_llm_testing._cassettes",
    "record_to": "mesa_llm_testing._cassettes",
    "Burst": "mesa_llm_testing._bursts",
    "DEFAULT_KINDS": "mesa_llm_testing._faults",
    "TRANSIENT_KINDS": "mesa_llm_testing._faults",
    "FakeCall": "mesa_llm_testing._calls",
    "FakeLLM": "mesa_llm_testing._fakellm",
    "FakeReply": "mesa_llm_testing._responses",
    "FakeRequest": "mesa_llm_testing._calls",
    "SideEffectExhaustedError": "mesa_llm_testing._side_effects",
    "FaultKind": "mesa_llm_testing._faults",
    "FaultPlan": "mesa_llm_testing._faults",
    "InjectedFault": "mesa_llm_testing._faults",
    "InjectedFaults": "mesa_llm_testing._faults",
    "CallTrace": "mesa_llm_testing._trace",
    "RunTrace": "mesa_llm_testing._trace",
    "ScenarioRun": "mesa_llm_testing._runner",
    "StepTrace": "mesa_llm_testing._trace",
    "lognormal": "mesa_llm_testing._latency",
    "LimitedCall": "mesa_llm_testing._limits",
    "ProviderLimits": "mesa_llm_testing._limits",
    "resolve_scenario": "mesa_llm_testing._discovery",
    "run_scenario": "mesa_llm_testing._runner",
    "RunResult": "mesa_llm_testing._sweep_rows",
    "SweepResult": "mesa_llm_testing._sweep_rows",
    "SweepRow": "mesa_llm_testing._sweep_rows",
    "sweep": "mesa_llm_testing._sweep",
    "uniform": "mesa_llm_testing._latency",
}
_SUBMODULES = {"checks", "strategies"}

__all__ = [
    "DEFAULT_KINDS",
    "TRANSIENT_KINDS",
    "Burst",
    "CallTrace",
    "CassetteMismatchError",
    "FakeCall",
    "FakeLLM",
    "FakeReply",
    "FakeRequest",
    "FaultKind",
    "FaultPlan",
    "InjectedFault",
    "InjectedFaults",
    "LimitedCall",
    "ProviderLimits",
    "RunResult",
    "RunTrace",
    "ScenarioRun",
    "SideEffectExhaustedError",
    "StepTrace",
    "SweepResult",
    "SweepRow",
    "checks",
    "lognormal",
    "record_to",
    "resolve_scenario",
    "run_scenario",
    "strategies",
    "sweep",
    "uniform",
]


__getattr__, __dir__ = lazy_exports(
    "mesa_llm_testing", _LAZY, __all__, globals(), submodules=_SUBMODULES
)
