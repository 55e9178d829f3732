"""Built-in example models: Mesa models driven by ``LLMAgent``, offline by default.

Each scenario is a Mesa model class taking ``seed``, ``n_agents`` and ``llm_model``
(default ``"mesa-fake/..."``, answered by the test harness's fake LLM; any
litellm model string works with a key). :data:`REGISTRY` maps each name to its class.
"""

from __future__ import annotations

from typing import Final

from mesa import Model

from mesa_llm_testing.scenarios._common import ScenarioModel
from mesa_llm_testing.scenarios.civil_violence import CivilViolenceModel
from mesa_llm_testing.scenarios.island_commons import IslandCommonsModel
from mesa_llm_testing.scenarios.negotiation import NegotiationModel
from mesa_llm_testing.scenarios.release_market import ReleaseMarketModel

__all__ = [
    "DEFAULT_SCENARIO",
    "REGISTRY",
    "CivilViolenceModel",
    "IslandCommonsModel",
    "NegotiationModel",
    "ReleaseMarketModel",
    "ScenarioModel",
]

#: Built-in scenarios by name: ``REGISTRY[name](seed=..., n_agents=...)`` builds the model.
REGISTRY: Final[dict[str, type[Model]]] = {
    CivilViolenceModel.scenario_name: CivilViolenceModel,
    NegotiationModel.scenario_name: NegotiationModel,
    IslandCommonsModel.scenario_name: IslandCommonsModel,
    # Written as a mesa-llm 0.3.2 user writes a model (that release's API only).
    ReleaseMarketModel.scenario_name: ReleaseMarketModel,
}

#: The scenario ``mesa-llm-testing run`` runs when none is named.
DEFAULT_SCENARIO: Final = CivilViolenceModel.scenario_name
