"""The staff confirmation screen: `meal-edge staff-screen`.

A small local web page for a touch screen next to the kiosk. It lists today's pending confirmations (the
candidate senior's name, when, and why the kiosk was not sure) with two big buttons, "Confirm: this is <name>"
and "Not this person", and resolves them with the same `edge.meals.confirm.confirm` as `meal-edge confirm`: the
subsidy rules are applied as of the kiosk's decision, and the store records at most one meal per senior, meal
and day. Standard library only (http.server); no external assets, so it works without internet.

Security: it can pay subsidies, so nothing is shown or done without a staff login (edge/screens/stafflogin.py:
a staff account's id and PIN, a session cookie that is HttpOnly and SameSite=Strict, idle and absolute
expiry, lockout after wrong PINs, every action in the audit log under that staff id). It listens on loopback
by default; every POST must also carry a random form token minted when the process starts (another page
cannot post with the staff member's cookie); requests naming another host are refused while bound to
loopback (DNS rebinding); the page may not be framed (clickjacking).

Each card shows the kiosk's own snapshot of that presence when one was kept (`[evidence]`, edge/store/evidence.py:
on this kiosk only, deleted after `retention_days`), since the candidate's name alone does not tell staff
confirming a few minutes later who actually stood at the kiosk. `GET /snapshot/<id>.jpg` serves it, behind
the same Host check, only while that confirmation is on the list; never an enrolment photo or a template.

A confirmation whose liveness was not confirmed (`edge.meals.confirm.needs_named_staff`: maybe a photo or a phone
screen held up to the camera) is not confirmed by whoever stands at the screen while it is logged in: its card
asks for the logged-in staff member's PIN again, and "Confirm" without the right one is refused (the wrong PIN
counts towards the lockout) and changes nothing.

`GET /api/pending` is the same list as JSON, for a future native kiosk UI (fields: docs/staff-screen.md).
"""

from __future__ import annotations

import argparse
import hmac
import html
import json
import logging
import re
import secrets
import signal
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import FrameType
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from edge import config
from edge.config import Config, need_config
from edge.meals.confirm import ConfirmResult, confirm, needs_named_staff, open_store
from edge.meals.feedback import Language
from edge.screens import localweb, stafflogin
from edge.screens.localweb import LocalServer, csp_hash, is_loopback
from edge.security.staffauth import STAFF_ID, AuthError, AuthPolicy, Session, StaffAuth
from edge.store import Confirmation, Store, StoreError
from edge.store.auditlog import AuditEntry
from edge.store.evidence import EvidenceKeeper, confirmation_name

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAIL = 0, 1
DEFAULT_LISTEN = "127.0.0.1:8080"
#: seconds between automatic reloads of the list, and while a result is on screen (long enough to read it)
REFRESH_S, RESULT_REFRESH_S = 5, 12
#: without JavaScript, the reload when a card needs a typed staff name (the script holds it while typing)
NEED_NAME_NOSCRIPT_REFRESH_S = 30
#: a form post is a token, an action and a PIN: anything much bigger is not from our page
MAX_BODY = 4096
#: results waiting to be shown after the redirect; only the newest few matter (one screen)
MAX_FLASHES = 32

Tone = Literal["ok", "info", "warn"]

# -- words ------------------------------------------------------------------------------------------------
# Staff-facing sentences stay here rather than in edge.meals.feedback, which holds what the kiosk says to seniors.

_T: dict[str, dict[Language, str]] = {
    "title": {"zh": "请确认签到", "en": "Please confirm check-in"},
    "intro": {
        "zh": "摄像头不能完全确定以下人员。请看清楚是否为本人，再按按钮。",
        "en": "The camera was not sure about these people. Check who it is, then press a button.",
    },
    "empty": {"zh": "目前没有需要确认的签到。", "en": "Nothing to confirm right now."},
    "yes": {"zh": "确认：是 {name} 本人", "en": "Confirm: this is {name}"},
    "no": {"zh": "不是本人", "en": "Not this person"},
    "check": {
        "zh": "摄像头无法确认这是真人，可能是举在镜头前的照片或手机画面。"
        "请工作人员当面核实，并再次输入自己的密码后再确认。",
        "en": "The camera could not tell a real face from a photo or a phone screen held up to it. A staff "
        "member must look at the person and enter their own PIN again before confirming.",
    },
    "staff_required": {"zh": "您的密码（必填）", "en": "Your PIN (required)"},
    "needs_name": {
        "zh": "这一条需要工作人员核实：请输入您的密码。",
        "en": "A staff member must check this one: enter your PIN.",
    },
    "wrong_pin": {
        "zh": "密码不对，没有做任何操作。",
        "en": "Wrong PIN: nothing was done.",
    },
    "id": {"zh": "编号", "en": "ID"},
    "seen": {"zh": "{time} 签到", "en": "Seen at {time}"},
    "gone": {"zh": "（已不在名册中）", "en": "(no longer enrolled)"},
    "older": {
        "zh": "另有 {n} 条往日的待确认记录，已不能补贴，请负责人清除。",
        "en": "{n} older request(s) from earlier days can no longer be paid; the manager can clear them.",
    },
    "back": {"zh": "返回列表", "en": "Back to the list"},
    "no_meal": {"zh": "没有为 {name} 记录用餐：{why}", "en": "No meal recorded for {name}: {why}"},
    "rejected": {"zh": "已取消：没有为 {name} 签到。", "en": "Cancelled: {name} was not checked in."},
    "already_confirmed": {
        "zh": "这一条已由 {by} 在 {time} 确认过，没有重复记录。",
        "en": "This was already confirmed by {by} at {time}. Nothing changed.",
    },
    "already_rejected": {
        "zh": "这一条已由 {by} 在 {time} 取消，没有任何更改。",
        "en": "This was already cancelled by {by} at {time}. Nothing changed.",
    },
    "not_today": {
        "zh": "这是往日的记录，现在不能补贴。请按“不是本人”清除它。",
        "en": "This request is from an earlier day and cannot be paid now. "
        "Press \u201cNot this person\u201d to clear it.",
    },
    "not_enrolled": {
        "zh": "{senior_id} 已不在名册中，不能记录用餐。请按“不是本人”清除它。",
        "en": "{senior_id} is no longer enrolled, so no meal can be recorded. "
        "Press \u201cNot this person\u201d to clear it.",
    },
    "e503_title": {"zh": "暂时无法读取签到记录", "en": "The check-in records cannot be reached"},
    "e503_do": {
        "zh": "没有付款，也没有任何更改。请确认 meal-edge 服务正在运行、磁盘没有满，然后按“刷新”。"
        "如果仍然出错，请联系技术人员，并告诉他们上面的说明。",
        "en": "Nothing was paid or changed. Check that the meal-edge service is running and the disk is not full, "
        "then press Reload. If it keeps happening, call the technician and show them the message above.",
    },
    "e404": {"zh": "找不到这条确认记录。", "en": "This request does not exist on this kiosk."},
    "e403": {
        "zh": "页面已过期，没有做任何操作。请返回列表再按一次。",
        "en": "This page was out of date, so nothing was done. Go back to the list and press again.",
    },
    "e400": {"zh": "请求不完整，没有做任何操作。", "en": "Incomplete request: nothing was done."},
    "e401": {"zh": "请先登录。", "en": "Log in first."},
    "e_host": {
        "zh": "请在本机用 http://127.0.0.1 打开本页面。",
        "en": "Open this page on this machine, as http://127.0.0.1.",
    },
    "e500": {
        "zh": "出现意外错误，请联系技术人员。",
        "en": "Something unexpected went wrong. Please call the technician.",
    },
    "reload": {"zh": "刷新", "en": "Reload"},
    "snapshot_alt": {"zh": "摄像头在 {time} 拍到的人", "en": "Who the camera saw at {time}"},
    "no_snapshot": {"zh": "没有照片", "en": "No snapshot"},
}

#: why the kiosk asked, in plain words for staff (codes from edge.recognition.decide and edge.recognition.liveness)
_WHY: dict[str, dict[Language, str]] = {
    "not_close_enough": {"zh": "面部相似度不够高", "en": "The face is only a fair match"},
    "ambiguous_margin": {"zh": "与另一位登记老人长得很像", "en": "Looks much like another enrolled senior"},
    "frames_disagree": {"zh": "几张画面的识别结果不一致", "en": "The camera's pictures did not agree"},
    "lookalike_margin": {
        "zh": "有登记的相貌相似者（如兄弟姐妹）",
        "en": "Has an enrolled lookalike (such as a sibling)",
    },
    "liveness_not_confirmed": {
        "zh": "未能确认是真人：请核实不是照片或手机画面",
        "en": "Could not confirm a real face: check it is the person, not a photo or a phone",
    },
    "planar_motion": {"zh": "面部看起来像平面照片", "en": "The face looked flat, like a photo"},
    "surroundings_move_with_face": {"zh": "背景随面部一起移动", "en": "The background moved with the face"},
    "too_still": {"zh": "人站得太静，无法判断", "en": "The person stood very still"},
    "too_few_frames": {"zh": "只看到很短时间", "en": "Seen only briefly"},
}


def _t(key: str, lang: Language, **kw: object) -> str:
    text = _T[key][lang]
    return text.format(**kw) if kw else text


def why_text(reasons: tuple[str, ...], lang: Language) -> list[str]:
    """Each reason in plain words; an unknown code is shown as is rather than hidden."""
    return [_WHY[r][lang] if r in _WHY else r for r in reasons]


# -- the screen's logic (no HTTP) -------------------------------------------------------------------------


@dataclass(frozen=True)
class PendingItem:
    """One row of the list (and of /api/pending)."""

    id: int
    kiosk_id: str
    senior_id: str
    #: None when the senior was removed since the kiosk's decision
    name: str | None
    decided_at: datetime
    local_date: date
    reasons: tuple[str, ...]
    #: "Confirm" needs the staff member's PIN again (edge.meals.confirm.needs_named_staff); "No" never does
    needs_name: bool = False
    #: the URL path of the kiosk's snapshot of this presence; None when none was kept (or it expired)
    snapshot: str | None = None

    def to_json(self, lang: Language) -> dict[str, Any]:
        return {
            "id": self.id,
            "kiosk_id": self.kiosk_id,
            "senior_id": self.senior_id,
            "name": self.name,
            "decided_at": self.decided_at.isoformat(timespec="seconds"),
            "local_date": self.local_date.isoformat(),
            "time": f"{self.decided_at:%H:%M}",
            "reasons": list(self.reasons),
            "reason_text": why_text(self.reasons, lang),
            "can_accept": self.name is not None,
            "needs_staff_name": self.needs_name,
            "snapshot": self.snapshot,
        }


def snapshot_url(confirmation_id: int) -> str:
    return f"/snapshot/{confirmation_id}.jpg"


@dataclass(frozen=True)
class Flash:
    tone: Tone
    text: str


@dataclass(frozen=True)
class Outcome:
    """What a POST did: `flash` to show on the list, or an HTTP error status with nothing changed."""

    status: HTTPStatus
    flash: Flash | None = None
    result: ConfirmResult | None = None


class StaffScreen:
    """The list and the two buttons, over one Store, without HTTP (the handler below is a thin shell)."""

    def __init__(
        self, cfg: Config, *, clock: Callable[[], datetime] | None = None, auth_policy: AuthPolicy | None = None
    ) -> None:
        self.cfg = cfg
        self.auth_policy = auth_policy or AuthPolicy()
        self.lang: Language = cfg.centre.language
        self.tz = cfg.centre.tz
        self.kiosk_id = cfg.centre.kiosk_id
        self.clock: Callable[[], datetime] = clock or (lambda: datetime.now(self.tz))
        #: per process: a page served by an earlier run (or any other page) cannot post
        self.token = secrets.token_urlsafe(32)
        self._store: Store | None = None
        self._auth: StaffAuth | None = None
        self._open_lock = threading.Lock()
        # Two taps on the same card arrive on two threads: one at a time, the second sees "already
        # resolved" (the store would refuse it anyway, but as a less helpful store error).
        self._decide_lock = threading.Lock()
        self._flashes: OrderedDict[str, Flash] = OrderedDict()
        self._flash_lock = threading.Lock()
        #: None with `[evidence] enabled = false`: then no snapshot is looked up, shown or served
        self.evidence: EvidenceKeeper | None = (
            EvidenceKeeper(cfg.evidence_dir, cfg.evidence.retention_days) if cfg.evidence.enabled else None
        )

    # -- store ------------------------------------------------------------------------------------------

    def store(self) -> Store:
        """The store, opened on first use and kept. As for `meal-edge confirm` (the same `open_store`), a
        missing store file is an error, never created here; unlike it, the screen keeps running and says so
        until it is fixed."""
        with self._open_lock:
            if self._store is None:
                self._store = open_store(self.cfg)
            return self._store

    def auth(self) -> StaffAuth:
        """Staff logins over the store's accounts; sessions live as long as this process."""
        store = self.store()
        with self._open_lock:
            if self._auth is None:
                self._auth = StaffAuth(store, self.auth_policy, clock=self.clock)
            return self._auth

    def close(self) -> None:
        with self._open_lock:
            if self._store is not None:
                self._store.close()
                self._store = None
            self._auth = None

    # -- logins -----------------------------------------------------------------------------------------

    def login(self, staff_id: str, pin: str) -> tuple[str, Session] | str:
        """(cookie token, session), or the text to show on the login page. Both outcomes are audited."""
        staff_id = staff_id.strip()
        try:
            token, session = self.auth().login(staff_id, pin)
        except AuthError as e:
            who = staff_id if STAFF_ID.match(staff_id) else "?"
            self.store().audit(AuditEntry(who, "login_failed", "staff-screen", {"why": e.kind}))
            log.warning("staff screen: login of %r refused (%s)", who, e.kind)
            return stafflogin.t("locked" if e.kind == "locked" else "bad", self.lang)
        self.store().audit(AuditEntry(session.staff_id, "login", "staff-screen"))
        log.info("staff screen: %s logged in", session.staff_id)
        return token, session

    def session(self, token: str | None, *, touch: bool) -> Session | None:
        """The logged-in staff member of this cookie. `touch` (a person's action, a POST) restarts the idle
        time; the page's own reloads do not, so a screen left alone logs out."""
        return self.auth().session(token, touch=touch)

    def logout(self, token: str | None) -> None:
        s = self.session(token, touch=False)
        self.auth().logout(token)
        if s is not None:
            self.store().audit(AuditEntry(s.staff_id, "logout", "staff-screen"))

    # -- list -------------------------------------------------------------------------------------------

    def today(self) -> date:
        return self.clock().astimezone(self.tz).date()

    def pending(self) -> tuple[list[PendingItem], int]:
        """This kiosk's pending confirmations of today, oldest first, and how many older ones wait (those
        can only be rejected, which `meal-edge confirm` does)."""
        store = self.store()
        today = self.today()
        items: list[PendingItem] = []
        older = 0
        for c in store.pending_confirmations(self.kiosk_id):
            if not self._listed(c, today):
                older += 1
                continue
            senior = store.get_senior(c.senior_id)
            items.append(
                PendingItem(
                    id=c.id,
                    kiosk_id=c.kiosk_id,
                    senior_id=c.senior_id,
                    name=None if senior is None else senior.name,
                    decided_at=c.decided_at.astimezone(self.tz),
                    local_date=c.local_date,
                    reasons=c.reasons,
                    needs_name=needs_named_staff(c),
                    snapshot=snapshot_url(c.id) if self._snapshot_path(c.id) is not None else None,
                )
            )
        return items, older

    def _listed(self, c: Confirmation, today: date) -> bool:
        """On the list: pending, this kiosk's, of today."""
        return c.state == "pending" and c.kiosk_id == self.kiosk_id and c.local_date == today

    def _snapshot_path(self, confirmation_id: int) -> Path | None:
        if self.evidence is None:
            return None
        return self.evidence.find(confirmation_name(confirmation_id))

    def snapshot(self, confirmation_id: int) -> bytes | None:
        """The JPEG of a confirmation on the list; None for any other (resolved, another kiosk's, an earlier
        day's, unknown), and when none was kept. A picture of a face is only shown while staff need it."""
        if self.evidence is None:
            return None
        c = self.store().get_confirmation(confirmation_id)
        if c is None or not self._listed(c, self.today()):
            return None
        path = self._snapshot_path(confirmation_id)
        if path is None:
            return None
        try:
            return path.read_bytes()
        except OSError as e:  # expired (purged by the daemon) between find and read, or unreadable
            log.warning("staff screen: cannot read the snapshot %s: %s", path, e)
            return None

    # -- the buttons ------------------------------------------------------------------------------------

    def decide(self, confirmation_id: int, accept: bool, session: Session, pin: str = "") -> Outcome:
        """Resolve as the logged-in `session`. Accepting a suspected photo also needs `pin`, that staff
        member's PIN given again on the card (a wrong one counts towards the lockout)."""
        store = self.store()
        c = store.get_confirmation(confirmation_id)
        if c is None or c.kiosk_id != self.kiosk_id:
            return Outcome(HTTPStatus.NOT_FOUND)
        checked = False
        if accept and needs_named_staff(c) and c.state == "pending" and pin:
            try:
                checked = self.auth().authenticate(session.staff_id, pin).staff_id == session.staff_id
            except AuthError as e:
                store.audit(AuditEntry(session.staff_id, "login_failed", f"confirmation:{c.id}", {"why": e.kind}))
                return Outcome(HTTPStatus.SEE_OTHER, Flash("warn", _t("wrong_pin", self.lang)))
        with self._decide_lock:
            r = confirm(
                store, self.cfg, confirmation_id, accept, session.staff_id, now=self.clock(), staff_checked=checked
            )
        if r.kind == "store_failed":
            # Resolved meanwhile by another process (`meal-edge confirm`)? Then it is "already resolved";
            # otherwise the store really failed and nothing was recorded.
            again = store.get_confirmation(confirmation_id)
            if again is None or again.state == "pending":
                raise StoreError(r.message)
            c, r = again, ConfirmResult(False, confirmation_id, "already_resolved", r.message)
        if r.kind == "not_found":  # removed between the two reads
            return Outcome(HTTPStatus.NOT_FOUND)
        # ids only: the message names the senior, and this goes to the journal
        log.info(
            "staff screen: %s %s confirmation %d (senior %s) -> %s",
            session.staff_id, "accepted" if accept else "rejected", confirmation_id, c.senior_id, r.kind,
        )
        return Outcome(HTTPStatus.SEE_OTHER, self._flash_for(r, c), r)

    def _flash_for(self, r: ConfirmResult, c: Confirmation) -> Flash:
        lang = self.lang
        senior = self.store().get_senior(c.senior_id)
        name = senior.name if senior is not None else c.senior_id
        if r.kind == "meal":
            return Flash("ok", r.says)
        if r.kind in ("repeat", "refused", "closed"):
            return Flash("warn", _t("no_meal", lang, name=name, why=r.says or r.kind))
        if r.kind == "rejected":
            return Flash("info", _t("rejected", lang, name=name))
        if r.kind == "already_resolved":
            now = self.store().get_confirmation(c.id) or c
            who = now.resolved_by or "?"
            at = f"{now.resolved_at.astimezone(self.tz):%H:%M}" if now.resolved_at else "?"
            key = "already_rejected" if now.state == "rejected" else "already_confirmed"
            return Flash("info", _t(key, lang, by=who, time=at))
        if r.kind == "not_today":
            return Flash("warn", _t("not_today", lang))
        if r.kind == "not_enrolled":
            return Flash("warn", _t("not_enrolled", lang, senior_id=c.senior_id))
        if r.kind == "needs_staff_name":
            return Flash("warn", _t("needs_name", lang))
        return Flash("warn", r.message)  # not reachable from the screen (no_name): say it as confirm does

    # -- results shown after the redirect ---------------------------------------------------------------

    def keep_flash(self, flash: Flash) -> str:
        """A random key for the redirect: the text itself never travels in the URL, so a crafted link
        cannot put words of its choosing on the screen."""
        key = secrets.token_urlsafe(9)
        with self._flash_lock:
            self._flashes[key] = flash
            while len(self._flashes) > MAX_FLASHES:
                self._flashes.popitem(last=False)
        return key

    def get_flash(self, key: str) -> Flash | None:
        with self._flash_lock:
            return self._flashes.get(key)

    def token_ok(self, token: str) -> bool:
        return hmac.compare_digest(token.encode(), self.token.encode())


# -- HTML -------------------------------------------------------------------------------------------------

_CSS = """
html{font-size:26px}
body{font-family:"Noto Sans CJK SC","Microsoft YaHei","PingFang SC",sans-serif;margin:0;padding:1rem 1.2rem;
background:#f7f5ef;color:#111;line-height:1.35}
h1{font-size:2rem;margin:.2rem 0 .4rem}
.intro{margin:0 0 1rem;color:#333}
.flash{font-size:1.3rem;padding:.8rem 1rem;border-radius:.4rem;margin:0 0 1rem;border:3px solid}
.flash.ok{background:#e3f4e1;border-color:#1f7a1f}.flash.info{background:#e8eef7;border-color:#3b5b8c}
.flash.warn{background:#fdf0d5;border-color:#a66300}
form.login{display:flex;flex-direction:column;gap:1rem;max-width:24rem}
form.login label{display:flex;flex-direction:column;font-size:1.2rem}
form.login input{font-size:1.4rem;padding:.5rem;margin-top:.2rem}
form.login button{flex:0 0 auto}
form.who{display:flex;justify-content:space-between;align-items:center;gap:1rem;font-size:1rem;color:#333;
margin:0 0 .4rem}
form.who button{font-size:1rem;min-height:2.4rem;flex:0 0 auto;background:#fff;border-color:#3b5b8c;color:#3b5b8c}
ul{list-style:none;margin:0;padding:0}
.card{background:#fff;border:2px solid #bbb;border-radius:.5rem;padding:1rem;margin:0 0 1rem}
.name{font-size:2.2rem;font-weight:bold}.sid{font-size:1rem;color:#444;margin-left:.6rem}
.when{font-size:1.1rem;margin:.2rem 0}.why{font-size:1rem;color:#5a3b00;margin:.2rem 0 .8rem}
form.decide{display:flex;flex-wrap:wrap;gap:1rem;clear:both}
.snap,.nosnap{float:left;width:160px;margin:0 1rem .6rem 0;border:1px solid #bbb;border-radius:.3rem}
.snap{height:auto}.nosnap{font-size:.8rem;color:#444;text-align:center;padding:1.2rem 0;border-style:dashed}
.card.need{border-color:#a66300}
.check{flex:1 1 100%;margin:0;font-size:1.1rem;font-weight:bold;color:#8c1d1d}
label.need{flex:1 1 100%;font-size:1.1rem}
label.need input{font-size:1.2rem;padding:.4rem;width:14em;margin-left:.5rem;border:3px solid #a66300}
button{font-size:1.5rem;min-height:3.6rem;padding:.5rem 1.2rem;border-radius:.5rem;border:3px solid;flex:1 1 12em}
button.yes{background:#1f7a1f;border-color:#145214;color:#fff}
button.no{background:#fff;border-color:#8c1d1d;color:#8c1d1d}
button[disabled]{opacity:.5}
.empty{font-size:1.6rem;padding:2rem 0;color:#333}
.older{font-size:.9rem;color:#444}
a.back{display:inline-block;font-size:1.4rem;padding:.6rem 1.2rem;border:3px solid #3b5b8c;border-radius:.5rem;
color:#3b5b8c;text-decoration:none;margin-top:1rem}
.detail{font-family:monospace;font-size:.9rem;background:#fff;border:1px solid #bbb;padding:.6rem;
white-space:pre-wrap;word-break:break-word}
""".strip()

# After a tap the buttons are disabled (one post per tap). A card that needs the staff member's PIN again has
# its own field (input.need), never filled in by the page; the reload waits while someone types in it, and a
# PIN typed there and left alone is cleared by the next reload (30 s after the last keystroke or focus). The
# login page does not reload itself (data-refresh 0).
_JS = """
(function(){
var sent=false;
document.querySelectorAll('form.decide').forEach(function(f){f.addEventListener('submit',function(e){
if(sent){e.preventDefault();return;}sent=true;
setTimeout(function(){document.querySelectorAll('button').forEach(function(b){b.disabled=true;});},0);});});
var busy=0,HOLD=30000;
document.querySelectorAll('input.need').forEach(function(i){['focus','input'].forEach(function(t){
i.addEventListener(t,function(){busy=Date.now();});});});
var wait=parseInt(document.body.getAttribute('data-refresh'),10)*1000;
function tick(){if(sent||Date.now()-busy<HOLD){setTimeout(tick,wait);return;}
location.replace('/');}
if(wait>0){setTimeout(tick,wait);}
})();
""".strip()


# Only our own inline style and script (by hash) and our own images (the snapshots), nothing from anywhere
# else; forms post only to us.
_CSP = (
    f"default-src 'none'; style-src {csp_hash(_CSS)}; script-src {csp_hash(_JS)}; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def _page(lang: Language, title: str, body: str, *, refresh: int = 0, noscript_refresh: int | None = None) -> str:
    # without JavaScript the page still reloads itself (then a typed staff name is lost)
    again = refresh if noscript_refresh is None else noscript_refresh
    meta = f'<noscript><meta http-equiv="refresh" content="{again};url=/"></noscript>' if refresh else ""
    return (
        f'<!doctype html>\n<html lang="{lang}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{html.escape(title)}</title>{meta}<style>{_CSS}</style></head>"
        f'<body data-refresh="{refresh}">{body}<script>{_JS}</script></body></html>\n'
    )


def render_login(screen: StaffScreen, message: str | None = None, staff_id: str = "") -> str:
    lang = screen.lang
    return _page(lang, stafflogin.t("title", lang), stafflogin.login_body(lang, screen.token, message, staff_id))


def render_list(
    screen: StaffScreen, items: list[PendingItem], older: int, flash: Flash | None, session: Session
) -> str:
    lang = screen.lang
    e = html.escape
    parts = [stafflogin.who_bar(lang, screen.token, session.staff_id, session.name), f"<h1>{e(_t('title', lang))}</h1>"]
    if flash is not None:
        parts.append(f'<div class="flash {flash.tone}" role="status">{e(flash.text)}</div>')
    if items:
        parts.append(f'<p class="intro">{e(_t("intro", lang))}</p>')
        parts.append("<ul>")
        for it in items:
            shown = it.name if it.name is not None else _t("gone", lang)
            yes = ""
            if it.name is not None:
                yes = f'<button class="yes" name="action" value="yes">{e(_t("yes", lang, name=it.name))}</button>'
            need = it.needs_name and it.name is not None
            if need:
                # the PIN again; "Not this person" skips the browser's check (formnovalidate)
                by_field = (
                    f'<p class="check">{e(_t("check", lang))}</p>'
                    f'<label class="need">{e(_t("staff_required", lang))}<input class="need" type="password" '
                    f'name="pin" required maxlength="{stafflogin.MAX_PIN}" autocomplete="off"></label>'
                )
            else:
                by_field = ""
            no_attrs = " formnovalidate" if need else ""
            snap = _snapshot_html(it, lang) if screen.evidence else ""  # turned off: no note on every card
            parts.append(
                f'<li class="card{" need" if need else ""}" id="c{it.id}">{snap}'
                f'<div><span class="name">{e(shown)}</span>'
                f'<span class="sid">{e(_t("id", lang))} {e(it.senior_id)}</span></div>'
                f'<div class="when">{e(_t("seen", lang, time=f"{it.decided_at:%H:%M}"))}</div>'
                f'<div class="why">{e(("；" if lang == "zh" else "; ").join(why_text(it.reasons, lang)))}</div>'
                f'<form class="decide" method="post" action="/confirm/{it.id}">'
                f'<input type="hidden" name="token" value="{e(screen.token)}">'
                f"{by_field}{yes}"
                f'<button class="no" name="action" value="no"{no_attrs}>{e(_t("no", lang))}</button>'
                "</form></li>"
            )
        parts.append("</ul>")
    else:
        parts.append(f'<p class="empty">{e(_t("empty", lang))}</p>')
    if older:
        parts.append(f'<p class="older">{e(_t("older", lang, n=older))}</p>')
    refresh = RESULT_REFRESH_S if flash is not None else REFRESH_S
    # without JavaScript nothing holds the reload while a required name is typed: give it time
    slow = NEED_NAME_NOSCRIPT_REFRESH_S if any(it.needs_name and it.name is not None for it in items) else None
    return _page(lang, _t("title", lang), "".join(parts), refresh=refresh, noscript_refresh=slow)


def _snapshot_html(it: PendingItem, lang: Language) -> str:
    """Who stood at the kiosk, or plainly that there is no picture (staff then check the person)."""
    if it.snapshot is None:
        return f'<p class="nosnap">{html.escape(_t("no_snapshot", lang))}</p>'
    alt = _t("snapshot_alt", lang, time=f"{it.decided_at:%H:%M}")
    return f'<img class="snap" src="{html.escape(it.snapshot)}" width="160" alt="{html.escape(alt)}">'


def render_error(lang: Language, status: HTTPStatus, text: str, detail: str | None = None) -> str:
    e = html.escape
    body = f"<h1>{e(_t('e503_title', lang) if status == HTTPStatus.SERVICE_UNAVAILABLE else text)}</h1>"
    if detail:
        body += f'<p class="detail">{e(detail)}</p>'
    if status == HTTPStatus.SERVICE_UNAVAILABLE:
        body += f"<p>{e(text)}</p>"
    label = _t("reload", lang) if status == HTTPStatus.SERVICE_UNAVAILABLE else _t("back", lang)
    body += f'<a class="back" href="/">{e(label)}</a>'
    # an unattended touch screen must not stay on an error: back to the list by itself (a 503 page thus
    # keeps retrying, and the screen recovers when the store does)
    refresh = REFRESH_S * 2
    return _page(lang, f"{status.value} {status.phrase}", body, refresh=refresh)


# -- HTTP -------------------------------------------------------------------------------------------------

_CONFIRM_PATH = re.compile(r"/confirm/(\d{1,12})")
# ASCII digits only: nothing else (no "..", no "%2F", no other script's digits) names a file
_SNAPSHOT_PATH = re.compile(r"/snapshot/([0-9]{1,12})\.jpg")


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
        localweb.send(self, status, body, ctype, _CSP, headers)

    def _error(self, status: HTTPStatus, key: str, detail: str | None = None, *, as_json: bool = False) -> None:
        lang = self.screen.lang
        text = _t(key, lang)
        if as_json:
            self._send(status, json.dumps({"error": text, "detail": detail}, ensure_ascii=False), "application/json")
        else:
            self._send(status, render_error(lang, status, text, detail), "text/html")

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
        self._send(status, render_login(self.screen, message, staff_id), "text/html")

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

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        snap = _SNAPSHOT_PATH.fullmatch(url.path)
        if url.path == "/api/pending":
            self._guarded(True, self._api_pending)
        elif snap is not None:
            self._guarded(False, lambda: self._snapshot(int(snap.group(1))))
        elif url.path == "/":
            key = parse_qs(url.query).get("flash", [""])[0]
            self._guarded(False, lambda: self._list(key))
        else:
            self._guarded(False, lambda: self._error(HTTPStatus.NOT_FOUND, "e404"))

    do_HEAD = do_GET

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        m = _CONFIRM_PATH.fullmatch(path)
        if path == "/login":
            self._guarded(False, self._post_login)
        elif path == "/logout":
            self._guarded(False, self._post_logout)
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
        self._send(HTTPStatus.OK, render_list(self.screen, items, older, flash, session), "text/html")

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
        localweb.send(self, HTTPStatus.OK, data, "image/jpeg", _CSP)

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

    def _post_confirm(self, confirmation_id: int) -> None:
        form = self._form()
        if form is None:
            return
        session = self._session(touch=True)
        if session is None:  # logged out or expired: the form token alone pays nothing
            self._login_page(HTTPStatus.UNAUTHORIZED, stafflogin.t("expired", self.screen.lang))
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

    def __init__(self, address: tuple[str, int], screen: StaffScreen) -> None:
        self.screen = screen
        super().__init__(address, _Handler)


def parse_listen(text: str) -> tuple[str, int]:
    """HOST:PORT, [IPv6]:PORT."""
    return config.parse_listen(text, DEFAULT_LISTEN)


# -- command ----------------------------------------------------------------------------------------------


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


def serve(screen: StaffScreen, host: str, port: int) -> StaffScreenServer:
    """Bind (port 0: any free port); the caller runs serve_forever() and later shutdown()."""
    return StaffScreenServer((host, port), screen)


def run(args: argparse.Namespace) -> int:
    cfg = need_config(args.config)
    host, port = args.listen
    screen = StaffScreen(cfg)
    try:
        screen.store()
    except StoreError as e:
        log.error("%s; the screen shows this until it is fixed", e)
    try:
        server = serve(screen, host, port)
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
        screen.close()
        for s, h in old.items():
            signal.signal(s, h)
    return EXIT_OK
