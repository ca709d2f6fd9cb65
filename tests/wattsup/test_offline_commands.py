"""`wattsup detect` and `wattsup evaluate` on files a user would bring."""

from __future__ import annotations

import json
from datetime import timedelta

import pandas as pd
from typer.testing import CliRunner

from simulation.fleet import FleetConfig, simulate_fleet
from wattsup.cli import app


def test_evaluate_keeps_labels_aligned_with_blank_lines_and_bad_rows(tmp_path):
    fleet = simulate_fleet(FleetConfig(meters=20, days=6, interval=timedelta(hours=1), seed=21, anomaly_rate=0.3))
    clean = tmp_path / "clean.csv"
    fleet.write_readings_csv(clean)
    lines = clean.read_text().splitlines()
    # a blank line and an unparseable row early in the file shift every later line by two
    lines[3:3] = ["", "not-a-time,M000001,1.0,1,F0001,3600,,,,household"]
    path = tmp_path / "labelled.csv"
    path.write_text("\n".join(lines) + "\n")
    scores = tmp_path / "scores.csv"
    result = CliRunner().invoke(app, ["detect", str(path), "--scores", str(scores), "--fit-on-input"])
    assert result.exit_code == 0, result.output
    assert "row 5 skipped: unparseable timestamp" in result.output
    assert len(pd.read_csv(scores)) == len(fleet.readings)

    reports = {}
    for name, file in (("clean", clean), ("shifted", path)):
        result = CliRunner().invoke(app, ["evaluate", str(file), "--json", str(tmp_path / f"{name}.json")])
        assert result.exit_code == 0, result.output
        reports[name] = json.loads((tmp_path / f"{name}.json").read_text())
    assert "baseline: rolling z-score" in result.output
    # the same readings with the same labels: every figure is the clean file's
    assert reports["shifted"] == reports["clean"]
    assert reports["clean"][0]["events"] > 10 and reports["clean"][0]["point_recall"] > 0


def test_detect_on_a_file_too_short_to_fit_on_says_so_and_exits_2(tmp_path):
    path = tmp_path / "tiny.csv"
    path.write_text("timestamp,meter_id,kwh\n2026-03-02T01:00:00Z,M1,0.4\n2026-03-02T02:00:00Z,M1,0.5\n")
    result = CliRunner().invoke(app, ["detect", str(path), "--scores", str(tmp_path / "s.csv"), "--fit-on-input"])
    assert result.exit_code == 2
    assert "too short to fit one on" in result.output and "Traceback" not in result.output


def test_evaluate_with_forecasts_reports_a_row_scored_with_replayed_forecasts(tmp_path, monkeypatch):
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
