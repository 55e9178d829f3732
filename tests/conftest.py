"""Shared test fixtures: every test leaves automatic parallel stepping off."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

# Never let litellm reach for the network from the test suite.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from hypothesis import HealthCheck, settings

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


@pytest.fixture(autouse=True)
def _automatic_stepping_off() -> Iterator[None]:
    yield
    from mesa_llm.parallel_stepping import disable_automatic_parallel_stepping

    disable_automatic_parallel_stepping()
