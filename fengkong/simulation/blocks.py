"""Columnar event blocks: every generator returns a dict of equal-length numpy arrays.

Entities are integer indexes into the world's tables (-1 = absent) until the final
frame is built, so the bulk of the work stays vectorised.
"""

from __future__ import annotations

from typing import Any

import numpy as np

Block = dict[str, np.ndarray]

#: Columns of every block: name -> (dtype, default).
EVENT_COLS: dict[str, tuple[Any, Any]] = {
    "ts": (np.int64, 0),            # UTC epoch seconds
    "etype": (np.int8, 0),
    "merchant": (np.int32, -1),
    "user": (np.int32, -1),
    "amount": (np.int64, -1),       # minor units, -1 = none
    "channel": (np.int8, -1),
    "card": (np.int32, -1),
    "ip": (np.int64, -1),           # IPv4 as integer, -1 = none
    "device": (np.int32, -1),
    "refers": (np.int64, -1),       # row index of the payment referred to
    "fraud": (np.bool_, False),
    "scenario": (np.int8, 0),
    "note": (np.int8, 0),
}
#: Extra columns of payment blocks: what happens to the payment afterwards.
PAYMENT_COLS: dict[str, tuple[Any, Any]] = {
    "declined": (np.bool_, False),
    "p_refund": (np.float32, 0.0),
    "p_dispute": (np.float32, 0.0),
    "p_report": (np.float32, 0.0),  # share of disputes that are fraud_report rather than chargeback
    "delay_lo": (np.float32, 1.0),  # dispute delay range in days
    "delay_hi": (np.float32, 60.0),
}


def block(n: int, payment: bool = False, **values: Any) -> Block:
    """A block of n rows; scalars broadcast, missing columns take their default."""
    cols = dict(EVENT_COLS)
    if payment:
        cols.update(PAYMENT_COLS)
    unknown = set(values) - set(cols)
    if unknown:
        raise KeyError(f"unknown block columns {sorted(unknown)}")
    out: Block = {}
    for name, (dtype, default) in cols.items():
        v = values.get(name, default)
        if np.ndim(v) == 0:
            out[name] = np.full(n, v, dtype=dtype)
        else:
            arr = np.asarray(v).astype(dtype, copy=False)
            if arr.shape != (n,):
                raise ValueError(f"column {name}: {arr.shape} rows, expected {n}")
            out[name] = arr
    return out


def concat(blocks: list[Block], payment: bool = False) -> Block:
    """One block of all non-empty ``blocks``, each column cast to its declared dtype (payment columns too)."""
    blocks = [b for b in blocks if b and len(b["ts"])]
    cols = dict(EVENT_COLS)
    if payment:
        cols.update(PAYMENT_COLS)
    if not blocks:
        return block(0, payment=payment)
    return {name: np.concatenate([b[name] for b in blocks]).astype(dtype, copy=False)
            for name, (dtype, _) in cols.items()}


def take(b: Block, idx: np.ndarray) -> Block:
    """The rows ``idx`` of every column of ``b``."""
    return {k: v[idx] for k, v in b.items()}


def size(b: Block) -> int:
    """Number of rows (events) in ``b``."""
    return len(b["ts"])
