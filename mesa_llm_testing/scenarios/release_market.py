"""Release market: a mesa-llm 0.3 model, written only with that release's API, run unchanged.

**What it models.** A market square on a small ``MultiGrid``. Sellers pitch
their goods to every buyer with the built-in ``speak_to`` tool; buyers stand at
the stalls and buy with ``buy_product``, which fails (as the release's
negotiation example does) for an unknown product or a price over the buyer's
budget. Nobody moves during a step, so what an agent observes never depends on
who stepped first and every stepping mode gives the same trace. (A release model
whose agents move or change shared state while others observe it is
order-dependent; ``mesa-llm-testing run --mode all`` reports it as such.) Nothing
here uses mesa_llm's own API: the agents, tools, reasoning and parallel stepping are spelled as a
mesa-llm 0.3.2 user spells them (``@tool(tool_manager=...)``, ``ToolManager()``,
``reasoning.aplan(obs=..., selected_tools=[...])``, ``apply_plan``, and a model
that only sets ``self.parallel_stepping = True``), so ``mesa-llm-testing run
release_market`` exercises the compatibility path.

**Faults exercised.** Every kind. A tool that raises becomes an ``"Error: ..."``
tool result the LLM sees next step (never a failed step); LLM faults that outlast
the retries fail that agent's step only, reported per agent.
"""

from __future__ import annotations

from mesa import Model
from mesa.space import MultiGrid

from mesa_llm.llm_agent import LLMAgent
from mesa_llm.reasoning.react import ReActReasoning
from mesa_llm.tools.tool_decorator import tool
from mesa_llm.tools.tool_manager import ToolManager

__all__ = ["MarketBuyer", "MarketSeller", "ReleaseMarketModel"]

seller_tool_manager = ToolManager()
buyer_tool_manager = ToolManager()


@tool(tool_manager=buyer_tool_manager)
def buy_product(agent: LLMAgent, chosen_product: str, chosen_price: int) -> str:
    """Buy a product at a stall.

    Args:
        chosen_product: The product to buy, "apples" or "bread".
        chosen_price: The price to pay, in coins.

    Returns:
        What was bought.
    """
    if chosen_product not in ("apples", "bread"):
        raise ValueError(f"Nobody sells {chosen_product!r} here; try apples or bread")
    if chosen_price > agent.budget:
        raise ValueError(f"Insufficient budget: {agent.budget} coins left")
    agent.budget -= chosen_price
    agent.purchases.append(chosen_product)
    return f"bought {chosen_product} for {chosen_price}"


class MarketSeller(LLMAgent):
    def __init__(self, model, reasoning, llm_model, system_prompt, vision, internal_state,
                 step_prompt):  # fmt: skip
        super().__init__(
            model=model,
            reasoning=reasoning,
            llm_model=llm_model,
            system_prompt=system_prompt,
            vision=vision,
            internal_state=internal_state,
            step_prompt=step_prompt,
        )
        self.tool_manager = seller_tool_manager

    def step(self):
        obs = self.generate_obs()
        plan = self.reasoning.plan(obs=obs, selected_tools=["speak_to"])
        self.apply_plan(plan)

    async def astep(self):
        obs = self.generate_obs()
        plan = await self.reasoning.aplan(obs=obs, selected_tools=["speak_to"])
        self.apply_plan(plan)


class MarketBuyer(LLMAgent):
    def __init__(self, model, reasoning, llm_model, system_prompt, vision, internal_state,
                 step_prompt, budget):  # fmt: skip
        super().__init__(
            model=model,
            reasoning=reasoning,
            llm_model=llm_model,
            system_prompt=system_prompt,
            vision=vision,
            internal_state=internal_state,
            step_prompt=step_prompt,
        )
        self.tool_manager = buyer_tool_manager
        self.budget = budget
        self.purchases = []
        facts = self.internal_state
        assert isinstance(facts, list)  # given as None, LLMAgent keeps a list of facts
        facts += [f"budget: {budget}", "_max_price: 12"]

    def step(self):
        obs = self.generate_obs()
        plan = self.reasoning.plan(obs=obs, selected_tools=["buy_product"])
        self.apply_plan(plan)

    async def astep(self):
        obs = self.generate_obs()
        plan = await self.reasoning.aplan(obs=obs, selected_tools=["buy_product"])
        self.apply_plan(plan)


class ReleaseMarketModel(Model):
    scenario_name = "release_market"

    def __init__(self, seed=None, n_agents=6, llm_model="mesa-fake/release-market"):
        super().__init__(seed=seed)
        self.parallel_stepping = True
        self.grid = MultiGrid(4, 4, torus=False)
        n_sellers = max(1, n_agents // 3)
        MarketSeller.create_agents(
            self,
            n=n_sellers,
            reasoning=ReActReasoning,
            llm_model=llm_model,
            system_prompt="You sell fresh food at the market.",
            vision=-1,
            internal_state=["seller"],
            step_prompt="Pitch your goods to the buyers.",
        )
        self.llm_model = llm_model
        for _ in range(max(0, n_agents - n_sellers)):
            self.add_agent()
        for agent in self.agents:
            if agent.pos is None:
                x, y = self.random.randrange(4), self.random.randrange(4)
                self.grid.place_agent(agent, (x, y))

    def add_agent(self):
        """A new buyer at a random place (also between steps)."""
        (buyer,) = MarketBuyer.create_agents(
            self,
            n=1,
            reasoning=ReActReasoning,
            llm_model=self.llm_model,
            system_prompt="You shop for food on a budget.",
            vision=2,
            internal_state=None,
            step_prompt="Find a good deal and buy it.",
            budget=30,
        )
        x, y = self.random.randrange(4), self.random.randrange(4)
        self.grid.place_agent(buyer, (x, y))
        return buyer

    def remove_agent(self, agent):
        """Take an agent off the market (between steps)."""
        self.grid.remove_agent(agent)
        agent.remove()

    def step(self):
        self.agents.shuffle_do("step")
