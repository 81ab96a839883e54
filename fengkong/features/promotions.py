"""Merchants' planned promotions (营销活动): the campaigns a merchant announces ahead, as data.

A promotion day multiplies a shop's volume; without knowing it was planned, the spike
rules cannot tell a sale from a fraud burst. A merchant (or the platform for it)
declares its campaigns: a window ``[start, end)`` and the multiple of its usual daily
volume it expects. The API stores them with the merchant's profile
(``PUT /v1/merchants/{id}/promotions``), replay reads them from a file
(``fengkong replay --promotions FILE``, the simulator's ``promotions.parquet`` shape:
``merchant_id, start, end, expected_multiple``), and the features read them at the
event's own time:

* ``merchant.in_promotion``: the event falls inside one of the merchant's windows
  (false when it has none; missing without a merchant);
* ``merchant.promotion_multiple``: that promotion's expected multiple (the largest
  when windows overlap; missing outside a promotion).

Stored as one text field of the profile hash (`encode`: ``start,end,multiple;...``
with start and end in epoch seconds, sorted), so the decision's one script call reads
it with the profile (one more field of the same HMGET) and Python evaluates it
(`promotion_at`, online in `assemble.derive`, offline per merchant in the twin).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Iterable, Mapping

#: At most this many campaigns per merchant (a bound on the profile's size and on each decision's work).
MAX_PROMOTIONS = 50
#: The expected multiple of usual daily volume a campaign may state.
MULTIPLE_RANGE = (1.0, 100.0)
#: The longest window one campaign may cover.
MAX_WINDOW = timedelta(days=31)
#: The profile hash field that holds the encoded campaigns.
PROFILE_FIELD = "promotions"


@dataclass(frozen=True)
class Promotion:
    """One planned campaign: ``[start, end)`` (aware datetimes) and the expected volume multiple."""

    start: datetime
    end: datetime
    expected_multiple: float


def problems(items: Any) -> list[tuple[str, str]]:
    """Every (field, reason) that makes a list of campaigns unacceptable; [] when it is fine.
    Each item is a mapping with ``start``, ``end`` (ISO 8601 with an offset) and
    ``expected_multiple``; the field names the item (``promotions[2].end``)."""
    if not isinstance(items, list):
        return [("promotions", "must be a list of {start, end, expected_multiple}")]
    out: list[tuple[str, str]] = []
    if len(items) > MAX_PROMOTIONS:
        out.append(("promotions", f"{len(items)} campaigns; at most {MAX_PROMOTIONS} per merchant"))
    for i, item in enumerate(items):
        where = f"promotions[{i}]"
        if not isinstance(item, Mapping):
            out.append((where, "must be an object with start, end, expected_multiple"))
            continue
        unknown = sorted(set(item) - {"start", "end", "expected_multiple", "kind"})
        if unknown:
            out.append((f"{where}.{unknown[0]}", "unknown field (known: start, end, expected_multiple, kind)"))
        times: dict[str, datetime] = {}
        for name in ("start", "end"):
            value = item.get(name)
            try:
                t = datetime.fromisoformat(value) if isinstance(value, str) else None
            except ValueError:
                t = None
            if t is None or t.tzinfo is None:
                out.append((f"{where}.{name}", "must be an ISO 8601 time with an offset, e.g. "
                                                "2026-11-11T00:00:00+08:00"))
            else:
                times[name] = t
        if len(times) == 2:
            if times["end"] <= times["start"]:
                out.append((f"{where}.end", "must be after start"))
            elif times["end"] - times["start"] > MAX_WINDOW:
                out.append((f"{where}.end", f"the window may cover at most {MAX_WINDOW.days} days"))
        m = item.get("expected_multiple")
        lo, hi = MULTIPLE_RANGE
        if isinstance(m, bool) or not isinstance(m, (int, float)) or not math.isfinite(m) or not lo <= m <= hi:
            out.append((f"{where}.expected_multiple", f"must be a number from {lo:g} to {hi:g}"))
    return out


def parse(items: Iterable[Mapping[str, Any]]) -> list[Promotion]:
    """Campaigns from checked items (`problems` gave []), sorted by start."""
    out = [Promotion(datetime.fromisoformat(str(i["start"])), datetime.fromisoformat(str(i["end"])),
                     float(i["expected_multiple"])) for i in items]
    return sorted(out, key=lambda p: (p.start, p.end))


def encode(promotions: Iterable[Promotion]) -> str:
    """The profile field's text: ``start,end,multiple`` per campaign (epoch seconds), ``;`` between."""
    return ";".join(f"{int(p.start.timestamp())},{int(p.end.timestamp())},{p.expected_multiple:g}"
                    for p in sorted(promotions, key=lambda p: (p.start, p.end)))


@functools.lru_cache(maxsize=4096)
def decode(text: str) -> tuple[tuple[int, int, float], ...]:
    """(start_us, end_us, multiple) of each campaign in a profile field's text."""
    out = []
    for part in text.split(";"):
        if part:
            start, end, mult = part.split(",")
            out.append((int(start) * 1_000_000, int(end) * 1_000_000, float(mult)))
    return tuple(out)


def promotion_at(text: str | None, ts_us: int) -> tuple[bool, float | None]:
    """(in a promotion, its expected multiple or None) at ``ts_us`` for a profile field's text."""
    if not text:
        return False, None
    best: float | None = None
    for start, end, mult in decode(text):
        if start <= ts_us < end:
            best = mult if best is None else max(best, mult)
    return best is not None, best


def to_items(promotions: Iterable[Promotion]) -> list[dict[str, Any]]:
    """Campaigns as the API answers them."""
    return [{"start": p.start.isoformat(), "end": p.end.isoformat(), "expected_multiple": p.expected_multiple}
            for p in promotions]


def from_text(text: str | None) -> list[Promotion]:
    """Campaigns back from a profile field's text (times in UTC)."""
    from datetime import timezone

    return [Promotion(datetime.fromtimestamp(s / 1e6, timezone.utc), datetime.fromtimestamp(e / 1e6, timezone.utc), m)
            for s, e, m in decode(text or "")]


def texts_by_merchant(frame: Any) -> dict[str, str]:
    """A promotions table (``merchant_id, start, end, expected_multiple``; the simulator's
    promotions.parquet or a CSV) as each merchant's profile text. Rows are checked like the
    API's items; a bad row raises ValueError naming its row and field."""
    items: dict[str, list[dict[str, Any]]] = {}
    for n, row in enumerate(frame.to_dict("records")):
        mult = row["expected_multiple"]
        if isinstance(mult, str):  # a CSV read as text
            try:
                mult = float(mult)
            except ValueError:
                pass
        elif hasattr(mult, "item"):  # a numpy scalar
            mult = mult.item()
        item = {"start": str(row["start"]), "end": str(row["end"]), "expected_multiple": mult}
        bad = problems([item])
        if bad:
            field, reason = bad[0]
            raise ValueError(f"promotions row {n + 1}: {field.replace('promotions[0].', '')}: {reason}")
        items.setdefault(str(row["merchant_id"]), []).append(item)
    out = {}
    for merchant, its in items.items():
        if len(its) > MAX_PROMOTIONS:
            raise ValueError(f"promotions: merchant {merchant} has {len(its)} campaigns; at most {MAX_PROMOTIONS}")
        out[merchant] = encode(parse(its))
    return out


__all__ = ["MAX_PROMOTIONS", "MAX_WINDOW", "MULTIPLE_RANGE", "PROFILE_FIELD", "Promotion", "decode", "encode",
           "from_text", "parse", "problems", "promotion_at", "texts_by_merchant", "to_items"]
