"""Civil violence (after Epstein, 2002): citizens and cops on a grid, each deciding by LLM.

A runnable example. The model itself is ``mesa_llm_testing/scenarios/civil_violence.py``
(installed with mesa-llm as ``mesa_llm_testing.scenarios.civil_violence``). Run it
offline on the fake LLM, in every stepping mode, under injected faults::

    python scenarios/civil_violence.py --agents 6 --steps 3 --faults 0.1

Any option of ``mesa-llm-testing run`` works; this is ``mesa-llm-testing run civil_violence``.
"""

from __future__ import annotations

import sys

from mesa_llm_testing.cli import main
from mesa_llm_testing.scenarios.civil_violence import CivilViolenceModel

__all__ = ["CivilViolenceModel"]

if __name__ == "__main__":
    sys.exit(main(["run", CivilViolenceModel.scenario_name, *sys.argv[1:]]))
