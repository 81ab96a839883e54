"""Which columns of its input a joint graph's outputs can depend on, read off the graph itself.

Why: a tree ensemble reads only the features its splits test, and gradient boosting leaves
many of the union row's features untested (the trained txn_risk model splits on 46 of its 76).
Gathering, typing and packing a feature no tree reads is most of what building a payment's row
costs the worker (`transaction_model.Vectorizer.write_row`), so the service writes only the
columns this module finds read (`Vectorizer.writer`): the graph answers exactly as on the full
row, since a value no node reads changes nothing.

The graph is read with protobuf's public message API over the few fields of ONNX's
``onnx.proto`` this needs (the service does not import the onnx package: tests/test_models.py),
and the answer is conservative: a path from the input this module does not follow (an operator
other than those below, a Gather or Slice whose arguments are not constant initializers) makes
every column count as read. Followed: ``Identity``; ``Slice`` of the leading columns (constant
starts 0, axes 1, no steps); ``Gather`` on axis 1 of constant indices (each gathered column
counts as read, whatever reads it next); and ``TreeEnsembleRegressor`` / ``TreeEnsembleClassifier``
(ai.onnx.ml), which read the columns their ``nodes_featureids`` name (leaves too: a leaf's id is
a placeholder, counted all the same, which only keeps a column more).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto
#: The fields of onnx.proto (ModelProto and what it holds) read here, with their numbers there;
#: protobuf skips every other field of the message.
_FIELDS: dict[str, list[tuple[str, int, int, int, str | None]]] = {
    "Model": [("graph", 7, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, "Graph")],
    "Graph": [("node", 1, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, "Node"),
              ("initializer", 5, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, "Tensor"),
              ("input", 11, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, "Value"),
              ("output", 12, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, "Value")],
    "Node": [("input", 1, _F.TYPE_STRING, _F.LABEL_REPEATED, None),
             ("output", 2, _F.TYPE_STRING, _F.LABEL_REPEATED, None),
             ("op_type", 4, _F.TYPE_STRING, _F.LABEL_OPTIONAL, None),
             ("attribute", 5, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, "Attribute"),
             ("domain", 7, _F.TYPE_STRING, _F.LABEL_OPTIONAL, None)],
    "Attribute": [("name", 1, _F.TYPE_STRING, _F.LABEL_OPTIONAL, None),
                  ("i", 3, _F.TYPE_INT64, _F.LABEL_OPTIONAL, None),
                  ("ints", 8, _F.TYPE_INT64, _F.LABEL_REPEATED, None),
                  # a subgraph (If, Loop, Scan) may read the input without naming it: only noticed
                  ("g", 6, _F.TYPE_BYTES, _F.LABEL_OPTIONAL, None),
                  ("graphs", 11, _F.TYPE_BYTES, _F.LABEL_REPEATED, None)],
    "Tensor": [("dims", 1, _F.TYPE_INT64, _F.LABEL_REPEATED, None),
               ("data_type", 2, _F.TYPE_INT32, _F.LABEL_OPTIONAL, None),
               ("int64_data", 7, _F.TYPE_INT64, _F.LABEL_REPEATED, None),
               ("name", 8, _F.TYPE_STRING, _F.LABEL_OPTIONAL, None),
               ("raw_data", 9, _F.TYPE_BYTES, _F.LABEL_OPTIONAL, None),
               ("data_location", 14, _F.TYPE_INT32, _F.LABEL_OPTIONAL, None)],
    "Value": [("name", 1, _F.TYPE_STRING, _F.LABEL_OPTIONAL, None)],
}
_PACKAGE = "fengkong_onnx_subset"
#: TensorProto.DataType.INT64
_INT64 = 7
_TREES = frozenset({"TreeEnsembleRegressor", "TreeEnsembleClassifier"})


def _model_class() -> Any:
    """The message class of ModelProto as far as `_FIELDS` reads it (made once)."""
    global _MODEL
    if _MODEL is None:
        proto = descriptor_pb2.FileDescriptorProto(name=f"{_PACKAGE}.proto", package=_PACKAGE, syntax="proto2")
        for message, fields in _FIELDS.items():
            m = proto.message_type.add(name=message)
            for name, number, kind, label, type_name in fields:
                f = m.field.add(name=name, number=number, type=kind, label=label)
                if type_name is not None:
                    f.type_name = f".{_PACKAGE}.{type_name}"
        pool = descriptor_pool.DescriptorPool()
        pool.Add(proto)
        _MODEL = message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.Model"))
    return _MODEL


_MODEL: Any = None


def _ints(tensor: Any) -> list[int] | None:
    """The values of a constant int64 initializer, None for any other (or one stored outside)."""
    if tensor.data_type != _INT64 or tensor.data_location != 0:
        return None
    if tensor.raw_data:
        return [int(v) for v in np.frombuffer(tensor.raw_data, dtype="<i8")]
    return [int(v) for v in tensor.int64_data]


def read_columns(data: bytes, width: int) -> tuple[int, ...]:
    """The columns of the graph's one input (``width`` wide) that its outputs can depend on, in
    order: all of them unless every path from the input is one this module follows (module
    docstring)."""
    everything = tuple(range(width))
    model = _model_class()()
    model.ParseFromString(data)
    graph = model.graph
    if len(graph.input) != 1:
        return everything
    constants = {t.name: t for t in graph.initializer}
    inputs = [v.name for v in graph.input if v.name not in constants]
    if len(inputs) != 1:
        return everything
    # tensor name -> for each of its columns, the input column it holds
    columns: dict[str, list[int]] = {inputs[0]: list(everything)}
    read: set[int] = set()
    if any(a.HasField("g") or len(a.graphs) for node in graph.node for a in node.attribute):
        return everything  # a subgraph reads outer names without listing them as inputs
    for node in graph.node:  # ONNX lists nodes in topological order
        held = [columns[name] for name in node.input if name in columns]
        if not held:
            continue
        if len(held) > 1 or node.input[0] not in columns:
            return everything
        cols = held[0]
        attrs = {a.name: a for a in node.attribute}
        op = node.op_type
        if op == "Identity" and node.domain in ("", "ai.onnx"):
            columns[node.output[0]] = cols
        elif op == "Slice" and node.domain in ("", "ai.onnx") and len(node.input) == 4:
            starts, ends, axes = (_ints(constants[n]) if n in constants else None for n in node.input[1:4])
            if starts != [0] or axes != [1] or ends is None or len(ends) != 1 or ends[0] < 0:
                return everything
            columns[node.output[0]] = cols[:ends[0]]
        elif op == "Gather" and node.domain in ("", "ai.onnx") and "axis" in attrs and attrs["axis"].i == 1:
            indices = _ints(constants[node.input[1]]) if node.input[1] in constants else None
            if indices is None or not all(-len(cols) <= j < len(cols) for j in indices):
                return everything
            read.update(cols[j] for j in indices)
        elif op in _TREES and node.domain == "ai.onnx.ml" and "nodes_featureids" in attrs:
            ids = list(attrs["nodes_featureids"].ints)
            if not all(0 <= j < len(cols) for j in ids):
                return everything
            read.update(cols[j] for j in ids)
        else:
            return everything
    if any(v.name in columns for v in graph.output):  # an output that is the input, or part of it
        return everything
    return tuple(sorted(read))


__all__ = ["read_columns"]
