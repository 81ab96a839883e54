"""The simulated world the simulation tests share: one config (seed from the environment) and its frames."""

from __future__ import annotations

import os

import pandas as pd

from fengkong.simulation import SimConfig, Simulation

#: Set FENGKONG_SIM_TEST_SEED to run the simulation tests on another seed.
CONFIG = SimConfig(seed=int(os.environ.get("FENGKONG_SIM_TEST_SEED", "11")), shoppers=2000, merchants=120, days=42)
DAY_S = 86400


def events_with_ts(sim: Simulation) -> pd.DataFrame:
    """The events plus ``ts`` (epoch seconds) and ``hour`` (local hour), the columns the tests compare."""
    out = sim.events.copy()
    out["ts"] = pd.to_datetime(out["occurred_at"]).map(pd.Timestamp.timestamp).astype("int64")
    hours = out["occurred_at"].str.slice(11, 13).astype(int)
    out["hour"] = hours
    return out
