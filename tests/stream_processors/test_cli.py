"""`wattsup detect` and `wattsup evaluate` on files a user would bring."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
from typer.testing import CliRunner

from producers.simulator import FleetConfig, simulate_fleet
from wattsup.cli import app


def test_evaluate_keeps_labels_aligned_with_blank_lines_and_bad_rows(tmp_path):
    fleet = simulate_fleet(FleetConfig(meters=20, days=6, interval=timedelta(hours=1), seed=21))
    path = tmp_path / "labelled.csv"
    fleet.write_readings_csv(path)
    lines = path.read_text().splitlines()
    # a blank line and an unparseable row early in the file shift every later line by two
    lines[3:3] = ["", "not-a-time,M000001,1.0,1,F0001,3600,,,"]
    path.write_text("\n".join(lines) + "\n")
    scores = tmp_path / "scores.csv"
    result = CliRunner().invoke(app, ["detect", str(path), "--scores", str(scores), "--fit-on-input"])
    assert result.exit_code == 0, result.output
    assert "row 5 skipped: unparseable timestamp" in result.output
    assert len(pd.read_csv(scores)) == len(fleet.readings)

    from stream_processors.cli import _load_readings

    frame = _load_readings(path)
    merged = frame.merge(fleet.readings[["meter_id", "timestamp", "label"]], on=["meter_id", "timestamp"],
                         suffixes=("_file", "_truth"))
    assert len(merged) == len(fleet.readings)
    assert (merged["label_file"].astype(int) == merged["label_truth"]).all()

    result = CliRunner().invoke(app, ["evaluate", str(path), "--json", str(tmp_path / "report.json")])
    assert result.exit_code == 0, result.output
    assert "baseline: rolling z-score" in result.output


def test_evaluate_with_forecasts_reports_a_row_scored_with_replayed_forecasts(tmp_path, monkeypatch):
    import json

    fleet = simulate_fleet(FleetConfig(meters=12, days=5, interval=timedelta(hours=1), seed=22))
    path = tmp_path / "labelled.csv"
    fleet.write_readings_csv(path)
    monkeypatch.setenv("WATTSUP_FORECAST_WORKERS", "1")
    report = tmp_path / "report.json"
    result = CliRunner().invoke(app, ["evaluate", str(path), "--forecasts", "--json", str(report)])
    assert result.exit_code == 0, result.output
    rows = {r["detector"]: r for r in json.loads(report.read_text())}
    with_forecasts = [name for name in rows if name.startswith("wattsup with forecasts")]
    assert len(with_forecasts) == 1
    covered = int(with_forecasts[0].split("(")[1].split("%")[0])
    assert 70 <= covered <= 100  # every reading after a meter's first day (4 of 5 days)
    assert rows[with_forecasts[0]]["readings"] == len(fleet.readings)
