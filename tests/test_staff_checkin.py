"""The staff screen's manual check-in page (GET/POST /checkin), over real HTTP and a real SQLite store."""

from __future__ import annotations

import json
import re

import test_confirm as confirm_tests
from test_staff_screen import STAFF_ID, fetch, flash, running, token_of

from edge.config import Config
from edge.meals.rules import Senior
from edge.store import Store

cfg = confirm_tests.cfg
store = confirm_tests.store


def test_find_and_check_in(cfg: Config, store: Store) -> None:
    store.add_senior(Senior("S0002", "Li Wei", confirm_tests.DAY.replace(year=1948), "xuhui", status="suspended"))
    with running(cfg) as (_screen, base):
        assert 'href="/checkin"' in fetch(base + "/").body
        page = fetch(base + "/checkin?q=wang").body
        assert "Check in Wang Fang" in page and "Li Wei" not in page
        assert "Nobody matches" in fetch(base + "/checkin?q=zzz").body
        token = token_of(page)
        assert 'name="by"' not in page  # who checks in is the logged-in staff member, not a typed name
        # a typed "by" is ignored: the event and the audit log name the logged-in staff id
        a = fetch(base + "/checkin", {"token": token, "senior": "S0001", "by": "Somebody Else", "q": "wang"})
        assert a.status == 200 and flash(a.body) == "Welcome Wang Fang: lunch, please pay ¥7.00 (¥3.00 subsidy applied)"
        [ev] = store.pending()
        p = json.loads(ev.payload)
        assert (p["check_in"], p["staff_id"], p["senior_id"]) == ("manual", STAFF_ID, "S0001")
        # again: the rules say it was had; a suspended senior: staff are told why, in words
        again = fetch(base + "/checkin", {"token": token, "senior": "S0001"})
        assert flash(again.body).startswith("No meal recorded for Wang Fang: Already checked in for this meal today")
        refused = fetch(base + "/checkin", {"token": token, "senior": "S0002"})
        assert "The meal card is suspended" in flash(refused.body)
        assert len(store.list_events()) == 1
    lines = [(a.staff_id, a.target, a.details.get("outcome")) for a in store.audit_log() if a.action == "checkin"]
    assert lines == [(STAFF_ID, "senior:S0001", "meal"), (STAFF_ID, "senior:S0001", "repeat"),
                     (STAFF_ID, "senior:S0002", "refused")]
    assert store.audit_log()[-3].details["event_id"] == p["event_id"]


def test_refused_without_a_login_or_the_token(cfg: Config, store: Store) -> None:
    with running(cfg) as (_screen, base):
        token = token_of(fetch(base + "/checkin?q=S0001").body)
        assert fetch(base + "/checkin", {"token": "forged", "senior": "S0001"}).status == 403
        assert "No senior with id" in flash(fetch(base + "/checkin", {"token": token, "senior": "S9"}).body)
        assert re.search(r'<input type="hidden" name="senior" value="S0001">', fetch(base + "/checkin?q=s0001").body)
        # nobody logged in (another browser, or after logging out): the form token alone records nothing,
        # and neither the roster search nor today's meals are shown
        anon = fetch(base + "/checkin", {"token": token, "senior": "S0001"}, anon=True)
        assert anon.status == 401 and 'action="/login"' in anon.body
        for page in ("/checkin?q=wang", "/today", "/today.csv"):
            a = fetch(base + page, anon=True)
            assert a.status == 401 and "Wang Fang" not in a.body and 'action="/login"' in a.body
        assert store.list_events() == []
        # logged out: the old cookie is worth nothing
        assert fetch(base + "/logout", {"token": token}).status == 200
        assert fetch(base + "/checkin", {"token": token, "senior": "S0001"}).status == 401
        assert fetch(base + "/today").status == 401
        assert store.list_events() == []


def test_today_counts_the_meals_and_gives_the_cash_list(cfg: Config, store: Store) -> None:
    from datetime import UTC, datetime

    from test_confirm import at, pending

    from edge.meals.checkin import manual_checkin

    store.add_senior(Senior("S0003", "Zhao Lei", confirm_tests.DAY.replace(year=1950), "minhang"))
    manual_checkin(store, cfg, "S0001", STAFF_ID, now=at("11:20"))
    manual_checkin(store, cfg, "S0003", STAFF_ID, now=at("11:30"))  # full price: hukou elsewhere
    first = store.list_events()[0]
    store.mark_delivered(first.event_id, datetime(2026, 11, 30, 3, 21, tzinfo=UTC))
    pending(store, at("11:40"))
    with running(cfg) as (_screen, base):
        assert 'href="/today"' in fetch(base + "/").body
        page = fetch(base + "/today").body
        tally = re.findall(r"<div><b>([^<]+)</b>([^<]+)</div>", page)
        assert tally == [("2", "Meals"), ("1", "Subsidised"), ("¥17.00", "To collect"), ("1", "Waiting for staff")]
        assert "District: 1 waiting to be sent, last delivered 11:21" in page
        rows = re.findall(r"<tr><td>(\d\d:\d\d)</td><td>([^<]+)</td>", page)
        assert rows == [("11:30", "Zhao Lei"), ("11:20", "Wang Fang")]  # newest first
        assert page.count("by hand") == 2
        a = fetch(base + "/today.csv")
        assert a.status == 200 and a.ctype == "text/csv; charset=utf-8"
        lines = a.body.lstrip("\ufeff").splitlines()
        assert lines[0] == ("time,senior_id,name,meal,price,subsidy,payable,check_in,event_id,delivered,"
                            "voided,void_reason,void_note,void_staff_id,void_event_id")
        assert lines[1].startswith("2026-11-30T11:20:00+08:00,S0001,Wang Fang,lunch,10.00,3.00,7.00,manual,")
        assert lines[1].endswith(",yes,,,,,") and lines[2].endswith(",no,,,,,")  # delivered; not voided
        assert lines[3] == "total,,,2 meals,,3.00,17.00,,,,,,,,"




def test_today_shows_what_the_daemon_counted(cfg: Config, store: Store) -> None:
    """The daemon's side (`meal-edge run`'s callback with a KioskStateWriter, fed by the real pipeline) and
    the staff screen's today page, through the file beside the store."""
    from test_confirm import at, light_pipeline

    from edge.cli.main import run_feedback
    from edge.recognition.decide import Verdict
    from edge.store.kioskstate import KioskStateWriter, read_state, state_path

    with running(cfg) as (_screen, base):
        assert "Kiosk state not known (is meal-edge running?)" in fetch(base + "/today").body
        writer = KioskStateWriter(state_path(cfg.store_path))
        pipe = light_pipeline(cfg, store, on_decision=run_feedback(None, None, writer))
        for track in (1, 2):
            pipe.finalise(track, Verdict("unknown", None, 0.7, 0.0, 5, ("too_far",)), at("11:45"), 1.0)
        store.add_senior(Senior("S0002", "Li Wei", confirm_tests.DAY.replace(year=1948), "xuhui", status="suspended"))
        pipe.finalise(3, Verdict("accept", "S0002", 0.2, 0.2, 5), at("11:46"), 2.0)
        writer.camera(False, at("11:47"))
        state = read_state(state_path(cfg.store_path))
        assert state is not None and state.counts == {"unknown": 2, "refused": 1} and not state.camera_ok
        page = fetch(base + "/today").body
        line = "Kiosk: 2 not recognised, 1 sent to staff; camera NOT delivering pictures: check it (as of 11:47)"
        assert line in page and "district link" not in page  # no MQTT in this config: nothing said about it
        writer.camera(True, at("11:48"), district_connected=False)
        page = fetch(base + "/today").body
        assert "camera working (as of 11:48) The district link is DOWN: meals are kept here" in page
