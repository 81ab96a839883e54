"""Labelled synthetic payment traffic (`fengkong simulate`).

``simulate(SimConfig(...))`` returns one flat row per event (the columns of
``fengkong.events.FLAT_COLUMNS`` plus ``is_fraud``, ``scenario`` and ``note``),
sorted by ``occurred_at``; ``run`` also returns the merchants' profiles and the
blacklist the ``blacklisted`` scenario uses; ``write_outputs`` writes them.
docs/simulation.md describes what is generated.

This package imports nothing from fengkong but ``fengkong.events``.
"""

from fengkong.simulation.config import SimConfig
from fengkong.simulation.constants import SCENARIOS
from fengkong.simulation.frame import COLUMNS, Simulation, run, simulate
from fengkong.simulation.writer import summary, write_outputs

__all__ = ["COLUMNS", "SCENARIOS", "SimConfig", "Simulation", "run", "simulate", "summary", "write_outputs"]
