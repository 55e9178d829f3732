"""Shared test settings: Hypothesis profiles, and a warm Python for tests that run commands.

Automatic parallel stepping left on by a test is switched off by the mesa-llm pytest
plugin itself (as in any downstream project), so no fixture here hides a leak.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

# LITELLM_LOCAL_MODEL_COST_MAP=True is set by the mesa-llm plugin when it loads.
from hypothesis import HealthCheck, settings
from warm_python import Run, WarmPython, command_env

settings.register_profile(
    "ci",
    max_examples=25,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "dev",
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def warm_run() -> Iterator[Run]:
    """``warm_run(argv, cwd, timeout=...)``: the command's ``CompletedProcess``, run as a fork
    of one warm Python per test process that has imported litellm (``warm_python.py``).

    For tests whose subject is what a command does, not how a cold process starts.
    """
    warm = WarmPython(command_env())
    try:
        yield warm.run
    finally:
        warm.close()
