"""The simulated world: merchants, shoppers, their cards and devices.

Entities are rows of numpy arrays, referred to by integer index; fraud scenarios
add their own (fresh accounts, stolen cards, fraud devices, fake shops) through
the ``new_*`` methods, and the frame builder turns indexes into ids at the end.
Ids are assigned through a seeded permutation so that an id's number says
nothing about whether the entity was created by a fraud scenario.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np

from fengkong.simulation import constants as K
from fengkong.simulation.config import SimConfig

DAY = 86400
HOUR = 3600


def stage_rng(seed: int, stage: str) -> np.random.Generator:
    """An independent generator per stage, so that changing one stage leaves the others alone."""
    key = [int(seed) & 0xFFFFFFFF, *(ord(c) for c in stage)]
    return np.random.default_rng(key)


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a cheap vectorised hash of uint64 values."""
    z = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def ips_in(ranges: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n random host addresses (last octet 1..254) in the given (base, size) ranges, weighted by size."""
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    sizes = ranges[:, 1].astype(float)
    which = rng.choice(len(ranges), size=n, p=sizes / sizes.sum())
    off = (rng.random(n) * ranges[which, 1]).astype(np.int64)
    ip = ranges[which, 0] + off
    return (ip & ~np.int64(0xFF)) | rng.integers(1, 255, size=n)


def slash16s(ranges: np.ndarray) -> np.ndarray:
    """Every /16 base inside the ranges."""
    out = [np.arange(b, b + s, 65536, dtype=np.int64) for b, s in ranges if s >= 65536]
    return np.concatenate(out)


def host_in_16(base16: np.ndarray, h: np.ndarray) -> np.ndarray:
    """A host address inside each /16 from hash bits h (last octet never 0 or 255)."""
    h = h.astype(np.uint64)
    third = (h & np.uint64(0xFF)).astype(np.int64)
    last = (1 + (h >> np.uint64(8)) % np.uint64(254)).astype(np.int64)
    return base16 + third * 256 + last


class World:
    """Entities of one simulation and the span they live in."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.days = config.days
        start = datetime(config.start.year, config.start.month, config.start.day,
                         tzinfo=timezone(timedelta(seconds=K.PLATFORM_OFFSET_S)))
        self.start_ts = int(start.timestamp())
        self.end_ts = self.start_ts + config.days * DAY
        self.promo_days = self._promo_days()
        rng = stage_rng(config.seed, "population")
        self.n_devices = 0
        self.n_users = 0
        self._card_bin: list[np.ndarray] = []
        self._card_type: list[np.ndarray] = []
        self._card_country: list[np.ndarray] = []
        self.n_cards = 0
        self.cn16 = slash16s(K.CN_BROADBAND)
        self._build_merchants(rng)
        self._build_shoppers(rng)
        self.blacklist: dict[str, np.ndarray] = {}

    # ---- time -------------------------------------------------------------------------
    def _promo_days(self) -> tuple[int, ...]:
        c = self.config
        if c.promo_days is not None:
            return tuple(sorted(d for d in c.promo_days if 0 <= d < c.days))
        found = []
        for d in range(c.days):
            day = c.start + timedelta(days=d)
            if (day.month, day.day) in ((6, 18), (11, 11), (12, 12)):
                found.append(d)
        if not found and c.days >= 14:
            found.append(int(c.days * 0.7))
        return tuple(found)

    def day_of(self, ts: np.ndarray) -> np.ndarray:
        return (np.asarray(ts) - self.start_ts) // DAY

    def local_hour(self, ts: np.ndarray) -> np.ndarray:
        return ((np.asarray(ts) + K.PLATFORM_OFFSET_S) // HOUR) % 24

    # ---- entity factories -------------------------------------------------------------
    def new_devices(self, n: int) -> np.ndarray:
        idx = np.arange(self.n_devices, self.n_devices + n, dtype=np.int32)
        self.n_devices += n
        return idx

    def new_users(self, n: int) -> np.ndarray:
        idx = np.arange(self.n_users, self.n_users + n, dtype=np.int32)
        self.n_users += n
        return idx

    def new_cards(self, n: int, rng: np.random.Generator, *, country: np.ndarray | str = "CN",
                  type_p: tuple[float, float, float] = (0.4, 0.55, 0.05),
                  bins: np.ndarray | None = None) -> np.ndarray:
        """n cards with issuer country, type (credit/debit/prepaid) and a BIN matching both."""
        countries = np.full(n, K.CC[country], dtype=np.int8) if isinstance(country, str) \
            else np.asarray(country, dtype=np.int8)
        types = rng.choice(3, size=n, p=np.asarray(type_p) / sum(type_p)).astype(np.int8)
        if bins is None:
            bins = np.empty(n, dtype=object)
            for ci in np.unique(countries):
                for ti in range(3):
                    sel = (countries == ci) & (types == ti)
                    k = int(sel.sum())
                    if k:
                        options = K.BINS[(K.COUNTRIES[ci], K.CARD_TYPES[ti])]
                        bins[sel] = np.asarray(options, dtype=object)[rng.integers(0, len(options), k)]
        idx = np.arange(self.n_cards, self.n_cards + n, dtype=np.int32)
        self._card_bin.append(np.asarray(bins, dtype=object))
        self._card_type.append(types)
        self._card_country.append(countries)
        self.n_cards += n
        return idx

    def new_merchants(self, n: int, rng: np.random.Generator, *, mccs: tuple[str, ...],
                      size: int = 0, onboard_day: np.ndarray | int = 0) -> np.ndarray:
        idx = np.arange(self.n_merchants, self.n_merchants + n, dtype=np.int32)
        mcc = np.array([K.MCC_INDEX[m] for m in mccs])[rng.integers(0, len(mccs), n)]
        self._append_merchants(rng, mcc, np.full(n, size), np.broadcast_to(onboard_day, (n,)).astype(np.int32))
        return idx

    def card_table(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return (np.concatenate(self._card_bin), np.concatenate(self._card_type),
                np.concatenate(self._card_country))

    @property
    def card_type(self) -> np.ndarray:
        return np.concatenate(self._card_type)

    # ---- merchants --------------------------------------------------------------------
    def _build_merchants(self, rng: np.random.Generator) -> None:
        c = self.config
        m = c.merchants
        self.n_merchants = 0
        self.m_mcc = np.zeros(0, dtype=np.int16)
        self.m_size = np.zeros(0, dtype=np.int8)
        self.m_onboard = np.zeros(0, dtype=np.int32)
        self.m_weight = np.zeros(0)
        self.m_limit = np.zeros(0, dtype=np.int64)
        self.m_cash_out = np.zeros(0, dtype=bool)
        self.m_blacklisted = np.zeros(0, dtype=bool)
        self.m_spiked = np.zeros(0, dtype=bool)
        mcc = rng.choice(len(K.MCC_TABLE), size=m, p=K.MCC_SHARE)
        size = rng.choice(4, size=m, p=K.SIZE_SHARE)
        new = rng.random(m) < c.new_merchant_share
        onboard = np.where(
            new,
            rng.integers(0, max(1, int(c.days * 0.8)), size=m),  # joins during the span
            -rng.integers(30, 5 * 365, size=m),                 # established
        )
        size = np.where(new, np.minimum(size, 1), size)  # new merchants start small
        self._append_merchants(rng, mcc, size, onboard.astype(np.int32))

    def _append_merchants(self, rng: np.random.Generator, mcc: np.ndarray, size: np.ndarray,
                          onboard: np.ndarray) -> None:
        n = len(mcc)
        weight = K.SIZE_WEIGHT[size] * rng.lognormal(0.0, 0.5, size=n)
        self.m_mcc = np.concatenate([self.m_mcc, mcc.astype(np.int16)])
        self.m_size = np.concatenate([self.m_size, size.astype(np.int8)])
        self.m_onboard = np.concatenate([self.m_onboard, onboard.astype(np.int32)])
        self.m_weight = np.concatenate([self.m_weight, weight])
        self.m_limit = np.concatenate([self.m_limit, K.SIZE_LIMIT_FEN[size].astype(np.int64)])
        self.m_cash_out = np.concatenate([self.m_cash_out, np.zeros(n, dtype=bool)])
        self.m_blacklisted = np.concatenate([self.m_blacklisted, np.zeros(n, dtype=bool)])
        self.m_spiked = np.concatenate([self.m_spiked, np.zeros(n, dtype=bool)])
        self.n_merchants += n

    # ---- shoppers ---------------------------------------------------------------------
    def _build_shoppers(self, rng: np.random.Generator) -> None:
        c = self.config
        s = c.shoppers
        users = self.new_users(s)
        self.n_shoppers = s
        country = rng.choice(len(K.COUNTRIES), size=s, p=K.HOME_COUNTRY_P / K.HOME_COUNTRY_P.sum())
        self.u_country = country.astype(np.int8)
        home = self.cn16[rng.integers(0, len(self.cn16), s)]
        for ci, name in enumerate(K.COUNTRIES):
            sel = country == ci
            if ci and sel.any():
                home[sel] = ips_in(K.FOREIGN_RESIDENTIAL[name], int(sel.sum()), rng) & ~np.int64(0xFFFF)
        self.u_home16 = home
        # devices: one or two
        ndev = np.where(rng.random(s) < 0.35, 2, 1)
        self.u_ndev = ndev
        self.u_devices = np.full((s, 2), -1, dtype=np.int32)
        self.u_devices[:, 0] = self.new_devices(s)
        two = ndev == 2
        self.u_devices[two, 1] = self.new_devices(int(two.sum()))
        # cards: one to four, issued at home
        ncards = rng.choice([1, 2, 3, 4], size=s, p=[0.45, 0.30, 0.17, 0.08])
        self.u_ncards = ncards
        cards = self.new_cards(int(ncards.sum()), rng, country=np.repeat(self.u_country, ncards))
        self.u_cards = np.full((s, 4), -1, dtype=np.int32)
        starts = np.concatenate([[0], np.cumsum(ncards)[:-1]])
        for j in range(4):
            has = ncards > j
            self.u_cards[has, j] = cards[starts[has] + j]
        # habits
        self.u_amount_offset = rng.normal(0.0, 0.45, size=s)
        peak_pool = np.arange(7, 24)
        peak_p = K.HOUR_PROFILE[7:24] / K.HOUR_PROFILE[7:24].sum()
        self.u_peak = rng.choice(peak_pool, size=s, p=peak_p).astype(float)
        self.u_spread = rng.uniform(1.0, 3.0, size=s)
        self.u_rate = rng.lognormal(0.0, 0.9, size=s)
        self.u_rate *= c.payments_per_shopper_day / self.u_rate.mean()
        new = rng.random(s) < c.new_shopper_share
        self.u_signup_ts = np.where(
            new, self.start_ts + (rng.random(s) * (c.days - 1) * DAY).astype(np.int64), np.int64(-1)
        )
        # favourite merchants (by traffic weight, any onboarding date)
        p = self.m_weight / self.m_weight.sum()
        self.u_fav = rng.choice(self.n_merchants, size=(s, 5), p=p).astype(np.int32)
        self.users_legit = users

    def session_ip(self, users: np.ndarray, ts: np.ndarray, salt: int = 0) -> np.ndarray:
        """Home broadband IP of the user for the 6-hour session that holds ts: it changes often,
        within the user's home /16."""
        session = (np.asarray(ts) - self.start_ts) // (6 * HOUR)
        h = mix64((users.astype(np.uint64) << np.uint64(20)) ^ session.astype(np.uint64)
                  ^ np.uint64((self.config.seed * 7919 + salt) & 0xFFFFFFFF))
        return host_in_16(self.u_home16[users], h)
