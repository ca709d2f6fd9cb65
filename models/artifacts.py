"""Versioned detector artifacts on disk: ``<model_dir>/<version>/model.joblib`` + ``metadata.json``.

Artifacts stay on disk (or a mounted object store), not in Kafka: a 100-tree forest is larger
than Kafka's default message size. Versions are UTC timestamps, so "newest" is the greatest
name, and a worker notices a new version by listing the directory.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

import joblib

from detection.features import FEATURE_NAMES
from detection.isolation_forest import DETECTOR_FORMAT, MeterAnomalyDetector
from detection.training import ModelMetadata, TrainedModel, timestamp_version

log = logging.getLogger(__name__)

MODEL_FILE = "model.joblib"
METADATA_FILE = "metadata.json"


class ModelMismatchError(ValueError):
    """The artifact was trained on other features, or saved in another format, than this code scores."""


def new_version(model_dir: Path) -> str:
    """A version name not yet taken in ``model_dir``: the training time, with a suffix if needed."""
    base = timestamp_version()
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


def load_model(model_dir: Path, version: str | None = None, *,
               expected_features: list[str] | tuple[str, ...] = FEATURE_NAMES) -> TrainedModel:
    """Load a version (default: the newest); refuse one whose features or format differ from this code's."""
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
    try:
        detector = joblib.load(path / MODEL_FILE)
    except (ModuleNotFoundError, AttributeError) as exc:  # pickled by a WattsUp whose classes lived elsewhere
        raise ModelMismatchError(f"model {version} cannot be read by this WattsUp ({exc}); "
                                 "retrain it with `wattsup model train`") from exc
    return TrainedModel(detector=detector, metadata=metadata, path=path)
