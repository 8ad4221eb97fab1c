"""No names in the journal (issue 12, item 5): what the daemon logs at INFO and prints to stdout (which
systemd puts in the journal) and what the staff screen logs name seniors by id only. The real Pipeline, the
real `meal-edge run` callback and the real staff screen, over a real store."""

from __future__ import annotations

import logging

import pytest
import test_confirm as confirm_tests
from test_confirm import at, light_pipeline, pending
from test_staff_screen import PIN, STAFF_ID, fetch, press, running, token_of

from edge.cli.main import run_feedback
from edge.config import Config
from edge.recognition.decide import Verdict
from edge.store import Store

cfg = confirm_tests.cfg
store = confirm_tests.store
NAME = "Wang Fang"  # test_confirm's senior S0001


def test_the_daemon_names_seniors_by_id_only(
    cfg: Config, store: Store, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    pipe = light_pipeline(cfg, store, on_decision=run_feedback(None))
    with caplog.at_level(logging.INFO):
        meal = pipe.finalise(1, Verdict("accept", "S0001", 0.2, 0.2, 5), at("11:45"), 1.0)
        again = pipe.finalise(2, Verdict("accept", "S0001", 0.2, 0.2, 5), at("11:46"), 2.0)
        ask = pipe.finalise(3, Verdict("confirm", "S0001", 0.41, 0.03, 5, ("ambiguous_margin",)), at("11:47"), 3.0)
    assert (meal.kind, again.kind, ask.kind) == ("meal", "repeat", "confirm")
    assert NAME in meal.message  # the senior is greeted by name at the kiosk: the test can fail
    out = capsys.readouterr().out
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "S0001" in out and "S0001" in logged
    assert NAME not in out and NAME not in logged


def test_the_staff_screen_logs_ids_only(cfg: Config, store: Store, caplog: pytest.LogCaptureFixture) -> None:
    with running(cfg) as (_screen, base), caplog.at_level(logging.INFO):
        cid = pending(store, at("11:45"))
        assert NAME in fetch(base + "/").body  # staff see the name on the screen
        _, body = press(base, cid, "yes")
        assert "please pay" in body
        other = pending(store, at("11:46"), reasons=("liveness_not_confirmed",))
        press(base, other, "yes", "000001")  # a wrong PIN on the card
        press(base, other, "yes", PIN)
        token = token_of(fetch(base + "/").body)
        fetch(base + "/logout", {"token": token})
    logged = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.INFO)
    assert STAFF_ID in logged and f"confirmation {cid} (senior S0001)" in logged
    assert NAME not in logged and PIN not in logged
