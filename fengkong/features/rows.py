"""The event row: the handful of values every feature is computed from.

Both stores start here, the online store from one `Event`, the offline twin from
a DataFrame of flat events, so that "local hour", "round amount" or "the /24 of
the IP" mean exactly the same thing in both.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd

from fengkong.events import FIXED_OFFSETS, CardType, Channel, Event, EventType, currency_exponent
from fengkong.features.definitions import (
    DEFAULT_BUSINESS_UTC_OFFSET_MIN,
    NIGHT_HOURS,
    ROUND_MAJOR_UNITS,
)
from fengkong.features.ipintel import IpIntel, subnets_of

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_EPOCH_ORDINAL = _EPOCH.toordinal()
US_PER_HOUR = 3_600_000_000
US_PER_DAY = 86_400_000_000
_NIGHT_END = NIGHT_HOURS.stop


def ts_us(when: datetime) -> int:
    """Exact integer microseconds since the epoch (floats would drift between stores)."""
    delta = when - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def is_round(amount_minor: int, currency: str) -> bool:
    step = ROUND_MAJOR_UNITS * 10 ** currency_exponent(currency)
    return amount_minor > 0 and amount_minor % step == 0


#: `is_round`'s step per currency, filled on first use (codes are three letters: bounded)
_ROUND_STEPS: dict[str, int] = {}
#: each enum member's value, by member
_EVENT_TYPES: dict[EventType, str] = {m: m.value for m in EventType}
_CHANNELS: dict[Channel, str] = {m: m.value for m in Channel}
_CARD_TYPES: dict[CardType, str] = {m: m.value for m in CardType}
#: `event_row`: the event's validator stored no minor amount (an event built without validation)
_NOT_SET = object()
#: `event_row`'s columns in their order, each missing; a row starts as a copy: an event without
#: a card or an IP leaves those columns so (``is_credit`` False)
_ROW: dict[str, Any] = dict.fromkeys((
    "event_id", "type", "ts_us", "hour", "is_night", "biz_day", "biz_hour", "biz_night", "amount", "has_amount",
    "currency", "channel", "is_round", "card_fp", "card_type", "card_bin", "card_country", "is_credit", "user_id",
    "device_id", "ip", "subnet", "ip_info", "ip_country", "merchant_id", "merchant_card", "mcc"))
_ROW["is_credit"] = False


def event_row(event: Event, ipintel: IpIntel, biz_offset_min: int = DEFAULT_BUSINESS_UTC_OFFSET_MIN) -> dict[str, Any]:
    """The row of one event (the online store's; `frame_rows` is the offline twin's).

    The time is read once, as the local wall time plus one UTC offset: an aware
    datetime's subtraction (`ts_us`) asks the tzinfo for its offset again, and the
    event's tzinfo answers through a call of its own. The enums' values come from
    dicts, a lookup rather than the enum's ``value`` descriptor."""
    fields = event.__dict__  # the model's field values: one attribute lookup rather than one per field
    when = fields["occurred_at"]
    tz = when.tzinfo  # a fixed offset is asked directly: `datetime.utcoffset` calls it the slow, generic way
    offset = tz.utcoffset(when) if type(tz) in FIXED_OFFSETS else when.utcoffset()
    hour = when.hour  # the wall time's
    # the wall time's seconds since the epoch, then UTC's, and its microseconds: exact integers
    local_s = (when.toordinal() - _EPOCH_ORDINAL) * 86400 + hour * 3600 + when.minute * 60 + when.second
    if offset is None or offset.microseconds:  # naive (refused), or a sub-second offset: as it always was
        t = ts_us(when)
        utc_s = t // 1_000_000
        hour = ((t + (int(offset.total_seconds()) * 1_000_000 if offset else 0)) // US_PER_HOUR) % 24
    else:
        utc_s = local_s - offset.days * 86400 - offset.seconds
        t = utc_s * 1_000_000 + when.microsecond
    # the business time in whole seconds (the offset is whole minutes): its day and hour by
    # divisors below 2**30, which CPython divides by in one step (not so 3.6e9 and 8.64e10)
    biz_s = utc_s + biz_offset_min * 60
    biz_hour = (biz_s // 3600) % 24
    amount = fields.get("_amount_minor", _NOT_SET)  # what `Event.amount_minor` reads, when its validator set it
    if amount is _NOT_SET:
        amount = event.amount_minor
    amount = amount or 0
    currency = fields["currency"]
    step = _ROUND_STEPS.get(currency)
    if step is None:
        step = _ROUND_STEPS[currency] = ROUND_MAJOR_UNITS * 10 ** currency_exponent(currency)
    row = _ROW.copy()  # every column, in order, set below: one presized dict rather than one grown key by key
    card = fields["card"]
    if card is not None:
        card_fields = card.__dict__
        card_fp = row["card_fp"] = card_fields["fingerprint"]
        kind = card_fields["type"]
        card_type = row["card_type"] = _CARD_TYPES[kind] if kind else None
        row["card_bin"] = card_fields["bin"]
        row["card_country"] = card_fields["issuer_country"]
        row["is_credit"] = card_type == "credit"
    else:
        card_fp = None
    ip = fields["ip"]
    merchant = fields["merchant_id"]
    channel = fields["channel"]
    row["event_id"] = fields["event_id"]
    row["type"] = _EVENT_TYPES[fields["type"]]
    row["ts_us"] = t
    row["hour"] = hour
    row["is_night"] = hour < _NIGHT_END
    row["biz_day"] = biz_s // 86400
    row["biz_hour"] = biz_hour
    row["biz_night"] = biz_hour < _NIGHT_END
    row["amount"] = amount
    row["has_amount"] = fields["amount"] is not None
    row["currency"] = currency
    row["channel"] = _CHANNELS[channel] if channel else None
    row["is_round"] = amount > 0 and amount % step == 0  # is_round(amount, currency)
    row["user_id"] = fields["user_id"]
    row["device_id"] = fields["device_id"]
    row["ip"] = ip
    if ip:
        info, row["subnet"] = ipintel.lookup_with_subnet(ip)
        row["ip_info"] = info
        row["ip_country"] = info.country
    row["merchant_id"] = merchant
    row["merchant_card"] = f"{merchant}|{card_fp}" if merchant and card_fp else None
    row["mcc"] = fields["merchant_mcc"]
    return row


_OFFSET = r"(?:Z|([+-])(\d{2}):?(\d{2}))$"


_OFFSET_RE = re.compile(_OFFSET)


def _offsets_us(text: pd.Series) -> np.ndarray:
    """UTC offset of each ISO time, in microseconds (parsed once per distinct suffix)."""
    codes, suffixes = pd.factorize(text.astype("string[pyarrow]").str.slice(-6))
    values = []
    for suffix in suffixes:
        m = _OFFSET_RE.search(str(suffix))
        if m is None or m.group(1) is None:
            values.append(0)
        else:
            sign = -1 if m.group(1) == "-" else 1
            values.append(sign * (int(m.group(2)) * 3600 + int(m.group(3)) * 60) * 1_000_000)
    return np.asarray(values, dtype=np.int64)[codes]


def _text_or_missing(col: pd.Series) -> pd.Series:
    """A text column (pandas' arrow-backed str dtype) with "" and None as missing."""
    col = col.astype("str")
    return col.where(col != "")


def frame_rows(
    events: pd.DataFrame, ipintel: IpIntel, biz_offset_min: int = DEFAULT_BUSINESS_UTC_OFFSET_MIN
) -> pd.DataFrame:
    """The event rows of a flat-event DataFrame (see `fengkong.events.FLAT_COLUMNS`), same index.

    The IP's subnet and intelligence are looked up once per distinct address (a
    history repeats addresses); subnet, ``ip_country`` and ``ip_asn`` come back as
    categoricals (None where unknown), so later steps read one code per row
    rather than one string object.
    """
    n = len(events)

    def col(name: str) -> pd.Series:
        if name in events.columns:
            return _text_or_missing(events[name])
        return pd.Series([None] * n, index=events.index, dtype="str")

    occurred = events["occurred_at"]
    if pd.api.types.is_datetime64_any_dtype(occurred):
        if occurred.dt.tz is None:
            raise ValueError("occurred_at: times must carry a UTC offset")
        t = (occurred.dt.tz_convert("UTC").astype("datetime64[us, UTC]").astype("int64")).to_numpy()
        off = occurred.apply(lambda d: d.utcoffset().total_seconds()).to_numpy(dtype=np.int64) * 1_000_000
    else:
        text = occurred.astype(str)
        parsed = pd.to_datetime(text, utc=True, format="ISO8601")
        t = parsed.astype("datetime64[us, UTC]").astype("int64").to_numpy()
        off = _offsets_us(text)
    local = t + off
    biz = t + biz_offset_min * 60_000_000
    hour = (local // US_PER_HOUR) % 24
    biz_hour = (biz // US_PER_HOUR) % 24

    raw_amount = pd.to_numeric(events["amount"], errors="coerce") if "amount" in events.columns else pd.Series(np.nan, index=events.index)
    has_amount = raw_amount.notna().to_numpy()
    amount = raw_amount.fillna(0).to_numpy(dtype=np.int64)
    currency = col("currency").fillna("CNY")
    cur_code, cur_names = pd.factorize(currency)
    steps = np.array([ROUND_MAJOR_UNITS * 10 ** currency_exponent(c) for c in cur_names] + [100], dtype=np.int64)
    step = steps[cur_code]

    card_fp = col("card_fingerprint")
    card_type = col("card_type")
    merchant = col("merchant_id")
    ip = col("ip")
    idx = events.index
    ip_code, ip_values = pd.factorize(ip, use_na_sentinel=True)
    distinct_ips = pd.Series(ip_values, dtype=ip.dtype)
    info = ipintel.lookup_many(distinct_ips)
    info["subnet"] = subnets_of(distinct_ips).to_numpy()

    def per_ip(values: pd.Series) -> pd.Series:
        if values.dtype == bool:
            return pd.Series(np.append(values.to_numpy(), False)[ip_code], index=idx)
        codes, categories = pd.factorize(values, use_na_sentinel=True)
        codes = np.append(codes, -1)[ip_code]
        return pd.Series(pd.Categorical.from_codes(codes, categories=pd.Index(categories, dtype="str")), index=idx)

    out = pd.DataFrame(
        {
            "event_id": events["event_id"].astype("str"),
            "type": events["type"].astype("str"),
            "ts_us": pd.Series(t, index=idx),
            "hour": pd.Series(hour, index=idx),
            "is_night": pd.Series(hour < _NIGHT_END, index=idx),
            "biz_day": pd.Series(biz // US_PER_DAY, index=idx),
            "biz_hour": pd.Series(biz_hour, index=idx),
            "biz_night": pd.Series(biz_hour < _NIGHT_END, index=idx),
            "amount": pd.Series(amount, index=idx),
            "has_amount": pd.Series(has_amount, index=idx),
            "currency": currency,
            "channel": col("channel"),
            "is_round": pd.Series((amount > 0) & (amount % step == 0), index=idx),
            "card_fp": card_fp,
            "card_type": card_type,
            "card_bin": col("card_bin"),
            "card_country": col("card_issuer_country"),
            "is_credit": (card_type == "credit").fillna(False).astype(bool),
            "user_id": col("user_id"),
            "device_id": col("device_id"),
            "ip": ip,
            "subnet": per_ip(info["subnet"]),
            "merchant_id": merchant,
            "merchant_card": merchant + "|" + card_fp,
            "mcc": col("merchant_mcc"),
        },
        index=idx,
    )
    for name in info.columns.drop("subnet"):
        out[f"ip_{name}"] = per_ip(info[name])
    return out
