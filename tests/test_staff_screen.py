"""The staff confirmation screen (`meal-edge staff-screen`): a real server on a free loopback port over a real
SQLite store, driven with real HTTP requests, resolving confirmations with the real `confirm()`."""

from __future__ import annotations

import argparse
import html
import json
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from email.message import Message
from pathlib import Path
from urllib.error import HTTPError
from urllib.parse import urlencode

import numpy as np
import pytest
import test_confirm as confirm_tests
from argon2 import PasswordHasher
from conftest import free_port
from test_confirm import DAY, NOT_LIVE, at, pending, write_config

from edge.cli.demo import hopper
from edge.cli.main import main as edge_main
from edge.config import Config, load_config
from edge.meals.rules import Senior
from edge.recognition.detect import Detector
from edge.screens.staffscreen import StaffScreen
from edge.screens.staffserver import parse_listen, serve
from edge.security.staffauth import StaffAuth
from edge.store import Store
from edge.store.evidence import EvidenceKeeper, confirmation_name

# the confirmation tests' config (store under tmp_path, language en) and store (senior S0001 "Wang Fang")
cfg = confirm_tests.cfg
store = confirm_tests.store

NOW = at("11:50")


#: the staff account the tests log in with (a cheap argon2 hash: the screen verifies it whatever its cost)
STAFF_ID, STAFF_NAME, PIN = "w01", "Li Na", "482913"
FAST = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
#: base URL -> the session cookie of the logged-in staff member
COOKIES: dict[str, str] = {}


def add_staff(store_path: Path, staff_id: str = STAFF_ID, name: str = STAFF_NAME, pin: str = PIN) -> None:
    with Store(store_path) as s:
        if s.get_staff(staff_id) is None:
            StaffAuth(s, hasher=FAST).add(staff_id, name, "staff", pin)


def login(base: str, staff_id: str = STAFF_ID, pin: str = PIN) -> Answer:
    """What staff do at the screen: open it (the login page), type their id and PIN."""
    page = fetch(base + "/", anon=True).body
    a = fetch(base + "/login", {"token": token_of(page), "staff_id": staff_id, "pin": pin}, follow=False, anon=True)
    if a.status == 303:
        assert a.cookie is not None
        COOKIES[base] = a.cookie.split(";")[0]
    return a


@contextmanager
def running(config: Config, *, logged_in: bool = True) -> Iterator[tuple[StaffScreen, str]]:
    screen = StaffScreen(config, clock=lambda: NOW)
    server = serve(screen, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    base = server.url.rstrip("/")
    try:
        if logged_in and config.store_path.exists():
            add_staff(config.store_path)
            assert login(base).status == 303
        yield screen, base
    finally:
        COOKIES.pop(base, None)
        server.shutdown()
        server.server_close()
        thread.join(5)
        screen.close()


@pytest.fixture
def url(cfg: Config, store: Store) -> Iterator[str]:
    with running(cfg) as (_screen, base):
        yield base


@pytest.fixture
def zh_cfg(cfg: Config) -> Config:
    return cfg.model_copy(update={"centre": cfg.centre.model_copy(update={"language": "zh"})})


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *_args: object, **_kw: object) -> None:
        return None


@dataclass(frozen=True)
class Answer:
    status: int
    ctype: str
    body: str
    location: str | None
    cookie: str | None = None


def fetch(
    url: str,
    data: dict[str, str] | None = None,
    *,
    follow: bool = True,
    host: str | None = None,
    anon: bool = False,
    cookie: str | None = None,
) -> Answer:
    """One request (a POST when `data` is given), with the logged-in staff member's cookie of that screen
    unless `anon`; HTTP errors are answers too."""
    req = urllib.request.Request(url, data=None if data is None else urlencode(data).encode())
    if host:
        req.add_header("Host", host)
    base = next((b for b in COOKIES if url.startswith(b + "/")), None)
    if cookie is not None or (base is not None and not anon):
        req.add_header("Cookie", cookie if cookie is not None else COOKIES[base or ""])
    # the cookie must also ride along after a redirect (urllib drops headers it did not add itself)
    opener = urllib.request.build_opener(_KeepCookie) if follow else urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(req, timeout=5) as r:
            h = r.headers
            return Answer(r.status, h["Content-Type"], r.read().decode(), h["Location"], h["Set-Cookie"])
    except HTTPError as e:
        with e:
            h = e.headers
            return Answer(e.code, h["Content-Type"], e.read().decode(), h["Location"], h["Set-Cookie"])


class _KeepCookie(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and req.has_header("Cookie"):
            new.add_header("Cookie", req.get_header("Cookie"))
        return new


def token_of(page: str) -> str:
    m = re.search(r'name="token" value="([^"]+)"', page)
    assert m, "the form carries no token"
    return m.group(1)


def press(base: str, cid: int, action: str, pin: str = "") -> tuple[int, str]:
    """What a tap does: load the list, post that card's form (with the PIN typed on it, if any), follow the
    redirect back to the list."""
    page = fetch(base + "/").body
    form = {"token": token_of(page), "action": action}
    if pin:
        form["pin"] = pin
    a = fetch(f"{base}/confirm/{cid}", form)
    return a.status, a.body


def flash(page: str) -> str:
    m = re.search(r'<div class="flash [a-z]+" role="status">([^<]*)</div>', page)
    return m.group(1) if m else ""


# -- the list --------------------------------------------------------------------------------------------


def test_the_list_shows_todays_candidates_oldest_first(url: str, store: Store) -> None:
    store.add_senior(Senior("S0002", "Zhang Wei", date(1948, 5, 1), "xuhui"))
    first = pending(store, at("11:45"))
    second = pending(store, at("11:47"), senior_id="S0002")
    pending(store, at("11:45", DAY - timedelta(days=1)))  # yesterday's: only the CLI can clear it
    store.add_confirmation("kiosk-2", "S0002", at("11:46"), DAY, 0.4, 0.03, 5, ("frames_disagree",))

    a = fetch(url + "/")
    assert a.status == 200 and a.ctype == "text/html; charset=utf-8"
    page = a.body
    assert '<html lang="en">' in page and "Please confirm check-in" in page
    assert page.index(f'id="c{first}"') < page.index(f'id="c{second}"')
    assert page.count('class="card"') == 2  # not yesterday's, not kiosk-2's
    assert '<span class="name">Wang Fang</span><span class="sid">ID S0001</span>' in page
    assert "Seen at 11:45" in page and "Looks much like another enrolled senior" in page
    assert "Confirm: this is Wang Fang" in page and "Confirm: this is Zhang Wei" in page
    assert page.count("Not this person") == 2
    assert "1 older request(s) from earlier days" in page
    assert "frames_disagree" not in page and "The camera's pictures" not in html.unescape(page)


def test_nothing_pending_says_so(url: str) -> None:
    a = fetch(url + "/")
    assert a.status == 200 and "Nothing to confirm right now." in a.body and "<form class=\"decide\"" not in a.body


def test_a_removed_senior_can_only_be_rejected(url: str, store: Store) -> None:
    cid = pending(store, at("11:45"))
    store.remove_senior("S0001")
    page = fetch(url + "/").body
    assert "(no longer enrolled)" in page and "Confirm: this is" not in page and "Not this person" in page
    status, body = press(url, cid, "no")
    assert status == 200 and flash(body) == "Cancelled: S0001 was not checked in."


# -- the buttons -----------------------------------------------------------------------------------------


def test_yes_records_one_staff_confirmed_meal_with_the_subsidy(url: str, store: Store) -> None:
    cid = pending(store, at("11:45"))
    page = fetch(url + "/").body
    a = fetch(f"{url}/confirm/{cid}", {"token": token_of(page), "action": "yes"}, follow=False)
    assert a.status == 303 and a.location is not None and a.location.startswith("/?flash=")
    [ev] = store.list_events()  # recorded before the redirect is answered
    assert (ev.senior_id, ev.meal, ev.subsidy_fen, ev.payable_fen, ev.confirmed_by) == (
        "S0001", "lunch", 300, 700, "staff"
    )
    [out] = store.pending()  # in the outbox for the daemon's publisher
    assert json.loads(out.payload)["confirmed_by"] == "staff" and out.event_id == ev.event_id
    c = store.get_confirmation(cid)
    assert c is not None and (c.state, c.resolved_by, c.event_id) == ("confirmed", STAFF_ID, ev.event_id)
    # in the audit log under the logged-in staff member, in the same transaction as the meal
    assert [(a.staff_id, a.action, a.target) for a in store.audit_log()][-1] == (
        STAFF_ID, "confirm", f"confirmation:{cid}"
    )

    # the redirect shows the result once; the list itself no longer has the card
    assert "please pay ¥7.00" in flash(fetch(url + a.location).body)
    page = fetch(url + "/").body
    assert 'class="flash' not in page and f'id="c{cid}"' not in page


def test_the_result_is_shown_on_the_list(url: str, store: Store) -> None:
    cid = pending(store, at("11:45"))
    status, body = press(url, cid, "yes")
    assert status == 200
    assert flash(body) == "Welcome Wang Fang: lunch, please pay ¥7.00 (¥3.00 subsidy applied)"
    assert 'class="flash ok"' in body and "Nothing to confirm right now." in body


def test_no_records_nothing(url: str, store: Store) -> None:
    cid = pending(store, at("11:45"))
    status, body = press(url, cid, "no")
    assert status == 200 and flash(body) == "Cancelled: Wang Fang was not checked in."
    c = store.get_confirmation(cid)
    assert c is not None and (c.state, c.resolved_by, c.event_id) == ("rejected", STAFF_ID, None)
    assert store.list_events() == [] and store.pending() == []


def test_a_second_post_is_already_resolved_and_pays_once(url: str, store: Store) -> None:
    cid = pending(store, at("11:45"))
    page = fetch(url + "/").body  # both taps come from the same page
    form = {"token": token_of(page), "action": "yes"}
    assert "please pay" in flash(fetch(f"{url}/confirm/{cid}", form).body)
    add_staff(store.path, "w02", "Zhao Lei", "918273")
    other = fetch(f"{url}/confirm/{cid}", form, cookie=COOKIES.pop(url))  # another staff member's screen...
    login(url, "w02", "918273")
    again = fetch(f"{url}/confirm/{cid}", form)  # ...now logged in as w02
    assert other.status == 200 and flash(other.body).startswith(f"This was already confirmed by {STAFF_ID} at ")
    assert again.status == 200 and flash(again.body).startswith(f"This was already confirmed by {STAFF_ID} at ")
    assert flash(again.body).endswith("Nothing changed.")
    again = fetch(f"{url}/confirm/{cid}", {**form, "action": "no"})
    assert f"already confirmed by {STAFF_ID}" in flash(again.body)
    assert len(store.list_events()) == 1 and store.last_seq("kiosk-1") == 1
    c = store.get_confirmation(cid)
    assert c is not None and (c.state, c.resolved_by) == ("confirmed", STAFF_ID)


def test_simultaneous_taps_pay_once(url: str, store: Store) -> None:
    cid = pending(store, at("11:45"))
    form = {"token": token_of(fetch(url + "/").body), "action": "yes"}
    results: list[str] = []
    go = threading.Barrier(4)

    def tap() -> None:
        go.wait()
        results.append(flash(fetch(f"{url}/confirm/{cid}", form).body))

    taps = [threading.Thread(target=tap) for _ in range(4)]
    for t in taps:
        t.start()
    for t in taps:
        t.join(10)
    assert sum("please pay" in r for r in results) == 1
    assert sum(f"already confirmed by {STAFF_ID}" in r for r in results) == 3
    assert len(store.list_events()) == 1


def test_a_served_senior_gets_no_second_meal(url: str, store: Store) -> None:
    store.record_meal(confirm_tests.lunch_event(), confirm_tests.TOPIC)
    cid = pending(store, at("11:45"))
    _, body = press(url, cid, "yes")
    assert flash(body) == "No meal recorded for Wang Fang: Already checked in for this meal today"
    assert 'class="flash warn"' in body and len(store.list_events()) == 1


# -- a suspected photo or phone screen: a named staff member must check -------------------------------------


def card(page: str, cid: int) -> str:
    m = re.search(rf'<li class="card[^"]*" id="c{cid}">.*?</li>', page)
    assert m, f"no card for {cid}"
    return m.group(0)


NEEDS_PIN = "A staff member must check this one: enter your PIN."


def test_a_suspected_photo_asks_for_the_staff_members_pin_again(url: str, store: Store) -> None:
    live = pending(store, at("11:45"), reasons=NOT_LIVE)
    plain = pending(store, at("11:46"))
    page = fetch(url + "/").body
    c = card(page, live)
    assert c.startswith(f'<li class="card need" id="c{live}">')
    assert "The camera could not tell a real face from a photo or a phone screen held up to it." in c
    assert "must look at the person and enter their own PIN again before confirming" in c
    # its own field, a password, required, never filled in by the page; "Not this person" needs none
    assert re.search(r'Your PIN \(required\)<input class="need" type="password" name="pin" required '
                     r'maxlength="128" autocomplete="off"></label>', c)
    assert "value=" not in c.split('name="pin"')[1].split(">")[0]
    assert "Confirm: this is Wang Fang" in c and '<button class="no" name="action" value="no" formnovalidate>' in c
    # an ordinary card: the login is enough
    c = card(page, plain)
    assert c.startswith(f'<li class="card" id="c{plain}">') and 'name="pin"' not in c
    assert "required" not in c and "formnovalidate" not in c
    # without JavaScript the page gives time to type the PIN before it reloads (else every 5 s)
    assert '<meta http-equiv="refresh" content="30;url=/">' in page and 'data-refresh="5"' in page
    store.resolve_confirmation(live, "rejected", STAFF_ID)
    assert '<meta http-equiv="refresh" content="5;url=/">' in fetch(url + "/").body


def test_yes_without_the_right_pin_is_refused_for_a_suspected_photo(url: str, store: Store) -> None:
    """A logged-in screen alone, a typed name, or somebody else's PIN: refused, nothing changed."""
    add_staff(store.path, "w02", "Zhao Lei", "918273")
    cid = pending(store, at("11:45"), reasons=NOT_LIVE)
    page = fetch(url + "/").body
    for extra, says in (({}, NEEDS_PIN), ({"pin": ""}, NEEDS_PIN), ({"by": "Li Na"}, NEEDS_PIN),
                        ({"pin": "111111"}, "Wrong PIN: nothing was done."),
                        ({"pin": "918273"}, "Wrong PIN: nothing was done.")):
        form = {"token": token_of(page), "action": "yes", **extra}
        a = fetch(f"{url}/confirm/{cid}", form, follow=False)
        assert a.status == 303 and a.location is not None
        body = fetch(url + a.location).body
        assert flash(body) == says and 'class="flash warn"' in body, extra
        assert f'id="c{cid}"' in body  # still on the list, with its PIN field
    c = store.get_confirmation(cid)
    assert c is not None and (c.state, c.resolved_by, c.event_id) == ("pending", None, None)
    assert store.list_events() == [] and store.pending() == [] and store.last_seq("kiosk-1") == 0
    # the wrong PINs count towards the lockout of the logged-in account, and are audited
    acct = store.get_staff(STAFF_ID)
    assert acct is not None and acct.failures == 2
    assert [a.action for a in store.audit_log()][-2:] == ["login_failed", "login_failed"]


def test_yes_with_the_pin_records_the_meal_and_who_checked(url: str, store: Store) -> None:
    cid = pending(store, at("11:45"), reasons=NOT_LIVE)
    status, body = press(url, cid, "yes", PIN)
    assert status == 200
    assert flash(body) == "Welcome Wang Fang: lunch, please pay ¥7.00 (¥3.00 subsidy applied)"
    [ev] = store.list_events()
    assert (ev.senior_id, ev.meal, ev.subsidy_fen, ev.confirmed_by) == ("S0001", "lunch", 300, "staff")
    c = store.get_confirmation(cid)
    assert c is not None and (c.state, c.resolved_by, c.event_id) == ("confirmed", STAFF_ID, ev.event_id)
    line = store.audit_log()[-1]
    assert (line.staff_id, line.action, line.details["staff_checked"]) == (STAFF_ID, "confirm", True)


def test_not_this_person_needs_no_pin_for_a_suspected_photo(url: str, store: Store) -> None:
    cid = pending(store, at("11:45"), reasons=NOT_LIVE)
    status, body = press(url, cid, "no")
    assert status == 200 and flash(body) == "Cancelled: Wang Fang was not checked in."
    c = store.get_confirmation(cid)
    assert c is not None and (c.state, c.resolved_by) == ("rejected", STAFF_ID)
    assert store.list_events() == []


def test_an_already_resolved_suspected_photo_says_so_rather_than_asking_for_a_pin(url: str, store: Store) -> None:
    cid = pending(store, at("11:45"), reasons=NOT_LIVE)
    token = token_of(fetch(url + "/").body)
    assert "please pay" in flash(fetch(f"{url}/confirm/{cid}", {"token": token, "action": "yes", "pin": PIN}).body)
    again = fetch(f"{url}/confirm/{cid}", {"token": token, "action": "yes"})
    assert flash(again.body).startswith(f"This was already confirmed by {STAFF_ID} at ")
    assert len(store.list_events()) == 1


def test_the_refusal_speaks_the_centres_language(zh_cfg: Config, store: Store) -> None:
    cid = pending(store, at("11:45"), reasons=NOT_LIVE)
    with running(zh_cfg) as (_screen, base):
        page = fetch(base + "/").body
        assert "您的密码（必填）" in card(page, cid) and "举在镜头前的照片或手机画面" in card(page, cid)
        _, body = press(base, cid, "yes")
        assert flash(body) == "这一条需要工作人员核实：请输入您的密码。"
    c = store.get_confirmation(cid)
    assert c is not None and c.state == "pending" and store.list_events() == []


# -- refusals --------------------------------------------------------------------------------------------


def test_a_post_without_the_token_is_refused(url: str, store: Store, cfg: Config) -> None:
    cid = pending(store, at("11:45"))
    other_process = StaffScreen(cfg).token  # a page served by an earlier run of the screen
    for form in ({"action": "yes"}, {"action": "yes", "token": "x"}, {"action": "yes", "token": other_process}):
        a = fetch(f"{url}/confirm/{cid}", form)
        assert a.status == 403 and a.ctype.startswith("text/html")
        assert "This page was out of date, so nothing was done." in a.body
    c = store.get_confirmation(cid)
    assert c is not None and c.state == "pending" and store.list_events() == []


def test_another_host_name_is_refused_on_loopback(url: str, store: Store) -> None:
    """A DNS-rebinding page reaches 127.0.0.1 under its own name: it can read neither the list nor the token."""
    pending(store, at("11:45"))
    a = fetch(url + "/", host="attacker.example")
    assert a.status == 403 and "Wang Fang" not in a.body and 'name="token"' not in a.body
    assert fetch(url + "/api/pending", host="attacker.example").status == 403
    assert fetch(url + "/", host="localhost").status == 200


def test_unknown_ids_and_paths_are_404(url: str, store: Store) -> None:
    other_kiosk = store.add_confirmation("kiosk-2", "S0001", at("11:46"), DAY, 0.4, 0.03, 5, ("frames_disagree",))
    mine = pending(store, at("11:45"))
    token = token_of(fetch(url + "/").body)
    for path in ("/confirm/999", f"/confirm/{other_kiosk}", "/confirm/abc", "/nope"):
        a = fetch(url + path, {"token": token, "action": "yes"})
        assert a.status == 404 and a.ctype.startswith("text/html"), path
        assert "This request does not exist on this kiosk." in a.body
    assert fetch(url + "/nope").status == 404
    c = store.get_confirmation(other_kiosk)
    assert c is not None and c.state == "pending"
    a = fetch(url + f"/confirm/{mine}", {"token": token, "action": "maybe"})
    assert a.status == 400 and "nothing was done" in a.body


# -- JSON ------------------------------------------------------------------------------------------------


def test_api_pending(url: str, store: Store) -> None:
    assert json.loads(fetch(url + "/api/pending").body) == []
    cid = pending(store, at("11:45"))
    a = fetch(url + "/api/pending")
    assert a.status == 200 and a.ctype == "application/json; charset=utf-8"
    assert json.loads(a.body) == [
        {
            "id": cid,
            "kiosk_id": "kiosk-1",
            "senior_id": "S0001",
            "name": "Wang Fang",
            "decided_at": "2026-11-30T11:45:00+08:00",
            "local_date": "2026-11-30",
            "time": "11:45",
            "reasons": ["ambiguous_margin"],
            "reason_text": ["Looks much like another enrolled senior"],
            "can_accept": True,
            "needs_staff_name": False,
            "snapshot": None,
        }
    ]
    live = pending(store, at("11:46"), reasons=NOT_LIVE)
    [_, row] = json.loads(fetch(url + "/api/pending").body)
    assert (row["id"], row["reasons"], row["needs_staff_name"]) == (live, list(NOT_LIVE), True)
    assert row["reason_text"] == [
        "Could not confirm a real face: check it is the person, not a photo or a phone",
        "The face looked flat, like a photo",
    ]


# -- the kiosk's snapshot of who stood there -------------------------------------------------------------


#: a frame and a face box in it (top, right, bottom, left)
View = tuple[np.ndarray, tuple[int, int, int, int]]


@pytest.fixture(scope="module")
def kiosk_view() -> View:
    """A real frame and the face the real detector finds in it (what edge.app keeps for a confirmation)."""
    img = hopper()
    return img, Detector(detect_width=640).detect(img)[0].box


def keep_snapshot(cfg: Config, cid: int, view: View, when: datetime) -> Path:
    """What the kiosk pipeline does for a pending confirmation (edge.app `_keep_evidence`)."""
    path = EvidenceKeeper(cfg.evidence_dir, cfg.evidence.retention_days).save(confirmation_name(cid), *view, when)
    assert path is not None and path.is_file()
    return path


def get(url: str, *, host: str | None = None, method: str = "GET") -> tuple[int, Message, bytes]:
    """One request answered with bytes (a JPEG is not text); HTTP errors are answers too."""
    req = urllib.request.Request(url, method=method)
    if host:
        req.add_header("Host", host)
    base = next((b for b in COOKIES if url.startswith(b + "/")), None)
    if base is not None:
        req.add_header("Cookie", COOKIES[base])
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.headers, r.read()
    except HTTPError as e:
        with e:
            return e.code, e.headers, e.read()


#: what every answer of the screen carries, the snapshot included
PROTECTIVE = (
    "Cache-Control", "X-Content-Type-Options", "X-Frame-Options", "Referrer-Policy", "Content-Security-Policy"
)


def test_a_pending_card_shows_the_kiosks_snapshot(url: str, cfg: Config, store: Store, kiosk_view: View) -> None:
    cid = pending(store, at("11:45"))
    path = keep_snapshot(cfg, cid, kiosk_view, at("11:45"))
    status, page_headers, page = get(url + "/")
    c = card(page.decode(), cid)
    assert f'<img class="snap" src="/snapshot/{cid}.jpg" width="160" alt="Who the camera saw at 11:45">' in c
    assert "No snapshot" not in c
    # the page may load its own images and nothing else new
    csp = page_headers["Content-Security-Policy"]
    assert "img-src 'self';" in csp and csp.startswith("default-src 'none';") and "*" not in csp

    status, headers, body = get(f"{url}/snapshot/{cid}.jpg")
    assert status == 200 and body == path.read_bytes() and body.startswith(b"\xff\xd8")
    assert headers["Content-Type"] == "image/jpeg" and headers["Content-Length"] == str(len(body))
    assert headers["Cache-Control"] == "no-store"
    assert {h: headers[h] for h in PROTECTIVE} == {h: page_headers[h] for h in PROTECTIVE}
    status, headers, body = get(f"{url}/snapshot/{cid}.jpg", method="HEAD")
    assert status == 200 and headers["Content-Type"] == "image/jpeg" and body == b""


def test_a_pending_card_without_a_snapshot_says_so(url: str, store: Store, zh_cfg: Config) -> None:
    cid = pending(store, at("11:45"))
    c = card(fetch(url + "/").body, cid)
    assert '<p class="nosnap">No snapshot</p>' in c and "<img" not in c
    assert get(f"{url}/snapshot/{cid}.jpg")[0] == 404
    with running(zh_cfg) as (_screen, base):
        assert '<p class="nosnap">没有照片</p>' in card(fetch(base + "/").body, cid)


def test_only_a_listed_confirmations_snapshot_is_served(url: str, cfg: Config, store: Store, kiosk_view: View) -> None:
    """Resolved, another kiosk's or an earlier day's: the file is still kept for audit, but not shown here."""
    confirmed, rejected = pending(store, at("11:45")), pending(store, at("11:46"))
    other_kiosk = store.add_confirmation("kiosk-2", "S0001", at("11:47"), DAY, 0.4, 0.03, 5, ("frames_disagree",))
    yesterday = at("11:45", DAY - timedelta(days=1))
    earlier = pending(store, yesterday)
    kept = {cid: keep_snapshot(cfg, cid, kiosk_view, at("11:47")) for cid in (confirmed, rejected, other_kiosk)}
    kept[earlier] = keep_snapshot(cfg, earlier, kiosk_view, yesterday)
    for cid in (confirmed, rejected):
        assert get(f"{url}/snapshot/{cid}.jpg")[0] == 200
    for cid in (other_kiosk, earlier):
        assert get(f"{url}/snapshot/{cid}.jpg")[0] == 404

    assert "please pay" in flash(press(url, confirmed, "yes")[1])
    assert flash(press(url, rejected, "no")[1]) == "Cancelled: Wang Fang was not checked in."
    for cid in (confirmed, rejected):
        status, headers, body = get(f"{url}/snapshot/{cid}.jpg")
        assert status == 404 and headers["Content-Type"].startswith("text/html") and not body.startswith(b"\xff\xd8")
    assert all(p.is_file() for p in kept.values())
    assert json.loads(fetch(url + "/api/pending").body) == []


def test_snapshot_ids_are_plain_digits(url: str, cfg: Config, store: Store, kiosk_view: View) -> None:
    cid = pending(store, at("11:45"))
    keep_snapshot(cfg, cid, kiosk_view, at("11:45"))
    (cfg.evidence_dir / "x.jpg").write_bytes(b"\xff\xd8 not for the screen")
    for path in ("/snapshot/..%2Fx.jpg", "/snapshot/../x.jpg", "/snapshot/abc.jpg", f"/snapshot/{cid}",
                 f"/snapshot/{cid}.png", f"/snapshot/{cid}.jpg/", f"/snapshot/-{cid}.jpg", f"/snapshot/%3{cid}.jpg",
                 f"/snapshot/confirmation-{cid}.jpg", "/snapshot/1234567890123.jpg", "/snapshot/.jpg"):
        status, _headers, body = get(url + path)
        assert status == 404 and b"\xff\xd8" not in body, path
    assert get(f"{url}/snapshot/{cid}.jpg")[0] == 200


def test_another_host_name_gets_no_snapshot(url: str, cfg: Config, store: Store, kiosk_view: View) -> None:
    cid = pending(store, at("11:45"))
    keep_snapshot(cfg, cid, kiosk_view, at("11:45"))
    status, headers, body = get(f"{url}/snapshot/{cid}.jpg", host="attacker.example")
    assert status == 403 and headers["Content-Type"].startswith("text/html") and b"\xff\xd8" not in body
    assert get(f"{url}/snapshot/{cid}.jpg", host="localhost")[0] == 200


def test_api_pending_names_the_snapshot(url: str, cfg: Config, store: Store, kiosk_view: View) -> None:
    with_snapshot, without = pending(store, at("11:45")), pending(store, at("11:46"))
    keep_snapshot(cfg, with_snapshot, kiosk_view, at("11:45"))
    rows = json.loads(fetch(url + "/api/pending").body)
    assert [(r["id"], r["snapshot"]) for r in rows] == [
        (with_snapshot, f"/snapshot/{with_snapshot}.jpg"), (without, None)
    ]
    assert get(url + rows[0]["snapshot"])[0] == 200


def test_no_snapshot_when_evidence_is_disabled(
    cfg: Config, store: Store, kiosk_view: View, monkeypatch: pytest.MonkeyPatch
) -> None:
    cid = pending(store, at("11:45"))
    keep_snapshot(cfg, cid, kiosk_view, at("11:45"))  # kept while it was enabled

    def no_lookup(*_args: object) -> None:
        raise AssertionError("a snapshot was looked up although [evidence] enabled = false")

    monkeypatch.setattr(EvidenceKeeper, "find", no_lookup)
    off = cfg.model_copy(update={"evidence": cfg.evidence.model_copy(update={"enabled": False})})
    with running(off) as (_screen, base):
        c = card(fetch(base + "/").body, cid)
        assert "<img" not in c and "nosnap" not in c  # the centre turned it off: no note on every card
        assert json.loads(fetch(base + "/api/pending").body)[0]["snapshot"] is None
        assert get(f"{base}/snapshot/{cid}.jpg")[0] == 404


# -- language --------------------------------------------------------------------------------------------


def test_the_page_speaks_the_centres_language(zh_cfg: Config, store: Store) -> None:
    cid = pending(store, at("11:45"))
    with running(zh_cfg) as (screen, base):
        page = fetch(base + "/").body
        assert '<html lang="zh">' in page and "请确认签到" in page
        assert "确认：是 Wang Fang 本人" in page and "不是本人" in page
        assert "11:45 签到" in page and "与另一位登记老人长得很像" in page
        assert json.loads(fetch(base + "/api/pending").body)[0]["reason_text"] == ["与另一位登记老人长得很像"]
        _, body = press(base, cid, "yes")
        assert flash(body) == "Wang Fang，您好！午餐签到成功，请付 ¥7.00（已补贴 ¥3.00）"
        assert "目前没有需要确认的签到。" in body
        again = fetch(f"{base}/confirm/{cid}", {"token": screen.token, "action": "no"})
        assert flash(again.body).startswith(f"这一条已由 {STAFF_ID} 在 ")
    c = store.get_confirmation(cid)
    assert c is not None and c.resolved_by == STAFF_ID


# -- the store is not there ------------------------------------------------------------------------------


def test_store_unavailable_is_a_503_page_that_says_what_to_do(cfg: Config) -> None:
    assert not cfg.store_path.exists()  # the daemon never ran with this config
    with running(cfg) as (screen, base):
        a = fetch(base + "/")
        assert a.status == 503 and a.ctype.startswith("text/html")
        assert "The check-in records cannot be reached" in a.body and "not found" in a.body
        assert "Check that the meal-edge service is running" in a.body and "Traceback" not in a.body
        a = fetch(base + "/api/pending")
        assert a.status == 503 and a.ctype.startswith("application/json")
        assert "not found" in json.loads(a.body)["detail"]
        assert fetch(f"{base}/confirm/1", {"token": screen.token, "action": "yes"}).status == 503
        assert not cfg.store_path.exists()  # not created by the screen

        with Store(cfg.store_path) as s:  # the daemon creates it: the screen recovers by itself
            s.add_senior(Senior("S0001", "Wang Fang", date(1950, 2, 28), "xuhui"))
            pending(s, at("11:45"))
        add_staff(cfg.store_path)
        assert login(base).status == 303
        assert "Wang Fang" in fetch(base + "/").body


# -- the command -----------------------------------------------------------------------------------------


def test_listen_address() -> None:
    assert parse_listen("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert parse_listen("[::1]:9000") == ("::1", 9000)
    for bad in ("8080", "localhost", "host:http", ":80", "h:70000"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_listen(bad)


def test_help_says_why_it_listens_on_loopback(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        edge_main(["staff-screen", "--help"])
    assert e.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "default 127.0.0.1:8080: this machine only, because a button on this page pays a subsidy" in out


def test_the_command_serves_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    with Store(load_config(path).store_path):
        pass
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge", "staff-screen", "--config", str(path), "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith(f"staff screen on http://127.0.0.1:{port}/"), proc.stderr.read() if proc.stderr else ""
        assert fetch(f"http://127.0.0.1:{port}/").status == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
