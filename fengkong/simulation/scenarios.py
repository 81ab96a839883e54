"""Injected fraud. Each scenario returns its payments and its other events (sign-ups,
logins, card bindings, withdrawals), all labelled ``is_fraud`` with the scenario.

What each scenario looks like, and the signals it is meant to exercise, is in
docs/simulation.md.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from fengkong.simulation import constants as K
from fengkong.simulation.blocks import Block, block, concat
from fengkong.simulation.population import DAY, HOUR, World, host_in_16, ips_in, stage_rng
from fengkong.simulation.traffic import amounts_for

Result = tuple[Block, Block]


def _count(world: World, name: str, per_million: float, minimum: int, legit_payments: int) -> int:
    w = world.config.weight(name)
    if w <= 0:
        return 0
    return max(minimum, int(round(per_million * legit_payments / 1e6 * w)))


def _merchants_of(world: World, mccs: tuple[str, ...], *, established_by: int = 0,
                  min_size: int = 0) -> np.ndarray:
    codes = np.array([K.MCC_INDEX[m] for m in mccs])
    spared = world.m_blacklisted | world.m_cash_out | world.m_spiked  # each keeps its own story
    ok = np.isin(world.m_mcc, codes) & (world.m_onboard <= established_by) & ~spared & (world.m_size >= min_size)
    found = np.flatnonzero(ok)
    if len(found) == 0:  # tiny worlds: fall back to any established merchant
        found = np.flatnonzero((world.m_onboard <= established_by) & ~spared)
    return found


def _ring_accounts(world: World, users: np.ndarray, devices: np.ndarray, ips: np.ndarray,
                   cards: np.ndarray | None, t0: np.ndarray, scen: int, rng: np.random.Generator,
                   note: int = 0) -> Block:
    """Sign-up, login and (if cards) card binding of fraud accounts, labelled."""
    n = len(users)
    parts = [
        block(n, ts=t0, etype=K.ET["signup"], user=users, device=devices, ip=ips, fraud=True, scenario=scen,
              note=note),
        block(n, ts=t0 + rng.integers(3, 60, n), etype=K.ET["login"], user=users, device=devices, ip=ips,
              fraud=True, scenario=scen, note=note),
    ]
    if cards is not None:
        parts.append(block(n, ts=t0 + rng.integers(60, 400, n), etype=K.ET["card_bind"], user=users,
                           card=cards, device=devices, ip=ips, fraud=True, scenario=scen, note=note))
    return concat(parts)


def _clip_ts(world: World, ts: np.ndarray) -> np.ndarray:
    return np.clip(ts, world.start_ts, world.end_ts - 1)


# ---- stolen card -----------------------------------------------------------------------
def stolen_card(world: World, legit: Block) -> Result:
    """A thief uses a shopper's card from a new device, a new place, for unusual amounts."""
    rng = stage_rng(world.config.seed, "stolen_card")
    scen = K.SCENARIO_CODE["stolen_card"]
    n = _count(world, "stolen_card", 450, 4, len(legit["ts"]))
    if n == 0:
        return block(0, payment=True), block(0)
    # anchors: a real payment of the victim at least a few days in, so the card has a history
    ok = np.flatnonzero(~legit["declined"] & (legit["ts"] > world.start_ts + min(7, world.days // 3) * DAY)
                        & (legit["ts"] < world.end_ts - 2 * DAY) & (legit["user"] < world.n_shoppers))
    anchors = ok[rng.choice(len(ok), size=n, replace=False)] if len(ok) >= n else ok[rng.integers(0, len(ok), n)]
    victim = legit["user"][anchors]
    card = legit["card"][anchors]
    t_start = legit["ts"][anchors] + (rng.uniform(0.5, 3.0, n) * DAY).astype(np.int64)
    targets = _merchants_of(world, ("5732", "5944", "4511", "6540"), min_size=2)
    pays, others = [], []
    ato = rng.random(n) < 0.5
    new_user = world.new_users(int((~ato).sum()))
    user = victim.copy()
    user[~ato] = new_user
    device = world.new_devices(n)
    # a new place: another city's /16 at home, or another country
    home_cn = world.u_country[victim] == K.CC["CN"]
    abroad = (rng.random(n) < 0.4) | ~home_cn
    ip = np.empty(n, dtype=np.int64)
    j = rng.integers(0, len(world.cn16) - 1, n)
    other16 = world.cn16[j]
    same = other16 == world.u_home16[victim]
    other16[same] = world.cn16[j[same] + 1]
    ip[~abroad] = host_in_16(other16[~abroad], rng.integers(0, 1 << 16, int((~abroad).sum())))
    places = np.array(["US", "GB", "JP", "HK", "TW", "KR"])
    dest = places[rng.integers(0, len(places), n)]
    home_name = np.asarray(K.COUNTRIES)[world.u_country[victim]]
    clash = dest == home_name
    dest[clash] = np.where(home_name[clash] == "US", "GB", "US")
    for d in np.unique(dest):
        sel = abroad & (dest == d)
        ip[sel] = ips_in(K.FOREIGN_RESIDENTIAL[str(d)], int(sel.sum()), rng)
    note = np.where(ato, K.NOTE["account_takeover"], K.NOTE["new_account"]).astype(np.int8)
    # the thief's way in: a login into the victim's account, or a fresh account binding the card
    others.append(block(int(ato.sum()), ts=t_start[ato] - rng.integers(60, 900, int(ato.sum())),
                        etype=K.ET["login"], user=user[ato], device=device[ato], ip=ip[ato], fraud=True,
                        scenario=scen, note=K.NOTE["account_takeover"]))
    na = ~ato
    others.append(_ring_accounts(world, user[na], device[na], ip[na], card[na],
                                 t_start[na] - rng.integers(900, 3600, int(na.sum())), scen, rng,
                                 note=K.NOTE["new_account"]))
    k = rng.integers(2, 9, n)
    inc = np.repeat(np.arange(n), k)
    m = len(inc)
    gaps = rng.uniform(120, 6 * HOUR, m)
    first = np.concatenate([[0], np.cumsum(k)[:-1]])
    cum = np.cumsum(gaps)
    cum -= np.repeat(cum[first] - gaps[first], k)
    ts = _clip_ts(world, t_start[inc] + cum.astype(np.int64))
    merchant = targets[rng.integers(0, len(targets), m)]
    # unusual for the cardholder: several times what the card usually pays, above its largest
    legit_card = legit["card"][~legit["declined"]]
    legit_amt = legit["amount"][~legit["declined"]].astype(float)
    mean = np.bincount(legit_card, weights=legit_amt, minlength=world.n_cards) / np.maximum(
        1, np.bincount(legit_card, minlength=world.n_cards))
    top = np.zeros(world.n_cards)
    np.maximum.at(top, legit_card, legit_amt)
    c = card[inc]
    amount = np.maximum(mean[c] * rng.uniform(5.0, 15.0, m), top[c] * rng.uniform(2.0, 4.0, m))
    amount = np.rint(amount / 100) * 100
    amount = np.minimum(amount, np.rint(world.m_limit[merchant] * rng.uniform(0.8, 0.98, m) / 100) * 100)
    channel = np.where(rng.random(m) < 0.5, K.CH["card_not_present"], K.CH["quick_pay"])
    pays.append(block(m, payment=True, ts=ts, etype=K.ET["payment"], merchant=merchant, user=user[inc],
                      amount=amount, channel=channel, card=card[inc], ip=ip[inc], device=device[inc],
                      fraud=True, scenario=scen, note=note[inc], declined=rng.random(m) < 0.05,
                      p_dispute=0.9, p_report=0.3, delay_lo=1, delay_hi=45))
    return concat(pays, payment=True), concat(others)


# ---- card testing ----------------------------------------------------------------------
def card_testing(world: World, legit: Block) -> Result:
    """Bursts of tiny attempts over many cards from a few devices and IPs; most are declined."""
    rng = stage_rng(world.config.seed, "card_testing")
    scen = K.SCENARIO_CODE["card_testing"]
    n = _count(world, "card_testing", 35, 3, len(legit["ts"]))
    pays, others = [], []
    targets = _merchants_of(world, K.TESTING_MCCS)
    for _ in range(n):
        n_cards = int(rng.integers(40, 200))
        country = str(rng.choice(["CN", "CN", "US", "GB", "HK", "JP"]))
        options = np.asarray(K.BINS[(country, "credit")] + K.BINS[(country, "prepaid")], dtype=object)
        # a BIN attack: most cards share one or two BINs
        bins = options[rng.choice(len(options), size=min(2, len(options)), replace=False)]
        cards = world.new_cards(n_cards, rng, country=country, type_p=(0.7, 0.0, 0.3),
                                bins=bins[rng.integers(0, len(bins), n_cards)])
        n_dev = int(rng.integers(1, 4))
        devices = world.new_devices(n_dev)
        n_ip = int(rng.integers(1, 4))
        if rng.random() < 0.5:
            ips = ips_in(K.HOSTING, n_ip, rng)
        else:
            net = ips_in(K.CN_BROADBAND, 1, rng) & ~np.int64(0xFF)
            ips = net + rng.integers(1, 255, n_ip)
        n_users = int(rng.integers(1, 4))
        users = world.new_users(n_users)
        t0 = world.start_ts + int(rng.integers(HOUR, world.days * DAY - 2 * HOUR))
        others.append(_ring_accounts(world, users, devices[np.arange(n_users) % n_dev],
                                     ips[np.arange(n_users) % n_ip], None,
                                     np.full(n_users, t0 - int(rng.integers(600, 3 * HOUR))), scen, rng))
        attempts = int(n_cards * rng.uniform(1.0, 1.6))
        card = np.concatenate([cards, cards[rng.integers(0, n_cards, attempts - n_cards)]])
        rng.shuffle(card)
        ts = _clip_ts(world, t0 + np.cumsum(rng.exponential(8.0, attempts)).astype(np.int64))
        merchant = targets[rng.integers(0, len(targets), 1 + int(rng.random() < 0.3))]
        merchant = merchant[rng.integers(0, len(merchant), attempts)]
        dev_i = (np.searchsorted(cards, card) * n_dev) // n_cards  # each bot works its own share of the list
        pays.append(block(attempts, payment=True, ts=ts, etype=K.ET["payment"], merchant=merchant,
                          user=users[rng.integers(0, n_users, attempts)], amount=rng.integers(1, 600, attempts),
                          channel=K.CH["card_not_present"], card=card, ip=ips[dev_i % n_ip],
                          device=devices[dev_i], fraud=True, scenario=scen,
                          declined=rng.random(attempts) < 0.75,
                          p_dispute=0.55, p_report=0.2, delay_lo=2, delay_hi=40))
    return concat(pays, payment=True), concat(others)


# ---- cash-out merchants ----------------------------------------------------------------
def cash_out(world: World, legit: Block) -> Result:
    """A raised POS: ordinary flow first, then night-time credit-card payments in round amounts
    near the limit from the same few cards, each night's takings withdrawn within hours."""
    rng = stage_rng(world.config.seed, "cash_out")
    scen = K.SCENARIO_CODE["cash_out"]
    w = world.config.weight("cash_out")
    if w <= 0:
        return block(0, payment=True), block(0)
    n = max(2, int(round(0.005 * world.config.merchants * w)))
    codes = np.array([K.MCC_INDEX[m] for m in K.CASH_OUT_MCCS])
    lo_day = max(7, int(world.days * 0.35))
    hi_day = max(lo_day + 1, int(world.days * 0.6))
    # a raised POS has a real stretch of ordinary flow: about a payment a day or more before the turn
    early = legit["ts"] < world.start_ts + lo_day * DAY
    counts = np.bincount(legit["merchant"][early], minlength=world.n_merchants)
    small = (world.m_size <= 1) & (world.m_onboard <= -14) & ~world.m_blacklisted
    ok = np.flatnonzero(np.isin(world.m_mcc, codes) & small & (counts >= 0.8 * lo_day))
    if len(ok) < n:
        ok = np.flatnonzero(small)
        ok = ok[np.argsort(-counts[ok], kind="stable")][: max(n, len(ok) // 4)]
    chosen = ok[rng.choice(len(ok), size=min(n, len(ok)), replace=False)]
    world.m_cash_out[chosen] = True
    pays, others = [], []
    night_hours = np.array([22, 23, 0, 1, 2, 3, 4, 5])
    night_p = np.array([0.08, 0.12, 0.2, 0.2, 0.16, 0.12, 0.08, 0.04])
    for mer in chosen:
        limit = int(world.m_limit[mer])
        turn = int(rng.integers(lo_day, hi_day))
        n_ring = int(rng.integers(3, 9))
        ring_users = world.new_users(n_ring)
        ring_dev = world.new_devices(n_ring)
        per = rng.integers(1, 3, n_ring)
        ring_cards = world.new_cards(int(per.sum()), rng, country="CN", type_p=(1.0, 0.0, 0.0))
        card_user = np.repeat(ring_users, per)
        card_dev = np.repeat(ring_dev, per)
        home16 = world.cn16[rng.integers(0, len(world.cn16))]
        for d in range(turn, world.days):
            if rng.random() > 0.6:
                continue
            k = int(rng.integers(3, 10))
            h = rng.choice(night_hours, size=k, p=night_p)
            day = np.where(h >= 22, d, d + 1)
            ts = world.start_ts + day * DAY + h * HOUR + rng.integers(0, HOUR, k)
            keep = ts < world.end_ts
            if not keep.any():
                continue
            ts, k = np.sort(ts[keep]), int(keep.sum())
            ci = rng.integers(0, len(ring_cards), k)
            u = rng.random(k)
            amount = np.where(
                u < 0.7, limit - 10_000 * rng.integers(0, limit // 100_000 + 1, k),  # round, within 10%
                np.where(u < 0.9, limit - 100 * rng.integers(1, 21, k),                # 4,999.00 style
                         100_000 * rng.integers(10, 31, k)))                           # 1,000-3,000 round
            amount = np.minimum(amount, limit)
            pos = rng.random(k) < 0.7
            device = np.where(pos, -1, card_dev[ci])
            ip = np.where(pos, -1, host_in_16(np.full(k, home16), rng.integers(0, 1 << 16, k)))
            pays.append(block(k, payment=True, ts=ts, etype=K.ET["payment"], merchant=mer,
                              user=card_user[ci], amount=amount,
                              channel=np.where(pos, K.CH["pos"], K.CH["quick_pay"]), card=ring_cards[ci],
                              ip=ip, device=device, fraud=True, scenario=scen,
                              p_dispute=0.4, p_report=1.0, delay_lo=15, delay_hi=60))
            tw = int(ts.max() + rng.integers(HOUR // 2, 3 * HOUR))
            if tw < world.end_ts:
                others.append(block(1, ts=tw, etype=K.ET["withdrawal"], merchant=mer,
                                    amount=int(amount.sum() * rng.uniform(0.9, 0.98)), fraud=True,
                                    scenario=scen, note=K.NOTE["cash_out_withdrawal"]))
    return concat(pays, payment=True), concat(others)


# ---- volume spikes ---------------------------------------------------------------------
def _daily_counts(world: World, legit: Block) -> np.ndarray:
    day = world.day_of(legit["ts"])
    key = legit["merchant"].astype(np.int64) * world.days + day
    return np.bincount(key, minlength=world.n_merchants * world.days).reshape(world.n_merchants, world.days)


def volume_spike(world: World, legit: Block, factor: int) -> Result:
    """Fake orders (刷单) push an established merchant to ``factor`` times its usual daily volume
    in a few hours, from many fresh accounts on a handful of devices."""
    name = f"volume_spike_{factor}x"
    rng = stage_rng(world.config.seed, name)
    scen = K.SCENARIO_CODE[name]
    w = world.config.weight(name)
    if w <= 0:
        return block(0, payment=True), block(0)
    n = max(1, int(round(0.004 * world.config.merchants * w)))
    counts = _daily_counts(world, legit)
    min_day = min(28, world.days // 2)
    cap = 150 if factor >= 10 else 400
    candidates = [d for d in range(min_day, world.days) if d not in world.promo_days]
    pays, others = [], []
    used = world.m_cash_out | world.m_blacklisted | world.m_spiked
    for _ in range(n):
        day = int(rng.choice(candidates))
        baseline = np.median(counts[:, day - 7:day], axis=1)
        base_ok = (world.m_onboard <= day - min(28, day)) & ~used & (world.m_mcc != K.MCC_INDEX["6540"])
        for mer_p, day_p in world.promo_cells:  # not on a merchant's own promotion day
            base_ok[mer_p[day_p == day]] = False
        ok = np.flatnonzero(base_ok & (baseline >= 5) & (baseline <= cap))
        if len(ok) == 0:
            ok = np.flatnonzero(base_ok & (baseline >= 2))
        if len(ok) == 0:
            continue
        mer = int(ok[rng.integers(0, len(ok))])
        used[mer] = True
        # the day ends at about factor x the merchant's own 7-day median, whatever its real customers did
        target = factor * baseline[mer] * rng.uniform(1.0, 1.15)
        extra = max(int(round(target - counts[mer, day])), int(round((factor - 1) * baseline[mer] * 0.8)))
        h0 = int(rng.integers(8, 15))
        span = int(rng.integers(5, 10)) * HOUR
        ts = np.sort(world.start_ts + day * DAY + h0 * HOUR + rng.integers(0, span, extra))
        ts = _clip_ts(world, ts)
        n_users = max(2, (extra + 2) // 3)
        users = world.new_users(n_users)
        cards = world.new_cards(n_users, rng, type_p=(0.4, 0.6, 0.0))
        n_dev = max(1, n_users // 8)
        devices = world.new_devices(n_dev)
        nets = ips_in(K.CN_BROADBAND, n_dev, rng) & ~np.int64(0xFF)
        ud = np.arange(n_users) % n_dev
        uip = nets[ud] + rng.integers(1, 255, n_users)
        others.append(_ring_accounts(world, users, devices[ud], uip, cards,
                                     np.full(n_users, ts[0]) - rng.integers(2 * HOUR, 30 * HOUR, n_users),
                                     scen, rng, note=K.NOTE["brushing"]))
        ui = rng.integers(0, n_users, extra)
        merchants = np.full(extra, mer, dtype=np.int32)
        amount = amounts_for(world, merchants, np.zeros(extra), rng, spread=0.5)
        mcc = world.m_mcc[mer]
        chan = rng.choice(len(K.CHANNELS), size=extra, p=K.MCC_CHANNELS[mcc])
        chan = np.where(chan == K.CH["pos"], K.CH["quick_pay"], chan)
        pays.append(block(extra, payment=True, ts=ts, etype=K.ET["payment"], merchant=merchants,
                          user=users[ui], amount=amount, channel=chan, card=cards[ui],
                          ip=nets[ud[ui]] + rng.integers(1, 255, extra), device=devices[ud[ui]],
                          fraud=True, scenario=scen, note=K.NOTE["brushing"],
                          p_dispute=0.6, p_report=0.8, delay_lo=3, delay_hi=30))
    world.m_spiked[:] = used & ~world.m_cash_out & ~world.m_blacklisted
    return concat(pays, payment=True), concat(others)


# ---- proxy / VPN / Tor / hosting IPs ---------------------------------------------------
def proxy_ip(world: World, legit: Block) -> Result:
    """Fraud behind anonymisers: datacenter, VPN and Tor exits, country unlike the card's."""
    rng = stage_rng(world.config.seed, "proxy_ip")
    scen = K.SCENARIO_CODE["proxy_ip"]
    n = _count(world, "proxy_ip", 500, 4, len(legit["ts"]))
    if n == 0:
        return block(0, payment=True), block(0)
    kind = rng.choice(3, size=n, p=[0.45, 0.30, 0.25])  # hosting, vpn, tor
    kind[:3] = np.arange(3)[: min(3, n)]
    ranges = (K.HOSTING, K.VPN, K.TOR)
    notes = np.array([K.NOTE["ip:hosting"], K.NOTE["ip:vpn"], K.NOTE["ip:tor"]])
    ip = np.empty(n, dtype=np.int64)
    for j in range(3):
        ip[kind == j] = ips_in(ranges[j], int((kind == j).sum()), rng)
    device = world.new_devices(n)
    ato = rng.random(n) < 0.4
    victims = rng.integers(0, world.n_shoppers, n)
    user = np.where(ato, victims, -1)
    user[~ato] = world.new_users(int((~ato).sum()))
    card = np.where(ato, world.u_cards[victims, 0], -1)
    foreign = rng.random(n) < 0.4
    card[~ato & ~foreign] = world.new_cards(int((~ato & ~foreign).sum()), rng, type_p=(0.8, 0.2, 0.0))
    fc = ~ato & foreign
    card[fc] = world.new_cards(int(fc.sum()), rng, type_p=(0.8, 0.1, 0.1),
                               country=rng.choice(np.array([K.CC[c] for c in ("US", "GB", "HK", "JP", "KR")]),
                                                  size=int(fc.sum())))
    t0 = world.start_ts + rng.integers(DAY, world.days * DAY - 6 * HOUR, n)
    others = [block(int(ato.sum()), ts=t0[ato] - 300, etype=K.ET["login"], user=user[ato], device=device[ato],
                    ip=ip[ato], fraud=True, scenario=scen, note=notes[kind[ato]]),
              _ring_accounts(world, user[~ato], device[~ato], ip[~ato], card[~ato],
                             t0[~ato] - rng.integers(600, 2 * HOUR, int((~ato).sum())), scen, rng)]
    k = rng.integers(1, 6, n)
    inc = np.repeat(np.arange(n), k)
    m = len(inc)
    ts = _clip_ts(world, t0[inc] + rng.integers(0, 4 * HOUR, m))
    targets = _merchants_of(world, K.HIGH_VALUE_MCCS, min_size=1)
    merchant = targets[rng.integers(0, len(targets), m)]
    amount = np.rint(rng.lognormal(np.log(2000.0), 0.6, m)) * 100
    amount = np.minimum(amount, np.rint(world.m_limit[merchant] * rng.uniform(0.5, 0.98, m) / 100) * 100)
    pays = block(m, payment=True, ts=ts, etype=K.ET["payment"], merchant=merchant, user=user[inc],
                 amount=amount, channel=np.where(rng.random(m) < 0.6, K.CH["card_not_present"], K.CH["quick_pay"]),
                 card=card[inc], ip=ip[inc], device=device[inc], fraud=True, scenario=scen, note=notes[kind[inc]],
                 declined=rng.random(m) < 0.08, p_dispute=0.8, p_report=0.3, delay_lo=1, delay_hi=50)
    return pays, concat(others)


# ---- promotion abuse -------------------------------------------------------------------
def promotion_abuse(world: World, legit: Block) -> Result:
    """A ring (羊毛党) opens many new accounts from a few devices or one /24 and takes each
    account's new-user coupon with a first small payment just above the coupon threshold."""
    rng = stage_rng(world.config.seed, "promotion_abuse")
    scen = K.SCENARIO_CODE["promotion_abuse"]
    n = _count(world, "promotion_abuse", 20, 2, len(legit["ts"]))
    pays, others = [], []
    targets = _merchants_of(world, K.PROMO_MCCS)
    for r in range(n):
        size = int(rng.integers(15, 80))
        users = world.new_users(size)
        if r % 2 == 0:  # few devices, IPs from the mobile network
            n_dev = int(rng.integers(1, 5))
            devices = world.new_devices(n_dev)[np.arange(size) % n_dev]
            ips = ips_in(K.CN_MOBILE, size, rng)
        else:  # one /24, a fresh (emulated) device id per account
            devices = world.new_devices(size)
            net = ips_in(K.CN_BROADBAND, 1, rng) & ~np.int64(0xFF)
            ips = net + rng.integers(1, 255, size)
        n_cards = max(1, int(size * rng.uniform(0.3, 1.0)))
        pool = world.new_cards(n_cards, rng, type_p=(0.0, 0.7, 0.3))
        cards = pool[np.arange(size) % n_cards]
        if world.promo_days and rng.random() < 0.7:
            day = int(rng.choice(world.promo_days))
        else:
            day = int(rng.integers(0, world.days))
        t0 = world.start_ts + day * DAY + int(rng.integers(9, 21)) * HOUR
        ts_signup = t0 + np.sort(rng.integers(0, 3 * HOUR, size))
        others.append(_ring_accounts(world, users, devices, ips, cards, ts_signup, scen, rng))
        merchants = targets[rng.integers(0, len(targets), int(rng.integers(1, 4)))]
        threshold = int(rng.choice([10, 20, 30, 50])) * 100
        tp = _clip_ts(world, ts_signup + rng.integers(10 * 60, 90 * 60, size))
        pays.append(block(size, payment=True, ts=tp, etype=K.ET["payment"],
                          merchant=merchants[rng.integers(0, len(merchants), size)], user=users,
                          amount=threshold + rng.integers(0, 500, size),
                          channel=np.where(rng.random(size) < 0.7, K.CH["wallet"], K.CH["quick_pay"]),
                          card=cards, ip=ips, device=devices, fraud=True, scenario=scen,
                          p_dispute=0.6, p_report=1.0, delay_lo=1, delay_hi=20))
    return concat(pays, payment=True), concat(others)


# ---- blacklisted entities --------------------------------------------------------------
def blacklisted(world: World, legit: Block) -> Result:
    """Known bad actors come back: each incident uses at least one listed card, user, device,
    IP or merchant (the lists are written to blacklist.json)."""
    rng = stage_rng(world.config.seed, "blacklisted")
    scen = K.SCENARIO_CODE["blacklisted"]
    n = _count(world, "blacklisted", 150, 10, len(legit["ts"]))
    kinds = ("cards", "users", "devices", "ips", "merchants")
    per = max(2, n // 10)
    listed = {
        "cards": world.new_cards(per, rng, type_p=(0.6, 0.3, 0.1)),
        "users": world.new_users(per),
        "devices": world.new_devices(per),
        "ips": np.concatenate([ips_in(K.HOSTING, per // 2, rng), ips_in(K.CN_BROADBAND, per - per // 2, rng)]),
        "merchants": world.new_merchants(max(1, per // 2), rng, mccs=("5999", "5815", "5732"),
                                         onboard_day=rng.integers(-90, max(1, world.days // 2), max(1, per // 2))),
    }
    world.m_blacklisted[listed["merchants"]] = True
    world.blacklist = listed
    if n == 0:
        world.blacklist = {k: v[:0] for k, v in listed.items()}
        return block(0, payment=True), block(0)
    pays, others = [], []
    targets = _merchants_of(world, K.HIGH_VALUE_MCCS + ("5999", "5691"))
    for i in range(n):
        kind = kinds[i % len(kinds)]
        pick = listed[kind][(i // len(kinds)) % len(listed[kind])]
        user = pick if kind == "users" else world.new_users(1)[0]
        card = pick if kind == "cards" else world.new_cards(1, rng, type_p=(0.6, 0.4, 0.0))[0]
        device = pick if kind == "devices" else world.new_devices(1)[0]
        ip = pick if kind == "ips" else ips_in(K.CN_BROADBAND, 1, rng)[0]
        if kind == "merchants":
            lo = max(0, int(world.m_onboard[pick])) * DAY
            k = int(rng.integers(2, 6))
            merchant = np.full(k, pick)
        else:
            lo = 0
            k = int(rng.integers(1, 5))
            merchant = targets[rng.integers(0, len(targets), k)]
        t0 = world.start_ts + int(rng.integers(lo, world.days * DAY - HOUR))
        if kind != "merchants" and rng.random() < 0.5:
            others.append(block(1, ts=t0 - int(rng.integers(60, 600)), etype=K.ET["login"], user=user,
                                device=device, ip=ip, fraud=True, scenario=scen))
        ts = _clip_ts(world, np.sort(t0 + rng.integers(0, 2 * HOUR, k)))
        amount = np.minimum(np.rint(rng.lognormal(np.log(800.0), 0.8, k)) * 100,
                            np.rint(world.m_limit[merchant] * 0.85 / 100) * 100)
        pays.append(block(k, payment=True, ts=ts, etype=K.ET["payment"], merchant=merchant, user=user,
                          amount=amount, channel=K.CH["quick_pay"], card=card, ip=ip, device=device,
                          fraud=True, scenario=scen, declined=rng.random(k) < 0.05,
                          p_dispute=0.6, p_report=0.7, delay_lo=1, delay_hi=30))
    return concat(pays, payment=True), concat(others)


def _spike3(world: World, legit: Block) -> Result:
    return volume_spike(world, legit, 3)


def _spike10(world: World, legit: Block) -> Result:
    return volume_spike(world, legit, 10)


#: Scenario name -> generator, in the order they run (the order is part of determinism).
GENERATORS: dict[str, Callable[[World, Block], Result]] = {
    "blacklisted": blacklisted,   # first: it adds the listed merchants the others avoid
    "cash_out": cash_out,
    "volume_spike_3x": _spike3,
    "volume_spike_10x": _spike10,
    "stolen_card": stolen_card,
    "card_testing": card_testing,
    "proxy_ip": proxy_ip,
    "promotion_abuse": promotion_abuse,
}
