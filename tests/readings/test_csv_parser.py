"""CSV validation: every bad row is named with its line and reason; good rows all survive."""

from __future__ import annotations

import io
import time

import numpy as np
import pandas as pd
import pytest

from readings.csv_parser import (
    CsvFormatError,
    infer_interval_seconds,
    parse_readings_csv,
)

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
        9: "kwh is not finite: 'inf'",
    }
    assert parsed.rejected[0].raw_text == "2026-01-01T00:15:00Z,M1,abc"
    good = parsed.readings
    assert good["row_number"].tolist() == [2, 6, 7, 8]  # the valid rows around the bad ones are kept
    assert good["kwh"].tolist() == [0.5, -2.0, 0.7, 0.8]  # a net meter exporting solar reads below zero
    assert good["meter_id"].tolist() == ["M1", "M1", "M2", "M1"]
    assert str(good["timestamp"].dtype) == "datetime64[ms, UTC]"
    assert good["timestamp"].iloc[3].isoformat() == "2026-01-01T01:30:00+00:00"  # naive taken as UTC
    assert good["feeder_id"].tolist() == ["M1", "M1", "M2", "M1"]  # no feeder: the meter is its own
    assert parsed.total_rows == 8


def test_missing_values_and_bad_intervals_are_named():
    text = ("timestamp,meter_id,kwh,interval_seconds\n"
            ",M1,1,900\n"
            "2026-01-01T00:15:00Z,M1,,900\n"
            "2026-01-01T00:30:00Z,M1,1,fifteen\n"
            "2026-01-01T00:45:00Z,M1,1,-900\n"
            "2026-01-01T01:00:00Z,M1,1,\n"
            "5,M1,1,900\n")
    parsed = parse_readings_csv(io.StringIO(text))
    assert [(r.row_number, r.reason) for r in parsed.rejected] == [
        (2, "missing timestamp"),
        (3, "missing kwh"),
        (4, "interval_seconds is not a positive whole number of seconds: 'fifteen'"),
        (5, "interval_seconds is not a positive whole number of seconds: '-900'"),
        (7, "unparseable timestamp '5'"),  # a bare number is not guessed at as a date
    ]
    assert parsed.readings["row_number"].tolist() == [6]
    assert parsed.readings["interval_seconds"].tolist() == [900]  # empty: inferred


def test_wrong_field_counts_and_blank_lines_keep_exact_line_numbers():
    text = ("timestamp,meter_id,kwh\n"
            "2026-01-01T00:00:00Z,M1,1\n"
            "\n"
            "2026-01-01T00:15:00Z,M1,2,3\n"
            "   \n"
            "2026-01-01T00:30:00Z,M1\n"
            "2026-01-01T00:45:00Z,M1,x\n"
            "2026-01-01T01:00:00Z,M1,4\n")
    parsed = parse_readings_csv(io.StringIO(text))
    assert [(r.row_number, r.raw_text, r.reason) for r in parsed.rejected] == [
        (4, "2026-01-01T00:15:00Z,M1,2,3", "expected 3 fields (timestamp,meter_id,kwh), found 4"),
        (6, "2026-01-01T00:30:00Z,M1", "expected 3 fields (timestamp,meter_id,kwh), found 2"),
        (7, "2026-01-01T00:45:00Z,M1,x", "non-numeric kwh 'x'"),
    ]
    assert parsed.readings["row_number"].tolist() == [2, 8]
    assert parsed.readings["kwh"].tolist() == [1.0, 4.0]


def test_quoted_fields_keep_the_row_text_as_in_the_file():
    text = ('timestamp,meter_id,kwh\n'
            '2026-01-01T00:00:00Z,M1,"1,5"\n'
            '"2026-01-01T00:15:00Z","M1",2\n'
            '2026-01-01T00:30:00Z,"M\n1",3\n'
            '2026-01-01T00:45:00Z,  M1 ,4,extra\n'
            '2026-01-01T01:00:00Z,M1, 5 \n')
    parsed = parse_readings_csv(io.StringIO(text))
    assert [(r.row_number, r.raw_text, r.reason) for r in parsed.rejected] == [
        (2, '2026-01-01T00:00:00Z,M1,"1,5"', "non-numeric kwh '1,5'"),
        # the quoted newline makes row 4 two lines long (a line break is never part of an id: schemas.limits)
        (4, '2026-01-01T00:30:00Z,"M\n1",3', "meter_id contains a control character"),
        (6, "2026-01-01T00:45:00Z,  M1 ,4,extra", "expected 3 fields (timestamp,meter_id,kwh), found 4"),
    ]
    good = parsed.readings
    assert good["row_number"].tolist() == [3, 7]  # the row after the two-line row 4 is line 6
    assert good["meter_id"].tolist() == ["M1", "M1"]
    assert good["kwh"].tolist() == [2.0, 5.0]  # padding around values is ignored


def test_windows_line_ends_byte_order_mark_and_energy_kwh_header(tmp_path):
    path = tmp_path / "export.csv"
    path.write_bytes("\ufeffTimestamp, Meter_ID ,energy_kwh\r\n2026-01-01T00:00:00+01:00,M1,1.5\r\n".encode())
    parsed = parse_readings_csv(path)
    assert parsed.rejected == []
    assert parsed.readings["kwh"].tolist() == [1.5]
    assert parsed.readings["timestamp"].iloc[0] == pd.Timestamp("2025-12-31T23:00:00Z")


def test_single_meter_shape_and_interval_inference():
    text = "timestamp,consumption\n" + "".join(f"2026-01-01T{h:02d}:00:00Z,{h / 10}\n" for h in range(6))
    parsed = parse_readings_csv(io.StringIO(text), meter_id="house-7")
    assert parsed.shape == "single-meter"
    assert set(parsed.readings["meter_id"]) == {"house-7"}
    assert parsed.readings["interval_seconds"].eq(3600).all()
    assert parsed.readings["kwh"].tolist() == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
    assert parsed.rejected == []


def test_single_meter_bad_rows_use_the_consumption_column_name():
    text = "timestamp,consumption\n2026-01-01T00:00:00Z,1\n2026-01-01T00:30:00Z,-1\n2026-01-01T01:00:00Z,n/a\n"
    parsed = parse_readings_csv(io.StringIO(text), meter_id="m")
    assert [(r.row_number, r.reason) for r in parsed.rejected] == [(4, "non-numeric consumption 'n/a'")]
    assert parsed.readings["kwh"].tolist() == [1.0, -1.0]


def test_single_meter_id_defaults_to_file_stem(tmp_path):
    path = tmp_path / "meter-42.csv"
    path.write_text("timestamp,consumption\n2026-01-01T00:00:00Z,1\n2026-01-01T00:05:00Z,2\n")
    parsed = parse_readings_csv(path)
    assert parsed.readings["meter_id"].tolist() == ["meter-42", "meter-42"]
    assert parsed.readings["interval_seconds"].eq(300).all()


def test_interval_is_the_typical_spacing_despite_gaps():
    rows = ["timestamp,meter_id,kwh"] + [f"2026-01-01T00:{m:02d}:00Z,M1,1" for m in (0, 15, 30, 45)]
    rows += ["2026-01-01T03:00:00Z,M1,1", "2026-01-01T03:00:00Z,M2,1"]
    parsed = parse_readings_csv(io.StringIO("\n".join(rows) + "\n"))
    assert parsed.readings["interval_seconds"].tolist() == [900, 900, 900, 900, 900, 900]  # M2: one reading, default


def test_interval_inference_is_per_meter_and_survives_many_gaps():
    ts = pd.Series(pd.to_datetime(["2026-01-01T00:00Z", "2026-01-01T00:05Z", "2026-01-01T00:10Z",
                                   "2026-01-01T00:00Z", "2026-01-01T01:00Z", "2026-01-01T01:30Z",
                                   "2026-01-01T02:00Z", "2026-01-01T03:00Z", "2026-01-01T03:30Z"]))
    meters = pd.Series(["a", "a", "a", "b", "b", "b", "b", "b", "b"])
    # b: 30-minute data with gaps: spacings 60, 30, 30, 60, 30 -> 30 min (a median would also say 30 here,
    # but drops to 60 once most readings are missing).
    assert infer_interval_seconds(ts, meters).tolist() == [300] * 3 + [1800] * 6


def test_feeder_interval_and_flag_columns_are_used():
    text = ("timestamp,meter_id,kwh,feeder_id,interval_seconds,quality_flags\n"
            "2026-01-01T00:00:00Z,M1,1,F9,1800,LATE\n"
            "2026-01-01T00:30:00Z,M2,1,,1800,\n")
    parsed = parse_readings_csv(io.StringIO(text), feeder_id="F1")
    r = parsed.readings
    assert r["feeder_id"].tolist() == ["F9", "F1"]  # given, else the caller's default
    assert r["interval_seconds"].tolist() == [1800, 1800]
    assert r["quality_flags"].tolist() == ["LATE", ""]


@pytest.mark.parametrize("text, message", [
    ("time,value\n1,2\n", "unrecognised columns"),
    ("", "empty"),
    ("timestamp,consumption\n2026-01-01,1\n", "needs a meter id"),
])
def test_unusable_files_get_a_clear_error(text, message):
    with pytest.raises(CsvFormatError, match=message):
        parse_readings_csv(io.StringIO(text))


def test_header_only_file_has_no_rows():
    parsed = parse_readings_csv(io.StringIO("timestamp,meter_id,kwh\n"))
    assert len(parsed.readings) == 0 and parsed.rejected == []
    assert list(parsed.readings.columns) == ["timestamp", "meter_id", "kwh", "row_number", "feeder_id",
                                             "interval_seconds"]


@pytest.mark.timing
def test_a_million_rows_parse_in_seconds(tmp_path):
    n = 1_000_000
    ts = pd.date_range("2026-01-01", periods=n // 1000, freq="15min", tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ")
    frame = pd.DataFrame({
        "timestamp": np.repeat(ts.to_numpy(), 1000),
        "meter_id": np.tile([f"M{i:06d}" for i in range(1000)], n // 1000),
        "kwh": np.round(np.random.default_rng(0).random(n), 4),
    })
    frame.loc[123_456, "kwh"] = np.inf
    path = tmp_path / "big.csv"
    frame.to_csv(path, index=False)
    started = time.perf_counter()
    parsed = parse_readings_csv(path)
    elapsed = time.perf_counter() - started
    assert len(parsed.readings) == n - 1
    assert [(r.row_number, r.reason) for r in parsed.rejected] == [(123_456 + 2, "kwh is not finite: 'inf'")]
    assert parsed.readings["interval_seconds"].eq(900).all()
    assert elapsed < 10.0, f"took {elapsed:.1f} s"


# -- limits (issue 13): a hostile file is refused fast, and no field becomes a huge id ----------------
def _timed_parse(text: str):
    import tracemalloc

    tracemalloc.start()
    started = time.perf_counter()
    try:
        try:
            result = parse_readings_csv(io.StringIO(text))
        except CsvFormatError as exc:
            result = exc
    finally:
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return result, elapsed, peak


@pytest.mark.timing
def test_a_header_of_200000_columns_is_refused_fast_and_small():
    header = ",".join(f"c{i}" for i in range(200_000))  # about 1.5 MB
    assert len(header) > 1_000_000
    result, elapsed, peak = _timed_parse(header + "\n" + "1," * 10 + "\n")
    assert isinstance(result, CsvFormatError) and "columns" in str(result)
    assert elapsed < 0.5 and peak < 20 * 1024 * 1024, (elapsed, peak)


@pytest.mark.parametrize("quoted", [False, True])
def test_a_header_field_over_the_csv_field_limit_is_a_format_error(quoted):
    field = "x" * 131_073
    header = f'"{field}",meter_id,kwh' if quoted else f"timestamp{field},meter_id,kwh"
    result, _, _ = _timed_parse(header + "\n2026-01-01T00:00:00Z,M1,1\n")
    assert isinstance(result, CsvFormatError) and "header" in str(result)


@pytest.mark.timing
def test_a_huge_data_line_is_one_rejected_row_not_a_huge_meter_id():
    text = "timestamp,meter_id,kwh\n2026-01-01T00:00:00Z,M1,1\n2026-01-01T00:15:00Z," + "M" * 2_000_000 + ",1\n"
    result, elapsed, _ = _timed_parse(text)
    assert result.readings["meter_id"].tolist() == ["M1"]
    [row] = result.rejected
    assert row.row_number == 3 and "characters" in row.reason and len(row.reason) < 200
    assert elapsed < 2


@pytest.mark.parametrize("meter,feeder,words", [
    ("M" * 129, "F1", "meter_id is 129 characters long"), ("M\x0b1", "F1", "meter_id contains a control character"),
    ("M1", "F" * 200, "feeder_id is 200 characters long"), ("M1", "F\x001", "feeder_id contains a control character"),
])
def test_ids_over_the_shared_limit_or_with_control_characters_are_rejected(meter, feeder, words):
    text = f"timestamp,meter_id,kwh,feeder_id\n2026-01-01T00:00:00Z,{meter},1,{feeder}\n2026-01-01T00:15:00Z,OK,1,F\n"
    parsed = parse_readings_csv(io.StringIO(text))
    assert parsed.readings["meter_id"].tolist() == ["OK"]
    assert words in parsed.rejected[0].reason


def test_reasons_quote_only_the_start_of_a_long_value():
    text = "timestamp,meter_id,kwh\n" + "9" * 50_000 + "x,M1,1\n"
    [row] = parse_readings_csv(io.StringIO(text)).rejected
    assert row.reason.startswith("unparseable timestamp '999") and len(row.reason) < 200


def test_a_single_meter_file_name_is_checked_as_an_id():
    with pytest.raises(CsvFormatError, match="meter id"):
        parse_readings_csv(io.StringIO("timestamp,consumption\n2026-01-01T00:00:00Z,1\n"), meter_id="x" * 300)


# -- fuzzing (issue 13): any text is a parse or a CsvFormatError, fast, with usable ids only -----------------
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from schemas.limits import identifier_problem  # noqa: E402

CSV_EXAMPLES = 300
HEADERS = st.sampled_from(["timestamp,meter_id,kwh", "timestamp,consumption", "timestamp,meter_id,kwh,feeder_id",
                           "timestamp,meter_id,energy_kwh,interval_seconds,quality_flags", "a,b", ""])
FIELDS = st.one_of(
    st.sampled_from(["2026-01-01T00:00:00Z", "2026-01-01 00:15", "M1", "F1", "0.5", "-1", "nan", "inf", "", " ",
                     '"', '""', '"a,b"', "1e308", "900", "\r", "\t", "=cmd"]),
    st.text(max_size=30), st.text(alphabet='",\r\n ;\t\x00\x0b\u2028', max_size=10))
ROWS = st.tuples(st.sampled_from(["2026-01-01T00:00:00Z", "2026-01-01T00:15:00Z", "2026-01-02 03:00"]),
                 st.text(alphabet=st.characters(codec="utf-8", exclude_characters=',"\n\r'), min_size=1, max_size=150),
                 st.sampled_from(["0.5", "1", "0"])).map(",".join)
LINES = st.lists(FIELDS, max_size=7).map(",".join) | ROWS


@settings(max_examples=CSV_EXAMPLES, derandomize=True, deadline=None, database=None,
          phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
@given(header=HEADERS, lines=st.lists(LINES, max_size=40),
       newline=st.sampled_from(["\n", "\r\n", "\r"]), meter=st.text(max_size=150))
def test_generated_files_parse_or_are_refused_cleanly(header, lines, newline, meter):
    import tracemalloc

    text = newline.join([header, *lines])
    tracemalloc.start()
    started = time.perf_counter()
    try:
        parsed = parse_readings_csv(io.StringIO(text), meter_id=meter or None)
    except CsvFormatError:
        return
    finally:
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert elapsed < 2 and peak < 64 * 1024 * 1024, (elapsed, peak)
    ids = set(parsed.readings["meter_id"]) | set(parsed.readings["feeder_id"])
    assert all(identifier_problem(i) is None for i in ids), ids
    assert np.isfinite(parsed.readings["kwh"]).all()  # finite, of either sign (net meters export below zero)
    rows = parsed.readings["row_number"].tolist() + [r.row_number for r in parsed.rejected]
    assert len(rows) == len(set(rows))  # no line is both kept and rejected, or kept twice
