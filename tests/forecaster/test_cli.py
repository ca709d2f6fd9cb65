"""The ``wattsup forecast`` commands that need no broker."""

from __future__ import annotations

import re

from typer.testing import CliRunner

from wattsup.cli import app


def test_evaluate_prints_both_methods_on_the_same_points():
    result = CliRunner().invoke(app, ["forecast", "evaluate", "--simulate-meters", "4", "--simulate-days", "12",
                                      "--history", "10d", "--horizon", "24h", "--workers", "1"])
    assert result.exit_code == 0, result.output
    rows = re.findall(r"(prophet \(WattsUp forecaster\)|seasonal naive)\s*│\s*(\d+)\s*│\s*(\d+)\s*│\s*([\d.]+)\s*│\s*([\d.]+)",
                      result.output)
    assert [r[0] for r in rows] == ["prophet (WattsUp forecaster)", "seasonal naive"], result.output
    assert rows[0][1:3] == rows[1][1:3]  # same meters, same held-out points
    assert rows[0][1] == "4" and 80 <= int(rows[0][2]) <= 4 * 24  # a day of each (a few readings missing)
    assert all(0 < float(r[3]) < 2 and float(r[4]) > 0 for r in rows)


def test_bad_durations_are_refused_with_a_clear_message():
    result = CliRunner().invoke(app, ["forecast", "run", "--history", "four weeks"])
    assert result.exit_code != 0
    assert "is not an interval like" in " ".join(result.output.replace("│", " ").split())
