"""mesa_llm_testing.strategies: what each strategy generates, its bounds and its errors."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mesa_llm.errors import ToolArgumentsError
from mesa_llm.tools import Tool, ToolCall
from mesa_llm_testing import FakeLLM, FaultKind, FaultPlan
from mesa_llm_testing import strategies as mst


def test_public_names_are_exported() -> None:
    public = {
        name
        for name, value in vars(mst).items()
        if not name.startswith("_") and getattr(value, "__module__", None) == mst.__name__
    }
    assert public <= set(mst.__all__)
    assert all(hasattr(mst, name) for name in mst.__all__)


def test_importing_the_harness_does_not_import_hypothesis() -> None:
    code = (
        "import sys, mesa_llm_testing, mesa_llm_testing.cli;"
        "print('hypothesis' in sys.modules, 'litellm' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# --------------------------------------------------------------------------- fault plans


@given(mst.fault_plans(max_rate=0.2, kinds="rate_limit,timeout", scripted=2, max_agent=3))
def test_fault_plans_respect_their_bounds(plan: FaultPlan) -> None:
    assert isinstance(plan, FaultPlan)
    assert 0.0 <= plan.rate <= 0.2
    assert plan.rate == round(plan.rate, 2)
    assert set(plan.kinds) <= {FaultKind.RATE_LIMIT, FaultKind.TIMEOUT}
    assert plan.kinds == tuple(k for k in FaultKind if k in plan.kinds)  # canonical order
    assert len(plan.scripted) <= 2
    for fault in plan.scripted:
        assert (fault.agent, fault.step) in {(a, s) for a in range(1, 4) for s in range(1, 6)}
        assert 0 <= fault.call <= 1
        assert plan.decide(agent=fault.agent, step=fault.step, call=fault.call) is fault.kind
    assert plan.injected == []


@given(mst.fault_plans(seed=7, scripted=0, max_rate=0))
def test_fault_plans_with_a_fixed_seed_and_no_faults(plan: FaultPlan) -> None:
    assert plan.seed == 7 and plan.rate == 0 and not plan.scripted
    assert all(plan.decide(agent=a, step=1, call=0) is None for a in range(20))


def test_fault_plans_are_fresh_objects() -> None:
    plans: list[FaultPlan] = []

    @given(mst.fault_plans())
    @settings(max_examples=5)
    def collect(plan: FaultPlan) -> None:
        plans.append(plan)

    collect()
    assert len({id(p) for p in plans}) == len(plans)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"max_rate": 1.5}, ["max_rate=1.5", "from 0 to 1"]),
        ({"max_rate": "high"}, ["max_rate='high'", "from 0 to 1"]),
        ({"kinds": "rate_limit,bogus"}, ["kinds", "bogus", "rate_limit, timeout"]),
        ({"scripted": -1}, ["scripted=-1", "integers >= 0"]),
        ({"max_agent": 0}, ["max_agent=0", "integers >= 1"]),
        ({"seed": -3}, ["seed=-3", "integers >= 0"]),
    ],
)
def test_fault_plans_reject_bad_options(kwargs: dict[str, Any], words: list[str]) -> None:
    with pytest.raises(ValueError, match="mesa_llm_testing") as info:
        mst.fault_plans(**kwargs)
    assert all(w in str(info.value) for w in words), str(info.value)


# --------------------------------------------------------------------------- modes and populations


@given(mst.stepping_modes())
def test_stepping_modes(mode: str) -> None:
    assert mode in ("sequential", "asyncio", "threading")


@given(mst.stepping_modes(parallel_only=True))
def test_parallel_stepping_modes(mode: str) -> None:
    assert mode in ("asyncio", "threading")


@given(mst.agent_populations(min_size=3, max_size=5))
def test_agent_populations_are_bounded(size: int) -> None:
    assert 3 <= size <= 5


def test_agent_populations_reject_an_empty_range() -> None:
    with pytest.raises(ValueError, match=r"min_size=5, max_size=2.*min_size must be <= max_size"):
        mst.agent_populations(min_size=5, max_size=2)


# --------------------------------------------------------------------------- LLM outputs


def move(x: int, y: int) -> str:
    """Move to a cell.

    Args:
        x: column.
        y: row.
    """
    return f"{x},{y}"


def shout(text: str, loud: bool = False) -> str:
    """Say something."""
    return text


TOOLS = [Tool(move), Tool(shout)]
BY_NAME = {t.name: t for t in TOOLS}


class Offer(pydantic.BaseModel):
    item: str
    price: int


def _bind(reply: Any) -> None:
    (call,) = reply.tool_calls
    tool = BY_NAME[call.name]
    tool.bind(ToolCall(call.name, json.loads(call.arguments)))


@given(mst.llm_outputs(kinds=["text"]))
def test_text_outputs(reply: Any) -> None:
    assert reply.content.strip() and not reply.tool_calls


@given(mst.llm_outputs(kinds=["tool_call"], tools=TOOLS))
def test_tool_call_outputs_bind_to_the_tool(reply: Any) -> None:
    assert reply.content is None
    _bind(reply)  # raises ToolArgumentsError if the arguments do not fit the signature


@given(mst.llm_outputs(kinds="json", schema=Offer.model_json_schema()))
def test_json_outputs_match_the_schema(reply: Any) -> None:
    Offer.model_validate_json(reply.content)


@given(mst.llm_outputs(kinds=["json"]))
def test_json_outputs_without_a_schema_are_objects(reply: Any) -> None:
    assert isinstance(json.loads(reply.content), dict)


@given(mst.llm_outputs(kinds=["truncated_json"], schema=Offer.model_json_schema()))
def test_truncated_json_does_not_parse(reply: Any) -> None:
    with pytest.raises(json.JSONDecodeError):
        json.loads(reply.content)


@given(mst.llm_outputs(kinds=["invalid_tool_arguments"], tools=TOOLS))
def test_invalid_tool_arguments_are_rejected(reply: Any) -> None:
    (call,) = reply.tool_calls
    assert call.name in BY_NAME
    try:
        arguments = json.loads(call.arguments)
    except json.JSONDecodeError:
        return
    if not isinstance(arguments, dict):
        return
    with pytest.raises(ToolArgumentsError):
        _bind(reply)


@given(mst.llm_outputs(kinds=["schema_violation"], schema=Offer.model_json_schema()))
def test_schema_violations_parse_but_do_not_validate(reply: Any) -> None:
    json.loads(reply.content)
    with pytest.raises(pydantic.ValidationError):
        Offer.model_validate_json(reply.content)


@given(mst.llm_outputs(kinds=["empty"]))
def test_empty_outputs(reply: Any) -> None:
    assert not reply.content and not reply.tool_calls


@given(st.data())
def test_every_output_is_a_reply_the_fake_llm_serves(data: st.DataObject) -> None:
    reply = data.draw(mst.llm_outputs())
    llm = FakeLLM(return_value=reply)
    served = llm.complete(prompt="what now?")
    assert (served.content, [tc.name for tc in served.tool_calls]) == (
        reply.content,
        [tc.name for tc in reply.tool_calls],
    )


def test_valid_and_malformed_families_cover_every_kind() -> None:
    assert set(mst.VALID_OUTPUTS) | set(mst.MALFORMED_OUTPUTS) == set(mst.OUTPUT_KINDS)
    assert not set(mst.VALID_OUTPUTS) & set(mst.MALFORMED_OUTPUTS)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"kinds": ["text", "garbage"]}, ["kinds=", "text, tool_call, json, truncated_json"]),
        ({"kinds": []}, ["kinds=[]", "empty"]),
        ({"tools": [{"name": "x"}]}, ["tools=", "OpenAI tool dicts"]),
        ({"tools": []}, ["tools=[]", "non-empty list"]),
    ],
)
def test_llm_outputs_reject_bad_options(kwargs: dict[str, Any], words: list[str]) -> None:
    with pytest.raises(ValueError, match="mesa_llm_testing: llm_outputs") as info:
        mst.llm_outputs(**kwargs)
    assert all(w in str(info.value) for w in words), str(info.value)


# --------------------------------------------------------------------------- scenarios


@given(mst.scenarios(min_agents=2, max_agents=4, max_steps=2, max_rate=0.2, scripted=2))
def test_scenarios_respect_their_bounds(case: mst.ScenarioCase) -> None:
    import mesa_llm_testing.scenarios as scenarios

    assert case.name in scenarios.REGISTRY and case.factory is scenarios.REGISTRY[case.name]
    assert 2 <= case.agents <= 4 and 1 <= case.steps <= 2
    assert case.faults.seed == case.seed  # so --seed alone replays a rate-based plan
    assert case.faults.rate <= 0.2 and len(case.faults.scripted) <= 2
    for fault in case.faults.scripted:
        assert fault.agent in range(1, case.agents + 1)
        assert fault.step in range(1, case.steps + 1)


@given(mst.scenarios(names=["negotiation"], max_rate=0.3))
def test_a_case_command_parses_back_to_the_case(case: mst.ScenarioCase) -> None:
    import shlex

    from mesa_llm_testing._plans import plan_settings
    from mesa_llm_testing.cli import build_parser, parse_faults

    argv = shlex.split(case.command("threading"))
    assert argv[:2] == ["mesa-llm-testing", "run"]
    args = build_parser().parse_args(argv[1:])
    assert (args.scenario, args.agents, args.steps, args.seed, args.mode) == (
        case.name,
        case.agents,
        case.steps,
        case.seed,
        "threading",
    )
    plan = parse_faults(args.faults, kinds=args.kinds, seed=args.seed)
    # The same faults: equal settings as the runner records them (None: no faults at all).
    assert plan_settings(plan) == plan_settings(case.faults)


def test_scenario_case_repr_shows_the_fault_plan() -> None:
    plan = FaultPlan(0.1, kinds="timeout", seed=4).at(agent=2, step=1, kind="empty_response")
    case = mst.ScenarioCase("negotiation", 3, 2, 4, plan)
    assert repr(case) == (
        "ScenarioCase('negotiation', agents=3, steps=2, seed=4, faults=FaultPlan(rate=0.1, "
        "kinds='timeout', seed=4, scripted=[(2, 1, 0, empty_response)]))"
    )
    assert case.command() == (
        "mesa-llm-testing run negotiation --agents 3 --steps 2 --seed 4 --mode all --faults "
        '\'{"rate":0.1,"kinds":["timeout"],"seed":4,"test_id":"","scripted":'
        '[{"agent":2,"step":1,"call":0,"kind":"empty_response","layer":"provider",'
        '"test_id":""}]}\''
    )
    rate_only = mst.ScenarioCase("negotiation", 3, 2, 4, FaultPlan(0.1, kinds="timeout", seed=4))
    assert rate_only.command("asyncio").endswith("--mode asyncio --faults 0.1 --kinds timeout")


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        (
            {"names": ["atlantis"]},
            ["names=['atlantis']", "civil_violence, island_commons, negotiation"],
        ),
        ({"names": []}, ["names=[]"]),
        ({"min_agents": 5, "max_agents": 2}, ["min_agents=5, max_agents=2"]),
        ({"max_steps": 0}, ["max_steps=0", "integers >= 1"]),
        ({"max_rate": -0.1}, ["max_rate=-0.1", "from 0 to 1"]),
        ({"kinds": "lightning"}, ["kinds", "lightning"]),
    ],
)
def test_scenarios_reject_bad_options(kwargs: dict[str, Any], words: list[str]) -> None:
    with pytest.raises(ValueError, match="mesa_llm_testing: scenarios") as info:
        mst.scenarios(**kwargs)
    assert all(w in str(info.value) for w in words), str(info.value)
