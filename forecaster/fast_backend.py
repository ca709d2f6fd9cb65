"""Prophet without its per-fit overheads: the same model, fitted and predicted the same way.

Profiling a fit of 28 days of hourly data (``uncertainty_samples=0``) with ``cProfile`` showed
most of the time outside Stan:

* cmdstanpy's ``stanio`` wrote the data JSON (a 670 x 39 feature matrix) through a recursive
  pure-Python walk. :class:`FastCmdStanPyBackend` writes it with the C ``json`` encoder, and
  formats each distinct feature-matrix row once per process (a row depends only on its
  timestamp, so meters on the same interval ends share rows). One backend (with its
  ``CmdStanModel``) serves every fit of a process, and Stan's temporary CSV/JSON files are
  removed after each fit (stock Prophet leaves them in ``/tmp``).
* Prophet built its feature matrix one DataFrame per seasonality, with a pandas timedelta
  Series per Fourier series, and rebuilt the component matrix with ``pd.crosstab`` on every fit
  and predict. :class:`FastProphet` builds the matrix in one numpy array (same columns, order
  and values to 1e-9) and the component matrix once per configuration.

Stan, its inputs and its optimisation (L-BFGS, Newton fallback) are unchanged.
"""
from __future__ import annotations

import copy
import json
import logging
import multiprocessing.util
import os
import shutil
import tempfile
from collections import OrderedDict
from typing import Any

import numpy as np
import pandas as pd

# Prophet logs "Importing plotly failed" at ERROR on import; WattsUp never plots.
logging.getLogger("prophet.plot").setLevel(logging.CRITICAL)

from prophet import Prophet  # noqa: E402 - after silencing its import-time log line
from prophet.models import CmdStanPyBackend  # noqa: E402

log = logging.getLogger(__name__)


def quiet_stan_logging() -> None:
    """cmdstanpy logs two INFO lines per fit and Prophet one per skipped seasonality: silence them."""
    for name in ("cmdstanpy", "prophet", "prophet.models", "prophet.forecaster"):
        logging.getLogger(name).setLevel(logging.ERROR)
    logging.getLogger("cmdstanpy").disabled = True


_ROW_JSON: dict[bytes, str] = {}
"""JSON text of feature-matrix rows by their bytes. A row depends only on its timestamp (and the
model configuration), so meters reporting on the same interval ends share every row."""
ROW_CACHE_LIMIT = 200_000


def cached_rows() -> int:
    """Rows whose JSON this process keeps for reuse."""
    return len(_ROW_JSON)


def matrix_json(matrix: np.ndarray) -> str:
    """JSON of the feature matrix, formatting each distinct row once per process."""
    rows = np.ascontiguousarray(matrix, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[1] == 0:
        return json.dumps(rows.tolist())
    keys = rows.view(np.dtype((np.void, rows.shape[1] * 8))).ravel().tolist()
    if len(_ROW_JSON) > ROW_CACHE_LIMIT:
        _ROW_JSON.clear()
    parts = []
    for key, row in zip(keys, rows):
        text = _ROW_JSON.get(key)
        if text is None:
            text = _ROW_JSON[key] = json.dumps(row.tolist())
        parts.append(text)
    return "[" + ",".join(parts) + "]"


def _write_json(data: dict[str, Any], directory: str, matrix: np.ndarray | None = None) -> str:
    """Write Stan's input; ``matrix`` (the feature matrix) is spliced in as cached text."""
    fd, path = tempfile.mkstemp(suffix=".json", dir=directory)
    with os.fdopen(fd, "w") as fh:
        if matrix is None:
            fh.write(json.dumps(data))  # dumps() uses the C encoder; dump() to a file does not
        else:
            fh.write(json.dumps({k: v for k, v in data.items() if k != "X"})[:-1])
            fh.write(', "X": ')
            fh.write(matrix_json(matrix))
            fh.write("}")
    return path


class FastCmdStanPyBackend(CmdStanPyBackend):
    """:class:`CmdStanPyBackend` that writes Stan's input with the C JSON encoder and cleans up."""

    def __init__(self, temp_dir: str | None = None) -> None:
        super().__init__()
        if temp_dir is None:
            temp_dir = tempfile.mkdtemp(prefix="wattsup-stan-")
            # run at exit by multiprocessing in pool workers too (they skip atexit handlers)
            multiprocessing.util.Finalize(None, shutil.rmtree, args=(temp_dir,), kwargs={"ignore_errors": True},
                                          exitpriority=0)
        self.temp_dir = temp_dir

    def fit(self, stan_init: dict[str, Any], stan_data: dict[str, Any], **kwargs: Any) -> OrderedDict[str, np.ndarray]:
        if "inits" not in kwargs and "init" in kwargs:
            stan_init = self.sanitize_custom_inits(stan_init, kwargs.pop("init"))
        matrix = stan_data["X"].to_numpy(dtype=float)
        inits, data = self.prepare_data(stan_init, {**stan_data, "X": stan_data["X"].iloc[:0]})
        data_path = _write_json(data, self.temp_dir, matrix)
        init_path = _write_json(inits, self.temp_dir)
        args: dict[str, Any] = dict(
            data=data_path, inits=init_path, output_dir=self.temp_dir,
            algorithm="Newton" if data["T"] < 100 else "LBFGS", iter=int(1e4),
        )
        args.update(kwargs)
        try:
            try:
                self.stan_fit = self.model.optimize(**args)
            except RuntimeError:
                if not self.newton_fallback or args["algorithm"] == "Newton":
                    raise
                args["algorithm"] = "Newton"
                self.stan_fit = self.model.optimize(**args)
            params = self.stan_to_dict_numpy(self.stan_fit.column_names, self.stan_fit.optimized_params_np)
        finally:
            for path in (data_path, init_path):
                os.unlink(path)
            self.cleanup()
        for name in params:
            params[name] = params[name].reshape((1, -1))
        return params


_COMPONENT_CACHE: dict[tuple, tuple[pd.DataFrame, dict[str, list[str]]]] = {}


class FastProphet(Prophet):
    """Prophet with its per-fit feature overheads removed; the model and its results are unchanged.

    * ``make_all_seasonality_features`` fills one numpy array (Prophet's own path with holidays).
    * ``fourier_series`` from the timestamps' int64 nanoseconds with numpy, instead of a pandas
      timedelta Series per seasonality (the same formula: days since the epoch, sin/cos of
      ``2 pi k t / period``).
    * ``regressor_column_matrix`` (which feature column belongs to which component, built with
      ``pd.crosstab``) depends only on the model's configuration, not on the data: it is built
      once per configuration and reused by every fit and predict of the process.
    """

    @staticmethod
    def fourier_series(dates: pd.Series, period: float, series_order: int) -> np.ndarray:
        if not series_order >= 1:
            raise ValueError("series_order must be >= 1")
        values = dates.dt.tz_convert(None) if dates.dt.tz is not None else dates
        t = values.to_numpy(dtype="datetime64[ns]").astype(np.int64) / 86_400e9
        angles = np.outer(t, 2.0 * np.pi * np.arange(1, series_order + 1) / period)
        out = np.empty((len(t), 2 * series_order))
        out[:, 0::2] = np.sin(angles)
        out[:, 1::2] = np.cos(angles)
        return out

    def make_all_seasonality_features(self, df: pd.DataFrame) -> tuple[pd.DataFrame, list[float], pd.DataFrame,
                                                                         dict[str, list[str]]]:
        """Prophet's feature matrix built in one numpy array (same columns, order and values).

        Prophet builds one DataFrame per seasonality, zeroes conditional rows through a boolean
        DataFrame assignment and concatenates them: most of its per-fit Python time. Models with
        holidays take Prophet's own path (their features depend on the holidays seen in training).
        """
        if self.holidays is not None or self.country_holidays is not None:
            return super().make_all_seasonality_features(df)
        width = sum(2 * p["fourier_order"] for p in self.seasonalities.values()) + len(self.extra_regressors)
        matrix = np.empty((len(df), max(width, 1)))
        columns: list[str] = []
        prior_scales: list[float] = []
        modes: dict[str, list[str]] = {"additive": [], "multiplicative": []}
        col = 0
        for name, props in self.seasonalities.items():
            n = 2 * props["fourier_order"]
            block = self.fourier_series(df["ds"], props["period"], props["fourier_order"])
            if props["condition_name"] is not None:
                block[~df[props["condition_name"]].to_numpy(dtype=bool)] = 0.0
            matrix[:, col:col + n] = block
            columns += [f"{name}_delim_{i + 1}" for i in range(n)]
            prior_scales += [props["prior_scale"]] * n
            modes[props["mode"]].append(name)
            col += n
        for name, props in self.extra_regressors.items():
            matrix[:, col] = df[name].to_numpy(dtype=float)
            columns.append(name)
            prior_scales.append(props["prior_scale"])
            modes[props["mode"]].append(name)
            col += 1
        if width == 0:  # Prophet's placeholder that keeps X non-empty
            matrix[:, 0] = 0.0
            columns, prior_scales = ["zeros"], [1.0]
        features = pd.DataFrame(matrix, columns=columns, index=df.index)
        component_cols, modes = self.regressor_column_matrix(features, modes)
        return features, prior_scales, component_cols, modes

    def regressor_column_matrix(self, seasonal_features: pd.DataFrame, modes: dict[str, list[str]],
                                ) -> tuple[pd.DataFrame, dict[str, list[str]]]:
        key = (
            tuple(seasonal_features.columns),
            tuple((mode, tuple(names)) for mode, names in sorted(modes.items())),
            None if self.train_holiday_names is None else tuple(self.train_holiday_names),
            tuple((name, props["mode"]) for name, props in self.extra_regressors.items()),
            self.holidays_mode,
            None if self.train_component_cols is None else tuple(self.train_component_cols.columns),
        )
        cached = _COMPONENT_CACHE.get(key)
        if cached is None:
            cols, new_modes = super().regressor_column_matrix(seasonal_features, copy.deepcopy(modes))
            cached = _COMPONENT_CACHE[key] = (cols, new_modes)
        cols, new_modes = cached
        return cols.copy(), copy.deepcopy(new_modes)
