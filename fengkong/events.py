"""The event contract: one JSON object per payment-flow event.

The same shape arrives at the API, sits in replay files and drives the tests, so
every refusal has to name the field it refuses. Money never travels as a float:
an integer is minor units (fen, cents), a string is a decimal in major units
(yuan, dollars). A value that looks like a full card number (PAN) is refused
wherever it appears, and the refusal never repeats the number.

The reading is strict, because whatever the contract lets through reaches Redis
keys, the audit trail and the rules, and a value that makes code raise later would
be answered by the failure policy (an allow) instead of a 4xx:

* an amount string is a plain ASCII decimal (``12.50``): no exponent, no ``_``,
  no full-width or other non-ASCII digits, no spaces; an integer is minor units;
  both within `MAX_AMOUNT_MINOR`;
* ``occurred_at`` is ISO 8601 text with an offset, within `occurred_at_range`
  (years 2000 to 2100 unless ``FENGKONG_OCCURRED_AT_MIN`` / ``_MAX`` say otherwise);
* nesting is bounded (`MAX_DEPTH`): `nesting_problem` checks raw JSON bytes before
  any parser or recursive scan sees them, and `parse_event` walks what it is given
  without recursion;
* a PAN is 13 to 19 digits that pass Luhn, in any value or object key, or a JSON
  integer: unbroken, or grouped as card numbers are written (4-4-4-4, 4-6-5, ...)
  with separators (space ``-`` ``.`` ``_`` ``/``, up to three between groups), alone
  or inside a longer string (``pan:4111...``, ``e-4111...``); not glued to ASCII
  letters (``x4111...``), which is what random hex ids look like.

This module sits below everything else in fengkong: it imports nothing from the
package but `fengkong.pan` (the PAN and nesting scans, re-exported here).
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
import socket
from datetime import datetime, timedelta, timezone
from enum import StrEnum
from collections import abc
from typing import Any, Mapping

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, field_validator, model_validator

from fengkong.event_times import (  # noqa: F401  (re-exported)
    DEFAULT_OCCURRED_AT_RANGE, EPOCH, FIXED_OFFSETS, OCCURRED_AT_MAX_ENV, OCCURRED_AT_MIN_ENV, iso_text,
    occurred_at_range, range_since_epoch, years_inside)
from fengkong.pan import (  # noqa: F401  (re-exported)
    MAX_DEPTH, looks_like_pan, luhn_ok, nesting_problem, scan_text, text_shows_no_pan)


class EventType(StrEnum):
    PAYMENT = "payment"
    REFUND = "refund"
    WITHDRAWAL = "withdrawal"
    CARD_BIND = "card_bind"
    SIGNUP = "signup"
    LOGIN = "login"
    CHARGEBACK = "chargeback"
    # Outcomes that DESIGN.md's list lacks but the decision service must accept
    # (issue 4: "confirmed fraud, settlement"), and the issuer's decline that
    # card-testing features count.
    FRAUD_REPORT = "fraud_report"
    SETTLEMENT = "settlement"
    DECLINE = "decline"
    # An analyst confirmed the payment (refers_to) legitimate (a case resolved `legit`,
    # issue 16): a label for training and allow-lists; no feature counts it.
    LEGIT_CONFIRMED = "legit_confirmed"
    # The result of a step-up the payment (refers_to) was answered `challenge` for (an SMS
    # code, 3-D Secure...): ``challenge.passed`` says how it went. A failed one can open a
    # case (rules/cases/cases.yaml ``open_on.challenge_failed``); no feature counts it yet.
    CHALLENGE_RESULT = "challenge_result"


class Channel(StrEnum):
    QUICK_PAY = "quick_pay"
    ONLINE_BANKING = "online_banking"
    WALLET = "wallet"
    POS = "pos"
    CARD_NOT_PRESENT = "card_not_present"
    WITHHOLDING = "withholding"


class ChallengeMethod(StrEnum):
    """How the payer was stepped up."""

    SMS = "sms"
    THREE_DS = "3ds"
    OTP = "otp"  # an authenticator app's one-time code
    BIOMETRIC = "biometric"
    PASSWORD = "password"
    OTHER = "other"


class CardType(StrEnum):
    CREDIT = "credit"
    DEBIT = "debit"
    PREPAID = "prepaid"


#: Event types that carry money into or out of a merchant and so need a merchant.
MERCHANT_TYPES = frozenset(
    {EventType.PAYMENT, EventType.REFUND, EventType.WITHDRAWAL, EventType.SETTLEMENT, EventType.DECLINE}
)
#: Event types that move money and so need an amount.
AMOUNT_TYPES = frozenset({EventType.PAYMENT, EventType.REFUND, EventType.WITHDRAWAL})
#: Outcome events: they update features and labels but never get a decision.
OUTCOME_TYPES = frozenset(
    {
        EventType.REFUND,
        EventType.WITHDRAWAL,
        EventType.CHARGEBACK,
        EventType.FRAUD_REPORT,
        EventType.SETTLEMENT,
        EventType.DECLINE,
        EventType.LEGIT_CONFIRMED,
        EventType.CHALLENGE_RESULT,
    }
)

#: ISO 4217 minor-unit exponents for the currencies fengkong knows; others default to 2.
CURRENCY_EXPONENT: dict[str, int] = {
    "CNY": 2, "USD": 2, "EUR": 2, "HKD": 2, "GBP": 2, "SGD": 2, "TWD": 2, "MOP": 2,
    "JPY": 0, "KRW": 0, "VND": 0, "BHD": 3, "KWD": 3,
}
DEFAULT_CURRENCY = "CNY"
#: Largest amount accepted, in minor units (10 trillion yuan). The feature store's
#: Lua numbers are doubles, exact to 2^53 (~9.0e15), and window sums must stay exact.
MAX_AMOUNT_MINOR = 10**15
#: the magnitude from which an integral float amount can only be an integer literal too large
#: for 64 bits, which orjson (the service's parser) returns as a float
_PAST_64_BITS = float(2**63)

_ID = r"^[A-Za-z0-9_.:@\-]{1,128}$"
#: Plain dotted-quad IPv4 exactly as `ipaddress` writes it (decimal octets 0-255, no
#: leading zeros): such text needs no parsing to be validated or normalised.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
IPV4_TEXT = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")


def ipv4_packed(text: Any) -> bytes | None:
    """The 4 bytes of `text` if it is `IPV4_TEXT` (exactly what ``inet_pton`` reads), else None."""
    try:
        return socket.inet_pton(socket.AF_INET, text)
    except (OSError, ValueError, TypeError):  # ValueError: an embedded NUL or text not UTF-8; TypeError: not text
        return None


_UNSET = object()
#: A plain decimal: an optional minus (refused as negative), ASCII digits, an optional fraction.
_PLAIN_DECIMAL = re.compile(r"(-?)([0-9]+)(?:\.([0-9]+))?")


class EventRejected(ValueError):
    """An event the contract refuses. `field` is a dotted path, e.g. ``card.bin``."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


#: keys of 13 characters or more found not to hold a card number (bounded: keys are the caller's)
_CLEAN_KEYS: set[str] = set()


def _pan_key(key: Any) -> bool:
    """`looks_like_pan` of a key, remembering a clean text key (the same field names come
    with every event)."""
    if looks_like_pan(key):
        return True
    if type(key) is str and len(_CLEAN_KEYS) < 1024:
        _CLEAN_KEYS.add(key)
    return False


def find_pan(data: Any, path: str = "", max_depth: int | None = None) -> str | None:
    """Return the dotted path of the first value or key that looks like a card number, if any.

    A key that is one is named by its parent's path and ``<key>``, so the number is
    not repeated. The walk keeps its own stack, so no nesting can exhaust Python's;
    with `max_depth`, nesting deeper than that (objects and arrays) is refused on
    the way (`EventRejected`), so one walk does both checks."""
    stack: list[tuple[Any, str, int]] = [(data, path, 1)]
    while stack:
        node, where, depth = stack.pop()
        kind = type(node)
        if kind is dict or (kind is not str and isinstance(node, abc.Mapping)):
            if max_depth is not None and depth > max_depth:
                raise EventRejected("<event>", f"nests deeper than {max_depth} levels of objects and arrays")
            nested = []
            for key, value in node.items():  # this level's keys and plain values first
                # a text shorter than 13 characters cannot hold a card number (`looks_like_pan`
                # says so first): most of an event's keys and values, passed without the call;
                # so are the longer keys already found clean (the contract's field names)
                if (type(key) is not str or (len(key) >= 13 and key not in _CLEAN_KEYS)) and _pan_key(key):
                    return _join(where, "<key>")
                vkind = type(value)
                if vkind is str:
                    if len(value) >= 13 and looks_like_pan(value):
                        return _join(where, key)
                elif vkind is int:
                    if looks_like_pan(value):
                        return _join(where, key)
                elif value is None or vkind is float or vkind is bool:
                    continue  # neither a container nor ever a card number (`looks_like_pan`)
                elif vkind is dict or vkind is list or isinstance(value, (abc.Mapping, list, tuple)):
                    nested.append((value, _join(where, key), depth + 1))
                elif looks_like_pan(value):
                    return _join(where, key)
            stack.extend(reversed(nested))
        elif kind is list or kind is tuple:
            if max_depth is not None and depth > max_depth:
                raise EventRejected("<event>", f"nests deeper than {max_depth} levels of objects and arrays")
            for i in range(len(node) - 1, -1, -1):
                stack.append((node[i], f"{where}[{i}]", depth + 1))
        elif looks_like_pan(node):
            return where or "<value>"
    return None


class Card(BaseModel):
    """What the engine may know of a card: never the number itself."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fingerprint: str = Field(pattern=_ID, description="Stable token of the card (hash or vault token), never the PAN")
    bin: str | None = Field(default=None, pattern=r"^[0-9]{6,8}$", description="Issuer BIN, 6 to 8 digits")
    type: CardType | None = None
    issuer_country: str | None = Field(default=None, pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2")


class Challenge(BaseModel):
    """The result of a step-up (only on ``challenge_result`` events)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    passed: StrictBool = Field(description="true: the payer passed the challenge; false: failed or abandoned it")
    method: ChallengeMethod | None = None


class Event(BaseModel):
    """One payment-flow event. See README 'The event' for the field table."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)

    event_id: str = Field(pattern=_ID)
    type: EventType
    occurred_at: datetime = Field(description="ISO 8601 with a UTC offset; windows use this time, not the wall clock")
    merchant_id: str | None = Field(default=None, pattern=_ID)
    user_id: str | None = Field(default=None, pattern=_ID)
    amount: int | str | None = Field(
        default=None,
        description="Integer = minor units (fen); string = decimal in major units ('12.50'). Never a float.",
    )
    currency: str = Field(default=DEFAULT_CURRENCY, pattern=r"^[A-Z]{3}$")
    channel: Channel | None = None
    card: Card | None = None
    ip: str | None = None
    device_id: str | None = Field(default=None, pattern=_ID)
    merchant_mcc: str | None = Field(default=None, pattern=r"^[0-9]{4}$")
    refers_to: str | None = Field(default=None, pattern=_ID)
    challenge: Challenge | None = Field(default=None, description="challenge_result only: {passed, method}")

    @field_validator("amount", mode="before")
    @classmethod
    def _no_float_money(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("must be an integer of minor units or a decimal string, not a boolean")
        if isinstance(value, float):
            # JSON parsers hand an integer literal past 64 bits over as a float: say what is wrong with it
            if value.is_integer() and abs(value) >= _PAST_64_BITS:
                raise ValueError("must not be negative" if value < 0
                                 else f"is larger than {MAX_AMOUNT_MINOR} minor units")
            raise ValueError("must be an integer of minor units or a decimal string, never a float")
        return value

    @field_validator("occurred_at", mode="before")
    @classmethod
    def _iso_text(cls, value: Any) -> Any:
        if isinstance(value, datetime):  # built in Python (replay frames, tests): already parsed
            return value
        if not isinstance(value, str) or not value.isascii():
            raise ValueError("must be ISO 8601 text with a UTC offset (e.g. 2026-11-25T10:00:00+08:00)")
        return value

    @field_validator("occurred_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        first, last = years_inside()  # the common case, without asking both sides for their offsets
        if type(value.tzinfo) in FIXED_OFFSETS and first <= value.year <= last:
            return value
        try:  # a time without a UTC offset cannot be subtracted from the (aware) epoch
            since = value - EPOCH
        except TypeError:
            raise ValueError("must carry a UTC offset (e.g. 2026-11-25T10:00:00+08:00)") from None
        since_low, since_high = range_since_epoch()
        if not since_low <= since < since_high:
            low, high = occurred_at_range()
            raise ValueError(f"must be from {low.isoformat()} up to {high.isoformat()} "
                             f"(configured by {OCCURRED_AT_MIN_ENV} / {OCCURRED_AT_MAX_ENV})")
        return value

    @field_validator("ip")
    @classmethod
    def _ip(cls, value: str | None) -> str | None:
        if value is None or ipv4_packed(value) is not None:  # canonical dotted-quad IPv4: as ipaddress gives it
            return value
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            raise ValueError("is not an IPv4 or IPv6 address") from None

    @model_validator(mode="after")
    def _money_and_merchant(self) -> "Event":
        fields = self.__dict__  # the field values: one attribute lookup (the model's go through its __getattr__)
        kind, amount = fields["type"], fields["amount"]
        if kind in MERCHANT_TYPES and not fields["merchant_id"]:
            raise EventRejected("merchant_id", f"is required for {kind.value} events")
        if kind in AMOUNT_TYPES and amount is None:
            raise EventRejected("amount", f"is required for {kind.value} events")
        if kind is EventType.CHALLENGE_RESULT:
            if fields["challenge"] is None:
                raise EventRejected("challenge", 'is required for challenge_result events: {"passed": true|false}')
            if not fields["refers_to"]:
                raise EventRejected("refers_to", "is required for challenge_result events: the challenged "
                                                 "payment's event_id")
        elif fields["challenge"] is not None:
            raise EventRejected("challenge", "is only for challenge_result events")
        fields["_amount_minor"] = _to_minor(amount, fields["currency"])  # (the model is frozen)
        return self

    @property
    def amount_minor(self) -> int | None:
        """The amount in integer minor units, whatever form it arrived in."""
        minor = self.__dict__.get("_amount_minor", _UNSET)
        return _to_minor(self.amount, self.currency) if minor is _UNSET else minor

    @property
    def ts(self) -> float:
        """Event time as POSIX seconds."""
        return self.occurred_at.timestamp()


def currency_exponent(currency: str) -> int:
    return CURRENCY_EXPONENT.get(currency, 2)


def _to_minor(amount: int | str | None, currency: str) -> int | None:
    if amount is None:
        return None
    if isinstance(amount, int):
        if amount < 0:
            raise EventRejected("amount", "must not be negative")
        if amount > MAX_AMOUNT_MINOR:
            raise EventRejected("amount", f"is larger than {MAX_AMOUNT_MINOR} minor units")
        return amount
    if isinstance(amount, str) and amount.isascii():  # `_PLAIN_DECIMAL` without the regex engine: in
        whole, dot, fraction = amount.partition(".")  # ASCII only 0-9 are digits; "12." and ".5" are not plain
        negative = whole[:1] == "-"
        whole = whole[1:] if negative else whole
        plain: object = whole.isdigit() and (fraction.isdigit() or not dot)
    else:  # (the pattern matches ASCII text only; a TypeError for what is not text)
        plain = _PLAIN_DECIMAL.fullmatch(amount)
    if not plain:
        raise EventRejected("amount", "must be a plain decimal like 12.50 (ASCII digits and one optional '.'; "
                                      "no exponent, '_', spaces or other digits), or integer minor units")
    if negative:
        raise EventRejected("amount", "must not be negative")
    if len(whole) > 16 and len(whole := whole.lstrip("0")) > 16:  # leading zeros are no digits of the value
        raise EventRejected("amount", f"is larger than {MAX_AMOUNT_MINOR} minor units")  # (past the cap)
    # ASCII digits only (the pattern): the minor units are the digits with the point moved
    # `exponent` places right, exact in integers; digits past them must all be zeros
    exponent = currency_exponent(currency)
    fraction = fraction or ""
    if len(fraction) > exponent:
        if fraction[exponent:].strip("0"):
            raise EventRejected("amount", f"has more than {exponent} decimal places for {currency}")
        fraction = fraction[:exponent]
    minor = int(whole + fraction.ljust(exponent, "0") or "0")  # "0" of a currency without decimals
    if minor > MAX_AMOUNT_MINOR:
        raise EventRejected("amount", f"is larger than {MAX_AMOUNT_MINOR} minor units")
    return minor


def _field_of(error: Mapping[str, Any]) -> str:
    loc = [str(p) for p in error.get("loc", ()) if p not in ("function-after[_money_and_merchant(), Event]",)]
    return ".".join(loc) or "<event>"


def parse_event(data: Any, *, text_clear: bool = False) -> Event:
    """Validate one event; raise EventRejected naming the field (never echoing a card number).

    ``text_clear``: the JSON text ``data`` was parsed from, unchanged since, passed
    `nesting_problem` and `text_shows_no_pan` (`fengkong.api.body.parse_json_clear`):
    then the value-by-value walk for card numbers and depth is not done again."""
    if type(data) is not dict and not isinstance(data, abc.Mapping):  # (a dict: no ABC check)
        raise EventRejected("<event>", "must be a JSON object")
    if not text_clear:
        pan_at = find_pan(data, max_depth=MAX_DEPTH)
        if pan_at:
            raise EventRejected(pan_at, "looks like a full card number (PAN); send a card fingerprint instead")
    try:
        # the model's validator itself (what ``Event.model_validate`` calls, without its
        # keyword handling): this runs for every event
        return Event.__pydantic_validator__.validate_python(data)  # type: ignore[no-any-return]
    except EventRejected:
        raise
    except ValidationError as exc:
        first = exc.errors(include_input=False, include_url=False)[0]
        ctx_error = (first.get("ctx") or {}).get("error")
        if isinstance(ctx_error, EventRejected):
            raise ctx_error from None
        field = _field_of(first)
        message = str(first.get("msg", "is invalid")).removeprefix("Value error, ")
        if first.get("type") == "extra_forbidden":
            message = "is not a field of the event contract"
        elif first.get("type") == "missing":
            message = "is required"
        raise EventRejected(field, message) from None


#: The flat (one column per field) form of an event used in Parquet / CSV / JSON-lines
#: files and in the offline twin's DataFrames. Nested card fields become card_*.
FLAT_COLUMNS: tuple[str, ...] = (
    "event_id", "type", "occurred_at", "merchant_id", "user_id", "amount", "currency", "channel",
    "card_fingerprint", "card_bin", "card_type", "card_issuer_country",
    "ip", "device_id", "merchant_mcc", "refers_to", "challenge_passed", "challenge_method",
)
#: Nested objects of the event and the prefix their fields take in a flat row.
_NESTED = ("card", "challenge")
#: Label columns a labelled history may carry beside the event columns.
LABEL_COLUMNS: tuple[str, ...] = ("is_fraud", "scenario")


def _present(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, float) and value != value:  # NaN from pandas
        return False
    if type(value).__name__ in ("NAType", "NaTType"):  # pandas' missing markers, without importing pandas
        return False
    if isinstance(value, str) and value == "":
        return False
    return True


def _flat_bool(value: Any) -> Any:
    """A flat file's boolean (CSV gives text): true/false/1/0 as bool, anything else as is
    (the contract then refuses it, naming the field)."""
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "false", "0"):
        return value.strip().lower() in ("true", "1")
    if isinstance(value, int) and not isinstance(value, bool) and value in (0, 1):
        return bool(value)
    return value


def flat_to_dict(row: Mapping[str, Any]) -> dict[str, Any]:
    """Turn a flat row (FLAT_COLUMNS; extra columns ignored) into the nested event dict.
    ``card_*`` columns become ``card``, ``challenge_*`` ``challenge``."""
    out: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for col in FLAT_COLUMNS:
        value: Any = row.get(col)
        if not _present(value):
            continue
        if hasattr(value, "item"):  # numpy scalar -> python
            value = value.item()
        if col == "amount" and isinstance(value, float) and value.is_integer():
            value = int(value)  # pandas turns an int column with gaps into floats
        if col == "challenge_passed":
            value = _flat_bool(value)
        head, _, rest = col.partition("_")
        if head in _NESTED and rest:
            nested.setdefault(head, {})[rest] = value
        else:
            out[col] = value
    for head in _NESTED:
        if head in nested:
            out[head] = nested[head]
    return out


def event_to_flat(event: Event) -> dict[str, Any]:
    """The flat row of an event; amount in integer minor units, time as ISO text with offset."""
    row: dict[str, Any] = {col: None for col in FLAT_COLUMNS}
    data = event.model_dump(mode="json", exclude_none=True)
    parts = {head: data.pop(head, None) or {} for head in _NESTED}
    row.update(data)
    row["amount"] = event.amount_minor
    row["occurred_at"] = event.occurred_at.isoformat()
    for head, part in parts.items():
        for key, value in part.items():
            row[f"{head}_{key}"] = value
    return row
