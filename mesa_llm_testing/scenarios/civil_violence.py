"""Civil violence (after Epstein, 2002): citizens and cops on a grid, each deciding by LLM.

**What it models.** Citizens suffer a hardship ``H`` and see the regime's
legitimacy ``L``; their grievance is ``G = H * (1 - L)``. Each step every free
agent asks its LLM what to do and answers with a tool call: citizens ``rebel``,
``stay_quiet`` or ``move``; cops ``arrest`` (one active citizen within their
vision, chosen at random) or ``move``. A citizen's prompt states its grievance,
its risk aversion and Epstein's estimated arrest probability
``P = 1 - exp(-k * round(cops / actives))`` in its vision, but the LLM decides.
Arrested citizens are jailed for a random number of steps and sit them out.

**How it steps.** Plan in parallel, commit in order: ``self.agents.shuffle_do(
"observe_and_plan")`` (run in parallel by mesa_llm's automatic stepping when
``parallel_stepping`` is on) makes every agent's plan from the state at the start
of the step; the plans are then applied one by one in that shuffle order, so
moves and arrests resolve the same way in every stepping mode.

**Faults exercised.** Every kind. Rate limits, timeouts, server and connection
errors are retried by each agent's ``RetryPolicy``; one that outlasts it, an empty
reply (``EmptyResponseError``) or a malformed tool call (truncated JSON arguments:
``ToolArgumentsError``) makes that agent idle for the step: it keeps its
position and condition.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal

from mesa import Agent
from mesa.space import MultiGrid

from mesa_llm.llm_agent import LLMAgent
from mesa_llm.reasoning import Plan, Reasoning
from mesa_llm.tools import ToolManager, tool
from mesa_llm_testing.scenarios._common import DEFAULT_LLM_MODEL, DirectReasoning, ScenarioModel

if TYPE_CHECKING:
    from mesa_llm.module_llm import RetryPolicy

__all__ = ["Citizen", "CivilViolenceModel", "Cop"]

Direction = Literal["north", "south", "east", "west"]
_STEPS: dict[str, tuple[int, int]] = {
    "north": (0, 1),
    "south": (0, -1),
    "east": (1, 0),
    "west": (-1, 0),
}
_ARREST_CONSTANT = 2.3  # Epstein's k: P = 0.9 with one cop per active citizen

_CITIZEN_PERSONA = (
    "You are a citizen living under a government. You weigh your grievance against the risk "
    "of being arrested when deciding whether to join an open rebellion."
)
_COP_PERSONA = "You are a police officer. Your job is to arrest citizens who openly rebel."


# --------------------------------------------------------------------------- tools


@tool
def rebel(agent: Citizen) -> str:
    """Join the rebellion: protest openly from this step on."""
    agent.condition = "active"
    return "you are protesting openly"


@tool
def stay_quiet(agent: Citizen) -> str:
    """Stay quiet: do not protest (stop protesting if you were)."""
    agent.condition = "quiet"
    return "you are staying quiet"


@tool
def move(agent: LLMAgent, direction: Direction) -> str:
    """Move one cell on the grid.

    Args:
        direction: the neighbouring cell to move to.
    """
    grid = agent.model.grid
    dx, dy = _STEPS[direction]
    x, y = agent.pos
    target = grid.torus_adj((x + dx, y + dy))
    grid.move_agent(agent, target)
    return f"you moved {direction} to {target}"


@tool
def arrest(agent: Cop) -> str:
    """Arrest one citizen who is protesting openly within your vision, if there is one."""
    suspects = [a for a in agent.neighbours() if isinstance(a, Citizen) and a.condition == "active"]
    if not suspects:
        return "nobody within your vision is protesting"
    model = agent.model
    suspect = model.random.choice(suspects)  # commit phase: one by one, in shuffle order
    suspect.condition = "jailed"
    suspect.jail_sentence = model.random.randint(1, model.max_jail_term)
    model.arrests += 1
    return f"you arrested citizen {suspect.unique_id}"


# --------------------------------------------------------------------------- agents


class _Free(LLMAgent):
    """An agent whose plan is made from the state at the start of the step."""

    model: CivilViolenceModel

    def __init__(
        self, model: CivilViolenceModel, *, persona: str, tools: list[Any], role: str
    ) -> None:
        super().__init__(
            model,
            reasoning=model.reasoning,
            llm_model=model.llm_model,
            system_prompt=persona,
            internal_state={"role": role},
            vision=model.vision,
            llm_kwargs=model.llm_kwargs,
        )
        # Default tools registered elsewhere in the process must not change the scenario.
        self.tool_manager = ToolManager(tools, include_defaults=False)

    def task(self) -> str | None:
        """The step's task for the LLM, or None to sit the step out without calling it."""
        raise NotImplementedError

    def observe_and_plan(self) -> Plan:
        """Plan this step's action (no LLM call while jailed)."""
        task = self.task()
        if task is None:
            return Plan(self.model.steps, "sitting this step out")
        return self.reasoning.plan(prompt=task, obs=self.generate_obs())

    async def aobserve_and_plan(self) -> Plan:
        """Async ``observe_and_plan``."""
        task = self.task()
        if task is None:
            return Plan(self.model.steps, "sitting this step out")
        return await self.reasoning.aplan(prompt=task, obs=self.generate_obs())

    def count_nearby(self) -> tuple[int, int]:
        """(cops, active citizens) within vision, not counting this agent."""
        cops = actives = 0
        for other in self.neighbours():
            if isinstance(other, Cop):
                cops += 1
            elif isinstance(other, Citizen) and other.condition == "active":
                actives += 1
        return cops, actives


class Citizen(_Free):
    """A citizen who may rebel, stay quiet or move; jailed citizens sit their sentence out."""

    def __init__(self, model: CivilViolenceModel, *, hardship: float, risk_aversion: float) -> None:
        super().__init__(
            model, persona=_CITIZEN_PERSONA, tools=[rebel, stay_quiet, move], role="citizen"
        )
        self.hardship = hardship
        self.risk_aversion = risk_aversion
        self.jail_sentence = 0
        self.condition = "quiet"

    @property
    def condition(self) -> str:
        """``"quiet"``, ``"active"`` (rebelling) or ``"jailed"``; visible to neighbours."""
        return str(self.internal_state["condition"])  # type: ignore[call-overload]

    @condition.setter
    def condition(self, value: str) -> None:
        self.internal_state["condition"] = value  # type: ignore[call-overload]

    @property
    def grievance(self) -> float:
        """Epstein's grievance ``H * (1 - L)``."""
        return self.hardship * (1 - self.model.legitimacy)

    def arrest_probability(self) -> float:
        """Epstein's estimate of the chance of arrest if this citizen were active."""
        cops, actives = self.count_nearby()
        return 1 - math.exp(-_ARREST_CONSTANT * round(cops / (actives + 1)))

    def task(self) -> str | None:
        """The citizen's situation and choice, or None while jailed."""
        if self.condition == "jailed":
            return None
        cops, actives = self.count_nearby()
        return (
            f"Your hardship is {self.hardship:.2f} and you see the government's legitimacy as "
            f"{self.model.legitimacy:.2f}, so your grievance is {self.grievance:.2f}. Your risk "
            f"aversion is {self.risk_aversion:.2f}. Within your vision there are {cops} police "
            f"officers and {actives} citizens protesting openly; you are {self.condition}. If you "
            f"protest, your chance of arrest is about {self.arrest_probability():.2f}. Decide: "
            f"rebel, stay quiet, or move."
        )


class Cop(_Free):
    """A police officer who arrests an active citizen within vision, or moves."""

    def __init__(self, model: CivilViolenceModel) -> None:
        super().__init__(model, persona=_COP_PERSONA, tools=[arrest, move], role="cop")

    def task(self) -> str:
        """How many citizens protest nearby, and the choice to make."""
        _, actives = self.count_nearby()
        return (
            f"Within your vision {actives} citizens are protesting openly. Decide: arrest one "
            f"of them, or move to patrol elsewhere."
        )


# --------------------------------------------------------------------------- model


class CivilViolenceModel(ScenarioModel):
    """Epstein's civil violence on a torus grid, with every citizen and cop deciding by LLM."""

    scenario_name = "civil_violence"

    def __init__(
        self,
        *,
        seed: int | None = None,
        n_agents: int = 12,
        llm_model: str = DEFAULT_LLM_MODEL,
        cop_fraction: float = 0.25,
        legitimacy: float = 0.8,
        vision: int = 2,
        max_jail_term: int = 3,
        width: int | None = None,
        height: int | None = None,
        reasoning: Callable[[LLMAgent], Reasoning] = DirectReasoning,
        retry: RetryPolicy | None = None,
        llm_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(seed=seed, llm_model=llm_model, retry=retry, llm_kwargs=llm_kwargs)
        if n_agents < 1:
            raise ValueError(
                f"mesa_llm scenarios: civil_violence needs n_agents >= 1, got {n_agents}"
            )
        if not 0 <= cop_fraction < 1:
            raise ValueError(
                f"mesa_llm scenarios: civil_violence cop_fraction must be in [0, 1), "
                f"got {cop_fraction}"
            )
        side = max(4, math.ceil(math.sqrt(n_agents * 2.5)))
        self.grid = MultiGrid(width or side, height or side, torus=True)
        self.legitimacy = legitimacy
        self.vision = vision
        self.max_jail_term = max_jail_term
        self.reasoning = reasoning
        self.arrests = 0

        n_cops = min(n_agents - 1, round(n_agents * cop_fraction)) if n_agents > 1 else 0
        for index in range(n_agents):
            self.add_agent("cop" if index < n_cops else "citizen")

    def add_agent(self, kind: Literal["citizen", "cop"] = "citizen") -> Citizen | Cop:
        """Add a citizen (random hardship and risk aversion) or a cop, on a random empty cell."""
        agent: Citizen | Cop
        if kind == "cop":
            agent = Cop(self)
        elif kind == "citizen":
            agent = Citizen(
                self,
                hardship=round(self.random.random(), 2),
                risk_aversion=round(self.random.random(), 2),
            )
        else:
            raise ValueError(
                f"mesa_llm scenarios: civil_violence agents are 'citizen' or 'cop', not {kind!r}"
            )
        empty = sorted(self.grid.empties)
        if empty:
            cell = self.random.choice(empty)
        else:
            cell = (self.random.randrange(self.grid.width), self.random.randrange(self.grid.height))
        self.grid.place_agent(agent, cell)
        return agent

    def remove_agent(self, agent: Agent) -> None:
        """Take ``agent`` off the grid and out of the model."""
        self.grid.remove_agent(agent)
        agent.remove()

    def step(self) -> None:
        """Serve jail terms; plan in parallel from this state; apply the plans in shuffle order."""
        for citizen in self.agents_by_type.get(Citizen, ()):
            if citizen.condition == "jailed":
                citizen.jail_sentence -= 1
                if citizen.jail_sentence <= 0:
                    citizen.condition = "quiet"
        report = self.shuffle_phase(self.agents, "observe_and_plan")
        for outcome in report.succeeded:  # failed agents idle this step
            outcome.agent.apply_plan(outcome.value)

    def counts(self) -> dict[str, int]:
        """Citizens by condition, and arrests so far."""
        counts = {"quiet": 0, "active": 0, "jailed": 0}
        for citizen in self.agents_by_type.get(Citizen, ()):
            counts[citizen.condition] += 1
        return {**counts, "arrests": self.arrests}

    def state(self) -> dict[str, Any]:
        """Positions and conditions of every agent, and the arrest count."""
        agents = sorted(self.agents, key=lambda a: a.unique_id)
        return {
            "arrests": self.arrests,
            "agents": [
                [
                    a.unique_id,
                    list(a.pos),
                    getattr(a, "condition", "cop"),
                    getattr(a, "jail_sentence", 0),
                ]
                for a in agents
            ],
        }
