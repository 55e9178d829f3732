"""Negotiation: pairs of traders bartering goods, with tool-call offers and JSON answers.

A runnable example. The model itself is ``mesa_llm_testing/scenarios/negotiation.py``
(installed with mesa-llm as ``mesa_llm_testing.scenarios.negotiation``). Run it
offline on the fake LLM, in every stepping mode, under injected faults::

    python scenarios/negotiation.py --agents 6 --steps 3 --faults 0.1

Any option of ``mesa-llm-testing run`` works; this is ``mesa-llm-testing run negotiation``.
"""

from __future__ import annotations

import sys

from mesa_llm_testing.cli import main
from mesa_llm_testing.scenarios.negotiation import NegotiationModel

__all__ = ["NegotiationModel"]

if __name__ == "__main__":
    sys.exit(main(["run", NegotiationModel.scenario_name, *sys.argv[1:]]))
