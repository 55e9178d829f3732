"""``LLMAgent``: a Mesa agent that observes, plans with an LLM and acts through tools."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from mesa import Agent, Model

from mesa_llm._types import Observation, Plan
from mesa_llm.memory import ShortTermMemory
from mesa_llm.module_llm import ModuleLLM
from mesa_llm.parallel_stepping._methods import _defers_to_sync
from mesa_llm.reasoning import CoTReasoning, Reasoning
from mesa_llm.tools import ToolManager, _run_blocking

__all__ = ["DEFAULT_LLM_MODEL", "LLMAgent"]

# A real, inexpensive model: without a key the agent fails at construction with an error
# naming OPENAI_API_KEY, and under the test harness's fake LLM it runs offline unchanged.
DEFAULT_LLM_MODEL = "openai/gpt-4o-mini"


class LLMAgent(Agent):
    """A Mesa agent that observes (``generate_obs``), plans (``reasoning``), acts (``apply_plan``).

    ``reasoning`` is a ``Reasoning`` class (or any callable taking the agent and
    returning one). ``tools`` are added to the default tools of its
    ``ToolManager``. ``vision`` is the neighbourhood radius observed (0: none).
    ``llm_kwargs`` go to ``ModuleLLM`` (``retry=``, ``timeout=``, ``batching=``,
    ``api_key=``, ``temperature=``, ...). The LLM's retry jitter is seeded from
    the model's seed and the agent's unique_id.
    """

    def __init__(
        self,
        model: Model,
        reasoning: Callable[[LLMAgent], Reasoning] = CoTReasoning,
        llm_model: str = DEFAULT_LLM_MODEL,
        system_prompt: str | None = None,
        step_prompt: str | None = None,
        api_base: str | None = None,
        tools: Iterable[Callable[..., Any]] | None = None,
        internal_state: Mapping[str, Any] | list[str] | str | None = None,
        *,
        vision: float = 1,
        memory_capacity: int = 5,
        llm_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(model)
        self.step_prompt = step_prompt
        self.internal_state: dict[str, Any] | list[str]
        if isinstance(internal_state, Mapping):
            self.internal_state = dict(internal_state)
        elif isinstance(internal_state, str):
            self.internal_state = [internal_state]
        else:
            self.internal_state = list(internal_state or [])
        self.vision = vision
        self.memory = ShortTermMemory(memory_capacity)
        self.tool_manager = ToolManager(tools or ())
        extra = dict(llm_kwargs or {})
        if "api_base" in extra:  # llm_kwargs may point the agent at an endpoint too
            if api_base is not None and extra["api_base"] != api_base:
                raise ValueError(
                    f"mesa_llm: LLMAgent got api_base={api_base!r} and "
                    f"llm_kwargs['api_base']={extra['api_base']!r}; give it once"
                )
            api_base = extra.pop("api_base")
        self.llm = ModuleLLM(
            llm_model,
            api_base,
            system_prompt,
            seed=_llm_seed(getattr(model, "_seed", None), self.unique_id),
            agent=self,
            **extra,
        )
        self.reasoning: Reasoning = reasoning(self)

    @property
    def system_prompt(self) -> str | None:
        """The agent's persona, sent as the system prompt of its LLM calls."""
        return self.llm.system_prompt

    @system_prompt.setter
    def system_prompt(self, value: str | None) -> None:
        self.llm.system_prompt = value

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(unique_id={self.unique_id}, llm={self.llm!r}, "
            f"reasoning={type(self.reasoning).__name__})"
        )

    def generate_obs(self) -> Observation:
        """Observe: this agent's state and position, and its neighbours' within ``vision``."""
        self_state = {
            "unique_id": self.unique_id,
            "type": type(self).__name__,
            "position": _position(self),
            "internal_state": copy.copy(self.internal_state),
        }
        local_state = {
            f"{type(other).__name__} {other.unique_id}": {
                "position": _position(other),
                "internal_state": copy.copy(getattr(other, "internal_state", None)),
            }
            for other in self.neighbours()
        }
        return Observation(self.model.steps, self_state, local_state)

    def neighbours(self) -> list[Agent]:
        """Other agents within ``vision``, by unique_id.

        Uses the agent's ``cell`` (``mesa.discrete_space``) or its ``pos`` in
        ``model.grid`` / ``model.space`` (``mesa.space`` grids, hex grids, networks,
        continuous space); empty when there is neither.
        """
        if not self.vision:
            return []
        found: Iterable[Agent]
        cell = getattr(self, "cell", None)
        if cell is not None:
            neighbourhood = cell.get_neighborhood(radius=int(self.vision), include_center=True)
            found = [agent for each in neighbourhood for agent in each.agents]
        else:
            space = getattr(self.model, "grid", None)
            if space is None:
                space = getattr(self.model, "space", None)
            get_neighbors = getattr(space, "get_neighbors", None)
            pos = getattr(self, "pos", None)
            if pos is None or get_neighbors is None:
                return []
            options: dict[str, Any] = {"include_center": True, "radius": self.vision}
            if "moore" in inspect.signature(get_neighbors).parameters:
                options["moore"] = True
            found = get_neighbors(pos, **options)
        unique = {agent.unique_id: agent for agent in found if agent is not self}
        return [unique[uid] for uid in sorted(unique)]

    def apply_plan(self, plan: Plan) -> list[Any]:
        """Execute the plan's tool calls in order and return their results."""
        return [self.tool_manager.execute(self, action) for action in plan.actions]

    async def aapply_plan(self, plan: Plan) -> list[Any]:
        """Async ``apply_plan``: async tools are awaited."""
        return [await self.tool_manager.aexecute(self, action) for action in plan.actions]

    def observe_and_plan(self) -> Plan:
        """Observe and plan, without acting (to plan in parallel and apply in a chosen order)."""
        return self.reasoning.plan(prompt=self.step_prompt, obs=self.generate_obs())

    async def aobserve_and_plan(self) -> Plan:
        """Async ``observe_and_plan``."""
        return await self.reasoning.aplan(prompt=self.step_prompt, obs=self.generate_obs())

    def step(self) -> None:
        """Observe, plan, act. If a subclass overrides only ``astep``, that runs instead."""
        if not _overrides(self, "step") and _overrides(self, "astep"):
            _run_blocking(self.astep())
            return
        self.apply_plan(self.observe_and_plan())

    @_defers_to_sync
    async def astep(self) -> Any:
        """Async observe, plan, act. If a subclass overrides only ``step``, that runs in a thread.

        Parallel stepping sees this and calls such a subclass's ``step`` itself, in its
        own worker pool, so the subclass's ``step`` is never bypassed.
        """
        if not _overrides(self, "astep") and _overrides(self, "step"):
            return await asyncio.to_thread(self.step)
        await self.aapply_plan(await self.aobserve_and_plan())
        return None


def _llm_seed(model_seed: Any, unique_id: int) -> int:
    """A stable per-agent seed (``hash()`` varies between processes; blake2b does not)."""
    digest = hashlib.blake2b(f"{model_seed!r}:{unique_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _overrides(agent: LLMAgent, name: str) -> bool:
    return getattr(type(agent), name) is not getattr(LLMAgent, name)


def _position(agent: Any) -> Any:
    pos = getattr(agent, "pos", None)
    if pos is not None:
        return pos
    cell = getattr(agent, "cell", None)
    return getattr(cell, "coordinate", None)
