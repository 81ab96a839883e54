"""What happens after payments: issuer declines, refunds (partial and repeated),
chargebacks and fraud reports days later, daily settlements and merchant withdrawals."""

from __future__ import annotations

import numpy as np

from fengkong.simulation import constants as K
from fengkong.simulation.blocks import Block, block, concat
from fengkong.simulation.population import DAY, HOUR, World, stage_rng


def _carry(p: Block, idx: np.ndarray, etype: str, ts: np.ndarray, amount: np.ndarray | None = None,
           keep_device: bool = False) -> Block:
    """An outcome row about payment rows ``idx``: same merchant, user, card, channel, labels."""
    n = len(idx)
    return block(
        n, ts=ts, etype=K.ET[etype], merchant=p["merchant"][idx], user=p["user"][idx],
        amount=p["amount"][idx] if amount is None else amount, channel=p["channel"][idx], card=p["card"][idx],
        ip=p["ip"][idx] if keep_device else -1, device=p["device"][idx] if keep_device else -1,
        refers=idx, fraud=p["fraud"][idx], scenario=p["scenario"][idx],
    )


def outcomes(world: World, p: Block) -> Block:
    """Every outcome event of the payments ``p`` (whose row numbers the ``refers`` column uses)."""
    rng = stage_rng(world.config.seed, "outcomes")
    n = len(p["ts"])
    parts: list[Block] = []
    # declines: the issuer answers within seconds, same card, merchant and amount
    dec = np.flatnonzero(p["declined"])
    parts.append(_carry(p, dec, "decline", p["ts"][dec] + rng.integers(1, 5, len(dec)), keep_device=True))
    captured = ~p["declined"]
    # refunds: full, or partial and sometimes repeated
    ref = np.flatnonzero(captured & (rng.random(n) < p["p_refund"]))
    if len(ref):
        full = rng.random(len(ref)) < 0.55
        k = np.where(full, 1, rng.choice([1, 2, 3], size=len(ref), p=[0.6, 0.3, 0.1]))
        total = np.where(full, 1.0, np.where(rng.random(len(ref)) < 0.3, 1.0, rng.uniform(0.1, 0.9, len(ref))))
        rows = np.repeat(ref, k)
        w = rng.uniform(0.2, 1.0, len(rows))
        first = np.concatenate([[0], np.cumsum(k)[:-1]])
        wsum = np.add.reduceat(w, first)
        frac = w / np.repeat(wsum, k) * np.repeat(total, k)
        amt = np.floor(p["amount"][rows] * frac).astype(np.int64)
        # the last refund of a full refund takes the remainder, so the parts add up exactly
        last = np.cumsum(k) - 1
        sums = np.add.reduceat(amt, first)
        fullsum = total >= 1.0
        amt[last[fullsum]] += p["amount"][ref[fullsum]] - sums[fullsum]
        gaps = np.where(np.isin(np.arange(len(rows)), first),
                        rng.lognormal(np.log(1.5 * DAY), 1.0, len(rows)),
                        rng.uniform(HOUR, 5 * DAY, len(rows)))
        cum = np.cumsum(gaps)
        cum -= np.repeat(cum[first] - gaps[first], k)
        ts = p["ts"][rows] + np.maximum(cum, 600).astype(np.int64)
        ok = amt > 0
        refunds = _carry(p, rows[ok], "refund", ts[ok], amount=amt[ok])
        parts.append(refunds)
    else:
        refunds = block(0)
    # disputes: chargebacks and fraud reports, 1 to 60 days later
    dis = np.flatnonzero(captured & (rng.random(n) < p["p_dispute"]))
    if len(dis):
        lo, hi = p["delay_lo"][dis], p["delay_hi"][dis]
        delay = lo + (hi - lo) * rng.beta(1.3, 2.5, len(dis))
        ts = p["ts"][dis] + (delay * DAY).astype(np.int64)
        report = rng.random(len(dis)) < p["p_report"][dis]
        cb = _carry(p, dis[~report], "chargeback", ts[~report])
        friendly = ~cb["fraud"]
        cb["note"][friendly] = K.NOTE["friendly_fraud"]
        parts.append(cb)
        parts.append(_carry(p, dis[report], "fraud_report", ts[report]))
    parts.append(_settlements_and_withdrawals(world, p, captured, refunds, rng))
    return concat(parts)


def _settlements_and_withdrawals(world: World, p: Block, captured: np.ndarray, refunds: Block,
                                 rng: np.random.Generator) -> Block:
    """T+1 settlement of each merchant-day's net takings; withdrawals every few days by size."""
    days, m = world.days, world.n_merchants
    day = world.day_of(p["ts"])
    sel = captured & (day < days - 1)
    key = p["merchant"][sel].astype(np.int64) * days + day[sel]
    net = np.bincount(key, weights=p["amount"][sel].astype(float), minlength=m * days)
    if len(refunds["ts"]):
        rday = world.day_of(refunds["ts"])
        rs = rday < days - 1
        rkey = refunds["merchant"][rs].astype(np.int64) * days + rday[rs]
        net -= np.bincount(rkey, weights=refunds["amount"][rs].astype(float), minlength=m * days)
    net = np.rint(net).astype(np.int64)
    cells = np.flatnonzero(net > 0)
    mer = (cells // days).astype(np.int32)
    sday = cells % days + 1  # settled the next morning
    ts = world.start_ts + sday * DAY + 6 * HOUR + rng.integers(0, 3 * HOUR, len(cells))
    settle = block(len(cells), ts=ts, etype=K.ET["settlement"], merchant=mer, amount=net[cells])
    # withdrawals: the settled balance, every k days by merchant size (a bucket per merchant)
    period = K.SIZE_WITHDRAW_EVERY_DAYS[world.m_size[mer]]
    phase = (np.arange(m) * 7919 + world.config.seed) % 7
    bucket = (sday + phase[mer]) // period
    bkey = mer.astype(np.int64) * (days + 8) + bucket
    order = np.lexsort((sday, bkey))
    bkey_s = bkey[order]
    starts = np.flatnonzero(np.concatenate([[True], bkey_s[1:] != bkey_s[:-1]]))
    ends = np.concatenate([starts[1:], [len(order)]]) - 1
    total = np.add.reduceat(net[cells][order], starts) if len(order) else np.zeros(0, np.int64)
    wmer = mer[order][starts]
    wday = sday[order][ends]
    amount = np.floor(total * rng.uniform(0.8, 1.0, len(total))).astype(np.int64)
    wts = world.start_ts + wday * DAY + 10 * HOUR + rng.integers(0, 8 * HOUR, len(total))
    keep = (wts < world.end_ts) & (amount > 0)
    withdraw = block(int(keep.sum()), ts=wts[keep], etype=K.ET["withdrawal"], merchant=wmer[keep],
                     amount=amount[keep])
    keep_s = ts < world.end_ts
    settle = {k: v[keep_s] for k, v in settle.items()}
    return concat([settle, withdraw])
