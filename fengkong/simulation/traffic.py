"""Legitimate traffic: shoppers paying merchants according to their habits, promotion
days, sign-ups and logins."""

from __future__ import annotations

import numpy as np

from fengkong.simulation import constants as K
from fengkong.simulation.blocks import Block, block, concat
from fengkong.simulation.population import DAY, HOUR, World, ips_in, stage_rng


def sample_hours(world: World, users: np.ndarray, rng: np.random.Generator,
                 profile: np.ndarray = K.HOUR_PROFILE, habit_share: float = 0.7) -> np.ndarray:
    """Local hour: mostly around the user's own peak hour, otherwise the platform's profile."""
    n = len(users)
    habit = np.rint(world.u_peak[users] + rng.normal(0.0, 1.0, n) * world.u_spread[users]).astype(np.int64) % 24
    general = rng.choice(24, size=n, p=profile)
    return np.where(rng.random(n) < habit_share, habit, general)


def amounts_for(world: World, merchants: np.ndarray, offset: np.ndarray, rng: np.random.Generator,
                spread: float = 0.7) -> np.ndarray:
    """Ticket sizes in fen: the category's median scaled by the shopper's habit, priced like shops price."""
    n = len(merchants)
    mcc = world.m_mcc[merchants]
    fen = K.MCC_MEDIAN_FEN[mcc] * np.exp(offset + rng.normal(0.0, spread, n))
    u = rng.random(n)
    fen = np.where(u < 0.45, np.rint(fen / 100) * 100,              # whole yuan (59.00)
                   np.where(u < 0.55, np.rint(fen / 1000) * 1000,   # tens (60.00)
                            np.rint(fen)))                           # to the fen (58.37)
    face = np.isin(K.MCC_CODES[mcc], K.ROUND_FACE_MCCS) & (rng.random(n) < 0.7)
    fen = np.where(face, K.ROUND_FACE_VALUES_YUAN[rng.integers(0, len(K.ROUND_FACE_VALUES_YUAN), n)] * 100, fen)
    limit = world.m_limit[merchants]
    over = fen > 0.85 * limit
    fen = np.where(over, np.rint(0.85 * limit * rng.uniform(0.15, 1.0, n) / 100) * 100, fen)
    return np.maximum(fen, 1).astype(np.int64)


def fill_payments(world: World, users: np.ndarray, merchants: np.ndarray, ts: np.ndarray,
                  rng: np.random.Generator, orng: np.random.Generator | None = None,
                  channel: np.ndarray | None = None) -> Block:
    """Channel, card, device, IP and amount of legitimate payments by shoppers. ``orng`` draws the
    shared networks and multi-card habits (the overlap with fraud signals), apart from ``rng``.
    ``channel`` fixes the channels (a shop that only takes one kind of payment) instead of drawing
    them from the category's mix."""
    n = len(users)
    mcc = world.m_mcc[merchants]
    if channel is None:
        cum = np.cumsum(K.MCC_CHANNELS[mcc], axis=1)
        channel = (rng.random(n)[:, None] > cum).sum(axis=1).clip(0, len(K.CHANNELS) - 1)
    k = np.where(rng.random(n) < 0.65, 0, (rng.random(n) * world.u_ncards[users]).astype(np.int64))
    multi = world.u_multi[users]
    if orng is not None and multi.any():  # card jugglers use all their cards alike
        k[multi] = (orng.random(int(multi.sum())) * world.u_ncards[users[multi]]).astype(np.int64)
    card = world.u_cards[users, k]
    dj = np.where((world.u_ndev[users] == 2) & (rng.random(n) < world.u_dev2_use[users]), 1, 0)
    device = world.u_devices[users, dj]
    ip = world.session_ip(users, ts)
    note = np.zeros(n, dtype=np.int8)
    mobile = rng.random(n) < 0.25
    ip = np.where(mobile, ips_in(K.CN_MOBILE, n, rng), ip)
    abroad_home = world.u_country[users] != K.CC["CN"]
    ip = np.where(abroad_home & mobile, world.session_ip(users, ts, salt=1), ip)
    if orng is not None:
        ip = _shared_networks(world, users, ts, mobile, ip, orng)
    travel = rng.random(n) < 0.004
    if travel.any():
        t = np.flatnonzero(travel)
        dest = rng.choice(["HK", "JP", "TW", "US", "GB"], size=len(t))
        for d in np.unique(dest):
            sel = t[dest == d]
            ip[sel] = ips_in(K.FOREIGN_RESIDENTIAL[str(d)], len(sel), rng)
        note[t] = K.NOTE["travel"]
    vpn = (rng.random(n) < 0.002) & ~travel
    ip = np.where(vpn, ips_in(K.VPN, n, rng), ip)
    note[vpn] = K.NOTE["vpn"]
    # card present at the merchant's terminal: the platform sees neither the shopper's device nor IP
    pos = channel == K.CH["pos"]
    device = np.where(pos, -1, device)
    ip = np.where(pos, -1, ip)
    note[pos] = 0
    amount = amounts_for(world, merchants, world.u_amount_offset[users], rng)
    p_refund = K.MCC_REFUND[mcc]
    return block(
        n, payment=True, ts=ts, etype=K.ET["payment"], merchant=merchants, user=users, amount=amount,
        channel=channel, card=card, ip=ip, device=device, note=note,
        declined=rng.random(n) < 0.012, p_refund=p_refund,
        p_dispute=0.0006, p_report=0.0, delay_lo=10.0, delay_hi=60.0,
    )


def _shared_networks(world: World, users: np.ndarray, ts: np.ndarray, mobile: np.ndarray, ip: np.ndarray,
                     orng: np.random.Generator) -> np.ndarray:
    """Carrier CGNAT for mobile payments; the campus or company egress for payments made there."""
    cg = mobile & (world.u_cgnat[users] >= 0)
    if cg.any():
        ip[cg] = world.cgnat_ip(world.u_cgnat[users[cg]], orng)
    camp = ~mobile & (world.u_campus[users] >= 0)
    if camp.any():
        i = np.flatnonzero(camp)
        cu = world.u_campus[users[i]]
        company = world.campus_company[cu]
        local = ts[i] + K.PLATFORM_OFFSET_S
        hour = (local // HOUR) % 24
        weekday = ((local // DAY) + 3) % 7 < 5  # 1970-01-01 was a Thursday
        there = np.where(company, (hour >= 9) & (hour < 19) & weekday, True)
        there &= orng.random(len(i)) < np.where(company, 0.8, 0.7)
        ip[i[there]] = world.campus_ip(cu[there], orng)
    return ip


def legit_traffic(world: World) -> tuple[Block, Block]:
    """Legitimate payments (base days plus promotion-day extras, the segments of ``segments``) and
    the sign-ups and logins around them."""
    from fengkong.simulation import segments  # it builds on this module's helpers
    rng = stage_rng(world.config.seed, "legit")
    c = world.config
    s = world.n_shoppers
    first_day = np.where(world.u_signup_ts >= 0, world.day_of(world.u_signup_ts), 0)
    active_days = c.days - first_day
    expected = world.u_rate * active_days
    total = int(round(expected.sum()))
    users = rng.choice(s, size=total, p=expected / expected.sum()).astype(np.int32)
    users.sort(kind="stable")
    # day: weekends a little busier; restricted to days after the shopper signed up
    weekday0 = world.config.start.weekday()
    dw = np.where(((np.arange(c.days) + weekday0) % 7) >= 5, 1.15, 1.0)
    cdf = np.cumsum(dw) / dw.sum()
    lo = np.concatenate([[0.0], cdf])[first_day[users]]
    day = np.searchsorted(cdf, lo + rng.random(total) * (1.0 - lo), side="right").clip(0, c.days - 1)
    hour = sample_hours(world, users, rng)
    ts = world.start_ts + day * DAY + hour * HOUR + rng.integers(0, HOUR, total)
    signup = world.u_signup_ts[users]
    early = ts <= signup
    ts = np.where(early, signup + rng.integers(120, 4 * HOUR, total), ts)
    ts = np.minimum(ts, world.end_ts - 1)
    day = world.day_of(ts)
    # merchant: a favourite most of the time, else any; never before it was onboarded
    merchants = np.where(rng.random(total) < 0.6,
                         world.u_fav[users, rng.integers(0, 5, total)],
                         _by_weight(world, total, rng))
    merchants = _onboarded(world, merchants, day, rng)
    orng = stage_rng(c.seed, "legit_overlap")
    base = fill_payments(world, users, merchants, ts, rng, orng)
    base = _split_payments(world, base, orng)

    base = segments.apply_habits(world, base)

    extras = [base]
    for pd_ in world.promo_days:
        extras.append(_promo_day(world, base, pd_, rng, orng))
    extras.append(segments.merchant_promotions(world, base))
    extras.append(_first_orders(world, stage_rng(c.seed, "first_orders")))
    extras.append(segments.segment_merchants(world))
    payments = concat(extras, payment=True)
    return payments, _accounts_and_logins(world, payments, rng)


def _split_payments(world: World, base: Block, rng: np.random.Generator) -> Block:
    """Multi-card shoppers sometimes pay one purchase with two or three of their cards within
    minutes (a card's limit, a declined card), on the same device and merchant."""
    cand = np.flatnonzero(world.u_multi[base["user"]])
    if len(cand) == 0:
        return base
    split = cand[rng.random(len(cand)) < 0.25]
    parts = rng.integers(2, 4, len(split))
    extra = parts - 1
    rows = np.repeat(split, extra)
    j = np.concatenate([np.arange(1, p) for p in parts]) if len(parts) else np.zeros(0, np.int64)
    users = base["user"][rows]
    # the other parts: the next cards in the shopper's wallet
    k0 = np.argmax(world.u_cards[base["user"][split]] == base["card"][split][:, None], axis=1)
    k = (np.repeat(k0, extra) + j) % world.u_ncards[users]
    share = rng.uniform(0.3, 0.7, len(split))
    amount = base["amount"].copy()
    whole = amount[split]
    first = np.maximum(1, np.rint(whole * share / 100) * 100).astype(np.int64)
    amount[split] = np.minimum(first, whole)
    rest = np.repeat(np.maximum(1, (whole - amount[split]) // extra), extra)
    ts = base["ts"][rows] + j * rng.integers(20, 300, len(rows))
    ts = np.minimum(ts, world.end_ts - 1)
    out = {name: col[rows].copy() for name, col in base.items()}
    out.update(ts=ts, card=world.u_cards[users, k], amount=rest,
               note=np.full(len(rows), K.NOTE["split_payment"], dtype=np.int8))
    base = dict(base)
    base["amount"] = amount
    return concat([base, out], payment=True)


def _first_orders(world: World, rng: np.random.Generator) -> Block:
    """New shoppers who pay soon after signing up, with the new-user coupons: most of a promotion
    day's newcomers (often just over a coupon's threshold) and ``first_order_share`` of the
    others, one to three orders each within the day."""
    c = world.config
    new = np.flatnonzero(world.u_signup_ts >= 0).astype(np.int32)
    p = np.where(world.u_wave[new], 0.9, c.first_order_share)
    payers = new[rng.random(len(new)) < p]
    # a new-user coupon pack: one to three first orders
    orders = rng.integers(1, 4, len(payers))
    users = np.repeat(payers, orders)
    n = len(users)
    if n == 0:
        return block(0, payment=True)
    t0 = world.u_signup_ts[users]
    delay = np.clip(rng.lognormal(np.log(30 * 60), 1.3, n), 300, 20 * HOUR).astype(np.int64)
    ts = np.minimum(t0 + delay, world.end_ts - 1)
    day = world.day_of(ts)
    wave = world.u_wave[users]
    promo = _merchants_weighted(world, K.PROMO_MCCS, n, rng)
    merchants = np.where(wave, promo, world.u_fav[users, rng.integers(0, 5, n)])
    merchants = _onboarded(world, merchants, day, rng)
    b = fill_payments(world, users, merchants, ts, rng)
    online = rng.random(n) < 0.75
    b["channel"] = np.where(online, K.CH["wallet"], K.CH["quick_pay"]).astype(np.int8)
    b["device"] = world.u_first_dev[users]
    booth = world.u_first_dev[users] != world.u_signup_dev[users]  # signed up at a street booth
    b["ip"] = np.where(booth, world.session_ip(users, ts), world.signup_ip(users, t0))
    coupon = wave & (rng.random(n) < 0.6)
    threshold = rng.choice(np.array([10, 20, 30, 50]), size=n) * 100
    b["amount"] = np.where(coupon, threshold + rng.integers(0, 800, n), b["amount"])
    b["note"] = np.full(n, K.NOTE["new_user"], dtype=np.int8)
    return b


def _merchants_weighted(world: World, mccs: tuple[str, ...], n: int, rng: np.random.Generator) -> np.ndarray:
    codes = np.array([K.MCC_INDEX[m] for m in mccs])
    w = world.m_weight * np.isin(world.m_mcc, codes) * ~world.m_blacklisted
    if w.sum() <= 0:
        w = world.m_weight * ~world.m_blacklisted
    return rng.choice(len(w), size=n, p=w / w.sum()).astype(np.int32)


def _by_weight(world: World, n: int, rng: np.random.Generator) -> np.ndarray:
    w = world.m_weight.copy()
    w[world.m_blacklisted] = 0
    return rng.choice(len(w), size=n, p=w / w.sum()).astype(np.int32)


def _onboarded(world: World, merchants: np.ndarray, day: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Replace merchants that had not joined yet on that day by established ones."""
    bad = world.m_onboard[merchants] > day
    if bad.any():
        w = world.m_weight * (world.m_onboard <= 0) * ~world.m_blacklisted
        merchants = merchants.copy()
        merchants[bad] = rng.choice(len(w), size=int(bad.sum()), p=w / w.sum())
    return merchants


def _promo_day(world: World, base: Block, day: int, rng: np.random.Generator,
               orng: np.random.Generator | None = None) -> Block:
    """Legitimate promotion-day rush: participating merchants take promo_boost times their usual volume,
    much of it at midnight when the sale opens."""
    participates = rng.random(world.n_merchants) < np.array([0.5, 0.6, 0.75, 0.9])[world.m_size]
    planned = np.flatnonzero(participates & (world.m_onboard <= day)).astype(np.int32)
    world.promotions.append((planned, np.full(len(planned), day), np.ones(len(planned), dtype=np.int64),
                             np.full(len(planned), world.config.promo_boost), "platform"))
    bday = world.day_of(base["ts"])
    pool = np.flatnonzero((bday == day) & participates[base["merchant"]])
    n = int(round((world.config.promo_boost - 1.0) * len(pool)))
    if n == 0 or len(pool) == 0:
        return block(0, payment=True)
    tmpl = pool[rng.integers(0, len(pool), n)]
    users = base["user"][tmpl]
    merchants = base["merchant"][tmpl]
    hour = sample_hours(world, users, rng, profile=K.PROMO_HOUR_PROFILE, habit_share=0.3)
    ts = world.start_ts + day * DAY + hour * HOUR + rng.integers(0, HOUR, n)
    ts = np.maximum(ts, world.u_signup_ts[users] + 60)
    b = fill_payments(world, users, merchants, ts, rng, orng)
    b["note"][b["note"] == 0] = K.NOTE["promo_day"]
    return b


def _accounts_and_logins(world: World, payments: Block, rng: np.random.Generator) -> Block:
    """Sign-up, card binding and first login of shoppers who join during the span; logins before
    a share of online payments."""
    blocks = []
    new = np.flatnonzero(world.u_signup_ts >= 0).astype(np.int32)
    if len(new):
        t0 = world.u_signup_ts[new]
        dev = world.u_signup_dev[new]
        ip = world.signup_ip(new, t0)
        blocks.append(block(len(new), ts=t0, etype=K.ET["signup"], user=new, device=dev, ip=ip))
        blocks.append(block(len(new), ts=t0 + 5, etype=K.ET["login"], user=new, device=dev, ip=ip))
        nc = world.u_ncards[new]
        u = np.repeat(new, nc)
        j = np.concatenate([np.arange(k) for k in nc])
        tb = np.repeat(t0, nc) + 20 + j * 40 + rng.integers(0, 30, len(u))
        blocks.append(block(len(u), ts=tb, etype=K.ET["card_bind"], user=u, card=world.u_cards[u, j],
                            device=world.u_signup_dev[u], ip=world.signup_ip(u, tb)))
    online = (payments["channel"] != K.CH["pos"]) & (rng.random(len(payments["ts"])) < 0.3)
    idx = np.flatnonzero(online)
    tl = payments["ts"][idx] - rng.integers(10, 1800, len(idx))
    tl = np.maximum(tl, world.u_signup_ts[payments["user"][idx]] + 6)
    inside = tl >= world.start_ts
    idx, tl = idx[inside], tl[inside]
    blocks.append(block(len(idx), ts=tl, etype=K.ET["login"], user=payments["user"][idx],
                        device=payments["device"][idx], ip=payments["ip"][idx]))
    return concat(blocks)
