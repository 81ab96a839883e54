"""The model path's cheaper forms give the very bits of the plain ones: `Vectorizer.pack_into`
writes what ``rows[i] = cells(features)`` writes, `BoundRows` answers what ``score_many`` does,
`Calibration.values` and `RiskFusion.score_one` compute what their min/max forms computed, and
``ModelRuntime.status`` and ``available`` follow ``loaded`` and ``problems``."""

from __future__ import annotations

import math
import pickle
from collections import defaultdict
from decimal import Decimal

import numpy as np
import pytest

from fengkong.models import transaction_model
from fengkong.models.batch import CAPACITY
from fengkong.models.calibration import _EPS as CAL_EPS
from fengkong.models.calibration import Calibration, interp_pair
from fengkong.models.fusion import _EPS as FUSION_EPS
from fengkong.models.fusion import RiskFusion
from fengkong.models.joint import JointModel
from fengkong.models.runtime import ModelRuntime
from fengkong.models.transaction_model import VOCAB, Vectorizer
from test_models_batch import _graph, _rows

NAMES = ("a", "b", "c", "event.channel", "card.type", "d", "e")


def _vectorizer() -> Vectorizer:
    return Vectorizer(NAMES, {k: VOCAB[k] for k in ("event.channel", "card.type")})


def _packed(vec: Vectorizer, features) -> np.ndarray:
    rows = np.full((3, len(vec.names)), 7.0)
    vec.pack_into(features, rows, 1)
    assert (rows[0] == 7.0).all() and (rows[2] == 7.0).all()  # only its own row is written
    written = np.full((3, len(vec.names)), 7.0)
    vec.write_row(features, written, 1)  # the unchecked writer the batcher uses writes the same bits
    assert written.tobytes() == rows.tobytes()
    return rows[1]


def _assigned(vec: Vectorizer, features) -> np.ndarray:
    rows = np.zeros((1, len(vec.names)))
    rows[0] = vec.cells(features)
    return rows[0]


def test_pack_into_writes_the_bits_the_cells_assignment_writes() -> None:
    vec = _vectorizer()
    full = {"a": 3, "b": True, "c": None, "event.channel": "pos", "card.type": "credit", "d": 2 ** 70, "e": -0.0,
            "other": "x"}
    cases = [
        full,
        {**full, "a": 0.1, "b": False, "c": 5, "d": None, "e": math.inf},  # other types at the same places
        {**full, "event.channel": "fax", "card.type": 1},  # an unknown code, a code that is not text
        {k: v for k, v in full.items() if k not in ("c", "e")},  # names missing: read with get
        defaultdict(lambda: 99.0, {k: v for k, v in full.items() if k != "c"}),  # [] is not get
        {**full, "a": np.int64(3), "b": np.bool_(True), "d": "7", "e": np.float32(0.5)},  # numpy scalars, text
        {**full, "a": Decimal("1.5")},  # a number numpy converts but `_cell` does not
        {**full, "a": 1.5, "event.type": "payment"},
    ]
    for features in cases * 2:  # the second time from the remembered combinations of types
        got, want = _packed(vec, features), _assigned(vec, features)
        assert got.tobytes() == want.tobytes(), features  # bit for bit: -0.0 and NaN too
    assert np.isnan(_packed(vec, cases[-2])[0])  # the Decimal went by `_cell`: missing
    assert _packed(vec, cases[1])[6] == math.inf and _packed(vec, cases[0])[5] == 2.0 ** 70


def test_pack_into_refuses_what_numpy_refuses_and_remembers_a_bounded_number_of_type_mixes(monkeypatch) -> None:
    vec = _vectorizer()
    huge = {"a": 10 ** 400, "b": 1, "c": 1, "event.channel": "pos", "card.type": "credit", "d": 1, "e": 1}
    with pytest.raises(OverflowError):
        _assigned(vec, huge)
    with pytest.raises(OverflowError):
        _packed(vec, huge)
    monkeypatch.setattr(transaction_model, "_KINDS_KEPT", 4)
    kinds = [int, float, bool, type(None)]
    for i in range(12):
        features = {n: [1, 1.5, True, None][(i + j) % 4] for j, n in enumerate(NAMES)}
        assert _packed(vec, features).tobytes() == _assigned(vec, features).tobytes()
    assert 0 < len(vec._plans) <= 4  # type: ignore[attr-defined]
    assert all(len(k) == len(NAMES) and set(k) <= set(kinds) | {str} for k in vec._plans)  # type: ignore[attr-defined]


def test_a_pickled_vectorizer_packs_as_the_original() -> None:
    vec = _vectorizer()
    features = {"a": 3, "b": True, "c": None, "event.channel": "pos", "card.type": "debit", "d": 0.25, "e": 7}
    copy = pickle.loads(pickle.dumps(vec))
    assert copy == vec and _packed(copy, features).tobytes() == _packed(vec, features).tobytes()


def test_pack_into_needs_a_float64_row_of_its_width() -> None:
    vec = _vectorizer()
    features = {n: 1.0 for n in NAMES}
    for rows in (np.zeros((1, len(NAMES) - 1)), np.zeros((1, len(NAMES) + 1)), np.zeros((1, len(NAMES)), np.float32)):
        with pytest.raises(ValueError, match="rows:"):
            vec.pack_into(features, rows, 0)
    with pytest.raises(IndexError):
        vec.pack_into(features, np.zeros((1, len(NAMES))), 1)


def test_bound_rows_answer_each_count_of_rows_as_score_many() -> None:
    joint = JointModel(_graph())
    X = _rows(CAPACITY, seed=11)
    buffer = np.zeros((CAPACITY, joint.width))
    score = joint.rows_scorer(buffer)
    seen: set[float] = set()
    for k in (1, 2, 7, CAPACITY, 7, 1):  # a count met again reuses its binding
        buffer[:k] = X[::-1][:k] if k % 2 else X[:k]
        risk, habit = score(k)
        want_risk, want_habit = joint.score_many(buffer[:k])
        assert np.array_equal(np.array(risk), want_risk, equal_nan=True) and len(risk) == k
        assert np.array_equal(np.array(habit), want_habit, equal_nan=True)
        seen.update(risk)
    assert len(seen) > 20  # varied rows: a stale row would show
    with pytest.raises(ValueError, match="k:"):
        score(CAPACITY + 1)
    with pytest.raises(ValueError, match="rows:"):
        joint.rows_scorer(np.zeros((4, joint.width), dtype=np.float32))


def _values_before(cal: Calibration, raw: float) -> tuple[float, float, float]:
    """`Calibration.values` as it was written with min/max and `interp_pair`."""
    q = min(max(float(raw), CAL_EPS), 1.0 - CAL_EPS)
    z = cal.a * math.log(q / (1.0 - q)) + cal.b
    risk = 1.0 / (1.0 + math.exp(-z)) if z >= -700 else 0.0
    at, of = interp_pair(risk, cal.curve_risk.tolist(), cal.curve_precision.tolist(), cal.curve_share.tolist())
    return risk, at, of


def _same(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return np.array(a).tobytes() == np.array(b).tobytes()


def test_calibration_values_are_the_min_max_form_bit_for_bit() -> None:
    rng = np.random.default_rng(5)
    cal = Calibration.from_scores(1.3, -0.4, rng.beta(0.5, 8, size=5000))
    one = Calibration(a=0.7, b=0.1, curve_risk=np.array([0.3]), curve_precision=np.array([0.9]),
                      curve_share=np.array([0.01]), max_precision=0.9)
    raws = np.concatenate([rng.random(3000), rng.beta(0.5, 8, size=2000), cal.curve_risk,
                           [0.0, 1.0, -0.0, 1e-12, 1 - 1e-12, CAL_EPS, 1 - CAL_EPS, -3.0, 4.0, math.nan]]).tolist()
    for c in (cal, one):
        for raw in raws:
            assert _same(c.values(raw), _values_before(c, raw)), raw
    assert len({cal.values(r)[1] for r in raws}) > 100


def _score_before(f: RiskFusion, txn_risk: float | None, rules_score: float) -> float:
    """`RiskFusion.score_one` as it was written with min/max."""
    r = math.nan if txn_risk is None else float(txn_risk)
    if r != r:
        lg = getattr(f, "fill_logit_", 0.0)
    else:
        q = min(max(r, FUSION_EPS), 1 - FUSION_EPS)
        lg = math.log(q / (1 - q))
    s = float(rules_score)
    s = 0.0 if s != s else min(max(s, -1.7976931348623157e308), 1.7976931348623157e308)
    a, b = (float(v) for v in f.coef_.tolist())
    z = lg * a + s / f.score_scale * b + f.intercept_
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def test_fusion_score_one_is_the_min_max_form_bit_for_bit_and_follows_a_new_fit() -> None:
    f = RiskFusion.from_params({"inputs": list(RiskFusion.INPUTS), "coef": [0.9, 1.7], "intercept": -2.5,
                                "fill_logit": -3.0, "score_scale": 100.0})
    rng = np.random.default_rng(2)
    risks = [None, math.nan, 0.0, 1.0, -0.0, 1e-9, 1 - 1e-9, FUSION_EPS, -1.0, 2.0, *rng.random(500).tolist()]
    scores = [0, 0.0, 35, -20.0, 1e300, math.inf, -math.inf, math.nan, *rng.integers(-50, 300, 50).tolist()]
    for r in risks:
        for s in scores:
            got, want = f.score_one(r, s), _score_before(f, r, s)
            assert got == want or (got != got and want != want), (r, s)
    before = f.score_one(0.4, 50)
    f.coef_ = np.array([0.1, 0.2])  # a new fit: its weights, not the remembered ones
    assert f.score_one(0.4, 50) == _score_before(f, 0.4, 50) != before


def test_status_follows_what_is_loaded_and_refused() -> None:
    rt = ModelRuntime()
    assert rt.status == "rules-only: no model artifacts loaded" and not rt.available
    given = {"transactions": "v1"}
    rt.loaded = given
    assert rt.status == "transactions v1" and rt.available
    given["transactions"] = "v2"  # the runtime keeps its own copy
    assert rt.loaded == {"transactions": "v1"} and rt.status == "transactions v1"
    with pytest.raises(TypeError):  # no change in place that status would not follow
        rt.loaded["transactions"] = "v2"  # type: ignore[index]
    with pytest.raises(AttributeError):
        rt.problems.append("merchants: broken")  # type: ignore[attr-defined]
    rt.loaded = {"transactions": "v2"}
    assert rt.status == "transactions v2"
    rt.problems = ["merchants: broken"]
    assert rt.status == "transactions v2; refused: merchants: broken" and rt.problems == ("merchants: broken",)
    rt.loaded = {}
    assert rt.status == "rules-only: no model artifacts loaded; refused: merchants: broken" and not rt.available


def test_submit_leaves_what_it_does_not_batch_to_score() -> None:
    rt = ModelRuntime()
    rt.loaded = {"transactions": "test"}
    assert rt.submit({"event.type": "payment"}) is None  # no batcher
    assert rt.score({"event.type": "login", "merchant.anomaly": 0.25}) == {"model.merchant_anomaly": 0.25}


def test_base_score_remembers_a_bounded_number_of_names_and_answers_as_startswith(monkeypatch) -> None:
    from types import SimpleNamespace as NS

    from fengkong.models import fusion

    monkeypatch.setattr(fusion, "_IS_MODEL", {})
    monkeypatch.setattr(fusion, "_NAMES_KEPT", 3)
    names = ["card.count_1h", "model.txn_risk", "ip.is_tor", "model.", "modelx.a", "Model.a", "user.model.x"]
    for _ in range(3):  # the names met again, from the remembered answers and after forgetting them
        for i, name in enumerate(names):
            reasons = [NS(score=1.5, values={"event.amount": 1}), NS(score=2 ** i, values={name: 0.1, "a.b": 2})]
            want = 1.5 + (0 if name.startswith("model.") else 2 ** i)
            assert fusion.base_score(NS(reasons=reasons)) == want, name
            assert 0 < len(fusion._IS_MODEL) <= 3


def test_the_names_and_the_model_keys_are_the_interned_strings_the_store_and_rules_use() -> None:
    import sys

    from fengkong import pipeline
    from fengkong.models import calibration, runtime

    built = "".join(["card.", "count_1h"])  # a string equal to a name, but another object
    assert built is not sys.intern("card.count_1h")  # a fresh copy: the vectorizer must swap it
    vec = Vectorizer(("event.amount", built), {})
    assert vec.names == ("event.amount", "card.count_1h") and vec.names[1] is sys.intern("card.count_1h")
    assert pickle.loads(pickle.dumps(vec)).names[1] is sys.intern("card.count_1h")
    for key in (runtime.TXN_RISK_FEATURE, runtime.HABIT_FEATURE, runtime.MERCHANT_FEATURE,
                runtime.MERCHANT_ANOMALY_FEATURE, calibration.PRECISION_FEATURE, calibration.SHARE_FEATURE,
                pipeline.RISK_FEATURE):
        assert key is sys.intern("".join(key))  # the same object as any interned copy of its text
