"""Island commons: islanders share a fishery and govern it by proposals a judge chooses among.

A runnable example. The model itself is ``mesa_llm_testing/scenarios/island_commons.py``
(installed with mesa-llm as ``mesa_llm_testing.scenarios.island_commons``). Run it
offline on the fake LLM, in every stepping mode, under injected faults::

    python scenarios/island_commons.py --agents 6 --steps 3 --faults 0.1

Any option of ``mesa-llm-testing run`` works; this is ``mesa-llm-testing run island_commons``.
"""

from __future__ import annotations

import sys

from mesa_llm_testing.cli import main
from mesa_llm_testing.scenarios.island_commons import IslandCommonsModel

__all__ = ["IslandCommonsModel"]

if __name__ == "__main__":
    sys.exit(main(["run", IslandCommonsModel.scenario_name, *sys.argv[1:]]))
