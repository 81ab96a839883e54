"""Generated candidate rule packs, for the backtest benchmark and the evaluator tests.

`write_candidate(out_dir, live_dir, n_rules=50, seed=0, frame=features)` copies the
live rules directory (rule files, policy, lists) and adds ``generated.yaml`` with
``n_rules`` random rules over real catalog features. With a feature table, number
thresholds are drawn from that table's quantiles (so rules fire on a small share of
events rather than never or always). The rules use every construct of the language:
comparisons, arithmetic and division, literal lists, bools and their negation,
``is missing``, analyst lists, ``or`` and ``not (...)``.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fengkong.features.definitions import CATALOG

STRINGS = {
    "card.type": ["credit", "debit", "prepaid"],
    "merchant.grade": ["NEW", "A", "B", "C", "D"],
    "event.channel": ["quick_pay", "online_banking", "wallet", "pos", "card_not_present", "withholding"],
    "event.type": ["payment", "signup", "login", "card_bind"],
}
LISTS = ("blocked_cards", "blocked_users", "blocked_devices", "blocked_ips", "proxy_ips", "trusted_users")


def _numbers(frame: pd.DataFrame | None) -> list[str]:
    names = sorted(n for n, s in CATALOG.items() if s.dtype == "number" and not n.startswith("model."))
    if frame is not None:
        names = [n for n in names if n in frame.columns]
    return names


def _bools(frame: pd.DataFrame | None) -> list[str]:
    names = sorted(n for n, s in CATALOG.items() if s.dtype == "bool")
    return [n for n in names if frame is None or n in frame.columns]


def _threshold(name: str, frame: pd.DataFrame | None, rng: random.Random) -> float:
    if frame is not None:
        v = pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=np.float64)
        v = v[np.isfinite(v) & (v > 0)]
        if len(v):
            q = float(np.quantile(v, rng.uniform(0.85, 0.995)))
            return round(q, 3) if q != int(q) else int(q)
    return rng.randint(1, 50)


def generated_rules(n_rules: int, *, seed: int = 0, frame: pd.DataFrame | None = None,
                    prefix: str = "gen") -> list[dict[str, Any]]:
    """``n_rules`` rule dicts (rule-file shape) over real feature names, the same for the same seed.

    With ``frame`` (features of a history) thresholds come from its quantiles,
    so the rules fire on a small share of events rather than never or always.
    """
    rng = random.Random(seed)
    nums, bools = _numbers(frame), _bools(frame)
    out = []
    for i in range(n_rules):
        first = rng.choice(nums)
        parts = [f"{first} >= {_threshold(first, frame, rng)}"]  # a narrow test in every rule
        for _ in range(rng.randint(0, 2)):
            k = rng.random()
            if k < 0.3:
                name = rng.choice(nums)
                parts.append(f"{name} >= {_threshold(name, frame, rng)}")
            elif k < 0.42:
                a, b = rng.choice(nums), rng.choice(nums)
                parts.append(f"{a} > {rng.choice([2, 3, 5])} * {b}")
            elif k < 0.52:
                a, b = rng.choice(nums), rng.choice(nums)
                parts.append(f"{a} / {b} >= {rng.choice([0.5, 1, 2, 4])}")
            elif k < 0.7:
                name, values = rng.choice(list(STRINGS.items()))
                picked = rng.sample(values, rng.randint(1, 2))
                neg = "not " if rng.random() < 0.3 else ""
                parts.append(f"{name} {neg}in {json.dumps(picked)}")
            elif k < 0.85:
                parts.append(f"{'not ' if rng.random() < 0.4 else ''}{rng.choice(bools)}")
            elif k < 0.93:
                parts.append(f"{rng.choice(nums)} is {'not ' if rng.random() < 0.5 else ''}missing")
            else:
                lst = rng.choice(LISTS)
                attr = {"blocked_cards": "card.fingerprint", "blocked_users": "event.user_id",
                        "trusted_users": "event.user_id", "blocked_devices": "event.device_id"}.get(lst, "event.ip")
                parts.append(f"{attr} in lists.{lst}")
        r = rng.random()
        if r < 0.8 or len(parts) == 1:
            when = " and ".join(parts)
        elif r < 0.9:
            second = rng.choice(nums)
            when = f"({' and '.join(parts)}) or {second} >= {_threshold(second, frame, rng)}"
        else:
            when = f"{parts[0]} and not ({' and '.join(parts[1:])})"
        out.append({
            "id": f"{prefix}.r{i}", "description": f"generated rule {i}", "when": when,
            "then": rng.choice(["challenge", "review", "review", "deny"]), "score": rng.randint(0, 40),
            "tags": ["generated"], "mode": "shadow" if rng.random() < 0.1 else "enforce",
        })
    return out


def copy_rules_dir(live_dir: Path, out_dir: Path) -> Path:
    """A copy of a rules directory (rule files, cases, policy, lists) to edit as a candidate."""
    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    shutil.copytree(live_dir, out_dir)
    return out_dir


def write_rules_file(path: Path, rules: list[dict[str, Any]]) -> Path:
    """Write ``rules`` as a rule file (``rules:`` list, YAML) at ``path``; returns ``path``."""
    import yaml

    path.write_text(yaml.safe_dump({"rules": rules}, allow_unicode=True, sort_keys=False, width=1000),
                    encoding="utf-8")
    return path


def write_candidate(out_dir: Path, live_dir: Path, *, n_rules: int = 50, seed: int = 0,
                    frame: pd.DataFrame | None = None) -> Path:
    """Copy ``live_dir`` to ``out_dir`` and add ``generated.yaml`` with ``n_rules`` rules."""
    out = copy_rules_dir(live_dir, out_dir)
    write_rules_file(out / "generated.yaml", generated_rules(n_rules, seed=seed, frame=frame))
    return out
