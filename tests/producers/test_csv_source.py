"""CSV validation: every bad row is named with its line and reason; good rows all survive."""

from __future__ import annotations

import io

import pytest

from producers.csv_source import CsvFormatError, parse_readings_csv

LONG = """timestamp,meter_id,kwh
2026-01-01T00:00:00Z,M1,0.5
2026-01-01T00:15:00Z,M1,abc
not-a-date,M1,0.4
2026-01-01T00:45:00Z,,0.3
2026-01-01T01:00:00Z,M1,-2
2026-01-01T01:15:00Z,M2,0.7
2026-01-01 01:30,M1,0.8
2026-01-01T01:45:00Z,M1,inf
"""


def test_long_format_rejects_each_bad_row_with_reason_and_line():
    parsed = parse_readings_csv(io.StringIO(LONG))
    assert parsed.shape == "long"
    reasons = {r.row_number: r.reason for r in parsed.rejected}
    assert reasons == {
        3: "non-numeric kwh 'abc'",
        4: "unparseable timestamp 'not-a-date'",
        5: "missing meter_id",
        6: "negative kwh -2",
        9: "kwh is not finite: 'inf'",
    }
    assert [r.raw_text for r in parsed.rejected][0] == "2026-01-01T00:15:00Z,M1,abc"
    good = parsed.readings
    assert good["row_number"].tolist() == [2, 7, 8]
    assert good["kwh"].tolist() == [0.5, 0.7, 0.8]
    assert good["meter_id"].tolist() == ["M1", "M2", "M1"]
    assert str(good["timestamp"].dtype) == "datetime64[ms, UTC]"
    assert good["timestamp"].iloc[2].isoformat() == "2026-01-01T01:30:00+00:00"  # naive taken as UTC
    assert good["feeder_id"].tolist() == ["M1", "M2", "M1"]  # no feeder: the meter is its own
    assert parsed.total_rows == 8


def test_single_meter_shape_and_interval_inference():
    text = "timestamp,consumption\n" + "".join(f"2026-01-01T{h:02d}:00:00Z,{h / 10}\n" for h in range(6))
    parsed = parse_readings_csv(io.StringIO(text), meter_id="house-7")
    assert parsed.shape == "single-meter"
    assert set(parsed.readings["meter_id"]) == {"house-7"}
    assert parsed.readings["interval_seconds"].eq(3600).all()
    assert parsed.rejected == []


def test_single_meter_id_defaults_to_file_stem(tmp_path):
    path = tmp_path / "meter-42.csv"
    path.write_text("timestamp,consumption\n2026-01-01T00:00:00Z,1\n2026-01-01T00:05:00Z,2\n")
    parsed = parse_readings_csv(path)
    assert parsed.readings["meter_id"].tolist() == ["meter-42", "meter-42"]
    assert parsed.readings["interval_seconds"].eq(300).all()


def test_interval_is_the_typical_spacing_despite_gaps():
    rows = ["timestamp,meter_id,kwh"] + [f"2026-01-01T00:{m:02d}:00Z,M1,1" for m in (0, 15, 30, 45)]
    rows += ["2026-01-01T03:00:00Z,M1,1"]
    parsed = parse_readings_csv(io.StringIO("\n".join(rows) + "\n"))
    assert parsed.readings["interval_seconds"].eq(900).all()


def test_feeder_and_interval_columns_are_used():
    text = "timestamp,meter_id,kwh,feeder_id,interval_seconds\n2026-01-01T00:00:00Z,M1,1,F9,1800\n"
    parsed = parse_readings_csv(io.StringIO(text))
    assert parsed.readings[["feeder_id", "interval_seconds"]].iloc[0].tolist() == ["F9", 1800]


@pytest.mark.parametrize("text, message", [
    ("time,value\n1,2\n", "unrecognised columns"),
    ("", "empty"),
    ("timestamp,consumption\n2026-01-01,1\n", "needs a meter id"),
])
def test_unusable_files_get_a_clear_error(text, message):
    with pytest.raises(CsvFormatError, match=message):
        parse_readings_csv(io.StringIO(text))
