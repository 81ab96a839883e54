"""Fixed tables the simulator draws from: scenarios, channels, merchant categories,
card BINs and IP ranges.

The IP ranges are real allocations so that IP intelligence (geoip2fast, the
hosting/Tor lists in ``rules/lists/``) sees what it would see in production; the
simulator keeps its own copy and never reads ``rules/lists/``.
"""

from __future__ import annotations

import ipaddress

import numpy as np

#: Injected fraud scenarios; the names are part of the output contract.
SCENARIOS: tuple[str, ...] = (
    "stolen_card",
    "card_testing",
    "cash_out",
    "volume_spike_3x",
    "volume_spike_10x",
    "proxy_ip",
    "promotion_abuse",
    "blacklisted",
)
#: Code 0 is legitimate (scenario "").
SCENARIO_NAMES: tuple[str, ...] = ("", *SCENARIOS)
SCENARIO_CODE: dict[str, int] = {name: i for i, name in enumerate(SCENARIO_NAMES)}

EVENT_TYPES: tuple[str, ...] = (
    "payment", "refund", "withdrawal", "card_bind", "signup", "login",
    "chargeback", "fraud_report", "settlement", "decline",
)
ET: dict[str, int] = {name: i for i, name in enumerate(EVENT_TYPES)}

CHANNELS: tuple[str, ...] = ("quick_pay", "online_banking", "wallet", "pos", "card_not_present", "withholding")
CH: dict[str, int] = {name: i for i, name in enumerate(CHANNELS)}

CARD_TYPES: tuple[str, ...] = ("credit", "debit", "prepaid")
CT: dict[str, int] = {name: i for i, name in enumerate(CARD_TYPES)}

#: Free-text notes (optional ``note`` column): why a row looks the way it does.
NOTES: tuple[str, ...] = (
    "", "promo_day", "travel", "vpn", "ip:hosting", "ip:vpn", "ip:tor", "friendly_fraud",
    "account_takeover", "new_account", "brushing", "cash_out_withdrawal", "new_user", "split_payment",
    "early_morning", "pos_small", "habit", "habit_bigger",
)
NOTE: dict[str, int] = {name: i for i, name in enumerate(NOTES)}

COUNTRIES: tuple[str, ...] = ("CN", "HK", "TW", "JP", "US", "GB", "SG", "KR")
CC: dict[str, int] = {name: i for i, name in enumerate(COUNTRIES)}
#: Home country of shoppers (the platform is Chinese).
HOME_COUNTRY_P = np.array([0.955, 0.015, 0.008, 0.006, 0.006, 0.004, 0.003, 0.003])

# Merchant categories: (mcc, median ticket in yuan, share of merchants,
#  channel mix over CHANNELS, refund rate).
MCC_TABLE: tuple[tuple[str, float, float, tuple[float, ...], float], ...] = (
    ("5411", 45.0, 0.13, (0.10, 0.00, 0.55, 0.35, 0.00, 0.00), 0.02),  # grocery
    ("5812", 90.0, 0.12, (0.05, 0.00, 0.60, 0.35, 0.00, 0.00), 0.01),  # restaurants
    ("5814", 28.0, 0.09, (0.00, 0.00, 0.80, 0.20, 0.00, 0.00), 0.01),  # fast food
    ("5311", 260.0, 0.05, (0.20, 0.00, 0.40, 0.40, 0.00, 0.00), 0.05),  # department stores
    ("5691", 240.0, 0.09, (0.30, 0.00, 0.40, 0.20, 0.10, 0.00), 0.09),  # clothing
    ("5732", 1200.0, 0.05, (0.45, 0.10, 0.20, 0.15, 0.10, 0.00), 0.05),  # electronics
    ("5944", 2500.0, 0.02, (0.20, 0.05, 0.20, 0.55, 0.00, 0.00), 0.03),  # jewellery
    ("5912", 70.0, 0.06, (0.10, 0.00, 0.60, 0.30, 0.00, 0.00), 0.02),  # pharmacy
    ("5999", 120.0, 0.12, (0.30, 0.00, 0.40, 0.20, 0.10, 0.00), 0.04),  # misc retail
    ("4121", 35.0, 0.04, (0.00, 0.00, 0.90, 0.00, 0.10, 0.00), 0.01),  # taxi / ride hailing
    ("4814", 80.0, 0.03, (0.30, 0.10, 0.30, 0.00, 0.00, 0.30), 0.00),  # telecom top-up
    ("5815", 25.0, 0.06, (0.30, 0.00, 0.40, 0.00, 0.30, 0.00), 0.02),  # digital goods
    ("7011", 550.0, 0.04, (0.40, 0.10, 0.20, 0.10, 0.20, 0.00), 0.06),  # hotels
    ("4511", 1400.0, 0.01, (0.40, 0.20, 0.20, 0.00, 0.20, 0.00), 0.07),  # airlines
    ("6540", 300.0, 0.02, (0.40, 0.50, 0.00, 0.00, 0.10, 0.00), 0.00),  # stored value (网银充值)
    ("4900", 150.0, 0.03, (0.20, 0.10, 0.20, 0.00, 0.00, 0.50), 0.00),  # utilities
)
MCC_CODES = np.array([m[0] for m in MCC_TABLE], dtype=object)
MCC_MEDIAN_FEN = np.array([m[1] * 100 for m in MCC_TABLE])
MCC_SHARE = np.array([m[2] for m in MCC_TABLE])
MCC_SHARE = MCC_SHARE / MCC_SHARE.sum()
MCC_CHANNELS = np.array([m[3] for m in MCC_TABLE])
MCC_CHANNELS = MCC_CHANNELS / MCC_CHANNELS.sum(axis=1, keepdims=True)
MCC_REFUND = np.array([m[4] for m in MCC_TABLE])
MCC_INDEX = {m[0]: i for i, m in enumerate(MCC_TABLE)}
#: Categories whose customers pay round face values (top-ups, bills).
ROUND_FACE_MCCS = ("4814", "6540", "4900")
ROUND_FACE_VALUES_YUAN = np.array([30, 50, 100, 100, 200, 200, 300, 500, 1000])
#: Categories card thieves and proxy fraudsters favour (resellable goods).
HIGH_VALUE_MCCS = ("5732", "5944", "4511", "5815", "6540")
#: Categories card testers probe (small digital purchases, donations-like).
TESTING_MCCS = ("5815", "5999", "4814")
#: Categories promotion-abuse rings farm (new-user coupons).
PROMO_MCCS = ("5411", "5814", "5812", "5815", "4121")
#: Face-to-face categories where a cash-out POS is "raised".
CASH_OUT_MCCS = ("5311", "5411", "5999", "5812", "5691", "5944")

SIZE_CLASSES: tuple[str, ...] = ("micro", "small", "medium", "large")
SIZE_SHARE = np.array([0.40, 0.35, 0.20, 0.05])
SIZE_WEIGHT = np.array([1.0, 4.0, 20.0, 120.0])  # relative traffic
SIZE_LIMIT_FEN = np.array([500_000, 500_000, 2_000_000, 5_000_000])  # single-payment limit
SIZE_WITHDRAW_EVERY_DAYS = np.array([7, 3, 2, 1])

#: BIN-like prefixes by (issuer country, card type). Six digits, never a card number.
BINS: dict[tuple[str, str], tuple[str, ...]] = {
    ("CN", "credit"): ("622588", "625802", "628288", "436742", "518710", "622155", "625967", "552534"),
    ("CN", "debit"): ("622848", "621700", "622202", "621226", "622700", "623668", "621483", "622609"),
    ("CN", "prepaid"): ("623058", "621799"),
    ("HK", "credit"): ("450875", "540034"), ("HK", "debit"): ("457431",), ("HK", "prepaid"): ("536345",),
    ("TW", "credit"): ("404117", "552130"), ("TW", "debit"): ("438115",), ("TW", "prepaid"): ("510013",),
    ("JP", "credit"): ("356600", "490222"), ("JP", "debit"): ("453830",), ("JP", "prepaid"): ("533902",),
    ("US", "credit"): ("414720", "542418", "371449"), ("US", "debit"): ("400022", "511563"),
    ("US", "prepaid"): ("403446", "531993"),
    ("GB", "credit"): ("492181", "543460"), ("GB", "debit"): ("475129",), ("GB", "prepaid"): ("535522",),
    ("SG", "credit"): ("456458",), ("SG", "debit"): ("459150",), ("SG", "prepaid"): ("516733",),
    ("KR", "credit"): ("465887", "540926"), ("KR", "debit"): ("457973",), ("KR", "prepaid"): ("536510",),
}


def _cidrs(*texts: str) -> np.ndarray:
    """(base, size) rows of IPv4 networks."""
    rows = []
    for t in texts:
        net = ipaddress.ip_network(t)
        rows.append((int(net.network_address), net.num_addresses))
    return np.array(rows, dtype=np.int64)


#: Chinese fixed broadband (Chinanet, Unicom): each shopper lives in one /16 of these.
CN_BROADBAND = _cidrs(
    "36.96.0.0/11", "113.64.0.0/10", "116.224.0.0/12", "183.0.0.0/10",
    "123.112.0.0/12", "221.216.0.0/13", "114.80.0.0/12",
)
#: Chinese mobile networks (China Mobile): shoppers on 4G/5G.
CN_MOBILE = _cidrs("223.64.0.0/11", "117.136.0.0/13")
#: China Mobile carrier-grade NAT egress (CGNAT): thousands of phones leave through the same few
#: public addresses, so many distinct, genuine users share one IP within hours.
CN_MOBILE_CGNAT = _cidrs("223.104.0.0/14", "117.136.0.0/16")
#: Campus networks (CERNET): a university's students leave through one small egress /24.
CN_CAMPUS = _cidrs("202.112.0.0/13", "166.111.0.0/16", "162.105.0.0/16")
#: Residential ranges abroad, by country (travellers, foreign shoppers, thieves abroad).
FOREIGN_RESIDENTIAL: dict[str, np.ndarray] = {
    "HK": _cidrs("112.118.0.0/16", "218.102.0.0/16"),   # Netvigator (PCCW)
    "TW": _cidrs("1.160.0.0/12", "114.24.0.0/14"),      # HiNet
    "JP": _cidrs("126.0.0.0/8"),                        # SoftBank BB
    "US": _cidrs("73.0.0.0/8", "24.0.0.0/12"),          # Comcast
    "GB": _cidrs("86.128.0.0/10", "81.128.0.0/11"),     # BT
    "SG": _cidrs("118.200.0.0/13"),                     # SingNet
    "KR": _cidrs("211.36.0.0/14", "121.128.0.0/10"),    # KT
}
#: Datacenter / hosting ranges (AWS, DigitalOcean, OVH, Hetzner).
HOSTING = _cidrs(
    "52.0.0.0/11", "3.0.0.0/9",            # AWS
    "159.89.0.0/16", "167.99.0.0/16",      # DigitalOcean
    "51.68.0.0/16",                        # OVH
    "95.216.0.0/16",                       # Hetzner
)
#: Commercial VPN exits live in the same datacenters; a subset used for "vpn".
VPN = _cidrs("159.89.0.0/16", "167.99.0.0/16", "51.68.0.0/16", "95.216.0.0/16")
#: Known Tor exit ranges.
TOR = _cidrs("185.220.100.0/22", "109.70.100.0/24", "199.249.230.0/24", "171.25.193.0/24")

NIGHT_HOURS = range(0, 6)
#: Relative payment volume by local hour of day on an ordinary day.
HOUR_PROFILE = np.array([
    0.60, 0.35, 0.20, 0.12, 0.10, 0.15, 0.40, 1.00, 1.80, 2.20, 2.40, 2.80,
    3.40, 3.00, 2.60, 2.50, 2.60, 2.90, 3.40, 3.80, 4.00, 3.60, 2.60, 1.40,
])
HOUR_PROFILE = HOUR_PROFILE / HOUR_PROFILE.sum()
#: On a promotion day the sale opens at midnight: a night rush, then the evening.
PROMO_HOUR_PROFILE = HOUR_PROFILE.copy()
PROMO_HOUR_PROFILE[0:2] *= 12.0
PROMO_HOUR_PROFILE[20:24] *= 1.8
PROMO_HOUR_PROFILE = PROMO_HOUR_PROFILE / PROMO_HOUR_PROFILE.sum()

#: A merchant's own promotion (店庆, a flash sale) is announced for the morning and the evening.
MERCHANT_PROMO_HOUR_PROFILE = HOUR_PROFILE.copy()
MERCHANT_PROMO_HOUR_PROFILE[10:12] *= 1.8
MERCHANT_PROMO_HOUR_PROFILE[19:22] *= 1.5
MERCHANT_PROMO_HOUR_PROFILE = MERCHANT_PROMO_HOUR_PROFILE / MERCHANT_PROMO_HOUR_PROFILE.sum()
#: Breakfast stalls, bakeries and commuter kiosks (early-morning merchants).
EARLY_MORNING_MCCS = ("5814", "5814", "5411")
#: Small face-to-face shops taking cards at their own terminal (card-present, few payments a day).
POS_SMALL_MCCS = ("5411", "5812", "5691", "5999", "5912", "5311")
#: Where a shopper with a steady small habit spends it (lunch, coffee, the corner shop)...
HABIT_MCCS = ("5814", "5812", "5411")
#: ... and where the occasional bigger purchase happens (a gift, a phone case, a jacket).
BIGGER_MCCS = ("5311", "5691", "5999", "5912", "5815", "5732")

#: Platform offset: every occurred_at carries +08:00.
PLATFORM_OFFSET_S = 8 * 3600
PLATFORM_OFFSET = "+08:00"
