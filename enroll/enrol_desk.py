"""Enrolment from the staff screen, without HTTP: the senior chosen or typed in, photos from the running kiosk
camera (edge/recognition/frameshare.py) or uploaded, and each enrolment done by the SAME `Enroller` as
`meal-enroll` (enroll/cli.make_enroller: the kiosk's models, the photo checks of enroll/quality.py and the
duplicate, agreement and capacity rules of enroll/service.py; nothing is checked a second way here).

enroll/enrol_page.py serves it as the page 录入 (`/enrol`) behind the staff login.

- A senior is chosen from the roster by id, or typed in (id, name, birth date, hukou, optional meal-card number);
  the details are checked before any photo (enroll.results.senior_problems, the id not taken by someone else,
  the card not another senior's). The choice is kept in this process under a random key (`Draft`): no name or
  birth date travels in a URL.
- "拍照" reads the daemon's shared frames through `SharedFrames` with enroll.capture.capture (the same frame
  choice as `meal-enroll capture`: each frame judged by the enrolment checks, kept only when it differs from
  the frames kept), 3 frames within `CAPTURE_S`, then enrols them. The frames are in memory only, and the
  sharing is cancelled (files deleted) when it ends.
- Uploaded files larger than `MAX_PHOTO_BYTES` are refused unread; the others are handed to the enroller as
  bytes (enroll.results.PhotoIn), which decodes them itself, so a damaged file is refused as `unreadable`.

Every enrolment is audited under the logged-in staff id: "enrol" by the enroller when templates are added,
"enrol_refused" (codes only) when nothing was, "card" when a meal-card number was set.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.config import Config
from edge.meals.feedback import Language
from edge.meals.rules import Senior
from edge.recognition import frameshare
from edge.recognition.capture import Frame, SourceError
from edge.security.staffauth import Session
from edge.store import Store, StoreError
from edge.store.auditlog import AuditEntry
from enroll import words
from enroll.capture import NO_PICTURE, CapturePolicy, CaptureResult, capture
from enroll.results import NO_PHOTOS, EnrolResult, PhotoIn, Problem, mismatch, senior_problems

if TYPE_CHECKING:
    from enroll.service import Enroller

log = logging.getLogger(__name__)

#: photos wanted from the camera, and how long staff wait at most for them
PHOTOS = 3
CAPTURE_S = 20.0
#: an uploaded photo: phone pictures are 2-6 MB; larger is a video or a scan at absurd resolution
MAX_PHOTO_BYTES = 8 * 1024 * 1024
MAX_UPLOADS = 5
#: senior choices and results kept for the redirects; only the newest few matter (one screen)
MAX_KEPT = 32
#: a frame between two captured ones: they must differ (enroll.capture.CapturePolicy asks 0.5 s), and
#: staff see the preview move
CAPTURE_POLICY = CapturePolicy(min_gap_s=0.6)

BAD_DATE = "bad_date"
CARD_TAKEN = "card_taken"
NOT_FOUND = "not_found"


@dataclass(frozen=True)
class Draft:
    """The senior being enrolled: from the roster (`known`) or typed in."""

    senior: Senior
    card_no: str | None
    known: bool


@dataclass(frozen=True)
class PhotoRow:
    """One photo's outcome as the page shows it."""

    label: str
    accepted: bool
    #: reason code (enroll/words.py has its words); "" when accepted
    code: str = ""
    text: str = ""


@dataclass
class Outcome:
    draft: Draft
    via: str  # "camera" or "upload"
    #: the draft's key: "take more" goes back to the same senior
    key: str = ""
    enrolled: bool = False
    added: int = 0
    total: int = 0
    photos: list[PhotoRow] = field(default_factory=list)
    #: refusals not tied to one photo, in words
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class SharedFrames:
    """The daemon's shared frames as an enroll.capture source (a live camera): each read waits for a picture newer
    than the last one. The request is renewed while reading, and cancelled by close()."""

    live = True
    ended = False

    def __init__(self, folder: Path, name: str = "kiosk camera, staff screen", poll: float = 0.05) -> None:
        self.folder = folder
        self.name = name
        self.poll = poll
        self._last_at = 0.0
        self._index = 0
        self._renewed = 0.0

    def read(self, timeout: float) -> Frame | None:
        end = time.monotonic() + timeout
        while True:
            # renewed every second: another tab opening the senior list cancels the sharing, and the capture
            # must not wait long for it to come back
            if time.monotonic() - self._renewed > 1.0:
                frameshare.request(self.folder)
                self._renewed = time.monotonic()
            got = frameshare.latest(self.folder)
            if got is not None and got.at > self._last_at:
                rgb = got.rgb()
                if rgb is not None:
                    self._last_at = got.at
                    self._index += 1
                    return Frame(self._index, got.at, rgb)
            if time.monotonic() >= end:
                return None
            time.sleep(self.poll)

    def close(self) -> None:
        frameshare.cancel(self.folder)


class EnrolDesk:
    """What the enrolment page does, over the staff screen's store (a second connection that keeps photos when
    `[store] keep_photos` says so, as meal-enroll's does)."""

    def __init__(
        self, cfg: Config, *, enroller_factory: Callable[[Config, Store, str], Enroller] | None = None,
        today: Callable[[], date] | None = None,
    ) -> None:
        self.cfg = cfg
        self.lang: Language = cfg.centre.language
        self.folder = cfg.store_path.parent
        self._factory = enroller_factory
        self._today = today or (lambda: date.today())
        self._store: Store | None = None
        self._lock = threading.Lock()  # one enrolment at a time: the models and the gallery are not shared
        self._kept_lock = threading.Lock()
        self._drafts: OrderedDict[str, Draft] = OrderedDict()
        self._outcomes: OrderedDict[str, Outcome] = OrderedDict()

    # -- store and enroller ------------------------------------------------------------------------------

    def store(self) -> Store:
        with self._kept_lock:  # two first requests on two threads open one store
            return self._open()

    def _open(self) -> Store:
        if self._store is None:
            path = self.cfg.store_path
            if not path.exists():
                raise StoreError(f"store {path} not found (is this the daemon's config?)")
            self._store = Store(path, keep_photos=self.cfg.store.keep_photos, key_file=self.cfg.template_key_path)
        return self._store

    def _enroller(self, staff_id: str) -> Enroller:
        # a new enroller for each enrolment (the models are cached by load_models): its gallery is read from the
        # store now, so a senior enrolled meanwhile by meal-enroll is seen by the duplicate check
        if self._factory is not None:
            return self._factory(self.cfg, self.store(), staff_id)
        from enroll.cli import make_enroller

        return make_enroller(self.cfg, self.store(), staff_id)

    def close(self) -> None:
        frameshare.cancel(self.folder)
        if self._store is not None:
            self._store.close()
            self._store = None

    # -- keys for the redirects --------------------------------------------------------------------------

    def _keep(self, table: OrderedDict[str, Any], value: object) -> str:
        key = secrets.token_urlsafe(9)
        with self._kept_lock:
            table[key] = value
            while len(table) > MAX_KEPT:
                table.popitem(last=False)
        return key

    def draft(self, key: str) -> Draft | None:
        with self._kept_lock:
            return self._drafts.get(key)

    def outcome(self, key: str) -> Outcome | None:
        with self._kept_lock:
            return self._outcomes.get(key)

    # -- choosing the senior ----------------------------------------------------------------------------

    def choose(self, senior_id: str) -> tuple[str | None, list[str]]:
        """A senior on the roster: (draft key, []) or (None, what is wrong, in words)."""
        s = self.store().get_senior(senior_id.strip())
        if s is None:
            return None, [self.word(NOT_FOUND, senior_id=senior_id.strip())]
        return self._keep(self._drafts, Draft(s, None, True)), []

    def new(self, senior_id: str, name: str, birth: str, hukou: str, card: str) -> tuple[str | None, list[str]]:
        """A senior typed in: checked as enrolment will check them (and the card), before any photo."""
        try:
            born = date.fromisoformat(birth.strip())
        except ValueError:
            return None, [self.word(BAD_DATE)]
        senior = Senior(senior_id.strip(), name.strip(), born, hukou.strip())
        problems: list[Problem] = senior_problems(senior, self._today())
        store = self.store()
        existing = store.get_senior(senior.senior_id) if not problems else None
        clash = mismatch(senior, existing) if existing is not None else None
        if clash is not None:
            problems.append(clash)
        texts = [words.reason(p.code, self.lang) for p in problems]
        card_no = card.strip() or None
        if card_no is not None:
            other = next((sid for sid, _n, c in store.roster() if c == card_no and sid != senior.senior_id), None)
            if other is not None:
                texts.append(self.word(CARD_TAKEN, card=card_no, other=other))
        if texts:
            return None, texts
        return self._keep(self._drafts, Draft(existing or senior, card_no, existing is not None)), []

    # -- photos ------------------------------------------------------------------------------------------

    def capture(self, key: str, session: Session, seconds: float = CAPTURE_S) -> str | None:
        """Three frames from the kiosk camera, enrolled: the outcome's key (None: the draft is gone)."""
        d = self.draft(key)
        if d is None:
            return None
        source = SharedFrames(self.folder)
        with self._lock:
            enroller = self._enroller(session.staff_id)
            try:
                result = capture(source, enroller.check_image, PHOTOS, seconds, policy=CAPTURE_POLICY)
            except SourceError:
                result = CaptureResult(wanted=PHOTOS)
                result.issues[NO_PICTURE] += 1
            finally:
                source.close()  # no frame stays behind
            out = Outcome(d, "camera", key)
            if not result.kept:
                code = result.issues.most_common(1)[0][0] if result.issues else NO_PICTURE
                out.problems.append(words.reason(code, self.lang))
                self._refused(session, d, [code], 0)
                return self._keep(self._outcomes, out)
            if len(result.kept) < PHOTOS and result.issues:
                code = result.issues.most_common(1)[0][0]
                why = words.reason(code, self.lang)
                out.notes.append(self.word("partly", n=len(result.kept), wanted=PHOTOS, why=why))
            res = enroller.enrol(d.senior, [k.photo() for k in result.kept])
            self._finish(out, res, [self.word("frame", n=i + 1) for i in range(len(result.kept))], session)
        return self._keep(self._outcomes, out)

    def upload(self, key: str, files: list[tuple[str, bytes]], session: Session) -> str | None:
        """Uploaded photos (file name, bytes), enrolled: the outcome's key (None: the draft is gone)."""
        d = self.draft(key)
        if d is None:
            return None
        out = Outcome(d, "upload", key)
        rows: list[PhotoRow | None] = []
        photos: list[PhotoIn] = []
        labels: list[str] = []
        for i, (name, data) in enumerate(files):
            shown = name or self.word("photo", n=i + 1)
            if not data and not name:
                continue  # an empty file field
            if len(data) > MAX_PHOTO_BYTES:
                text = words.reason(words.TOO_LARGE, self.lang, size=_mb(len(data)), limit=_mb(MAX_PHOTO_BYTES))
                rows.append(PhotoRow(shown, False, words.TOO_LARGE, text))
                continue
            rows.append(None)  # the enroller's verdict goes here
            labels.append(shown)
            # the label stored with the template: not the file name (it may be the senior's name)
            photos.append(PhotoIn(f"staff-screen upload {i + 1}", data=data))
        with self._lock:
            if not photos:
                if not rows:
                    out.problems.append(words.reason(NO_PHOTOS, self.lang))
                out.photos = [r for r in rows if r is not None]
                self._refused(session, d, [r.code for r in out.photos] or [NO_PHOTOS], len(files))
                return self._keep(self._outcomes, out)
            res = self._enroller(session.staff_id).enrol(d.senior, photos)
            self._finish(out, res, labels, session)
        verdicts = iter(out.photos)
        out.photos = [r if r is not None else next(verdicts) for r in rows]
        return self._keep(self._outcomes, out)

    def _finish(self, out: Outcome, res: EnrolResult, labels: list[str], session: Session) -> None:
        lang = self.lang
        out.enrolled, out.added, out.total = res.enrolled, res.templates_added, res.templates_total
        for label, p in zip(labels, res.photos, strict=True):
            out.photos.append(PhotoRow(label, p.accepted, p.code, "" if p.accepted else words.reason(p.code, lang)))
        out.problems += [words.reason(c, lang) for c in res.problem_codes]
        out.notes += [words.reason(c, lang) for c in res.warning_codes]
        d = out.draft
        if res.enrolled and d.card_no:
            try:
                self.store().set_card_no(d.senior.senior_id, d.card_no)
                self.store().audit(AuditEntry(session.staff_id, "card", f"senior:{d.senior.senior_id}"))
            except StoreError as e:  # enrolled all the same; staff can set the card with the check-in page later
                log.warning("staff screen: meal card of %s not set: %s", d.senior.senior_id, e)
                out.notes.append(self.word(CARD_TAKEN, card=d.card_no, other="?"))
        if not res.enrolled:
            codes = res.problem_codes + [p.code for p in res.photos if p.code]
            self._refused(session, d, codes, len(res.photos))
        # ids and counts only: this goes to the journal
        log.info(
            "staff screen: enrolment of %s by %s via %s: %d template(s) added, refusals %s",
            d.senior.senior_id, session.staff_id, out.via, res.templates_added,
            ",".join(res.problem_codes + [p.code for p in res.photos if p.code]) or "none",
        )

    def _refused(self, session: Session, d: Draft, codes: list[str], photos: int) -> None:
        self.store().audit(AuditEntry(
            session.staff_id, "enrol_refused", f"senior:{d.senior.senior_id}",
            {"codes": sorted(set(codes)), "photos": photos, "new_senior": not d.known},
        ))

    # -- the camera preview -----------------------------------------------------------------------------

    def preview(self) -> bytes | None:
        """The kiosk camera's latest picture (JPEG), asking the daemon to keep sharing for a while."""
        frameshare.request(self.folder)
        got = frameshare.latest(self.folder)
        return None if got is None else got.jpeg

    def stop_preview(self) -> None:
        frameshare.cancel(self.folder)

    def word(self, key: str, **kw: object) -> str:
        text = _W[key][self.lang]
        return text.format(**kw) if kw else text


def _mb(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MB"


_W: dict[str, dict[Language, str]] = {
    BAD_DATE: {
        "zh": "出生日期不对：请按 年-月-日 填写，例如 1948-03-15",
        "en": "Birth date not understood: write it as year-month-day, e.g. 1948-03-15",
    },
    CARD_TAKEN: {
        "zh": "餐卡号 {card} 已属于另一位老人（{other}）：请核对卡号",
        "en": "Meal card {card} is already another senior's ({other}): check the number",
    },
    NOT_FOUND: {"zh": "名册中没有编号 {senior_id}", "en": "No senior with id {senior_id} on the roster"},
    "partly": {
        "zh": "只拍到 {n} 张合格的照片（要 {wanted} 张）。最常见的问题：{why}",
        "en": "Only {n} good picture(s) of {wanted}. Most often: {why}",
    },
    "frame": {"zh": "第 {n} 张", "en": "Picture {n}"},
    "photo": {"zh": "照片 {n}", "en": "Photo {n}"},
}
