"""The demo's simulated clock: a new fleet starts in the past and never runs ahead of the wall clock;
a restart continues the same fleet from the newest reading, so no stored state is ahead of it."""

from __future__ import annotations

import json

import pytest

from schemas.limits import FUTURE_TOLERANCE_MS
from wattsup.demo import DemoSettings, DemoStateError, demo_services, plan_clock

NOW = 1_795_000_000_000  # 2026-11-18T11:06:40Z
QUARTER = 900_000


def settings(tmp_path, **overrides) -> DemoSettings:
    return DemoSettings(log_dir=tmp_path / "demo", **overrides)


def simulator_argv(s: DemoSettings, clock) -> list[str]:
    return next(service.argv for service in demo_services(s, clock) if service.name == "simulator")


def test_a_new_demo_starts_as_far_back_as_it_will_play_and_stays_behind_the_wall_clock(tmp_path):
    s = settings(tmp_path, DEMO_SECONDS=240)
    clock = plan_clock(s, None, NOW)
    # 240 s at 900x play 60 simulated hours: the fleet starts that far back, on an interval boundary
    assert NOW - clock.start_ms == pytest.approx(240 * 900 * 1000, abs=QUARTER)
    assert clock.start_ms % QUARTER == 0 and clock.resume_from_ms is None
    argv = simulator_argv(s, clock)
    assert "--behind-wall-clock" in argv and argv[argv.index("--start") + 1] == "2026-11-15T23:00:00"  # NOW - 60 h
    assert "--resume-from" not in argv


def test_an_endless_demo_backfills_a_week(tmp_path):
    clock = plan_clock(settings(tmp_path), None, NOW)
    assert NOW - clock.start_ms == pytest.approx(7 * 86_400_000, abs=QUARTER)


def test_a_restart_continues_the_same_fleet_from_the_newest_reading(tmp_path):
    s = settings(tmp_path, DEMO_SECONDS=240)
    first = plan_clock(s, None, NOW)
    newest = first.start_ms + 200 * QUARTER
    later = NOW + 3_600_000
    again = plan_clock(settings(tmp_path, DEMO_SECONDS=60), newest, later)
    assert (again.start_ms, again.resume_from_ms) == (first.start_ms, newest)
    argv = simulator_argv(s, again)
    assert argv[argv.index("--seed") + 1] == "42" and "--resume-from" in argv
    assert json.loads((tmp_path / "demo" / "simulator.json").read_text())["start_ms"] == first.start_ms


def test_another_fleet_size_or_an_emptied_topic_starts_a_new_fleet(tmp_path):
    first = plan_clock(settings(tmp_path), None, NOW)
    other = plan_clock(settings(tmp_path, meters=50), first.start_ms + 10 * QUARTER, NOW)
    assert other.resume_from_ms is None and other.start_ms >= first.start_ms + 10 * QUARTER  # after what is stored
    assert plan_clock(settings(tmp_path), None, NOW).resume_from_ms is None


def test_stored_readings_of_a_clock_that_ran_ahead_cannot_be_continued(tmp_path):
    """The issue's case: an older demo left state days ahead; a new fleet would be late everywhere."""
    with pytest.raises(DemoStateError, match="Start clean"):
        plan_clock(settings(tmp_path), NOW + 3 * 86_400_000, NOW)
    assert plan_clock(settings(tmp_path), NOW + FUTURE_TOLERANCE_MS // 2, NOW).start_ms >= NOW
