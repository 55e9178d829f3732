"""Shared test settings: Hypothesis profiles.

Automatic parallel stepping left on by a test is switched off by the mesa-llm pytest
plugin itself (as in any downstream project), so no fixture here hides a leak.
"""

from __future__ import annotations

import os

# LITELLM_LOCAL_MODEL_COST_MAP=True is set by the mesa-llm plugin when it loads.
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
