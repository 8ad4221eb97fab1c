"""The staff confirmation screen: `meal-edge staff-screen`.

A small local web page for a touch screen next to the kiosk. It lists today's pending confirmations (the
candidate senior's name, when, and why the kiosk was not sure) with two big buttons, "Confirm: this is <name>"
and "Not this person", and resolves them with the same `edge.meals.confirm.confirm` as `meal-edge confirm`: the
subsidy rules are applied as of the kiosk's decision, and the store records at most one meal per senior, meal
and day. No external assets, so it works without internet.

This module is the screen without HTTP; edge/screens/staffserver.py serves it (and is `meal-edge staff-screen`),
edge/screens/staffpages.py renders its pages from edge/screens/templates/staff/, edge/screens/staffwords.py
holds its words.

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

import hmac
import logging
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any, Literal

from edge.config import Config
from edge.meals.checkin import manual_checkin
from edge.meals.confirm import ConfirmResult, confirm, needs_named_staff, open_store
from edge.meals.feedback import Language, reasons_text
from edge.meals.search import Entry, Found, search
from edge.screens.checkin_page import MAX_FOUND
from edge.screens.checkin_page import word as checkin_word
from edge.screens.staffwords import phrase, why_text
from edge.security.staffauth import STAFF_ID, AuthError, AuthPolicy, Session, StaffAuth
from edge.store import Confirmation, Store, StoreError
from edge.store.auditlog import AuditEntry
from edge.store.evidence import EvidenceKeeper, confirmation_name

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAIL = 0, 1
DEFAULT_LISTEN = "127.0.0.1:8080"
#: seconds between automatic reloads of the list, and while a result is on screen (long enough to read it)
REFRESH_S, RESULT_REFRESH_S = 5, 12
#: without JavaScript, the reload when a card needs the PIN typed again (the script holds it while typing)
NEED_NAME_NOSCRIPT_REFRESH_S = 30
#: a form post is a token, an action and a PIN: anything much bigger is not from our page
MAX_BODY = 4096
#: results waiting to be shown after the redirect; only the newest few matter (one screen)
MAX_FLASHES = 32

Tone = Literal["ok", "info", "warn"]

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
            return phrase("login_locked" if e.kind == "locked" else "login_bad", self.lang)
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

    def find(self, query: str) -> tuple[list[Found], bool]:
        """Seniors matching `query` (name, pinyin initials, id, meal card) for a manual check-in, and whether
        there are more than the page lists."""
        if not query.strip():
            return [], False
        found = search([Entry(*r) for r in self.store().roster()], query, limit=MAX_FOUND + 1)
        return found[:MAX_FOUND], len(found) > MAX_FOUND

    def checkin(self, senior_id: str, session: Session) -> Flash:
        """Check a senior in by hand (edge.meals.checkin) as the logged-in `session` (the event's staff_id and
        the audit line's), and what the screen says about it."""
        lang = self.lang
        with self._decide_lock:
            r = manual_checkin(self.store(), self.cfg, senior_id, session.staff_id, now=self.clock())
        # ids only: the message names the senior, and this goes to the journal
        log.info("staff screen: manual check-in of %s by %s -> %s", r.senior_id, session.staff_id, r.kind)
        if r.kind == "meal":
            return Flash("ok", r.says)
        if r.kind == "store_failed":
            raise StoreError(r.message)
        if r.kind in ("no_name", "not_found"):
            return Flash("warn", checkin_word(r.kind, lang, senior_id=senior_id))
        why = reasons_text(r.reasons, lang) or r.says or r.kind
        return Flash("warn", checkin_word("no_meal", lang, name=r.name or senior_id, why=why))

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
                return Outcome(HTTPStatus.SEE_OTHER, Flash("warn", phrase("wrong_pin", self.lang)))
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
            # staff are told why in words (the kiosk says only "see staff")
            why = reasons_text(r.reasons, lang) or r.says or r.kind
            return Flash("warn", phrase("no_meal", lang, name=name, why=why))
        if r.kind == "rejected":
            return Flash("info", phrase("rejected", lang, name=name))
        if r.kind == "already_resolved":
            now = self.store().get_confirmation(c.id) or c
            who = now.resolved_by or "?"
            at = f"{now.resolved_at.astimezone(self.tz):%H:%M}" if now.resolved_at else "?"
            key = "already_rejected" if now.state == "rejected" else "already_confirmed"
            return Flash("info", phrase(key, lang, by=who, time=at))
        if r.kind == "not_today":
            return Flash("warn", phrase("not_today", lang))
        if r.kind == "not_enrolled":
            return Flash("warn", phrase("not_enrolled", lang, senior_id=c.senior_id))
        if r.kind == "needs_staff_name":
            return Flash("warn", phrase("needs_name", lang))
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


# The staff name survives the automatic reloads for a while (sessionStorage, 10 minutes since last used) so
# staff need not retype it, but is not kept all day on a shared screen. Reloads wait while someone types.
# A card that needs a named staff member has its own name field (input.need), posted as it is: it is never
# filled in from the remembered name (else whoever stands at the kiosk could confirm with it), and a name
# typed there and left alone is cleared by the next reload (30 s after the last keystroke or focus).


# Only our own inline style and script (by hash) and our own images (the snapshots), nothing from anywhere
# else; forms post only to us.


# ASCII digits only: nothing else (no "..", no "%2F", no other script's digits) names a file


