"""Prophet parameters of the previous run, per meter, kept on disk to warm-start the next fit.

One ``.npz`` file per data dir (a forecaster group keeps one per readings partition, see
:mod:`forecaster.partition_state`), replaced atomically at the end of each run: meter ids, the scalar
parameters (k, m, sigma_obs) and the delta/beta vectors, stored as object arrays because their
length depends on the meter's history (changepoints) and seasonalities. Prophet checks the shapes
itself (``sanitize_custom_inits``) and starts from its defaults where they no longer fit.
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

PARAMS_FILE = "prophet_params.npz"
_NAMES = ("k", "m", "sigma_obs", "delta", "beta")


def load_params(data_dir: Path) -> dict[str, dict[str, np.ndarray]]:
    """meter id -> Prophet init parameters; empty if there is no (readable) previous run."""
    path = data_dir / PARAMS_FILE
    if not path.exists():
        return {}
    try:
        with np.load(path, allow_pickle=True) as data:  # our own file, written by save_params
            meters = data["meters"]
            columns = {name: data[name] for name in _NAMES}
    except Exception as exc:  # noqa: BLE001 - a damaged file only costs the warm start
        log.warning("ignoring unreadable warm-start file %s: %s", path, exc)
        return {}
    return {str(m): {name: np.asarray(columns[name][i], dtype=float) for name in _NAMES}
            for i, m in enumerate(meters)}


def save_params(data_dir: Path, params: dict[str, dict[str, np.ndarray]]) -> Path:
    """Write all meters' parameters (merged by the caller with meters not fitted this run)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / PARAMS_FILE
    tmp = data_dir / f".{PARAMS_FILE}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp.npz"  # unique on a shared volume
    meters = sorted(params)
    columns = {}
    for name in _NAMES:
        column = np.empty(len(meters), dtype=object)
        for i, m in enumerate(meters):
            column[i] = np.asarray(params[m][name], dtype=float)
        columns[name] = column
    np.savez(tmp, meters=np.array(meters, dtype=str), **columns)
    os.replace(tmp, path)
    return path
