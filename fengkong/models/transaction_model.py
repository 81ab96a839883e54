"""The transaction models: ``model.txn_risk`` and ``model.habit_anomaly``.

* ``txn_risk``: a HistGradientBoostingClassifier trained on labelled payments
  (``is_fraud``: chargebacks, confirmed fraud) with the offline twin's features,
  i.e. for each payment exactly what the online store gave at that moment (point
  in time: the twin never reads an event after the row). Output: the fraud
  probability, 0-1.
* ``habit_anomaly``: an IsolationForest over the cardholder-habit features only
  (amount against the user's own amounts, hour against the user's hours, new
  device, new country, how many devices and IPs the card used): unsupervised, so
  it needs no labels and catches what the labels never showed. Output: 0-1
  (``-score_samples``; about 0.5 ordinary, towards 1 unlike the user's habits).

Both read features by their catalog names (`definitions.CATALOG`); booleans are
0/1, missing is NaN (HGB routes it; the forest gets the training median), the two
text features use the fixed vocabularies below. `Vectorizer.one` turns one event's
feature mapping into the row the ONNX models score; `Vectorizer.frame` does the same
for a whole offline-twin frame; a test holds them equal.
"""

from __future__ import annotations

import math
import struct
import sys
from dataclasses import dataclass
from types import NoneType
from operator import itemgetter
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from fengkong.events import CardType, Channel

#: Features of the supervised model (all in `definitions.CATALOG`).
TXN_FEATURES: tuple[str, ...] = (
    "event.amount", "event.hour", "event.is_night", "event.is_round_amount", "event.near_limit",
    "event.over_limit", "event.channel", "card.type",
    "card.count_10m", "card.count_1h", "card.count_24h", "card.sum_24h", "card.count_7d", "card.declines_1h",
    "card.merchant_count_30d", "card.distinct_devices_24h", "card.distinct_ips_24h",
    "card.distinct_merchants_24h", "card.age_days", "card.is_first_seen",
    "user.count_1h", "user.count_24h", "user.sum_24h", "user.count_30d", "user.is_new_device",
    "user.devices_seen_90d", "user.is_new_country", "user.countries_seen_90d", "user.age_days",
    "user.amount_n", "user.amount_zscore", "user.hour_share", "user.country_mismatch_usual",
    "device.count_1h", "device.distinct_cards_1h", "device.distinct_users_24h", "device.signups_24h",
    "ip.count_10m", "ip.distinct_cards_1h", "ip.distinct_users_24h", "ip.subnet_signups_24h",
    "ip.distinct_subnet_users_24h", "ip.is_hosting", "ip.is_tor", "ip.is_listed_proxy",
    "ip.country_mismatch_card",
    "merchant.volume_ratio_today", "merchant.volume_ratio_hour", "merchant.credit_share_24h",
    "merchant.round_share_24h", "merchant.near_limit_share_24h", "merchant.night_share_24h",
    "merchant.top_card_share_today", "merchant.refund_ratio_30d", "merchant.chargeback_ratio_30d",
    "merchant.withdrawal_ratio_7d", "merchant.age_days", "merchant.count_24h",
    # what a bank's export carries (customers, terminals, amounts, late fraud reports; issue 15):
    # the customer's amount against its own recent payments, the reports on the card and on the
    # terminal per window (a report arrives a week late, so a window of reports is earlier fraud)
    "card.sum_7d", "card.mean_amount_24h", "card.mean_amount_7d", "card.amount_to_mean_24h",
    "card.amount_to_mean_7d", "card.amount_recent_median", "card.amount_robust_z", "card.fraud_reports_7d",
    "card.fraud_reports_30d", "user.sum_30d", "user.amount_mean", "user.mean_amount_30d",
    "user.amount_to_mean_30d", "user.amount_robust_z", "merchant.count_7d", "merchant.count_30d",
    "merchant.fraud_reports_24h", "merchant.fraud_reports_7d", "merchant.chargeback_count_30d",
    "merchant.fraud_report_ratio_24h", "merchant.fraud_report_ratio_7d",
)
#: Features of the habit model: the cardholder against their own history.
HABIT_FEATURES: tuple[str, ...] = (
    "event.amount", "user.amount_zscore", "user.amount_n", "user.hour_share", "user.is_new_device",
    "user.is_new_country", "user.country_mismatch_usual", "card.distinct_devices_24h",
    "card.distinct_ips_24h", "card.age_days", "ip.country_mismatch_card",
)
#: Fixed codes of the text features (position = code; unknown = NaN).
VOCAB: dict[str, tuple[str, ...]] = {
    "event.channel": tuple(c.value for c in Channel),
    "card.type": tuple(c.value for c in CardType),
}


def _cell(value: Any, vocab: dict[str, int] | None) -> float:
    if value is None:
        return np.nan
    if vocab is not None:
        return float(vocab.get(value, np.nan)) if isinstance(value, str) else np.nan
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    return np.nan


#: Cell types `np.array(..., dtype=float64)` converts exactly as `_cell` does (None -> NaN, bool -> 0/1).
_PLAIN_TYPES = frozenset({float, int, bool, type(None)})
_NAN = math.nan
#: Combinations of cell types `Vectorizer.write_row` remembers (the store gives a handful).
_KINDS_KEPT = 256
#: What `Vectorizer.write_row` does to cells of one combination of types: the positions that
#: become NaN, and the text features' positions holding text, with their codes.
_Plan = tuple[tuple[int, ...], tuple[tuple[int, dict[str, int]], ...]]


@dataclass(frozen=True)
class Vectorizer:
    """Feature mapping -> float row, in ``names`` order."""

    names: tuple[str, ...]
    vocab: Mapping[str, tuple[str, ...]]

    def __post_init__(self) -> None:
        # the names as the interned strings the store's feature mappings use for keys, so that
        # each lookup finds its key by identity rather than comparing the text
        object.__setattr__(self, "names", tuple(map(sys.intern, self.names)))
        lookups = [({v: i for i, v in enumerate(self.vocab[n])} if n in self.vocab else None) for n in self.names]
        object.__setattr__(self, "_coded", tuple((j, lk) for j, lk in enumerate(lookups) if lk is not None))
        getter = itemgetter(*self.names) if len(self.names) > 1 else None
        object.__setattr__(self, "_getter", getter)
        object.__setattr__(self, "_packer", struct.Struct(f"@{len(self.names)}d"))
        object.__setattr__(self, "_plans", {})
        object.__setattr__(self, "_whole", self)  # `writer`'s vectorizers: the one they write part of

    def __getstate__(self) -> dict[str, Any]:
        """Pickled as its two fields: what `__post_init__` derives (a ``struct.Struct`` among them,
        which does not pickle) is derived again."""
        return {"names": self.names, "vocab": self.vocab}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            object.__setattr__(self, name, value)
        self.__post_init__()

    def cells(self, features: Mapping[str, Any]) -> list[Any]:
        """One event's row as a list that ``np.array(cells, dtype=np.float64)`` converts exactly as
        `_cell` would cell by cell: the text features as their codes, and, when every cell is a
        plain float, int, bool or None (what the store returns), the store's values as they are
        (numpy converts them, None as NaN); anything else (numpy scalars, stray strings) goes
        through `_cell`. A plain dict holding every name (the decision path's) is read with
        one ``itemgetter`` call."""
        getter = self._getter  # type: ignore[attr-defined]
        cells: list[Any] | None = None
        if getter is not None and type(features) is dict:
            try:
                cells = list(getter(features))
            except KeyError:
                pass
        if cells is None:
            cells = list(map(features.get, self.names))
        for j, codes in self._coded:  # type: ignore[attr-defined]
            v = cells[j]
            cells[j] = codes.get(v, np.nan) if isinstance(v, str) else np.nan
        if _PLAIN_TYPES.issuperset(map(type, cells)):
            return cells
        return [_cell(v, None) for v in cells]

    def pack_into(self, features: Mapping[str, Any], rows: np.ndarray, i: int) -> None:
        """Write one event's row into ``rows[i]`` (a C-ordered float64 array ``len(names)`` wide)
        exactly as ``rows[i] = self.cells(features)`` would, for less of the worker's time: `write_row`
        after checking ``rows`` (a ValueError for an array of another width or type)."""
        packer = self._packer  # type: ignore[attr-defined]
        if rows.shape[1] != packer.size >> 3 or rows.dtype != np.float64:
            raise ValueError(f"rows: {rows.dtype} rows {rows.shape[1]} wide, not float64 {len(self.names)} wide")
        self.write_row(features, rows, i)

    def write_row(self, features: Mapping[str, Any], rows: np.ndarray, i: int) -> None:
        """`pack_into` without its check of ``rows``, for a writer whose buffer is float64, C-ordered
        and this row's width by construction (`fengkong.models.batch` allocates its own).

        The store gives each feature the same few types event after event, so the cells' types
        are planned once per combination (`_plan_of`): when every cell is a plain float, int,
        bool or None, its Nones (and a text feature's cell that is not text) become NaN, the text
        features their codes, and one ``struct`` call packs the doubles (Python's int-to-float
        conversion, the one numpy uses), without numpy's per-cell discovery of a list. Any other
        cell (numpy scalars, stray strings) takes the `cells` path. A value numpy refuses (an int
        too large for a float) raises as ``rows[i] = ...`` does."""
        getter = self._getter  # type: ignore[attr-defined]
        values: Sequence[Any] | None = None
        if getter is not None and type(features) is dict:
            try:
                values = getter(features)
            except KeyError:
                pass
        if values is None:
            values = list(map(features.get, self.names))
        kinds = tuple(map(type, values))
        plan = self._plans.get(kinds)  # type: ignore[attr-defined]
        if plan is None:
            plan = self._plan_of(kinds)
        if plan is False:
            rows[i] = self._whole.cells(features)  # type: ignore[attr-defined]
            return
        nans, coded = plan
        row = list(values)
        for j in nans:
            row[j] = _NAN
        for j, codes in coded:
            row[j] = codes.get(row[j], _NAN)
        packer = self._packer  # type: ignore[attr-defined]
        try:
            packer.pack_into(rows, i * packer.size, *row)
        except struct.error:  # an int too large for a float, or i past the rows: numpy's error
            rows[i] = self._whole.cells(features)  # type: ignore[attr-defined]

    def writer(self, columns: Sequence[int]) -> Callable[[Mapping[str, Any], np.ndarray, int], None]:
        """A `write_row` that writes only ``columns`` of the row (positions in ``names``, e.g. the
        ones a graph reads: `fengkong.models.graph_reads`) as `write_row` would, and zeros in the
        others: it looks up, types and converts only those features. A row it cannot write so
        (the `cells` path) is written whole. `write_row` itself when ``columns`` are all of them."""
        chosen = sorted(set(columns))
        if chosen == list(range(len(self.names))):
            return self.write_row
        if chosen and not 0 <= chosen[0] <= chosen[-1] < len(self.names):
            raise ValueError(f"columns: positions in a row of {len(self.names)}, not {chosen}")
        names = tuple(self.names[j] for j in chosen)
        part = Vectorizer(names, {k: v for k, v in self.vocab.items() if k in names})
        held = set(chosen)
        # each column 8 bytes at its offset: a double where written, pad bytes (zeros) elsewhere
        packer = struct.Struct("@" + "".join("d" if j in held else "8x" for j in range(len(self.names))))
        object.__setattr__(part, "_packer", packer)
        object.__setattr__(part, "_whole", self)
        return part.write_row

    def _plan_of(self, kinds: tuple[type, ...]) -> _Plan | bool:
        """For cells of these types, what `write_row` does to them: (the positions that become NaN:
        the Nones, and the text features' cells that are not text; the text features' positions
        that are text, with their codes), or False when a cell other than a text feature's is not
        a plain float, int, bool or None (the row then goes through `cells`); remembered (up to
        `_KINDS_KEPT` combinations)."""
        coded = dict(self._coded)  # type: ignore[attr-defined]
        plain = all(t in _PLAIN_TYPES for j, t in enumerate(kinds) if j not in coded)
        plan: _Plan | bool = False
        if plain:
            plan = (tuple(j for j, t in enumerate(kinds)
                          if (t is NoneType and j not in coded) or (j in coded and not issubclass(t, str))),
                    tuple((j, codes) for j, codes in coded.items() if issubclass(kinds[j], str)))
        known = self._plans  # type: ignore[attr-defined]
        if len(known) >= _KINDS_KEPT:
            known.clear()
        known[kinds] = plan
        return plan

    def one(self, features: Mapping[str, Any]) -> np.ndarray:
        """One event's row (`cells` converted)."""
        return np.array(self.cells(features), dtype=np.float64)

    def frame(self, df: pd.DataFrame) -> np.ndarray:
        out = np.full((len(df), len(self.names)), np.nan)
        for j, name in enumerate(self.names):
            if name not in df.columns:
                continue
            col = df[name]
            if name in self.vocab:
                codes = {v: i for i, v in enumerate(self.vocab[name])}
                out[:, j] = col.map(lambda v: codes.get(v, np.nan) if isinstance(v, str) else np.nan).to_numpy(
                    dtype=np.float64)
            elif col.dtype == object:
                out[:, j] = col.map(lambda v: _cell(v, None)).to_numpy(dtype=np.float64)
            else:
                out[:, j] = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64)
        return out


def txn_vectorizer(names: Sequence[str] = TXN_FEATURES) -> Vectorizer:
    return Vectorizer(tuple(names), {k: v for k, v in VOCAB.items() if k in names})


def habit_vectorizer(names: Sequence[str] = HABIT_FEATURES) -> Vectorizer:
    return Vectorizer(tuple(names), {k: v for k, v in VOCAB.items() if k in names})


#: Why `usable_columns` leaves a feature out (recorded in the artifact and the training report).
EMPTY = "empty on every training row"
CONSTANT = "constant on every training row"


def usable_columns(X: np.ndarray, names: Sequence[str], *, missing_counts: bool) -> tuple[list[str], dict[str, str]]:
    """The feature names worth fitting on, and the others with the reason.

    A column empty (NaN) on every training row is left out: scikit-learn's binning fails
    on it ("window shape cannot be larger than input array shape"), as an export without
    IP or device data showed, and it carries nothing. So is a constant column: no model
    can split on it. ``missing_counts``: whether a column holding one value and some
    missing ones still informs (HistGradientBoosting branches on missing; the habit forest
    fills missing with the median, which makes such a column constant)."""
    keep: list[str] = []
    dropped: dict[str, str] = {}
    for j, name in enumerate(names):
        col = X[:, j]
        missing = np.isnan(col)
        present = col[~missing]
        if not len(present):
            dropped[name] = EMPTY
        elif np.all(present == present[0]) and not (missing_counts and missing.any()):
            dropped[name] = CONSTANT
        else:
            keep.append(name)
    return keep, dropped


def fit_txn_model(X: np.ndarray, y: np.ndarray, *, max_iter: int = 200, random_state: int = 0) -> Any:
    """HistGradientBoosting on ``X``. A column empty on every row of ``X`` (training drops
    those; an out-of-fold block of days can still lack a source) is fit as zeros: scikit-learn's
    binning fails on an all-missing column, and a constant one is never split on, so the
    model answers the same as without it, missing values included."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    empty = np.isnan(X).all(axis=0) if len(X) else np.zeros(X.shape[1], dtype=bool)
    if empty.any():
        X = X.copy()
        X[:, empty] = 0.0
    return HistGradientBoostingClassifier(max_iter=max_iter, learning_rate=0.1, max_leaf_nodes=31,
                                          l2_regularization=1.0, early_stopping=False,
                                          random_state=random_state).fit(X, y)


def fit_habit_model(X: np.ndarray, *, n_estimators: int = 100, random_state: int = 0) -> tuple[Any, np.ndarray]:
    """IsolationForest on habit rows; returns (forest, the medians that fill missing values)."""
    from sklearn.ensemble import IsolationForest

    medians = np.nanmedian(np.where(np.isnan(X).all(axis=0), 0.0, X), axis=0) if len(X) else np.zeros(X.shape[1])
    medians = np.nan_to_num(medians, nan=0.0)
    filled = np.where(np.isnan(X), medians, X)
    forest = IsolationForest(n_estimators=n_estimators, max_samples=256, random_state=random_state).fit(filled)
    return forest, medians


def fill(X: np.ndarray, medians: np.ndarray) -> np.ndarray:
    return np.where(np.isnan(X), medians, X)


def recall_at_rate(y: np.ndarray, score: np.ndarray, rate: float = 0.01) -> float:
    """Share of positives among the top ``rate`` of rows by score; ties at the cut
    count fractionally (the expected recall of a random order within the tie)."""
    y = np.asarray(y, dtype=bool)
    score = np.nan_to_num(np.asarray(score, dtype=np.float64), nan=-np.inf)
    if y.sum() == 0 or len(y) == 0:
        return float("nan")
    k = rate * len(y)
    order = np.sort(score)[::-1]
    cut = order[min(int(np.ceil(k)) - 1, len(order) - 1)] if k >= 1 else order[0]
    above = score > cut
    tie = score == cut
    room = k - above.sum()
    take = min(1.0, max(0.0, room / tie.sum())) if tie.sum() else 0.0
    return float((y[above].sum() + take * y[tie].sum()) / y.sum())
