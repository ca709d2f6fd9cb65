"""``wattsup detect`` and ``wattsup evaluate``: the detector over a CSV, offline."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import typer
from rich.console import Console
from rich.table import Table

console = Console(width=160)


def _load_readings(path: Path) -> pd.DataFrame:
    from readings.csv_parser import CsvFormatError, parse_readings_csv

    try:
        parsed = parse_readings_csv(path)
    except CsvFormatError as exc:
        console.print(f"[red]error:[/red] {path}: {exc}")
        raise typer.Exit(2) from exc
    for row in parsed.rejected[:20]:
        console.print(f"row {row.row_number} skipped: {row.reason}")
    if len(parsed.rejected) > 20:
        console.print(f"... and {len(parsed.rejected) - 20} more rows skipped")
    frame = parsed.readings
    # Row numbers count physical lines (header = 1, blank lines included): keep blank lines so
    # row n of the file is position n - 2 here too.
    raw = pd.read_csv(path, usecols=lambda c: c.strip().lower() in ("label", "event_id", "archetype"), dtype=str,
                      keep_default_na=False, skip_blank_lines=False)
    raw.columns = [c.strip().lower() for c in raw.columns]
    for column in raw.columns:
        frame[column] = raw[column].iloc[frame["row_number"].to_numpy() - 2].to_numpy()
    return frame


def _model(model_dir: Path | None, fit_on_input: bool):
    if fit_on_input:
        return None
    from models.artifacts import load_model
    from models.settings import ModelSettings

    target = model_dir or ModelSettings().dir
    try:
        return load_model(target)
    except FileNotFoundError:
        return None


def _detect(frame: pd.DataFrame, model, **kwargs):
    """:func:`detection.offline.detect_frame`, with a history too short to fit on said plainly."""
    from detection.calendar import FleetCalendar
    from detection.offline import detect_frame
    from detection.training import NotEnoughHistoryError
    from foundation.fleet_clock import FleetClock

    try:
        return detect_frame(frame, model, calendar=FleetCalendar.from_clock(FleetClock()), **kwargs)
    except NotEnoughHistoryError as exc:
        console.print(f"[red]error:[/red] no trained model, and the file is too short to fit one on: {exc}")
        raise typer.Exit(2) from exc


def detect(
    readings: Path = typer.Argument(..., exists=True, dir_okay=False, help="timestamp,meter_id,kwh CSV."),
    scores: Path = typer.Option(..., "--scores", help="Write one row per reading: timestamp,meter_id,score,flag,severity."),
    output: Path | None = typer.Option(None, "-o", "--output", help="Write the anomalies with their causes."),
    model_dir: Path | None = typer.Option(None, help="Use the newest model there (default WATTSUP_MODEL_DIR)."),
    fit_on_input: bool = typer.Option(False, help="Ignore trained models; fit on the input itself."),
    sensitivity: float = typer.Option(1.0, help="2 flags about twice as much, 0.5 half."),
) -> None:
    """Run the stream's features and detector offline over a CSV."""
    frame = _load_readings(readings)
    result = _detect(frame, _model(model_dir, fit_on_input), sensitivity=sensitivity)
    result.scores[["timestamp", "meter_id", "score", "flag", "severity"]].to_csv(
        scores, index=False, date_format="%Y-%m-%dT%H:%M:%SZ")
    if output is not None:
        result.anomalies.drop(columns=["causes_json"]).to_csv(output, index=False, date_format="%Y-%m-%dT%H:%M:%SZ")
    console.print(f"{len(frame)} readings, {len(result.anomalies)} anomalies (model {result.model_version})")


def evaluate(
    labelled: Path = typer.Argument(..., exists=True, dir_okay=False,
                                    help="timestamp,meter_id,kwh,label CSV (e.g. from --readings-csv of the simulator)."),
    detectors: str = typer.Option("iforest", help="Comma list of iforest, lof, ocsvm on the WattsUp features."),
    model_dir: Path | None = typer.Option(None, help="Evaluate the newest model there instead of fitting on the input."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the reports as JSON."),
    forecasts: bool = typer.Option(False, "--forecasts",
                                   help="Also score with forecasts replayed over the file on the forecaster's "
                                        "schedule (WATTSUP_FORECAST_*); Prophet fits take minutes on a large file."),
) -> None:
    """Precision, recall and F1 (point and event level) against the labels, with two baselines; per
    archetype too when the file has an ``archetype`` column (the simulator writes one)."""
    from detection.evaluation import (
        evaluate_flags,
        evaluate_groups,
        feature_detector_flags,
        raw_isolation_forest_baseline,
        rolling_zscore_baseline,
    )

    frame = _load_readings(labelled)
    if "label" not in frame:
        console.print("[red]error:[/red] the file has no label column")
        raise typer.Exit(2)
    frame["label"] = pd.to_numeric(frame["label"], errors="coerce").fillna(0).astype(int)
    reports = []
    for name in [d.strip() for d in detectors.split(",") if d.strip()]:
        if name == "iforest":
            result = _detect(frame, _model(model_dir, model_dir is None))
            flag, score = result.scores["flag"].to_numpy(), result.scores["score"].to_numpy()
            reports.append(evaluate_flags(frame, flag, score, "wattsup (isolation forest)"))
            if "archetype" in frame:
                reports += evaluate_groups(frame, flag, score, "wattsup (isolation forest)")
            if forecasts:
                from forecaster.settings import ForecastSettings
                from models.training import replay_forecasts

                settings = ForecastSettings()
                with console.status("replaying the forecaster over the file"):
                    replayed = replay_forecasts(frame, settings, every_seconds=settings.every_seconds)
                result = _detect(frame, _model(model_dir, model_dir is None), forecasts=replayed)
                reports.append(evaluate_flags(frame, result.scores["flag"].to_numpy(),
                                              result.scores["score"].to_numpy(),
                                              f"wattsup with forecasts ({replayed.covered / len(frame):.0%} covered)"))
        else:
            flag, score = feature_detector_flags(frame, name)
            reports.append(evaluate_flags(frame, flag, score, f"{name} on wattsup features"))
    flag, score = rolling_zscore_baseline(frame)
    reports.append(evaluate_flags(frame, flag, score, "baseline: rolling z-score"))
    flag, score = raw_isolation_forest_baseline(frame)
    reports.append(evaluate_flags(frame, flag, score, "baseline: raw-value isolation forest"))

    table = Table("detector", "readings", "event P", "event R", "event F1", "point P", "point R", "point F1",
                  "PR-AUC", "false alarms/1k", "median delay h")
    for r in reports:
        table.add_row(r.detector, r.group, f"{r.event_precision:.3f}", f"{r.event_recall:.3f}", f"{r.event_f1:.3f}",
                      f"{r.point_precision:.3f}", f"{r.point_recall:.3f}", f"{r.point_f1:.3f}", f"{r.pr_auc:.3f}",
                      f"{r.false_alarms_per_1000:.2f}", f"{r.median_delay_hours:.1f}")
    console.print(table)
    if json_out is not None:
        json_out.write_text(json.dumps([r.as_dict() for r in reports], indent=2, default=float))
