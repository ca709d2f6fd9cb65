"""The shared identifier and timestamp limits."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from schemas.limits import (
    EARLIEST_TIMESTAMP_MS,
    FUTURE_TOLERANCE_MS,
    MAX_ID_LENGTH,
    identifier_problem,
    identifiers_usable,
    timestamp_problem,
)

NOW = int(datetime(2026, 11, 28, 12, tzinfo=timezone.utc).timestamp() * 1000)


@pytest.mark.parametrize("good", ["M1", "feeder 7/north", "Zähler-42", "x" * MAX_ID_LENGTH,
                                  '"><img src=x onerror=alert(1)>'])
def test_ordinary_ids_pass(good):
    assert identifier_problem(good) is None


@pytest.mark.parametrize("bad,words", [
    ("", "empty"), ("   ", "empty"), ("x" * (MAX_ID_LENGTH + 1), "limit"), ("M7\r=cmd", "U+000D"),
    ("M\n1", "U+000A"), ("M\x001", "U+0000"), ("M\x7f", "U+007F"), ("M\x85", "U+0085"), ("M\u2028", "U+2028"),
    ("M\t1", "U+0009"),
])
def test_bad_ids_are_named(bad, words):
    problem = identifier_problem(bad)
    assert problem is not None and words in problem


def test_timestamp_window():
    assert timestamp_problem(NOW, NOW) is None
    assert timestamp_problem(NOW + FUTURE_TOLERANCE_MS, NOW) is None
    assert "ahead" in timestamp_problem(NOW + FUTURE_TOLERANCE_MS + 1, NOW)
    assert timestamp_problem(EARLIEST_TIMESTAMP_MS, NOW) is None
    assert "before 2000-01-01" in timestamp_problem(EARLIEST_TIMESTAMP_MS - 1, NOW)
    assert "before" in timestamp_problem(1, NOW)  # an epoch number taken as milliseconds


@pytest.mark.parametrize("ids", [[], ["M1", "M2"], ["x" * MAX_ID_LENGTH], ["M1", ""], ["M1", "   "],
                                 ["M1", "x" * (MAX_ID_LENGTH + 1)], ["M1", "M\r2"], ["M\u2028"], ["Zähler-42", "F 7"]])
def test_the_vectorised_id_check_agrees_with_the_one_by_one_check(ids):
    assert identifiers_usable(ids) == all(identifier_problem(i) is None for i in ids)
