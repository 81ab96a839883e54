"""Scoring the payments of a few event-loop turns in one ONNX Runtime call (`fengkong.models.batch`):
every payment gets exactly the floats it gets alone, from the batcher, from the runtime and
through the service."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import httpx
import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier, IsolationForest

from api_fixtures import DECIDE_KEY, Served, payment, settings
from fengkong import pipeline
from fengkong.api.service.decisions import _GuardedModels
from fengkong.engine import load_ruleset
from fengkong.models import batch as batch_module
from fengkong.models.batch import CAPACITY, TickBatcher, alike
from fengkong.models.joint import JointModel
from fengkong.models.onnx_model import OnnxModel
from fengkong.models.runtime import ModelRuntime
from fengkong.training.joint_export import joint_graph
from fengkong.training.onnx_export import export, hgb_to_onnx, iforest_to_onnx

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "rules"
WHERE = dict(width=4, risk_cols=[0, 1, 2], habit_cols=[3, 1])


class CountingJoint(JointModel):
    """A real joint session that records the number of rows of each call of a batch."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.calls: list[int] = []

    def rows_scorer(self, rows):
        score = super().rows_scorer(rows)

        def counted(k):
            self.calls.append(k)
            return score(k)

        return counted


def _rows(n: int = 300, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    X[rng.uniform(size=n) < 0.2, 1] = np.nan
    X[rng.uniform(size=n) < 0.1, 3] = np.nan
    return X


def _graph(kind: str = "hgb") -> bytes:
    """A joint graph of a txn_risk of ``kind`` on x0..x2 and a habit forest on (x3, x1)."""
    X = _rows(400)
    y = (X[:, 0] + np.nan_to_num(X[:, 1]) + np.random.default_rng(1).normal(scale=0.5, size=400)) > 1
    H = X[:, [3, 1]]
    medians = np.nanmedian(H, axis=0)
    forest = IsolationForest(n_estimators=20, random_state=0).fit(np.where(np.isnan(H), medians, H))
    habit = OnnxModel(iforest_to_onnx(forest), output="score", column=0, n_features=2)
    if kind == "hgb":
        hgb = HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(X[:, :3], y)
        risk: OnnxModel | object = OnnxModel(hgb_to_onnx(hgb), output="probability", column=0, n_features=3)
    else:
        from fengkong.training.candidates import fit_kind

        risk = export(kind, fit_kind(kind, X[:, :3], y, max_iter=20), X[:, :3])
    return joint_graph(risk, habit, medians=medians, **WHERE)  # type: ignore[arg-type]


def _alone(joint: JointModel, X: np.ndarray) -> list[tuple[float, float]]:
    return [joint.score_one(x) for x in X]


def _same(got: list[tuple[float, float]], expected: list[tuple[float, float]]) -> bool:
    """Equal bit for bit (NaN as NaN)."""
    return np.array_equal(np.array(got), np.array(expected), equal_nan=True)


def test_the_payments_of_one_turn_are_one_call_with_the_answers_each_gets_alone() -> None:
    joint = CountingJoint(_graph())
    X = _rows(40)
    expected = _alone(joint, X)
    batcher = TickBatcher(joint, lambda r, h, _: (r, h))

    async def one(x: np.ndarray) -> tuple[float, float]:
        return await batcher.submit([None if math.isnan(v) else float(v) for v in x])  # cells, as the store's

    async def main() -> list[tuple[float, float]]:
        return list(await asyncio.gather(*(one(x) for x in X)))

    got = asyncio.run(main())
    assert joint.calls == [40]
    assert _same(got, expected)
    assert len(set(expected)) > 20  # varied rows: answers handed to the wrong payment would show


def test_a_turn_of_more_rows_than_a_call_takes_is_several_calls_and_later_turns_are_their_own() -> None:
    joint = CountingJoint(_graph())
    X = _rows(2 * CAPACITY + 22)
    expected = _alone(joint, X)
    batcher = TickBatcher(joint, lambda r, h, _: (r, h))

    async def main() -> tuple[list, list]:
        futures = [batcher.submit(x) for x in X]  # all in one turn
        first = [await f for f in futures]
        later = [await batcher.submit(x) for x in X[:3]]  # one a turn: the bound single-row call
        return first, later

    first, later = asyncio.run(main())
    assert joint.calls == [CAPACITY, CAPACITY, 22, 1, 1, 1]
    assert _same(first, expected) and _same(later, expected[:3])


@pytest.mark.parametrize("turns", [0, 1, 2, 4])
def test_a_batch_waits_its_turns_for_the_rows_of_later_turns_and_no_longer(turns: int) -> None:
    """The rows submitted in the ``turns`` loop turns after a batch's first join its call (the
    decisions resumed by the next replies); a row submitted after the call is the next batch's.
    With one turn less of waiting the last row of the wait would be a call of its own."""
    joint = CountingJoint(_graph())
    X = _rows(turns + 2)
    expected = _alone(joint, X)
    batcher = TickBatcher(joint, lambda r, h, _: (r, h), turns=turns)

    async def main() -> list:
        futures = []
        for x in X[:turns + 1]:  # one row a turn, every one within the first's wait
            futures.append(batcher.submit(x))
            await asyncio.sleep(0)  # one loop turn
        got = [await f for f in futures]
        return got + [await batcher.submit(X[turns + 1])]  # after the call: a batch of its own

    got = asyncio.run(main())
    assert joint.calls == [turns + 1, 1]
    assert _same(got, expected[:turns + 2])


def test_the_default_wait_is_two_turns_and_a_negative_one_is_refused() -> None:
    joint = CountingJoint(_graph())
    assert TickBatcher(joint, lambda r, h, _: (r, h)).turns == batch_module.WAIT_TURNS == 2
    with pytest.raises(ValueError, match="turns"):
        TickBatcher(joint, lambda r, h, _: (r, h), turns=-1)


def test_a_loop_that_ends_before_its_call_leaves_nothing_behind_for_the_next() -> None:
    joint = CountingJoint(_graph())
    X = _rows(3)
    expected = _alone(joint, X)
    batcher = TickBatcher(joint, lambda r, h, _: (r, h))

    loop = asyncio.new_event_loop()

    async def abandoned() -> None:
        batcher.submit(X[0])
        loop.stop()  # the loop stops, and closes, before the batch's call runs

    async def main() -> list:
        return [await asyncio.wait_for(batcher.submit(x), 5) for x in X[1:]]

    loop.run_until_complete(abandoned())
    loop.close()
    assert _same(asyncio.run(main()), expected[1:])
    assert joint.calls == [1, 1]  # one row a turn, each its own call


def test_a_row_that_does_not_convert_fails_alone_and_a_cancelled_one_is_skipped() -> None:
    joint = CountingJoint(_graph())
    X = _rows(6)
    expected = _alone(joint, X)
    batcher = TickBatcher(joint, lambda r, h, _: (r, h))

    async def main() -> list:
        futures = [batcher.submit(X[0]), batcher.submit(X[1])]
        with pytest.raises(ValueError):
            batcher.submit([0.1, "not a number", 0.3, 0.4])
        futures += [batcher.submit(x) for x in X[2:]]
        futures[3].cancel()
        await asyncio.wait([f for f in futures if not f.cancelled()])
        return [f.result() if not f.cancelled() else None for f in futures]

    got = asyncio.run(main())
    assert joint.calls == [6]
    assert got[3] is None
    assert _same([g for g in got if g is not None], [e for i, e in enumerate(expected) if i != 3])


def test_an_error_of_the_call_reaches_every_payment_of_the_turn() -> None:
    class Failing(CountingJoint):
        def rows_scorer(self, rows):
            def failing(k):
                raise RuntimeError("session failed")

            return failing

    batcher = TickBatcher(Failing(_graph()), lambda r, h, _: (r, h))

    async def main() -> list:
        return await asyncio.gather(*(batcher.submit(x) for x in _rows(3)), return_exceptions=True)

    got = asyncio.run(main())
    assert [type(g) for g in got] == [RuntimeError] * 3


@pytest.mark.parametrize("kind", ["hgb", "forest", "logreg"])
def test_every_txn_risk_kind_answers_a_batch_as_one_row_at_a_time(kind: str) -> None:
    joint = JointModel(_graph(kind))
    X = _rows(300, seed=3)
    assert alike(joint, X)
    risk, habit = joint.score_many(X[:37])
    assert _same(list(zip(risk.tolist(), habit.tolist())), _alone(joint, X[:37]))


def test_a_graph_whose_batch_answers_differ_is_not_batched() -> None:
    class Drifting(JointModel):
        def rows_scorer(self, rows):
            score = super().rows_scorer(rows)

            def drifting(k):
                risk, habit = score(k)
                return (np.nextafter(risk, 2.0) if k > 1 else risk), habit

            return drifting

    assert not alike(Drifting(_graph()), _rows(10))


# -- the runtime and the service -----------------------------------------------------------------
@pytest.fixture(scope="module")
def artifacts_root(tmp_path_factory):
    from fengkong.simulation import SimConfig, run
    from fengkong.training.train import train_transactions, transaction_frame

    sim = run(SimConfig(seed=5, days=14, shoppers=800, merchants=40))
    feats = transaction_frame(sim.events, profiles=sim.merchants, lists_dir=RULES / "lists")
    root = tmp_path_factory.mktemp("artifacts")
    train_transactions(feats, root=root, max_iter=20, habit_trees=20, rules_dir=RULES, kinds=("hgb",))
    rows = feats.tail(200)
    return root, [{k: (None if (isinstance(v, float) and math.isnan(v)) else (v.item() if isinstance(v, np.generic)
                                                                                 else v))
                   for k, v in row.items()} for row in rows.to_dict("records")]


def test_score_async_answers_what_score_does_and_guarded_models_hand_it_to_decide_on(artifacts_root) -> None:
    root, payments = artifacts_root
    rt = ModelRuntime.load(root)
    assert rt.transactions is not None and rt.batcher is not None, rt.status
    assert rt.calibration is not None and rt.fusion is not None
    events = [{**p, "event.type": "payment"} for p in payments] + [{**payments[0], "event.type": "login"}]
    expected = [rt.score(e) for e in events]
    rules = load_ruleset(RULES)

    async def main() -> tuple[list, list]:
        got = await asyncio.gather(*(rt.score_async(e) for e in events))
        guarded = [_GuardedModels(rt) for _ in events]
        await asyncio.gather(*(g.prepare(e) for g, e in zip(guarded, events)))
        return list(got), [pipeline.decide_on(e, rules=rules, models=g) for g, e in zip(guarded, events)]

    got, decided = asyncio.run(main())
    assert got == expected
    assert got[-1]["model.txn_risk"] is None and len({g["model.txn_risk"] for g in got[:-1]}) > 20
    alone = [pipeline.decide_on(e, rules=rules, models=_GuardedModels(rt)) for e in events]
    assert [(d.decision, d.score, f) for d, f in decided] == [(d.decision, d.score, f) for d, f in alone]


def test_concurrent_decisions_through_the_service_are_batched_and_scored_as_alone(redis_server, artifacts_root,
                                                                                  monkeypatch) -> None:
    """The service's decisions await their scores (`_GuardedModels.prepare`): the ones that reach
    the models in one turn share a call, and each gets what `ModelRuntime.score` gives it alone."""
    root, _ = artifacts_root
    sizes: list[int] = []
    seen: list[tuple] = []
    score, decide_on = batch_module.TickBatcher._score, pipeline.decide_on

    def counted(self, batch):
        sizes.append(len(batch.waiting))
        return score(self, batch)

    def capture(store_features, **kw):  # the service calls it through the module
        seen.append((kw["models"].prepared, kw["models"].runtime.score(dict(store_features))))
        return decide_on(store_features, **kw)

    monkeypatch.setattr(batch_module.TickBatcher, "_score", counted)
    monkeypatch.setattr(pipeline, "decide_on", capture)
    with Served(settings(redis_server.url, "tbatch", artifacts_dir=root)) as api:
        rt = api.runtime.models
        assert rt.transactions is not None and rt.batcher is not None, rt.status

        async def main() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=api.url, headers={"x-api-key": DECIDE_KEY}, timeout=10) as client:
                events = [payment(amount=f"{100 + 37 * i}.00") for i in range(24)]
                return list(await asyncio.gather(*(client.post("/v1/decisions", json=e) for e in events)))

        answers = asyncio.run(main())
    assert all(a.status_code == 200 and not a.json()["degraded"] for a in answers), [a.text for a in answers]
    assert len(seen) == 24 and max(sizes) > 1, sizes  # some decisions reached the models in the same turn
    assert all(prepared == alone for prepared, alone in seen)
    assert len({prepared["model.txn_risk"] for prepared, _ in seen}) > 1
