"""``LLMAgent``: a Mesa agent that observes, plans with an LLM and acts through tools.

It also speaks mesa-llm 0.3's API: the release's constructor order
``(model, reasoning, llm_model, system_prompt, vision, internal_state,
step_prompt, api_base)``, ``agenerate_obs``, ``send_message``/``asend_message``,
``pre_step``/``post_step`` (and async twins) run once around every step of every
subclass, and tool failures returned as ``"Error: ..."`` results.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import hashlib
import logging
from collections.abc import Callable, Iterable, Mapping
from types import SimpleNamespace
from typing import Any

from mesa import Agent, Model

from mesa_llm import _memory_protocol as memory_protocol
from mesa_llm._observation import neighbours, position, public_state
from mesa_llm._types import Observation, Plan
from mesa_llm.module_llm import ModuleLLM
from mesa_llm.parallel_stepping._methods import _defers_to_sync
from mesa_llm.reasoning import CoTReasoning, Reasoning
from mesa_llm.tools import ToolManager
from mesa_llm.tools.inbuilt_tools import deliver
from mesa_llm.tools.tool_manager import _run_blocking

__all__ = ["DEFAULT_LLM_MODEL", "LLMAgent"]

logger = logging.getLogger(__name__)

# A real, inexpensive model: without a key the agent fails at construction with an error
# naming OPENAI_API_KEY, and under the test harness's fake LLM it runs offline unchanged.
DEFAULT_LLM_MODEL = "openai/gpt-4o-mini"
_HOOK_DEPTH = "_mesa_llm_hook_depth"


class LLMAgent(Agent):
    """A Mesa agent that observes (``generate_obs``), plans (``reasoning``), acts (``apply_plan``).

    ``reasoning`` is a ``Reasoning`` class (or any callable taking the agent and
    returning one). ``vision`` is the neighbourhood radius observed (0 or None:
    nobody; -1: every other agent). ``tools``: the agent's tools (with
    ``ToolManager``'s defaults); without it the agent gets mesa-llm 0.3's default
    manager (the built-in and globally registered tools). ``llm_kwargs`` go to
    ``ModuleLLM`` (``retry=``, ``timeout=``, ``batching=``, ``api_key=``,
    ``temperature=``, ...). The LLM's retry jitter is seeded from the model's seed
    and the agent's unique_id. A model with ``parallel_stepping = True`` gets
    automatic parallel stepping (asyncio) switched on when its first agent is
    built, unless it is already on.
    """

    def __init__(
        self,
        model: Model,
        reasoning: Callable[[LLMAgent], Reasoning] = CoTReasoning,
        llm_model: str = DEFAULT_LLM_MODEL,
        system_prompt: str | None = None,
        vision: float | None = 1,
        internal_state: Mapping[str, Any] | list[str] | str | None = None,
        step_prompt: str | None = None,
        api_base: str | None = None,
        *,
        tools: Iterable[Callable[..., Any]] | None = None,
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
        self.tool_manager = ToolManager(tools) if tools is not None else ToolManager()
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
        self.memory: Any = _default_memory(self, memory_capacity)
        self._current_plan: Plan | None = None
        self._step_display_data: dict[str, Any] = {}
        self.recorder: Any = None
        self.reasoning: Reasoning = reasoning(self)
        if getattr(model, "parallel_stepping", False):
            _enable_automatic_stepping()

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

    def __str__(self) -> str:
        return f"LLMAgent {self.unique_id}"

    # -- observing ------------------------------------------------------------------------

    def generate_obs(self) -> Observation:
        """Observe this agent's state and its neighbours' within ``vision``; remember it.

        ``self_state`` has mesa-llm 0.3's keys (``agent_unique_id``, ``location``,
        ``internal_state``) and ours (``unique_id``, ``type``, ``position``).
        Neighbours never see ``internal_state`` entries whose names start with ``_``.
        """
        obs = self._observation()
        memory_protocol.remember_observation(self.memory, obs)
        return obs

    async def agenerate_obs(self) -> Observation:
        """Async ``generate_obs`` (the memory's ``aadd_to_memory`` is awaited)."""
        obs = self._observation()
        await memory_protocol.aremember_observation(self.memory, obs)
        return obs

    def _observation(self) -> Observation:
        here = position(self)
        self_state = {
            "agent_unique_id": self.unique_id,
            "unique_id": self.unique_id,
            "type": type(self).__name__,
            "location": here,
            "position": here,
            "internal_state": copy.copy(self.internal_state),
        }
        local_state = {
            f"{type(other).__name__} {other.unique_id}": {
                "position": position(other),
                "internal_state": public_state(getattr(other, "internal_state", None)),
            }
            for other in self.neighbours()
        }
        return Observation(self.model.steps, self_state, local_state)

    def neighbours(self) -> list[Agent]:
        """Other agents within ``vision``, by unique_id (see ``generate_obs``)."""
        return neighbours(self, self.vision)

    # -- acting ---------------------------------------------------------------------------

    def apply_plan(self, plan: Plan) -> list[dict[str, Any]]:
        """Run the plan's tool calls in order; one result dict per call, also remembered.

        Each result is ``{"tool_call_id", "role": "tool", "name", "response"}``. A
        failing call never raises: its response is ``"Error: ..."`` (logged with the
        agent's id), so the LLM sees it next time.
        """
        self._current_plan = plan
        results = self.tool_manager.call_tools(self, _plan_message(plan))
        memory_protocol.remember(self.memory, "action", _action_content(results))
        return results

    async def aapply_plan(self, plan: Plan) -> list[dict[str, Any]]:
        """Async ``apply_plan``: async tools are awaited."""
        self._current_plan = plan
        results = await self.tool_manager.acall_tools(self, _plan_message(plan))
        await memory_protocol.aremember(self.memory, "action", _action_content(results))
        return results

    def send_message(self, message: str, recipients: Iterable[Agent]) -> str:
        """Put ``message`` into each recipient's memory (and the sender's); a status text."""
        return deliver(self, message, list(recipients), record_sender=True)

    async def asend_message(self, message: str, recipients: Iterable[Agent]) -> str:
        """Async ``send_message`` (memory writes run in a worker thread)."""
        return await asyncio.to_thread(self.send_message, message, list(recipients))

    def observe_and_plan(self) -> Plan:
        """Observe and plan, without acting (to plan in parallel and apply in a chosen order)."""
        return self.reasoning.plan(prompt=self.step_prompt, obs=self.generate_obs())

    async def aobserve_and_plan(self) -> Plan:
        """Async ``observe_and_plan``."""
        return await self.reasoning.aplan(prompt=self.step_prompt, obs=await self.agenerate_obs())

    # -- stepping -------------------------------------------------------------------------

    def pre_step(self) -> None:
        """Before each step: the memory snapshots what arrived since the last step."""
        memory_protocol.process(self.memory, pre_step=True)

    def post_step(self) -> None:
        """After a step that succeeded: the memory files the step's entry (and may consolidate)."""
        memory_protocol.process(self.memory, pre_step=False)

    def abort_step(self, error: BaseException | None = None) -> None:
        """After a step that raised: the memory files what the step recorded, with ``step_error``.

        No LLM call (no consolidation); the next step starts clean.
        """
        memory_protocol.abort(self.memory, error)

    async def apre_step(self) -> None:
        """Async ``pre_step``."""
        await memory_protocol.aprocess(self.memory, pre_step=True)

    async def apost_step(self) -> None:
        """Async ``post_step``."""
        await memory_protocol.aprocess(self.memory, pre_step=False)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Wrap a subclass's own ``step``/``astep`` with the pre/post hooks (once per step)."""
        super().__init_subclass__(**kwargs)
        if "step" in cls.__dict__:
            cls.step = _with_hooks(cls.__dict__["step"])  # type: ignore[method-assign]
        if "astep" in cls.__dict__:
            cls.astep = _with_async_hooks(cls.__dict__["astep"])  # type: ignore[method-assign]

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


def _with_hooks(step: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(step)
    def hooked(self: LLMAgent, *args: Any, **kwargs: Any) -> Any:
        depth = getattr(self, _HOOK_DEPTH, 0)
        if depth:  # a step called from a step (super().step(), astep -> step): hooks once
            return step(self, *args, **kwargs)
        setattr(self, _HOOK_DEPTH, 1)
        try:
            self.pre_step()
            try:
                result = step(self, *args, **kwargs)
            except BaseException as error:  # re-raised: the memory only closes the step
                self.abort_step(error)
                raise
            self.post_step()
            return result
        finally:
            setattr(self, _HOOK_DEPTH, 0)

    return hooked


def _with_async_hooks(astep: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(astep)
    async def hooked(self: LLMAgent, *args: Any, **kwargs: Any) -> Any:
        depth = getattr(self, _HOOK_DEPTH, 0)
        if depth:
            return await astep(self, *args, **kwargs)
        setattr(self, _HOOK_DEPTH, 1)
        try:
            await self.apre_step()
            try:
                result = await astep(self, *args, **kwargs)
            except BaseException as error:  # re-raised: the memory only closes the step
                self.abort_step(error)
                raise
            await self.apost_step()
            return result
        finally:
            setattr(self, _HOOK_DEPTH, 0)

    return hooked


LLMAgent.step = _with_hooks(LLMAgent.step)  # type: ignore[method-assign]
LLMAgent.astep = _with_async_hooks(LLMAgent.astep)  # type: ignore[method-assign]


def _default_memory(agent: LLMAgent, capacity: int) -> Any:
    """mesa-llm 0.3's default: an ``STLTMemory`` consolidating with the agent's LLM settings."""
    from mesa_llm.memory.st_lt_memory import STLTMemory

    return STLTMemory(
        agent=agent,
        short_term_capacity=capacity,
        consolidation_capacity=2,
        llm_model=agent.llm.llm_model,
        api_base=agent.llm.api_base,
    )


def _enable_automatic_stepping() -> None:
    """Switch automatic parallel stepping on (asyncio) unless it is on already."""
    from mesa.agent import AgentSet

    if getattr(AgentSet.shuffle_do, "__mesa_llm_patched__", False):
        return  # on already, with the mode its caller chose
    from mesa_llm.parallel_stepping import enable_automatic_parallel_stepping

    logger.info(
        "mesa_llm: a model with parallel_stepping=True built an LLMAgent; automatic "
        "parallel stepping (asyncio) switched on, as mesa-llm 0.3 did at import"
    )
    enable_automatic_parallel_stepping("asyncio")


def _plan_message(plan: Any) -> Any:
    """What ``call_tools`` runs: the plan's parsed actions, else its raw LLM message."""
    actions = getattr(plan, "actions", None)
    if actions:
        calls = [
            {"id": a.id, "function": {"name": a.name, "arguments": a.arguments}} for a in actions
        ]
        return SimpleNamespace(tool_calls=calls)
    return getattr(plan, "llm_plan", None)


def _action_content(results: list[dict[str, Any]]) -> dict[str, Any]:
    return {"tool_calls": [{"name": r["name"], "response": r["response"]} for r in results]}


def _llm_seed(model_seed: Any, unique_id: int) -> int:
    """A stable per-agent seed (``hash()`` varies between processes; blake2b does not)."""
    digest = hashlib.blake2b(f"{model_seed!r}:{unique_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _overrides(agent: LLMAgent, name: str) -> bool:
    return getattr(type(agent), name) is not getattr(LLMAgent, name)
