"""The transaction model's calibration: a stored monotone map from its raw score to a probability.

The ONNX graph gives the gradient-boosting model's raw probability (checked equal to
scikit-learn at save and load); this map is applied after it, in numpy, so the graph
still equals what it was checked against. Training fits it on days later than the
ones the scored model learned from (`fengkong.training.calibration`) and stores it in
the artifact's ``params["calibration"]`` with its reliability table, so serving needs
no scikit-learn:

* ``model.txn_risk`` = ``expit(a * logit(raw) + b)`` (Platt scaling, sklearn's
  ``method="sigmoid"``): a strictly increasing map, so the model's ranking is unchanged
  and a handful of reported frauds cannot bend it into steps as isotonic regression would;
* ``model.txn_precision``: the expected precision of flagging every payment that scores
  at least this one: the mean calibrated risk of the calibration days' payments at or
  above this payment's risk. A rule ``model.txn_precision >= 0.8`` keeps meaning "the
  slice of traffic the model is 80% sure of" when the model is retrained;
* ``model.txn_share``: the share of the calibration days' payments scoring at least this
  one (``model.txn_share <= 0.01``: the riskiest 1% of traffic).

Both curves are step-free interpolations over at most `CURVE_POINTS` points of the
calibration days. `Calibration.max_precision` is the highest precision the artifact can
promise (over its top `MIN_SLICE` payments at least); `fengkong.pipeline.threshold_problems`
refuses a rule set that asks for more.
"""

from __future__ import annotations

import bisect
import math
import sys
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

#: Points kept of the precision / share curves.
CURVE_POINTS = 200
#: The fewest calibration-day payments a precision is stated over (the top slice).
MIN_SLICE = 20
_EPS = 1e-9
_ONE_LESS = 1.0 - _EPS
#: The ``model.*`` features the calibration adds (declared in features/definitions.py); interned,
#: as the feature store's keys and the rules' names are.
PRECISION_FEATURE = sys.intern("model.txn_precision")
SHARE_FEATURE = sys.intern("model.txn_share")


def interp_one(x: float, xs: list[float], ys: list[float]) -> float:
    """``float(np.interp(x, xs, ys))`` for one float and increasing ``xs``, in numpy's own
    arithmetic (its ``arr_interp``: the same search, the same slope, the same two operations,
    so the same double); tests/test_models_calibration_interp.py holds the two equal."""
    return interp_pair(x, xs, ys, ys)[0]


def interp_pair(x: float, xs: list[float], ys: list[float], zs: list[float]) -> tuple[float, float]:
    """``(interp_one(x, xs, ys), interp_one(x, xs, zs))`` with one search of ``xs``: the
    precision and share curves share their risks."""
    if len(xs) == 1:  # numpy's one-point case: that point's value, whatever x (NaN too)
        return ys[0], zs[0]
    if x != x:
        return x, x
    j = bisect.bisect_right(xs, x) - 1
    if j < 0:
        return ys[0], zs[0]
    if j >= len(xs) - 1:
        return ys[-1], zs[-1]
    if xs[j] == x:
        return ys[j], zs[j]
    return _between(x, xs, ys, j), _between(x, xs, zs, j)


def _between(x: float, xs: list[float], ys: list[float], j: int) -> float:
    """numpy's value for ``xs[j] < x < xs[j + 1]``."""
    slope = (ys[j + 1] - ys[j]) / (xs[j + 1] - xs[j])
    out = slope * (x - xs[j]) + ys[j]
    if out != out:  # NaN one way: numpy tries the other end
        out = slope * (x - xs[j + 1]) + ys[j + 1]
        if out != out and ys[j] == ys[j + 1]:
            out = ys[j]
    return out


def logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS)
    return np.log(q / (1 - q))


@dataclass(frozen=True)
class Calibration:
    """The stored map and curves (see the module docstring); ``curve_risk`` ascending."""

    a: float
    b: float
    curve_risk: np.ndarray
    curve_precision: np.ndarray
    curve_share: np.ndarray
    max_precision: float

    def apply(self, raw: np.ndarray | float) -> np.ndarray:
        """Calibrated probabilities of raw model scores."""
        z = self.a * logit(np.asarray(raw, dtype=np.float64)) + self.b
        return np.asarray(1.0 / (1.0 + np.exp(-z)))

    def precision_at(self, risk: np.ndarray | float) -> np.ndarray:
        """Expected precision of flagging every payment at or above ``risk`` (calibrated)."""
        return np.asarray(np.interp(risk, self.curve_risk, self.curve_precision))

    def share_at(self, risk: np.ndarray | float) -> np.ndarray:
        """Share of traffic at or above ``risk`` (calibrated), on the calibration days."""
        return np.asarray(np.interp(risk, self.curve_risk, self.curve_share))

    def __post_init__(self) -> None:
        # the curves as Python floats, for `values` (one payment at a time), with each segment's
        # slope on both curves: `_between`'s first division, made once per artifact rather than per
        # payment (numpy's float64 subtraction and division round as Python's do: the same doubles)
        with np.errstate(divide="ignore", invalid="ignore"):
            span = np.diff(self.curve_risk)
            slopes = (np.diff(self.curve_precision) / span).tolist(), (np.diff(self.curve_share) / span).tolist()
        object.__setattr__(self, "_curves", (self.curve_risk.tolist(), self.curve_precision.tolist(),
                                             self.curve_share.tolist(), *slopes))

    def values(self, raw: float) -> tuple[float, float, float]:
        """The calibrated risk, precision and share of one raw score (``model.txn_risk``,
        ``model.txn_precision``, ``model.txn_share``): the map and the curves in scalar
        arithmetic, as `interp_pair` computes ``np.interp`` on both curves (numpy's per-call
        cost is most of the work for one value). Written out in one function, comparisons for
        ``min``/``max``: it runs for every payment; tests hold it to `interp_pair` and numpy."""
        q = float(raw)
        if q < _EPS:  # min(max(q, _EPS), 1 - _EPS), NaN staying NaN
            q = _EPS
        elif q > _ONE_LESS:
            q = _ONE_LESS
        z = self.a * math.log(q / (1.0 - q)) + self.b
        risk = 1.0 / (1.0 + math.exp(-z)) if z >= -700 else 0.0
        xs, ys, zs, y_slope, z_slope = self._curves  # type: ignore[attr-defined]
        last = len(xs) - 1
        if last == 0 or risk != risk:  # one point, or NaN: `interp_pair`'s answers
            at, of = interp_pair(risk, xs, ys, zs)
            return risk, at, of
        j = bisect.bisect_right(xs, risk) - 1
        if j < 0:
            return risk, ys[0], zs[0]
        if j >= last:
            return risk, ys[-1], zs[-1]
        x0 = xs[j]
        if x0 == risk:
            return risk, ys[j], zs[j]
        # `_between` on both curves, with its operations in its order (the slopes made at load)
        dx = risk - x0
        at = y_slope[j] * dx + ys[j]
        of = z_slope[j] * dx + zs[j]
        if at != at or of != of:  # NaN one way: numpy tries the other end
            at, of = _between(risk, xs, ys, j), _between(risk, xs, zs, j)
        return risk, at, of

    @classmethod
    def from_scores(cls, a: float, b: float, raw: np.ndarray) -> "Calibration":
        """The curves of the calibration days' raw scores under the map (a, b)."""
        risk = np.sort(np.asarray(1.0 / (1.0 + np.exp(-(a * logit(raw) + b)))))[::-1]  # descending
        n = len(risk)
        if n == 0:
            raise ValueError("calibration: no calibration-day payments to state precisions over")
        mean_above = np.cumsum(risk) / np.arange(1, n + 1)  # mean risk of the top k
        share = np.arange(1, n + 1) / n
        keep = np.unique(np.linspace(0, n - 1, min(CURVE_POINTS, n)).round().astype(int))
        # ascending risk for np.interp; the same risk may repeat: keep its largest slice
        r, p, s = risk[keep][::-1], mean_above[keep][::-1], share[keep][::-1]
        r, first = np.unique(r, return_index=True)
        top = min(MIN_SLICE, n) - 1
        return cls(float(a), float(b), r, p[first], s[first], float(mean_above[top]))

    def to_params(self) -> dict[str, Any]:
        return {"method": "sigmoid", "map": "expit(a * logit(raw) + b)", "a": self.a, "b": self.b,
                "curve": {"risk": self.curve_risk.tolist(), "precision": self.curve_precision.tolist(),
                          "share": self.curve_share.tolist()},
                "max_precision": self.max_precision}

    @classmethod
    def from_params(cls, p: Mapping[str, Any]) -> "Calibration":
        if p.get("method") != "sigmoid":
            raise ValueError(f"calibration: unknown method {p.get('method')!r} (this version reads 'sigmoid')")
        c = p["curve"]
        risk = np.asarray(c["risk"], dtype=np.float64)
        if len(risk) == 0 or np.any(np.diff(risk) <= 0):
            raise ValueError("calibration: the curve's risks must be increasing")
        return cls(float(p["a"]), float(p["b"]), risk, np.asarray(c["precision"], dtype=np.float64),
                   np.asarray(c["share"], dtype=np.float64), float(p["max_precision"]))


def reliability(risk: np.ndarray, y: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    """The reliability table: payments binned by calibrated risk (equal-count bins), each bin's
    mean predicted risk, observed fraud rate and count."""
    risk = np.asarray(risk, dtype=np.float64)
    y = np.asarray(y, dtype=bool)
    order = np.argsort(risk, kind="stable")
    rows = []
    for part in np.array_split(order, min(bins, max(1, len(order)))):
        if len(part):
            rows.append({"mean_predicted": float(risk[part].mean()), "observed": float(y[part].mean()),
                         "count": int(len(part)), "low": float(risk[part].min()), "high": float(risk[part].max())})
    return rows


__all__ = ["Calibration", "PRECISION_FEATURE", "SHARE_FEATURE", "logit", "reliability"]
