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
#: Card slots per shopper (multi-card shoppers have up to five).
MAX_CARDS = 5
#: Addresses per carrier CGNAT gateway /24.
CGNAT_ADDRS = 8


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
        #: Planned promotions: (merchants, first day, days, expected multiple, kind) per batch.
        self.promotions: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]] = []
        #: (merchants, days) on which a merchant runs a promotion of its own.
        self.promo_cells: list[tuple[np.ndarray, np.ndarray]] = []
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
        self._build_overlap()
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
        """Day offset from the start of the span of epoch seconds ``ts``."""
        return (np.asarray(ts) - self.start_ts) // DAY

    def local_hour(self, ts: np.ndarray) -> np.ndarray:
        """Hour of day (0-23) of epoch seconds ``ts`` in the platform's time zone."""
        return ((np.asarray(ts) + K.PLATFORM_OFFSET_S) // HOUR) % 24

    # ---- entity factories -------------------------------------------------------------
    def new_devices(self, n: int) -> np.ndarray:
        """Indexes of ``n`` new devices (a device has no attributes beyond its id)."""
        idx = np.arange(self.n_devices, self.n_devices + n, dtype=np.int32)
        self.n_devices += n
        return idx

    def new_users(self, n: int) -> np.ndarray:
        """Indexes of ``n`` new users; the caller gives them whatever attributes its story needs."""
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
        """Indexes of ``n`` new merchants with an MCC drawn from ``mccs``, onboarded on ``onboard_day``."""
        idx = np.arange(self.n_merchants, self.n_merchants + n, dtype=np.int32)
        mcc = np.array([K.MCC_INDEX[m] for m in mccs])[rng.integers(0, len(mccs), n)]
        self._append_merchants(rng, mcc, np.full(n, size), np.broadcast_to(onboard_day, (n,)).astype(np.int32))
        return idx

    def card_table(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """BIN, type index and issuer-country index of every card, by card index."""
        return (np.concatenate(self._card_bin), np.concatenate(self._card_type),
                np.concatenate(self._card_country))

    @property
    def card_type(self) -> np.ndarray:
        """Type index (into ``K.CARD_TYPES``) of every card, by card index."""
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
        self.u_cards = np.full((s, MAX_CARDS), -1, dtype=np.int32)
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
        within the user's home /16. Members of one household share the line, so the address too."""
        session = (np.asarray(ts) - self.start_ts) // (6 * HOUR)
        h = mix64((self.u_hh[users].astype(np.uint64) << np.uint64(20)) ^ session.astype(np.uint64)
                  ^ np.uint64((self.config.seed * 7919 + salt) & 0xFFFFFFFF))
        return host_in_16(self.u_home16[users], h)

    # ---- legitimate behaviour that overlaps fraud signals ---------------------------------
    def _build_overlap(self) -> None:
        """Households (shared line, family device, family card), multi-card shoppers, campus and
        company networks, carrier CGNAT, and the sign-up waves of promotion days. Each part draws
        from its own generator; with every knob at 0 nothing here changes the world."""
        c = self.config
        s = self.n_shoppers
        self.u_hh = np.arange(s, dtype=np.int64)          # key of the home line (session IPs)
        self.u_dev2_use = np.full(s, 0.15)               # share of payments on the second device
        self.u_multi = np.zeros(s, dtype=bool)           # spreads payments over 3-5 cards
        self.u_campus = np.full(s, -1, dtype=np.int32)   # campus / company network, -1 none
        self.campus_net = np.zeros(0, dtype=np.int64)    # its egress /24
        self.campus_naddr = np.zeros(0, dtype=np.int64)  # addresses in use in that /24
        self.campus_company = np.zeros(0, dtype=bool)    # company (working hours) or campus (always)
        self.u_cgnat = np.full(s, -1, dtype=np.int32)    # carrier CGNAT gateway, -1 none
        self.cgnat_net = np.zeros(0, dtype=np.int64)
        self.cgnat_naddr = 0
        self.u_family_dev = np.zeros(s, dtype=bool)      # the second device is the household's
        self.u_wave = np.zeros(s, dtype=bool)            # signed up in a promotion-day wave
        self.hh_members = np.zeros(0, dtype=np.int32)    # household members, grouped by household
        self.hh_head = np.zeros(0, dtype=np.int32)       # the head of each member's household
        self.u_signup_dev = self.u_devices[:, 0].copy()
        self.u_first_dev = self.u_devices[:, 0].copy()  # device of the first orders
        self.u_signup_ip = np.full(s, -1, dtype=np.int64)  # -1: the home line's session IP
        cn = np.flatnonzero(self.u_country == K.CC["CN"]).astype(np.int32)
        if c.multi_card_share > 0:
            self._build_multi_cards(stage_rng(c.seed, "multi_cards"))
        if c.household_share > 0:
            self._build_households(stage_rng(c.seed, "households"), cn)
        rng = stage_rng(c.seed, "networks")
        if c.campus_share > 0:
            self._build_campuses(rng, cn)
        if c.cgnat_share > 0 and c.cgnat_users_per_ip > 0:
            self._build_cgnat(rng, cn)
        if c.promo_signup_wave > 0 and self.promo_days:
            self._build_signup_waves(stage_rng(c.seed, "signup_wave"), cn)
        if len(self.cgnat_net):
            # ordinary newcomers often sign up on their phone over the carrier network
            new = np.flatnonzero((self.u_signup_ts >= 0) & ~self.u_wave & (self.u_cgnat >= 0))
            mob = new[rng.random(len(new)) < 0.4]
            self.u_signup_ip[mob] = self.cgnat_ip(self.u_cgnat[mob], rng)

    def _build_multi_cards(self, rng: np.random.Generator) -> None:
        s = self.n_shoppers
        multi = np.flatnonzero(rng.random(s) < self.config.multi_card_share)
        target = rng.integers(3, MAX_CARDS + 1, len(multi))
        extra = np.maximum(0, target - self.u_ncards[multi])
        cards = self.new_cards(int(extra.sum()), rng, country=np.repeat(self.u_country[multi], extra),
                               type_p=(0.6, 0.4, 0.0))
        starts = np.concatenate([[0], np.cumsum(extra)[:-1]]).astype(np.int64)
        for j in range(MAX_CARDS):
            has = extra > j
            self.u_cards[multi[has], self.u_ncards[multi[has]] + j] = cards[starts[has] + j]
        self.u_ncards = self.u_ncards.copy()
        self.u_ncards[multi] += extra
        self.u_multi[multi] = True

    def _build_households(self, rng: np.random.Generator, cn: np.ndarray) -> None:
        c = self.config
        k = int(round(c.household_share * len(cn)))
        members = rng.permutation(cn)[:k]
        sizes = rng.choice([2, 3, 4], size=k // 2 + 1, p=[0.45, 0.35, 0.20])
        hid = np.repeat(np.arange(len(sizes)), sizes)[:k]
        count = np.bincount(hid, minlength=len(sizes))
        keep = count[hid] >= 2
        members, hid = members[keep], hid[keep]
        if len(members) == 0:
            return
        first = np.flatnonzero(np.concatenate([[True], hid[1:] != hid[:-1]]))
        head = np.repeat(members[first], np.diff(np.concatenate([first, [len(members)]])))
        # one home line: same /16, same address at the same time
        self.u_hh[members] = head
        self.u_home16[members] = self.u_home16[head]
        self.hh_members = members
        self.hh_head = head
        n_hh = len(first)
        # a family phone or tablet every member also pays with (it takes the second-device slot)
        fam = rng.random(n_hh) < c.family_device_share
        fam_dev = np.full(n_hh, -1, dtype=np.int32)
        fam_dev[fam] = self.new_devices(int(fam.sum()))
        g = np.searchsorted(first, np.arange(len(members)), side="right") - 1
        on = fam[g]
        m = members[on]
        self.u_devices[m, 1] = fam_dev[g[on]]
        self.u_ndev = self.u_ndev.copy()
        self.u_ndev[m] = 2
        self.u_dev2_use[m] = c.family_device_use
        self.u_family_dev[m] = True
        # a family card: the head's first card, also used by the others on their own devices
        card = rng.random(n_hh) < c.family_card_share
        other = card[g] & (members != head) & (self.u_ncards[members] < MAX_CARDS)
        m, h = members[other], head[other]
        self.u_cards[m, self.u_ncards[m]] = self.u_cards[h, 0]
        self.u_ncards[m] += 1

    def _build_campuses(self, rng: np.random.Generator, cn: np.ndarray) -> None:
        k = int(round(self.config.campus_share * len(cn)))
        if k == 0:
            return
        members = rng.permutation(cn)[:k]
        n = max(1, int(round(k / 80)))
        w = rng.lognormal(0.0, 0.8, n)
        self.u_campus[members] = rng.choice(n, size=k, p=w / w.sum())
        self.campus_company = rng.random(n) < 0.5
        net = np.where(self.campus_company, ips_in(K.CN_BROADBAND, n, rng), ips_in(K.CN_CAMPUS, n, rng))
        self.campus_net = net & ~np.int64(0xFF)
        self.campus_naddr = rng.integers(2, 7, n)

    def campus_ip(self, campus: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """An egress address of each campus / company network."""
        return self.campus_net[campus] + 1 + (rng.random(len(campus)) * self.campus_naddr[campus]).astype(np.int64)

    def _build_cgnat(self, rng: np.random.Generator, cn: np.ndarray) -> None:
        c = self.config
        users = cn[rng.random(len(cn)) < c.cgnat_share]
        if len(users) == 0:
            return
        addrs = max(1, int(np.ceil(len(users) / c.cgnat_users_per_ip)))
        n = max(1, -(-addrs // CGNAT_ADDRS))
        nets = np.unique(ips_in(K.CN_MOBILE_CGNAT, 4 * n + 8, rng) & ~np.int64(0xFF))
        self.cgnat_net = rng.permutation(nets)[:n]
        self.cgnat_naddr = min(CGNAT_ADDRS, addrs)
        self.u_cgnat[users] = rng.integers(0, len(self.cgnat_net), len(users))

    def cgnat_ip(self, gateway: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A public address of each carrier gateway: one of a few per /24, shared by many phones."""
        return self.cgnat_net[gateway] + 1 + rng.integers(0, self.cgnat_naddr, len(gateway))

    def _build_signup_waves(self, rng: np.random.Generator, cn: np.ndarray) -> None:
        """Genuine newcomers of promotion days: a burst of sign-ups at the sale's opening and in the
        evening, families together (often on the family device), classmates on one campus
        network, many over the carrier network."""
        c = self.config
        wave_n = int(round(c.promo_signup_wave * self.n_shoppers))
        if wave_n == 0:
            return
        hh_of = np.full(self.n_shoppers, -1, dtype=np.int64)
        hh_of[self.hh_members] = self.hh_head
        for day in self.promo_days:
            free = cn[(self.u_signup_ts[cn] < 0) & ~self.u_wave[cn]]
            if len(free) == 0:
                break
            w = np.where(self.u_campus[free] >= 0, 3.0, 1.0)  # students love coupons
            seeds = free[rng.choice(len(free), size=min(wave_n, len(free)), replace=False, p=w / w.sum())]
            hour = rng.choice(24, size=len(seeds), p=K.PROMO_HOUR_PROFILE)
            ts = self.start_ts + day * DAY + hour * HOUR + rng.integers(0, HOUR, len(seeds))
            users, times, together = [seeds], [ts], [np.zeros(len(seeds), dtype=bool)]
            # a family joins together: the others of the household sign up minutes later
            fam = seeds[(hh_of[seeds] >= 0) & (rng.random(len(seeds)) < 0.3)]
            if len(fam):
                pos = np.flatnonzero(np.isin(hh_of, hh_of[fam]) & (self.u_signup_ts < 0) & ~np.isin(
                    np.arange(self.n_shoppers), seeds))
                t_of = dict(zip(hh_of[seeds].tolist(), ts.tolist()))
                tj = np.array([t_of[h] for h in hh_of[pos].tolist()], dtype=np.int64)
                users.append(pos)
                times.append(tj + rng.integers(60, 1800, len(pos)))
                together.append(np.ones(len(pos), dtype=bool))
                together[0] = np.isin(hh_of[seeds], hh_of[pos]) & (hh_of[seeds] >= 0)
            u = np.concatenate(users).astype(np.int32)
            t = np.minimum(np.concatenate(times), self.end_ts - HOUR)
            tog = np.concatenate(together)
            self.u_signup_ts[u] = t
            self.u_wave[u] = True
            # families joining together often sign up on the family device
            fd = tog & self.u_family_dev[u] & (rng.random(len(u)) < 0.4)
            self.u_signup_dev[u[fd]] = self.u_devices[u[fd], 1]
            self.u_first_dev[u[fd]] = self.u_devices[u[fd], 1]
            # classmates on the campus network, most others over the carrier network
            camp = (self.u_campus[u] >= 0) & (rng.random(len(u)) < 0.7)
            self.u_signup_ip[u[camp]] = self.campus_ip(self.u_campus[u[camp]], rng)
            mob = ~camp & ~tog & (self.u_cgnat[u] >= 0) & (rng.random(len(u)) < 0.6)
            self.u_signup_ip[u[mob]] = self.cgnat_ip(self.u_cgnat[u[mob]], rng)
            self._street_booths(rng, u[~camp & ~tog], day)

    def _street_booths(self, rng: np.random.Generator, users: np.ndarray, day: int) -> None:
        """地推: a promoter at a mall or metro exit signs passers-by up on the booth's tablet, 4-15
        within two hours, over one connection; they pay with their own phones afterwards."""
        k = int(round(self.config.street_signup_share * len(users)))
        if k < 4:
            return
        users = rng.permutation(users)[:k]
        sizes = rng.integers(4, 16, k // 4 + 1)
        booth = np.repeat(np.arange(len(sizes)), sizes)[:k]
        n = int(booth.max()) + 1
        dev = self.new_devices(n)
        if len(self.cgnat_net):
            ip = self.cgnat_ip(rng.integers(0, len(self.cgnat_net), n), rng)
        else:
            ip = ips_in(K.CN_BROADBAND, n, rng)
        t0 = self.start_ts + day * DAY + rng.integers(10, 19, n) * HOUR
        t = np.minimum(t0[booth] + rng.integers(0, 2 * HOUR, k), self.end_ts - HOUR)
        self.u_signup_ts[users] = t
        self.u_signup_dev[users] = dev[booth]
        self.u_signup_ip[users] = ip[booth]

    def signup_ip(self, users: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """The address a new shopper signed up from (and binds cards from, in the same hour)."""
        fixed = self.u_signup_ip[users]
        return np.where(fixed >= 0, fixed, self.session_ip(users, ts))
