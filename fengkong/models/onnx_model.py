"""Serving a model through ONNX Runtime: one session per model, checked when it loads.

Training converts each fitted tree model to ONNX (`fengkong.training.onnx_export`)
and saves the ``.onnx`` file in the artifact, beside the pickled estimator, with
a few validation rows and scikit-learn's outputs on them (``<name>.check.npz``).
The service scores with ONNX Runtime, a maintained tree-ensemble runtime: no
pickle, no scikit-learn and no hand-written tree walker in the decision path.

What an artifact's ``meta.json`` says of each model, under ``onnx.<name>``
(`OnnxSpec.meta`): the file, its sha256, the output to read and its column
(the HistGradientBoosting graph answers ``probability``, ``predict_proba[:, 1]``;
the IsolationForest graph answers ``score``, ``score_samples``), the number of
input features (a float64 input ``X``), the tolerance and the largest difference
from scikit-learn measured at save on every validation row.

`load_model` refuses (`ArtifactError`, saying why) a model whose entry or file is
missing (artifacts written before ONNX serving have neither: retrain them), whose
file is not the one saved (sha256), that ONNX Runtime cannot open, or whose
output on its check rows differs from scikit-learn's by more than the tolerance.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import onnxruntime as ort

from fengkong.models.artifacts import ArtifactError

if TYPE_CHECKING:
    from fengkong.models.artifacts import Artifact

#: Largest absolute difference between ONNX Runtime and scikit-learn an artifact may show:
#: probabilities and scores are 0-1; the graphs branch exactly as scikit-learn does, but
#: ONNX Runtime's tree ensembles answer float32 (the sum, then the sigmoid or the score
#: transform), which leaves differences below 1e-6 in practice.
TOLERANCE = 1e-5
#: Validation rows stored with each model to check it again at every load.
CHECK_ROWS = 256


def session_options() -> ort.SessionOptions:
    """One thread per session: the service scores one event per call, and a thread pool
    per call costs more than it saves (worker processes supply the parallelism). Nodes run
    one after another, and no thread spins waiting for work: on a worker's shared cores a
    spinning pool thread takes the CPU the event loop needs."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    opts.log_severity_level = 3  # errors only: the load check reports what matters
    return opts


def max_abs_diff(got: np.ndarray, expected: np.ndarray) -> float:
    """Largest |got - expected|; inf when either has a NaN where the other has not, or shapes differ."""
    a, b = np.asarray(got, dtype=np.float64).ravel(), np.asarray(expected, dtype=np.float64).ravel()
    if a.shape != b.shape or not np.array_equal(np.isnan(a), np.isnan(b)):
        return float("inf")
    ok = ~np.isnan(a)
    return float(np.max(np.abs(a[ok] - b[ok]), initial=0.0))


@dataclass(frozen=True)
class OnnxSpec:
    """A converted model ready to save: the ONNX bytes, where its score is, check rows
    (float64 inputs) with scikit-learn's scores on them, and what the save-time check measured."""

    model: bytes
    output: str
    column: int
    n_features: int
    check_X: np.ndarray
    check_expected: np.ndarray
    validated_rows: int
    max_abs_diff: float

    def meta(self, name: str) -> dict[str, Any]:
        return {"file": f"{name}.onnx", "check_file": f"{name}.check.npz",
                "sha256": hashlib.sha256(self.model).hexdigest(), "output": self.output, "column": self.column,
                "n_features": self.n_features, "tolerance": TOLERANCE, "validated_rows": self.validated_rows,
                "max_abs_diff": self.max_abs_diff}


class OnnxModel:
    """One ONNX Runtime session and where its score is: ``score_one`` for an event,
    ``score_many`` for rows (float64 in, as the graphs take; Python float out).

    Keeps the graph's bytes (``model``) and, once `load_model` checked it, its check rows
    (``check_X``), from which `fengkong.models.joint` builds and checks one session of both
    transaction models."""

    def __init__(self, model: bytes, *, output: str, column: int, n_features: int) -> None:
        self.model = model
        self.check_X: np.ndarray | None = None
        self.session = ort.InferenceSession(model, session_options(), providers=["CPUExecutionProvider"])
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ValueError(f"expected one input, the graph has {len(inputs)}")
        outputs = [o.name for o in self.session.get_outputs()]
        if output not in outputs:
            raise ValueError(f"output {output!r} not in the graph's outputs {outputs}")
        self.input = inputs[0].name
        self.output = output
        self.column = column
        self.n_features = n_features
        self._outputs = [output]

    def score_many(self, X: np.ndarray) -> np.ndarray:
        rows = np.ascontiguousarray(np.asarray(X, dtype=np.float64).reshape(-1, self.n_features))
        out = self.session.run(self._outputs, {self.input: rows})[0]
        return np.asarray(out, dtype=np.float64).reshape(len(rows), -1)[:, self.column]

    def score_one(self, x: np.ndarray) -> float:
        out = self.session.run(self._outputs, {self.input: np.asarray(x, dtype=np.float64).reshape(1, -1)})[0]
        return float(out[0, self.column])


def load_model(art: Artifact, name: str) -> OnnxModel:
    """The checked ONNX model ``name`` of an artifact (see the module docstring for what is refused)."""
    where = f"{art.kind} artifact {art.version}"
    entry = (art.meta.get("onnx") or {}).get(name)
    if entry is None:
        raise ArtifactError(f"{where}: refused: no ONNX model {name!r} (written before models were served through "
                            f"ONNX Runtime?): retrain it with `fengkong train {art.kind}`")
    path = art.file(entry["file"])
    try:
        data = path.read_bytes()
    except OSError:
        raise ArtifactError(f"{where}: refused: its ONNX model {path.name} is missing; retrain it") from None
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise ArtifactError(f"{where}: refused: {path.name} is not the file saved with it (sha256 differs)")
    try:
        model = OnnxModel(data, output=entry["output"], column=int(entry["column"]),
                          n_features=int(entry["n_features"]))
        with np.load(art.file(entry["check_file"]), allow_pickle=False) as z:
            X, expected = z["X"], z["expected"]
        diff = max_abs_diff(model.score_many(X), expected)
    except Exception as exc:  # ONNX Runtime's errors (InvalidProtobuf, Fail, ...) derive from Exception itself
        raise ArtifactError(f"{where}: refused: {path.name} does not load: {exc}") from None
    tol = float(entry.get("tolerance", TOLERANCE))
    if not diff <= tol:
        raise ArtifactError(f"{where}: refused: {path.name} disagrees with scikit-learn on its {len(X)} check rows "
                            f"(max abs difference {diff:.3g} > {tol:g}); retrain it")
    model.check_X = X
    return model


__all__ = ["CHECK_ROWS", "OnnxModel", "OnnxSpec", "TOLERANCE", "load_model", "max_abs_diff", "session_options"]
