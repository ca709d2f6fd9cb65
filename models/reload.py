"""Hot reload: a long-running service follows the newest detector version in the model directory.

Training saves versions atomically (:mod:`models.artifacts`); a service polls the directory and
swaps the newer model in between two batches. A version this code cannot score (other features,
another detector format) is refused and logged, and the service keeps what it has.
"""

from __future__ import annotations

import logging
from pathlib import Path

from detection.training import TrainedModel
from models.artifacts import ModelMismatchError, latest_version, load_model

log = logging.getLogger(__name__)


class ModelReloader:
    """Holds the model in use (None: no usable model yet) and swaps in newer versions."""

    def __init__(self, model_dir: Path) -> None:
        self.model_dir = model_dir
        self.model: TrainedModel | None = self._first()

    def _first(self) -> TrainedModel | None:
        try:
            return load_model(self.model_dir)
        except FileNotFoundError:
            log.warning("no trained model in %s: every meter is scored by the baseline rules until one is "
                        "trained (`wattsup model train`)", self.model_dir)
        except ModelMismatchError as exc:
            log.error("%s; until then every meter is scored by the baseline rules", exc)
        return None

    def reload_if_newer(self) -> bool:
        """Load the newest version if it is not the one in use; True when the model changed."""
        newest = latest_version(self.model_dir)
        if newest is None or (self.model is not None and newest == self.model.version):
            return False
        try:
            model = load_model(self.model_dir, newest)
        except ModelMismatchError as exc:
            log.error("not loading model %s: %s", newest, exc)
            return False
        self.model = model
        log.info("hot-reloaded detector model %s", newest)
        return True
