"""Run a Mesa model under the fake LLM in one stepping mode and record each step as a ``RunTrace``.

:func:`run_scenario` runs a scenario for a number of steps; :class:`ScenarioRun`
does the same one step at a time. The trace model lives in ``_trace``, the
recording of one step in ``_recording``, the scenario names in ``_discovery``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from mesa_llm.parallel_stepping import parallel_stepping
from mesa_llm_testing._discovery import resolve_scenario
from mesa_llm_testing._fakellm import FakeLLM
from mesa_llm_testing._faults import FaultPlan
from mesa_llm_testing._packed import pack_finished_steps
from mesa_llm_testing._plans import plan_settings
from mesa_llm_testing._process_state import ProcessState, recordings_kept_out_of_cwd
from mesa_llm_testing._recording import Recorder, recording_shuffle_do, run_step
from mesa_llm_testing._trace import RunTrace, StepTrace

if TYPE_CHECKING:
    from mesa import Model

__all__ = ["MODES", "ScenarioRun", "run_scenario"]

#: The stepping modes a scenario can run in.
MODES: Final = ("sequential", "asyncio", "threading")


def run_scenario(
    model_factory: Callable[..., Model] | str,
    *,
    steps: int,
    mode: str,
    faults: FaultPlan | None = None,
    seed: int,
    agents: int | None = None,
    llm: FakeLLM | None = None,
) -> RunTrace:
    """Build a model with ``model_factory(seed=seed)`` and step it ``steps`` times in ``mode``.

    ``model_factory`` is a callable (a Mesa model class works) or a name
    understood by :func:`resolve_scenario`; ``agents`` is passed as ``n_agents``.
    ``mode`` is ``"sequential"``, ``"asyncio"`` or ``"threading"``: the model is
    stepped with ``model.parallel_stepping`` True inside
    ``mesa_llm.parallel_stepping.parallel_stepping(mode)``, so every
    ``agents.shuffle_do(name)`` isolates and reports each agent's failure in every
    mode (sequential runs the agents one at a time in Mesa's shuffle order), and the
    three modes give equal traces for any model. A fake LLM answers every
    litellm call during the run: ``llm``, or a fresh ``FakeLLM(seed=seed, faults=faults)``.
    The fault plan's counters and records are reset first, so a plan can be reused
    across runs; afterwards ``plan.injected`` holds this run's faults. Retries never
    really wait. An exception from ``model.step()`` propagates, noted with the step.

    One run at a time per process: the fake and the stepping mode are process-wide.
    :class:`ScenarioRun` does the same one step at a time.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"mesa_llm_testing: steps must be an integer >= 0, got {steps!r}")
    with ScenarioRun(
        model_factory, seed=seed, mode=mode, faults=faults, agents=agents, llm=llm
    ) as run:
        for _ in range(steps):
            run.step()
    return run.trace


class ScenarioRun:
    """A scenario run one step at a time: :func:`run_scenario` in pieces.

    Entering the ``with`` block activates the fake LLM (resetting its fault plan)
    and builds :attr:`model`; each :meth:`step` steps the model once, in the run's
    ``mode`` or the one given, and returns that step's :class:`StepTrace`;
    :attr:`trace` holds every step so far. Between steps the model may be changed
    (agents added or removed, settings switched). Leaving the block restores the
    stepping mode and deactivates the fake.
    """

    def __init__(
        self,
        model_factory: Callable[..., Model] | str,
        *,
        seed: int,
        mode: str = "sequential",
        faults: FaultPlan | None = None,
        agents: int | None = None,
        llm: FakeLLM | None = None,
    ) -> None:
        self.factory = (
            resolve_scenario(model_factory) if isinstance(model_factory, str) else model_factory
        )
        self.mode = _checked_mode(mode)
        if llm is not None and faults is not None and llm.faults is not faults:
            raise ValueError(
                "mesa_llm_testing: got both llm= and faults=; pass the plan as "
                "FakeLLM(faults=...) or as faults=..., not both"
            )
        self.seed = seed
        self.agents = agents
        self.fake = llm if llm is not None else FakeLLM(seed=seed, faults=faults)
        self._model: Model | None = None
        self._trace: RunTrace | None = None
        self._stack: contextlib.ExitStack | None = None
        self._mode_stack: contextlib.ExitStack | None = None
        self._active_mode: str | None = None
        self._recorder = Recorder()

    @property
    def model(self) -> Model:
        """The model being run (built on entering the ``with`` block)."""
        if self._model is None:
            raise RuntimeError(_OUTSIDE)
        return self._model

    @property
    def trace(self) -> RunTrace:
        """The trace of the steps run so far (mode ``"mixed"`` once steps ran in several modes)."""
        if self._trace is None:
            raise RuntimeError(_OUTSIDE)
        return self._trace

    def __enter__(self) -> ScenarioRun:
        if self._stack is not None:
            raise RuntimeError("mesa_llm_testing: this ScenarioRun is already running")
        plan = self.fake.faults
        with contextlib.ExitStack() as stack:
            # A model that switches automatic stepping on while it is built (mesa-llm 0.3
            # style: ``parallel_stepping = True`` and LLMAgents) must not outlive the run.
            stack.callback(ProcessState.capture().restore)
            stack.enter_context(recordings_kept_out_of_cwd())
            plan.reset()
            stack.enter_context(self.fake.activate())
            stack.callback(self._leave_mode)
            kwargs: dict[str, Any] = {"seed": self.seed}
            if self.agents is not None:
                kwargs["n_agents"] = self.agents
            model = self.factory(**kwargs)
            model.parallel_stepping = False  # type: ignore[attr-defined]
            name = getattr(model, "scenario_name", "") or getattr(self.factory, "__name__", "")
            self._model = model
            self._trace = RunTrace(
                scenario=str(name or self.factory),
                seed=self.seed,
                mode=self.mode,
                steps=[],
                faults=plan_settings(plan),
                agents=self.agents,
                max_attempts=_max_attempts(model),
            )
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc_info: object) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()

    def step(self, mode: str | None = None) -> StepTrace:
        """Step the model once in ``mode`` (default: the run's) and record the step."""
        if self._stack is None or self._model is None or self._trace is None:
            raise RuntimeError(_OUTSIDE)
        mode = self.mode if mode is None else _checked_mode(mode)
        self._enter_mode(mode)
        try:
            step = run_step(self._model, self.fake, self._recorder, mode)
        except Exception as exc:
            exc.add_note(
                f"mesa_llm_testing: raised by scenario {self._trace.scenario!r} at step "
                f"{self._model.steps} in {mode} mode (seed {self.seed})"
            )
            raise
        self._trace.steps.append(step)
        pack_finished_steps(self._trace.steps)  # long runs: finished steps in little memory
        if mode != self._trace.mode:
            self._trace.mode = "mixed"
        return step

    def _enter_mode(self, mode: str) -> None:
        """Switch stepping modes; the recorder always wraps the mode's ``shuffle_do``."""
        if mode == self._active_mode:
            return
        self._leave_mode()
        with contextlib.ExitStack() as stack:
            stack.enter_context(parallel_stepping(mode))  # type: ignore[arg-type]
            stack.enter_context(recording_shuffle_do(self._recorder))
            self._mode_stack = stack.pop_all()
        self._active_mode = mode
        self.model.parallel_stepping = True  # type: ignore[attr-defined]

    def _leave_mode(self) -> None:
        stack, self._mode_stack, self._active_mode = self._mode_stack, None, None
        if stack is not None:
            stack.close()


_OUTSIDE = (
    "mesa_llm_testing: use ScenarioRun inside 'with ScenarioRun(...) as run:'; "
    "the model is built and stepped there"
)


def _checked_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(
            f"mesa_llm_testing: invalid mode={mode!r}; valid modes are "
            + ", ".join(repr(m) for m in MODES)
        )
    return mode


def _max_attempts(model: Model) -> int | None:
    found = {
        retry.max_attempts
        for agent in model.agents
        if (retry := getattr(getattr(agent, "llm", None), "retry", None)) is not None
    }
    return found.pop() if len(found) == 1 else None
