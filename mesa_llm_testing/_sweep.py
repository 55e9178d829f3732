"""Sweeps: run a scenario for every seed, fault rate and mode, each run in a worker process.

:func:`sweep` validates its input before any work, hands one task per run to a
``concurrent.futures.Executor`` (its own pool of spawned processes by default, or
any executor given: a ``ProcessPoolExecutor``, Dask's ``Client.get_executor()``),
and sums the results into rows (``_sweep_rows``). A run runs in a worker process,
one at a time per process (the fake LLM and the stepping mode are process-wide).

A run that raises is a failed run with its traceback. A worker process that dies
(``os._exit``, a segfault) breaks a ``ProcessPoolExecutor``: the pool is built
anew, the runs that were in flight are run again one at a time to find the one
that killed its process (recorded as failed), and the sweep goes on.

Worker processes are never forked from the calling process: it may have threads
(litellm's logging worker, the library's event-loop thread, a progress bar's), and
a fork copies their locks in whatever state they are in. Where the platform has
it, a *forkserver* forks them instead: a clean single-threaded process that has
imported litellm and the runner once (importing them starts no thread), so a
worker starts in milliseconds rather than seconds and renewing a broken pool is
cheap. Elsewhere (Windows) they are spawned, each importing litellm once.
"""

from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing
import os
import pickle
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from mesa_llm_testing._discovery import resolve_scenario
from mesa_llm_testing._faults import FaultPlan
from mesa_llm_testing._runner import MODES, run_scenario
from mesa_llm_testing._sweep_rows import RunResult, SweepResult, summarize
from mesa_llm_testing._sweep_values import parse_modes, parse_rates, parse_seeds, values_of

if TYPE_CHECKING:
    from mesa import Model

__all__ = ["SweepTask", "local_executor", "run_task", "start_method", "sweep"]

logger = logging.getLogger(__name__)

#: One run at a time per process, also on an executor whose workers have several threads.
_ONE_RUN_AT_A_TIME = threading.Lock()


@dataclass(frozen=True, slots=True)
class SweepTask:
    """One run of a sweep, as sent to a worker: picklable, the scenario as a spec or a callable."""

    scenario: str | Callable[..., Any]
    seed: int
    fault: float
    mode: str
    steps: int
    agents: int | None


def run_task(task: SweepTask) -> RunResult:
    """Run one task with :func:`run_scenario` (in a worker); an exception is a failed run."""
    with _ONE_RUN_AT_A_TIME, _agent_failures_not_printed():
        _warm_up()
        start = time.perf_counter()
        try:
            trace = run_scenario(
                task.scenario,
                steps=task.steps,
                mode=task.mode,
                faults=FaultPlan(task.fault, seed=task.seed),
                seed=task.seed,
                agents=task.agents,
            )
        except Exception:
            return RunResult(
                task.seed,
                task.fault,
                task.mode,
                error=traceback.format_exc(),
                seconds=time.perf_counter() - start,
            )
    return RunResult(
        task.seed, task.fault, task.mode, trace=trace, seconds=time.perf_counter() - start
    )


_warm = False


def _warm_up() -> None:
    """Once per process, before a run's clock starts: import litellm (seconds) and let its
    first completion load the rest of it (about 0.4 s), on a throwaway fake LLM."""
    global _warm
    if _warm:
        return
    from mesa_llm._litellm import import_litellm
    from mesa_llm_testing._fakellm import FakeLLM

    litellm = import_litellm()
    with FakeLLM(return_value="ready").activate():
        litellm.completion(model="mesa-fake/warm-up", messages=[{"role": "user", "content": "hi"}])
    _warm = True


@contextlib.contextmanager
def _agent_failures_not_printed() -> Iterator[None]:
    """Agents fail under injected faults, and the rows count them: keep logging's
    last-resort handler from printing each one in a worker with no logging set up."""
    root = logging.getLogger()
    if root.handlers:
        yield
        return
    handler = logging.NullHandler()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)


#: What the forkserver imports once, so the workers it forks start with it loaded
#: (``__main__``, multiprocessing's default, lets a factory defined in a script load).
_PRELOAD: Final = ("__main__", "litellm", "mesa_llm_testing._sweep")


def local_executor(workers: int | None = None) -> ProcessPoolExecutor:
    """A pool of ``workers`` processes (default: one per CPU) for :func:`sweep`.

    Forked by a forkserver that has litellm loaded where there is one, else spawned;
    never forked from this process (see the module's docstring).
    """
    context = multiprocessing.get_context(start_method())
    return ProcessPoolExecutor(max_workers=workers or os.cpu_count() or 1, mp_context=context)


def start_method() -> str:
    """``"forkserver"`` (its server preloading litellm and the runner) where there is one,
    else ``"spawn"``: how sweep workers start, also a Dask ``LocalCluster``'s
    (``distributed.worker.multiprocessing-method``)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return "spawn"
    # The server inherits the environment when it starts: litellm must then read its
    # bundled cost map, not fetch one (mesa_llm._litellm sets the same default).
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    multiprocessing.get_context("forkserver").set_forkserver_preload(list(_PRELOAD))
    return "forkserver"


def sweep(
    scenario: str | Callable[..., Model],
    *,
    seeds: Iterable[int] | int | str,
    faults: Iterable[float] | float | str,
    modes: Iterable[str] | str,
    agents: int | None = None,
    steps: int,
    executor: Executor | None = None,
    progress: Callable[[RunResult], None] | None = None,
) -> SweepResult:
    """Run ``scenario`` for every seed x fault rate x mode; the rows by fault rate and mode.

    ``scenario`` is a name, ``module:factory``, ``file.py[:factory]`` (resolved in
    each worker) or a picklable factory; each run is ``run_scenario(scenario,
    steps=steps, mode=mode, faults=FaultPlan(fault, seed=seed), seed=seed,
    agents=agents)``. ``executor``: any ``concurrent.futures.Executor`` whose
    workers are processes (one run at a time per process is enforced); None runs
    on :func:`local_executor` and shuts it down after. ``progress(result)`` is
    called as each run finishes. Returns a :class:`SweepResult`: the rows, with
    every run's trace or traceback in ``.runs``. ``seeds``, ``faults`` and ``modes``
    may also be one value or text as on the command line (``seeds="1-50"``,
    ``faults="0,0.1"``, ``modes="asyncio,threading"``); a value given twice is an
    error (as with the CLI). ValueError on bad input, before any run starts.
    """
    seeds, faults, modes = _checked(
        scenario, seeds=seeds, faults=faults, modes=modes, agents=agents, steps=steps
    )
    if executor is not None and not callable(getattr(executor, "submit", None)):
        raise ValueError(
            f"mesa_llm_testing: executor={executor!r}; valid values: None (a local process "
            f"pool) or a concurrent.futures.Executor (local_executor(), a "
            f"ProcessPoolExecutor, Dask's Client.get_executor())"
        )
    tasks = [
        SweepTask(scenario, seed, fault, mode, steps, agents)
        for fault in faults
        for mode in modes
        for seed in seeds
    ]
    start = time.perf_counter()
    own = executor is None
    pool = local_executor() if executor is None else executor
    try:
        results = _Sweeper(pool, progress=progress).run(tasks)
    finally:
        if own:
            pool.shutdown(wait=True, cancel_futures=True)
    result = summarize(results, modes=modes)
    result.seconds = time.perf_counter() - start
    return result


class _Sweeper:
    """Runs tasks on an executor, a window at a time, and gets past a broken process pool."""

    def __init__(self, executor: Executor, *, progress: Callable[[RunResult], None] | None) -> None:
        self.executor = executor
        self.progress = progress
        self.replacements: list[ProcessPoolExecutor] = []

    def run(self, tasks: Sequence[SweepTask]) -> list[RunResult]:
        try:
            return self._run(tasks)
        finally:
            for pool in self.replacements:
                pool.shutdown(wait=True, cancel_futures=True)

    def _window(self) -> int:
        # A process pool fails every queued future when one worker dies, so keep only as
        # many runs in flight as it has workers: those are the suspects after a break.
        if isinstance(self.executor, ProcessPoolExecutor):
            return _workers(self.executor)
        return 1 << 30

    def _run(self, tasks: Sequence[SweepTask]) -> list[RunResult]:
        results: list[RunResult] = []
        queue = list(reversed(tasks))
        in_flight: dict[Future[RunResult], SweepTask] = {}
        while queue or in_flight:
            while queue and len(in_flight) < self._window():
                task = queue.pop()
                in_flight[self._submit(task)] = task
            done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            if any(isinstance(f.exception(), BrokenProcessPool) for f in done):
                done, _ = wait(in_flight)  # a broken pool fails every future still in it
            suspects = []
            for future in done:
                task = in_flight.pop(future)
                if isinstance(future.exception(), BrokenProcessPool):
                    suspects.append(task)
                else:
                    self._finish(results, _result(future, task))
            if suspects:
                self._renew_pool()
                for task in sorted(suspects, key=lambda t: (t.fault, t.mode, t.seed)):
                    self._finish(results, self._alone(task))
        return results

    def _submit(self, task: SweepTask) -> Future[RunResult]:
        try:
            return self.executor.submit(run_task, task)
        except BrokenProcessPool:  # broke between the last wait and now
            self._renew_pool()
            return self.executor.submit(run_task, task)

    def _alone(self, task: SweepTask) -> RunResult:
        """Run a task that was in flight when a worker died, with nothing else in flight."""
        try:
            return _result(self._submit(task), task)
        finally:
            if _broken(self.executor):
                self._renew_pool()

    def _renew_pool(self) -> None:
        old = self.executor
        if not isinstance(old, ProcessPoolExecutor):
            raise RuntimeError(f"mesa_llm_testing: cannot renew executor {old!r}")
        logger.warning("mesa_llm_testing: a sweep worker process died; starting a new pool")
        new = local_executor(_workers(old))
        old.shutdown(wait=False, cancel_futures=True)
        self.replacements.append(new)  # shut down by run(); the caller shuts down the first
        self.executor = new

    def _finish(self, results: list[RunResult], result: RunResult) -> None:
        results.append(result)
        if self.progress is not None:
            self.progress(result)


def _workers(pool: ProcessPoolExecutor) -> int:
    """How many processes ``pool`` runs (it does not say so publicly)."""
    return max(1, int(getattr(pool, "_max_workers", 0) or os.cpu_count() or 1))


def _broken(executor: Executor) -> bool:
    return isinstance(executor, ProcessPoolExecutor) and bool(getattr(executor, "_broken", False))


def _result(future: Future[RunResult], task: SweepTask) -> RunResult:
    """The future's result; an exception the executor raised instead is a failed run."""
    try:
        return future.result()
    except BrokenProcessPool as exc:
        error = (
            "the worker process running this run died (killed, os._exit, or a crash in C "
            f"code): {exc}"
        )
    except Exception as exc:  # e.g. Dask's KilledWorker, a pickling error
        error = "".join(traceback.format_exception(exc))
    return RunResult(task.seed, task.fault, task.mode, error=error)


# --------------------------------------------------------------------------- input checks


def _checked(
    scenario: Any,
    *,
    seeds: Any,
    faults: Any,
    modes: Any,
    agents: int | None,
    steps: int,
) -> tuple[list[int], list[float], list[str]]:
    seeds = values_of("seeds", seeds, parse_seeds, (int,))
    faults = values_of("faults", faults, parse_rates, (int, float))
    modes = values_of("modes", modes, parse_modes, ())
    if not seeds or any(not _is_int(s) or s < 0 for s in seeds):
        raise ValueError(f"mesa_llm_testing: seeds={seeds!r}; valid values: integers >= 0")
    if not faults or any(
        isinstance(f, bool) or not isinstance(f, int | float) or not 0 <= f <= 1 for f in faults
    ):
        raise ValueError(f"mesa_llm_testing: faults={faults!r}; valid values: rates from 0 to 1")
    if not modes or any(m not in MODES for m in modes):
        raise ValueError(f"mesa_llm_testing: modes={modes!r}; valid values: {', '.join(MODES)}")
    for name, values in (("seeds", seeds), ("faults", faults), ("modes", modes)):
        if len(set(values)) != len(values):  # as on the command line: each point runs once
            raise ValueError(
                f"mesa_llm_testing: {name}={values!r} repeats a value; give each value once"
            )
    if not _is_int(steps) or steps < 1:
        raise ValueError(f"mesa_llm_testing: steps={steps!r}; valid values: integers >= 1")
    if agents is not None and (not _is_int(agents) or agents < 1):
        raise ValueError(f"mesa_llm_testing: agents={agents!r}; valid values: None, integers >= 1")
    if isinstance(scenario, str):
        resolve_scenario(scenario)  # an unknown name fails here, not in every worker
    elif not callable(scenario):
        raise ValueError(
            f"mesa_llm_testing: scenario={scenario!r}; valid values: a scenario name, "
            "module:factory, file.py[:factory], or a model factory"
        )
    else:
        try:
            pickle.dumps(scenario)
        except Exception as exc:
            raise ValueError(
                f"mesa_llm_testing: scenario={scenario!r} cannot be sent to a worker process "
                f"({exc}); pass a module-level factory or its 'module:factory' name"
            ) from None
    return seeds, [float(f) for f in faults], modes


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and math.isfinite(value)
