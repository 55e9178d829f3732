"""mesa_llm: resilient parallel stepping and an LLM layer for Mesa agent-based models.

Importing this package is cheap: it patches nothing and does not import litellm.
The LLM layer (``ModuleLLM``, ``LLMAgent``, reasoning) and ``record_model`` (as mesa-llm
0.3 exports it) are loaded on first access.
The ``parallel_stepping`` context manager lives in :mod:`mesa_llm.parallel_stepping`
(the package attribute of that name is the module).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mesa_llm._lazy import lazy_exports
from mesa_llm.errors import (
    AgentMethodMissingError,
    AgentTimeoutError,
    CircuitOpenError,
    EmptyResponseError,
    MalformedResponseError,
    MesaLLMError,
    MissingAPIKeyError,
    ToolArgumentsError,
    UnknownModelError,
    UnknownToolError,
)

if TYPE_CHECKING:
    from mesa_llm._circuit import CircuitBreaker
    from mesa_llm._rate_limit import RateLimiter, estimate_tokens
    from mesa_llm.llm_agent import LLMAgent
    from mesa_llm.module_llm import BatchConfig, ModuleLLM, RetryPolicy
    from mesa_llm.parallel_stepping import (
        AgentOutcome,
        StepReport,
        current_agent,
        disable_automatic_parallel_stepping,
        enable_automatic_parallel_stepping,
        step_agents_multithreaded,
        step_agents_parallel,
        step_agents_parallel_sync,
    )
    from mesa_llm.reasoning import (
        CoTReasoning,
        Observation,
        Plan,
        ReActReasoning,
        Reasoning,
        ReWOOReasoning,
    )
    from mesa_llm.recording import record_model
    from mesa_llm.tools import ToolManager, tool

__version__ = "0.4.0.dev0"
__title__ = "mesa_llm"
__license__ = "Apache-2.0"
__copyright__ = "Copyright the mesa-llm authors"

# name -> module that defines it; loaded on first attribute access (PEP 562).
_LAZY: dict[str, str] = {
    "AgentOutcome": "mesa_llm.parallel_stepping",
    "StepReport": "mesa_llm.parallel_stepping",
    "current_agent": "mesa_llm.parallel_stepping",
    "disable_automatic_parallel_stepping": "mesa_llm.parallel_stepping",
    "enable_automatic_parallel_stepping": "mesa_llm.parallel_stepping",
    "step_agents_multithreaded": "mesa_llm.parallel_stepping",
    "step_agents_parallel": "mesa_llm.parallel_stepping",
    "step_agents_parallel_sync": "mesa_llm.parallel_stepping",
    "BatchConfig": "mesa_llm.module_llm",
    "CircuitBreaker": "mesa_llm._circuit",
    "RateLimiter": "mesa_llm._rate_limit",
    "estimate_tokens": "mesa_llm._rate_limit",
    "ModuleLLM": "mesa_llm.module_llm",
    "RetryPolicy": "mesa_llm.module_llm",
    "LLMAgent": "mesa_llm.llm_agent",
    "CoTReasoning": "mesa_llm.reasoning",
    "Observation": "mesa_llm.reasoning",
    "Plan": "mesa_llm.reasoning",
    "ReActReasoning": "mesa_llm.reasoning",
    "ReWOOReasoning": "mesa_llm.reasoning",
    "Reasoning": "mesa_llm.reasoning",
    "ToolManager": "mesa_llm.tools",
    "tool": "mesa_llm.tools",
    "record_model": "mesa_llm.recording",
}

__all__ = [
    "AgentMethodMissingError",
    "AgentOutcome",
    "AgentTimeoutError",
    "BatchConfig",
    "CircuitBreaker",
    "CircuitOpenError",
    "CoTReasoning",
    "EmptyResponseError",
    "LLMAgent",
    "MalformedResponseError",
    "MesaLLMError",
    "MissingAPIKeyError",
    "ModuleLLM",
    "Observation",
    "Plan",
    "RateLimiter",
    "ReActReasoning",
    "ReWOOReasoning",
    "Reasoning",
    "RetryPolicy",
    "StepReport",
    "ToolArgumentsError",
    "ToolManager",
    "UnknownModelError",
    "UnknownToolError",
    "__version__",
    "current_agent",
    "disable_automatic_parallel_stepping",
    "enable_automatic_parallel_stepping",
    "estimate_tokens",
    "record_model",
    "step_agents_multithreaded",
    "step_agents_parallel",
    "step_agents_parallel_sync",
    "tool",
]


__getattr__, __dir__ = lazy_exports("mesa_llm", _LAZY, __all__, globals())
