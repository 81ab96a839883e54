"""`calibration.interp_one` is ``np.interp`` for one value, to the last bit, and
`Calibration.features` gives what the numpy curves give (`precision_at`, `share_at`)."""

from __future__ import annotations

import math

import numpy as np

from fengkong.models.calibration import Calibration, interp_one, interp_pair


def _same(a: float, b: float) -> bool:
    return (a == b and math.copysign(1, a) == math.copysign(1, b)) or (a != a and b != b)


def test_interp_one_is_np_interp_bit_for_bit() -> None:
    rng = np.random.default_rng(7)
    checked = 0
    for n in (1, 2, 3, 17, 200):
        xs = np.sort(rng.choice(rng.random(5000), size=n, replace=False))
        ys = rng.random(n) * rng.choice([1e-9, 1.0, 1e9])
        if n > 3:
            ys[3] = ys[2]  # a flat stretch
        points = np.concatenate([xs, rng.random(2000), (xs[:-1] + xs[1:]) / 2 if n > 1 else xs,
                                 np.nextafter(xs, 0), np.nextafter(xs, 1), [-1.0, 0.0, 1.0, 2.0, math.nan]])
        xl, yl = xs.tolist(), ys.tolist()
        zs = ys[::-1].copy()
        zl = zs.tolist()
        for x in points.tolist():
            assert _same(interp_one(x, xl, yl), float(np.interp(x, xs, ys))), (n, x)
            pair = interp_pair(x, xl, yl, zl)  # one search, both curves
            assert _same(pair[0], float(np.interp(x, xs, ys))) and _same(pair[1], float(np.interp(x, xs, zs))), (n, x)
            checked += 1
    assert checked > 10_000


def test_calibration_values_match_the_numpy_curves() -> None:
    rng = np.random.default_rng(3)
    cal = Calibration.from_scores(1.3, -0.4, rng.beta(0.5, 8, size=5000))
    for raw in np.concatenate([rng.random(3000), [0.0, 1.0, 1e-12, 1 - 1e-12]]).tolist():
        risk, precision, share = cal.values(raw)
        assert precision == float(cal.precision_at(risk))
        assert share == float(cal.share_at(risk))
