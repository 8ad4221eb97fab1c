"""The district dashboard served by a real uvicorn (meal-district web): no anonymous access, login with CSRF and
lockout, every page shows what the database holds, settlement downloads equal the report; and the pages in
headless Chromium (screenshots under the test's folder; MEAL_DISTRICT_SCREENSHOTS=DIR copies them there)."""

from __future__ import annotations

import http.cookiejar
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import free_port
from district_support import ROOT, payload, status_payload, topic, wait_until
from sqlalchemy import select

from district.db.engine import open_engine
from district.db.models import Audit
from district.embedded import settle_events
from district.users import add_user

PASSWORD = "district office 2026"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    tmp = tmp_path_factory.mktemp("web")
    db = tmp / "district.sqlite"
    today = datetime.now(UTC).astimezone().date()
    todays = [payload(i, f"S{i:04d}", centre=c, day=today.day).replace(b"2026-11-", f"{today:%Y-%m}-".encode())
              for i, c in ((6, "centre-001"), (7, "centre-001"), (2, "centre-002"))] if today.year >= 2026 else []
    settle_events([payload(1, "S0001", minute=0), payload(2, "S0002"), payload(5, "S0003"),
                   payload(1, "S0001", centre="centre-002", minute=30),
                   status_payload("offline", "connection_lost"), b'{"broken": ', *todays], db_path=db)
    eng = open_engine(f"sqlite:///{db}")
    add_user(eng, "li.wei", PASSWORD)
    eng.dispose()
    # the status message went through the events path above: store it as serve would
    from district.store import BatchWriter, Incoming
    from district.validate import classify

    eng = open_engine(f"sqlite:///{db}")
    body = status_payload("offline", "connection_lost")
    BatchWriter(eng).write([Incoming(topic(leaf="status"), body, classify(
        topic(leaf="status"), body, prefix="meal/v1", district="xuhui", max_bytes=16384, accept_unsigned=True),
        datetime.now(UTC))])
    eng.dispose()
    cfg = tmp / "district.toml"
    port = free_port()
    cfg.write_text(f'[district]\nid = "xuhui"\nname = "Xuhui"\ntimezone = "UTC"\n[database]\nurl = "sqlite:///{db}"\n'
                   f'[web]\nlisten = "127.0.0.1:{port}"\n')
    env = {**os.environ, "XDG_STATE_HOME": str(tmp / "state")}
    log = (tmp / "web.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "district", "--config", str(cfg), "web"], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            urllib.request.urlopen(f"{base}/login", timeout=1)
            return True
        except OSError:
            return False

    try:
        wait_until(up, 30, "the dashboard")
        yield base, tmp
    finally:
        proc.terminate()
        proc.wait(10)
    assert oct((tmp / "state" / "meal-district" / "session.key").stat().st_mode)[-3:] == "600"


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return None


def browser() -> tuple[urllib.request.OpenerDirector, http.cookiejar.CookieJar]:
    jar = http.cookiejar.CookieJar()
    return urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), NoRedirect()), jar


def get(opener: urllib.request.OpenerDirector, url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        r = opener.open(url, timeout=30)
        return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def login(opener: urllib.request.OpenerDirector, base: str, password: str = PASSWORD) -> tuple[int, dict[str, str],
                                                                                               bytes]:
    _, _, form = get(opener, f"{base}/login")
    token = re.search(rb'name="token" value="([^"]+)"', form)
    assert token
    data = urllib.parse.urlencode({"name": "li.wei", "password": password, "token": token.group(1).decode(),
                                   "next": "/flags"}).encode()
    try:
        r = opener.open(urllib.request.Request(f"{base}/login", data=data), timeout=30)
        return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


PAGES = ["/", "/kiosks", "/gaps", "/flags", "/quarantine", "/seniors?id=S0001", "/settlement?month=2026-11",
         "/settlement/2026-11/centres.csv"]


def test_no_anonymous_access(site: tuple[str, Path]) -> None:
    base, _ = site
    opener, _ = browser()
    for p in PAGES:
        status, headers, _ = get(opener, base + p)
        assert status == 303 and headers["location"].startswith("/login"), p
    status, _, _ = get(opener, base + "/docs")
    assert status == 404  # no API explorer either


def test_login_csrf_wrong_password_and_pages(site: tuple[str, Path]) -> None:
    base, tmp = site
    opener, _ = browser()
    # a form posted without the session's token is refused
    data = urllib.parse.urlencode({"name": "li.wei", "password": PASSWORD, "token": "forged"}).encode()
    body = opener.open(urllib.request.Request(f"{base}/login", data=data), timeout=30).read()
    assert b"The form expired" in body
    status, _, body = login(opener, base, "not the password")
    assert status == 200 and b"Wrong name or password." in body
    status, headers, _ = login(opener, base)
    assert status == 303 and headers["location"] == "/flags"
    status, headers, body = get(opener, base + "/flags")
    assert status == 200 and "default-src 'self'" in headers["content-security-policy"]
    assert b"double subsidy" in body and body.count(b"double_subsidy") >= 1
    checks = {
        "/": [b"events received", b"centre-001", b"open gaps"],
        "/kiosks": [b"state-offline", b"connection lost", b"kiosk-1"],
        "/gaps": [b"xuhui/centre-001/kiosk-1", b"<td class=\"n\">3</td>", b"<td class=\"n\">4</td>"],
        "/quarantine": [b"not JSON", b"{&#34;broken&#34;: "],
        "/seniors?id=S0001": [b"centre-002 / kiosk-1", b"double subsidy"],
        "/settlement?month=2026-11": [b"2026-11-centres.csv", b"all.zip"],
    }
    for p, needles in checks.items():
        status, _, body = get(opener, base + p)
        assert status == 200, p
        for n in needles:
            assert n in body, (p, n)
    status, headers, csv = get(opener, base + "/settlement/2026-11/centres.csv")
    assert status == 200 and headers["content-disposition"] == 'attachment; filename="2026-11-centres.csv"'
    assert csv.splitlines()[0] == (b"centre_id,meals,subsidised_meals,subsidy_fen,payable_fen,adjustments,"
                                   b"adjustment_fen,net_subsidy_fen")
    assert b"centre-001,3,3,900,2100,0,0,900" in csv and b"centre-002,1,1,300,700,1,300,0" in csv
    assert get(opener, base + "/settlement/2026-11/../../etc/passwd")[0] == 404
    assert get(opener, base + "/settlement/2026-13/centres.csv")[0] == 400
    eng = open_engine(f"sqlite:///{tmp / 'district.sqlite'}")
    with eng.connect() as c:
        actions = [(a.actor, a.action) for a in c.execute(select(Audit.actor, Audit.action))]
    eng.dispose()
    assert ("li.wei", "login") in actions and ("li.wei", "settlement.download") in actions
    assert ("li.wei", "senior.history") in actions and ("li.wei", "login.failed") in actions


def _chromium() -> tuple[str, str] | None:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists()
                                              else None)
    return (exe, driver) if exe and driver else None


@pytest.mark.slow
def test_pages_in_headless_chromium(site: tuple[str, Path]) -> None:
    found = _chromium()
    if found is None:
        pytest.skip("chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    base, tmp = site
    opts = webdriver.ChromeOptions()
    opts.binary_location = found[0]
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900", "--disable-dev-shm-usage"):
        opts.add_argument(a)
    drv = webdriver.Chrome(service=Service(executable_path=found[1]), options=opts)
    shots = tmp / "screenshots"
    shots.mkdir(exist_ok=True)
    try:
        drv.get(base + "/")
        assert drv.current_url.startswith(base + "/login")
        drv.save_screenshot(str(shots / "district-login.png"))
        drv.find_element(By.NAME, "name").send_keys("li.wei")
        drv.find_element(By.NAME, "password").send_keys(PASSWORD)
        drv.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait_until(lambda: "/login" not in drv.current_url and "Overview" in drv.title, 10, "logged in")
        for name, path in [("overview", "/"), ("kiosks", "/kiosks"), ("flags", "/flags"), ("gaps", "/gaps"),
                           ("quarantine", "/quarantine"), ("senior", "/seniors?id=S0001"),
                           ("settlement", "/settlement?month=2026-11")]:
            drv.get(base + path)
            assert drv.find_element(By.TAG_NAME, "h2").text, name
            drv.save_screenshot(str(shots / f"district-{name}.png"))
        # the settlement page's chart is an image served by the dashboard itself
        img = drv.find_element(By.CSS_SELECTOR, "img.chart")
        assert drv.execute_script("return arguments[0].naturalWidth", img) > 100
        drv.find_element(By.CSS_SELECTOR, "header form button").click()
        wait_until(lambda: "/login" in drv.current_url, 10, "logged out")
        drv.get(base + "/flags")
        assert drv.current_url.startswith(base + "/login")
    finally:
        drv.quit()
    if out := os.environ.get("MEAL_DISTRICT_SCREENSHOTS"):
        for p in shots.iterdir():
            shutil.copy(p, Path(out) / p.name)
