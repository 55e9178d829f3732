"""Hypothesis strategies for testing Mesa-LLM models: fault plans, modes, LLM outputs, scenarios.

Every public name is a plural-noun factory with keyword-only bounds that returns a
``SearchStrategy``::

    from hypothesis import given
    from mesa_llm_testing import strategies as mst

    @given(mst.scenarios(max_agents=6), mst.stepping_modes(parallel_only=True))
    def test_isolation(case, mode):
        checks.isolation(case.run(mode))

Values shrink towards the simplest failing case: fewer agents and steps, seed 0, rate
0, one fault kind, fewer scripted faults. A :class:`ScenarioCase` knows the
``mesa-llm-testing run ...`` command that replays it (:meth:`ScenarioCase.command`).
This module imports Hypothesis; ``import mesa_llm_testing`` does not import this module.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from hypothesis import strategies as st

from mesa_llm_testing._faults import FaultKind, FaultPlan
from mesa_llm_testing._plans import replay_command
from mesa_llm_testing._responses import FakeReply, FakeToolCall, empty_reply, truncate_json
from mesa_llm_testing._rng import Rng
from mesa_llm_testing._schema_values import SchemaValues, violate_schema

if TYPE_CHECKING:
    from hypothesis.strategies import SearchStrategy

    from mesa_llm_testing._fakellm import FakeLLM
    from mesa_llm_testing._trace import RunTrace

__all__ = [
    "MALFORMED_OUTPUTS",
    "OUTPUT_KINDS",
    "STEPPING_MODES",
    "VALID_OUTPUTS",
    "ScenarioCase",
    "agent_populations",
    "fault_plans",
    "llm_outputs",
    "scenarios",
    "stepping_modes",
]

#: Every way a scenario can be stepped: plain Mesa, then the two parallel modes.
STEPPING_MODES: Final = ("sequential", "asyncio", "threading")
#: Well-formed LLM replies.
VALID_OUTPUTS: Final = ("text", "tool_call", "json")
#: Replies a robust agent must reject cleanly.
MALFORMED_OUTPUTS: Final = ("truncated_json", "invalid_tool_arguments", "schema_violation", "empty")
#: Every kind :func:`llm_outputs` can produce.
OUTPUT_KINDS: Final = VALID_OUTPUTS + MALFORMED_OUTPUTS

_MAX_SEED: Final = 2**16 - 1
_DEFAULT_TOOLS: Final[tuple[dict[str, Any], ...]] = (
    {
        "type": "function",
        "function": {
            "name": "move",
            "description": "Move to a cell.",
            "parameters": {
                "type": "object",
                "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
                "required": ["x", "y"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "say",
            "description": "Say something to the neighbours.",
            "parameters": {
                "type": "object",
                "properties": {"text": {"type": "string"}},
                "required": ["text"],
            },
        },
    },
)
_DEFAULT_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {"action": {"type": "string"}, "amount": {"type": "integer"}},
    "required": ["action", "amount"],
}


# --------------------------------------------------------------------------- validation


def _fail(function: str, option: str, value: Any, valid: str) -> ValueError:
    return ValueError(
        f"mesa_llm_testing: {function}({option}={value!r}) is invalid; valid values: {valid}"
    )


def _check_int(function: str, option: str, value: Any, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _fail(function, option, value, f"integers >= {minimum}")
    return value


def _check_rate(function: str, option: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise _fail(function, option, value, "numbers from 0 to 1")
    return float(value)


def _check_range(function: str, low_name: str, low: int, high_name: str, high: int) -> None:
    if low > high:
        raise ValueError(
            f"mesa_llm_testing: {function}({low_name}={low}, {high_name}={high}) is invalid; "
            f"{low_name} must be <= {high_name}"
        )


def _fault_kinds(
    function: str, kinds: Iterable[FaultKind | str] | str | None
) -> tuple[FaultKind, ...]:
    try:
        parsed = FaultKind.parse_many(kinds)
    except ValueError as exc:
        raise ValueError(f"mesa_llm_testing: {function}(kinds=...): {exc}") from None
    if not parsed:
        raise _fail(function, "kinds", kinds, ", ".join(k.value for k in FaultKind))
    return parsed


# --------------------------------------------------------------------------- stepping modes


def stepping_modes(*, parallel_only: bool = False) -> SearchStrategy[str]:
    """``"sequential"``, ``"asyncio"`` or ``"threading"`` (the last two if ``parallel_only``)."""
    return st.sampled_from(STEPPING_MODES[1:] if parallel_only else STEPPING_MODES)


# --------------------------------------------------------------------------- fault plans


def fault_plans(
    *,
    max_rate: float = 0.5,
    kinds: Iterable[FaultKind | str] | str | None = None,
    scripted: int = 3,
    max_agent: int = 10,
    max_step: int = 5,
    max_call: int = 1,
    seed: int | None = None,
) -> SearchStrategy[FaultPlan]:
    """Fresh fault plans: a rate up to ``max_rate``, some of ``kinds``, and scripted faults.

    The rate is a whole percentage (it prints and replays exactly). Up to ``scripted``
    faults are scripted with :meth:`FaultPlan.at` for agents ``1..max_agent`` (Mesa's
    unique_ids), steps ``1..max_step`` and call indices ``0..max_call``. ``seed``
    fixes the plan's seed; by default it is drawn. Shrinks towards rate 0, the
    first kind, no scripted faults and seed 0.
    """
    name = "fault_plans"
    rate = _check_rate(name, "max_rate", max_rate)
    allowed = _fault_kinds(name, kinds)
    _check_int(name, "scripted", scripted, minimum=0)
    _check_int(name, "max_agent", max_agent, minimum=1)
    _check_int(name, "max_step", max_step, minimum=1)
    _check_int(name, "max_call", max_call, minimum=0)
    if seed is not None:
        _check_int(name, "seed", seed, minimum=0)
    seeds = st.just(seed) if seed is not None else st.integers(0, _MAX_SEED)
    return _fault_plans(rate, allowed, scripted, max_agent, max_step, max_call, seeds)


def _fault_plans(
    max_rate: float,
    allowed: tuple[FaultKind, ...],
    scripted: int,
    max_agent: int,
    max_step: int,
    max_call: int,
    seeds: SearchStrategy[int],
) -> SearchStrategy[FaultPlan]:
    percent = st.integers(0, round(max_rate * 100)).map(lambda p: p / 100)
    chosen = st.lists(st.sampled_from(allowed), min_size=1, max_size=len(allowed), unique=True)
    script = st.lists(
        st.tuples(
            st.integers(1, max_agent),
            st.integers(1, max_step),
            st.integers(0, max_call),
            st.sampled_from(allowed),
        ),
        max_size=scripted,
        unique_by=lambda t: t[:3],
    )

    def build(
        rate: float, kinds: list[FaultKind], seed: int, at: list[tuple[int, int, int, FaultKind]]
    ) -> FaultPlan:
        plan = FaultPlan(rate, kinds=kinds, seed=seed)  # kinds are put in canonical order
        for agent, step, call, kind in at:
            plan.at(agent=agent, step=step, call=call, kind=kind)
        return plan

    return st.builds(build, percent, chosen, seeds, script)


# --------------------------------------------------------------------------- populations


def agent_populations(*, min_size: int = 1, max_size: int = 20) -> SearchStrategy[int]:
    """How many agents a model starts with: ``min_size..max_size``, shrinking to ``min_size``."""
    _check_int("agent_populations", "min_size", min_size, minimum=0)
    _check_int("agent_populations", "max_size", max_size, minimum=0)
    _check_range("agent_populations", "min_size", min_size, "max_size", max_size)
    return st.integers(min_size, max_size)


# --------------------------------------------------------------------------- LLM outputs


def _tool_specs(tools: Sequence[Any] | None) -> list[tuple[str, Mapping[str, Any]]]:
    """``(name, parameters schema)`` of OpenAI tool dicts or objects with ``.schema`` (``Tool``)."""
    specs: list[tuple[str, Mapping[str, Any]]] = []
    for tool in _DEFAULT_TOOLS if tools is None else tools:
        spec = getattr(tool, "schema", tool)
        fn = spec.get("function") if isinstance(spec, Mapping) else None
        if not isinstance(fn, Mapping) or not fn.get("name"):
            raise _fail(
                "llm_outputs",
                "tools",
                tool,
                "OpenAI tool dicts ({'type': 'function', 'function': {'name': ..., "
                "'parameters': ...}}) or mesa_llm.tools.Tool objects",
            )
        specs.append((str(fn["name"]), fn.get("parameters") or {"type": "object"}))
    if not specs:
        raise _fail("llm_outputs", "tools", tools, "a non-empty list of tools, or None")
    return specs


def _schema_values(schema: Mapping[str, Any]) -> SearchStrategy[Any]:
    """Values valid for ``schema``, from the fake LLM's own schema-driven generator."""
    return st.integers(0, 2**32 - 1).map(lambda n: SchemaValues(schema, Rng("outputs", n)).value())


def _schema_violations(schema: Mapping[str, Any]) -> SearchStrategy[Any]:
    return st.integers(0, 2**32 - 1).map(lambda n: violate_schema(schema, Rng("violate", n)))


_JSON_SCALARS: Final = (
    st.none()
    | st.booleans()
    | st.integers(-1000, 1000)
    | st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
_KEYS: Final = st.text(
    st.characters(categories=("Ll", "Nd"), max_codepoint=127), min_size=1, max_size=8
)


def _json_objects() -> SearchStrategy[dict[str, Any]]:
    values = st.recursive(
        _JSON_SCALARS,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEYS, inner, max_size=3),
        max_leaves=6,
    )
    return st.dictionaries(_KEYS, values, min_size=1, max_size=4)


def _texts() -> SearchStrategy[str]:
    alphabet = st.characters(categories=("L", "N", "P", "Zs"), exclude_characters="\x00")
    return st.text(alphabet, min_size=1, max_size=60).filter(lambda s: s.strip() != "")


def _tool_reply(name: str, arguments: str) -> FakeReply:
    return FakeReply(None, (FakeToolCall(name, arguments),))


def _invalid_arguments(name: str, params: Mapping[str, Any]) -> SearchStrategy[FakeReply]:
    """A call to tool ``name`` whose arguments are not JSON, not an object, or break its schema."""
    valid = _schema_values(params).map(lambda v: v if isinstance(v, dict) and v else {"value": 1})
    truncated = valid.map(lambda v: truncate_json(json.dumps(v)))
    not_object = st.lists(st.integers(0, 9), max_size=3).map(json.dumps)
    unknown_key = valid.map(lambda v: json.dumps({**v, "unexpected_argument": True}))
    options = [truncated, not_object, unknown_key]
    if params.get("required"):
        options.append(_schema_violations(params).map(json.dumps))
    return st.one_of(options).map(lambda args: _tool_reply(name, args))


def llm_outputs(
    *,
    kinds: Iterable[str] | str | None = None,
    tools: Sequence[Any] | None = None,
    schema: Mapping[str, Any] | None = None,
) -> SearchStrategy[FakeReply]:
    """Replies for ``FakeLLM(return_value=...)`` / ``side_effect=[...]``, valid or malformed.

    ``kinds`` picks from :data:`OUTPUT_KINDS` (default: all); use :data:`VALID_OUTPUTS`
    or :data:`MALFORMED_OUTPUTS` for one family:

    * ``"text"``: a non-blank sentence; ``"tool_call"``: a call to one of ``tools``
      (OpenAI tool dicts or ``mesa_llm.tools.Tool``; default ``move(x, y)`` and
      ``say(text)``) with arguments valid for its schema; ``"json"``: JSON content
      valid for ``schema`` (any JSON object if none);
    * ``"truncated_json"``: JSON content cut short; ``"invalid_tool_arguments"``:
      a tool call whose arguments are truncated JSON, not an object, have an
      unknown key or miss a required one; ``"schema_violation"``: JSON that parses
      but breaks ``schema`` (a default schema if none); ``"empty"``: no content and
      no tool calls.
    """
    wanted = _output_kinds(kinds)
    specs = _tool_specs(tools)
    content_schema = schema if schema is not None else _DEFAULT_SCHEMA
    objects = _schema_values(schema) if schema is not None else _json_objects()
    tool = st.sampled_from(specs)
    makers: dict[str, Callable[[], SearchStrategy[FakeReply]]] = {
        "text": lambda: _texts().map(FakeReply),
        "tool_call": lambda: tool.flatmap(
            lambda spec: _schema_values(spec[1]).map(
                lambda args: _tool_reply(
                    spec[0], json.dumps(args if isinstance(args, dict) else {})
                )
            )
        ),
        "json": lambda: objects.map(lambda v: FakeReply(json.dumps(v))),
        "truncated_json": lambda: objects.map(
            lambda v: FakeReply(
                truncate_json(json.dumps(v if v not in ({}, [], None) else {"a": 1}))
            )
        ),
        "invalid_tool_arguments": lambda: tool.flatmap(lambda spec: _invalid_arguments(*spec)),
        "schema_violation": lambda: _schema_violations(content_schema).map(
            lambda v: FakeReply(json.dumps(v))
        ),
        "empty": lambda: st.sampled_from([empty_reply(), FakeReply(None, (), "stop")]),
    }
    return st.one_of([makers[kind]() for kind in wanted])


def _output_kinds(kinds: Iterable[str] | str | None) -> tuple[str, ...]:
    if kinds is None:
        return OUTPUT_KINDS
    items = [k.strip() for k in kinds.split(",")] if isinstance(kinds, str) else list(kinds)
    unknown = [k for k in items if k not in OUTPUT_KINDS]
    if unknown or not items:
        raise _fail("llm_outputs", "kinds", kinds, ", ".join(OUTPUT_KINDS))
    return tuple(k for k in OUTPUT_KINDS if k in items)


# --------------------------------------------------------------------------- scenarios


@dataclass(frozen=True, slots=True)
class ScenarioCase:
    """One scenario run to check: a built-in scenario, its size, a seed and a fault plan.

    :meth:`run` can be called for several modes: the runner resets the plan's
    counters and records first, so every run sees the same faults; afterwards
    ``case.faults.injected`` holds the last run's faults.
    """

    name: str
    agents: int
    steps: int
    seed: int
    faults: FaultPlan

    def __repr__(self) -> str:
        scripted = ", ".join(
            f"({f.agent}, {f.step}, {f.call}, {f.kind.value})" for f in self.faults.scripted
        )
        kinds = ",".join(k.value for k in self.faults.kinds)
        return (
            f"ScenarioCase({self.name!r}, agents={self.agents}, steps={self.steps}, "
            f"seed={self.seed}, faults=FaultPlan(rate={self.faults.rate:g}, kinds={kinds!r}, "
            f"seed={self.faults.seed}, scripted=[{scripted}]))"
        )

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        # Hypothesis prints falsifying examples with this: show the scripted faults too.
        printer.text(repr(self))

    @property
    def factory(self) -> Callable[..., Any]:
        """The model factory registered under :attr:`name` (an entry point)."""
        from mesa_llm_testing._discovery import load_scenario

        return load_scenario(self.name)

    def run(self, mode: str, *, llm: FakeLLM | None = None) -> RunTrace:
        """Run the scenario in ``mode`` under :attr:`faults` (or ``llm`` and its plan)."""
        from mesa_llm_testing._runner import run_scenario

        return run_scenario(
            self.factory,
            steps=self.steps,
            mode=mode,
            faults=self.faults if llm is None else llm.faults,
            seed=self.seed,
            agents=self.agents,
            llm=llm,
        )

    def command(self, mode: str = "all") -> str:
        """The shell command that replays this case: ``mesa-llm-testing run NAME ...``."""
        return replay_command(
            self.name,
            agents=self.agents,
            steps=self.steps,
            seed=self.seed,
            mode=mode,
            plan=self.faults,
        )


def scenarios(
    *,
    names: Iterable[str] | None = None,
    min_agents: int = 2,
    max_agents: int = 6,
    min_steps: int = 1,
    max_steps: int = 3,
    max_rate: float = 0.3,
    kinds: Iterable[FaultKind | str] | str | None = None,
    scripted: int = 2,
) -> SearchStrategy[ScenarioCase]:
    """Runs to check (:class:`ScenarioCase`) of the built-in scenarios, or of ``names``.

    ``names`` may name any registered scenario (see ``mesa-llm-testing list``),
    including another package's; it must take ``seed`` and ``n_agents``.

    The fault plan's seed is the case's seed, so ``case.command()`` replays it with
    ``--seed``; scripted faults target the case's agents and steps. Shrinks towards
    the first name, ``min_agents``, ``min_steps``, seed 0 and no faults.
    """
    fn = "scenarios"
    from mesa_llm_testing._discovery import builtin_names, registered_scenarios

    registry = registered_scenarios()
    chosen = builtin_names() if names is None else list(names)
    unknown = [n for n in chosen if n not in registry]
    if unknown or not chosen:
        raise _fail(fn, "names", names, ", ".join(registry) or "(no scenarios registered)")
    _check_int(fn, "min_agents", min_agents, minimum=1)
    _check_int(fn, "max_agents", max_agents, minimum=1)
    _check_range(fn, "min_agents", min_agents, "max_agents", max_agents)
    _check_int(fn, "min_steps", min_steps, minimum=1)
    _check_int(fn, "max_steps", max_steps, minimum=1)
    _check_range(fn, "min_steps", min_steps, "max_steps", max_steps)
    rate = _check_rate(fn, "max_rate", max_rate)
    allowed = _fault_kinds(fn, kinds)
    _check_int(fn, "scripted", scripted, minimum=0)

    @st.composite
    def cases(draw: Callable[..., Any]) -> ScenarioCase:
        name = draw(st.sampled_from(chosen))
        agents = draw(agent_populations(min_size=min_agents, max_size=max_agents))
        steps = draw(st.integers(min_steps, max_steps))
        seed = draw(st.integers(0, _MAX_SEED))
        plan = draw(
            _fault_plans(rate, allowed, scripted, agents, steps, 1, st.just(seed)),
            label="faults",
        )
        return ScenarioCase(name, agents, steps, seed, plan)

    return cases()
