"""What the decision path needs from the models: load the latest artifacts once,
then turn one event's features into the ``model.*`` features the rules read.

Placeholder until the models land: no artifacts, rules-only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping


class ModelRuntime:
    """Loaded model artifacts. ``status`` says what is loaded, for /readyz and decisions."""

    def __init__(self) -> None:
        self.loaded: dict[str, str] = {}

    @classmethod
    def load(cls, artifacts_dir: Path | None) -> "ModelRuntime":
        return cls()

    @property
    def available(self) -> bool:
        return bool(self.loaded)

    @property
    def status(self) -> str:
        return "rules-only: no model artifacts loaded" if not self.loaded else ", ".join(self.loaded)

    def score(self, features: Mapping[str, Any]) -> dict[str, float | None]:
        """model.* features for one event (empty when no model is loaded)."""
        return {}
