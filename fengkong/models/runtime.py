"""What the decision path needs from the models: load the latest artifacts once,
then turn one event's features into the ``model.*`` features the rules read.

``ModelRuntime.load(artifacts_dir)`` looks under ``<dir>/transactions/`` and
``<dir>/merchants/`` for the newest complete version of each (see
`fengkong.models.artifacts`; ``None`` means ``$FENGKONG_ARTIFACTS`` or
``./artifacts``). It loads only ``meta.json`` and the models converted to ONNX at
training time, one ONNX Runtime session each (`fengkong.models.onnx_model`): no
pickle, no scikit-learn at serve time. An artifact that asks for a feature the
service cannot supply, that cannot be read, whose ONNX model is missing (written
before ONNX serving: retrain it) or disagrees with the scikit-learn scores saved
with it, is refused and the reason shows in ``status`` (and ``problems``); the
service then runs without it.

``score(features)`` returns, for one event:

* ``model.txn_risk`` and ``model.habit_anomaly`` from the transaction artifact,
  scored live on the event's features through ONNX Runtime (payments only; None
  otherwise); each model reads the features its artifact lists (``params``), the
  ones it was trained on: training leaves out features empty or constant on every
  training row (``params["dropped_features"]``). When the artifact carries a
  calibration (``params["calibration"]``, `fengkong.models.calibration`), the ONNX
  graph's score goes through its stored map, so ``model.txn_risk`` is a calibrated
  probability, and ``model.txn_precision`` / ``model.txn_share`` come with it;
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

import asyncio
import hashlib
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from fengkong.models.artifacts import Artifact, ArtifactError, latest
from fengkong.models.batch import TickBatcher, alike
from fengkong.models.calibration import PRECISION_FEATURE, SHARE_FEATURE, Calibration
from fengkong.models.fusion import Decided, RiskFusion, base_score
from fengkong.models.graph_reads import read_columns
from fengkong.models.joint import JointModel, check_rows, union_names
from fengkong.models.onnx_model import OnnxModel, load_model
from fengkong.models.transaction_model import Vectorizer

#: The profile field the rescore job writes, as the store would return it. This and the names
#: below are interned, as the feature store's keys and the rules' names are
#: (`fengkong.features.assemble`): a lookup of one then finds its key by identity.
MERCHANT_ANOMALY_FEATURE = sys.intern("merchant.anomaly")
#: The model.* features the runtime gives (with the calibration's two).
TXN_RISK_FEATURE = sys.intern("model.txn_risk")
HABIT_FEATURE = sys.intern("model.habit_anomaly")
MERCHANT_FEATURE = sys.intern("model.merchant_anomaly")
_EVENT_TYPE = sys.intern("event.type")
#: Largest difference the joint session (`fengkong.models.joint`) may show from the two
#: sessions it replaces; it runs the same nodes on the same values, so in practice none.
JOINT_TOLERANCE = 1e-9
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TransactionModels:
    """The loaded transaction artifact: each model's vectorizer and ONNX model, and the medians
    that fill the habit model's missing values (as in training).

    ``row`` reads the union of both models' features once per payment and ``risk_cols`` /
    ``habit_cols`` pick each model's columns from it (a slice when they lead the union in
    order, as txn_risk's always do), so an event's features are looked up and converted
    once, not once per model.

    ``joint`` scores both models with one call: the artifact's ``joint_graph``
    (`fengkong.models.joint`), checked at construction against the two sessions apart; None
    (and ``joint_problem`` says why) without one, or when it does not open or differs, and
    then the two sessions serve. ``batchable``: ``joint`` answers a batch of the check rows as one
    row at a time, so the payments of a few event-loop turns may share a call (`fengkong.models.batch`).
    ``write`` writes a payment's union row for ``joint``: only the columns its graph reads
    (`Vectorizer.writer`, `fengkong.models.graph_reads`), or ``row.write_row``."""

    risk_vectorizer: Vectorizer
    risk: OnnxModel
    habit_vectorizer: Vectorizer
    habit: OnnxModel
    habit_medians: np.ndarray
    joint_graph: bytes | None = None
    row: Vectorizer = field(init=False)
    risk_cols: slice | np.ndarray = field(init=False)
    habit_cols: slice | np.ndarray = field(init=False)
    joint: JointModel | None = field(init=False, default=None)
    joint_problem: str | None = field(init=False, default=None)
    batchable: bool = field(init=False, default=False)
    write: Callable[[Mapping[str, Any], np.ndarray, int], None] = field(init=False)

    def __post_init__(self) -> None:
        names = union_names(self.risk_vectorizer.names, self.habit_vectorizer.names)
        vocab = {**self.risk_vectorizer.vocab, **self.habit_vectorizer.vocab}
        position = {n: j for j, n in enumerate(names)}

        def cols(vec: Vectorizer) -> slice | np.ndarray:
            idx = [position[n] for n in vec.names]
            return slice(0, len(idx)) if idx == list(range(len(idx))) else np.array(idx, dtype=np.intp)

        object.__setattr__(self, "row", Vectorizer(names, {k: v for k, v in vocab.items() if k in position}))
        object.__setattr__(self, "write", self.row.write_row)
        object.__setattr__(self, "risk_cols", cols(self.risk_vectorizer))
        object.__setattr__(self, "habit_cols", cols(self.habit_vectorizer))
        if self.joint_graph is None:
            object.__setattr__(self, "joint_problem", "the artifact carries no joint graph (trained before it did)")
            return
        try:
            self._join([position[n] for n in self.risk_vectorizer.names],
                       [position[n] for n in self.habit_vectorizer.names])
        except Exception as exc:  # ONNX Runtime's errors derive from Exception itself
            object.__setattr__(self, "joint_problem", f"{type(exc).__name__}: {exc}")
        if self.joint_problem is not None:
            log.warning("transaction models: scored in two sessions (%s)", self.joint_problem)

    def _join(self, risk_cols: list[int], habit_cols: list[int]) -> None:
        """Open ``joint`` and check it equal to the two sessions, or say why not in ``joint_problem``."""
        assert self.joint_graph is not None
        joint = JointModel(self.joint_graph)
        if joint.width != len(self.row.names):
            raise ValueError(f"the joint graph reads {joint.width} features, the two models {len(self.row.names)}")
        rows = check_rows(self.risk, self.habit, width=joint.width, risk_cols=risk_cols, habit_cols=habit_cols)
        diff = joint.differs(self.risk, self.habit, rows, risk_cols=risk_cols, habit_cols=habit_cols,
                             medians=self.habit_medians)
        if not diff <= JOINT_TOLERANCE:
            object.__setattr__(self, "joint_problem", f"the joint graph differs from the two models by "
                                                      f"{diff:.3g} on {len(rows)} check rows")
            return
        object.__setattr__(self, "joint", joint)
        object.__setattr__(self, "write", self._writer(joint, rows))
        if alike(joint, rows):
            object.__setattr__(self, "batchable", True)
        else:
            log.warning("transaction models: scored one payment per call (a batch answers other floats than a row)")

    def _writer(self, joint: JointModel, rows: np.ndarray) -> Callable[[Mapping[str, Any], np.ndarray, int], None]:
        """The union row's writer for ``joint``: only the columns its graph reads
        (`fengkong.models.graph_reads`), when ``joint`` answers the check ``rows`` with the others
        zeroed exactly as whole (a second guard of the reading); else the whole row."""
        assert self.joint_graph is not None
        read = read_columns(self.joint_graph, joint.width)
        if len(read) == joint.width:
            return self.row.write_row
        unread = np.setdiff1d(np.arange(joint.width), read)
        zeroed = rows.copy()
        zeroed[:, unread] = 0.0
        whole, part = joint.score_many(rows), joint.score_many(zeroed)
        if not all(np.array_equal(a, b, equal_nan=True) for a, b in zip(whole, part)):
            log.warning("transaction models: the joint graph reads columns graph_reads did not find; whole rows")
            return self.row.write_row
        return self.row.writer(read)

    def score_one(self, features: Mapping[str, Any]) -> tuple[float, float]:
        """(txn_risk's raw score, the habit model's score) of one payment's features."""
        if self.joint is not None:
            return self.joint.score_features(self.write, features)
        row = self.row.one(features)
        x = row[self.habit_cols]
        return (self.risk.score_one(row[self.risk_cols]),
                self.habit.score_one(np.where(np.isnan(x), self.habit_medians, x)))


def load_joint(art: Artifact) -> bytes | None:
    """The artifact's joint graph (`fengkong.models.joint`), None when it has none or the file is
    not the one saved with it (logged: the two models still serve, each checked on its own)."""
    entry = art.meta.get("joint")
    if not entry:
        return None
    p = art.meta["params"]
    if list(entry["features"]) != list(union_names(p["txn_features"], p["habit_features"])):
        log.warning("transactions artifact %s: its joint graph reads other features than its models", art.version)
        return None
    try:
        data = art.file(entry["file"]).read_bytes()
    except OSError:
        log.warning("transactions artifact %s: its joint graph %s is missing", art.version, entry["file"])
        return None
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        log.warning("transactions artifact %s: %s is not the file saved with it (sha256)", art.version, entry["file"])
        return None
    return data


def _check_widths(version: str, txn: TransactionModels) -> None:
    """Each model is fed exactly the features it was trained on (``params``: training leaves
    out features empty or constant on its rows, `transaction_model.usable_columns`): a list
    whose length differs from the ONNX input is a broken artifact, refused."""
    for name, vec, model, extra in (("txn_risk", txn.risk_vectorizer, txn.risk, 0),
                                    ("habit", txn.habit_vectorizer, txn.habit, len(txn.habit_medians))):
        widths = {len(vec.names), model.n_features} | ({extra} if extra else set())
        if len(widths) != 1:
            raise ArtifactError(f"transactions artifact {version}: refused: {name} lists {len(vec.names)} features, "
                                f"its ONNX model takes {model.n_features}" +
                                (f" and {extra} medians" if extra else ""))


def _describe(loaded: Mapping[str, str], problems: Sequence[str]) -> str:
    """`ModelRuntime.status` of what is loaded and refused."""
    parts = [f"{kind} {version}" for kind, version in loaded.items()]
    text = ", ".join(parts) if parts else "rules-only: no model artifacts loaded"
    if problems:
        text += "; refused: " + "; ".join(problems)
    return text


def _merchant_anomaly(features: Mapping[str, Any]) -> float | None:
    """The nightly score `fengkong rescore` wrote into the merchant's profile, None until then."""
    anomaly = features.get(MERCHANT_ANOMALY_FEATURE)
    if isinstance(anomaly, (int, float)) and not isinstance(anomaly, bool):
        return float(anomaly)
    return None


class ModelRuntime:
    """Loaded model artifacts. ``status`` says what is loaded, for /readyz and decisions."""

    def __init__(self) -> None:
        self._loaded: Mapping[str, str] = MappingProxyType({})
        self._problems: tuple[str, ...] = ()
        #: what is loaded (and refused), as text: /readyz and every decision record carry it
        self.status = _describe(self._loaded, self._problems)
        #: whether any artifact is loaded (the service then runs the models)
        self.available = False
        self.transactions: TransactionModels | None = None
        self.merchant_meta: dict[str, Any] | None = None
        #: checked at load like the others; the live path reads the nightly score from the profile
        self.merchant_forest: OnnxModel | None = None
        self.fusion: RiskFusion | None = None
        #: the transaction model's calibration (`fengkong.models.calibration`), None: raw scores
        self.calibration: Calibration | None = None
        #: scores the payments of a few event-loop turns in one call (`submit`); None: one by one
        self.batcher: TickBatcher[Mapping[str, Any], dict[str, float | None]] | None = None

    @classmethod
    def load(cls, artifacts_dir: Path | None) -> "ModelRuntime":
        rt = cls()
        loaded: dict[str, str] = {}
        problems: list[str] = []
        for kind in ("transactions", "merchants"):
            try:
                art = latest(artifacts_dir, kind)
                if art is None:
                    continue
                if kind == "transactions":
                    p = art.meta["params"]
                    vocab = {k: tuple(v) for k, v in p["vocab"].items()}
                    tv = Vectorizer(tuple(p["txn_features"]),
                                    {k: v for k, v in vocab.items() if k in p["txn_features"]})
                    hv = Vectorizer(tuple(p["habit_features"]),
                                    {k: v for k, v in vocab.items() if k in p["habit_features"]})
                    medians = np.asarray(p["habit_medians"], dtype=float)
                    txn = TransactionModels(tv, load_model(art, "txn_risk"), hv, load_model(art, "habit"), medians,
                                            load_joint(art))
                    _check_widths(art.version, txn)
                    rt.fusion = RiskFusion.from_params(p["fusion"]) if "fusion" in p else None
                    cal = p.get("calibration")
                    rt.calibration = Calibration.from_params(cal) if cal and "skipped" not in cal else None
                    rt.transactions = txn
                    if txn.joint is not None and txn.batchable:
                        rt.batcher = TickBatcher(txn.joint, rt._answer, txn.write)
                else:
                    rt.merchant_forest = load_model(art, "forest")
                    rt.merchant_meta = art.meta
                loaded[kind] = art.version
            except (ArtifactError, OSError, KeyError, ValueError, json.JSONDecodeError) as exc:
                problems.append(f"{kind}: {exc}")
        rt.loaded, rt.problems = loaded, problems
        return rt

    @property
    def loaded(self) -> Mapping[str, str]:
        """kind -> version of each artifact loaded. Read-only: assigning a new mapping sets
        ``status`` and ``available`` again, once, rather than every decision asking whether it
        changed."""
        return self._loaded

    @loaded.setter
    def loaded(self, value: Mapping[str, str]) -> None:
        self._loaded = MappingProxyType(dict(value))
        self.status, self.available = _describe(self._loaded, self._problems), bool(self._loaded)

    @property
    def problems(self) -> tuple[str, ...]:
        """Why each refused artifact was refused; read-only, as ``loaded``."""
        return self._problems

    @problems.setter
    def problems(self, value: Sequence[str]) -> None:
        self._problems = tuple(value)
        self.status = _describe(self._loaded, self._problems)

    def score(self, features: Mapping[str, Any]) -> dict[str, float | None]:
        """model.* features for one event (empty when no model is loaded)."""
        if not self.available:
            return {}
        txn = self.transactions
        if txn is not None and features.get(_EVENT_TYPE, "payment") == "payment":
            raw, habit = txn.score_one(features)
            return self._answer(raw, habit, features)
        return self._unscored(features)

    def submit(self, features: Mapping[str, Any]) -> asyncio.Future[dict[str, float | None]] | None:
        """The future `score` of a payment, scored in one call together with the other payments
        that reach the models in this or the next few turns of the event loop (`fengkong.models.batch`):
        the same answer, for less of the worker's time; None when there is nothing to batch (no batcher,
        or not a payment): `score` then answers at once. Needs a running event loop."""
        batcher = self.batcher
        if batcher is None or features.get(_EVENT_TYPE, "payment") != "payment":
            return None
        return batcher.submit(features)

    async def score_async(self, features: Mapping[str, Any]) -> dict[str, float | None]:
        """`score`, batched as `submit` does when it can. Needs a running event loop."""
        future = self.submit(features)
        return self.score(features) if future is None else await future

    def _answer(self, raw: float, habit: float, features: Mapping[str, Any]) -> dict[str, float | None]:
        """The model.* features of a payment whose two models answered ``raw`` and ``habit``:
        plain floats (decision records and audit lines are JSON, and so is the fact
        durable_rules reads); the calibration's stored map after the ONNX graph's score, when
        there is one; and the merchant's nightly score."""
        anomaly = features.get(MERCHANT_ANOMALY_FEATURE)  # `_merchant_anomaly`, written out: a call per row
        merchant = float(anomaly) if isinstance(anomaly, (int, float)) and not isinstance(anomaly, bool) else None
        cal = self.calibration
        if cal is None:
            return {TXN_RISK_FEATURE: raw, HABIT_FEATURE: -habit, MERCHANT_FEATURE: merchant}
        risk, precision, share = cal.values(raw)
        return {TXN_RISK_FEATURE: risk, PRECISION_FEATURE: precision, SHARE_FEATURE: share,
                HABIT_FEATURE: -habit, MERCHANT_FEATURE: merchant}

    def _unscored(self, features: Mapping[str, Any]) -> dict[str, float | None]:
        """The model.* features of an event the transaction models do not score (a non-payment;
        or no transactions artifact): theirs None, the merchant's nightly score as stored."""
        out: dict[str, float | None] = {}
        if self.transactions is not None:
            out[TXN_RISK_FEATURE] = out[HABIT_FEATURE] = None
            if self.calibration is not None:
                out[PRECISION_FEATURE] = out[SHARE_FEATURE] = None
        out[MERCHANT_FEATURE] = _merchant_anomaly(features)
        return out

    def fuse(self, model_outputs: Mapping[str, Any], decision: Decided) -> float | None:
        """The fused risk (0-1) of one decided event: `fusion.RiskFusion` on the decision's
        rules-alone score and ``model.txn_risk``; None without a fusion or for non-payments."""
        fusion = self.fusion
        if fusion is None:
            return None
        risk = model_outputs.get(TXN_RISK_FEATURE)  # absent or None: no risk
        if risk is None:
            return None
        return fusion.score_one(risk, base_score(decision))  # score_one converts it with float()
