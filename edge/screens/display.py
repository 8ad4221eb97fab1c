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
import html
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

from edge.config import Config, DisplayConfig
from edge.meals.feedback import Decision, Language
from edge.screens import localweb
from edge.screens.localweb import LocalServer, csp_hash, is_loopback

log = logging.getLogger(__name__)

#: how often the page asks for the latest decision (ms): feedback is on screen well within a second
POLL_MS = 300
#: the page says "please see staff" when it has not reached the daemon for this long (ms)
LOST_MS = 5000
#: the name is shown only where it helps the senior; never with a refusal (a suspended or deceased senior's
#: name is not for the queue to read) nor with "not recognised"
NAME_SHOWN = frozenset({"meal", "repeat", "confirm"})

# Words of the screen itself; everything about a decision is Decision.message (edge.meals.feedback).
_T: dict[str, dict[Language, str]] = {
    "title": {"zh": "助餐签到", "en": "Meal check-in"},
    "idle": {"zh": "请看摄像头", "en": "Please look at the camera"},
    "pay": {"zh": "请付 ¥{yuan}", "en": "Please pay ¥{yuan}"},
    "see_staff": {"zh": "请找工作人员", "en": "Please see staff"},
}
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


class Display:
    """The latest decision, and the HTTP server that shows it."""

    def __init__(
        self,
        settings: DisplayConfig,
        *,
        lang: Language = "zh",
        tz: tzinfo | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.lang: Language = lang
        self.tz = tz
        self.clock = clock
        self._lock = threading.Lock()
        self._shown = Shown(0, "idle", _T["idle"][lang], None, 0, None, clock())
        self._server: DisplayServer | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def from_config(cls, cfg: Config) -> Display:
        return cls(cfg.display, lang=cfg.centre.language, tz=cfg.centre.tz)

    # -- the pipeline's side --------------------------------------------------------------------------

    def publish(self, d: Decision) -> None:
        """Show `d` (from the pipeline's thread). Never blocks on I/O and never raises into the pipeline."""
        try:
            at = d.decided_at
            if self.tz is not None:
                at = at.replace(tzinfo=self.tz) if at.tzinfo is None else at.astimezone(self.tz)
            payable = d.payable_fen if d.kind == "meal" else 0
            message = d.message or _T["see_staff"][self.lang]  # a reason without words must not blank the screen
            name = d.name if d.kind in NAME_SHOWN else None
            with self._lock:
                self._shown = Shown(
                    self._shown.seq + 1, d.kind, message, name, payable, at.isoformat(timespec="seconds"), self.clock()
                )
        except Exception:
            log.exception("kiosk display: could not show a %s decision; check-in goes on",
                          getattr(d, "kind", "?"))

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
        e = html.escape
        s = self.settings
        attrs = {
            "data-show": f"{s.show_seconds:g}",
            "data-speak": "1" if s.speak else "0",
            "data-voice": _VOICE[lang],
            "data-pay": _T["pay"][lang],
            "data-idle": _T["idle"][lang],
            "data-offline": _T["see_staff"][lang],
            "data-poll": str(POLL_MS),
            "data-lost": str(LOST_MS),
        }
        body_attrs = " ".join(f'{k}="{e(v, quote=True)}"' for k, v in attrs.items())
        return (
            f'<!doctype html>\n<html lang="{_VOICE[lang]}"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{e(_T['title'][lang])}</title><style>{_CSS}</style></head>"
            f'<body class="idle" {body_attrs}><main>'
            '<div class="sym" aria-hidden="true"></div>'
            '<p id="name" class="name"></p><p id="pay" class="pay"></p>'
            f'<p id="msg" class="msg" role="status" aria-live="assertive">{e(_T["idle"][lang])}</p>'
            f"</main><script>{_JS}</script></body></html>\n"
        )


# -- HTML -------------------------------------------------------------------------------------------------
# Colours: white on deep green / blue / slate, near-black on amber (contrast 7.8:1 to 16:1). Never red: an
# elderly person who is not recognised or not served must not feel alarmed. The tick is drawn with CSS; "…"
# and "i" are in every font, so the symbols do not depend on the kiosk's fonts.

_CSS = """
*{box-sizing:border-box}
html,body{height:100%;margin:0}
body{font-family:"Noto Sans CJK SC","Source Han Sans SC","WenQuanYi Micro Hei","Microsoft YaHei","PingFang SC",
sans-serif;background:#14213d;color:#fff;cursor:none;user-select:none;-webkit-user-select:none;overflow:hidden}
main{height:100%;display:flex;flex-direction:column;align-items:center;justify-content:center;text-align:center;
padding:3vh 4vw;gap:3vh}
p{margin:0;line-height:1.2;max-width:94vw;overflow-wrap:anywhere}
p:empty{display:none}
.sym{display:none;position:relative;flex:none;width:26vmin;height:26vmin;border-radius:50%;
border:1.8vmin solid currentColor}
.name{font-size:11vmin;font-weight:700}
.pay{font-size:15vmin;font-weight:800;letter-spacing:.02em}
.msg{font-size:9vmin;font-weight:700}
body.idle .msg{font-size:13vmin}
body.meal .msg{font-size:6vmin;font-weight:600}
body.meal{background:#085f28}
body.repeat{background:#16437a}
body.confirm{background:#f2b705;color:#111}
body.calm,body.offline{background:#34495e}
body.meal .sym,body.repeat .sym,body.confirm .sym,body.calm .sym{display:block}
body.meal .sym::after,body.repeat .sym::after{content:"";position:absolute;left:36%;top:14%;width:26%;height:52%;
border:solid currentColor;border-width:0 2.6vmin 2.6vmin 0;transform:rotate(45deg)}
body.confirm .sym::after,body.calm .sym::after{position:absolute;left:0;right:0;top:0;bottom:0;display:flex;
align-items:center;justify-content:center;font-weight:800;line-height:1}
body.confirm .sym::after{content:"\\2026";font-size:16vmin;padding-bottom:4vmin}
body.calm .sym::after{content:"i";font-family:Georgia,"DejaVu Serif",serif;font-size:18vmin}
""".strip()

# One poll at a time, every data-poll ms. A result is shown for show_seconds from when the daemon published
# it (age_s), so a reload never brings back an old one. Each new sequence number is spoken once; a result
# already there when the page loads is not (the page spoke it before the reload). seq 0 means the daemon
# (re)started: its first decision is seq 1 again. A new result cuts the previous speech short (Chrome drops
# a speak() right after cancel(), hence the short wait); the rate is a little slower than normal.
_JS = """
(function(){
var b=document.body,nameEl=document.getElementById('name'),payEl=document.getElementById('pay'),
msgEl=document.getElementById('msg');
function attr(k){return b.getAttribute('data-'+k);}
var SHOW=parseFloat(attr('show'))*1000,SPEAK=attr('speak')==='1',VOICE=attr('voice'),PAY=attr('pay'),
IDLE=attr('idle'),OFF=attr('offline'),POLL=parseInt(attr('poll'),10),LOST=parseInt(attr('lost'),10);
var TONE={meal:'meal',repeat:'repeat',confirm:'confirm'};
var shown=-1,spoken=-1,timer=0,lastOk=Date.now(),first=true;
function set(tone,name,pay,msg){b.className=tone;nameEl.textContent=name||'';payEl.textContent=pay||'';
msgEl.textContent=msg||'';}
function idle(){clearTimeout(timer);set('idle','','',IDLE);}
function say(text){
var s=window.speechSynthesis;
if(!SPEAK||!text||!s||!window.SpeechSynthesisUtterance){return;}
try{var busy=s.speaking||s.pending;if(busy){s.cancel();}
setTimeout(function(){try{var u=new SpeechSynthesisUtterance(text);u.lang=VOICE;u.rate=0.9;
var vs=s.getVoices()||[];
for(var i=0;i<vs.length;i++){if((vs[i].lang||'').replace('_','-')===VOICE){u.voice=vs[i];break;}}
s.speak(u);}catch(e){}},busy?100:0);}catch(e){}}
function show(d){
var left=SHOW-(d.age_s||0)*1000;
if(d.kind==='idle'||left<=0){idle();return false;}
clearTimeout(timer);
var pay=d.kind==='meal'?PAY.replace('{yuan}',(d.payable_fen/100).toFixed(2)):'';
set(TONE[d.kind]||'calm',d.name,pay,d.message);
timer=setTimeout(idle,left);
return true;}
function got(d){
lastOk=Date.now();
if(d.seq===0){spoken=0;}
if(first){spoken=d.seq;first=false;}
if(d.seq!==shown){shown=d.seq;if(show(d)&&d.seq!==spoken){spoken=d.seq;say(d.message);}}}
function lost(){if(Date.now()-lastOk>LOST&&shown!==-2){clearTimeout(timer);shown=-2;set('offline','','',OFF);}}
function poll(){
fetch('/api/latest',{cache:'no-store'}).then(function(r){if(!r.ok){throw new Error(r.status);}return r.json();})
.then(got,lost).then(function(){setTimeout(poll,POLL);},function(){setTimeout(poll,POLL);});}
poll();
})();
""".strip()

# Only our own inline style and script (by hash); the script may fetch only from us; nothing else at all.
_CSP = (
    f"default-src 'none'; style-src {csp_hash(_CSS)}; script-src {csp_hash(_JS)}; connect-src 'self'; "
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
        localweb.send(self, status, body, ctype, _CSP)

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

