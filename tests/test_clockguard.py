"""The clock guard on its own (edge/security/clockguard.py); the pipeline and replay tests are in
tests/test_clock_pipeline.py."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from edge.meals.feedback import message
from edge.security.clockguard import ClockGuard, ClockState

SH = ZoneInfo("Asia/Shanghai")
NEWEST = datetime(2026, 11, 30, 11, 45, tzinfo=SH)
SKEW = timedelta(days=30)


def test_empty_store_accepts_any_clock() -> None:
    g = ClockGuard(None, SKEW)
    assert g.check(datetime(2001, 1, 1, tzinfo=SH)).ok


def test_behind_refused_at_every_decision_until_right_again(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edge.security.clockguard")
    changes: list[ClockState] = []
    g = ClockGuard(NEWEST, SKEW, on_change=changes.append)
    month_back = NEWEST - timedelta(days=30)
    for i in range(5):
        s = g.check(month_back + timedelta(seconds=i))
        assert s.state == "behind" and not s.ok
    assert g.check(NEWEST - timedelta(microseconds=1)).state == "behind"
    assert g.check(NEWEST).ok  # the same instant is not earlier
    assert g.check(NEWEST + timedelta(minutes=1)).ok
    # once per change, not once per face
    assert [c.state for c in changes] == ["behind", "ok"]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "earlier than the newest meal event" in errors[0].getMessage()
    assert "timedatectl" in errors[0].getMessage()
    # the same instant in another offset is the same time
    assert g.check(datetime(2026, 11, 30, 3, 45, tzinfo=ZoneInfo("UTC"))).ok


def test_recorded_moves_the_reference() -> None:
    g = ClockGuard(None, SKEW)
    t = NEWEST + timedelta(hours=2)
    assert g.check(t).ok
    g.recorded(t)
    assert g.check(t - timedelta(seconds=1)).state == "behind"
    g.recorded(NEWEST)  # an older (staff-confirmed) decision does not move it back
    assert g.newest == t


def test_ahead_at_start_only() -> None:
    g = ClockGuard(NEWEST, SKEW)
    year_on = NEWEST + timedelta(days=365)
    assert g.check(year_on).state == "ahead"
    assert g.check(year_on + timedelta(minutes=1)).state == "ahead"  # until the clock is plausible
    assert g.check(NEWEST + timedelta(days=1)).ok
    # a plausible start was seen: a long quiet spell later in the same run is no longer "ahead"
    assert g.check(NEWEST + timedelta(days=40)).ok
    # within the skew at start: fine; skew off: never ahead
    assert ClockGuard(NEWEST, SKEW).check(NEWEST + timedelta(days=29)).ok
    assert ClockGuard(NEWEST, None).check(year_on).ok
    assert ClockGuard(NEWEST, timedelta(0)).check(year_on).ok


def test_messages_and_naive_times() -> None:
    assert message("clock", lang="zh") == "时钟错误，请找工作人员"
    assert "staff" in message("clock", lang="en")
    with pytest.raises(ValueError, match="naive"):
        ClockGuard(NEWEST, SKEW).check(datetime(2026, 11, 30, 12, 0))
    with pytest.raises(ValueError, match="naive"):
        ClockGuard(datetime(2026, 11, 30), SKEW)
    s = ClockGuard(NEWEST, SKEW).check(NEWEST + timedelta(days=400))
    assert "max_start_skew_days" in s.explain(SKEW)
