"""The event contract: one JSON object per payment-flow event.

The same shape arrives at the API, sits in replay files and drives the tests, so
every refusal has to name the field it refuses. Money never travels as a float:
an integer is minor units (fen, cents), a string is a decimal in major units
(yuan, dollars). A value that looks like a full card number (PAN) is refused
wherever it appears, and the refusal never repeats the number.

This module sits below everything else in fengkong: it imports nothing from the
package.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


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


class Channel(StrEnum):
    QUICK_PAY = "quick_pay"
    ONLINE_BANKING = "online_banking"
    WALLET = "wallet"
    POS = "pos"
    CARD_NOT_PRESENT = "card_not_present"
    WITHHOLDING = "withholding"


class CardType(StrEnum):
    CREDIT = "credit"
    DEBIT = "debit"
    PREPAID = "prepaid"


#: Event types that carry money into or out of a merchant and so need a merchant.
MERCHANT_TYPES = frozenset(
    {EventType.PAYMENT, EventType.REFUND, EventType.WITHDRAWAL, EventType.SETTLEMENT, EventType.DECLINE}
)
#: Outcome events: they update features and labels but never get a decision.
OUTCOME_TYPES = frozenset(
    {
        EventType.REFUND,
        EventType.WITHDRAWAL,
        EventType.CHARGEBACK,
        EventType.FRAUD_REPORT,
        EventType.SETTLEMENT,
        EventType.DECLINE,
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

_ID = r"^[A-Za-z0-9_.:@\-]{1,128}$"
#: Plain dotted-quad IPv4 exactly as `ipaddress` writes it (decimal octets 0-255, no
#: leading zeros): such text needs no parsing to be validated or normalised.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
IPV4_TEXT = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")
_UNSET = object()
_PAN_CANDIDATE = re.compile(r"^[0-9][0-9 \-]{11,30}[0-9]$")


class EventRejected(ValueError):
    """An event the contract refuses. `field` is a dotted path, e.g. ``card.bin``."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def looks_like_pan(value: Any) -> bool:
    """13 to 19 digits (spaces or dashes allowed between them) that pass the Luhn check."""
    if isinstance(value, str):
        if len(value) < 13:  # fewer than 13 characters cannot hold 13 digits
            return False
        text = value.strip()
        if not _PAN_CANDIDATE.match(text):
            return False
    elif isinstance(value, int) and not isinstance(value, bool):
        if -10**12 < value < 10**12:
            return False
        text = str(value)
    else:
        return False
    digits = text.replace(" ", "").replace("-", "")
    return digits.isdigit() and 13 <= len(digits) <= 19 and luhn_ok(digits)


def find_pan(data: Any, path: str = "") -> str | None:
    """Return the dotted path of the first value that looks like a card number, if any."""
    if isinstance(data, dict) or (not isinstance(data, (str, int, float)) and isinstance(data, Mapping)):
        for key, value in data.items():
            if looks_like_pan(key):
                return path or "<key>"
            if isinstance(value, (str, int, float)) or value is None:  # a leaf: no path unless it is a hit
                if looks_like_pan(value):
                    return f"{path}.{key}" if path else str(key)
                continue
            found = find_pan(value, f"{path}.{key}" if path else str(key))
            if found:
                return found
    elif isinstance(data, (list, tuple)):
        for i, value in enumerate(data):
            found = find_pan(value, f"{path}[{i}]")
            if found:
                return found
    elif looks_like_pan(data):
        return path or "<value>"
    return None


class Card(BaseModel):
    """What the engine may know of a card: never the number itself."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fingerprint: str = Field(pattern=_ID, description="Stable token of the card (hash or vault token), never the PAN")
    bin: str | None = Field(default=None, pattern=r"^[0-9]{6,8}$", description="Issuer BIN, 6 to 8 digits")
    type: CardType | None = None
    issuer_country: str | None = Field(default=None, pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2")


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

    @field_validator("amount", mode="before")
    @classmethod
    def _no_float_money(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("must be an integer of minor units or a decimal string, not a boolean")
        if isinstance(value, float):
            raise ValueError("must be an integer of minor units or a decimal string, never a float")
        return value

    @field_validator("occurred_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("must carry a UTC offset (e.g. 2026-11-25T10:00:00+08:00)")
        return value

    @field_validator("ip")
    @classmethod
    def _ip(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if IPV4_TEXT.fullmatch(value):  # canonical already: what ipaddress would give back
            return value
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            raise ValueError("is not an IPv4 or IPv6 address") from None

    @model_validator(mode="after")
    def _money_and_merchant(self) -> "Event":
        if self.type in MERCHANT_TYPES and not self.merchant_id:
            raise EventRejected("merchant_id", f"is required for {self.type.value} events")
        if self.type in (EventType.PAYMENT, EventType.REFUND, EventType.WITHDRAWAL) and self.amount is None:
            raise EventRejected("amount", f"is required for {self.type.value} events")
        object.__setattr__(self, "_amount_minor", _to_minor(self.amount, self.currency))
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
    text = amount.strip()
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise EventRejected("amount", "is not a decimal number") from None
    if not value.is_finite():
        raise EventRejected("amount", "must be a finite number (no NaN or infinity)")
    if value < 0:
        raise EventRejected("amount", "must not be negative")
    exponent = currency_exponent(currency)
    minor = value.scaleb(exponent)
    if minor != minor.to_integral_value():
        raise EventRejected("amount", f"has more than {exponent} decimal places for {currency}")
    if minor > MAX_AMOUNT_MINOR:
        raise EventRejected("amount", f"is larger than {MAX_AMOUNT_MINOR} minor units")
    return int(minor)


def _field_of(error: Mapping[str, Any]) -> str:
    loc = [str(p) for p in error.get("loc", ()) if p not in ("function-after[_money_and_merchant(), Event]",)]
    return ".".join(loc) or "<event>"


def parse_event(data: Any) -> Event:
    """Validate one event; raise EventRejected naming the field (never echoing a card number)."""
    if not isinstance(data, Mapping):
        raise EventRejected("<event>", "must be a JSON object")
    pan_at = find_pan(data)
    if pan_at:
        raise EventRejected(pan_at, "looks like a full card number (PAN); send a card fingerprint instead")
    try:
        return Event.model_validate(data)
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
    "ip", "device_id", "merchant_mcc", "refers_to",
)
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


def flat_to_dict(row: Mapping[str, Any]) -> dict[str, Any]:
    """Turn a flat row (FLAT_COLUMNS; extra columns ignored) into the nested event dict."""
    out: dict[str, Any] = {}
    card: dict[str, Any] = {}
    for col in FLAT_COLUMNS:
        value = row.get(col)
        if not _present(value):
            continue
        if hasattr(value, "item"):  # numpy scalar -> python
            value = value.item()
        if col == "amount" and isinstance(value, float) and value.is_integer():
            value = int(value)  # pandas turns an int column with gaps into floats
        if col.startswith("card_"):
            card[col.removeprefix("card_")] = value
        else:
            out[col] = value
    if card:
        out["card"] = card
    return out


def event_to_flat(event: Event) -> dict[str, Any]:
    """The flat row of an event; amount in integer minor units, time as ISO text with offset."""
    row: dict[str, Any] = {col: None for col in FLAT_COLUMNS}
    data = event.model_dump(mode="json", exclude_none=True)
    card = data.pop("card", None) or {}
    row.update(data)
    row["amount"] = event.amount_minor
    row["occurred_at"] = event.occurred_at.isoformat()
    for key, value in card.items():
        row[f"card_{key}"] = value
    return row
