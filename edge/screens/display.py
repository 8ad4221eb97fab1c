"""The senior-facing kiosk screen, served by `meal-edge run` itself (docs/display.md).

Seniors must see what happened within about a second: `Display.publish` keeps the latest `Decision` (with a
sequence number), a small HTTP server in a daemon thread serves one full-screen page that polls
`GET /api/latest` every 300 ms and shows the result in huge type, a colour and a big symbol by kind, speaks
it once (the browser's speech synthesis) and returns to the "please look at the camera" prompt after
`[display] show_seconds`.

The words are the kiosk's own (`Decision.message`, from edge.meals.feedback); this module adds only what the screen
needs around them (the idle prompt, the amount-to-pay line). No photos, no senior ids, no reasons or subsidy
internals: the page and /api/latest carry the message, the name (meal, repeat, confirm only) and the amount
to pay.

Read-only (no POST routes; other methods get 501). Listens on loopback by default; while bound to loopback,
requests naming another host are refused (DNS rebinding, edge.screens.localweb); the page may not
be framed and loads nothing from anywhere else (Content-Security-Policy by hash). Standard library only.

The pipeline's thread calls `publish`: it takes one short lock, never does I/O and never raises. A display
that cannot listen (port in use) is logged and check-in goes on without it.
"""

from __future__ import annotations

import errno
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import tzinfo
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlsplit

from markupsafe import Markup

from edge.config import Config, DisplayConfig, MealWindow
from edge.meals import feedback
from edge.meals.confirm import LIVENESS_NOT_CONFIRMED
from edge.meals.feedback import Decision, Language
from edge.meals.speech import RATE, hold_seconds
from edge.screens import localweb
from edge.screens.localweb import LocalServer, csp_hash, is_loopback, static_text

log = logging.getLogger(__name__)

#: how often the page asks for the latest decision (ms): feedback is on screen well within a second
POLL_MS = 300
#: the page says "please see staff" when it has not reached the daemon for this long (ms)
LOST_MS = 5000
#: the name is shown only where it helps the senior; never with a refusal (a suspended or deceased senior's
#: name is not for the queue to read) nor with "not recognised"
NAME_SHOWN = frozenset({"meal", "repeat", "confirm"})
#: a hint ("come closer", "face the screen") is shown once the person has needed it this long (s): not for a
#: face that only passes by
HINT_AFTER_S = 1.0
#: the pipeline's hints (edge.app.Pipeline._hint): a later one may replace an earlier one on screen
HINTS = ("closer", "turn", "one")
#: how long a hint stays up, and how often at most it is said again while it is still needed (s)
HINT_HOLD_S, HINT_SAY_EVERY_S = 4.0, 15.0
#: what the screen shows while the camera is away: until it is back
FAULT_HOLD_S = 24 * 3600.0

# Words of the screen itself; everything about a decision is Decision.message (edge.meals.feedback).
_T: dict[str, dict[Language, str]] = {
    "title": {"zh": "助餐签到", "en": "Meal check-in"},
    "idle": {"zh": "请看摄像头", "en": "Please look at the camera"},
    "pay": {"zh": "请付 ¥{yuan}", "en": "Please pay ¥{yuan}"},
    "see_staff": {"zh": "请找工作人员", "en": "Please see staff"},
    "hours": {"zh": "供餐时间　{hours}", "en": "Meal times: {hours}"},
}


def hours_text(meals: list[MealWindow], lang: Language) -> str:
    """The serving hours for the idle screen: 午餐 10:30–13:30　晚餐 16:30–18:30."""
    sep = "　" if lang == "zh" else ", "
    spans = sep.join(
        f"{feedback.meal_name(m.name, lang)} {m.start}–{m.end}" for m in sorted(meals, key=lambda m: m.start_time)
    )
    return _T["hours"][lang].format(hours=spans) if spans else ""
_VOICE: dict[Language, str] = {"zh": "zh-CN", "en": "en-US"}


@dataclass(frozen=True)
class Shown:
    """What the screen shows: only what the senior may see (see the module doc)."""

    seq: int
    kind: str
    message: str
    name: str | None
    payable_fen: int
    decided_at: str | None
    #: time.monotonic() when it was published (how long it has been on screen)
    published: float
    #: what the voice says (amounts and times in words)
    speech: str = ""
    #: how long it stays on screen: show_seconds, longer for a long sentence, until staff answer a confirmation
    hold_s: float = 0.0
    #: False: shown without being said (a hint repeated within HINT_SAY_EVERY_S)
    speak: bool = True


class Display:
    """The latest decision, and the HTTP server that shows it."""

    def __init__(
        self,
        settings: DisplayConfig,
        *,
        lang: Language = "zh",
        tz: tzinfo | None = None,
        clock: Callable[[], float] = time.monotonic,
        centre_name: str = "",
        hours: str = "",
    ) -> None:
        self.settings = settings
        self.lang: Language = lang
        self.tz = tz
        self.clock = clock
        self.centre_name = centre_name
        self.hours = hours
        self._lock = threading.Lock()
        self._shown = Shown(0, "idle", _T["idle"][lang], None, 0, None, clock())
        #: the hint the pipeline last reported, and since when; when a hint was last said
        self._hint: tuple[str | None, float] = (None, clock())
        self._hint_said = -HINT_SAY_EVERY_S
        self._camera_ok = True
        self._server: DisplayServer | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def from_config(cls, cfg: Config) -> Display:
        lang = cfg.centre.language
        return cls(cfg.display, lang=lang, tz=cfg.centre.tz, centre_name=cfg.centre.name,
                   hours=hours_text(cfg.rules.meals, lang))

    # -- the pipeline's side --------------------------------------------------------------------------

    def publish(self, d: Decision) -> None:
        """Show `d` (from the pipeline's thread). Never blocks on I/O and never raises into the pipeline."""
        try:
            at = d.decided_at
            if self.tz is not None:
                at = at.replace(tzinfo=self.tz) if at.tzinfo is None else at.astimezone(self.tz)
            payable = d.payable_fen if d.kind == "meal" else 0
            message = d.message or _T["see_staff"][self.lang]  # a reason without words must not blank the screen
            speech = d.speech or message
            name = d.name if d.kind in NAME_SHOWN else None
            if d.kind == "confirm" and LIVENESS_NOT_CONFIRMED in d.reasons:
                name = None  # maybe a photo held up of someone else: the queue must not learn whose
            if d.kind == "confirm" and d.confirmation_id is not None:
                # "please wait" stays until staff answer (a new decision), or the wait ends
                hold = self.settings.confirm_wait_seconds
            else:
                hold = hold_seconds(speech, self.lang, self.settings.show_seconds)
            with self._lock:
                self._shown = Shown(
                    self._shown.seq + 1, d.kind, message, name, payable, at.isoformat(timespec="seconds"), self.clock(),
                    speech, hold,
                )
        except Exception:
            log.exception("kiosk display: could not show a %s decision; check-in goes on",
                          getattr(d, "kind", "?"))

    def _say(self, kind: str, hold: float, speak: bool = True) -> None:
        """Show one of the kiosk's own states (a hint, the camera fault, back to the prompt); under the lock."""
        w = feedback.words(kind, lang=self.lang) if kind != "idle" else feedback.Words(_T["idle"][self.lang], "")
        self._shown = Shown(self._shown.seq + 1, kind, w.screen, None, 0, None, self.clock(), w.speech, hold, speak)

    def hint(self, kind: str | None) -> None:
        """What the pipeline saw in this frame: "closer", "turn", "one" or None (from its thread; never raises). A hint
        shows once it has been needed for HINT_AFTER_S, only over the prompt or an earlier hint (never over a
        result the senior is reading), and is said at most every HINT_SAY_EVERY_S."""
        now = self.clock()
        with self._lock:
            if kind != self._hint[0]:
                self._hint = (kind, now)
            s = self._shown
            free = s.kind in ("idle", *HINTS) or now - s.published >= s.hold_s
            if kind is None or not free or not self._camera_ok or now - self._hint[1] < HINT_AFTER_S:
                return
            if s.kind == kind and now - s.published < HINT_HOLD_S - 0.5:
                return  # still on screen
            speak = now - self._hint_said >= HINT_SAY_EVERY_S or s.kind not in (kind, "idle")
            if speak:
                self._hint_said = now
            self._say(kind, HINT_HOLD_S, speak)

    def camera(self, ok: bool) -> None:
        """The camera delivers frames (True) or has been silent too long (False): the screen says the kiosk is
        out of order until it is back, then shows the prompt."""
        with self._lock:
            if ok == self._camera_ok:
                return
            self._camera_ok = ok
            if not ok:
                log.error("kiosk display: the camera delivers no frames; the screen says the kiosk is out of order")
            self._say("idle" if ok else "fault", 0.0 if ok else FAULT_HOLD_S)

    def current(self) -> Shown:
        with self._lock:
            return self._shown

    def latest(self) -> dict[str, Any]:
        """GET /api/latest (fields: docs/display.md)."""
        s = self.current()
        return {
            "seq": s.seq,
            "kind": s.kind,
            "message": s.message,
            "name": s.name,
            "payable_fen": s.payable_fen,
            "decided_at": s.decided_at,
            "show_seconds": self.settings.show_seconds,
            "speech": s.speech,
            "hold_s": s.hold_s,
            "speak": s.speak,
            # seconds since it was published, by the daemon's clock: a page (re)loaded later than
            # show_seconds after a decision shows the prompt, not a stale result
            "age_s": round(max(0.0, self.clock() - s.published), 3) if s.seq else None,
        }

    # -- the server ----------------------------------------------------------------------------------

    def start(self) -> bool:
        """Serve in a daemon thread. False (logged as an ERROR) when the address cannot be used: check-in
        goes on without the screen, and publish() keeps working."""
        if self._server is not None:
            return True
        host, port = self.settings.address
        try:
            server = DisplayServer((host, port), self)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                fix = (
                    f"another program holds port {port} (another meal-edge, or the staff screen?): stop it, or set "
                    "[display] listen to a free port"
                )
            else:
                fix = "set [display] listen to an address of this machine and a free port"
            log.error(
                "kiosk display: cannot listen on %s:%d (%s); check-in goes on WITHOUT the senior screen. "
                "To fix: %s (or [display] enabled = false), then restart meal-edge",
                host, port, e.strerror or e, fix,
            )
            return False
        if not is_loopback(host):
            log.warning(
                "kiosk display listens on %s: anyone who can reach it sees the names and amounts of check-ins", host
            )
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="kiosk-display", daemon=True
        )
        thread.start()
        self._server, self._thread = server, thread
        log.info("kiosk display on %s (open it with: chromium --kiosk %s)", server.url, server.url)
        return True

    @property
    def url(self) -> str | None:
        return None if self._server is None else self._server.url

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=2)

    # -- the page ------------------------------------------------------------------------------------

    def page(self) -> str:
        lang = self.lang
        s = self.settings
        return localweb.render(
            "display/page.html",
            voice=_VOICE[lang],
            title=_T["title"][lang],
            css=Markup(CSS),
            js=Markup(JS),
            show=f"{s.show_seconds:g}",
            speak="1" if s.speak else "0",
            pay=_T["pay"][lang],
            idle=_T["idle"][lang],
            offline=_T["see_staff"][lang],
            poll=POLL_MS,
            lost=LOST_MS,
            rate=f"{RATE:g}",
            centre=self.centre_name,
            hours=self.hours,
        )


# -- HTML: edge/screens/templates/display/page.html with edge/screens/static/display.{css,js} -------------

CSS = static_text("display.css")
JS = static_text("display.js")

# Only our own inline style and script (by hash); the script may fetch only from us; nothing else at all.
CSP = (
    f"default-src 'none'; style-src {csp_hash(CSS)}; script-src {csp_hash(JS)}; connect-src 'self'; "
    "form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)


# -- HTTP -------------------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    server: DisplayServer
    server_version = "meal-edge-display"
    # a slow or stuck client must not hold a thread for long
    timeout = 10

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # three polls a second: not worth a log line each

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("kiosk display: %s %s", self.address_string(), format % args)

    def _send(self, status: HTTPStatus, body: str, ctype: str) -> None:
        localweb.send(self, status, body, ctype, CSP)

    def do_GET(self) -> None:
        if not self.server.host_allowed(self.headers.get("Host", "")):
            self._send(HTTPStatus.FORBIDDEN, "open this page on this machine, as http://127.0.0.1\n", "text/plain")
            return
        path = urlsplit(self.path).path
        try:
            if path == "/":
                self._send(HTTPStatus.OK, self.server.display.page(), "text/html")
            elif path == "/api/latest":
                body = json.dumps(self.server.display.latest(), ensure_ascii=False)
                self._send(HTTPStatus.OK, body, "application/json")
            else:
                self._send(HTTPStatus.NOT_FOUND, "not found\n", "text/plain")
        except Exception:
            log.exception("kiosk display: GET %s failed", self.path)
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error\n", "text/plain")

    do_HEAD = do_GET


class DisplayServer(LocalServer):
    # read-only and quick: nothing to finish at shutdown
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], display: Display) -> None:
        self.display = display
        super().__init__(address, _Handler)

