"""What the decision path needs from the models: load the latest artifacts once,
then turn one event's features into the ``model.*`` features the rules read.

``ModelRuntime.load(artifacts_dir)`` looks under ``<dir>/transactions/`` and
``<dir>/merchants/`` for the newest complete version of each (see
`fengkong.models.artifacts`; ``None`` means ``$FENGKONG_ARTIFACTS`` or
``./artifacts``). It loads only ``meta.json`` and the compiled trees (``*.npz``):
no pickle, no scikit-learn at serve time. An artifact that asks for a feature the
service cannot supply, or that cannot be read, is refused and the reason shows in
``status`` (and ``problems``); the service then runs without it.

``score(features)`` returns, for one event:

* ``model.txn_risk`` and ``model.habit_anomaly`` from the transaction artifact,
  scored live on the event's features (payments only; None otherwise);
* ``model.merchant_anomaly``: the nightly score `fengkong rescore` wrote into the
  merchant's profile hash (field ``anomaly``), read from the feature
  ``merchant.anomaly`` when the store returns it; None until then.

``fuse(model_outputs, decision)`` (after the rules decided): the fused risk 0-1
of `fengkong.models.fusion` (rules-alone score of the decision + txn_risk), when
the transaction artifact carries one (``fengkong train transactions`` fits it on
``--rules``, default ``rules``); None otherwise. `fengkong.pipeline.decide` calls
it and returns the value as the feature ``model.risk``; the API answers it as
``risk``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from fengkong.models.artifacts import ArtifactError, latest
from fengkong.models.fast import CompiledTrees
from fengkong.models.fusion import Decided, RiskFusion, base_score
from fengkong.models.transaction_model import Vectorizer

#: The profile field the rescore job writes, as the store would return it.
MERCHANT_ANOMALY_FEATURE = "merchant.anomaly"


class ModelRuntime:
    """Loaded model artifacts. ``status`` says what is loaded, for /readyz and decisions."""

    def __init__(self) -> None:
        self.loaded: dict[str, str] = {}  # kind -> version
        self.problems: list[str] = []
        self._txn: tuple[Vectorizer, CompiledTrees, Vectorizer, CompiledTrees, np.ndarray] | None = None
        self.merchant_meta: dict[str, Any] | None = None
        self.merchant_forest: CompiledTrees | None = None
        self.fusion: RiskFusion | None = None

    @classmethod
    def load(cls, artifacts_dir: Path | None) -> "ModelRuntime":
        rt = cls()
        for kind in ("transactions", "merchants"):
            try:
                art = latest(artifacts_dir, kind)
                if art is None:
                    continue
                if kind == "transactions":
                    p = art.meta["params"]
                    vocab = {k: tuple(v) for k, v in p["vocab"].items()}
                    tv = Vectorizer(tuple(p["txn_features"]), {k: v for k, v in vocab.items() if k in p["txn_features"]})
                    hv = Vectorizer(tuple(p["habit_features"]),
                                    {k: v for k, v in vocab.items() if k in p["habit_features"]})
                    rt._txn = (tv, CompiledTrees.load(art.file("txn_risk.npz")), hv,
                               CompiledTrees.load(art.file("habit.npz")), np.asarray(p["habit_medians"], dtype=float))
                    rt.fusion = RiskFusion.from_params(p["fusion"]) if "fusion" in p else None
                else:
                    rt.merchant_forest = CompiledTrees.load(art.file("forest.npz"))
                    rt.merchant_meta = art.meta
                rt.loaded[kind] = art.version
            except (ArtifactError, OSError, KeyError, ValueError, json.JSONDecodeError) as exc:
                rt.problems.append(f"{kind}: {exc}")
        return rt

    @property
    def available(self) -> bool:
        return bool(self.loaded)

    @property
    def status(self) -> str:
        parts = [f"{kind} {version}" for kind, version in self.loaded.items()]
        text = ", ".join(parts) if parts else "rules-only: no model artifacts loaded"
        if self.problems:
            text += "; refused: " + "; ".join(self.problems)
        return text

    def score(self, features: Mapping[str, Any]) -> dict[str, float | None]:
        """model.* features for one event (empty when no model is loaded)."""
        if not self.loaded:
            return {}
        out: dict[str, float | None] = {}
        if self._txn is not None:
            tv, hgb, hv, habit, medians = self._txn
            if features.get("event.type", "payment") == "payment":
                # plain floats: decision records and audit lines are JSON, and so is the fact durable_rules reads
                out["model.txn_risk"] = float(hgb.score_one(tv.one(features)))
                x = hv.one(features)
                out["model.habit_anomaly"] = float(-habit.score_one(np.where(np.isnan(x), medians, x)))
            else:
                out["model.txn_risk"] = out["model.habit_anomaly"] = None
        anomaly = features.get(MERCHANT_ANOMALY_FEATURE)
        out["model.merchant_anomaly"] = float(anomaly) if isinstance(anomaly, (int, float)) and not isinstance(
            anomaly, bool) else None
        return out

    def fuse(self, model_outputs: Mapping[str, Any], decision: Decided) -> float | None:
        """The fused risk (0-1) of one decided event: `fusion.RiskFusion` on the decision's
        rules-alone score and ``model.txn_risk``; None without a fusion or for non-payments."""
        if self.fusion is None or "model.txn_risk" not in model_outputs:
            return None
        risk = model_outputs.get("model.txn_risk")
        if risk is None:
            return None
        return self.fusion.score_one(float(risk), base_score(decision))
