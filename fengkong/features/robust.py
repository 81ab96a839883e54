"""The parameters of the robust features (issue 14), each with why it has its value.

The features themselves are declared in `fengkong.features.definitions` (which
re-exports these names); the online store (`assemble`, the Lua script) and the
offline twin read them from there, so a change here changes both.
"""

from __future__ import annotations

#: How many of an entity's last payment amounts `RecentAmounts` keeps (one ring per entity).
RECENT_AMOUNTS_SIZE = 32

#: A value that a user or card first used less than this many minutes ago is new
#: (``is_new_<value>_1h``), so every payment of one stolen session reads "new device",
#: not only its first. The one place to change it (the feature names follow).
NEW_SESSION_MINUTES = 60
NEW_SESSION_NAME = f"{NEW_SESSION_MINUTES // 60}h" if NEW_SESSION_MINUTES % 60 == 0 else f"{NEW_SESSION_MINUTES}m"

#: The robust score needs this many earlier payments: with fewer, one odd payment is
#: an eighth of the sample or more and the median means little.
ROBUST_MIN_COUNT = 8
#: MAD x this is the std of a normal sample: the robust score reads like a z.
MAD_TO_SIGMA = 1.4826
#: The robust score's least scale (natural-log units): everyday spending varies by about
#: a quarter, so a score of 3 needs ~2.1 x the usual amount (e^0.75) however steady the
#: habit, and 10 x scores ~9.
ROBUST_LOG_SCALE_FLOOR = 0.25
#: Below this expected count a merchant comparison means little (a median of 2 payments
#: by 07:00 makes 6 a 3 x spike); the Poisson tail of 5 or more expected does.
MERCHANT_MIN_EXPECTED_COUNT = 5
#: -log10 of a tail probability below the smallest double is reported as this.
POISSON_SCORE_CAP = 300.0
