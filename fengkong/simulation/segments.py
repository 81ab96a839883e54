"""Legitimate segments that look like the fraud signals a merchant's or a shopper's baseline feeds:
merchants' own promotions (3-10x a day, bought by established customers), early-morning merchants
with tiny baselines, shoppers with a steady small habit who sometimes buy bigger, and small
card-present (POS) merchants with a handful of payments a day.

Each segment has a knob in ``SimConfig`` (0 switches it off) and draws from its own generator, so
with every knob at 0 the history is exactly the one without them. Their payments carry the
segment's ``note`` (``promo_day``, ``early_morning``, ``habit`` / ``habit_bigger``, ``pos_small``)
unless a more specific note (``travel``, ``vpn``) already explains the row; ``is_fraud`` stays
false and ``scenario`` empty.
"""

from __future__ import annotations

import numpy as np

from fengkong.simulation import constants as K
from fengkong.simulation import traffic as T
from fengkong.simulation.blocks import Block, block, concat
from fengkong.simulation.population import DAY, HOUR, World, stage_rng

#: Share of a habit shopper's payments that are a bigger purchase, and how much bigger.
BIGGER_SHARE = 0.05
BIGGER_RANGE = (2.0, 10.0)
#: A merchant's own promotion: planned multiple of its usual daily volume, and who buys.
PROMO_MULTIPLE = (3.0, 10.0)
PROMO_OWN_CUSTOMERS = 0.65  # of the extra buyers: the merchant's earlier customers; the rest other regulars


def _tag(b: Block, note: str) -> Block:
    """Give the segment's note to rows no more specific note explains."""
    b["note"] = np.where(b["note"] == 0, K.NOTE[note], b["note"]).astype(np.int8)
    return b


# ---- shoppers with a steady small habit -------------------------------------------------
def apply_habits(world: World, base: Block) -> Block:
    """Rewrite the ordinary payments of ``habit_share`` of the established shoppers as a steady small
    habit (a ~40-yuan lunch at one to three places, on their own card) with an occasional
    legitimate purchase 2-10x larger elsewhere (``habit_bigger``), on their own devices and networks."""
    c = world.config
    if c.habit_share <= 0:
        return base
    rng = stage_rng(c.seed, "habits")
    s = world.n_shoppers
    # shoppers with enough history for a habit to show: established, about ten payments or more
    ok = np.flatnonzero((world.u_signup_ts < 0) & ~world.u_multi & (world.u_rate * c.days >= 10))
    k = min(len(ok), int(round(c.habit_share * s)))
    habit = np.zeros(s, dtype=bool)
    habit[rng.permutation(ok)[:k]] = True
    ticket = np.clip(rng.lognormal(np.log(38.0), 0.3, s), 15.0, 90.0) * 100
    places = T._merchants_weighted(world, K.HABIT_MCCS, 3 * s, rng).reshape(s, 3)
    n_places = rng.integers(1, 4, s)
    rows = np.flatnonzero(habit[base["user"]] & (base["note"] == 0))
    n = len(rows)
    if n == 0:
        return base
    users, ts = base["user"][rows], base["ts"][rows]
    day = world.day_of(ts)
    bigger = rng.random(n) < BIGGER_SHARE
    merchants = np.where(bigger, T._merchants_weighted(world, K.BIGGER_MCCS, n, rng),
                         places[users, (rng.random(n) * n_places[users]).astype(np.int64)])
    merchants = T._onboarded(world, merchants, day, rng)
    b = T.fill_payments(world, users, merchants, ts, rng, rng)
    steady = ticket[users] * np.exp(rng.normal(0.0, 0.08, n))
    lo, hi = np.log(BIGGER_RANGE[0]), np.log(BIGGER_RANGE[1])
    big = ticket[users] * np.exp(rng.uniform(lo, hi, n))
    amount = np.rint(np.where(bigger, big, steady) / 100) * 100
    b["amount"] = np.minimum(amount, 0.85 * world.m_limit[merchants]).astype(np.int64)
    mine = rng.random(n) < 0.85  # a habit is paid with the usual card
    b["card"] = np.where(mine, world.u_cards[users, 0], b["card"]).astype(np.int32)
    b["note"] = np.where(b["note"] != 0, b["note"],
                         np.where(bigger, K.NOTE["habit_bigger"], K.NOTE["habit"])).astype(np.int8)
    out = {name: col.copy() for name, col in base.items()}
    for name, col in b.items():
        out[name][rows] = col
    return out


# ---- merchants' own promotions ------------------------------------------------------------
def merchant_promotions(world: World, base: Block) -> Block:
    """``merchant_promo_share`` of the established merchants run a promotion of their own (1-3 days,
    not on a platform promotion day), planned at 3-10x their usual daily volume. The extra buyers are
    established shoppers: most of them the merchant's earlier customers (often with the same card),
    the rest other shoppers with a history, on their usual devices and networks. The plan is
    recorded in ``world.promotions``."""
    c = world.config
    if c.merchant_promo_share <= 0:
        return block(0, payment=True)
    rng = stage_rng(c.seed, "merchant_promos")
    days, m = c.days, world.n_merchants
    bday = world.day_of(base["ts"])
    counts = np.bincount(base["merchant"].astype(np.int64) * days + bday,
                         minlength=m * days).reshape(m, days)
    length = rng.choice([1, 2, 3], size=m, p=[0.6, 0.3, 0.1])
    start = rng.integers(7, max(8, days - 2), m)
    start = np.minimum(start, days - length)
    window = start[:, None] + np.arange(-7, 0)
    baseline = np.median(counts[np.arange(m)[:, None], window], axis=1)
    platform = np.zeros(days + 3, dtype=bool)
    platform[list(world.promo_days)] = True
    clash = np.zeros(m, dtype=bool)
    for j in range(3):  # a merchant's own promotion avoids the platform's days
        clash |= (j < length) & platform[start + j]
    ok = np.flatnonzero((start >= 7) & (world.m_onboard <= start - 28) & (baseline >= 2) & ~clash
                        & (world.m_mcc != K.MCC_INDEX["6540"]) & ~world.m_blacklisted)
    chosen = np.sort(rng.permutation(ok)[: int(round(c.merchant_promo_share * c.merchants))])
    if len(chosen) == 0:
        return block(0, payment=True)
    planned = np.rint(rng.uniform(*PROMO_MULTIPLE, len(chosen)) * 2) / 2
    world.promotions.append((chosen, start[chosen], length[chosen], planned, "merchant"))
    # one row per promotion day: the realised multiple is near the planned one, not exactly it
    pm = np.repeat(np.arange(len(chosen)), length[chosen])
    pday = start[chosen][pm] + np.concatenate([np.arange(k) for k in length[chosen]])
    mer = chosen[pm]
    realised = planned[pm] * rng.lognormal(0.0, 0.2, len(pm))
    extra = np.maximum(0, np.rint((realised - 1.0) * baseline[mer])).astype(np.int64)
    world.promo_cells.append((mer, pday))
    n = int(extra.sum())
    if n == 0:
        return block(0, payment=True)
    mer_e, day_e = np.repeat(mer, extra), np.repeat(pday, extra)
    day_start = world.start_ts + day_e * DAY
    # templates: an earlier payment at this merchant, else any earlier payment on the platform
    key = base["merchant"].astype(np.int64) * (1 << 32) + (base["ts"] - world.start_ts)
    by_mer = np.argsort(key, kind="stable")
    ks = key[by_mer]
    lo = np.searchsorted(ks, mer_e.astype(np.int64) * (1 << 32))
    hi = np.searchsorted(ks, mer_e.astype(np.int64) * (1 << 32) + (day_start - world.start_ts))
    by_ts = np.argsort(base["ts"], kind="stable")
    before = np.searchsorted(base["ts"][by_ts], day_start)
    own = (rng.random(n) < PROMO_OWN_CUSTOMERS) & (hi > lo)
    tmpl = np.where(own, by_mer[np.minimum(lo + (rng.random(n) * (hi - lo)).astype(np.int64), len(ks) - 1)],
                    by_ts[(rng.random(n) * np.maximum(before, 1)).astype(np.int64)])
    users = base["user"][tmpl]
    hour = T.sample_hours(world, users, rng, profile=K.MERCHANT_PROMO_HOUR_PROFILE, habit_share=0.4)
    ts = day_start + hour * HOUR + rng.integers(0, HOUR, n)
    b = T.fill_payments(world, users, mer_e.astype(np.int32), ts, rng, rng)
    again = own & (rng.random(n) < 0.8)  # the card they paid this merchant with before
    b["card"] = np.where(again, base["card"][tmpl], b["card"]).astype(np.int32)
    return _tag(b, "promo_day")


# ---- early-morning and small card-present merchants ----------------------------------------
def _new_shop(world: World, n: int, mccs: tuple[str, ...], rng: np.random.Generator) -> np.ndarray:
    """n established micro or small merchants that only their own customers pay (no platform-wide
    traffic weight), so their volume is exactly what the segment draws."""
    idx = world.new_merchants(n, rng, mccs=mccs, onboard_day=-rng.integers(60, 5 * 365, n))
    world.m_size[idx] = rng.integers(0, 2, n)
    world.m_weight[idx] = 0.0
    return idx


def _customers(world: World, shops: np.ndarray, n: np.ndarray, regular: float,
               rng: np.random.Generator) -> np.ndarray:
    """Payers of ``n[i]`` payments at each shop: mostly its 10-50 regulars, otherwise passers-by;
    all established shoppers."""
    pool = np.flatnonzero(world.u_signup_ts < 0).astype(np.int32)
    regulars = pool[rng.integers(0, len(pool), (len(shops), 50))]
    n_reg = rng.integers(10, 51, len(shops))
    shop = np.repeat(np.arange(len(shops)), n)
    k = len(shop)
    reg = regulars[shop, (rng.random(k) * n_reg[shop]).astype(np.int64)]
    return np.where(rng.random(k) < regular, reg, pool[rng.integers(0, len(pool), k)])


def _daily(world: World, lam: np.ndarray, rng: np.random.Generator, weekend: float,
           busy_p: float) -> np.ndarray:
    """Payments per shop and day: Poisson around the shop's rate, quieter at weekends, closed on
    about one day in twenty, and now and then a busy day (a market day, a party) at 2-5x."""
    days = world.days
    wd = (np.arange(days) + world.config.start.weekday()) % 7 >= 5
    rate = lam[:, None] * np.where(wd, weekend, 1.0)[None, :]
    busy = rng.random(rate.shape) < busy_p
    rate = np.where(busy, rate * rng.uniform(2.0, 5.0, rate.shape), rate)
    rate = np.where(rng.random(rate.shape) < 0.05, 0.0, rate)
    return rng.poisson(rate)


def segment_merchants(world: World) -> Block:
    """Payments at early-morning merchants (``early_morning_share`` of ``merchants`` added) and at
    small card-present merchants (``pos_small_share``)."""
    c = world.config
    out = []
    if c.early_morning_share > 0:
        out.append(_early_morning(world, stage_rng(c.seed, "early_morning")))
    if c.pos_small_share > 0:
        out.append(_pos_small(world, stage_rng(c.seed, "pos_small")))
    return concat(out, payment=True)


def _early_morning(world: World, rng: np.random.Generator) -> Block:
    """Breakfast stalls, bakeries and commuter kiosks: open at 05:00-06:30, a handful of payments a
    day (2-10), most in the first three hours, quieter at weekends; small tickets (6-18 yuan)."""
    n = max(1, int(round(world.config.early_morning_share * world.config.merchants)))
    shops = _new_shop(world, n, K.EARLY_MORNING_MCCS, rng)
    count = _daily(world, rng.uniform(2.0, 10.0, n), rng, weekend=0.6, busy_p=0.02)
    shop_i, day = _payments_of(count, world.days)
    k = len(shop_i)
    opens = (5 * HOUR + rng.integers(0, 4, n) * 1800)[shop_i]
    rush = rng.random(k) < 0.8
    offset = np.where(rush, rng.triangular(0, HOUR, 3 * HOUR, k), rng.uniform(3 * HOUR, 12 * HOUR, k))
    ts = world.start_ts + day * DAY + opens + offset.astype(np.int64)
    users = _customers(world, shops, count.sum(axis=1), 0.85, rng)
    merchants = shops[shop_i]
    channel = np.where(rng.random(k) < 0.85, K.CH["wallet"], K.CH["pos"])
    b = T.fill_payments(world, users, merchants, ts, rng, rng, channel=channel)
    ticket = rng.uniform(6.0, 18.0, n)[shop_i] * np.exp(rng.normal(0.0, 0.35, k))
    b["amount"] = np.maximum(200, np.rint(ticket * 2) * 50).astype(np.int64)  # to the half yuan
    return _tag(b, "early_morning")


def _payments_of(count: np.ndarray, days: int) -> tuple[np.ndarray, np.ndarray]:
    """(shop index, day) of every payment in a shops x days matrix of daily counts."""
    cell = np.flatnonzero(count.ravel())
    reps = count.ravel()[cell]
    return np.repeat(cell // days, reps), np.repeat(cell % days, reps)


def _pos_small(world: World, rng: np.random.Generator) -> Block:
    """Small shops taking cards at their own terminal: 1.5-6 payments a day between 09:00 and 21:00,
    all card-present (no device or IP), a busy day now and then."""
    n = max(1, int(round(world.config.pos_small_share * world.config.merchants)))
    shops = _new_shop(world, n, K.POS_SMALL_MCCS, rng)
    count = _daily(world, rng.uniform(1.5, 6.0, n), rng, weekend=1.2, busy_p=0.04)
    shop_i, day = _payments_of(count, world.days)
    k = len(shop_i)
    hours = K.HOUR_PROFILE[9:21] / K.HOUR_PROFILE[9:21].sum()
    hour = 9 + rng.choice(12, size=k, p=hours)
    ts = world.start_ts + day * DAY + hour * HOUR + rng.integers(0, HOUR, k)
    users = _customers(world, shops, count.sum(axis=1), 0.7, rng)
    b = T.fill_payments(world, users, shops[shop_i], ts, rng, rng,
                        channel=np.full(k, K.CH["pos"], dtype=np.int64))
    return _tag(b, "pos_small")
