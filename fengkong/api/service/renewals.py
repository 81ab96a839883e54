"""Which decision-pointer buckets a worker renewed the TTL of lately
(`fengkong.api.service.pointers`): every decision writes a pointer into its hour's
bucket, and renewing the bucket's TTL with each one was a command per decision that
only the first of each minute needs."""

from __future__ import annotations

import time

#: how long a worker leaves out the EXPIRE of a bucket it renewed (far under the buckets' grace,
#: `fengkong.api.service.pointers.BUCKET_GRACE_S`)
RENEW_S = 60.0
#: buckets a worker remembers at most: three hours' shards (`fengkong.features.keys.BUCKET_DIGITS`:
#: 4,096 an hour), so that one hour's never fill it (which forgot them all, and renewed every bucket
#: again, each time the hour's last shard was first seen)
MAX_BUCKETS = 3 * 4096


class Renewals:
    """The buckets whose TTL this worker renewed lately, so that a decision's write need
    not renew it again: a pointer written within `RENEW_S` of its bucket's renewal still
    lives `ttl_s` (the renewal gave `ttl_s` plus the grace,
    `fengkong.api.service.pointers.BUCKET_GRACE_S`). A Redis fault the breaker counted
    (``faults``) forgets them all, as a Redis restarted empty holds no TTL."""

    def __init__(self) -> None:
        self._at: dict[str, float] = {}
        self._faults = 0

    def due(self, key: str, faults: int) -> bool:
        """Whether the bucket's TTL is to be renewed with this write (and noted as renewed)."""
        now = time.monotonic()
        if faults != self._faults:  # after a fault
            self._at.clear()
            self._faults = faults
        elif len(self._at) >= MAX_BUCKETS:  # buckets come and go: those due again anyway are forgotten
            self._at = {k: at for k, at in self._at.items() if now - at < RENEW_S}
            if len(self._at) > MAX_BUCKETS * 3 // 4:  # (two hours' live at most: a bound, not the rule)
                self._at.clear()
        at = self._at.get(key)
        if at is not None and now - at < RENEW_S:
            return False
        self._at[key] = now
        return True
