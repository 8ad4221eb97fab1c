"""The staff screen's void (GET/POST /void/<event_id>, the 作废 links on /today), over real HTTP and a real SQLite
store: only a manager sees the links and may void (a staff member's POST gets 403 and is audited); the confirm
step; the struck-out meal, the tally and the CSV without it."""

from __future__ import annotations

import json
import re

import test_confirm as confirm_tests
from test_confirm import at
from test_staff_screen import STAFF_ID, fetch, flash, login, running, token_of
from test_void import MANAGER, MANAGER_PIN, add_manager

from edge.config import Config
from edge.meals.checkin import manual_checkin
from edge.store import Store

cfg = confirm_tests.cfg
store = confirm_tests.store


def test_a_manager_voids_todays_meal_and_the_day_counts_without_it(cfg: Config, store: Store) -> None:
    add_manager(store)
    meal = manual_checkin(store, cfg, "S0001", MANAGER, now=at("11:20"))
    assert meal.event_id
    with running(cfg) as (_screen, base):
        assert login(base, MANAGER, MANAGER_PIN).status == 303
        today = fetch(base + "/today").body
        assert f'<a class="void" href="/void/{meal.event_id}">Void</a>' in today
        step = fetch(f"{base}/void/{meal.event_id}")
        assert step.status == 200
        for shown in ("Void this meal?", "Wang Fang", "lunch at 11:20, paid ¥7.00 (¥3.00 subsidy)",
                      'value="wrong_person"', 'value="double_serving"', 'value="not_eaten"', 'value="other"'):
            assert shown in step.body, shown
        assert store.last_seq("kiosk-1") == 1  # the confirm step changes nothing
        token = token_of(step.body)
        url = f"{base}/void/{meal.event_id}"
        # no reason, or other without a note: back to the confirm step, saying what to do; nothing voided
        a = fetch(url, {"token": token})
        assert a.status == 200 and flash(a.body) == "Choose a reason first, then press Void. Nothing was voided."
        assert "Void this meal?" in a.body
        a = fetch(url, {"token": token, "reason": "other", "note": " "})
        assert flash(a.body) == "With Other, write why in the note. Nothing was voided."
        assert store.last_seq("kiosk-1") == 1
        a = fetch(url, {"token": token, "reason": "wrong_person", "note": ""})
        assert a.status == 200 and flash(a.body).startswith("Voided: Wang Fang, lunch at 11:20 (Wrong person).")
        tally = re.findall(r"<div(?: class=\"voidn\")?><b>([^<]+)</b>([^<]+)</div>", a.body)
        assert tally == [("0", "Meals"), ("0", "Subsidised"), ("¥0.00", "To collect"), ("0", "Waiting for staff"),
                         ("1", "Voided")]
        row = re.search(r'<tr class="voided">(.*?)</tr>', a.body)
        assert row and "Wang Fang" in row.group(1) and "Voided: Wrong person (m01) · waiting" in row.group(1)
        assert 'class="void"' not in a.body  # nothing left to void
        again = fetch(url, {"token": token, "reason": "wrong_person"})
        assert flash(again.body) == "This meal is already voided: it is not voided twice."
        assert fetch(url).status == 409  # the confirm step of a voided meal says so, without a button
        lines = fetch(base + "/today.csv").body.lstrip("\ufeff").splitlines()
        assert lines[0].endswith(",delivered,voided,void_reason,void_note,void_staff_id,void_event_id")
        [void] = [json.loads(e.payload) for e in store.pending() if json.loads(e.payload)["kind"] == "void"]
        assert lines[1].endswith(f",no,yes,wrong_person,,{MANAGER},{void['event_id']}")
        assert lines[2] == "total,,,0 meals,,0.00,0.00,,,,1 voided,,,,"
        # the senior checks in again: a standing meal, counted
        assert manual_checkin(store, cfg, "S0001", MANAGER, now=at("11:45")).kind == "meal"
        tally = re.findall(r"<div><b>([^<]+)</b>([^<]+)</div>", fetch(base + "/today").body)
        assert tally[:3] == [("1", "Meals"), ("1", "Subsidised"), ("¥7.00", "To collect")]
    assert (void["voids"], void["staff_id"], void["void_reason"]) == (meal.event_id, MANAGER, "wrong_person")
    outcomes = [(a.staff_id, a.details["outcome"], a.details.get("why")) for a in store.audit_log()
                if a.action == "void"]
    assert outcomes == [(MANAGER, "refused", "bad_reason"), (MANAGER, "refused", "need_note"),
                        (MANAGER, "voided", None), (MANAGER, "refused", "already_voided")]


def test_a_staff_member_sees_no_void_and_is_refused(cfg: Config, store: Store) -> None:
    meal = manual_checkin(store, cfg, "S0001", "w01", now=at("11:20"))
    assert meal.event_id
    with running(cfg) as (_screen, base):  # logged in as w01, role staff
        today = fetch(base + "/today").body
        assert "Wang Fang" in today and 'href="/void/' not in today
        step = fetch(f"{base}/void/{meal.event_id}")
        assert step.status == 403 and "Only a manager may void a meal" in step.body and 'name="reason"' not in step.body
        token = token_of(fetch(base + "/").body)  # the logout form carries it
        a = fetch(f"{base}/void/{meal.event_id}", {"token": token, "reason": "wrong_person"})
        assert a.status == 403 and "Only a manager may void a meal" in a.body
        # a forged token, or nobody logged in: refused before anything else
        assert fetch(f"{base}/void/{meal.event_id}", {"token": "forged", "reason": "wrong_person"}).status == 403
        anon = fetch(f"{base}/void/{meal.event_id}", {"token": token, "reason": "wrong_person"}, anon=True)
        assert anon.status == 401 and 'action="/login"' in anon.body
        assert fetch(f"{base}/void/{meal.event_id}", anon=True).status == 401
        assert fetch(f"{base}/void/not-an-id").status == 404
    assert [e.kind for e in store.list_events()] == ["meal"]
    [line] = [a for a in store.audit_log() if a.action == "void"]
    assert (line.staff_id, line.target, line.details["why"]) == (STAFF_ID, f"event:{meal.event_id}", "not_manager")


def test_the_screen_says_it_in_chinese(cfg: Config, store: Store) -> None:
    zh = cfg.model_copy(update={"centre": cfg.centre.model_copy(update={"language": "zh"})})
    add_manager(store)
    yesterday = manual_checkin(store, zh, "S0001", MANAGER, now=at("11:20", confirm_tests.DAY.replace(day=29)))
    meal = manual_checkin(store, zh, "S0001", MANAGER, now=at("11:20"))
    assert yesterday.event_id and meal.event_id
    with running(zh) as (_screen, base):
        assert fetch(f"{base}/void/{meal.event_id}").status == 403
        assert "只有管理员可以作废用餐记录" in fetch(f"{base}/void/{meal.event_id}").body
        assert login(base, MANAGER, MANAGER_PIN).status == 303
        step = fetch(f"{base}/void/{meal.event_id}").body
        for shown in ("作废这条用餐记录？", "认错人", "重复打卡", "未用餐", "其他", "确认作废",
                      "11:20 午餐，实收 ¥7.00（补贴 ¥3.00）"):
            assert shown in step, shown
        old = fetch(f"{base}/void/{yesterday.event_id}")
        assert old.status == 409 and "只能作废今天的用餐" in old.body
        a = fetch(f"{base}/void/{meal.event_id}", {"token": token_of(step), "reason": "other", "note": "家属代领"})
        assert flash(a.body).startswith("已作废：Wang Fang 11:20 午餐（其他：家属代领）。如已收款 ¥7.00，请退还。")
        assert "已作废：其他：家属代领（m01）" in a.body
