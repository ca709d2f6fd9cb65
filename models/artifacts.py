"""Versioned detector artifacts on disk: ``<model_dir>/<version>/model.joblib`` + ``metadata.json``.

Artifacts stay on disk (or a mounted object store), not in Kafka: a 100-tree forest is larger
than Kafka's default message size. Versions are UTC timestamps, so "newest" is the greatest
name, and a worker notices a new version by listing the directory.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import joblib
import sklearn

from models.isolation_detector import MeterAnomalyDetector

log = logging.getLogger(__name__)

MODEL_FILE = "model.joblib"
METADATA_FILE = "metadata.json"
DETECTOR_FORMAT = 2
"""Bumped when a saved detector no longer fits the scoring code: 2 added the forecast forest and
takes a missing (NaN) forecast residual, where format 1 took 0."""


class ModelMismatchError(ValueError):
    """The artifact was trained on other features than this code computes."""


@dataclass
class ModelMetadata:
    version: str
    features: list[str]
    parameters: dict[str, Any]
    contamination: float
    training_window: dict[str, str | None]
    rows: int
    meters: int
    thresholds: dict[str, float]
    """Tail probabilities per severity at sensitivity 1 (INFO, WARNING, CRITICAL)."""
    sklearn_version: str = sklearn.__version__
    created_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat())
    source: str = ""
    forecast_coverage: float = 0.0
    detector_format: int = 1
    """:data:`DETECTOR_FORMAT` of the code that trained it (absent, so 1, before format 2)."""
    """Share of the training readings that had a (replayed) forecast: 0 means the detector never
    saw a forecast residual and gives it no weight."""


@dataclass
class LoadedModel:
    detector: MeterAnomalyDetector
    metadata: ModelMetadata
    path: Path

    @property
    def version(self) -> str:
        return self.metadata.version


def new_version(model_dir: Path) -> str:
    base = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    version, n = base, 1
    while (model_dir / version).exists():
        n += 1
        version = f"{base}-{n}"
    return version


def save_model(model_dir: Path, detector: MeterAnomalyDetector, metadata: ModelMetadata) -> Path:
    """Write the artifact atomically: a half-written version is never visible to a worker."""
    model_dir.mkdir(parents=True, exist_ok=True)
    final = model_dir / metadata.version
    tmp = model_dir / f".{metadata.version}.tmp"
    tmp.mkdir(parents=True, exist_ok=False)
    joblib.dump(detector, tmp / MODEL_FILE, compress=3)
    (tmp / METADATA_FILE).write_text(json.dumps(asdict(metadata), indent=2))
    tmp.rename(final)
    log.info("saved model %s to %s", metadata.version, final)
    return final


def list_versions(model_dir: Path) -> list[ModelMetadata]:
    """All complete artifacts, oldest first."""
    if not model_dir.is_dir():
        return []
    found = []
    for path in sorted(p for p in model_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        meta = path / METADATA_FILE
        if meta.exists() and (path / MODEL_FILE).exists():
            found.append(ModelMetadata(**json.loads(meta.read_text())))
    return found


def latest_version(model_dir: Path) -> str | None:
    versions = list_versions(model_dir)
    return versions[-1].version if versions else None


def load_model(model_dir: Path, version: str | None = None, *, expected_features: list[str] | tuple[str, ...]) -> LoadedModel:
    """Load a version (default: the newest); refuse one whose features differ from this code's."""
    version = version or latest_version(model_dir)
    if version is None:
        raise FileNotFoundError(f"no trained model in {model_dir}: run `wattsup model train` first")
    path = model_dir / version
    metadata = ModelMetadata(**json.loads((path / METADATA_FILE).read_text()))
    if list(metadata.features) != list(expected_features):
        missing = [f for f in expected_features if f not in metadata.features]
        extra = [f for f in metadata.features if f not in expected_features]
        raise ModelMismatchError(
            f"model {version} was trained on other features than this WattsUp computes "
            f"(missing: {missing or 'none'}, unexpected: {extra or 'none'}, or a different order); "
            "retrain it with `wattsup model train`"
        )
    if metadata.detector_format != DETECTOR_FORMAT:
        raise ModelMismatchError(
            f"model {version} was saved in detector format {metadata.detector_format}, this WattsUp scores "
            f"format {DETECTOR_FORMAT}; retrain it with `wattsup model train`"
        )
    detector = joblib.load(path / MODEL_FILE)
    return LoadedModel(detector=detector, metadata=metadata, path=path)
