"""Putting it together: generate every block, sort, name entities, build the flat frame."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Iterable

import numpy as np
import pandas as pd

from fengkong.events import FLAT_COLUMNS, LABEL_COLUMNS
from fengkong.simulation import constants as K
from fengkong.simulation.blocks import Block, concat
from fengkong.simulation.config import SimConfig
from fengkong.simulation.outcomes import outcomes
from fengkong.simulation.population import World, stage_rng
from fengkong.simulation.scenarios import GENERATORS
from fengkong.simulation.traffic import legit_traffic

#: Columns of the events frame: the flat event, the labels, and an optional note.
COLUMNS: tuple[str, ...] = (*FLAT_COLUMNS, *LABEL_COLUMNS, "note")

#: Columns of the planned promotions (promotions.parquet).
PROMOTION_COLUMNS: tuple[str, ...] = ("merchant_id", "start", "end", "expected_multiple", "kind")

BLACKLIST_KEYS = ("blocked_cards", "blocked_users", "blocked_devices", "blocked_ips", "blocked_merchants")


@dataclass
class Simulation:
    """A simulated history: the events, the merchants' profiles, the analysts' blacklist and the
    merchants' planned promotions."""

    config: SimConfig
    events: pd.DataFrame
    merchants: pd.DataFrame
    blacklist: dict[str, list[str]]
    timings: dict[str, float] = field(default_factory=dict)
    promotions: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(PROMOTION_COLUMNS)))


def simulate(config: SimConfig) -> pd.DataFrame:
    """The labelled event stream of ``config`` (see ``run`` for the side tables)."""
    return run(config).events


def run(config: SimConfig) -> Simulation:
    """Generate a whole history. Deterministic: the same config gives an identical result."""
    world, allrows, timings = generate(config)
    t = time.perf_counter()
    events = _frame(world, allrows)
    merchants = _merchant_frame(world)
    blacklist = _blacklist(world)
    promotions = _promotion_frame(world)
    timings["frame"] = time.perf_counter() - t
    return Simulation(config=config, events=events, merchants=merchants, blacklist=blacklist, timings=timings,
                      promotions=promotions)


def generate(config: SimConfig) -> tuple[World, Block, dict[str, float]]:
    """Every event of the history as numeric blocks (not yet sorted or named), the world they
    came from, and each stage's time: what `run` frames whole and `writer.write_run` frames
    in slices."""
    timings: dict[str, float] = {}
    t = time.perf_counter()
    world = World(config)
    legit, accounts = legit_traffic(world)
    timings["legit"] = time.perf_counter() - t
    t = time.perf_counter()
    pays, others = [legit], [accounts]
    for name, gen in GENERATORS.items():
        p, o = gen(world, legit)
        pays.append(p)
        others.append(o)
    payments = concat(pays, payment=True)
    timings["fraud"] = time.perf_counter() - t
    t = time.perf_counter()
    after = outcomes(world, payments)
    allrows = concat([{k: payments[k] for k in after}, after, concat(others)])
    timings["outcomes"] = time.perf_counter() - t
    return world, allrows, timings


# ---- naming ------------------------------------------------------------------------------
def _names(prefix: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Ids for n entities through a seeded permutation (an id's number carries no label), plus a
    trailing None for index -1."""
    width = max(6, len(str(n)))
    perm = rng.permutation(n)
    out = np.empty(n + 1, dtype=object)
    out[:n] = [f"{prefix}{i:0{width}d}" for i in perm]
    out[n] = None
    return out


def _lookup(table: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """table[idx] with -1 mapping to the trailing None."""
    return table[np.where(idx < 0, len(table) - 1, idx)]


def _with_none(values: tuple[str, ...] | list[str] | np.ndarray) -> np.ndarray:
    out = np.empty(len(values) + 1, dtype=object)
    out[:-1] = list(values)
    out[-1] = None
    return out


def ip_text(ips: np.ndarray) -> np.ndarray:
    """Dotted-quad text of integer IPv4s (-1 -> None), formatting each distinct address once."""
    uniq, inv = np.unique(ips, return_inverse=True)
    octets = [(uniq >> s) & 0xFF for s in (24, 16, 8, 0)]
    table = np.array([str(i) for i in range(256)], dtype=object)
    text = table[octets[0] % 256] + "." + table[octets[1]] + "." + table[octets[2]] + "." + table[octets[3]]
    text[uniq < 0] = None
    return text[inv.reshape(-1)]


class Framing:
    """What naming the events needs over the whole history: the event-time order, each row's
    rank in it, and the entity names (drawn once, in a fixed order, from the seeded "names"
    stream), so that any slice of the sorted rows can be framed alone, as `_frame` frames all."""

    def __init__(self, world: World, rows: Block) -> None:
        rng = stage_rng(world.config.seed, "names")
        n = len(rows["ts"])
        self.world, self.rows, self.n = world, rows, n
        self.order = np.lexsort((np.arange(n), rows["ts"]))  # by time, ties in generation order
        self.rank = np.empty(n, dtype=np.int64)
        self.rank[self.order] = np.arange(n)
        self.width = max(9, len(str(n)))
        self.merchants = _names("m_", world.n_merchants, rng)
        self.users = _names("u_", world.n_users, rng)
        self.cards = _names("c_", world.n_cards, rng)
        self.devices = _names("d_", world.n_devices, rng)
        self.card_table = world.card_table()
        # keep the generator's names available for side tables
        world._names = {"merchants": self.merchants, "users": self.users, "cards": self.cards,  # type: ignore[attr-defined]
                        "devices": self.devices}

    def _event_ids(self, ranks: Iterable[int]) -> np.ndarray:
        return np.array([f"ev_{i:0{self.width}d}" for i in ranks], dtype=object)

    def frame(self, lo: int = 0, hi: int | None = None) -> pd.DataFrame:
        """The flat events of sorted positions lo..hi-1 (all by default)."""
        world = self.world
        hi = self.n if hi is None else hi
        r = {k: v[self.order[lo:hi]] for k, v in self.rows.items()}
        event_ids = self._event_ids(range(lo, hi))
        refers = np.full(hi - lo, None, dtype=object)
        has_ref = r["refers"] >= 0
        refers[has_ref] = self._event_ids(self.rank[r["refers"][has_ref]])

        local = (r["ts"] + K.PLATFORM_OFFSET_S).astype("datetime64[s]")
        occurred = np.char.add(np.datetime_as_string(local, unit="s"), K.PLATFORM_OFFSET)

        c_bin, c_type, c_country = self.card_table
        card = r["card"]
        mcc = _with_none(K.MCC_CODES[world.m_mcc])
        amount = pd.array(np.where(r["amount"] >= 0, r["amount"], 0), dtype="Int64")
        amount[r["amount"] < 0] = pd.NA
        df = pd.DataFrame({
            "event_id": event_ids,
            "type": np.asarray(K.EVENT_TYPES, dtype=object)[r["etype"]],
            "occurred_at": occurred.astype(object),
            "merchant_id": _lookup(self.merchants, r["merchant"]),
            "user_id": _lookup(self.users, r["user"]),
            "amount": amount,
            "currency": "CNY",
            "channel": _lookup(_with_none(K.CHANNELS), r["channel"]),
            "card_fingerprint": _lookup(self.cards, card),
            "card_bin": _lookup(_with_none(c_bin), card),
            "card_type": _lookup(_with_none(np.asarray(K.CARD_TYPES, dtype=object)[c_type]), card),
            "card_issuer_country": _lookup(_with_none(np.asarray(K.COUNTRIES, dtype=object)[c_country]), card),
            "ip": ip_text(r["ip"]),
            "device_id": _lookup(self.devices, r["device"]),
            "merchant_mcc": _lookup(mcc, r["merchant"]),
            "refers_to": refers,
            "challenge_passed": None,  # the simulator sends no challenge results
            "challenge_method": None,
            "is_fraud": r["fraud"].astype(bool),
            "scenario": np.asarray(K.SCENARIO_NAMES, dtype=object)[r["scenario"]],
            "note": np.asarray(K.NOTES, dtype=object)[r["note"]],
        }, index=pd.RangeIndex(lo, hi))
        return df[list(COLUMNS)]


def _frame(world: World, rows: Block) -> pd.DataFrame:
    return Framing(world, rows).frame()


def _merchant_frame(world: World) -> pd.DataFrame:
    names = world._names["merchants"]  # type: ignore[attr-defined]
    m = world.n_merchants
    onboard = [(world.config.start + timedelta(days=int(d))).isoformat() for d in world.m_onboard]
    frame = pd.DataFrame({
        "merchant_id": names[:m],
        "mcc": K.MCC_CODES[world.m_mcc],
        "onboarded_at": onboard,
        "size_class": np.asarray(K.SIZE_CLASSES, dtype=object)[world.m_size],
        "single_limit": world.m_limit.astype(np.int64),
        "is_cash_out": world.m_cash_out.copy(),
        "is_blacklisted": world.m_blacklisted.copy(),
    })
    return frame.sort_values("merchant_id", kind="stable").reset_index(drop=True)


def _promotion_frame(world: World) -> pd.DataFrame:
    """The promotions merchants planned: the platform's days they take part in and their own, each
    from local midnight of its first day to local midnight after its last, with the expected
    multiple of their usual daily volume."""
    names = world._names["merchants"]  # type: ignore[attr-defined]
    if not world.promotions:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(
            PROMOTION_COLUMNS, (object, object, object, float, object))})
    mer = np.concatenate([p[0] for p in world.promotions]).astype(np.int64)
    first = np.concatenate([p[1] for p in world.promotions]).astype(np.int64)
    length = np.concatenate([p[2] for p in world.promotions]).astype(np.int64)
    day0 = np.datetime64(world.config.start.isoformat(), "D")
    def stamp(days: np.ndarray) -> np.ndarray:
        text = np.datetime_as_string((day0 + days).astype("datetime64[s]"), unit="s")
        return np.char.add(text, K.PLATFORM_OFFSET).astype(object)
    frame = pd.DataFrame({
        "merchant_id": names[mer],
        "start": stamp(first),
        "end": stamp(first + length),
        "expected_multiple": np.concatenate([p[3] for p in world.promotions]).astype(float),
        "kind": np.concatenate([np.full(len(p[0]), p[4], dtype=object) for p in world.promotions]),
    })
    return frame.sort_values(["start", "merchant_id"], kind="stable").reset_index(drop=True)


def _blacklist(world: World) -> dict[str, list[str]]:
    names = world._names  # type: ignore[attr-defined]
    bl = world.blacklist
    def ids(kind: str, table: np.ndarray) -> list[str]:
        return sorted(str(table[i]) for i in np.unique(bl.get(kind, np.zeros(0, np.int64))))
    return {
        "blocked_cards": ids("cards", names["cards"]),
        "blocked_users": ids("users", names["users"]),
        "blocked_devices": ids("devices", names["devices"]),
        "blocked_ips": sorted(str(x) for x in ip_text(np.unique(bl.get("ips", np.zeros(0, np.int64))))),
        "blocked_merchants": ids("merchants", names["merchants"]),
    }
