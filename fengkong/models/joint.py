"""Both transaction models in one ONNX Runtime session: one call per payment, not two.

Why: most of what scoring a payment costs the worker is not the trees but ONNX
Runtime's per-call machinery (the feed's conversion, the executor, the outputs'
allocation) and the instructions and cache lines it brings in, which the rules
that run next then miss (docs/benchmarks.md). `joint_graph` builds one graph from
the two checked ones: it takes the union row of `runtime.TransactionModels`, hands
``txn_risk`` its columns (a ``Slice``), and the habit model its own with missing
values filled by the training medians (``Gather``, ``IsNaN``, ``Where``: what
``np.where(np.isnan(x), medians, x)`` does), then runs each model's nodes unchanged
(names prefixed). `JointModel` scores one row through IO binding: the input and
output buffers are bound once, so a call only copies the row in.

`JointModel.differs` holds the joint session to the two separate sessions on
`check_rows` (both models' check rows in their columns): any difference and the
caller serves the two sessions instead (`runtime.TransactionModels`).
"""

from __future__ import annotations

import threading
from typing import Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnx import compose, helper, numpy_helper

from fengkong.models.onnx_model import OnnxModel, max_abs_diff, session_options

#: The names the joint graph gives its input and its two outputs.
INPUT, RISK, HABIT = "X", "txn_risk", "habit"
_NUMPY_OF = {"tensor(float)": np.float32, "tensor(double)": np.float64}


def _column(prefix: str, model: OnnxModel, proto: onnx.ModelProto, name: str) -> tuple[list[onnx.NodeProto],
                                                                                        list[onnx.TensorProto]]:
    """Nodes naming ``model``'s score column ``name`` ([N, 1]): a Gather of that column, or an
    Identity when the output is already one column."""
    out = prefix + model.output
    dims = next(o for o in proto.graph.output if o.name == out).type.tensor_type.shape.dim
    if len(dims) == 2 and dims[1].HasField("dim_value") and dims[1].dim_value == 1 and model.column == 0:
        return [helper.make_node("Identity", [out], [name])], []
    index = f"{prefix}column"
    return ([helper.make_node("Gather", [out, index], [name], axis=1)],
            [numpy_helper.from_array(np.array([model.column], dtype=np.int64), index)])


def joint_graph(risk: OnnxModel, habit: OnnxModel, *, width: int, risk_cols: Sequence[int],
                habit_cols: Sequence[int], medians: np.ndarray) -> bytes:
    """The one graph of both models (module docstring), input ``X`` [N, ``width``] float64,
    outputs ``txn_risk`` and ``habit`` [N, 1]. ``ValueError`` when the two graphs declare
    different opsets (the same node could then mean two things)."""
    r, h = onnx.load_from_string(risk.model), onnx.load_from_string(habit.model)
    opsets = {(o.domain, o.version) for o in r.opset_import}
    if opsets != {(o.domain, o.version) for o in h.opset_import}:
        raise ValueError("the two models' graphs declare different opsets")
    r, h = compose.add_prefix(r, "risk/"), compose.add_prefix(h, "habit/")
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    for prefix, cols, fill in (("risk/", list(risk_cols), None), ("habit/", list(habit_cols), medians)):
        target = f"{prefix}X" if fill is None else f"{prefix}raw"
        if cols == list(range(width)):
            nodes.append(helper.make_node("Identity", [INPUT], [target]))
        elif cols == list(range(len(cols))):
            nodes.append(helper.make_node("Slice", [INPUT, "start", f"{prefix}end", "axis"], [target]))
            inits.append(numpy_helper.from_array(np.array([len(cols)], dtype=np.int64), f"{prefix}end"))
        else:
            nodes.append(helper.make_node("Gather", [INPUT, f"{prefix}cols"], [target], axis=1))
            inits.append(numpy_helper.from_array(np.asarray(cols, dtype=np.int64), f"{prefix}cols"))
        if fill is not None:
            nodes += [helper.make_node("IsNaN", [target], [f"{prefix}missing"]),
                      helper.make_node("Where", [f"{prefix}missing", f"{prefix}medians", target], [f"{prefix}X"])]
            inits.append(numpy_helper.from_array(np.asarray(fill, dtype=np.float64), f"{prefix}medians"))
    inits += [numpy_helper.from_array(np.array([0], dtype=np.int64), "start"),
              numpy_helper.from_array(np.array([1], dtype=np.int64), "axis")]
    nodes += list(r.graph.node) + list(h.graph.node)
    inits += list(r.graph.initializer) + list(h.graph.initializer)
    outputs = []
    for prefix, model, proto, name in (("risk/", risk, r, RISK), ("habit/", habit, h, HABIT)):
        more_nodes, more_inits = _column(prefix, model, proto, name)
        nodes += more_nodes
        inits += more_inits
        elem = next(o for o in proto.graph.output if o.name == prefix + model.output).type.tensor_type.elem_type
        outputs.append(helper.make_tensor_value_info(name, elem, [None, 1]))
    graph = helper.make_graph(nodes, "transaction_models",
                              [helper.make_tensor_value_info(INPUT, onnx.TensorProto.DOUBLE, [None, width])],
                              outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=list(r.opset_import), producer_name="fengkong")
    model.ir_version = max(r.ir_version, h.ir_version)
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


class JointModel:
    """One session for both transaction models; ``score_one`` answers (txn_risk's score, the
    habit model's score) of one union row with one IO-bound call.

    The bound buffers belong to the session: a call made while another thread holds them
    (the service scores on one thread; a caller with threads may not) runs unbound instead."""

    def __init__(self, risk: OnnxModel, habit: OnnxModel, *, width: int, risk_cols: Sequence[int],
                 habit_cols: Sequence[int], medians: np.ndarray) -> None:
        data = joint_graph(risk, habit, width=width, risk_cols=risk_cols, habit_cols=habit_cols, medians=medians)
        self.session = ort.InferenceSession(data, session_options(), providers=["CPUExecutionProvider"])
        self.width = width
        types = {o.name: o.type for o in self.session.get_outputs()}
        self._row = np.zeros((1, width), dtype=np.float64)
        self._risk = np.zeros((1, 1), dtype=_NUMPY_OF[types[RISK]])
        self._habit = np.zeros((1, 1), dtype=_NUMPY_OF[types[HABIT]])
        binding = self.session.io_binding()
        binding.bind_ortvalue_input(INPUT, ort.OrtValue.ortvalue_from_numpy(self._row))
        for name, buf in ((RISK, self._risk), (HABIT, self._habit)):
            binding.bind_output(name, "cpu", 0, buf.dtype, list(buf.shape), buf.ctypes.data)
        self._binding = binding
        self._lock = threading.Lock()

    def score_one(self, row: np.ndarray) -> tuple[float, float]:
        if not self._lock.acquire(blocking=False):
            risk, habit = self.score_many(row)
            return float(risk[0]), float(habit[0])
        try:
            self._row[0] = row
            self.session.run_with_iobinding(self._binding)
            return float(self._risk[0, 0]), float(self._habit[0, 0])
        finally:
            self._lock.release()

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


__all__ = ["HABIT", "INPUT", "RISK", "JointModel", "check_rows", "joint_graph"]
