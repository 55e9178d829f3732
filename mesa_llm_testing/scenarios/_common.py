"""What the built-in scenarios share: phases run in parallel or one by one, a one-call reasoning.

Every scenario plans in parallel and commits in order: a *phase* asks each agent
for a decision (its LLM calls read only state that nobody writes during the
phase), then the model applies the decisions one by one in Mesa's shuffle order.
Results therefore do not depend on whether the phase ran sequentially, on
asyncio or in threads. An agent whose phase failed (its LLM call failed after
retries, or its reply could not be parsed) idles for the rest of the step.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from mesa import Agent, Model

from mesa_llm.errors import EmptyResponseError, MalformedResponseError
from mesa_llm.module_llm import RetryPolicy
from mesa_llm.parallel_stepping import (
    AgentOutcome,
    StepReport,
    acting_as,
    step_agents_parallel_sync,
)
from mesa_llm.reasoning import LLMRequest, Plan, PlanRequests, Reasoning

if TYPE_CHECKING:
    from mesa.agent import AgentSet

__all__ = [
    "DEFAULT_LLM_MODEL",
    "DirectReasoning",
    "ScenarioModel",
    "json_schema_format",
    "parse_json_reply",
    "reply_text",
    "step_sequentially",
]

logger = logging.getLogger(__name__)

#: Answered offline by the test harness's fake LLM; pass any litellm model to use a real one.
DEFAULT_LLM_MODEL = "mesa-fake/scenario"

_DIRECT_INSTRUCTIONS = """You are an autonomous agent in an agent-based simulation.
Read your recent memory, your observation and your task, then act at once by calling exactly one
of the tools offered."""


class DirectReasoning(Reasoning):
    """One LLM call per plan: observation and task in, tool calls out (no thinking call)."""

    def plan_requests(self, prompt: str | None, obs: Any, ttl: int) -> PlanRequests:
        """Ask for the tool call(s) directly, with ``tool_choice="required"``."""
        prompt, obs = self._begin(prompt, obs)
        messages = self._conversation(_DIRECT_INSTRUCTIONS, prompt, obs)
        tools = self.agent.tool_manager.schemas()
        reply = yield LLMRequest(messages, tools=tools, tool_choice="required")
        actions = self._tool_calls(reply)
        return self._finish(obs, Plan(obs.step, "", actions, ttl))


class ScenarioModel(Model):
    """Base of the built-in scenarios: phases that report every agent's outcome, and a digest.

    ``parallel_stepping`` (False by default) makes phases run concurrently, in the
    mode given to ``mesa_llm.parallel_stepping.parallel_stepping()``. The reports of
    the current step's phases are in :attr:`step_reports`, in phase order; the
    scenario runner reads them.
    """

    scenario_name: ClassVar[str] = ""
    parallel_stepping: bool = False

    def __init__(
        self,
        *,
        seed: int | None = None,
        llm_model: str = DEFAULT_LLM_MODEL,
        retry: RetryPolicy | None = None,
        llm_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(seed=seed)
        self.llm_model = llm_model
        self.retry = retry if retry is not None else RetryPolicy()
        self.llm_kwargs: dict[str, Any] = {"retry": self.retry, **(llm_kwargs or {})}
        self._reports: list[StepReport] = []
        self._reports_step = -1
        self.last_step_report: StepReport | None = None

    @property
    def step_reports(self) -> list[StepReport]:
        """The reports of this step's phases, in the order the phases ran."""
        return list(self._reports) if self._reports_step == self.steps else []

    def run_phase(self, agents: Sequence[Agent], method: str) -> StepReport:
        """Run ``method`` on ``agents``, started in the order given; never raises for an agent.

        Concurrently when :attr:`parallel_stepping` is on, else one by one. The
        returned report has one outcome per agent, in start order.
        """
        if self.parallel_stepping:
            report = step_agents_parallel_sync(list(agents), method=method)
        else:
            report = step_sequentially(agents, method)
        return self._record(report)

    def shuffle_phase(self, agents: AgentSet, method: str) -> StepReport:
        """Run ``method`` on ``agents`` in the order ``agents.shuffle_do(method)`` would.

        With automatic parallel stepping on, this *is* ``agents.shuffle_do(method)``
        (the report comes from ``model.last_step_report``); otherwise the agents are
        shuffled by ``agents.shuffle()``, which draws the same random numbers.
        """
        patched = getattr(type(agents).shuffle_do, "__mesa_llm_patched__", False)
        if self.parallel_stepping and patched and len(agents):
            self.last_step_report = None
            agents.shuffle_do(method)
            report = self.last_step_report
            if report is None:  # cannot happen while the patch is active; be loud if it does
                raise RuntimeError(
                    f"mesa_llm scenarios: {type(self).__name__}: agents.shuffle_do({method!r}) "
                    f"left no StepReport; is automatic parallel stepping enabled?"
                )
            return self._record(report)
        return self.run_phase(list(agents.shuffle()), method)

    def _record(self, report: StepReport) -> StepReport:
        if self._reports_step != self.steps:
            self._reports, self._reports_step = [], self.steps
        self._reports.append(report)
        return report

    def add_agent(self) -> Agent:
        """Add one agent as the constructor would (drawing from ``model.random``); return it."""
        raise NotImplementedError

    def remove_agent(self, agent: Agent) -> None:
        """Remove ``agent`` from the model (between steps)."""
        agent.remove()

    def state(self) -> Any:
        """The scenario's state as plain JSON data (lists, dicts, numbers, strings)."""
        raise NotImplementedError

    def state_digest(self) -> str:
        """A stable digest of :meth:`state` (the same on every machine and process)."""
        text = json.dumps(self.state(), sort_keys=True, separators=(",", ":"))
        return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def step_sequentially(agents: Iterable[Agent], method: str) -> StepReport:
    """Run ``method`` on each agent in turn (as ``current_agent()``), reporting failures."""
    outcomes: list[AgentOutcome] = []
    for agent in agents:
        start = time.perf_counter()
        with acting_as(agent):
            try:
                value = getattr(agent, method)()
            except Exception as exc:
                elapsed = time.perf_counter() - start
                logger.warning(
                    "mesa_llm scenarios: agent %s (%s.%s) failed at step %s: %s: %s",
                    agent.unique_id,
                    type(agent).__name__,
                    method,
                    agent.model.steps,
                    type(exc).__name__,
                    exc,
                )
                outcomes.append(AgentOutcome(agent, agent.unique_id, "error", None, exc, elapsed))
                continue
        elapsed = time.perf_counter() - start
        outcomes.append(AgentOutcome(agent, agent.unique_id, "ok", value, None, elapsed))
    return StepReport(outcomes, method, "sequential")


# --------------------------------------------------------------------------- replies


def reply_text(response: Any, *, agent: Agent) -> str:
    """The text of an LLM reply; ``EmptyResponseError`` if it has none."""
    choices = getattr(response, "choices", None)
    content = choices[0].message.content if choices else None
    if not content or not str(content).strip():
        raise EmptyResponseError(
            "the LLM returned an empty reply",
            raw=content or "",
            agent_id=agent.unique_id,
            step=agent.model.steps,
        )
    return str(content).strip()


def parse_json_reply(response: Any, schema: Mapping[str, Any], *, agent: Agent) -> dict[str, Any]:
    """The reply's JSON object, checked against a flat JSON schema; else ``MalformedResponseError``.

    Checks what structured outputs promise and models still break: the reply is
    a JSON object, every required property is present, and every property has its
    declared type or ``enum`` value.
    """
    raw = reply_text(response, agent=agent)

    def malformed(message: str) -> MalformedResponseError:
        return MalformedResponseError(
            message, raw=raw, agent_id=agent.unique_id, step=agent.model.steps
        )

    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise malformed(f"the reply is not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise malformed("the reply is not a JSON object")
    properties: Mapping[str, Any] = schema.get("properties", {})
    missing = [name for name in schema.get("required", ()) if name not in data]
    if missing:
        raise malformed(f"the reply lacks required field(s) {', '.join(map(repr, missing))}")
    for name, spec in properties.items():
        if name in data and not _matches(data[name], spec):
            raise malformed(f"field {name!r} does not match its schema {spec}")
    return data


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
}


def _matches(value: Any, spec: Mapping[str, Any]) -> bool:
    if "enum" in spec:
        return any(value == option and type(value) is type(option) for option in spec["enum"])
    kind = spec.get("type")
    if kind is None:
        return True
    if isinstance(value, bool) and kind in ("integer", "number"):
        return False
    return isinstance(value, _JSON_TYPES.get(kind, (object,)))


def json_schema_format(name: str, schema: Mapping[str, Any]) -> dict[str, Any]:
    """The OpenAI ``response_format`` asking for JSON matching ``schema``."""
    return {
        "type": "json_schema",
        "json_schema": {"name": name, "strict": True, "schema": dict(schema)},
    }
