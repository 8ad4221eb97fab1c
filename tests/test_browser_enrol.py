"""Enrolment on the staff screen in a real browser, with the real daemon: `meal-edge run` with the Hamilton clip as
its camera (nobody enrolled yet), `meal-edge staff-screen` on the same store, headless chromium. Staff log in, open
录入, type a new senior, see the kiosk camera's preview (the daemon shares its frames, edge/recognition/frameshare.py,
while the page asks), press 拍照: the frames are accepted and the senior enrolled. The running daemon then
recognises them (its gallery reloads when the store's enrolment changes,
edge.recognition.enrolled.GalleryHolder): a decision names the new senior. Then an upload of a good photo, a damaged
file and a photo without a face, with the Chinese reason
of each. Screenshots of every state at 1280x800 and 800x480 go to the test's folder, or to docs/screenshots/ as
staff-enrol-*.png with MEAL_EDGE_SCREENSHOTS=docs/screenshots (how the committed ones were made).

Skipped without chromium + chromedriver + selenium, or without the shared clip (../shared)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from conftest import free_port
from test_browser_day import browser, log_in, until
from test_pipeline_real import CLIP, SAMPLES, need_shared, write_config
from test_staff_screen import add_staff

from edge.cli.main import main as edge_main
from edge.config import load_config
from edge.recognition import frameshare
from edge.store import Store

pytest.importorskip("selenium.webdriver", reason="selenium drives the browser (pip install selenium)")
pytestmark = pytest.mark.slow

SIZES = ((1280, 800), (800, 480))
#: where the screenshots go (each test sets it: its own folder unless MEAL_EDGE_SCREENSHOTS names one)
SHOTS = Path(os.environ.get("MEAL_EDGE_SCREENSHOTS", ".")).resolve()


@pytest.fixture(autouse=True)
def _shots(tmp_path: Path) -> None:
    global SHOTS
    SHOTS = Path(os.environ["MEAL_EDGE_SCREENSHOTS"]).resolve() if os.environ.get("MEAL_EDGE_SCREENSHOTS") else tmp_path


def shoot(d: Any, name: str) -> None:
    """The page as it is now, at both panel sizes (the viewport exactly w x h)."""
    for w, h in SIZES:
        iw, ih = d.execute_script("return [window.innerWidth, window.innerHeight]")
        ow, oh = d.get_window_size()["width"], d.get_window_size()["height"]
        d.set_window_size(ow + w - iw, oh + h - ih)
        time.sleep(0.3)
        d.save_screenshot(str(SHOTS / f"staff-enrol-{name}-{w}x{h}.png"))


def test_enrol_from_the_running_kiosk_camera_then_recognised(tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    need_shared()
    staff = browser(1280, 800)  # skips without chromium before the slow part
    cfg_path = write_config(tmp_path, source=str(CLIP))
    cfg = load_config(cfg_path)
    cfg.store_path.parent.mkdir(parents=True, exist_ok=True)
    add_staff(cfg.store_path)
    assert edge_main(["--config", str(cfg_path), "keys", "init"]) == 0
    display_port, staff_port = free_port(), free_port()
    text = cfg_path.read_text().replace('listen = "127.0.0.1:8081"', f'listen = "127.0.0.1:{display_port}"')
    text = text.replace("speak = true", "speak = false")
    start = text.index("[[rules.meals]]")  # one window, always open: the test runs at any time of day
    cfg_path.write_text(text[:start] + '[[rules.meals]]\nname = "lunch"\nstart = "00:00"\nend = "23:59"\n'
                        'price_fen = 1000\n')
    daemon_out = (tmp_path / "run.out").open("w")
    procs = [
        subprocess.Popen([sys.executable, "-m", "edge", "--config", str(cfg_path), "run"], env=dict(os.environ),
                         stdout=daemon_out, stderr=subprocess.STDOUT, text=True),
        subprocess.Popen([sys.executable, "-m", "edge", "--config", str(cfg_path), "staff-screen", "--listen",
                          f"127.0.0.1:{staff_port}"], env=dict(os.environ), stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True),
    ]
    base = f"http://127.0.0.1:{staff_port}"
    body = lambda: staff.find_element(By.TAG_NAME, "body").text  # noqa: E731

    def opened(url: str) -> bool:
        if procs[0].poll() is not None:
            raise AssertionError(f"meal-edge run ended: {(tmp_path / 'run.out').read_text()}")
        try:
            staff.get(url)
            return True
        except Exception:
            return False

    try:
        until(lambda: opened(f"http://127.0.0.1:{display_port}/"), "the daemon is up (its kiosk screen)", 120)
        until(lambda: opened(base + "/"), "the staff screen is up", 60)
        log_in(staff, base)
        staff.find_element(By.CSS_SELECTOR, "a.open-enrol").click()
        until(lambda: bool(staff.find_elements(By.CSS_SELECTOR, "form.newsenior")), "the enrolment page")
        assert not frameshare.request_path(cfg.store_path.parent).exists()  # no senior chosen: nothing shared
        shoot(staff, "start")

        def type_senior(sid: str, name: str) -> None:
            for field, value in (("id", sid), ("name", name), ("card", f"C-{sid}")):
                staff.find_element(By.NAME, field).send_keys(value)
            staff.find_element(By.NAME, "birth").send_keys("1950-01-31")
            staff.find_element(By.CSS_SELECTOR, "form.newsenior button").click()

        # a typed mistake first: the page says what is wrong, in Chinese, and keeps what was typed
        staff.find_element(By.NAME, "id").send_keys("LMM 1")
        staff.find_element(By.NAME, "name").send_keys("林曼努尔")
        staff.find_element(By.NAME, "birth").send_keys("2990-01-31")
        staff.find_element(By.CSS_SELECTOR, "form.newsenior button").click()
        until(lambda: "编号里不能有空格" in body() and "出生日期在今天之后" in body(), "the details refused")
        shoot(staff, "details-refused")
        staff.get(base + "/enrol")
        type_senior("LMM", "林曼努尔")
        until(lambda: "live" in (staff.find_element(By.ID, "enrol-preview").get_attribute("class") or ""),
              "the kiosk camera's preview on the page", 20)
        folder = cfg.store_path.parent
        assert oct(frameshare.frame_path(folder).stat().st_mode & 0o777) == "0o600"
        shoot(staff, "camera")
        t0 = time.monotonic()
        staff.find_element(By.CSS_SELECTOR, "form.capture button").click()
        until(lambda: bool(staff.find_elements(By.CSS_SELECTOR, ".enrol-result")), "the capture's result", 60)
        capture_s = time.monotonic() - t0
        assert "已录入：林曼努尔（LMM）" in body(), body()
        accepted = staff.find_elements(By.CSS_SELECTOR, "li.photo.accepted")
        assert len(accepted) >= 2, body()
        shoot(staff, "captured")
        enrolled_at = time.monotonic()
        # the capture is over: the daemon deletes its picture within a moment, and keeps none
        until(lambda: not frameshare.frame_path(folder).exists(), "no shared picture left", 5)
        with Store(cfg.store_path) as s:
            assert s.get_senior("LMM") is not None and s.template_count("LMM") == len(accepted)
            assert s.roster() and dict((sid, card) for sid, _n, card in s.roster())["LMM"] == "C-LMM"

        # the upload, for a second senior, while the kiosk goes on
        staff.get(base + "/enrol")
        type_senior("ALX", "亚历克斯")
        until(lambda: bool(staff.find_elements(By.CSS_SELECTOR, "form.upload")), "the chosen senior's page")
        broken = tmp_path / "broken.jpg"
        broken.write_bytes(b"\xff\xd8\xff\xe0 half a photo")
        room = tmp_path / "room.jpg"
        cv2.imwrite(str(room), np.tile(np.linspace(40, 200, 640, dtype=np.uint8), (480, 1)))
        files = [str(SAMPLES / "alex-lacamoire.png"), str(broken), str(room)]
        staff.find_element(By.CSS_SELECTOR, "form.upload input[type=file]").send_keys("\n".join(files))
        staff.find_element(By.CSS_SELECTOR, "form.upload button").click()
        until(lambda: bool(staff.find_elements(By.CSS_SELECTOR, ".enrol-result")), "the upload's result", 60)
        photos = staff.find_elements(By.CSS_SELECTOR, "li.photo")
        states = [(p.get_attribute("class"), p.get_attribute("data-code")) for p in photos]
        assert states == [("photo accepted", ""), ("photo refused", "unreadable"), ("photo refused", "no_face")]
        assert "无法读取这张照片" in photos[1].text and "没有找到人脸" in photos[2].text
        assert "已录入：亚历克斯（ALX），新增 1 张照片" in body()
        shoot(staff, "uploaded")

        # the running kiosk recognises the senior enrolled at its camera, without a restart
        def named() -> bool:
            out = (tmp_path / "run.out").read_text()
            return any(" LMM " in line and ("MEAL" in line or "CONFIRM" in line) for line in out.splitlines())

        until(named, "a kiosk decision naming LMM", 90)
        recognised_s = time.monotonic() - enrolled_at
        print(f"capture+enrol {capture_s:.1f} s; recognised {recognised_s:.1f} s after enrolment")
        with Store(cfg.store_path) as s:
            meals = [e for e in s.list_events() if e.senior_id == "LMM"]
        lines = [line for line in (tmp_path / "run.out").read_text().splitlines() if " LMM " in line]
        print("\n".join(lines[:3]))
        assert meals or any("CONFIRM" in line for line in lines), lines
    finally:
        staff.quit()
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        daemon_out.close()
    # the daemon stopped: no picture of the camera stays beside the store
    assert not frameshare.frame_path(cfg.store_path.parent).exists()


def test_without_the_daemon_the_page_says_there_is_no_camera_picture(tmp_path: Path) -> None:
    """The kiosk program is not running: the photo page waits for the camera's picture and says so, and 拍照 ends
    (after 5 s without a picture) with "not enrolled" and what to check, in Chinese; nothing is enrolled."""
    from selenium.webdriver.common.by import By

    need_shared()
    staff = browser(800, 480)
    cfg_path = write_config(tmp_path, source=str(CLIP))
    cfg = load_config(cfg_path)
    cfg.store_path.parent.mkdir(parents=True, exist_ok=True)
    add_staff(cfg.store_path)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "edge", "--config", str(cfg_path), "staff-screen", "--listen",
                             f"127.0.0.1:{port}"], env=dict(os.environ), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    body = lambda: staff.find_element(By.TAG_NAME, "body").text  # noqa: E731

    def opened() -> bool:
        try:
            staff.get(base + "/")
            return True
        except Exception:
            return False

    try:
        until(opened, "the staff screen is up", 60)
        log_in(staff, base)
        staff.get(base + "/enrol")
        for field, value in (("id", "S0101"), ("name", "王芳"), ("birth", "1948-03-15")):
            staff.find_element(By.NAME, field).send_keys(value)
        staff.find_element(By.CSS_SELECTOR, "form.newsenior button").click()
        until(lambda: "正在等待摄像头画面" in body(), "the page waits for the camera")
        assert "live" not in (staff.find_element(By.ID, "enrol-preview").get_attribute("class") or "")
        shoot(staff, "no-camera")
        staff.find_element(By.CSS_SELECTOR, "form.capture button").click()
        until(lambda: bool(staff.find_elements(By.CSS_SELECTOR, ".enrol-result")), "the capture's result", 60)
        assert "没有录入：王芳（S0101）" in body() and "收不到签到机摄像头的画面" in body()
        shoot(staff, "no-camera-result")
        with Store(cfg.store_path) as s:
            assert s.get_senior("S0101") is None
            [line] = [a for a in s.audit_log() if a.action == "enrol_refused"]
            assert line.staff_id == "w01" and line.details["codes"] == ["no_picture"]
        assert not frameshare.request_path(cfg.store_path.parent).exists()
    finally:
        staff.quit()
        proc.terminate()
        proc.wait(30)
