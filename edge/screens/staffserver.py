"""`meal-edge staff-screen`: the staff screen over HTTP (edge/screens/staffscreen.py is the screen without HTTP,
edge/screens/staffpages.py its pages): routes, the login (edge/screens/stafflogin.py), the token and Host
checks, and the command that serves it. Nothing but the login page is shown before a login."""

from __future__ import annotations

import argparse
import html
import json
import logging
import re
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from types import FrameType
from typing import Any, Protocol
from urllib.parse import SplitResult, parse_qs, urlencode, urlsplit

from edge import config
from edge.config import need_config
from edge.screens import checkin_page, localweb, stafflogin, staffpages, today_page, void_page
from edge.screens.localweb import LocalServer, is_loopback
from edge.screens.staffscreen import DEFAULT_LISTEN, EXIT_FAIL, EXIT_OK, MAX_BODY, StaffScreen
from edge.screens.staffwords import phrase
from edge.security.staffauth import Session
from edge.store import StoreError
from edge.store.kioskstate import read_state, state_path

log = logging.getLogger(__name__)

_CONFIRM_PATH = re.compile(r"/confirm/(\d{1,12})")
# ASCII digits only: nothing else (no "..", no "%2F", no other script's digits) names a file
_SNAPSHOT_PATH = re.compile(r"/snapshot/([0-9]{1,12})\.jpg")


class ExtraPage(Protocol):
    """A page a higher layer adds (the enrolment page, enroll/enrol_page.py): it answers every path under its
    prefix, behind the same Host check and error handling; it checks the login and form token itself."""

    prefix: str

    def handle(self, handler: Any, method: str, url: SplitResult) -> None: ...

    def close(self) -> None: ...


class _Handler(BaseHTTPRequestHandler):
    server: StaffScreenServer
    server_version = "meal-edge-staff-screen"
    # a slow or stuck client must not hold a thread (or the shutdown) for long
    timeout = 10

    # -- plumbing ---------------------------------------------------------------------------------------

    @property
    def screen(self) -> StaffScreen:
        return self.server.screen

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def _send(self, status: HTTPStatus, body: str, ctype: str, headers: dict[str, str] | None = None) -> None:
        localweb.send(self, status, body, ctype, staffpages.CSP, headers)

    def _error(self, status: HTTPStatus, key: str, detail: str | None = None, *, as_json: bool = False) -> None:
        lang = self.screen.lang
        text = phrase(key, lang)
        if as_json:
            self._send(status, json.dumps({"error": text, "detail": detail}, ensure_ascii=False), "application/json")
        else:
            self._send(status, staffpages.render_error(lang, status, text, detail), "text/html")

    def _host_ok(self) -> bool:
        return self.server.host_allowed(self.headers.get("Host", ""))

    def _guarded(self, as_json: bool, work: Callable[[], None]) -> None:
        """Run one request; whatever goes wrong, the screen gets a page that says what to do."""
        if not self._host_ok():
            host = self.headers.get("Host")
            self._error(HTTPStatus.FORBIDDEN, "e_host", f"unexpected Host {host!r}", as_json=as_json)
            return
        try:
            work()
        except localweb.ABORTED as e:
            # the browser went away mid-answer (a reload, a closed tab): nothing to answer, nothing to trace
            self.close_connection = True
            self.server.note_abort(e)
        except StoreError as e:
            log.error("staff screen: store unavailable: %s", e)
            self._error(HTTPStatus.SERVICE_UNAVAILABLE, "e503_do", str(e), as_json=as_json)
        except Exception:
            log.exception("staff screen: %s %s failed", self.command, self.path)
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, "e500", as_json=as_json)

    def _cookie_token(self) -> str | None:
        return stafflogin.token_from(self.headers.get("Cookie"))

    def _session(self, *, touch: bool) -> Session | None:
        return self.screen.session(self._cookie_token(), touch=touch)

    def _login_page(self, status: HTTPStatus, message: str | None = None, staff_id: str = "") -> None:
        self._send(status, staffpages.render_login(self.screen, message, staff_id), "text/html")

    def _form(self) -> dict[str, list[str]] | None:
        """The posted form, if it is small and carries this process's form token; else answered here."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self.close_connection = True  # the unread body must not be parsed as the next request
            self._error(HTTPStatus.BAD_REQUEST, "e400", "missing or oversized form")
            return None
        form = parse_qs(self.rfile.read(length).decode("utf-8", "replace"))
        if not self.screen.token_ok(form.get("token", [""])[0]):
            log.warning("staff screen: POST %s without a valid token refused", self.path)
            self._error(HTTPStatus.FORBIDDEN, "e403")
            return None
        return form

    # -- routes -----------------------------------------------------------------------------------------

    def _extra(self, method: str, url: SplitResult) -> bool:
        for page in self.server.pages:
            if url.path == page.prefix or url.path.startswith(page.prefix + "/"):
                self._guarded(False, lambda p=page: p.handle(self, method, url))  # type: ignore[misc]
                return True
        return False

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if self._extra("GET", url):
            return
        snap = _SNAPSHOT_PATH.fullmatch(url.path)
        if url.path == "/api/pending":
            self._guarded(True, self._api_pending)
        elif snap is not None:
            self._guarded(False, lambda: self._snapshot(int(snap.group(1))))
        elif url.path == "/":
            key = parse_qs(url.query).get("flash", [""])[0]
            self._guarded(False, lambda: self._list(key))
        elif url.path in ("/today", "/today.csv"):
            flash_key = parse_qs(url.query).get("flash", [""])[0]
            self._guarded(False, lambda: self._today(url.path.endswith(".csv"), flash_key))
        elif (void_id := void_page.handles(url.path)) is not None:
            flash_key = parse_qs(url.query).get("flash", [""])[0]
            self._guarded(False, lambda: void_page.get(self, void_id, flash_key))
        elif url.path == "/checkin":
            q = parse_qs(url.query)
            self._guarded(False, lambda: self._checkin_page(q.get("q", [""])[0], q.get("flash", [""])[0]))
        else:
            self._guarded(False, lambda: self._error(HTTPStatus.NOT_FOUND, "e404"))

    do_HEAD = do_GET

    def do_POST(self) -> None:
        if self._extra("POST", urlsplit(self.path)):
            return
        path = urlsplit(self.path).path
        m = _CONFIRM_PATH.fullmatch(path)
        if path == "/login":
            self._guarded(False, self._post_login)
        elif path == "/logout":
            self._guarded(False, self._post_logout)
        elif path == "/checkin":
            self._guarded(False, self._post_checkin)
        elif (void_id := void_page.handles(path)) is not None:
            self._guarded(False, lambda: void_page.post(self, void_id))
        elif m is not None:
            self._guarded(False, lambda: self._post_confirm(int(m.group(1))))
        else:
            self._guarded(False, lambda: self._error(HTTPStatus.NOT_FOUND, "e404"))

    def _list(self, flash_key: str) -> None:
        session = self._session(touch=False)
        if session is None:  # nothing, not even names, before a login
            self._login_page(HTTPStatus.OK)
            return
        items, older = self.screen.pending()
        flash = self.screen.get_flash(flash_key) if flash_key else None
        self._send(HTTPStatus.OK, staffpages.render_list(self.screen, items, older, flash, session), "text/html")

    def _api_pending(self) -> None:
        if self._session(touch=False) is None:
            self._error(HTTPStatus.UNAUTHORIZED, "e401", as_json=True)
            return
        items, _older = self.screen.pending()
        body = json.dumps([it.to_json(self.screen.lang) for it in items], ensure_ascii=False, indent=1)
        self._send(HTTPStatus.OK, body, "application/json")

    def _snapshot(self, confirmation_id: int) -> None:
        data = self.screen.snapshot(confirmation_id) if self._session(touch=False) is not None else None
        if data is None:
            self._error(HTTPStatus.NOT_FOUND, "e404")
            return
        localweb.send(self, HTTPStatus.OK, data, "image/jpeg", staffpages.CSP)

    def _post_login(self) -> None:
        form = self._form()
        if form is None:
            return
        staff_id = form.get("staff_id", [""])[0][: stafflogin.MAX_ID]
        got = self.screen.login(staff_id, form.get("pin", [""])[0][: stafflogin.MAX_PIN])
        if isinstance(got, str):
            self._login_page(HTTPStatus.UNAUTHORIZED, got, staff_id)
            return
        token, _session = got
        max_age = int(self.screen.auth_policy.max_age.total_seconds())
        cookie = stafflogin.set_cookie(token, max_age)
        self._send(HTTPStatus.SEE_OTHER, "", "text/plain", {"Location": "/", "Set-Cookie": cookie})

    def _post_logout(self) -> None:
        if self._form() is None:
            return
        self.screen.logout(self._cookie_token())
        self._send(HTTPStatus.SEE_OTHER, "", "text/plain", {"Location": "/", "Set-Cookie": stafflogin.clear_cookie()})

    def _today(self, as_csv: bool, flash_key: str = "") -> None:
        session = self._session(touch=False)
        if session is None:  # the day's meals name seniors: nothing before a login
            self._login_page(HTTPStatus.UNAUTHORIZED)
            return
        screen = self.screen
        kiosk = read_state(state_path(screen.cfg.store_path))
        t = today_page.summary(screen.store(), screen.today(), screen.kiosk_id, kiosk)
        if as_csv:
            name = f"meals-{t.day.isoformat()}.csv"
            self._send(HTTPStatus.OK, today_page.csv_text(t, screen.tz), "text/csv",
                       {"Content-Disposition": f'attachment; filename="{name}"'})
            return
        flash = screen.get_flash(flash_key) if flash_key else None
        note = f'<div class="flash {flash.tone}" role="status">{html.escape(flash.text)}</div>' if flash else ""
        # the void links (edge/screens/void_page.py) only for a manager; the POST checks the role again
        body = today_page.render(screen.lang, t, screen.tz, can_void=session.is_manager, flash=note)
        page = staffpages.render_body(screen.lang, today_page.word("open", screen.lang), body, refresh=30)
        self._send(HTTPStatus.OK, page, "text/html")

    def _checkin_page(self, query: str, flash_key: str) -> None:
        if self._session(touch=False) is None:  # the roster search names seniors: nothing before a login
            self._login_page(HTTPStatus.UNAUTHORIZED)
            return
        lang = self.screen.lang
        found, more = self.screen.find(query)
        flash = self.screen.get_flash(flash_key) if flash_key else None
        body = checkin_page.render(lang, self.screen.token, query, found, more)
        if flash is not None:
            body = f'<div class="flash {flash.tone}" role="status">{html.escape(flash.text)}</div>' + body
        self._send(HTTPStatus.OK, staffpages.render_body(lang, checkin_page.word("title", lang), body), "text/html")

    def _post_checkin(self) -> None:
        form = self._form()
        if form is None:
            return
        session = self._session(touch=True)
        if session is None:  # logged out or expired: the form token alone records no meal
            self._login_page(HTTPStatus.UNAUTHORIZED, phrase("login_expired", self.screen.lang))
            return
        # who checked the senior in is the logged-in staff member, never a typed name
        flash = self.screen.checkin(form.get("senior", [""])[0], session)
        key = self.screen.keep_flash(flash)
        q = urlencode({"q": form.get("q", [""])[0], "flash": key})
        self._send(HTTPStatus.SEE_OTHER, "", "text/plain", {"Location": f"/checkin?{q}"})

    def _post_confirm(self, confirmation_id: int) -> None:
        form = self._form()
        if form is None:
            return
        session = self._session(touch=True)
        if session is None:  # logged out or expired: the form token alone pays nothing
            self._login_page(HTTPStatus.UNAUTHORIZED, phrase("login_expired", self.screen.lang))
            return
        action = form.get("action", [""])[0]
        if action not in ("yes", "no"):
            self._error(HTTPStatus.BAD_REQUEST, "e400", "action must be yes or no")
            return
        pin = form.get("pin", [""])[0][: stafflogin.MAX_PIN]
        out = self.screen.decide(confirmation_id, action == "yes", session, pin)
        if out.flash is None:
            self._error(out.status, "e404")
            return
        key = self.screen.keep_flash(out.flash)
        self._send(HTTPStatus.SEE_OTHER, "", "text/plain", {"Location": f"/?flash={key}"})


class StaffScreenServer(LocalServer):
    # Requests are short; a shutdown waits for one that is paying to finish rather than cutting it off.
    daemon_threads = False
    block_on_close = True

    def __init__(self, address: tuple[str, int], screen: StaffScreen, pages: Sequence[ExtraPage] = ()) -> None:
        self.screen = screen
        self.pages = tuple(pages)
        super().__init__(address, _Handler)


def parse_listen(text: str) -> tuple[str, int]:
    """HOST:PORT, [IPv6]:PORT."""
    return config.parse_listen(text, DEFAULT_LISTEN)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "staff-screen",
        help="serve the touch-screen page where staff confirm or reject uncertain check-ins",
        description="Serve a local web page for a touch screen next to the kiosk: today's pending "
        "confirmations with the candidate's name, and buttons to confirm (the meal is recorded as "
        "`meal-edge confirm ID --yes` would) or reject. Stop with Ctrl-C or SIGTERM.",
    )
    # also accepted after the sub-command; SUPPRESS keeps a --config given before it
    p.add_argument("--config", "-c", metavar="FILE", default=argparse.SUPPRESS, help="the daemon's TOML config")
    p.add_argument(
        "--listen",
        metavar="HOST:PORT",
        type=parse_listen,
        default=parse_listen(DEFAULT_LISTEN),
        help=f"where to serve (default {DEFAULT_LISTEN}: this machine only, because a button on this page "
        "pays a subsidy; listen on another address only on a trusted, closed network)",
    )
    p.set_defaults(func=run)


def serve(screen: StaffScreen, host: str, port: int, pages: Sequence[ExtraPage] = ()) -> StaffScreenServer:
    """Bind (port 0: any free port); the caller runs serve_forever() and later shutdown()."""
    return StaffScreenServer((host, port), screen, pages)


def run(args: argparse.Namespace, pages: Callable[[config.Config], Sequence[ExtraPage]] | None = None) -> int:
    """`pages`: the extra pages to serve, made from the config (edge/cli/staff_screen.py adds enrolment)."""
    cfg = need_config(args.config)
    host, port = args.listen
    screen = StaffScreen(cfg)
    extra = pages(cfg) if pages is not None else ()
    try:
        screen.store()
    except StoreError as e:
        log.error("%s; the screen shows this until it is fixed", e)
    try:
        server = serve(screen, host, port, extra)
    except OSError as e:
        print(f"error: cannot listen on {host}:{port}: {e}", file=sys.stderr)
        screen.close()
        return EXIT_FAIL
    if not is_loopback(host):
        log.warning("staff screen listens on %s: anyone who can reach it and load the page can confirm meals", host)

    stop = threading.Event()

    def _stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping the staff screen", signum)
        stop.set()

    old = {s: signal.signal(s, _stop) for s in (signal.SIGTERM, signal.SIGINT)}
    # served from a thread: shutdown() must not be called from the thread running serve_forever()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="staff-screen")
    thread.start()
    print(f"staff screen on {server.url} (centre {cfg.centre.id}, kiosk {cfg.centre.kiosk_id})", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
        for page in extra:
            page.close()
        screen.close()
        for s, h in old.items():
            signal.signal(s, h)
    return EXIT_OK
