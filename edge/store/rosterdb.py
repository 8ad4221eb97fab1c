"""The district roster in the kiosk's store (issue 13): applying the district's batches, the version reached,
template uploads waiting for the district's answer, and erasure receipts owed.

Every batch is applied in one write transaction, in version order, idempotently (a change at or below the
version already reached is skipped; a change carries the senior's whole state, so applying it twice gives the
same rows). Templates arrive sealed for transit (edge.delivery.rosterwire) and are re-sealed under this
kiosk's at-rest key. An `absent` change deletes the senior, their templates (and kept photos) and their
uploads; secure_delete zeroes the pages and the WAL is truncated afterwards, so a scan of the files finds
nothing of them (meal events stay: they carry no biometric data and are financial records).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

import numpy as np
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from edge.delivery import rosterwire as rw
from edge.recognition.refresh import CHECKIN_SOURCE_PREFIX
from edge.security.atrest import AtRestError
from edge.store.auditlog import AuditEntry
from edge.store.base import StoreBase
from edge.store.models import SEALED_EMBEDDING_BYTES, FaceTemplateRow, RosterStateRow, RosterUploadRow, SeniorRow
from edge.store.records import EMB_DTYPE, StoreError, utcnow
from edge.store.staffdb import add_audit

log = logging.getLogger(__name__)

#: the source of a template that came from the district roster (not enrolled at this kiosk)
DISTRICT_SOURCE = "district"
#: who the audit log names for what the roster link does on its own
ROSTER_ACTOR = "district-roster"
_PLACEHOLDER = bytes(SEALED_EMBEDDING_BYTES)

Outcome = Literal["applied", "duplicate", "gap", "wrong_model", "snapshot_part", "snapshot_restart"]


@dataclass(frozen=True)
class RosterState:
    version: int
    model_id: str | None
    last_sync_at: datetime | None
    last_batch_at: datetime | None
    snapshot_to: int | None
    snapshot_next: int | None
    resync_requested: bool
    erased_pending: dict[str, int]


@dataclass(frozen=True)
class ApplyResult:
    outcome: Outcome
    #: the version reached after the batch
    version: int
    #: seniors whose biometric data this batch erased on the district's removal, with templates deleted
    erased: dict[str, int] = field(default_factory=dict)
    #: changes actually applied (0 for a duplicate)
    changed: int = 0
    #: templates that could not be opened (logged; the rest of the batch is applied)
    bad_templates: int = 0
    #: the seniors the batch changed (the gallery rebuilds only what involves them)
    seniors: frozenset[str] = frozenset()


@dataclass(frozen=True)
class UploadInfo:
    upload_id: str
    senior_id: str
    state: str
    templates: int
    created_at: datetime
    sent_at: datetime | None
    answered_at: datetime | None
    reason_code: str | None
    reason: str | None
    version: int | None


@dataclass(frozen=True)
class OutgoingUpload:
    upload_id: str
    senior_id: str
    model_id: str
    #: (template_uid, quality, float32[128]) of the templates still in the store
    templates: list[tuple[str, float, np.ndarray]]


def queue_upload(s: Session, senior_id: str, rows: Sequence[FaceTemplateRow], now: datetime) -> str:
    """Queue the enrolment's templates for the district, inside the caller's write transaction."""
    upload_id = str(uuid.uuid4())
    payload = {"model_id": rows[0].model_id, "template_uids": [r.template_uid for r in rows]}
    s.add(RosterUploadRow(upload_id=upload_id, senior_id=senior_id, payload=json.dumps(payload), state="pending",
                          created_at=now))
    return upload_id


def _chunks(seq: Sequence[str], n: int = 500) -> list[Sequence[str]]:
    return [seq[i : i + n] for i in range(0, len(seq), n)]


def _is_local(source: str) -> bool:
    return source.startswith(CHECKIN_SOURCE_PREFIX)


class RosterStore(StoreBase):
    """The roster link's side of the store."""

    # -- state ---------------------------------------------------------------------------------------

    @staticmethod
    def _state_row(s: Session) -> RosterStateRow:
        row = s.get(RosterStateRow, 1)
        if row is None:  # only if someone deleted it by hand
            row = RosterStateRow(id=1, version=0, resync_requested=0, erased_pending={}, uploads_enabled=0)
            s.add(row)
            s.flush()
        return row

    def roster_state(self) -> RosterState:
        with self._read("could not read the roster state") as s:
            r = s.get(RosterStateRow, 1)
            if r is None:
                return RosterState(0, None, None, None, None, None, False, {})
            return RosterState(r.version, r.model_id, r.last_sync_at, r.last_batch_at, r.snapshot_to,
                               r.snapshot_next, bool(r.resync_requested), dict(r.erased_pending or {}))

    def set_roster_uploads(self, enabled: bool) -> None:
        """Whether enrolments on this store queue their templates for the district (the daemon and meal-enroll
        set it from [roster] enabled, so the staff screen's enrolment follows the same setting)."""
        with self._write("could not record the roster setting") as s:
            self._state_row(s).uploads_enabled = int(enabled)

    def roster_uploads_enabled(self) -> bool:
        with self._read("could not read the roster setting") as s:
            r = s.get(RosterStateRow, 1)
            return bool(r is not None and r.uploads_enabled)

    def request_resync(self) -> None:
        """`meal-edge roster resync`: the running daemon's link asks the district for a full snapshot."""
        with self._write("could not ask for a roster resync") as s:
            self._state_row(s).resync_requested = 1

    def take_resync_request(self) -> bool:
        """Whether `meal-edge roster resync` asked for a snapshot (and clear it). Read first: the link asks every
        poll, and a write transaction (an fsync) every second for nothing would slow the kiosk's own writes."""
        if not self.roster_state().resync_requested:
            return False
        with self._write("could not read the roster resync request") as s:
            row = self._state_row(s)
            asked = bool(row.resync_requested)
            row.resync_requested = 0
            return asked

    def touch_roster_sync(self, at: datetime | None = None) -> None:
        with self._write("could not record the roster sync time") as s:
            self._state_row(s).last_sync_at = at or utcnow()

    def receipt_acknowledged(self, erased: dict[str, int]) -> None:
        """The broker has the receipt naming these erasures: they are no longer owed."""
        if not erased:
            return
        with self._write("could not record the erasure receipt") as s:
            row = self._state_row(s)
            left = {k: v for k, v in (row.erased_pending or {}).items() if k not in erased}
            row.erased_pending = left

    # -- applying a batch ----------------------------------------------------------------------------

    def apply_roster_batch(self, batch: rw.RosterBatch, transport_key: bytes, model_id: str) -> ApplyResult:
        """Apply one verified batch (its signature was checked by the link) in one transaction."""
        check_roster_batch_version(batch)
        if batch.model_id != model_id:
            log.error("roster batch for model %s ignored: this kiosk runs %s (the sync request names it)",
                      batch.model_id, model_id)
            return ApplyResult("wrong_model", self.roster_state().version)
        # opened before the transaction (pure work): a template that does not open is skipped, not fatal
        opened: dict[tuple[str, str], np.ndarray] = {}
        bad = 0
        for c in batch.changes:
            if c.op == "state" and c.state is not None:
                for t in c.state.templates:
                    if t.model_id != model_id:
                        continue
                    try:
                        opened[(c.senior_id, t.template_id)] = rw.open_template(transport_key, c.senior_id, t)
                    except rw.WireError as e:
                        bad += 1
                        log.error("roster: senior %s: %s; template skipped", c.senior_id, e)
        erased: dict[str, int] = {}
        with self._write("could not apply a roster batch") as s:
            st = self._state_row(s)
            now = utcnow()
            st.last_sync_at = now
            if batch.full:
                outcome, changed, gone = self._apply_snapshot_part(s, st, batch, opened, model_id, erased)
                touched = {c.senior_id for c in batch.changes} | set(gone)
                erasing = bool(gone) or any(c.op == "absent" for c in batch.changes)
            else:
                if batch.to_version <= st.version:
                    return ApplyResult("duplicate", st.version)
                if batch.from_version > st.version:
                    return ApplyResult("gap", st.version)
                todo = [c for c in sorted(batch.changes, key=lambda c: c.version) if c.version > st.version]
                self._apply_changes(s, todo, opened, model_id, erased)
                changed = len(todo)
                touched = {c.senior_id for c in todo}
                erasing = any(c.op == "absent" for c in todo)
                st.version = batch.to_version
                outcome = "applied"
            st.model_id = model_id
            st.last_batch_at = now
            if erased:
                add_audit(s, AuditEntry(ROSTER_ACTOR, "roster_erase", "roster",
                                        {"seniors": sorted(erased), "templates": sum(erased.values()),
                                         "version": st.version}))
                pending = dict(st.erased_pending or {})
                for sid, n in erased.items():
                    pending[sid] = pending.get(sid, 0) + n
                st.erased_pending = pending
            version = st.version
        if erasing and not self._checkpoint_truncate():
            # the erased pages' old images must not stay in the WAL either
            log.warning("store %s: roster erasure applied, WAL not truncated yet (a reader was busy)", self.path)
        return ApplyResult(outcome, version, erased, changed, bad, frozenset(touched))

    def _apply_snapshot_part(
        self, s: Session, st: RosterStateRow, batch: rw.RosterBatch, opened: dict[tuple[str, str], np.ndarray],
        model_id: str, erased: dict[str, int],
    ) -> tuple[Outcome, int, list[str]]:
        if batch.part == 1:
            st.snapshot_to, st.snapshot_next, st.snapshot_seen = batch.to_version, 1, []
        elif st.snapshot_to != batch.to_version or st.snapshot_next != batch.part:
            # a part missing or from another snapshot: start again (the link asks for a new snapshot)
            st.snapshot_to = st.snapshot_next = None
            st.snapshot_seen = None
            return "snapshot_restart", 0, []
        seen = list(st.snapshot_seen or [])
        todo = sorted(batch.changes, key=lambda c: c.version)
        self._apply_changes(s, todo, opened, model_id, erased)
        seen += [c.senior_id for c in todo if c.op == "state"]
        if batch.part < batch.parts:
            st.snapshot_next = batch.part + 1
            st.snapshot_seen = seen
            return "snapshot_part", len(batch.changes), []
        # the last part: whoever the snapshot did not name is no longer in this kiosk's roster, except a senior
        # enrolled here whose upload the district has not answered yet
        keep = set(seen) | set(
            s.scalars(select(RosterUploadRow.senior_id).where(RosterUploadRow.state == "pending")).all()
        )
        gone = [sid for sid in s.scalars(select(SeniorRow.senior_id)).all() if sid not in keep]
        for sid in gone:
            self._erase(s, sid)
        st.version = batch.to_version
        st.snapshot_to = st.snapshot_next = None
        st.snapshot_seen = None
        return "applied", len(batch.changes) + len(gone), gone

    def _apply_changes(
        self, s: Session, changes: list[rw.Change], opened: dict[tuple[str, str], np.ndarray], model_id: str,
        erased: dict[str, int],
    ) -> None:
        """Apply changes in order. What they touch is read in a few queries up front (a catch-up brings
        thousands): the seniors, their templates, their pending uploads and the holders of their card numbers."""
        ids = sorted({c.senior_id for c in changes})
        cards = sorted({c.state.card_no for c in changes if c.state is not None and c.state.card_no})
        rows: dict[str, SeniorRow] = {}
        temps: dict[str, list[tuple[int, str | None, str, str]]] = {}
        pending: dict[str, set[str]] = {}
        for part in _chunks(ids):
            rows.update({r.senior_id: r for r in s.scalars(select(SeniorRow).where(SeniorRow.senior_id.in_(part)))})
            ft = FaceTemplateRow
            for tid, sid, uid, m, src in s.execute(select(ft.id, ft.senior_id, ft.template_uid, ft.model_id, ft.source)
                                                   .where(ft.senior_id.in_(part))):
                temps.setdefault(sid, []).append((tid, uid, m, src))
            for sid, payload in s.execute(select(RosterUploadRow.senior_id, RosterUploadRow.payload).where(
                    RosterUploadRow.senior_id.in_(part), RosterUploadRow.state == "pending")):
                pending.setdefault(sid, set()).update(json.loads(payload).get("template_uids", []))
        holder: dict[str, SeniorRow] = {}
        for part in _chunks(cards):
            for r in s.scalars(select(SeniorRow).where(SeniorRow.card_no.in_(part))):
                rows.setdefault(r.senior_id, r)
                holder[str(r.card_no)] = rows[r.senior_id]
        now = utcnow()
        drop: list[int] = []
        new: list[tuple[FaceTemplateRow, np.ndarray]] = []
        for c in changes:
            if c.op == "absent" or c.state is None:
                if drop:  # earlier changes of this batch first
                    s.execute(delete(FaceTemplateRow).where(FaceTemplateRow.id.in_(drop)))
                    drop = []
                s.flush()
                n = self._erase(s, c.senior_id)
                if c.senior_id in rows:
                    s.expunge(rows.pop(c.senior_id))
                temps.pop(c.senior_id, None)
                if c.why == "removed":
                    erased[c.senior_id] = erased.get(c.senior_id, 0) + n
                continue
            st = c.state
            card = st.card_no or None
            old = holder.get(card) if card else None
            if old is not None and old.senior_id != c.senior_id:
                # the district roster owns the card numbers: a card now someone else's leaves its old holder
                old.card_no, old.updated_at = None, now
                s.flush()
            row = rows.get(c.senior_id)
            if row is None:
                row = rows[c.senior_id] = SeniorRow(senior_id=c.senior_id, created_at=now)
                s.add(row)
            if row.card_no and row.card_no != card:
                holder.pop(row.card_no, None)
            row.name, row.birth_date, row.hukou, row.status = st.name, st.birth_date, st.hukou, st.status
            row.card_no, row.home_centre, row.updated_at = card, st.home_centre, now
            if card:
                holder[card] = row
            wanted = {t.template_id: t for t in st.templates if t.model_id == model_id}
            keep_uids = pending.get(c.senior_id, set())
            have = temps.get(c.senior_id, [])
            drop += [tid for tid, uid, m, src in have
                     if m == model_id and uid not in wanted and uid not in keep_uids and not _is_local(src)]
            present = {uid for _, uid, _, _ in have}
            for uid, t in wanted.items():
                if uid in present or (c.senior_id, uid) not in opened:
                    continue
                tr = FaceTemplateRow(senior_id=c.senior_id, embedding=_PLACEHOLDER, model_id=t.model_id,
                                     quality=float(t.quality), source=DISTRICT_SOURCE, photo=None, created_at=now,
                                     template_uid=uid)
                new.append((tr, opened[(c.senior_id, uid)]))
                temps.setdefault(c.senior_id, []).append((-1, uid, t.model_id, DISTRICT_SOURCE))
        if drop:
            s.execute(delete(FaceTemplateRow).where(FaceTemplateRow.id.in_(drop)))
        if not new:
            return
        s.flush()
        uids = [tr.template_uid for tr, _ in new]
        for part in _chunks([u for u in uids if u is not None]):
            # a template id held by another senior (moved by the district): the district's word wins
            s.execute(delete(FaceTemplateRow).where(FaceTemplateRow.template_uid.in_(part)))
        s.add_all([tr for tr, _ in new])
        s.flush()
        for tr, vec in new:
            tr.embedding = self.cipher.seal(np.asarray(vec, dtype=EMB_DTYPE).tobytes(), tr.senior_id, tr.id)

    @staticmethod
    def _erase(s: Session, senior_id: str) -> int:
        n = int(s.scalar(select(func.count()).where(FaceTemplateRow.senior_id == senior_id)) or 0)
        s.execute(delete(FaceTemplateRow).where(FaceTemplateRow.senior_id == senior_id))
        s.execute(delete(RosterUploadRow).where(RosterUploadRow.senior_id == senior_id))
        s.execute(delete(SeniorRow).where(SeniorRow.senior_id == senior_id))
        return n

    # -- uploads ---------------------------------------------------------------------------------------

    def pending_uploads(self, limit: int = 20, skip: Collection[str] = ()) -> list[OutgoingUpload]:
        """Uploads the district has not answered (except `skip`: sent a moment ago), oldest first, with their
        templates opened (to be sealed for transit by the link). Templates deleted meanwhile are left out."""
        with self._read("could not read the roster uploads") as s:
            q = select(RosterUploadRow).where(RosterUploadRow.state == "pending")
            if skip:
                q = q.where(RosterUploadRow.upload_id.not_in(list(skip)))
            ups = s.scalars(q.order_by(RosterUploadRow.created_at).limit(limit)).all()
            out = []
            for u in ups:
                p = json.loads(u.payload)
                rows = s.execute(select(FaceTemplateRow.id, FaceTemplateRow.template_uid, FaceTemplateRow.quality,
                                        FaceTemplateRow.embedding)
                                 .where(FaceTemplateRow.template_uid.in_(p["template_uids"]),
                                        FaceTemplateRow.senior_id == u.senior_id)).all()
                temps = []
                for tid, uid, quality, blob in rows:
                    try:
                        plain = self.cipher.open(blob, u.senior_id, tid)
                    except AtRestError as e:
                        log.error("store %s: %s; not uploaded", self.path, e)
                        continue
                    temps.append((str(uid), float(quality), np.frombuffer(plain, dtype=EMB_DTYPE).astype(np.float32)))
                out.append(OutgoingUpload(u.upload_id, u.senior_id, str(p["model_id"]), temps))
            return out

    def mark_upload_sent(self, upload_id: str, at: datetime | None = None) -> None:
        with self._write("could not record a roster upload as sent") as s:
            s.execute(update(RosterUploadRow).where(RosterUploadRow.upload_id == upload_id)
                      .values(sent_at=at or utcnow()))

    def answer_upload(self, ack: rw.UploadAck) -> int:
        """Record the district's answer. Refused: the templates of that upload are deleted here (the kiosk
        must not recognise someone the district will not pay for), audited; returns how many."""
        with self._write("could not record the district's answer to an upload") as s:
            u = s.get(RosterUploadRow, ack.upload_id)
            if u is None or u.senior_id != ack.senior_id:
                log.warning("roster: answer to unknown upload %s ignored", ack.upload_id)
                return 0
            now = utcnow()
            self._state_row(s).last_sync_at = now
            if u.state != "pending":
                return 0  # a repeated answer
            u.answered_at = now
            if ack.accepted:
                u.state, u.version = "accepted", ack.version
                return 0
            u.state, u.reason_code = "refused", ack.reason_code
            u.reason = ack.reason or rw.REFUSALS.get(ack.reason_code or "", ack.reason_code)
            uids = json.loads(u.payload).get("template_uids", [])
            n = int(s.scalar(select(func.count()).where(FaceTemplateRow.template_uid.in_(uids))) or 0)
            s.execute(delete(FaceTemplateRow).where(FaceTemplateRow.template_uid.in_(uids)))
            sen = s.get(SeniorRow, u.senior_id)
            if sen is not None:
                sen.updated_at = now  # the gallery reloads without these templates
            add_audit(s, AuditEntry(ROSTER_ACTOR, "upload_refused", f"senior:{u.senior_id}",
                                    {"upload_id": u.upload_id, "reason_code": ack.reason_code, "templates": n}))
        self._checkpoint_truncate()
        return n

    def uploads(self, senior_id: str | None = None, states: Sequence[str] | None = None) -> list[UploadInfo]:
        q = select(RosterUploadRow).order_by(RosterUploadRow.created_at)
        if senior_id is not None:
            q = q.where(RosterUploadRow.senior_id == senior_id)
        if states:
            q = q.where(RosterUploadRow.state.in_(list(states)))
        with self._read("could not read the roster uploads") as s:
            return [UploadInfo(u.upload_id, u.senior_id, u.state, len(json.loads(u.payload).get("template_uids", [])),
                               u.created_at, u.sent_at, u.answered_at, u.reason_code, u.reason, u.version)
                    for u in s.scalars(q)]

    def roster_rows(self) -> list[tuple[str, str, str, str, str, str | None, str | None, tuple[str, ...]]]:
        """(senior_id, name, birth_date, hukou, status, card_no, home_centre, template uids of every model)
        for every senior, ordered: what a row-by-row comparison with the district needs."""
        with self._read("could not read the roster") as s:
            uids: dict[str, list[str]] = {}
            for sid, uid in s.execute(select(FaceTemplateRow.senior_id, FaceTemplateRow.template_uid)):
                uids.setdefault(sid, []).append(str(uid))
            return [(r.senior_id, r.name, r.birth_date.isoformat(), r.hukou, r.status, r.card_no, r.home_centre,
                     tuple(sorted(uids.get(r.senior_id, []))))
                    for r in s.scalars(select(SeniorRow).order_by(SeniorRow.senior_id))]


def check_roster_batch_version(batch: rw.RosterBatch) -> None:
    """A batch whose changes are not within (from_version, to_version] is the district's bug: refused."""
    for c in batch.changes:
        if not batch.full and not batch.from_version < c.version <= batch.to_version:
            raise StoreError(f"roster batch {batch.msg_id}: change {c.version} outside "
                             f"({batch.from_version}, {batch.to_version}]")
