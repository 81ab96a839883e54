"""The joint graph of the two transaction models, written at training time beside them.

`fengkong.models.joint` says why the service scores both models in one session. The
graph takes the union row (`fengkong.models.joint.union_names`) as ``X``, hands
``txn_risk`` its columns (``Identity`` or ``Slice``: they lead the row) and the habit
model its own with missing values filled by the training medians (``Gather``,
``IsNaN``, ``Where``: what ``np.where(np.isnan(x), medians, x)`` does), then runs
each model's nodes unchanged (names prefixed ``risk/`` and ``habit/``). Built here
with the onnx package, which the service never imports.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import onnx
from onnx import compose, helper, numpy_helper

from fengkong.models.joint import HABIT, INPUT, RISK, union_names
from fengkong.models.onnx_model import OnnxModel, OnnxSpec

Graph = OnnxModel | OnnxSpec


def _column(prefix: str, model: Graph, proto: onnx.ModelProto, name: str) -> tuple[list[onnx.NodeProto],
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


def joint_graph(risk: Graph, habit: Graph, *, width: int, risk_cols: Sequence[int],
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



def export_joint(risk: Graph, habit: Graph, *, risk_names: Sequence[str], habit_names: Sequence[str],
                 medians: np.ndarray) -> bytes:
    """`joint_graph` of the two models of a transactions artifact, read by their feature lists."""
    names = union_names(risk_names, habit_names)
    position = {n: j for j, n in enumerate(names)}
    return joint_graph(risk, habit, width=len(names), risk_cols=[position[n] for n in risk_names],
                       habit_cols=[position[n] for n in habit_names], medians=medians)


__all__ = ["export_joint", "joint_graph"]
