"""A void in a real browser (Debian chromium + chromedriver through selenium), as tests/test_browser_day.py runs
the other staff flows: the real staff screen server on the kiosk's SQLite store, the kiosk's own publisher and a
real Mosquitto. A manager voids today's meal on /today; the void event reaches the broker naming the meal and the
manager; a staff member who is not a manager sees no 作废 and a direct POST is refused.

Screenshots of the confirm step and of /today with the voided meal, at 1280x800 and 800x480, are written to the
test's folder; MEAL_EDGE_SCREENSHOTS=DIR copies them there (docs/screenshots/). Skipped when chromium,
chromedriver or selenium are missing (apt-get install chromium chromium-driver)."""

from __future__ import annotations

import os
import shutil
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from conftest import MosquittoBroker, free_port
from test_browser_day import browser, until
from test_confirm import at
from test_staff_screen import PIN, STAFF_ID, add_staff, fetch, running
from test_void import MANAGER, MANAGER_PIN, add_manager

from edge.config import DisplayConfig
from edge.meals.checkin import manual_checkin
from edge.meals.rules import Senior
from edge.store import Store

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium drives the browser (pip install selenium)")

pytestmark = pytest.mark.slow


def log_in_as(driver: Any, base: str, staff_id: str, pin: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(base + "/")
    driver.find_element(By.NAME, "staff_id").send_keys(staff_id)
    driver.find_element(By.NAME, "pin").send_keys(pin)
    driver.find_element(By.CSS_SELECTOR, "form.login button").click()
    until(lambda: bool(driver.find_elements(By.CSS_SELECTOR, "form.who")), f"{staff_id} is logged in")


def fits(driver: Any, element: Any, w: int, h: int) -> None:
    """On screen without scrolling."""
    r = driver.execute_script("return arguments[0].getBoundingClientRect()", element)
    assert r["top"] >= 0 and r["left"] >= 0 and r["bottom"] <= h and r["right"] <= w, r


def test_a_manager_voids_on_today_and_the_void_reaches_the_broker(
    mosquitto_broker: MosquittoBroker, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from test_publish import EVENTS, Collector, make_config

    from edge.delivery.publish import Publisher

    base_cfg, _path = make_config(mosquitto_broker, tmp_path)
    cfg = base_cfg.model_copy(update={
        "centre": base_cfg.centre.model_copy(update={"language": "zh"}),
        "display": DisplayConfig(listen=f"127.0.0.1:{free_port()}", speak=False),
    })
    store = Store(cfg.store_path)
    for sid, name in (("S0001", "王芳"), ("S0002", "汪峰"), ("S0003", "李明")):
        store.add_senior(Senior(sid, name, date(1950, 2, 28), cfg.centre.district))
    add_manager(store)
    add_staff(cfg.store_path)  # w01, role staff
    meals = [manual_checkin(store, cfg, sid, STAFF_ID, now=at(t)) for sid, t in
             (("S0002", "11:05"), ("S0001", "11:20"), ("S0003", "11:31"))]
    wang = meals[1]
    assert all(m.kind == "meal" for m in meals) and wang.event_id
    collector = Collector(mosquitto_broker, f"{cfg.mqtt.topic_prefix}/#", client_id="district-void")
    publisher = Publisher(store, cfg.mqtt, cfg.centre, poll_interval=0.2)
    publisher.start()
    shots = tmp_path / "screenshots"
    shots.mkdir()
    big, small, staff = browser(1280, 800), browser(800, 480), browser(800, 480)
    try:
        with running(cfg, logged_in=False) as (screen, base):
            for d in (big, small):
                log_in_as(d, base, MANAGER, MANAGER_PIN)
                d.get(base + "/today")
                links = d.find_elements(By.CSS_SELECTOR, "a.void")
                assert [a.text for a in links] == ["作废"] * 3
            # the manager on the 800x480 panel: 作废 on 王芳's row, the confirm step
            w, h = 800, 480
            row = next(r for r in small.find_elements(By.CSS_SELECTOR, "table.today tr") if "王芳" in r.text)
            link = row.find_element(By.CSS_SELECTOR, "a.void")
            fits(small, link, w, h)
            link.click()
            until(lambda: "作废这条用餐记录？" in small.find_element(By.TAG_NAME, "h1").text, "the confirm step")
            text = small.find_element(By.TAG_NAME, "body").text
            assert "王芳" in text and "11:20 午餐，实收 ¥7.00（补贴 ¥3.00）" in text
            labels = small.find_elements(By.CSS_SELECTOR, "label.reason")
            assert [lb.text for lb in labels] == ["认错人", "重复打卡", "未用餐", "其他"]
            go = small.find_element(By.CSS_SELECTOR, "button.voidgo")
            for el in (*labels, go, small.find_element(By.CSS_SELECTOR, "a.cancel")):
                fits(small, el, w, h)  # everything of the step on the panel without scrolling
            assert small.execute_script("return document.documentElement.scrollHeight") <= h
            labels[0].click()
            small.save_screenshot(str(shots / "staff-void-confirm-800x480.png"))
            big.get(f"{base}/void/{wang.event_id}")
            big.find_elements(By.CSS_SELECTOR, "label.reason")[0].click()
            big.save_screenshot(str(shots / "staff-void-confirm-1280x800.png"))
            go.click()
            until(lambda: "已作废：王芳 11:20 午餐（认错人）" in small.find_element(By.CSS_SELECTOR, "div.flash").text,
                  "the manager sees the meal voided")
            voided = small.find_element(By.CSS_SELECTOR, "tr.voided")
            assert "王芳" in voided.text and "已作废：认错人（m01）" in voided.text
            cell = voided.find_elements(By.TAG_NAME, "td")[1]
            assert small.execute_script("return getComputedStyle(arguments[0]).textDecorationLine", cell) == \
                "line-through"
            tally = [t.text.split("\n") for t in small.find_elements(By.CSS_SELECTOR, ".tally div")]
            assert tally[:3] == [["2", "用餐"], ["2", "享受补贴"], ["¥14.00", "应收"]] and tally[-1] == ["1", "已作废"]
            assert len(small.find_elements(By.CSS_SELECTOR, "a.void")) == 2
            small.save_screenshot(str(shots / "staff-today-voided-800x480.png"))
            big.get(base + "/today")
            big.save_screenshot(str(shots / "staff-today-voided-1280x800.png"))

            # a staff member who is not a manager: no 作废, the confirm step refused, a direct POST refused
            log_in_as(staff, base, STAFF_ID, PIN)
            staff.get(base + "/today")
            assert "王芳" in staff.find_element(By.TAG_NAME, "body").text
            assert staff.find_elements(By.CSS_SELECTOR, "a.void") == []
            target = meals[2].event_id
            staff.get(f"{base}/void/{target}")
            assert "只有管理员可以作废用餐记录" in staff.find_element(By.TAG_NAME, "body").text
            assert staff.find_elements(By.CSS_SELECTOR, "button.voidgo") == []
            cookie = staff.get_cookie("meal_edge_staff")
            token = screen.token  # the form token of the pages this browser was given
            a = fetch(f"{base}/void/{target}", {"token": token, "reason": "wrong_person"},
                      cookie=f"meal_edge_staff={cookie['value']}")
            assert a.status == 403 and "只有管理员可以作废用餐记录" in a.body

        until(lambda: any(e["kind"] == "void" for e in collector.events()), "the void at the district's subscriber")
        [void] = [e for e in collector.events() if e["kind"] == "void"]
        EVENTS.validate(void)
        assert (void["voids"], void["staff_id"], void["void_reason"], void["senior_id"], void["subsidy_fen"]) == (
            wang.event_id, MANAGER, "wrong_person", "S0001", 300)
        assert [e["seq"] for e in collector.events()] == [1, 2, 3, 4]
        assert len([e for e in store.list_events() if e.kind == "void"]) == 1  # the staff member's POST: nothing
        refused = [a for a in store.audit_log() if a.action == "void" and a.details["outcome"] == "refused"]
        assert [(a.staff_id, a.details["why"]) for a in refused] == [(STAFF_ID, "not_manager")]
    finally:
        for d in (big, small, staff):
            d.quit()
        publisher.stop(timeout=2)
        collector.close()
        store.close()
        if out := os.environ.get("MEAL_EDGE_SCREENSHOTS"):
            for f in shots.glob("*.png"):
                shutil.copy(f, Path(out) / f.name)
