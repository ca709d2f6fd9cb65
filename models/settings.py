"""Settings of model training (``WATTSUP_MODEL_*``)."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

from foundation.kafka_settings import PROJECT_ROOT


class ModelSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WATTSUP_MODEL_", env_file=".env", extra="ignore",
                                      protected_namespaces=())

    dir: Path = PROJECT_ROOT / "var" / "models"
    contamination: float = 0.003
    n_estimators: int = 100
