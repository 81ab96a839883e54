"""Merchant profiles: the reference data (grade, limits, opening day, MCC) that the
API, rescoring and replay write and every decision reads.

Kept apart from the store's hot path: profile writes are rare and go through plain
redis-py calls; the script reads the same hash (`ops.ProfileOp`) with each event.
"""

from __future__ import annotations

from datetime import date

import redis
from redis.typing import EncodableT, FieldT

from fengkong.features import keys
from fengkong.features.errors import FeatureStoreUnavailable
from fengkong.features.promotions import PROFILE_FIELD, Promotion, encode, from_text

_EPOCH_DAY = date(1970, 1, 1)


def _text(value: bytes | str) -> str:
    """A reply value as text (a client made with decode_responses gives text already)."""
    return value.decode() if isinstance(value, bytes) else value


class MerchantProfiles:
    """Read and write merchants' profile hashes under one key prefix."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix

    def key(self, merchant_id: str) -> str:
        return keys.merchant_profile_key(self.prefix, merchant_id)

    def set(
        self,
        merchant_id: str,
        *,
        grade: str | None = None,
        single_limit_minor: int | None = None,
        daily_cap_minor: int | None = None,
        onboarded_at: str | None = None,
        mcc: str | None = None,
        reason: str | None = None,
    ) -> dict[str, str]:
        """Write the fields given (others untouched) and return the whole profile; the
        next decision reads them."""
        fields: dict[FieldT, EncodableT] = {}  # redis-py's own types: what hset takes
        if grade is not None:
            fields["grade"] = grade
        if single_limit_minor is not None:
            fields["single_limit"] = int(single_limit_minor)
        if daily_cap_minor is not None:
            fields["daily_cap"] = int(daily_cap_minor)
        if onboarded_at is not None:
            day = date.fromisoformat(onboarded_at[:10])
            fields["onboarded_at"] = day.isoformat()
            fields["onboarded_day"] = (day - _EPOCH_DAY).days  # what the script compares with business days
        if mcc is not None:
            fields["mcc"] = mcc
        if reason is not None:
            fields["grade_reason"] = reason
        try:
            if fields:
                self.client.hset(self.key(merchant_id), mapping=fields)
            return self.get(merchant_id)
        except redis.RedisError as exc:
            raise FeatureStoreUnavailable(f"merchant profile: {exc}") from exc

    def get(self, merchant_id: str) -> dict[str, str]:
        """The merchant's profile fields as text ({} if it has none)."""
        try:
            raw = self.client.hgetall(self.key(merchant_id))
        except redis.RedisError as exc:
            raise FeatureStoreUnavailable(f"merchant profile: {exc}") from exc
        return {_text(k): _text(v) for k, v in raw.items()}

    def set_promotions(self, merchant_id: str, promotions: list[Promotion]) -> list[Promotion]:
        """Replace the merchant's planned campaigns (checked by `promotions.problems` first);
        an empty list removes them. The next decision reads them with the profile."""
        try:
            if promotions:
                self.client.hset(self.key(merchant_id), PROFILE_FIELD, encode(promotions))
            else:
                self.client.hdel(self.key(merchant_id), PROFILE_FIELD)
        except redis.RedisError as exc:
            raise FeatureStoreUnavailable(f"merchant promotions: {exc}") from exc
        return self.get_promotions(merchant_id)

    def get_promotions(self, merchant_id: str) -> list[Promotion]:
        """The merchant's planned campaigns (times in UTC), [] if none."""
        try:
            raw = self.client.hget(self.key(merchant_id), PROFILE_FIELD)
        except redis.RedisError as exc:
            raise FeatureStoreUnavailable(f"merchant promotions: {exc}") from exc
        return from_text(_text(raw) if raw is not None else None)

    def set_grades(self, grades: dict[str, tuple[str, str]]) -> int:
        """Write many merchants' grades (merchant_id -> (grade, reason)) in one pipeline;
        returns how many."""
        try:
            pipe = self.client.pipeline(transaction=False)
            for merchant_id, (grade, reason) in grades.items():
                pipe.hset(self.key(merchant_id), mapping={"grade": grade, "grade_reason": reason})
            pipe.execute()
        except redis.RedisError as exc:
            raise FeatureStoreUnavailable(f"grades: {exc}") from exc
        return len(grades)
