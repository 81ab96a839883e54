"""A bank's export, simulated: customers, terminals, amounts, times and a fraud flag, nothing else.

The shape of the public labelled card data set of issue 15 (the transaction simulator of
Le Borgne et al., "Reproducible Machine Learning for Credit Card Fraud Detection"), so the
export path (a mapping file, delayed fraud reports, training through the CLI) is measured on
a history that has no IP, no device, no outcome events and no merchant profiles:

* customers on a 100 x 100 grid, each with a mean ticket, its spread and a daily rate, who
  pay at the terminals within ``radius`` of home;
* fraud scenario 1 (``large_amount``): every payment above ``large_amount`` major units;
* scenario 2 (``compromised_terminal``): terminals compromised at random each day; every
  payment on one in the next ``terminal_days`` days is fraud, whichever card made it;
* scenario 3 (``compromised_customer``): customers compromised at random each day; in the
  next ``customer_days`` days a third of their payments are fraud at ``customer_multiple``
  times the amount.

`write_export` writes the CSV and the mapping that reads it (customer -> user and card,
terminal -> merchant, the fraud flag as a fraud report ``label_delay_days`` later).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

#: fraud scenario codes of the export's TX_FRAUD_SCENARIO column (0: legitimate)
EXPORT_SCENARIOS: dict[int, str] = {1: "large_amount", 2: "compromised_terminal", 3: "compromised_customer"}
COLUMNS = ("TRANSACTION_ID", "TX_DATETIME", "CUSTOMER_ID", "TERMINAL_ID", "TX_AMOUNT", "TX_FRAUD",
           "TX_FRAUD_SCENARIO")
_DAY_S = 86_400


@dataclass(frozen=True)
class ExportConfig:
    """Sizes and fraud rates of a simulated export; the same config and seed give the same rows.

    The daily compromise counts are Poisson means per 1,000 terminals (customers), the
    published data set's 2 a day of 10,000 terminals and 3 of 5,000 customers, so a smaller
    population keeps its fraud share (about 0.9%) without rounding to zero."""

    customers: int = 1000
    terminals: int = 2000
    days: int = 84
    start: date = date(2026, 4, 1)
    seed: int = 0
    radius: float = 5.0
    large_amount: float = 220.0
    terminals_per_day_per_1000: float = 0.26
    terminal_days: int = 28
    customers_per_day_per_1000: float = 0.6
    customer_days: int = 14
    customer_multiple: float = 5.0
    label_delay_days: int = 7

    def __post_init__(self) -> None:
        for name in ("customers", "terminals", "days"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be at least 1, got {getattr(self, name)}")


def simulate_export(cfg: ExportConfig) -> pd.DataFrame:
    """The export's rows in time order (`COLUMNS`; amounts in major units with two decimals,
    times local without an offset, as such files come)."""
    rng = np.random.default_rng(cfg.seed)
    home = rng.uniform(0, 100, size=(cfg.customers, 2))
    mean = rng.uniform(5, 100, size=cfg.customers)
    std = mean / 2
    rate = rng.uniform(0, 4, size=cfg.customers)
    where = rng.uniform(0, 100, size=(cfg.terminals, 2))
    near = [np.flatnonzero(((where - h) ** 2).sum(axis=1) < cfg.radius ** 2) for h in home]
    cust, day, sec, term, amount = [], [], [], [], []
    for c in range(cfg.customers):
        if not len(near[c]):
            continue
        n = rng.poisson(rate[c], size=cfg.days)
        days = np.repeat(np.arange(cfg.days), n)
        t = np.rint(rng.normal(_DAY_S / 2, 20_000, size=len(days)))
        ok = (t > 0) & (t < _DAY_S)
        days, t = days[ok], t[ok]
        a = rng.normal(mean[c], std[c], size=len(days))
        a = np.where(a < 0, rng.uniform(0, 2 * mean[c], size=len(days)), a)
        cust.append(np.full(len(days), c))
        day.append(days)
        sec.append(t)
        term.append(rng.choice(near[c], size=len(days)))
        amount.append(np.round(a, 2))
    f = pd.DataFrame({"customer": np.concatenate(cust), "day": np.concatenate(day),
                      "sec": np.concatenate(sec).astype(np.int64), "terminal": np.concatenate(term),
                      "amount": np.concatenate(amount)})
    f = f.sort_values(["day", "sec", "customer"], kind="stable").reset_index(drop=True)
    scenario = np.zeros(len(f), dtype=np.int64)
    scenario[f["amount"].to_numpy() > cfg.large_amount] = 1
    fday, fterm, fcust = f["day"].to_numpy(), f["terminal"].to_numpy(), f["customer"].to_numpy()
    amt = f["amount"].to_numpy().copy()
    for d in range(cfg.days):
        for t in rng.choice(cfg.terminals, size=rng.poisson(cfg.terminals_per_day_per_1000 * cfg.terminals / 1000), replace=False):
            hit = (fterm == t) & (fday >= d) & (fday < d + cfg.terminal_days) & (scenario == 0)
            scenario[hit] = 2
        for c in rng.choice(cfg.customers, size=rng.poisson(cfg.customers_per_day_per_1000 * cfg.customers / 1000), replace=False):
            mine = np.flatnonzero((fcust == c) & (fday >= d) & (fday < d + cfg.customer_days) & (scenario == 0))
            chosen = mine[rng.random(len(mine)) < 1 / 3]
            scenario[chosen] = 3
            amt[chosen] = np.round(amt[chosen] * cfg.customer_multiple, 2)
    start = datetime(cfg.start.year, cfg.start.month, cfg.start.day)
    times = pd.Timestamp(start) + pd.to_timedelta(fday * _DAY_S + f["sec"].to_numpy(), unit="s")
    return pd.DataFrame({
        "TRANSACTION_ID": np.arange(len(f)),
        "TX_DATETIME": times.strftime("%Y-%m-%d %H:%M:%S"),
        "CUSTOMER_ID": fcust,
        "TERMINAL_ID": fterm,
        "TX_AMOUNT": amt,
        "TX_FRAUD": (scenario > 0).astype(np.int64),
        "TX_FRAUD_SCENARIO": scenario,
    })


def export_mapping(cfg: ExportConfig) -> dict[str, object]:
    """The `fengkong replay` mapping of the export: customer -> user and card, terminal ->
    merchant, the fraud flag as a fraud report ``label_delay_days`` after the payment."""
    return {
        "columns": {
            "event_id": "TRANSACTION_ID",
            "occurred_at": {"column": "TX_DATETIME", "type": "datetime", "format": "%Y-%m-%d %H:%M:%S",
                            "timezone": "+08:00"},
            "user_id": "CUSTOMER_ID",
            "card_fingerprint": "CUSTOMER_ID",
            "merchant_id": "TERMINAL_ID",
            "amount": {"column": "TX_AMOUNT", "type": "decimal", "round": 2},
        },
        "constants": {"type": "payment", "currency": "CNY"},
        "label": {"column": "TX_FRAUD", "delay": f"{cfg.label_delay_days}d",
                  "scenario_column": "TX_FRAUD_SCENARIO"},
    }


def write_export(cfg: ExportConfig, out_dir: str | Path, *, until_day: int | None = None) -> dict[str, Path]:
    """Write ``export.csv`` (every day) and ``mapping.yaml``; with ``until_day``, also
    ``export_train.csv``: the rows of the first ``until_day`` days, what the bank held when
    it trained. Returns the paths."""
    import yaml

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = simulate_export(cfg)
    paths = {"export.csv": out / "export.csv", "mapping.yaml": out / "mapping.yaml"}
    rows.to_csv(paths["export.csv"], index=False)
    if until_day is not None:
        last = (datetime(cfg.start.year, cfg.start.month, cfg.start.day) + timedelta(days=until_day))
        paths["export_train.csv"] = out / "export_train.csv"
        rows[rows["TX_DATETIME"] < last.strftime("%Y-%m-%d %H:%M:%S")].to_csv(paths["export_train.csv"], index=False)
    paths["mapping.yaml"].write_text(yaml.safe_dump(export_mapping(cfg), sort_keys=False), encoding="utf-8")
    return paths


__all__ = ["COLUMNS", "EXPORT_SCENARIOS", "ExportConfig", "export_mapping", "simulate_export", "write_export"]
