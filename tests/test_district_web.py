"""The district dashboard served by a real uvicorn (meal-district web): no anonymous access, login with CSRF and
lockout, every page shows what the database holds, settlement downloads equal the report; and the pages in
headless Chromium (screenshots under the test's folder; MEAL_DISTRICT_SCREENSHOTS=DIR copies them there)."""

from __future__ import annotations

import base64
import http.cookiejar
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port
from district_support import ROOT, db_url, payload, status_payload, topic, wait_until  # noqa: F401
from sqlalchemy import select, text

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
    with dashboard(tmp, f"sqlite:///{db}") as base:
        yield base, tmp
    assert oct((tmp / "state" / "meal-district" / "session.key").stat().st_mode)[-3:] == "600"


@contextmanager
def dashboard(tmp: Path, url: str) -> Iterator[str]:
    """`meal-district web` as a process on a free loopback port, on the database at `url`; its base URL."""
    cfg = tmp / "district.toml"
    port = free_port()
    cfg.write_text(f'[district]\nid = "xuhui"\nname = "Xuhui"\ntimezone = "UTC"\n[database]\nurl = "{url}"\n'
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
        yield base
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


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


# -- the roster page and voids (issues 13 and 14 on the dashboard) ---------------------------------------------

K1 = ("xuhui", "centre-001", "kiosk-1")
K2 = ("xuhui", "centre-002", "kiosk-1")
TKEY = bytes(range(32))


def _signed_day(key: Any) -> tuple[list[bytes], str]:
    """Kiosk-1's day as its store signs it: S0001's lunch, a manager's void of it (wrong person), S0002's lunch."""
    from conftest import meal_event
    from district_support import SH

    from edge.delivery.events import build_payload
    from edge.security import signing

    meal = meal_event(senior_id="S0001", decided_at=datetime(2026, 11, 30, 11, 20, tzinfo=SH))
    void = meal_event(kind="void", senior_id="S0001", voids=meal.event_id, void_reason="wrong_person",
                      check_in="manual", staff_id="m01", decided_at=datetime(2026, 11, 30, 11, 31, tzinfo=SH))
    other = meal_event(senior_id="S0002", decided_at=datetime(2026, 11, 30, 11, 40, tzinfo=SH))
    out: list[bytes] = []
    prev = ""
    for seq, ev in enumerate((meal, void, other), 1):
        obj = signing.sign_event(build_payload(ev, seq, prev), key)
        prev = signing.event_hash(obj)
        out.append(json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode())
    return out, meal.event_id


def seed(url: str) -> dict[str, Any]:
    """Roster data through the roster book (the CLI's functions) and a void through the district's ingest path
    (classify, BatchWriter with the kiosk's registered key, Watcher), on the database at `url`."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from roster_support import embedding

    from district.roster import book
    from district.roster.csvfile import DistrictRow
    from district.store import BatchWriter, Incoming, register_kiosk
    from district.validate import KioskKey, classify
    from district.watch import Watcher
    from edge.delivery import rosterwire as rw
    from edge.security import signing
    from edge.security.atrest import TemplateCipher

    eng = open_engine(url)
    add_user(eng, "li.wei", PASSWORD)
    k1, k2 = KioskKey(*K1), KioskKey(*K2)
    rows = [DistrictRow(2, "S0001", "王芳", date(1946, 3, 1), "本区", "active", "centre-001", "C0001", None),
            DistrictRow(3, "S0002", "李明", date(1950, 5, 2), "本区", "active", "centre-001", None, ("centre-001",)),
            DistrictRow(4, "S0003", "张兰", date(1944, 8, 9), "本区", "active", "centre-002", None, None)]
    book.import_rows(eng, rows, "test")
    cipher = TemplateCipher(bytes(range(32, 64)))
    for sid, model, n in (("S0001", "sface", 3), ("S0001", "arcface-r50", 2), ("S0003", "sface", 2)):
        tids = [rw.new_msg_id() for _ in range(n)]
        ts = [rw.WireTemplate(template_id=t, model_id=model, quality=0.8,
                              sealed=rw.seal_template(TKEY, sid, model, t, embedding(i)))
              for i, t in enumerate(tids)]
        up = rw.TemplateUpload(msg_id=rw.new_msg_id(), district=k1.district, centre_id=k1.centre_id,
                               kiosk_id=k1.kiosk_id, sent_at=datetime.now(UTC), senior_id=sid, templates=ts)
        assert book.accept_upload(eng, k1, up, TKEY, cipher).accepted
    with eng.begin() as conn:
        book.kiosk_synced(conn, k1, "sface", datetime.now(UTC))
        book.kiosk_synced(conn, k2, "arcface-r50", datetime.now(UTC))
    with eng.connect() as conn:
        top = book.max_version(conn)

    def receipt(k: KioskKey, version: int, model: str, erased: dict[str, int]) -> None:
        book.record_receipt(eng, k, rw.Receipt(msg_id=rw.new_msg_id(), district=k.district, centre_id=k.centre_id,
                                               kiosk_id=k.kiosk_id, sent_at=datetime.now(UTC), version=version,
                                               model_id=model, erased=erased))

    receipt(k2, 2, "arcface-r50", {})  # kiosk 2 stays behind
    removal = book.remove(eng, "S0003", "test")  # both kiosks owe the erasure; kiosk 1 confirms it
    assert sorted(removal.kiosks) == [str(k1), str(k2)]
    receipt(k1, removal.version, "sface", {"S0003": 2})
    assert removal.version == top + 1
    with eng.connect() as conn:
        sealed = [bytes(b) for (b,) in conn.execute(text("SELECT embedding FROM roster_templates"))]
    key = Ed25519PrivateKey.generate()
    register_kiosk(eng, *K1, signing.public_key_text(key.public_key()))
    bodies, voided = _signed_day(key)
    now = datetime.now(UTC)
    batch = [Incoming(topic(), b, classify(topic(), b, prefix="meal/v1", district="xuhui", max_bytes=16384,
                                           accept_unsigned=False), now) for b in bodies]
    res = BatchWriter(eng).write(batch)
    assert (res.stored, res.quarantined) == (3, 0)
    Watcher(eng).reconcile(res.keys, res.voided)
    eng.dispose()
    return {"version": removal.version, "sealed": sealed, "voided": voided}


def test_the_district_has_the_staff_screens_words_for_every_void_reason() -> None:
    from district.voids import REASON_WORDS
    from edge.delivery.events import VOID_REASONS
    from edge.meals.void import REASON_WORDS as KIOSK_WORDS

    assert set(REASON_WORDS) == set(VOID_REASONS)
    assert {c: (w["zh"], w["en"]) for c, w in KIOSK_WORDS.items()} == REASON_WORDS


def _text(body: bytes) -> str:
    """The page's text without tags (what a reader sees, roughly)."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body.decode()))


def test_roster_page_and_voids(db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    data = seed(db_url)
    v = data["version"]
    with dashboard(tmp_path, db_url) as base:
        anon, _ = browser()
        for p in ("/roster", "/roster?id=S0001"):
            status, headers, _ = get(anon, base + p)
            assert status == 303 and headers["location"].startswith("/login"), p
        opener, _ = browser()
        assert login(opener, base)[0] == 303
        status, _, body = get(opener, base + "/roster")
        page = _text(body)
        assert status == 200
        # version; kiosk 1 up to date and owing nothing, kiosk 2 behind and owing S0003's erasure
        assert f"{v} roster version" in page and "2 kiosks synced" in page and "1 kiosks behind" in page
        assert "1 erasures not confirmed" in page
        assert f"xuhui/centre-001/kiosk-1 sface {v} up to date" in page
        assert f"xuhui/centre-002/kiosk-1 arcface-r50 2 {v - 2} behind" in page
        assert f"S0003 xuhui/centre-002/kiosk-1 {v}" in page  # the erasure still owed

        status, _, body = get(opener, base + "/roster?id=S0001")
        page = _text(body)
        assert "S0001 王芳" in page and "在册 active" in page and "every centre of the district" in page
        assert "C0001" in page and "arcface-r50 : 2" in page and "sface : 3" in page
        assert "xuhui/centre-001/kiosk-1 sface yes" in page and "xuhui/centre-002/kiosk-1 arcface-r50 not yet" in page
        for blob in data["sealed"]:  # counts only: no template bytes in any form
            for form in (blob, base64.b64encode(blob), blob.hex().encode(), blob[:16].hex().encode()):
                assert form not in body
        page = _text(get(opener, base + "/roster?id=S0002")[2])
        assert "May eat at centre-001" in page and "xuhui/centre-002" not in page.split("Kiosks in scope")[1]
        page = _text(get(opener, base + "/roster?id=S0003")[2])
        assert "已删除 removed" in page and "Templates erased" in page
        assert re.search(r"xuhui/centre-001/kiosk-1 \d+ \d{4}-\d\d-\d\d \d\d:\d\d:\d\d 2", page), page
        assert "xuhui/centre-002/kiosk-1" in page and "pending 未确认" in page
        page = _text(get(opener, base + "/roster?id=S9999")[2])
        assert "no senior S9999" in page

        # the voided meal on the senior's page: voided, reason in words, the void's time and manager
        page = _text(get(opener, base + "/seniors?id=S0001")[2])
        assert "1 voided meal 已作废: subsidy reversed CNY 3.00" in page
        assert page.count("认错人 · Wrong person") == 2  # on the meal and on the void event
        assert "voided 2026-11-30 03:31:00 by m01" in page and "voided 已作废" in page
        assert "void 作废" in page and "−3.00" in page
        assert "已作废" not in _text(get(opener, base + "/seniors?id=S0002")[2])
        page = _text(get(opener, base + "/flags")[2])
        assert ("2026-11-30 S0001 centre-001 voided 认错人 · Wrong person 2026-11-30 03:31:00 by m01 3.00 "
                f"{data['voided']}") in page
        # the settlement page: the statement's numbers, voids counted and the amount reversed
        page = _text(get(opener, base + "/settlement?month=2026-11")[2])
        assert "2 meals" in page and "6.00 subsidy granted" in page and "1 voided meals" in page
        assert "3.00 reversed by voids" in page and "0.00 clawed back" in page and "3.00 net subsidy owed" in page
        assert ("2026-11-30 S0001 centre-001 / kiosk-1 2026-11-30 03:20:00 认错人 · Wrong person "
                "2026-11-30 03:31:00 m01 3.00") in page
        csv = get(opener, base + "/settlement/2026-11/centres.csv")[2]
        assert b"centre-001,2,2,600,1400,1,300,300" in csv  # the page says what the file says
    eng = open_engine(db_url)
    with eng.connect() as c:
        audits = [(a.actor, a.action, a.detail) for a in c.execute(select(Audit.actor, Audit.action, Audit.detail))]
    eng.dispose()
    shows = [d for actor, action, d in audits if actor == "li.wei" and action == "roster.show"]
    assert sorted(shows) == ["S0001", "S0002", "S0003", "S9999"]
    assert ("li.wei", "settlement.view", "2026-11") in audits

    # `meal-district status`: the roster line, from the same queries
    from district.cli import main

    assert main(["--config", str(tmp_path / "district.toml"), "status"]) == 0
    out = capsys.readouterr().out
    assert f"roster version {v}  kiosks synced 2  behind 1  erasures owed 1" in out
    assert main(["--config", str(tmp_path / "district.toml"), "status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["roster"] == {"version": v, "kiosks": 2, "kiosks_behind": 1,
                                                             "erasures_owed": 1}


@pytest.mark.slow
def test_roster_and_void_pages_in_headless_chromium(tmp_path: Path) -> None:
    """Screenshots of the roster page (a senior looked up) and of a senior with a voided meal;
    MEAL_DISTRICT_SCREENSHOTS=DIR copies them there (docs/screenshots/)."""
    found = _chromium()
    if found is None:
        pytest.skip("chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    url = f"sqlite:///{tmp_path / 'district.sqlite'}"
    seed(url)
    opts = webdriver.ChromeOptions()
    opts.binary_location = found[0]
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1000",
              "--disable-dev-shm-usage", "--lang=zh-CN"):
        opts.add_argument(a)
    shots = tmp_path / "screenshots"
    shots.mkdir()
    with dashboard(tmp_path, url) as base:
        drv = webdriver.Chrome(service=Service(executable_path=found[1]), options=opts)
        try:
            drv.get(base + "/roster")
            drv.find_element(By.NAME, "name").send_keys("li.wei")
            drv.find_element(By.NAME, "password").send_keys(PASSWORD)
            drv.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
            wait_until(lambda: "Roster" in drv.title, 10, "the roster page after logging in")
            drv.find_element(By.CSS_SELECTOR, "main input[name=id]").send_keys("S0001")
            drv.find_element(By.CSS_SELECTOR, "main form.inline button").click()
            wait_until(lambda: "id=S0001" in drv.current_url, 10, "the senior looked up")
            assert "王芳" in drv.find_element(By.CSS_SELECTOR, "table.record").text
            drv.set_window_size(1280, drv.execute_script("return document.body.scrollHeight") + 140)
            drv.save_screenshot(str(shots / "district-roster.png"))
            drv.set_window_size(1280, 800)
            drv.get(base + "/seniors?id=S0001")
            voided = drv.find_element(By.CSS_SELECTOR, "tr.voided")
            assert "认错人 · Wrong person" in voided.text and "m01" in voided.text
            money = voided.find_element(By.CSS_SELECTOR, "td.money")
            assert drv.execute_script("return getComputedStyle(arguments[0]).textDecorationLine", money) == \
                "line-through"
            drv.save_screenshot(str(shots / "district-senior-void.png"))
            drv.get(base + "/settlement?month=2026-11")
            drv.save_screenshot(str(shots / "district-settlement-void.png"))
        finally:
            drv.quit()
    if out := os.environ.get("MEAL_DISTRICT_SCREENSHOTS"):
        for p in shots.iterdir():
            shutil.copy(p, Path(out) / p.name)
