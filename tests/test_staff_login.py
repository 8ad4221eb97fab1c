"""The staff screen's login (issue 12): nothing is shown or paid without a staff account's PIN; the session
cookie is HttpOnly and SameSite=Strict, expires when idle, and ends at logout or when the account goes; wrong
PINs lock the account. A real server on loopback, a real store, real HTTP."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

import pytest
import test_confirm as confirm_tests
from test_confirm import at, pending
from test_staff_screen import COOKIES, PIN, STAFF_ID, add_staff, fetch, flash, login, token_of

from edge.config import Config
from edge.screens.staffscreen import StaffScreen
from edge.screens.staffserver import serve
from edge.security.staffauth import AuthPolicy
from edge.store import Store

cfg = confirm_tests.cfg
store = confirm_tests.store


class Clock:
    def __init__(self) -> None:
        self.now = at("11:50")

    def __call__(self) -> datetime:
        return self.now


@contextmanager
def screen_at(config: Config, clock: Clock) -> Iterator[tuple[StaffScreen, str]]:
    policy = AuthPolicy(max_failures=3, lockout=timedelta(minutes=15), idle=timedelta(minutes=5))
    screen = StaffScreen(config, clock=clock, auth_policy=policy)
    server = serve(screen, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    base = server.url.rstrip("/")
    add_staff(config.store_path)
    try:
        yield screen, base
    finally:
        COOKIES.pop(base, None)
        server.shutdown()
        server.server_close()
        thread.join(5)
        screen.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def base(cfg: Config, store: Store, clock: Clock) -> Iterator[str]:
    with screen_at(cfg, clock) as (_screen, url):
        yield url


def test_nothing_is_shown_or_paid_without_a_login(base: str, store: Store) -> None:
    cid = pending(store, at("11:45"))
    page = fetch(base + "/", anon=True)
    assert page.status == 200 and "Staff login" in page.body and 'action="/login"' in page.body
    assert "Wang Fang" not in page.body and "S0001" not in page.body and 'action="/confirm' not in page.body
    api = fetch(base + "/api/pending", anon=True)
    assert api.status == 401 and "Wang Fang" not in api.body
    # the form token is on the login page too: on its own it no longer pays anything
    token = token_of(page.body)
    a = fetch(f"{base}/confirm/{cid}", {"token": token, "action": "yes", "by": "Li Na"}, anon=True)
    assert a.status == 401 and "log in again" in a.body
    c = store.get_confirmation(cid)
    assert c is not None and c.state == "pending" and store.list_events() == []
    # nor does a made-up cookie
    a = fetch(f"{base}/confirm/{cid}", {"token": token, "action": "yes"}, cookie="meal_edge_staff=forged")
    assert a.status == 401 and store.list_events() == []


def test_a_login_sets_a_strict_http_only_session_cookie(base: str, store: Store) -> None:
    pending(store, at("11:45"))
    a = login(base)
    assert a.status == 303 and a.location == "/" and a.cookie is not None
    name_value, *flags = [f.strip() for f in a.cookie.split(";")]
    assert name_value.startswith("meal_edge_staff=") and len(name_value) > 50
    assert {"HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"} <= set(flags)
    page = fetch(base + "/").body
    assert "Logged in: Li Na (w01)" in page and "Wang Fang" in page
    lines = [(x.staff_id, x.action) for x in store.audit_log()]
    assert lines == [(STAFF_ID, "login")]
    assert PIN not in str([x.to_json() for x in store.audit_log()])


def test_wrong_pins_are_refused_and_lock_the_account(base: str, store: Store, clock: Clock) -> None:
    for pin in ("111111", "222222"):
        a = login(base, STAFF_ID, pin)
        assert a.status == 401 and "Wrong staff id or PIN." in a.body and a.cookie is None
    assert login(base, "nobody", PIN).status == 401  # an unknown id gets the same answer
    a = login(base, STAFF_ID, "333333")  # the third wrong one in a row
    assert a.status == 401 and "locked" in a.body
    a = login(base, STAFF_ID, PIN)  # locked: even the right PIN
    assert a.status == 401 and "locked" in a.body and a.cookie is None
    assert [(x.staff_id, x.action, x.details.get("why")) for x in store.audit_log()] == [
        (STAFF_ID, "login_failed", "bad"),
        (STAFF_ID, "login_failed", "bad"),
        ("nobody", "login_failed", "bad"),
        (STAFF_ID, "login_failed", "locked"),
        (STAFF_ID, "login_failed", "locked"),
    ]
    clock.now += timedelta(minutes=16)
    assert login(base).status == 303


def test_an_idle_session_expires_and_pays_nothing(base: str, store: Store, clock: Clock) -> None:
    cid = pending(store, at("11:45"))
    assert login(base).status == 303
    token = token_of(fetch(base + "/").body)
    # the list reloading itself every few seconds does not keep the session alive
    for _ in range(6):
        clock.now += timedelta(minutes=1)
        fetch(base + "/")
    page = fetch(base + "/")
    assert "Staff login" in page.body and "Wang Fang" not in page.body
    a = fetch(f"{base}/confirm/{cid}", {"token": token, "action": "yes"})
    assert a.status == 401 and "nothing was done" in a.body
    assert store.list_events() == []
    # a tap does keep it alive
    assert login(base).status == 303
    other = pending(store, at("11:46"))
    clock.now += timedelta(minutes=4)
    assert flash(fetch(f"{base}/confirm/{other}", {"token": token, "action": "no"}).body).startswith("Cancelled")
    clock.now += timedelta(minutes=4)
    assert "please pay" in flash(fetch(f"{base}/confirm/{cid}", {"token": token, "action": "yes"}).body)


def test_logout_and_removal_end_the_session(base: str, store: Store) -> None:
    cid = pending(store, at("11:45"))
    assert login(base).status == 303
    cookie = COOKIES[base]
    token = token_of(fetch(base + "/").body)
    a = fetch(base + "/logout", {"token": token}, follow=False)
    assert a.status == 303 and a.cookie is not None and "Max-Age=0" in a.cookie
    assert fetch(f"{base}/confirm/{cid}", {"token": token, "action": "yes"}, cookie=cookie).status == 401
    assert [x.action for x in store.audit_log()] == ["login", "logout"]
    # removed while logged in: the next request is refused
    assert login(base).status == 303
    from edge.security.staffauth import StaffAuth

    assert StaffAuth(store).remove(STAFF_ID)
    assert fetch(f"{base}/confirm/{cid}", {"token": token, "action": "yes"}).status == 401
    assert store.list_events() == []
