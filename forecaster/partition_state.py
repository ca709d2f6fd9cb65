"""Warm-start parameters and last horizons of a forecaster group instance, kept per readings partition.

A whole-fleet run (``wattsup forecast run``) keeps one file of each in the data dir. An instance of a
forecaster group (``wattsup forecast schedule``) keeps them in ``partitions/<n>/`` of the data dir,
one directory per readings partition, and writes a partition's files only while it owns that
partition (:class:`forecaster.group.RunShare`), so two instances never write the same file. When
Kafka moves a partition to another instance its meters' state moves with it where the instances
share the data dir (every replica of ``docker compose --scale forecaster=N`` mounts the same volume);
an instance on a disk of its own starts the moved meters cold once (Prophet from its defaults, no
accuracy figure for them in that run) and warm from then on. Meters not found in their partition's
files are looked up in the whole-fleet files, so state written by ``forecast run`` (or by a version
before groups) still warm-starts them.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from forecaster.accuracy import load_horizons, save_horizons
from forecaster.fitting import ForecastResult
from forecaster.warm_start import load_params, save_params

PARTITIONS_DIR = "partitions"

Params = dict[str, dict[str, np.ndarray]]
Horizons = dict[str, tuple[np.ndarray, np.ndarray]]


def partition_dir(data_dir: Path, partition: int) -> Path:
    """Where the state of the meters whose readings are in ``partition`` lives."""
    return data_dir / PARTITIONS_DIR / str(int(partition))


def load_partition_params(data_dir: Path, partitions: Iterable[int]) -> Params:
    """Warm-start parameters of the meters of ``partitions`` (whole-fleet files fill in the rest)."""
    params = load_params(data_dir)
    for partition in partitions:
        params.update(load_params(partition_dir(data_dir, partition)))
    return params


def load_partition_horizons(data_dir: Path, partitions: Iterable[int]) -> Horizons:
    """Last horizons of the meters of ``partitions`` (whole-fleet files fill in the rest)."""
    horizons = load_horizons(data_dir)
    for partition in partitions:
        horizons.update(load_horizons(partition_dir(data_dir, partition)))
    return horizons


def save_partition_state(data_dir: Path, partition: int, params: Params, results: Iterable[ForecastResult]) -> None:
    """Merge one partition's new parameters and horizons into its files (meters not in this run are kept)."""
    where = partition_dir(data_dir, partition)
    if params:
        save_params(where, {**load_params(where), **params})
    save_horizons(where, results)
