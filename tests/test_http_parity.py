"""The same scenario under faults gives the same trace through the HTTP server and the provider."""

from __future__ import annotations

import functools

import pytest

from mesa_llm_testing import FakeLLM, FaultPlan, RunTrace, run_scenario
from mesa_llm_testing.scenarios import DEFAULT_SCENARIO, REGISTRY

KINDS = "rate_limit,server_error,timeout,malformed_json,empty_response,connection_error"
SEED = 5


def plan() -> FaultPlan:
    return FaultPlan(0.3, kinds=KINDS, seed=SEED)


def layer_neutral(trace: RunTrace) -> RunTrace:
    """The trace with every injected fault's ``layer`` field the same (the one difference)."""
    for step in trace.steps:
        for fault in step.faults:
            fault["layer"] = "provider"
    return trace


@pytest.mark.parametrize("mode", ["asyncio", "threading", "sequential"])
def test_http_and_provider_runs_give_identical_traces(mode: str) -> None:
    scenario = REGISTRY[DEFAULT_SCENARIO]
    # Clients give up on a stalled (TIMEOUT) answer after 1 s; so does the provider's timeout.
    # (0.3 s was short enough for a loaded machine to time out an answer that was not stalled.)
    via_provider = run_scenario(
        functools.partial(scenario, llm_kwargs={"timeout": 1.0}),
        steps=3,
        mode=mode,
        faults=plan(),
        seed=SEED,
        agents=5,
    )
    fake = FakeLLM(seed=SEED, faults=plan())
    with fake.http(stall=3) as api_base:
        via_http = run_scenario(
            functools.partial(
                scenario,
                # litellm's OpenAI provider sends "mesa-fake/scenario" on the wire: the model
                # string the provider run records.
                llm_model="openai/mesa-fake/scenario",
                llm_kwargs={"api_base": api_base, "api_key": "sk-fake", "timeout": 1.0},
            ),
            steps=3,
            mode=mode,
            llm=fake,
            seed=SEED,
            agents=5,
        )
    assert {f.layer for f in via_http.injected()} == {"http"}
    assert {f.layer for f in via_provider.injected()} == {"provider"}
    assert len(via_provider.injected()) >= 5
    assert {c.layer for c in fake.calls} == {"http"}
    assert layer_neutral(via_http) == layer_neutral(via_provider), layer_neutral(via_http).diff(
        via_provider
    )
