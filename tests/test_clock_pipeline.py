"""The clock guard in the real pipeline and in `meal-edge replay` (issue 12, item 4): a meal dated before the
newest one in the store is never recorded, the kiosk says why, the log says it once."""

from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from test_refresh import _setup, _visit

from edge.cli.main import main as edge_main
from edge.meals.feedback import Decision

pytestmark = pytest.mark.slow


def kinds(out: list[Any]) -> list[str]:
    return [d.kind for d in out if isinstance(d, Decision)]


def test_pipeline_refuses_a_clock_behind_the_newest_event(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg, parts = _setup(tmp_path, refresh=None)
    store = parts.store
    tz = cfg.centre.tz
    assert kinds(_visit(tmp_path, cfg, parts, "lunch", datetime(2026, 11, 30, 11, 45, tzinfo=tz))) == ["meal"]
    assert store.last_seq(cfg.centre.kiosk_id) == 1

    # the replay that paid a month back (issue 12): a clock a month before the newest event
    with caplog.at_level(logging.INFO):
        out = _visit(tmp_path, cfg, parts, "month-back", datetime(2026, 10, 30, 11, 45, tzinfo=tz))
    [d] = [d for d in out if isinstance(d, Decision)]
    assert (d.kind, d.reasons, d.message) == ("clock", ("clock_behind",), "时钟错误，请找工作人员")
    assert d.event_id is None and d.meal is None and d.subsidy_fen == 0
    assert store.last_seq(cfg.centre.kiosk_id) == 1 and len(store.list_events()) == 1  # nothing recorded
    assert store.pending_confirmations() == []
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "earlier than the newest meal event" in errors[0]

    # a clock at or after the newest event decides as usual (the same lunch: a repeat, not a clock error)
    assert kinds(_visit(tmp_path, cfg, parts, "same-day", datetime(2026, 11, 30, 12, 0, tzinfo=tz))) == ["repeat"]
    assert kinds(_visit(tmp_path, cfg, parts, "dinner", datetime(2026, 11, 30, 17, 0, tzinfo=tz))) == ["meal"]


def test_pipeline_refuses_a_clock_far_ahead_at_start(tmp_path: Path) -> None:
    cfg, parts = _setup(tmp_path, refresh=None)
    tz = cfg.centre.tz
    assert kinds(_visit(tmp_path, cfg, parts, "lunch", datetime(2026, 11, 30, 11, 45, tzinfo=tz))) == ["meal"]
    out = _visit(tmp_path, cfg, parts, "year-on", datetime(2027, 11, 30, 11, 45, tzinfo=tz))  # > 60 days
    [d] = [d for d in out if isinstance(d, Decision)]
    assert (d.kind, d.reasons) == ("clock", ("clock_ahead",))
    assert parts.store.last_seq(cfg.centre.kiosk_id) == 1


def test_replay_before_the_newest_event_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edge.cli.demo import Visit, make_scene

    cfg, parts = _setup(tmp_path, refresh=None)
    tz = cfg.centre.tz
    assert kinds(_visit(tmp_path, cfg, parts, "lunch", datetime(2026, 11, 30, 11, 45, tzinfo=tz))) == ["meal"]
    parts.store.close()
    scene = tmp_path / "scene"
    make_scene(scene, [Visit("hopper", 15)], seed=3)
    config = str(tmp_path / "meal-edge.toml")
    capsys.readouterr()

    rc = edge_main(["--config", config, "replay", str(scene), "--now", "2026-10-30T11:45:00+08:00", "--json"])
    out, err = capsys.readouterr()
    assert rc == 1 and out == ""
    assert "replay refused" in err and "2026-11-30T11:45" in err and "Give --now after" in err

    rc = edge_main(["--config", config, "replay", str(scene), "--now", "2026-12-01T11:45:00+08:00", "--json"])
    out, _ = capsys.readouterr()
    assert rc == 0
    assert [json.loads(line)["kind"] for line in out.splitlines()] == ["meal"]
