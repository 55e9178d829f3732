"""Negotiation: pairs of traders bartering goods, with tool-call offers and JSON answers.

**What it models.** Each trader holds grain, fish and wool and values each good
privately. Every step the traders are paired in Mesa's shuffle order (neighbours
in that order trade; with an odd count the last one sits out). In the *offer*
phase each trader proposes one barter to its partner with the ``offer`` tool
(give so much of one good for so much of another). In the *answer* phase each
trader answers its partner's offer with a structured reply, JSON matching
``{"accept": bool, "reason": str}`` requested through ``response_format``. Then
the accepted offers are executed one by one in the shuffle order, each only if
both sides still hold the goods at that moment.

**How it steps.** Two parallel phases separated by a commit: offers are made in
parallel from the inventories at the start of the step and recorded in shuffle
order; answers are made in parallel from those offers; trades are executed in
shuffle order. A trader whose offer phase failed idles for the rest of the step
(no offer, no answer); a failed answer leaves the partner's offer unanswered.

**Faults exercised.** Every kind, and ``malformed_json`` in both shapes that
matter: truncated tool-call arguments (``ToolArgumentsError``) in the offer
phase, and JSON that breaks the requested schema (a required field missing:
``MalformedResponseError``) in the answer phase. Transient errors are retried by
each trader's ``RetryPolicy``; empty replies raise ``EmptyResponseError``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from mesa_llm.llm_agent import LLMAgent
from mesa_llm.reasoning import Plan
from mesa_llm.tools import ToolManager, tool
from mesa_llm_testing.scenarios._common import (
    DEFAULT_LLM_MODEL,
    DirectReasoning,
    ScenarioModel,
    json_schema_format,
    parse_json_reply,
)

if TYPE_CHECKING:
    from mesa_llm.module_llm import RetryPolicy

__all__ = ["NegotiationModel", "Offer", "Trader"]

GOODS = ("grain", "fish", "wool")
Good = Literal["grain", "fish", "wool"]
Amount = Literal[1, 2, 3]

_PERSONA = (
    "You are a trader at a market. You barter goods with one partner per round and want to "
    "end up with the goods you value most."
)
_ANSWER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "accept": {"type": "boolean"},
        "reason": {"type": "string"},
    },
    "required": ["accept", "reason"],
    "additionalProperties": False,
}
_ANSWER_FORMAT = json_schema_format("trade_answer", _ANSWER_SCHEMA)


@dataclass(frozen=True)
class Offer:
    """``proposer`` offers ``partner`` ``give_amount`` ``give`` for ``want_amount`` ``want``."""

    proposer: int
    partner: int
    give: str
    give_amount: int
    want: str
    want_amount: int

    def __str__(self) -> str:
        return (
            f"trader {self.proposer} offers {self.give_amount} {self.give} "
            f"for {self.want_amount} {self.want}"
        )


@tool
def offer(agent: Trader, give: Good, give_amount: Amount, want: Good, want_amount: Amount) -> str:
    """Offer your partner a barter: you give one good and ask for another in return.

    Args:
        give: the good you give.
        give_amount: how much of it you give.
        want: the good you want in return (different from the one you give).
        want_amount: how much of it you want.
    """
    partner = agent.partner
    if partner is None:
        return "you have no partner this round"
    if give == want:
        return "an offer must exchange two different goods; no offer made"
    agent.pending_offer = Offer(
        agent.unique_id, partner.unique_id, give, give_amount, want, want_amount
    )
    return f"offer made: {agent.pending_offer}"


class Trader(LLMAgent):
    """A trader that makes one offer and answers one offer per step."""

    model: NegotiationModel

    def __init__(
        self, model: NegotiationModel, *, inventory: dict[str, int], values: dict[str, float]
    ) -> None:
        super().__init__(
            model,
            reasoning=DirectReasoning,
            llm_model=model.llm_model,
            system_prompt=_PERSONA,
            internal_state={"role": "trader"},
            vision=0,
            llm_kwargs=model.llm_kwargs,
        )
        self.tool_manager = ToolManager([offer], include_defaults=False)
        self.inventory = inventory
        self.values = values
        self.partner: Trader | None = None
        self.pending_offer: Offer | None = None
        self.trades = 0

    def worth(self) -> float:
        """What the inventory is worth to this trader."""
        return sum(self.values[g] * self.inventory[g] for g in GOODS)

    def _holdings(self, who: Trader) -> str:
        return ", ".join(f"{who.inventory[g]} {g}" for g in GOODS)

    # -- offer phase -----------------------------------------------------------------------

    def offer_task(self) -> str | None:
        """The offer phase's task, or None without a partner."""
        if self.partner is None:
            return None
        values = ", ".join(f"{g} {self.values[g]:.2f}" for g in GOODS)
        return (
            f"You hold {self._holdings(self)}; one unit is worth to you: {values}. Your partner, "
            f"trader {self.partner.unique_id}, holds {self._holdings(self.partner)}. Make one "
            f"offer that leaves you better off."
        )

    def make_offer(self) -> Plan:
        """Plan this step's offer (an ``offer`` tool call)."""
        task = self.offer_task()
        if task is None:
            return Plan(self.model.steps, "no partner this round")
        return self.reasoning.plan(prompt=task, obs=self.generate_obs())

    async def amake_offer(self) -> Plan:
        """Async ``make_offer``."""
        task = self.offer_task()
        if task is None:
            return Plan(self.model.steps, "no partner this round")
        return await self.reasoning.aplan(prompt=task, obs=self.generate_obs())

    # -- answer phase ----------------------------------------------------------------------

    def answer_prompt(self) -> str:
        """The answer phase's prompt: the partner's offer and what it means to this trader."""
        proposal = self.partner.pending_offer if self.partner is not None else None
        assert proposal is not None, "answer_prompt() is only asked of traders who got an offer"
        gain = self.values[proposal.give] * proposal.give_amount
        loss = self.values[proposal.want] * proposal.want_amount
        return (
            f"You hold {self._holdings(self)}. Your partner offers: {proposal}. To you the goods "
            f"you would receive are worth {gain:.2f} and those you would give {loss:.2f}. Answer "
            f'with JSON {{"accept": true or false, "reason": "..."}}.'
        )

    def answer_offer(self) -> bool:
        """Answer the partner's offer (structured JSON); True to accept."""
        response = self.llm.generate(prompt=self.answer_prompt(), response_format=_ANSWER_FORMAT)
        return bool(parse_json_reply(response, _ANSWER_SCHEMA, agent=self)["accept"])

    async def aanswer_offer(self) -> bool:
        """Async ``answer_offer``."""
        response = await self.llm.agenerate(
            prompt=self.answer_prompt(), response_format=_ANSWER_FORMAT
        )
        return bool(parse_json_reply(response, _ANSWER_SCHEMA, agent=self)["accept"])


class NegotiationModel(ScenarioModel):
    """Traders paired each step, bartering by tool-call offers and JSON answers."""

    scenario_name = "negotiation"

    def __init__(
        self,
        *,
        seed: int | None = None,
        n_agents: int = 10,
        llm_model: str = DEFAULT_LLM_MODEL,
        retry: RetryPolicy | None = None,
        llm_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(seed=seed, llm_model=llm_model, retry=retry, llm_kwargs=llm_kwargs)
        if n_agents < 1:
            raise ValueError(f"mesa_llm scenarios: negotiation needs n_agents >= 1, got {n_agents}")
        self.trades = 0
        for _ in range(n_agents):
            self.add_agent()

    def add_agent(self) -> Trader:
        """Add a trader with a random inventory and random values."""
        return Trader(
            self,
            inventory={g: self.random.randint(2, 8) for g in GOODS},
            values={g: round(self.random.uniform(0.5, 2.0), 2) for g in GOODS},
        )

    def step(self) -> None:
        """Pair up; offer in parallel; record offers; answer in parallel; trade in shuffle order."""
        order: list[Trader] = list(self.agents.shuffle())
        for trader in order:
            trader.partner = None
            trader.pending_offer = None
        for first, second in zip(order[0::2], order[1::2], strict=False):
            first.partner, second.partner = second, first

        offers = self.run_phase(order, "make_offer")
        for outcome in offers.succeeded:  # records pending offers, in shuffle order
            outcome.agent.apply_plan(outcome.value)

        offered = {o.agent.unique_id for o in offers.succeeded}
        answering = [
            t
            for t in order
            if t.unique_id in offered and t.partner is not None and t.partner.pending_offer
        ]
        answers = self.run_phase(answering, "answer_offer")
        for outcome in answers.succeeded:
            if outcome.value and outcome.agent.partner is not None:
                self._trade(outcome.agent.partner.pending_offer, outcome.agent)

    def _trade(self, proposal: Offer | None, responder: Trader) -> None:
        """Execute an accepted offer if both sides still hold the goods."""
        if proposal is None:
            return
        proposer = responder.partner
        assert proposer is not None
        if (
            proposer.inventory[proposal.give] < proposal.give_amount
            or responder.inventory[proposal.want] < proposal.want_amount
        ):
            return
        proposer.inventory[proposal.give] -= proposal.give_amount
        responder.inventory[proposal.give] += proposal.give_amount
        responder.inventory[proposal.want] -= proposal.want_amount
        proposer.inventory[proposal.want] += proposal.want_amount
        proposer.trades += 1
        responder.trades += 1
        self.trades += 1

    def state(self) -> dict[str, Any]:
        """Every trader's inventory and trade count, and the total number of trades."""
        traders = sorted(self.agents, key=lambda a: a.unique_id)
        return {
            "trades": self.trades,
            "traders": [[t.unique_id, [t.inventory[g] for g in GOODS], t.trades] for t in traders],
        }
