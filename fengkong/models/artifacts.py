"""Model artifacts on disk: what was trained, on what, with which libraries, how well.

Layout (the root: `default_root`, i.e. ``$FENGKONG_ARTIFACTS_DIR``, else ``./artifacts``)::

    <root>/<kind>/<version>/meta.json      kind, version, features, training window,
                                           rows, library versions, metrics, params
    <root>/<kind>/<version>/model.joblib   the fitted scikit-learn estimator(s), for batch jobs
    <root>/<kind>/<version>/<name>.onnx    each model converted to ONNX at training time,
                                           checked equal to scikit-learn: what the service scores
    <root>/<kind>/<version>/<name>.check.npz  validation rows and scikit-learn's scores on
                                           them, checked again at every load
                                           (`fengkong.models.onnx_model`)
    <root>/transactions/<version>/joint.onnx   both transaction models in one graph, scored
                                           with one call (`fengkong.models.joint`); checked
                                           equal to the two at every load

``kind`` is ``merchants`` or ``transactions``; ``version`` is the UTC training time
``YYYYmmddTHHMMSSZ`` plus a short content hash, so names sort by time and the
latest is the greatest. A version directory is written under a temporary name
and renamed into place only when complete, so a reader never sees half an
artifact.

`check_features` refuses an artifact asking for a feature the service cannot
supply (transactions: `fengkong.features.definitions.CATALOG`; merchants: the
daily features `MERCHANT_FEATURES`, which `fengkong.training.merchant_features`
computes), naming every such feature.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import numpy as np

from fengkong.features.definitions import CATALOG

if TYPE_CHECKING:
    from fengkong.models.onnx_model import OnnxSpec

KINDS = ("merchants", "transactions")
META = "meta.json"
MODEL = "model.joblib"
JOINT = "joint.onnx"
#: The merchant daily features (`fengkong.training.merchant_features.daily_features` columns):
#: what a merchants artifact may read. Kept here because serving checks artifacts against them.
MERCHANT_FEATURES: tuple[str, ...] = (
    "volume", "count", "avg_ticket", "growth_7d",
    "credit_share", "round_share", "near_limit_share", "night_share",
    "distinct_cards", "repeat_card_rate", "top_card_share",
    "refund_ratio_30d", "chargebacks_30d", "payments_30d", "chargeback_ratio_30d",
    "withdrawal_ratio_7d", "age_days",
)


class ArtifactError(RuntimeError):
    """An artifact that cannot be used; the message says why (and names the features)."""


ARTIFACTS_ENV = "FENGKONG_ARTIFACTS_DIR"
#: The older name `fengkong train` read: still honoured, with a warning, unless it contradicts `ARTIFACTS_ENV`.
DEPRECATED_ARTIFACTS_ENV = "FENGKONG_ARTIFACTS"
_WARNED: set[str] = set()


def default_root(option: Path | None = None) -> Path:
    """Where models live, for every command (train, serve, replay, rescore) and the service.

    ``option`` (a command's ``--artifacts``) wins; else ``$FENGKONG_ARTIFACTS_DIR``; else the
    deprecated ``$FENGKONG_ARTIFACTS`` (logged as deprecated); else ``./artifacts``. Both
    variables naming different folders is an `ArtifactError`, so that no command trains
    into one folder while the service reads another."""
    if option is not None:
        return Path(option)
    current, old = os.environ.get(ARTIFACTS_ENV) or None, os.environ.get(DEPRECATED_ARTIFACTS_ENV) or None
    if old is not None:
        if current is not None and Path(current).resolve() != Path(old).resolve():
            raise ArtifactError(f"{ARTIFACTS_ENV}={current} and {DEPRECATED_ARTIFACTS_ENV}={old} name different "
                                f"artifact folders; set only {ARTIFACTS_ENV}")
        if old not in _WARNED:  # once per process and value: the service resolves it for every artifact kind
            _WARNED.add(old)
            logging.getLogger(__name__).warning("%s is deprecated; use %s (same meaning)", DEPRECATED_ARTIFACTS_ENV,
                                                ARTIFACTS_ENV)
    return Path(current or old or "artifacts")


def library_versions() -> dict[str, str]:
    """Versions of what trained and converted the models (recorded in ``meta.json``)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("scikit-learn", "numpy", "pandas", "onnx", "onnxruntime", "fengkong"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:  # fengkong itself when run from a checkout
            out[name] = "unknown"
    return out


def supplied_features(kind: str) -> frozenset[str]:
    """Names the service (transactions) or the nightly job (merchants) can supply."""
    if kind == "transactions":
        return frozenset(n for n, s in CATALOG.items() if s.source != "model")
    if kind == "merchants":
        return frozenset(MERCHANT_FEATURES)
    raise ArtifactError(f"unknown artifact kind {kind!r} (known: {', '.join(KINDS)})")


def check_features(kind: str, features: Iterable[str], *, where: str = "") -> None:
    known = supplied_features(kind)
    unknown = [f for f in features if f not in known]
    if unknown:
        src = "fengkong.features.definitions.CATALOG" if kind == "transactions" else \
            "fengkong.models.artifacts.MERCHANT_FEATURES"
        raise ArtifactError(
            f"{where or kind + ' artifact'}: refused: it needs feature(s) the service cannot supply: "
            f"{', '.join(unknown)} (not in {src}); retrain it on supplied features or add them to the store")


@dataclass
class Artifact:
    kind: str
    path: Path
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def version(self) -> str:
        return str(self.meta.get("version", self.path.name))

    @property
    def features(self) -> list[str]:
        return list(self.meta.get("features", []))

    def file(self, name: str) -> Path:
        return self.path / name

    def load_estimator(self) -> Any:
        import joblib

        return joblib.load(self.path / MODEL)


def save(root: Path, kind: str, *, estimator: Any, features: list[str], window: dict[str, Any],
         metrics: dict[str, Any], params: dict[str, Any], rows: int,
         onnx: Mapping[str, OnnxSpec], joint: tuple[bytes, list[str]] | None = None) -> Artifact:
    """Write a new version of ``kind``; ``onnx`` maps a model name to its checked ONNX
    conversion (`fengkong.training.onnx_export.export`), written as ``<name>.onnx`` with
    its check rows and described under ``meta["onnx"][name]``. ``joint``: the graph of
    both transaction models and the row it reads (`fengkong.training.joint_export`),
    written as ``joint.onnx`` and described under ``meta["joint"]``."""
    import joblib

    if kind not in KINDS:
        raise ArtifactError(f"unknown artifact kind {kind!r}")
    check_features(kind, features)
    base = Path(root) / kind
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".partial-", dir=base))
    try:
        joblib.dump(estimator, tmp / MODEL)
        onnx_meta = {}
        for name, spec in onnx.items():
            entry = spec.meta(name)
            (tmp / entry["file"]).write_bytes(spec.model)
            np.savez(tmp / entry["check_file"], X=spec.check_X, expected=spec.check_expected)
            onnx_meta[name] = entry
        joint_meta = {}
        if joint is not None:
            (tmp / JOINT).write_bytes(joint[0])
            joint_meta = {"joint": {"file": JOINT, "sha256": hashlib.sha256(joint[0]).hexdigest(),
                                    "features": list(joint[1])}}
        digest = hashlib.sha256()
        for p in sorted(tmp.iterdir()):
            digest.update(p.name.encode() + p.read_bytes())
        now = datetime.now(timezone.utc)
        version = f"{now.strftime('%Y%m%dT%H%M%S')}Z-{digest.hexdigest()[:8]}"
        meta = {
            "kind": kind, "version": version, "created_at": now.isoformat(), "features": list(features),
            "training_window": window, "rows": int(rows), "libraries": library_versions(),
            "metrics": metrics, "params": params, "onnx": onnx_meta, **joint_meta, "files": sorted(p.name for p in tmp.iterdir()),
        }
        (tmp / META).write_text(json.dumps(meta, indent=2, default=str), encoding="utf-8")
        final = base / version
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Artifact(kind, final, meta)


def versions(root: Path, kind: str) -> list[Path]:
    base = Path(root) / kind
    if not base.is_dir():
        return []
    return sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / META).exists())


def latest(root: Path | None, kind: str) -> Artifact | None:
    """The newest complete version of ``kind`` under ``root`` (None if there is none)."""
    found = versions(Path(root) if root is not None else default_root(), kind)
    if not found:
        return None
    return open_artifact(found[-1], kind)


def open_artifact(path: Path, kind: str | None = None) -> Artifact:
    try:
        meta = json.loads((Path(path) / META).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: unreadable {META}: {exc}") from None
    k = meta.get("kind")
    if kind is not None and k != kind:
        raise ArtifactError(f"{path}: is a {k!r} artifact, expected {kind!r}")
    art = Artifact(str(k), Path(path), meta)
    check_features(art.kind, art.features, where=f"{art.kind} artifact {art.version}")
    return art
