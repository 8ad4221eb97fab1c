"""The confirm loop in a real browser (Debian chromium + chromedriver through selenium): the real kiosk display
and staff screen servers on one SQLite store, the pipeline's decision handed over by `meal-edge run`'s own
callback, and the daemon's wait for staff (edge.meals.awaiting + edge.app.answered), as `run` wires them.

Skipped when chromium, chromedriver or selenium are missing (apt-get install chromium chromium-driver)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import test_confirm as confirm_tests
from conftest import MosquittoBroker, free_port
from test_confirm import at, light_pipeline
from test_staff_screen import PIN, STAFF_ID, add_staff, running

from edge.app import answered
from edge.cli.main import main as edge_main
from edge.cli.main import run_feedback
from edge.config import Config, DisplayConfig, load_config
from edge.meals.awaiting import ConfirmWait
from edge.recognition.decide import Verdict
from edge.screens.display import Display
from edge.store import Store

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium drives the browser (pip install selenium)")

pytestmark = pytest.mark.slow
cfg = confirm_tests.cfg
store = confirm_tests.store



def shoot(d: Any, name: str, fallback: Path) -> None:
    """The page at both panel sizes (the viewport exactly w x h), into $MEAL_EDGE_SCREENSHOTS (to refresh
    docs/screenshots) or the test's own folder; the window is left at 800x480."""
    folder = Path(os.environ["MEAL_EDGE_SCREENSHOTS"]) if os.environ.get("MEAL_EDGE_SCREENSHOTS") else fallback
    for w, h in ((1280, 800), (800, 480)):
        iw, ih = d.execute_script("return [window.innerWidth, window.innerHeight]")
        size = d.get_window_size()
        d.set_window_size(size["width"] + w - iw, size["height"] + h - ih)
        time.sleep(0.3)
        d.save_screenshot(str(folder / f"{name}-{w}x{h}.png"))


def browser(w: int, h: int) -> Any:
    exe, drv = shutil.which("chromium"), shutil.which("chromedriver")
    if exe is None or drv is None:
        pytest.skip("chromium and chromedriver are needed (apt-get install chromium chromium-driver)")
    from selenium.webdriver.chrome.service import Service

    o = webdriver.ChromeOptions()
    o.binary_location = exe
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--window-size={w},{h}"):
        o.add_argument(a)
    d = webdriver.Chrome(service=Service(drv), options=o)
    iw, ih = d.execute_script("return [window.innerWidth, window.innerHeight]")
    d.set_window_size(2 * w - iw, 2 * h - ih)  # the page's viewport is exactly w x h
    return d


def log_in(driver: Any, base: str) -> None:
    """What staff do at the screen: the login page first (nothing else is shown before), their id and PIN."""
    from selenium.webdriver.common.by import By

    driver.get(base + "/")
    driver.find_element(By.NAME, "staff_id").send_keys(STAFF_ID)
    driver.find_element(By.NAME, "pin").send_keys(PIN)
    driver.find_element(By.CSS_SELECTOR, "form.login button").click()
    until(lambda: bool(driver.find_elements(By.CSS_SELECTOR, "form.who")), "the staff member is logged in")


def until(check: Callable[[], bool], what: str, timeout: float = 10.0, tick: Callable[[], None] = lambda: None) -> None:
    t0 = time.monotonic()

    def ok() -> bool:
        try:
            return check()
        except Exception as e:  # the page is being replaced (a form's redirect): look again
            stale = type(e).__name__ in ("StaleElementReferenceException", "NoSuchElementException")
            # chromedriver reports a node of the page being replaced as a generic error
            if not stale and "does not belong to the document" not in str(e):
                raise
            return False

    while not ok():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"not within {timeout} s: {what}")
        tick()
        time.sleep(0.1)


@pytest.fixture
def zh(cfg: Config) -> Config:
    return cfg.model_copy(update={
        "centre": cfg.centre.model_copy(update={"language": "zh"}),
        "display": DisplayConfig(listen=f"127.0.0.1:{free_port()}", speak=False, confirm_wait_seconds=60),
    })


@pytest.fixture
def kiosk(zh: Config) -> Iterator[Display]:
    d = Display.from_config(zh)
    assert d.start()
    yield d
    d.stop()


def test_staff_confirm_comes_back_to_the_kiosk(zh: Config, store: Store, kiosk: Display) -> None:
    from selenium.webdriver.common.by import By

    waiter = ConfirmWait(store, zh.display.confirm_wait_seconds, every=0.1)
    show = run_feedback(kiosk, waiter)
    pipe = light_pipeline(zh, store, on_decision=show)
    senior_screen, staff = browser(1280, 800), browser(800, 480)
    try:
        assert kiosk.url
        senior_screen.get(kiosk.url)
        # two attempts by the same senior: one card, one wait
        for track in (1, 2):
            d = pipe.finalise(track, Verdict("confirm", "S0001", 0.45, 0.02, 5, ("ambiguous_margin",)), at("11:45"),
                               1.0)
        assert waiter.waiting == [d.confirmation_id]
        body = lambda: senior_screen.execute_script("return [document.body.className, document.body.innerText]")  # noqa: E731
        until(lambda: body()[0] == "confirm", "the kiosk says please wait")
        assert "请稍候" in body()[1] and "Wang Fang" in body()[1]  # no liveness doubt: the candidate's name

        with running(zh) as (_screen, base):
            log_in(staff, base)
            cards = staff.find_elements(By.CSS_SELECTOR, "li.card")
            assert len(cards) == 1 and "new" in cards[0].get_attribute("class")
            assert staff.execute_script("return window.mealEdgeBeeps") == 1  # the sound of a new card
            yes = staff.find_element(By.CSS_SELECTOR, "button.yes")
            no = staff.find_element(By.CSS_SELECTOR, "button.no")
            for b in (yes, no):  # both buttons on an 800x480 panel without scrolling
                r = staff.execute_script("return arguments[0].getBoundingClientRect()", b)
                assert r["bottom"] <= 480 and r["right"] <= 800, r
            assert staff.execute_script("return document.documentElement.scrollHeight") <= 480
            yes.click()
            until(lambda: "请付 ¥7.00" in staff.find_element(By.TAG_NAME, "body").text, "staff see the meal")

        # the daemon's loop: it reads the answer from the store and tells the senior
        def tick() -> None:
            for o in waiter.poll():
                show(answered(zh, store, o, at("11:46")))

        until(lambda: body()[0] == "meal", "the kiosk shows the meal", tick=tick)
        assert "请付 ¥7.00" in body()[1] and "Wang Fang" in body()[1]
        assert kiosk.latest()["speech"] == "Wang Fang，午餐签到成功，请付七元。"
        assert len(store.list_events()) == 1 and waiter.waiting == []
    finally:
        senior_screen.quit()
        staff.quit()


def test_not_this_person_comes_back_as_see_staff(zh: Config, store: Store, kiosk: Display) -> None:
    from selenium.webdriver.common.by import By

    waiter = ConfirmWait(store, 60, every=0.1)
    show = run_feedback(kiosk, waiter)
    pipe = light_pipeline(zh, store, on_decision=show)
    pipe.finalise(1, Verdict("confirm", "S0001", 0.41, 0.03, 5, ("liveness_not_confirmed", "planar_motion")),
                   at("11:45"), 1.0)
    assert kiosk.latest()["name"] is None  # maybe a photo of her held up: her name is not shown
    senior_screen, staff = browser(800, 480), browser(800, 480)
    try:
        assert kiosk.url
        senior_screen.get(kiosk.url)
        with running(zh) as (_screen, base):
            log_in(staff, base)
            no = staff.find_element(By.CSS_SELECTOR, "button.no")
            assert staff.execute_script("return arguments[0].getBoundingClientRect().bottom", no) <= 480
            no.click()
            until(lambda: "没有为" in staff.find_element(By.TAG_NAME, "body").text or
                  "已取消" in staff.find_element(By.TAG_NAME, "body").text, "staff see it cancelled")

        def tick() -> None:
            for o in waiter.poll():
                show(answered(zh, store, o, at("11:46")))

        text = lambda: senior_screen.execute_script("return document.body.innerText")  # noqa: E731
        until(lambda: "未能确认，请找工作人员签到" in text(), "the kiosk sends the person to staff", tick=tick)
        assert store.list_events() == []
    finally:
        senior_screen.quit()
        staff.quit()


def test_unknown_then_manual_check_in_then_the_event_is_published(
    mosquitto_broker: MosquittoBroker, tmp_path: Path
) -> None:
    """The kiosk does not know the face; staff find 王芳 by her pinyin initials on the staff screen and check
    her in (logged in); the daemon's publisher sends the event (check_in manual, staff_id the logged-in staff id) to
    the broker."""
    from selenium.webdriver.common.by import By
    from test_publish import EVENTS, Collector, make_config

    from edge.delivery.publish import Publisher
    from edge.meals.rules import Senior

    base_cfg, _path = make_config(mosquitto_broker, tmp_path)
    zh_cfg = base_cfg.model_copy(update={
        "centre": base_cfg.centre.model_copy(update={"language": "zh"}),
        "display": DisplayConfig(listen=f"127.0.0.1:{free_port()}", speak=False),
    })
    store = Store(zh_cfg.store_path)
    for sid, name in (("S0001", "王芳"), ("S0002", "汪峰"), ("S0003", "李明")):
        store.add_senior(Senior(sid, name, date(1950, 2, 28), zh_cfg.centre.district))
    kiosk = Display.from_config(zh_cfg)
    assert kiosk.start() and kiosk.url
    collector = Collector(mosquitto_broker, f"{zh_cfg.mqtt.topic_prefix}/#", client_id="district-day")
    publisher = Publisher(store, zh_cfg.mqtt, zh_cfg.centre, poll_interval=0.2)
    publisher.start()
    senior_screen, staff = browser(800, 480), browser(800, 480)
    try:
        pipe = light_pipeline(zh_cfg, store, on_decision=run_feedback(kiosk))
        pipe.finalise(1, Verdict("unknown", None, 0.7, 0.0, 5, ("too_far",)), at("11:45"), 1.0)
        senior_screen.get(kiosk.url)
        until(lambda: "未能识别，请找工作人员签到" in senior_screen.find_element(By.TAG_NAME, "body").text,
              "the kiosk sends the senior to staff")

        with running(zh_cfg) as (_screen, base):
            log_in(staff, base)
            staff.find_element(By.CSS_SELECTOR, "a.open-checkin").click()
            box = staff.find_element(By.NAME, "q")
            box.send_keys("wf")
            staff.find_element(By.CSS_SELECTOR, "button.search").click()
            names = lambda: [p.find_element(By.CSS_SELECTOR, ".pname").text  # noqa: E731
                             for p in staff.find_elements(By.CSS_SELECTOR, "li.person")]
            until(lambda: names() == ["汪峰", "王芳"], "both seniors found by their initials")
            people = staff.find_elements(By.CSS_SELECTOR, "li.person")
            assert not staff.find_elements(By.ID, "staff")  # no name to type: the login says who it is
            button = people[1].find_element(By.CSS_SELECTOR, "button.yes")
            assert staff.execute_script("return arguments[0].getBoundingClientRect().bottom", button) <= 480
            shoot(staff, "staff-checkin-find", tmp_path)
            button.click()
            until(lambda: "请付 ¥7.00" in staff.find_element(By.CSS_SELECTOR, "div.flash").text, "staff see the meal")
            shoot(staff, "staff-checkin-done", tmp_path)
            # the same senior again: nothing recorded, and the page says why
            staff.find_elements(By.CSS_SELECTOR, "li.person")[1].find_element(By.CSS_SELECTOR, "button.yes").click()
            flash = lambda: staff.find_element(By.CSS_SELECTOR, "div.flash").text  # noqa: E731
            until(lambda: "没有为 王芳 记录用餐：这一餐今天已经签到过了" in flash(), "staff see the repeat")
            shoot(staff, "staff-checkin-repeat", tmp_path)

        until(lambda: len(collector.events()) == 1, "the event at the district's subscriber")
        [event] = collector.events()
        EVENTS.validate(event)
        assert (event["senior_id"], event["check_in"], event["staff_id"], event["subsidy_fen"]) == (
            "S0001", "manual", STAFF_ID, 300)
    finally:
        senior_screen.quit()
        staff.quit()
        publisher.stop(timeout=2)
        collector.close()
        kiosk.stop()
        store.close()


def test_meal_edge_run_shows_staffs_answer(tmp_path: Path) -> None:
    """The real daemon (`meal-edge run`, the Hamilton clip as its camera, a policy that accepts nobody without
    staff) and the real staff screen (`meal-edge staff-screen`), two processes on one store: the kiosk says
    "please wait"; staff confirm on the staff page; the daemon reads the answer from the store and the kiosk
    shows the meal and the amount."""
    import os
    import subprocess
    import sys
    from dataclasses import replace

    from selenium.webdriver.common.by import By
    from test_pipeline_real import CLIP, SFACE_TOLERANCE, enrol_hamilton, need_shared, write_config

    from edge.lab.calibrate import render_toml
    from edge.recognition.decide import tolerance_policy
    from edge.recognition.embed.mirror import reference_model_id

    need_shared()
    kiosk_screen, staff = browser(1280, 800), browser(800, 480)  # skips without chromium before the slow part
    cfg = write_config(tmp_path, source=str(CLIP))
    enrol_hamilton(cfg)
    add_staff(load_config(cfg).store_path)
    assert edge_main(["--config", str(cfg), "keys", "init"]) == 0  # `run` refuses to start without its key
    # the configured model's id (SFace, not mirrored, by default) and its reference tolerance as the confirm band
    rec = load_config(cfg).recognition
    sface = rec.model == "sface"
    mid = reference_model_id(rec.mirror, rec.model)
    policy = tolerance_policy(mid, SFACE_TOLERANCE) if sface else tolerance_policy(mid)
    always_staff = replace(policy, accept_distance=0.0, source="test: staff confirm every match")
    (tmp_path / "staff.toml").write_text(render_toml(always_staff, {"format": 1, "model_id": mid}, []))
    display_port, staff_port = free_port(), free_port()
    text = cfg.read_text().replace('calibration = ""', 'calibration = "staff.toml"')
    text = text.replace('listen = "127.0.0.1:8081"', f'listen = "127.0.0.1:{display_port}"')
    text = text.replace("speak = true", "speak = false")
    start = text.index("[[rules.meals]]")  # one window, always open: the test runs at any time of day
    cfg.write_text(text[:start] + '[[rules.meals]]\nname = "lunch"\nstart = "00:00"\nend = "23:59"\nprice_fen = 1000\n')
    env = dict(os.environ)
    procs = [
        subprocess.Popen([sys.executable, "-m", "edge", "--config", str(cfg), "run"], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True),
        subprocess.Popen([sys.executable, "-m", "edge", "--config", str(cfg), "staff-screen", "--listen",
                          f"127.0.0.1:{staff_port}"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         text=True),
    ]
    try:
        def page(d: Any) -> tuple[str, str]:
            return tuple(d.execute_script("return [document.body.className, document.body.innerText]"))  # type: ignore[return-value]

        def opened(d: Any, url: str) -> bool:
            try:
                d.get(url)
                return True
            except Exception:
                return False

        def up() -> bool:
            if procs[0].poll() is not None:  # say why, not "not within 90 s"
                raise AssertionError(f"meal-edge run ended: {procs[0].stderr.read() if procs[0].stderr else ''}")
            return opened(kiosk_screen, f"http://127.0.0.1:{display_port}/")

        until(up, "the kiosk screen is up", 90)
        until(lambda: page(kiosk_screen)[0] == "confirm", "the kiosk asks the senior to wait", 90)
        assert "请稍候" in page(kiosk_screen)[1]
        until(lambda: opened(staff, f"http://127.0.0.1:{staff_port}/"), "the staff screen is up", 60)
        log_in(staff, f"http://127.0.0.1:{staff_port}")
        until(lambda: opened(staff, f"http://127.0.0.1:{staff_port}/") and bool(
            staff.find_elements(By.CSS_SELECTOR, "button.yes")), "a card on the staff screen", 60)
        staff.find_element(By.CSS_SELECTOR, "button.yes").click()
        until(lambda: "请付 ¥7.00" in staff.find_element(By.TAG_NAME, "body").text, "staff see the meal")
        until(lambda: page(kiosk_screen)[0] == "meal", "the kiosk shows staff's answer", 10)
        assert "请付 ¥7.00" in page(kiosk_screen)[1] and "Lin-Manuel" in page(kiosk_screen)[1]
    finally:
        kiosk_screen.quit()
        staff.quit()
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
