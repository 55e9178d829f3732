"""Island commons: islanders share a fishery and govern it by proposals a judge chooses among.

**What it models.** A fish stock regrows logistically each round. Islanders need
fish to keep their energy up; taking too much collapses the stock. Each round
follows the layer-based design with sync points (hybrid option of the MetaIsland
notes, seed 004):

1. *new round*: the stock regrows;
2. *analyze* (parallel): each islander writes a short analysis of the commons (free text);
3. *propose* (parallel): each islander proposes a harvest quota per person (``propose_quota`` tool);
4. *judge* (sync point): a judge agent sees all proposals at once and picks one,
   answering with JSON (``{"choice": <proposal number>}``, an enum of the valid numbers);
5. *decide* (parallel): each islander decides how much to fish (``harvest`` tool) or to ``rest``;
6. *execute*: harvests are served one by one in the round's Mesa shuffle order, each
   capped by the adopted quota and by what is left: early movers are served first,
   which is the deterministic conflict resolution.

An islander whose analysis, proposal or decision failed idles for the rest of the
round (it makes no more calls and catches nothing). If the judge fails, or nobody
proposed, the previous quota stays in force.

**Faults exercised.** Every kind, in three reply shapes: free text (a
``malformed_json`` fault there is harmless: the analysis is just odd text),
tool calls (``ToolArgumentsError``) and structured JSON for the judge
(``MalformedResponseError``). Transient errors are retried by the ``RetryPolicy``;
``EmptyResponseError`` ends the agent's round.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, get_args

from mesa import Agent

from mesa_llm.llm_agent import LLMAgent
from mesa_llm.reasoning import Plan
from mesa_llm.tools import ToolManager, tool
from mesa_llm_testing.scenarios._common import (
    DEFAULT_LLM_MODEL,
    DirectReasoning,
    ScenarioModel,
    json_schema_format,
    parse_json_reply,
    reply_text,
)

if TYPE_CHECKING:
    from mesa_llm.module_llm import RetryPolicy

__all__ = ["IslandCommonsModel", "Islander", "Judge"]

Quota = Literal[1, 2, 3, 4, 5, 6]
Catch = Literal[0, 1, 2, 3, 4, 5, 6, 7, 8]

_ISLANDER_PERSONA = (
    "You live on a small island and fish from a shared fishery. You need fish to keep your "
    "energy up, but an overfished stock collapses for everyone."
)
_JUDGE_PERSONA = (
    "You are the island's judge. Each round you adopt one of the islanders' proposed fishing "
    "quotas, aiming to keep the fishery alive and the islanders fed."
)
_METABOLISM = 2  # fish an islander eats per round
_NO_QUOTA: int = max(get_args(Catch))


@tool
def propose_quota(agent: Islander, limit: Quota) -> str:
    """Propose the most fish each islander may catch per round.

    Args:
        limit: the quota per islander per round.
    """
    agent.proposal = limit
    return f"you proposed a quota of {limit}"


@tool
def harvest(agent: Islander, amount: Catch) -> str:
    """Fish this round.

    Args:
        amount: how many fish you try to catch (the quota and the stock may cap it).
    """
    agent.intent = amount
    return f"you will try to catch {amount} fish"


@tool
def rest(agent: Islander) -> str:
    """Do not fish this round."""
    agent.intent = 0
    return "you rest this round"


class Islander(LLMAgent):
    """An islander who analyses, proposes a quota, and decides how much to fish each round."""

    model: IslandCommonsModel

    def __init__(self, model: IslandCommonsModel, *, energy: int) -> None:
        super().__init__(
            model,
            reasoning=DirectReasoning,
            llm_model=model.llm_model,
            system_prompt=_ISLANDER_PERSONA,
            internal_state={"role": "islander"},
            vision=0,
            llm_kwargs=model.llm_kwargs,
        )
        self.energy = energy
        self.caught = 0
        self.analysis = ""
        self.proposal: int | None = None
        self.intent: int | None = None

    def _situation(self) -> str:
        model = self.model
        return (
            f"Round {model.steps}. The fish stock is {model.stock} of at most {model.capacity}; "
            f"{model.population()} islanders share it. The quota in force is {model.quota} fish "
            f"per islander. Your energy is {self.energy}; you eat {_METABOLISM} fish a round."
        )

    # -- analyze ---------------------------------------------------------------------------

    def analyze(self) -> str:
        """Two sentences on the state of the commons (free text)."""
        return reply_text(self.llm.generate(prompt=self._analysis_prompt()), agent=self)

    async def aanalyze(self) -> str:
        """Async ``analyze``."""
        return reply_text(await self.llm.agenerate(prompt=self._analysis_prompt()), agent=self)

    def _analysis_prompt(self) -> str:
        return f"{self._situation()} In two sentences, how healthy is the fishery and why?"

    # -- propose and decide (tool calls) ---------------------------------------------------

    def _use_tools(self, *tools: Any) -> None:
        self.tool_manager = ToolManager(tools, include_defaults=False)

    def propose(self) -> Plan:
        """Plan a quota proposal (a ``propose_quota`` call)."""
        self._use_tools(propose_quota)
        return self.reasoning.plan(prompt=self._proposal_task(), obs=self.generate_obs())

    async def apropose(self) -> Plan:
        """Async ``propose``."""
        self._use_tools(propose_quota)
        return await self.reasoning.aplan(prompt=self._proposal_task(), obs=self.generate_obs())

    def _proposal_task(self) -> str:
        return (
            f"{self._situation()} Your analysis: {self.analysis} Propose a fishing quota per "
            f"islander for this round."
        )

    def decide(self) -> Plan:
        """Plan this round's fishing (a ``harvest`` or ``rest`` call)."""
        self._use_tools(harvest, rest)
        return self.reasoning.plan(prompt=self._decision_task(), obs=self.generate_obs())

    async def adecide(self) -> Plan:
        """Async ``decide``."""
        self._use_tools(harvest, rest)
        return await self.reasoning.aplan(prompt=self._decision_task(), obs=self.generate_obs())

    def _decision_task(self) -> str:
        return f"{self._situation()} Decide how many fish to try to catch, or rest."


class Judge(LLMAgent):
    """The sync point: sees every proposal of the round at once and adopts one."""

    model: IslandCommonsModel

    def __init__(self, model: IslandCommonsModel) -> None:
        super().__init__(
            model,
            reasoning=DirectReasoning,
            llm_model=model.llm_model,
            system_prompt=_JUDGE_PERSONA,
            internal_state={"role": "judge"},
            vision=0,
            llm_kwargs=model.llm_kwargs,
        )
        self.tool_manager = ToolManager((), include_defaults=False)
        self.proposals: list[tuple[int, int]] = []  # (islander, quota), in shuffle order

    def _request(self) -> tuple[str, dict[str, Any], dict[str, Any]]:
        model = self.model
        listed = "\n".join(
            f"{number}: islander {who} proposes a quota of {limit}"
            for number, (who, limit) in enumerate(self.proposals)
        )
        prompt = (
            f"Round {model.steps}. The fish stock is {model.stock} of at most {model.capacity}; "
            f"{model.population()} islanders fish it. Proposals:\n{listed}\n"
            f'Adopt one: answer with JSON {{"choice": <proposal number>}}.'
        )
        schema = {
            "type": "object",
            "properties": {"choice": {"type": "integer", "enum": list(range(len(self.proposals)))}},
            "required": ["choice"],
            "additionalProperties": False,
        }
        return prompt, schema, json_schema_format("judgement", schema)

    def judge(self) -> int | None:
        """The adopted quota, or None when there is nothing to choose from."""
        if not self.proposals:
            return None
        prompt, schema, response_format = self._request()
        response = self.llm.generate(prompt=prompt, response_format=response_format)
        return self.proposals[parse_json_reply(response, schema, agent=self)["choice"]][1]

    async def ajudge(self) -> int | None:
        """Async ``judge``."""
        if not self.proposals:
            return None
        prompt, schema, response_format = self._request()
        response = await self.llm.agenerate(prompt=prompt, response_format=response_format)
        return self.proposals[parse_json_reply(response, schema, agent=self)["choice"]][1]


class IslandCommonsModel(ScenarioModel):
    """A shared fishery governed round by round: analyze, propose, judge, decide, execute."""

    scenario_name = "island_commons"

    def __init__(
        self,
        *,
        seed: int | None = None,
        n_agents: int = 8,
        llm_model: str = DEFAULT_LLM_MODEL,
        growth_rate: float = 0.3,
        retry: RetryPolicy | None = None,
        llm_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(seed=seed, llm_model=llm_model, retry=retry, llm_kwargs=llm_kwargs)
        if n_agents < 1:
            raise ValueError(
                f"mesa_llm scenarios: island_commons needs n_agents >= 1, got {n_agents}"
            )
        self.capacity = 10 * n_agents
        self.stock = self.capacity // 2
        self.growth_rate = growth_rate
        self.quota = _NO_QUOTA
        for _ in range(n_agents):
            self.add_agent()
        self.judge = Judge(self)

    def add_agent(self) -> Islander:
        """Add an islander with a random energy (the fishery's capacity stays the same)."""
        return Islander(self, energy=self.random.randint(4, 8))

    def remove_agent(self, agent: Agent) -> None:
        """Remove an islander (the judge stays)."""
        if agent is self.judge:
            raise ValueError("mesa_llm scenarios: island_commons cannot run without its judge")
        agent.remove()

    def islanders(self) -> list[Islander]:
        """The islanders, in creation order."""
        return list(self.agents_by_type.get(Islander, ()))

    def population(self) -> int:
        """How many islanders share the fishery."""
        return len(self.agents_by_type.get(Islander, ()))

    def step(self) -> None:
        """One round: regrow, analyze, propose, judge, decide, execute."""
        self.stock += round(self.growth_rate * self.stock * (1 - self.stock / self.capacity))
        order: list[Islander] = list(self.agents_by_type[Islander].shuffle())
        for islander in order:
            islander.proposal = islander.intent = None

        analyses = self.run_phase(order, "analyze")
        for outcome in analyses.succeeded:
            outcome.agent.analysis = outcome.value
        active = _survivors(order, analyses)

        proposals = self.run_phase(active, "propose")
        for outcome in proposals.succeeded:
            outcome.agent.apply_plan(outcome.value)
        active = _survivors(active, proposals)

        self.judge.proposals = [(i.unique_id, i.proposal) for i in active if i.proposal is not None]
        judgement = self.run_phase([self.judge], "judge")
        if judgement.ok and judgement.outcomes[0].value is not None:
            self.quota = judgement.outcomes[0].value

        decisions = self.run_phase(active, "decide")
        for outcome in decisions.succeeded:
            outcome.agent.apply_plan(outcome.value)

        for islander in order:  # execute in shuffle order: first come, first served
            wanted = islander.intent or 0
            caught = min(wanted, self.quota, self.stock)
            self.stock -= caught
            islander.caught += caught
            islander.energy += caught - _METABOLISM

    def state(self) -> dict[str, Any]:
        """The stock, the quota, and every islander's energy and catch."""
        islanders = sorted(self.islanders(), key=lambda a: a.unique_id)
        return {
            "stock": self.stock,
            "quota": self.quota,
            "islanders": [[i.unique_id, i.energy, i.caught] for i in islanders],
        }


def _survivors(agents: list[Islander], report: Any) -> list[Islander]:
    """The agents whose phase succeeded, in the given order."""
    ok = {o.unique_id for o in report.succeeded}
    return [a for a in agents if a.unique_id in ok]
