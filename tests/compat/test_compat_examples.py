"""The release's examples (civil violence, negotiation), written as a mesa-llm 0.3 user writes them.

Offline on the fake LLM, in sequential, asyncio and threading modes: tools chosen
per agent by a scripted ``side_effect`` (the rest of each plan is the fake's seeded
ReAct reply), tool failures come back as ``"Error: ..."`` results, messages reach
their recipients, and no agent fails its step.
"""

from __future__ import annotations

import json
from unittest.mock import DEFAULT

import pytest
from mesa import Model
from mesa.discrete_space import CellAgent
from mesa.space import MultiGrid
from release_memory import remembered

from mesa_llm.llm_agent import LLMAgent
from mesa_llm.memory.st_lt_memory import STLTMemory
from mesa_llm.parallel_stepping import enable_automatic_parallel_stepping
from mesa_llm.reasoning.react import ReActReasoning
from mesa_llm.tools.tool_decorator import tool
from mesa_llm.tools.tool_manager import ToolManager
from mesa_llm_testing import FakeReply
from mesa_llm_testing._responses import FakeToolCall

MODES = ["sequential", "asyncio", "threading"]

# -- civil violence, release style ---------------------------------------------------------

citizen_tool_manager = ToolManager()
cop_tool_manager = ToolManager()


@tool(tool_manager=citizen_tool_manager)
def change_state(agent: LLMAgent, state: str) -> str:
    """Change the state of the citizen.

    Args:
        state: The new state, "QUIET" or "ACTIVE".

    Returns:
        The new state.
    """
    if state not in ("QUIET", "ACTIVE"):
        raise ValueError(f"Invalid state {state!r}; use QUIET or ACTIVE")
    agent.state = state
    return f"{agent.unique_id} is now {state}"


@tool(tool_manager=cop_tool_manager)
def arrest_citizen(agent: LLMAgent, citizen_id: int) -> str:
    """Arrest a citizen.

    Args:
        citizen_id: The unique id of the citizen to arrest.
    """
    citizen = next((a for a in agent.model.agents if a.unique_id == citizen_id), None)
    if citizen is None:
        raise AttributeError(f"Citizen {citizen_id} not found")
    citizen.state = "ARRESTED"
    return f"citizen {citizen_id} arrested"


class Citizen(LLMAgent, CellAgent):
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
        self.memory = STLTMemory(agent=self, display=True, llm_model=llm_model)
        self.tool_manager = citizen_tool_manager
        self.system_prompt = "You are a citizen in a country under an authoritarian regime."
        self.state = "QUIET"
        self.internal_state.append("grievance: 0.4")
        self.internal_state.append("_risk_aversion: 0.7")

    def step(self):
        obs = self.generate_obs()
        plan = self.reasoning.plan(obs=obs, selected_tools=["change_state", "move_one_step"])
        self.apply_plan(plan)

    async def astep(self):
        obs = self.generate_obs()
        plan = await self.reasoning.aplan(obs=obs, selected_tools=["change_state", "move_one_step"])
        self.apply_plan(plan)


class Cop(LLMAgent, CellAgent):
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
        self.memory = STLTMemory(agent=self, display=True, llm_model=llm_model)
        self.tool_manager = cop_tool_manager

    async def astep(self):
        obs = self.generate_obs()
        plan = await self.reasoning.aplan(obs=obs, selected_tools=["arrest_citizen"])
        self.apply_plan(plan)

    def step(self):
        obs = self.generate_obs()
        plan = self.reasoning.plan(obs=obs, selected_tools=["arrest_citizen"])
        self.apply_plan(plan)


class EpsteinModel(Model):
    def __init__(self, seed=None, parallel_stepping=True):
        super().__init__(seed=seed)
        self.parallel_stepping = parallel_stepping
        self.grid = MultiGrid(4, 4, torus=False)
        common = {
            "reasoning": ReActReasoning,
            "llm_model": "openai/gpt-4o-mini",
            "system_prompt": "",
            "vision": 2,
            "internal_state": None,
        }
        Citizen.create_agents(self, n=4, step_prompt="Decide to rebel or not.", **common)
        Cop.create_agents(self, n=2, step_prompt="Arrest active citizens.", **common)
        for index, agent in enumerate(self.agents):
            self.grid.place_agent(agent, (index % 4, index // 4))

    def step(self):
        self.agents.shuffle_do("step")


def _civil_tools(request):
    """Citizens: even ids go ACTIVE, odd ids ask for a bad state; cops arrest id 1 and id 999."""
    if not request.tools or request.tool_choice == "none":
        return DEFAULT
    agent = request.agent_object
    if isinstance(agent, Cop):
        calls = [("arrest_citizen", {"citizen_id": 1}), ("arrest_citizen", {"citizen_id": 999})]
    else:
        calls = [("change_state", {"state": "ACTIVE" if agent.unique_id % 2 == 0 else "RIOT"})]
    tool_calls = tuple(
        FakeToolCall(name, json.dumps(args), f"call_{i}") for i, (name, args) in enumerate(calls)
    )
    return FakeReply(None, tool_calls)


@pytest.mark.parametrize("stepping_mode", MODES, indirect=True)
def test_civil_violence_runs_with_tool_errors_as_results(fake_llm, stepping_mode):
    fake_llm.side_effect = _civil_tools
    enable_automatic_parallel_stepping(mode=stepping_mode)  # as the example's app.py does
    model = EpsteinModel(seed=3)
    for _ in range(2):
        model.step()
        assert model.last_step_report is not None and model.last_step_report.ok
        assert model.last_step_report.mode == stepping_mode
    citizens = [a for a in model.agents if isinstance(a, Citizen)]
    cops = [a for a in model.agents if isinstance(a, Cop)]
    for citizen in citizens:
        responses = [c["response"] for a in remembered(citizen, "action") for c in a["tool_calls"]]
        assert len(responses) == 2  # one tool call per step, each stored
        if citizen.unique_id % 2 == 0:
            assert citizen.state in ("ACTIVE", "ARRESTED")
            assert responses == [f"{citizen.unique_id} is now ACTIVE"] * 2
        else:
            assert all(r.startswith("Error: Invalid state 'RIOT'") for r in responses)
    for cop in cops:
        responses = [c["response"] for a in remembered(cop, "action") for c in a["tool_calls"]]
        assert responses.count("citizen 1 arrested") == 2
        assert responses.count("Error: Citizen 999 not found") == 2
    arrested = next(a for a in model.agents if a.unique_id == 1)
    assert arrested.state == "ARRESTED"
    # Neighbours never see a citizen's private ("_") state; the citizen itself does.
    obs = cops[0].generate_obs()
    for key, seen in obs.local_state.items():
        if key.startswith("Citizen"):
            assert seen["internal_state"] == ["grievance: 0.4"]
    own = citizens[0].generate_obs().self_state
    assert "_risk_aversion: 0.7" in own["internal_state"]
    assert own["agent_unique_id"] == citizens[0].unique_id
    assert own["location"] == citizens[0].pos


# -- negotiation, release style -------------------------------------------------------------

seller_tool_manager = ToolManager()
buyer_tool_manager = ToolManager()


@tool(tool_manager=buyer_tool_manager)
def buy_product(agent: LLMAgent, chosen_product: str, chosen_price: int) -> str:
    """Buy a product from a seller.

    Args:
        chosen_product: The product to buy, "A" or "B".
        chosen_price: The price agreed on.
    """
    if chosen_product not in ("A", "B"):
        raise ValueError(f"Unknown product {chosen_product!r}")
    if chosen_price > agent.budget:
        raise ValueError("Insufficient budget")
    agent.budget -= chosen_price
    agent.internal_state.append(f"bought {chosen_product}")
    agent.model.seller_a.sales += 1
    return f"bought {chosen_product} for {chosen_price}"


def get_dialogue_history(agent):
    lines = []
    for entry in agent.memory.short_term_memory:
        for message in entry.content.get("message", []):
            lines.append(f"{message['sender']}: {message['message']}")
    return "\n".join(lines)


class SellerAgent(LLMAgent):
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
        self.memory = STLTMemory(agent=self, display=True, llm_model=llm_model)
        self.tool_manager = seller_tool_manager
        self.sales = 0

    def step(self):
        obs = self.generate_obs()
        prompt = f"Dialogue so far:\n{get_dialogue_history(self)}\nPitch your product."
        plan = self.reasoning.plan(prompt=prompt, obs=obs, selected_tools=["speak_to"])
        self.apply_plan(plan)

    async def astep(self):
        obs = self.generate_obs()
        prompt = f"Dialogue so far:\n{get_dialogue_history(self)}\nPitch your product."
        plan = await self.reasoning.aplan(prompt=prompt, obs=obs, selected_tools=["speak_to"])
        self.apply_plan(plan)


class BuyerAgent(LLMAgent):
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
        self.memory = STLTMemory(agent=self, display=True, llm_model=llm_model)
        self.tool_manager = buyer_tool_manager
        self.budget = budget

    def step(self):
        obs = self.generate_obs()
        plan = self.reasoning.plan(
            obs=obs, selected_tools=["teleport_to_location", "speak_to", "buy_product"]
        )
        self.apply_plan(plan)

    async def astep(self):
        obs = self.generate_obs()
        plan = await self.reasoning.aplan(
            obs=obs, selected_tools=["teleport_to_location", "speak_to", "buy_product"]
        )
        self.apply_plan(plan)


class NegotiationModel(Model):
    def __init__(self, seed=None):
        super().__init__(seed=seed)
        self.parallel_stepping = True
        self.grid = MultiGrid(3, 3, torus=False)
        common = {"reasoning": ReActReasoning, "llm_model": "openai/gpt-4o-mini", "vision": 5}
        self.seller_a = SellerAgent(
            model=self,
            system_prompt="You sell product A.",
            internal_state=["seller of A"],
            step_prompt="Sell.",
            **common,
        )
        BuyerAgent.create_agents(
            self, n=3, system_prompt="", internal_state="", step_prompt="Buy.", budget=50,
            **common,
        )  # fmt: skip
        for agent in self.agents:
            self.grid.place_agent(agent, (1, 1))

    def step(self):
        self.agents.shuffle_do("step")


def _negotiation_tools(request):
    if not request.tools or request.tool_choice == "none":
        return DEFAULT
    agent = request.agent_object
    if isinstance(agent, SellerAgent):
        buyers = [a.unique_id for a in agent.model.agents if isinstance(a, BuyerAgent)]
        calls = [("speak_to", {"listener_agents_unique_ids": buyers, "message": "A is great"})]
    else:
        calls = [
            ("teleport_to_location", {"target_coordinates": [0, agent.unique_id % 3]}),
            ("buy_product", {"chosen_product": "A", "chosen_price": 20}),
            ("buy_product", {"chosen_product": "Z", "chosen_price": 1}),
        ]
    tool_calls = tuple(
        FakeToolCall(name, json.dumps(args), f"call_{i}") for i, (name, args) in enumerate(calls)
    )
    return FakeReply(None, tool_calls)


@pytest.mark.parametrize("stepping_mode", MODES, indirect=True)
def test_negotiation_delivers_messages_and_isolates_errors(fake_llm, stepping_mode):
    fake_llm.side_effect = _negotiation_tools
    enable_automatic_parallel_stepping(mode=stepping_mode)
    model = NegotiationModel(seed=5)
    for _ in range(2):
        model.step()
        assert model.last_step_report is not None and model.last_step_report.ok
        assert model.last_step_report.mode == stepping_mode
    buyers = [a for a in model.agents if isinstance(a, BuyerAgent)]
    for buyer in buyers:
        heard = remembered(buyer, "message")
        assert heard == [{"message": "A is great", "sender": model.seller_a.unique_id}] * 2
        assert buyer.pos == (0, buyer.unique_id % 3)
        assert buyer.budget == 50 - 2 * 20
        responses = [c["response"] for a in remembered(buyer, "action") for c in a["tool_calls"]]
        assert responses.count("Error: Unknown product 'Z'") == 2
        assert responses.count("bought A for 20") == 2
    assert model.seller_a.sales == 2 * len(buyers)
    assert "A is great" in get_dialogue_history(buyers[0])
