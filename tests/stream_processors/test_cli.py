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
