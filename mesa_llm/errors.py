"""Typed errors raised by mesa_llm.

Every error an agent's LLM call can end in is one of these or a litellm
exception, so parallel stepping can report it per agent and tests can
``pytest.raises`` it precisely.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AgentMethodMissingError",
    "AgentTimeoutError",
    "CircuitOpenError",
    "EmptyResponseError",
    "MalformedResponseError",
    "MesaLLMError",
    "MissingAPIKeyError",
    "ToolArgumentsError",
    "UnknownModelError",
    "UnknownToolError",
]


class MesaLLMError(Exception):
    """Base class of every error mesa_llm raises itself."""


class AgentMethodMissingError(MesaLLMError, AttributeError):
    """An agent has neither ``a<method>`` nor ``<method>`` to run in a parallel step."""

    def __init__(self, agent: Any, method: str) -> None:
        self.agent = agent
        self.method = method
        uid = getattr(agent, "unique_id", None)
        super().__init__(
            f"mesa_llm: agent {uid} ({type(agent).__name__}) has no method "
            f"'a{method}' or '{method}' to run; define one of them or pass method=..."
        )


class AgentTimeoutError(MesaLLMError, TimeoutError):
    """An agent's step did not finish within the per-agent ``timeout``."""

    def __init__(self, agent: Any, method: str, timeout: float) -> None:
        self.agent = agent
        self.method = method
        self.timeout = timeout
        uid = getattr(agent, "unique_id", None)
        super().__init__(
            f"mesa_llm: agent {uid} ({type(agent).__name__}.{method}) did not finish "
            f"within timeout={timeout:g}s"
        )


class MalformedResponseError(MesaLLMError, ValueError):
    """LLM output that cannot be parsed: invalid JSON, bad tool-call arguments, schema violations.

    ``raw`` holds the text exactly as the provider returned it; ``agent_id`` and
    ``step`` are filled in when the call was made by an agent during a step.
    """

    def __init__(
        self,
        message: str,
        *,
        raw: str | None = None,
        agent_id: Any = None,
        step: int | None = None,
    ) -> None:
        self.raw = raw
        self.agent_id = agent_id
        self.step = step
        where = ""
        if agent_id is not None:
            where = f" (agent {agent_id}" + (f", step {step})" if step is not None else ")")
        shown = raw if raw is None or len(raw) <= 200 else raw[:200] + "..."
        super().__init__(f"mesa_llm: {message}{where}; raw output: {shown!r}")


class EmptyResponseError(MalformedResponseError):
    """The provider answered with no content and no tool calls."""


class UnknownToolError(MesaLLMError, LookupError):
    """The LLM called a tool that is not registered."""

    def __init__(self, name: str, available: list[str]) -> None:
        self.name = name
        self.available = available
        super().__init__(
            f"mesa_llm: the LLM called unknown tool {name!r}; registered tools: "
            f"{', '.join(sorted(available)) or '(none)'}"
        )


class ToolArgumentsError(MalformedResponseError):
    """A tool call's arguments are not valid JSON or do not match the tool's signature."""


class UnknownModelError(MesaLLMError, ValueError):
    """``llm_model`` names no provider litellm can resolve."""

    def __init__(self, llm_model: str) -> None:
        self.llm_model = llm_model
        super().__init__(
            f"mesa_llm: litellm cannot resolve llm_model={llm_model!r}; use litellm's "
            f"'provider/model' form, e.g. 'openai/gpt-4o-mini', "
            f"'anthropic/claude-3-5-haiku-latest' or 'ollama/llama3' "
            f"(providers: https://docs.litellm.ai/docs/providers)"
        )


class MissingAPIKeyError(MesaLLMError, ValueError):
    """The provider of ``llm_model`` needs an API key that is neither passed nor set.

    A ``ValueError`` too, as mesa-llm 0.3 raised (its users catch ``ValueError``).
    """

    def __init__(self, llm_model: str, variables: tuple[str, ...]) -> None:
        self.llm_model = llm_model
        self.variables = variables
        wanted = (
            f"set the environment variable {variables[0]}"
            if len(variables) == 1
            else f"set the environment variables litellm reports missing ({', '.join(variables)})"
        )
        super().__init__(
            f"mesa_llm: no API key for llm_model={llm_model!r}: {wanted}, or pass api_key=... "
            f"(or api_base=... for a local server that needs no key)"
        )


class CircuitOpenError(MesaLLMError):
    """A :class:`~mesa_llm.CircuitBreaker` failed a call fast: its model's circuit is open.

    ``model`` is the circuit (the litellm model string, ``@api_base`` appended when one
    is set); ``failures`` how many provider failures in a row opened it; ``retry_in``
    the seconds until a probe call may try the provider again. ``__cause__`` is the
    provider error that opened the circuit, when this call itself did not reach it.
    """

    def __init__(self, model: str, *, failures: int, retry_in: float) -> None:
        self.model = model
        self.failures = failures
        self.retry_in = retry_in
        super().__init__(
            f"mesa_llm: circuit for {model} is open after {failures} provider failures in a "
            f"row; failing fast, a probe call may try again in {retry_in:.3g}s "
            f"(CircuitBreaker(reset_after=...))"
        )
