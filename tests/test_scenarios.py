"""The built-in scenarios: real Mesa models that give the same results in every stepping mode."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest
from mesa import Model

import mesa_llm_testing.scenarios as scenarios
from mesa_llm.parallel_stepping import StepReport, parallel_stepping
from mesa_llm_testing import FakeLLM, FaultKind, FaultPlan, RunTrace, run_scenario
from mesa_llm_testing.checks import (
    EXPECTED_EXCEPTIONS,
    check_isolation,
    check_ordering,
    check_reproducible,
)
from mesa_llm_testing.scenarios import (
    DEFAULT_SCENARIO,
    REGISTRY,
    CivilViolenceModel,
    IslandCommonsModel,
    NegotiationModel,
)
from mesa_llm_testing.scenarios.civil_violence import Citizen, Cop
from mesa_llm_testing.scenarios.island_commons import Islander
from mesa_llm_testing.scenarios.negotiation import GOODS, Trader

SEED = 4242
PARALLEL = ("asyncio", "threading")


def run(factory: Callable[..., Model] | str, mode: str = "sequential", **kwargs: Any) -> RunTrace:
    options: dict[str, Any] = {"steps": 3, "seed": SEED, "agents": 8, **kwargs}
    return run_scenario(factory, mode=mode, **options)


# --------------------------------------------------------------------------- the registry


def test_registry_lists_the_scenarios_by_name() -> None:
    assert list(REGISTRY) == ["civil_violence", "negotiation", "island_commons", "release_market"]
    assert DEFAULT_SCENARIO in REGISTRY
    for name, factory in REGISTRY.items():
        assert factory.scenario_name == name
        assert set(scenarios.__all__) >= {"REGISTRY", "DEFAULT_SCENARIO", factory.__name__}


@pytest.mark.parametrize("name", list(REGISTRY))
def test_each_scenario_documents_what_it_models_and_its_faults(name: str) -> None:
    module = inspect.getmodule(REGISTRY[name])
    assert module is not None and module.__doc__ is not None
    assert "**What it models.**" in module.__doc__
    assert "**Faults exercised.**" in module.__doc__


@pytest.mark.parametrize("name", list(REGISTRY))
def test_each_scenario_takes_seed_agents_and_llm_model(name: str) -> None:
    parameters = inspect.signature(REGISTRY[name]).parameters

    assert {"seed", "n_agents", "llm_model"} <= set(parameters)
    assert parameters["llm_model"].default.startswith("mesa-fake/")


# --------------------------------------------------------------------------- mode independence


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_mode_gives_the_sequential_trace(name: str) -> None:
    sequential = run(name)

    for mode in PARALLEL:
        trace = run(name, mode)
        check_reproducible(trace, sequential)
        check_ordering(trace, sequential)


@pytest.mark.parametrize("name", list(REGISTRY))
def test_under_faults_failed_agents_are_those_whose_faults_outlasted_retries(name: str) -> None:
    faults = FaultPlan(0.4, seed=7)
    sequential = run(name, faults=faults)

    assert any(step.failed for step in sequential.steps)
    assert any(step.recovered for step in sequential.steps)
    check_isolation(sequential)
    for mode in PARALLEL:
        trace = run(name, mode, faults=faults)
        check_isolation(trace)
        check_reproducible(trace, sequential)
        check_ordering(trace, sequential)


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_agent_failing_never_crashes_the_model(name: str) -> None:
    trace = run(name, "asyncio", faults=FaultPlan(1.0, kinds="server_error", seed=1))

    for step in trace.steps:
        assert step.failed  # everyone who called the LLM failed
        assert set(step.failed.values()) <= EXPECTED_EXCEPTIONS[FaultKind.SERVER_ERROR]
    check_isolation(trace)


@pytest.mark.parametrize("name", list(REGISTRY))
def test_any_litellm_model_string_runs_under_the_fake(name: str) -> None:
    factory: Callable[..., Model] = REGISTRY[name]
    fake = FakeLLM(seed=SEED)
    with fake.activate():
        model = factory(seed=SEED, n_agents=4, llm_model="openai/gpt-4o-mini")
        model.step()

    assert fake.calls and {c.model for c in fake.calls} == {"openai/gpt-4o-mini"}


# --------------------------------------------------------------------------- civil violence


def test_civil_violence_plans_through_automatic_shuffle_do() -> None:
    fake = FakeLLM(seed=SEED)
    with fake.activate(), parallel_stepping("threading"):
        model = CivilViolenceModel(seed=SEED, n_agents=8)
        model.parallel_stepping = True
        model.step()
        report = model.last_step_report

    assert isinstance(report, StepReport)
    assert report.mode == "threading"
    assert model.step_reports == [report]
    assert model.last_step_report is None  # cleared when the mode ended: never stale


def test_civil_violence_has_citizens_and_cops_on_a_grid() -> None:
    model = CivilViolenceModel(seed=SEED, n_agents=12, cop_fraction=0.25)

    assert len(model.agents_by_type[Cop]) == 3
    assert len(model.agents_by_type[Citizen]) == 9
    positions = [a.pos for a in model.agents]
    assert all(0 <= x < model.grid.width and 0 <= y < model.grid.height for x, y in positions)


def test_civil_violence_agents_come_and_go_on_the_grid() -> None:
    model = CivilViolenceModel(seed=SEED, n_agents=4)

    cop = model.add_agent("cop")
    assert isinstance(cop, Cop) and cop in model.grid.get_cell_list_contents([cop.pos])
    model.remove_agent(cop)
    assert cop not in model.agents and cop.pos is None
    with pytest.raises(ValueError, match="'citizen' or 'cop'"):
        model.add_agent("judge")  # type: ignore[arg-type]


def test_island_commons_keeps_its_judge() -> None:
    model = IslandCommonsModel(seed=SEED, n_agents=2)

    with pytest.raises(ValueError, match="cannot run without its judge"):
        model.remove_agent(model.judge)


def test_a_failed_citizen_idles_and_a_jailed_one_makes_no_call() -> None:
    model = CivilViolenceModel(seed=SEED, n_agents=8)
    citizen = next(iter(model.agents_by_type[Citizen]))
    jailed = list(model.agents_by_type[Citizen])[1]
    jailed.condition, jailed.jail_sentence = "jailed", 3
    before = (citizen.pos, citizen.condition)
    fake = FakeLLM(
        seed=SEED, faults=FaultPlan().at(agent=citizen.unique_id, step=1, kind="empty_response")
    )

    with fake.activate():
        model.step()

    outcome = {o.unique_id: o for o in model.step_reports[0]}[citizen.unique_id]
    assert type(outcome.exception).__name__ == "EmptyResponseError"
    assert (citizen.pos, citizen.condition) == before
    assert fake.calls_for(jailed) == []
    assert jailed.condition == "jailed" and jailed.jail_sentence == 2


def test_arrests_resolve_in_shuffle_order() -> None:
    def reply(request: Any) -> Any:
        names = {t["function"]["name"] for t in request.tools or ()}
        return FakeLLM.tool_call("arrest") if "arrest" in names else FakeLLM.tool_call("rebel")

    model = CivilViolenceModel(seed=SEED, n_agents=12, vision=10)  # every cop sees everyone
    with FakeLLM(seed=SEED, side_effect=reply).activate():
        model.step()

    # Every citizen plans to rebel and every cop to arrest; applied in shuffle order, a cop
    # arrests only if a citizen before it has already rebelled.
    active = expected = 0
    for outcome in model.step_reports[0]:
        if isinstance(outcome.agent, Citizen):
            active += 1
        elif active:
            active, expected = active - 1, expected + 1
    assert 0 < model.arrests == expected
    assert model.counts() == {
        "quiet": 0,
        "active": 9 - expected,
        "jailed": expected,
        "arrests": expected,
    }


# --------------------------------------------------------------------------- negotiation


def _goods(model: NegotiationModel) -> dict[str, int]:
    return {g: sum(t.inventory[g] for t in model.agents) for g in GOODS}


def test_trades_conserve_goods() -> None:
    model = NegotiationModel(seed=SEED, n_agents=10)
    total = _goods(model)

    with FakeLLM(seed=SEED, faults=FaultPlan(0.2, seed=1)).activate():
        for _ in range(4):
            model.step()

    assert model.trades > 0
    assert _goods(model) == total


def test_a_malformed_answer_is_a_malformed_response_and_blocks_the_trade() -> None:
    model = NegotiationModel(seed=SEED, n_agents=2)
    first, second = sorted(model.agents, key=lambda a: a.unique_id)
    inventories = (dict(first.inventory), dict(second.inventory))

    def reply(request: Any) -> Any:
        if request.tools:
            return FakeLLM.tool_call(
                "offer", give="grain", give_amount=1, want="fish", want_amount=1
            )
        return {"accept": True, "reason": "fair"}

    # Call 0 is the offer, call 1 the JSON answer: break the first trader's answer.
    faults = FaultPlan().at(agent=first.unique_id, step=1, call=1, kind="malformed_json")
    with FakeLLM(seed=SEED, side_effect=reply, faults=faults).activate():
        model.step()

    offers, answers = model.step_reports
    assert offers.ok
    failed = {o.unique_id: type(o.exception).__name__ for o in answers.failed}
    assert failed == {first.unique_id: "MalformedResponseError"}
    # Only the answer that parsed went through: one trade, grain for fish.
    assert model.trades == 1
    assert first.inventory["grain"] + second.inventory["grain"] == (
        inventories[0]["grain"] + inventories[1]["grain"]
    )


def test_a_malformed_offer_is_a_tool_arguments_error_and_the_trader_idles() -> None:
    model = NegotiationModel(seed=SEED, n_agents=4)
    trader = next(iter(model.agents))
    faults = FaultPlan().at(agent=trader.unique_id, step=1, call=0, kind="malformed_json")
    fake = FakeLLM(seed=SEED, faults=faults)

    with fake.activate():
        model.step()

    offers, answers = model.step_reports
    assert {o.unique_id: type(o.exception).__name__ for o in offers.failed} == {
        trader.unique_id: "ToolArgumentsError"
    }
    assert trader.unique_id not in {o.unique_id for o in answers}
    assert len(fake.calls_for(trader)) == 1


def test_an_odd_trader_sits_out_without_calling_the_llm() -> None:
    model = NegotiationModel(seed=SEED, n_agents=3)
    fake = FakeLLM(seed=SEED)

    with fake.activate():
        model.step()

    alone = [t for t in model.agents if isinstance(t, Trader) and t.partner is None]
    assert len(alone) == 1 and fake.calls_for(alone[0]) == []


# --------------------------------------------------------------------------- island commons


def _island_replies(harvest: int) -> Callable[[Any], Any]:
    def reply(request: Any) -> Any:
        names = {t["function"]["name"] for t in request.tools or ()}
        if "harvest" in names:
            return FakeLLM.tool_call("harvest", amount=harvest)
        if "propose_quota" in names:
            return FakeLLM.tool_call("propose_quota", limit=4)
        if request.response_format is not None:
            return {"choice": 0}
        return "The stock is healthy."

    return reply


def test_the_judge_sees_every_proposal_at_the_sync_point() -> None:
    model = IslandCommonsModel(seed=SEED, n_agents=5)
    fake = FakeLLM(seed=SEED, side_effect=_island_replies(harvest=1))

    with fake.activate():
        model.step()

    analyze, propose, _judge, _decide = model.step_reports
    assert [r.method for r in model.step_reports] == ["analyze", "propose", "judge", "decide"]
    assert [o.unique_id for o in propose] == [o.unique_id for o in analyze]
    (judge_call,) = fake.calls_for(model.judge)
    for number, outcome in enumerate(propose):
        assert f"{number}: islander {outcome.unique_id} proposes a quota of 4" in (
            judge_call.request.prompt or ""
        )
    assert model.quota == 4


def test_harvests_are_served_first_come_first_served_in_shuffle_order() -> None:
    model = IslandCommonsModel(seed=SEED, n_agents=4)  # capacity 40
    model.stock = 10  # regrows to 10 + round(0.3 * 10 * (1 - 10 / 40)) = 12 this round

    with FakeLLM(seed=SEED, side_effect=_island_replies(harvest=8)).activate():
        model.step()

    order = [o.agent for o in model.step_reports[0]]
    # Quota 4 per islander: the first three get 4 each, the last finds the sea empty.
    assert [i.caught for i in order] == [4, 4, 4, 0]
    assert model.stock == 0


def test_a_failed_judge_keeps_the_quota_in_force() -> None:
    model = IslandCommonsModel(seed=SEED, n_agents=4)
    model.quota = 3
    faults = FaultPlan().at(agent=model.judge.unique_id, step=1, kind="empty_response")

    with FakeLLM(seed=SEED, side_effect=_island_replies(harvest=1), faults=faults).activate():
        model.step()

    judge = model.step_reports[2]
    assert type(judge.outcomes[0].exception).__name__ == "EmptyResponseError"
    assert model.quota == 3


def test_a_malformed_analysis_is_only_odd_text() -> None:
    model = IslandCommonsModel(seed=SEED, n_agents=3)
    islander = next(iter(model.agents_by_type[Islander]))
    faults = FaultPlan().at(agent=islander.unique_id, step=1, call=0, kind="malformed_json")

    with FakeLLM(seed=SEED, faults=faults).activate():
        model.step()

    assert all(report.ok for report in model.step_reports)
    assert islander.analysis.startswith("{")


def test_an_islander_failing_to_analyze_idles_all_round() -> None:
    model = IslandCommonsModel(seed=SEED, n_agents=3)
    islander = next(iter(model.agents_by_type[Islander]))
    energy = islander.energy
    faults = FaultPlan().at(agent=islander.unique_id, step=1, call=0, kind="empty_response")
    fake = FakeLLM(seed=SEED, side_effect=_island_replies(harvest=2), faults=faults)

    with fake.activate():
        model.step()

    assert len(fake.calls_for(islander)) == 1
    assert islander.caught == 0 and islander.energy == energy - 2
    others = [i for i in model.agents_by_type[Islander] if i is not islander]
    assert all(i.caught == 2 for i in others)


# --------------------------------------------------------------------------- release market

#: The module paths mesa-llm 0.3.2 users import (the release's own layout).
RELEASE_PATHS = {
    "mesa_llm.llm_agent",
    "mesa_llm.reasoning.react",
    "mesa_llm.tools.tool_decorator",
    "mesa_llm.tools.tool_manager",
}


def test_release_market_is_written_with_the_release_api_only() -> None:
    import ast

    from mesa_llm_testing import resolve_scenario

    factory = resolve_scenario("release_market")  # through the entry point, as the CLI does
    module = inspect.getmodule(factory)
    assert module is not None and module.__doc__ is not None
    assert "**What it models.**" in module.__doc__ and "**Faults exercised.**" in module.__doc__
    tree = ast.parse(inspect.getsource(module))
    imported = {
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mesa_llm")
    }
    assert imported == RELEASE_PATHS
    assert "enable_automatic_parallel_stepping" not in inspect.getsource(module)


def test_release_market_gives_the_sequential_trace_under_faults_in_every_mode() -> None:
    faults = FaultPlan(0.3, seed=11)
    sequential = run("release_market", faults=faults, agents=6)

    assert any(step.llm_calls for step in sequential.steps)
    check_isolation(sequential)
    for mode in PARALLEL:
        trace = run("release_market", mode, faults=faults, agents=6)
        check_isolation(trace)
        check_reproducible(trace, sequential)
        check_ordering(trace, sequential)


def test_release_market_tool_errors_are_results_not_failures() -> None:
    import json
    from unittest.mock import DEFAULT

    from mesa_llm_testing import FakeReply, resolve_scenario
    from mesa_llm_testing._responses import FakeToolCall

    def shop(request: Any) -> Any:
        names = [t["function"]["name"] for t in request.tools or []]
        if "buy_product" not in names or request.tool_choice == "none":
            return DEFAULT
        caviar = json.dumps({"chosen_product": "caviar", "chosen_price": 1})
        bread = json.dumps({"chosen_product": "bread", "chosen_price": 5})
        calls = (
            FakeToolCall("buy_product", caviar, "c0"),
            FakeToolCall("buy_product", bread, "c1"),
        )
        return FakeReply(None, calls)

    factory = resolve_scenario("release_market")
    fake = FakeLLM(seed=SEED, side_effect=shop)
    with fake.activate(), parallel_stepping("threading"):
        model = factory(seed=SEED, n_agents=6)
        for _ in range(2):
            model.step()
            assert model.last_step_report.ok  # the failing purchase is a result, not a failure
    buyers = [a for a in model.agents if type(a).__name__ == "MarketBuyer"]
    assert len(buyers) == 4
    for buyer in buyers:
        assert buyer.purchases == ["bread", "bread"]
        assert buyer.budget == 20
