"""Reasoning strategies: chain of thought, ReAct and ReWOO, on a shared ``Reasoning`` base.

mesa-llm 0.3's module paths are the submodules: ``mesa_llm.reasoning.reasoning``
(``Reasoning``, ``Observation``, ``Plan``), ``.cot``, ``.react``, ``.rewoo``.
"""

from __future__ import annotations

from mesa_llm._types import Observation, Plan
from mesa_llm.reasoning.cot import CoTReasoning
from mesa_llm.reasoning.react import ReActReasoning
from mesa_llm.reasoning.reasoning import (
    DEFAULT_STEP_PROMPT,
    LLMRequest,
    PlanRequests,
    Reasoning,
)
from mesa_llm.reasoning.rewoo import ReWOOReasoning

__all__ = [
    "DEFAULT_STEP_PROMPT",
    "CoTReasoning",
    "LLMRequest",
    "Observation",
    "Plan",
    "PlanRequests",
    "ReActReasoning",
    "ReWOOReasoning",
    "Reasoning",
]
