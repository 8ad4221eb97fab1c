"""Voids (issue 14 item 3): the pure rules, and `void_meal` on a real SQLite store: a void is a new event, signed,
sequenced and chained after the meal, in the outbox like any meal; refused twice, for another day, for a void,
for a non-manager; audited; and the senior may check in again."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

import pytest
import test_confirm as confirm_tests
from test_confirm import DAY, at
from test_staff_screen import FAST, STAFF_ID, add_staff

from edge.config import Config
from edge.delivery.events import build_payload
from edge.meals.checkin import manual_checkin
from edge.meals.rules import (
    ALREADY_SERVED,
    DAILY_LIMIT,
    SUBSIDISED,
    PriorMeal,
    Senior,
    VoidTarget,
    decide_meal,
    void_refusal,
)
from edge.meals.void import void_meal
from edge.security.signing import verify_chain
from edge.security.staffauth import StaffAuth
from edge.store import Store, VoidRefused

cfg = confirm_tests.cfg
store = confirm_tests.store

MANAGER, MANAGER_PIN = "m01", "731905"


def add_manager(s: Store, staff_id: str = MANAGER) -> None:
    if s.get_staff(staff_id) is None:
        StaffAuth(s, hasher=FAST).add(staff_id, "Zhang Min", "manager", MANAGER_PIN)


# -- the pure rules --------------------------------------------------------------------------------------


def test_a_voided_meal_is_neither_a_repeat_nor_the_days_subsidy(cfg: Config) -> None:
    senior = Senior("S0001", "Wang Fang", date(1950, 2, 28), "xuhui")
    r, d, tz = cfg.rules, cfg.centre.district, cfg.centre.tz
    had = [PriorMeal("lunch", 300)]
    assert decide_meal(senior, at("11:50"), had, r, d, tz).reasons == (ALREADY_SERVED,)
    voided = [PriorMeal("lunch", 300, voided=True)]
    again = decide_meal(senior, at("11:50"), voided, r, d, tz)
    assert (again.kind, again.subsidy_fen, again.reasons) == ("meal", 300, (SUBSIDISED,))
    # the subsidised lunch voided: dinner gets the day's subsidy; a standing one keeps it used
    dinner = decide_meal(senior, at("17:10"), voided, r, d, tz)
    assert (dinner.kind, dinner.subsidy_fen) == ("meal", 300)
    assert decide_meal(senior, at("17:10"), had, r, d, tz).reasons == (DAILY_LIMIT,)


def test_every_reason_has_its_words() -> None:
    from edge.delivery.events import VOID_REASONS
    from edge.meals.void import REASON_WORDS

    assert tuple(REASON_WORDS) == VOID_REASONS and all(set(w) == {"zh", "en"} for w in REASON_WORDS.values())


def test_void_refusal() -> None:
    assert void_refusal(VoidTarget("meal", DAY, False), DAY) is None
    assert void_refusal(None, DAY) == "not_found"
    assert void_refusal(VoidTarget("void", DAY, False), DAY) == "is_void"
    assert void_refusal(VoidTarget("meal", DAY, True), DAY) == "already_voided"
    assert void_refusal(VoidTarget("meal", DAY - timedelta(days=1), False), DAY) == "not_today"


def test_a_void_payload_needs_its_reason_and_a_meal_none() -> None:
    from conftest import meal_event

    meal = meal_event()
    void = replace(meal, event_id="0f0e0d0c-0b0a-4900-8800-000000000001", kind="void", voids=meal.event_id,
                   void_reason="wrong_person", check_in="manual", staff_id="m01")
    p = build_payload(void, 2)
    assert (p["kind"], p["voids"], p["void_reason"], "void_note" in p) == ("void", meal.event_id, "wrong_person", False)
    confirm_tests.EVENTS_SCHEMA.validate({**p, "sig": "A" * 86 + "=="})
    for bad, match in (({"void_reason": "oops"}, "void_reason"), ({"voids": None}, "names the event_id"),
                       ({"void_reason": "other"}, "needs a void_note"), ({"void_note": "x" * 201}, "void_note"),
                       ({"voids": void.event_id}, "itself")):
        with pytest.raises(ValueError, match=match):
            build_payload(replace(void, **bad), 2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="void only"):
        build_payload(replace(meal, void_reason="wrong_person"), 1)
    other = build_payload(replace(void, void_reason="other", void_note="家属代领"), 2)
    confirm_tests.EVENTS_SCHEMA.validate({**other, "sig": "A" * 86 + "=="})
    assert other["void_note"] == "家属代领"


# -- on the store ------------------------------------------------------------------------------------------


def test_a_void_is_a_signed_chained_event_in_the_outbox(cfg: Config, store: Store) -> None:
    add_manager(store)
    meal = manual_checkin(store, cfg, "S0001", MANAGER, now=at("11:20"))
    assert meal.ok and meal.event_id
    r = void_meal(store, cfg, meal.event_id, "wrong_person", None, MANAGER, now=at("11:40"))
    assert r.ok and r.kind == "voided" and r.seq == meal.seq + 1, r.message  # type: ignore[operator]
    events = [json.loads(e.payload) for e in store.pending()]
    assert [e["seq"] for e in events] == [1, 2]  # both waiting in the outbox, in seq order
    void = events[1]
    assert (void["kind"], void["voids"], void["void_reason"], void["staff_id"], void["check_in"]) == (
        "void", meal.event_id, "wrong_person", MANAGER, "manual")
    # it repeats the meal: senior, window, date and money (the district reverses exactly that)
    for k in ("senior_id", "meal", "local_date", "price_fen", "subsidy_fen", "payable_fen", "reasons"):
        assert void[k] == events[0][k], k
    assert void["decided_at"].startswith("2026-11-30T11:40:00")
    confirm_tests.EVENTS_SCHEMA.validate(void)
    assert verify_chain(events, store.signer.key().public_key()) == 2
    rows = {e.event_id: e for e in store.list_events()}
    assert rows[meal.event_id].voided_by == r.event_id and rows[r.event_id].voids == meal.event_id
    [line] = [a for a in store.audit_log() if a.action == "void"]
    assert (line.staff_id, line.target, line.details["outcome"], line.details["void_event_id"]) == (
        MANAGER, f"event:{meal.event_id}", "voided", r.event_id)
    assert "Wang Fang" not in json.dumps(line.details)


def test_voided_once_not_a_void_not_another_day_and_the_senior_may_come_again(cfg: Config, store: Store) -> None:
    add_manager(store)
    yesterday = manual_checkin(store, cfg, "S0001", MANAGER, now=at("11:20", DAY - timedelta(days=1)))
    meal = manual_checkin(store, cfg, "S0001", MANAGER, now=at("11:20"))
    assert yesterday.event_id and meal.event_id
    first = void_meal(store, cfg, meal.event_id, "double_serving", None, MANAGER, now=at("11:30"))
    assert first.ok and first.event_id
    seq = store.last_seq("kiosk-1")
    for eid, kind in ((meal.event_id, "already_voided"), (first.event_id, "is_void"),
                      (yesterday.event_id, "not_today"), ("6f1c2f4e-8d0b-4a4e-9d4b-0f7f3f0a9a51", "not_found"),
                      ("../../etc", "not_found")):
        r = void_meal(store, cfg, eid, "wrong_person", None, MANAGER, now=at("11:31"))
        assert (r.ok, r.kind) == (False, kind), r.message
    assert store.last_seq("kiosk-1") == seq  # nothing recorded, no seq used
    # the senior comes back for lunch: a new meal, with the subsidy (the voided one does not count)
    again = manual_checkin(store, cfg, "S0001", MANAGER, now=at("11:45"))
    assert (again.kind, again.subsidy_fen) == ("meal", 300), again.message
    refused = [a.details["why"] for a in store.audit_log() if a.action == "void" and a.details["outcome"] == "refused"]
    assert refused == ["already_voided", "is_void", "not_today", "not_found", "not_found"]


def test_the_kiosk_serves_a_voided_senior_again(cfg: Config, store: Store) -> None:
    """The real pipeline: Wang Fang's lunch at the kiosk, voided (wrong person: someone else was recorded as
    her), then she comes to the kiosk herself: a meal with the subsidy, not "already checked in"."""
    from test_confirm import light_pipeline

    from edge.recognition.decide import Verdict

    add_manager(store)
    pipe = light_pipeline(cfg, store)
    first = pipe.finalise(1, Verdict("accept", "S0001", 0.3, 0.2, 5), at("11:45"), 1.0)
    assert first.kind == "meal" and first.event_id
    repeat = pipe.finalise(2, Verdict("accept", "S0001", 0.3, 0.2, 5), at("11:45"), 2.0)
    assert repeat.kind == "repeat"
    assert void_meal(store, cfg, first.event_id, "wrong_person", None, MANAGER, now=at("11:46")).ok
    again = pipe.finalise(3, Verdict("accept", "S0001", 0.3, 0.2, 5), at("11:45"), 3.0)
    assert (again.kind, again.subsidy_fen) == ("meal", 300)
    assert [e.kind for e in store.list_events()] == ["meal", "void", "meal"]


def test_the_store_refuses_a_second_void_inside_its_transaction(cfg: Config, store: Store) -> None:
    """Two managers at once: both pass the service's check, the store lets one void through."""
    add_manager(store)
    meal = manual_checkin(store, cfg, "S0001", MANAGER, now=at("11:20"))
    assert meal.event_id
    r = void_meal(store, cfg, meal.event_id, "wrong_person", None, MANAGER, now=at("11:30"))
    [row] = [e for e in store.list_events() if e.event_id == r.event_id]
    from conftest import meal_event

    twin = meal_event(kind="void", voids=meal.event_id, void_reason="wrong_person", check_in="manual",
                      staff_id=MANAGER, decided_at=at("11:31"), reasons=row.reasons)
    with pytest.raises(VoidRefused) as e:
        store.record_meal(twin, confirm_tests.TOPIC)
    assert e.value.kind == "already_voided" and store.last_seq("kiosk-1") == 2


def test_only_a_manager_voids_and_other_needs_a_note(cfg: Config, store: Store) -> None:
    add_staff(cfg.store_path)  # role staff
    add_manager(store)
    meal = manual_checkin(store, cfg, "S0001", STAFF_ID, now=at("11:20"))
    assert meal.event_id
    r = void_meal(store, cfg, meal.event_id, "wrong_person", None, STAFF_ID, now=at("11:30"))
    assert (r.ok, r.kind) == (False, "not_manager") and "only a manager" in r.message
    assert (void_meal(store, cfg, meal.event_id, "other", "  ", MANAGER, now=at("11:30")).kind) == "need_note"
    assert void_meal(store, cfg, meal.event_id, "mistake", None, MANAGER, now=at("11:30")).kind == "bad_reason"
    assert store.last_seq("kiosk-1") == 1
    ok = void_meal(store, cfg, meal.event_id, "other", " 家属\n代领 ", MANAGER, now=at("11:30"))
    assert ok.ok
    assert json.loads(store.pending()[-1].payload)["void_note"] == "家属 代领"
    lines = [(a.staff_id, a.details["outcome"], a.details.get("why")) for a in store.audit_log() if a.action == "void"]
    assert lines == [(STAFF_ID, "refused", "not_manager"), (MANAGER, "refused", "need_note"),
                     (MANAGER, "refused", "bad_reason"), (MANAGER, "voided", None)]


# -- the command line ----------------------------------------------------------------------------------------


def test_the_command_voids_with_a_managers_pin(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from test_confirm import _pin_file, _staff, write_config

    from edge.cli.main import main as edge_main
    from edge.config import load_config
    from enroll.cli import main as enroll_main

    path = write_config(tmp_path, all_day=True)
    c = load_config(path)
    with Store(c.store_path) as s:
        s.add_senior(Senior("S0001", "王芳", date(1950, 2, 28), "xuhui"))
        _staff(s)  # w01, role staff
    # a manager account, the way a centre makes one
    assert enroll_main(["--config", str(path), "staff", "add", "m01", "--name", "张敏", "--role", "manager",
                        "--pin-file", _pin_file(tmp_path, MANAGER_PIN)]) == 0
    capsys.readouterr()
    assert edge_main(["--config", str(path), "checkin", "S0001", "--by", "w01", "--pin-file",
                      _pin_file(tmp_path, "482913")]) == 0
    with Store(c.store_path) as s:
        [meal] = s.list_events()
    capsys.readouterr()
    base = ["--config", str(path), "void", meal.event_id]
    pin = ["--pin-file", _pin_file(tmp_path, MANAGER_PIN)]
    # a wrong PIN, or a staff member who is not a manager: nothing recorded
    assert edge_main([*base, "--reason", "wrong_person", "--by", "m01", "--pin-file",
                      _pin_file(tmp_path, "000000")]) == 1
    assert "nothing changed" in capsys.readouterr().err
    assert edge_main([*base, "--reason", "wrong_person", "--by", "w01", "--pin-file",
                      _pin_file(tmp_path, "482913")]) == 1
    assert "only a manager may void" in capsys.readouterr().err
    assert edge_main([*base, "--reason", "other", "--by", "m01", *pin]) == 1
    assert "needs a note" in capsys.readouterr().err
    assert edge_main([*base, "--reason", "other", "--note", "家属代领", "--by", "m01", *pin]) == 0
    out = capsys.readouterr().out
    assert f"meal {meal.event_id} (S0001, lunch" in out and "voided by m01 (other); void event" in out
    assert edge_main([*base, "--reason", "wrong_person", "--by", "m01", *pin]) == 1
    assert "already voided" in capsys.readouterr().err
    for bad in ([], ["--reason", "mistake", "--by", "m01"], ["--reason", "other"], ["--reason", "other", "--by", "m01",
                                                                                      "--pin", MANAGER_PIN]):
        with pytest.raises(SystemExit) as e:
            edge_main([*base, *bad])
        assert e.value.code == 2
    capsys.readouterr()
    assert edge_main(["--config", str(path), "events", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["kind"], r.get("voids"), r.get("voided_by") is not None) for r in rows] == [
        ("meal", None, True), ("void", meal.event_id, False)]
    assert rows[1]["void_note"] == "家属代领"
    with Store(c.store_path) as s:
        got = [(a.staff_id, a.action, a.details.get("outcome"), a.details.get("why")) for a in s.audit_log()
               if a.action in ("void", "login_failed")]
    assert got == [("m01", "login_failed", None, None), ("w01", "void", "refused", "not_manager"),
                   ("m01", "void", "refused", "need_note"), ("m01", "void", "voided", None),
                   ("m01", "void", "refused", "already_voided")]
