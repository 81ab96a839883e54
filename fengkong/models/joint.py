"""Both transaction models in one ONNX Runtime session: one call per payment, not two.

Why: most of what scoring a payment costs the worker is not the trees but ONNX
Runtime's per-call machinery (the feed's conversion, the executor, the outputs'
allocation) and the instructions and cache lines it brings in, which the rules
that run next then miss (docs/benchmarks.md). Training writes the joint graph
beside the two (`fengkong.training.joint_export`, the artifact's ``joint.onnx``):
input the union row (`union_names`), outputs ``txn_risk`` and ``habit``, the
habit model's missing values filled in the graph with the training medians.
`JointModel` scores one row through IO binding: the input and output buffers are
bound once, so a call only copies the row in.

`JointModel.differs` holds the joint session to the two separate sessions on
`check_rows` (both models' check rows in their columns): any difference and the
caller serves the two sessions instead (`runtime.TransactionModels`).
"""

from __future__ import annotations

import threading
from functools import partial
from typing import Any, Callable, Sequence

import numpy as np
import onnxruntime as ort

from fengkong.models.onnx_model import OnnxModel, max_abs_diff, session_options

#: The names the joint graph gives its input and its two outputs.
INPUT, RISK, HABIT = "X", "txn_risk", "habit"
_NUMPY_OF = {"tensor(float)": np.float32, "tensor(double)": np.float64}


def union_names(risk: Sequence[str], habit: Sequence[str]) -> tuple[str, ...]:
    """The row both models read: txn_risk's features, then the habit model's others, in order."""
    return tuple(risk) + tuple(n for n in habit if n not in set(risk))


class JointModel:
    """One session for both transaction models; ``score_one`` answers (txn_risk's score, the
    habit model's score) of one union row with one IO-bound call.

    The bound buffers belong to the session: a call made while another thread holds them
    (the service scores on one thread; a caller with threads may not) runs unbound instead."""

    def __init__(self, data: bytes) -> None:
        self.session = ort.InferenceSession(data, session_options(), providers=["CPUExecutionProvider"])
        inputs = self.session.get_inputs()
        types = {o.name: o.type for o in self.session.get_outputs()}
        if [i.name for i in inputs] != [INPUT] or set(types) != {RISK, HABIT} or \
                not isinstance(inputs[0].shape[1], int) or not set(types.values()) <= set(_NUMPY_OF):
            raise ValueError(f"not a joint graph: inputs {[i.name for i in inputs]}, outputs {sorted(types)}")
        width = int(inputs[0].shape[1])
        self.width = width
        self._row = np.zeros((1, width), dtype=np.float64)
        self._risk = np.zeros((1, 1), dtype=_NUMPY_OF[types[RISK]])
        self._habit = np.zeros((1, 1), dtype=_NUMPY_OF[types[HABIT]])
        binding = self.session.io_binding()
        binding.bind_ortvalue_input(INPUT, ort.OrtValue.ortvalue_from_numpy(self._row))
        for name, buf in ((RISK, self._risk), (HABIT, self._habit)):
            binding.bind_output(name, "cpu", 0, buf.dtype, list(buf.shape), buf.ctypes.data)
        self._binding = binding
        self._run = _bound_run(self.session, binding)
        self._lock = threading.Lock()

    def score_one(self, row: np.ndarray | list[Any]) -> tuple[float, float]:
        """``row``: the union row, an array or the cells `Vectorizer.cells` gives (numpy converts
        them into the bound buffer as ``np.array(row, dtype=np.float64)`` would, without the
        array in between)."""
        if not self._lock.acquire(blocking=False):
            risk, habit = self.score_many(np.asarray(row, dtype=np.float64))
            return float(risk[0]), float(habit[0])
        try:
            self._row[0] = row
            self._run()
            return float(self._risk[0, 0]), float(self._habit[0, 0])
        finally:
            self._lock.release()

    def score_features(self, pack: Callable[[Any, np.ndarray, int], None], features: Any) -> tuple[float, float]:
        """`score_one` of the union row ``pack(features, rows, i)`` writes (`Vectorizer.pack_into`),
        written straight into the bound buffer."""
        if not self._lock.acquire(blocking=False):
            row = np.zeros((1, self.width), dtype=np.float64)
            pack(features, row, 0)
            risk, habit = self.score_many(row)
            return float(risk[0]), float(habit[0])
        try:
            pack(features, self._row, 0)
            self._run()
            return float(self._risk[0, 0]), float(self._habit[0, 0])
        finally:
            self._lock.release()

    def rows_scorer(self, rows: np.ndarray) -> "BoundRows":
        """A scorer of the first k rows of ``rows`` (a C-ordered float64 array this model's width
        wide, which the caller fills and keeps) through IO binding: `BoundRows`."""
        return BoundRows(self.session, rows, self._risk.dtype, self._habit.dtype)

    def score_many(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = np.ascontiguousarray(np.asarray(X, dtype=np.float64).reshape(-1, self.width))
        risk, habit = self.session.run([RISK, HABIT], {INPUT: rows})
        return np.asarray(risk, dtype=np.float64)[:, 0], np.asarray(habit, dtype=np.float64)[:, 0]

    def differs(self, risk: OnnxModel, habit: OnnxModel, rows: np.ndarray, *, risk_cols: Sequence[int],
                habit_cols: Sequence[int], medians: np.ndarray) -> float:
        """Largest difference between this session and the two models scored apart (the habit
        model on its medians-filled columns) on ``rows``, in batch and one row at a time (the
        bound path); inf when a NaN is where the other has none."""
        risk_cols, habit_cols = list(risk_cols), list(habit_cols)
        H = rows[:, habit_cols]
        parts = (risk.score_many(rows[:, risk_cols]), habit.score_many(np.where(np.isnan(H), medians, H)))
        joint = self.score_many(rows)
        one = [self.score_one(row) for row in rows]
        return max(max_abs_diff(joint[0], parts[0]), max_abs_diff(joint[1], parts[1]),
                   max_abs_diff(np.array([r for r, _ in one]), parts[0]),
                   max_abs_diff(np.array([h for _, h in one]), parts[1]))


class BoundRows:
    """Scores the first k rows of one buffer with IO binding: ONNX Runtime reads them where they
    are and writes both outputs into buffers of this object, so a call neither converts a feed
    nor allocates outputs (`JointModel.score_many` does both per call). One binding per k, made
    the first time k rows are scored; a k-row call answers each row what ``score_many`` of the
    same rows answers (the same session and nodes on the same values; tests hold it).

    Not for two threads at once: the output buffers are this object's (`fengkong.models.batch`
    keeps one per thread)."""

    def __init__(self, session: ort.InferenceSession, rows: np.ndarray, risk_dtype: Any, habit_dtype: Any) -> None:
        if rows.dtype != np.float64 or not rows.flags.c_contiguous or rows.ndim != 2:
            raise ValueError("rows: a C-ordered 2-D float64 array")
        self.session = session
        self.rows = rows
        self._risk = np.zeros((len(rows), 1), dtype=risk_dtype)
        self._habit = np.zeros((len(rows), 1), dtype=habit_dtype)
        self._runs: dict[int, tuple[Callable[[], None], np.ndarray, np.ndarray]] = {}

    def __call__(self, k: int) -> tuple[list[float], list[float]]:
        """(txn_risk's scores, the habit model's scores) of the first ``k`` rows, as Python floats."""
        bound = self._runs.get(k)
        if bound is None:
            bound = self._runs[k] = self._bind(k)
        run, risk, habit = bound
        run()
        return risk.tolist(), habit.tolist()

    def _bind(self, k: int) -> tuple[Callable[[], None], np.ndarray, np.ndarray]:
        """The bound run of k rows and the views of its k scores of each output (made once per k,
        like the binding, rather than sliced again at every call)."""
        if not 0 < k <= len(self.rows):
            raise ValueError(f"k: {k} rows of a buffer of {len(self.rows)}")
        binding = self.session.io_binding()
        binding.bind_ortvalue_input(INPUT, ort.OrtValue.ortvalue_from_numpy(self.rows[:k]))
        for name, buf in ((RISK, self._risk), (HABIT, self._habit)):
            binding.bind_output(name, "cpu", 0, buf.dtype, [k, 1], buf.ctypes.data)
        return _bound_run(self.session, binding), self._risk[:k, 0], self._habit[:k, 0]


def _bound_run(session: ort.InferenceSession, binding: ort.IOBinding) -> Callable[[], None]:
    """The bound run of ``session``, with no arguments: ONNX Runtime's public
    ``run_with_iobinding``. (Calling the C++ session under its wrapper would skip a per-call
    check worth about a microsecond, through private attributes an upgrade may drop: not
    worth the debt.)"""
    return partial(session.run_with_iobinding, binding)


def check_rows(risk: OnnxModel, habit: OnnxModel, *, width: int, risk_cols: Sequence[int],
               habit_cols: Sequence[int]) -> np.ndarray:
    """Union rows to check a `JointModel` on: each model's check rows (`load_model` keeps them)
    in its columns with the others missing, then a row all missing and a row all zero."""
    blocks = [np.full((1, width), np.nan), np.zeros((1, width))]
    for model, cols in ((risk, risk_cols), (habit, habit_cols)):
        if model.check_X is not None and len(model.check_X):
            block = np.full((len(model.check_X), width), np.nan)
            block[:, list(cols)] = model.check_X
            blocks.append(block)
    return np.vstack(blocks)


__all__ = ["HABIT", "INPUT", "RISK", "BoundRows", "JointModel", "check_rows", "union_names"]
