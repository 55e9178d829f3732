"""Process-wide switches a model test can leave on, captured before a test and restored after.

A model that calls ``enable_automatic_parallel_stepping()`` in ``__init__`` (as the
README's tour does) leaves Mesa's ``shuffle_do`` patched for every later test; a
test that enters ``FakeLLM.activate()`` without leaving it keeps answering litellm
calls with its fake. The pytest plugin captures this state before each test and,
after the test's fixtures are torn down, puts it back. Nothing is imported here:
a module the test never imported has nothing to restore.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["ProcessState", "recordings_kept_out_of_cwd"]

_RECORDINGS_DIR_ENV = "MESA_LLM_RECORDINGS_DIR"  # mesa_llm.recording.RECORDINGS_DIR_ENV

_STEPPING = "mesa_llm.parallel_stepping"
_PROVIDER = "mesa_llm_testing._provider"


@dataclass(frozen=True, slots=True)
class ProcessState:
    """Automatic parallel stepping (with its mode and options) and the active fake LLMs."""

    stepping: dict[str, Any] | None  # automatic_stepping_settings(): None when it is off
    fakes: tuple[Any, ...]  # the fake LLM activations, outermost first

    @classmethod
    def capture(cls) -> ProcessState:
        """The state now."""
        stepping = sys.modules.get(_STEPPING)
        provider = sys.modules.get(_PROVIDER)
        return cls(
            stepping=None if stepping is None else stepping.automatic_stepping_settings(),
            fakes=tuple(getattr(provider, "_active", ())),
        )

    def restore(self) -> list[str]:
        """Put the captured state back; return a line for each leak that is a test's bug.

        Automatic stepping switched on by a model is expected (it is how a model opts
        in), so it is switched back off silently. A fake left active stops answering
        litellm calls and is reported; the API-key skip and retry-sleep override it
        entered end when its context manager is closed or garbage-collected.
        """
        leaks: list[str] = []
        now = ProcessState.capture()
        stepping = sys.modules.get(_STEPPING)
        if stepping is not None and (self.stepping is None or now.stepping != self.stepping):
            if self.stepping is None:
                # Also when it was never switched on: manual stepping functions leave the
                # shared event-loop thread and thread pools behind; this waits for and
                # closes them, so no test starts with another test's threads still busy.
                stepping.disable_automatic_parallel_stepping()
            else:
                stepping.enable_automatic_parallel_stepping(**self.stepping)
        provider = sys.modules.get(_PROVIDER)
        leaked = [entry for entry in now.fakes if entry not in self.fakes]
        for entry in reversed(leaked):
            provider._pop(entry)  # type: ignore[union-attr]
            leaks.append(
                "a FakeLLM.activate() entered during the test was never exited; the plugin "
                "deactivated it after the test (use 'with fake.activate():')"
            )
        return leaks


@contextlib.contextmanager
def recordings_kept_out_of_cwd() -> Iterator[None]:
    """``$MESA_LLM_RECORDINGS_DIR`` set to a fresh temporary directory unless the user set it.

    A ``@record_model`` model's relative ``output_dir`` then lands there, never in the
    working directory of the test run. The variable is put back afterwards; the
    directory is left (a recorder saves at interpreter exit, after the run).
    """
    if os.environ.get(_RECORDINGS_DIR_ENV):
        yield
        return
    os.environ[_RECORDINGS_DIR_ENV] = tempfile.mkdtemp(prefix="mesa-llm-recordings-")
    try:
        yield
    finally:
        os.environ.pop(_RECORDINGS_DIR_ENV, None)
