"""The roster in the store: seniors and their face templates (enrolment photos and check-in refreshes)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Collection
from datetime import datetime

import numpy as np
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from edge.meals.rules import Senior
from edge.recognition.refresh import CHECKIN_SOURCE_PREFIX
from edge.security.atrest import AtRestError
from edge.security.guards import Throttle
from edge.store.auditlog import AuditEntry
from edge.store.base import StoreBase
from edge.store.models import SEALED_EMBEDDING_BYTES, FaceTemplateRow, RosterUploadRow, SeniorRow
from edge.store.records import (
    EMB_DTYPE,
    IS_CHECKIN,
    RemovalReport,
    StoreError,
    TemplateIn,
    check_status,
    embedding_bytes,
    to_senior,
    utcnow,
)
from edge.store.rosterdb import queue_upload
from edge.store.staffdb import add_audit

log = logging.getLogger(__name__)
#: a template that does not decrypt is logged at most once a minute per senior (the gallery reloads often)
_BAD_TEMPLATE_LOG = Throttle(60.0)
#: what a new template row holds until it is flushed and sealed with its id (same size: the CHECK holds)
_PLACEHOLDER = bytes(SEALED_EMBEDDING_BYTES)


class SeniorStore(StoreBase):
    """Seniors and their face templates."""

    def add_senior(self, senior: Senior) -> None:
        check_status(senior.status)
        with self._write(f"could not add senior {senior.senior_id!r}") as s:
            if s.get(SeniorRow, senior.senior_id) is not None:
                raise StoreError(f"senior {senior.senior_id!r} is already enrolled")
            now = utcnow()
            s.add(
                SeniorRow(
                    senior_id=senior.senior_id,
                    name=senior.name,
                    birth_date=senior.birth_date,
                    hukou=senior.hukou,
                    status=senior.status,
                    created_at=now,
                    updated_at=now,
                )
            )

    def upsert_senior(self, senior: Senior) -> None:
        check_status(senior.status)
        with self._write(f"could not save senior {senior.senior_id!r}") as s:
            now = utcnow()
            row = s.get(SeniorRow, senior.senior_id)
            if row is None:
                row = SeniorRow(senior_id=senior.senior_id, created_at=now)
                s.add(row)
            row.name = senior.name
            row.birth_date = senior.birth_date
            row.hukou = senior.hukou
            row.status = senior.status
            row.updated_at = now

    def get_senior(self, senior_id: str) -> Senior | None:
        with self._read(f"could not read senior {senior_id!r}") as s:
            row = s.get(SeniorRow, senior_id)
            return None if row is None else to_senior(row)

    def list_seniors(self) -> list[tuple[Senior, int]]:
        with self._read("could not list seniors") as s:
            counts = (
                select(FaceTemplateRow.senior_id, func.count().label("n"))
                .group_by(FaceTemplateRow.senior_id)
                .subquery()
            )
            rows = s.execute(
                select(SeniorRow, func.coalesce(counts.c.n, 0))
                .outerjoin(counts, counts.c.senior_id == SeniorRow.senior_id)
                .order_by(SeniorRow.senior_id)
            ).all()
            return [(to_senior(r), int(n)) for r, n in rows]

    def set_card_no(self, senior_id: str, card_no: str | None) -> None:
        """The number on the senior's meal card (None: none). A number already on another senior's card is
        refused (StoreError naming them): two seniors cannot share a card."""
        card = (card_no or "").strip() or None
        with self._write(f"could not set the meal card of senior {senior_id!r}") as s:
            row = s.get(SeniorRow, senior_id)
            if row is None:
                raise StoreError(f"no senior with id {senior_id!r}")
            if card is not None:
                other = s.scalar(
                    select(SeniorRow.senior_id).where(SeniorRow.card_no == card, SeniorRow.senior_id != senior_id)
                )
                if other is not None:
                    raise StoreError(f"meal card {card} is already senior {other}'s: check the card number")
            row.card_no = card
            row.updated_at = utcnow()

    def roster(self) -> list[tuple[str, str, str | None]]:
        """(senior_id, name, card_no) of every senior, for finding one (edge.meals.search)."""
        with self._read("could not list seniors") as s:
            q = select(SeniorRow.senior_id, SeniorRow.name, SeniorRow.card_no).order_by(SeniorRow.senior_id)
            rows = s.execute(q)
            return [(sid, name, card) for sid, name, card in rows]

    def set_status(self, senior_id: str, status: str, audit: AuditEntry | None = None) -> None:
        check_status(status)
        with self._write(f"could not set the status of senior {senior_id!r}") as s:
            row = s.get(SeniorRow, senior_id)
            if row is None:
                raise StoreError(f"no senior with id {senior_id!r}")
            row.status = status
            row.updated_at = utcnow()
            add_audit(s, audit)

    def remove_senior(self, senior_id: str, audit: AuditEntry | None = None) -> RemovalReport:
        """Erase a senior and every template (and photo) for good. Meal events stay for audit."""
        with self._write(f"could not remove senior {senior_id!r}") as s:
            row = s.get(SeniorRow, senior_id)
            if row is None:
                raise StoreError(f"no senior with id {senior_id!r}")
            name = row.name
            n_templates, n_photos = s.execute(
                select(func.count(), func.count(FaceTemplateRow.photo)).where(
                    FaceTemplateRow.senior_id == senior_id
                )
            ).one()
            s.execute(delete(FaceTemplateRow).where(FaceTemplateRow.senior_id == senior_id))
            s.execute(delete(RosterUploadRow).where(RosterUploadRow.senior_id == senior_id))
            s.delete(row)
            add_audit(s, audit)
        truncated = self._checkpoint_truncate()
        if not truncated:
            log.warning(
                "store %s: senior %s erased, but the WAL could not be truncated yet (a reader was busy); "
                "old pages leave the WAL at the next checkpoint",
                self.path,
                senior_id,
            )
        return RemovalReport(senior_id, name, int(n_templates), int(n_photos), truncated)

    def _seal_rows(
        self, s: Session, rows: list[FaceTemplateRow], blobs: list[bytes], photos: list[bytes | None]
    ) -> None:
        """Give new template rows their sealed embedding (and photo): the row id is part of the associated
        data, so the rows are flushed first with a placeholder of the sealed size."""
        s.flush()
        for row, blob, photo in zip(rows, blobs, photos, strict=True):
            row.embedding = self.cipher.seal(blob, row.senior_id, row.id)
            row.photo = None if photo is None else self.cipher.seal(photo, row.senior_id, row.id, kind="photo")

    # -- templates ---------------------------------------------------------------------------------

    def add_templates(
        self, senior_id: str, templates: list[TemplateIn], audit: AuditEntry | None = None, *, upload: bool = False
    ) -> int:
        """Store an enrolment's templates. `upload`: also queue them for the district roster (issue 13) in the
        same transaction (edge/store/rosterdb.py), so none is kept here without being sent."""
        blobs = [embedding_bytes(t.embedding, senior_id, t.source) for t in templates]
        with self._write(f"could not store templates of senior {senior_id!r}") as s:
            senior = s.get(SeniorRow, senior_id)
            if senior is None:
                raise StoreError(f"no senior with id {senior_id!r}")
            now = utcnow()
            senior.updated_at = now  # so signature() sees the change even if template ids are reused
            rows = [
                FaceTemplateRow(
                    senior_id=senior_id,
                    embedding=_PLACEHOLDER,
                    model_id=t.model_id,
                    quality=float(t.quality),
                    source=t.source,
                    photo=None,
                    created_at=now,
                    template_uid=str(uuid.uuid4()),
                )
                for t in templates
            ]
            s.add_all(rows)
            self._seal_rows(s, rows, blobs, [t.photo if self.keep_photos else None for t in templates])
            if upload:
                # in the same transaction: templates kept here are always on their way to the district
                queue_upload(s, senior_id, rows, now)
            add_audit(s, audit)
        return len(templates)

    def templates(
        self, model_id: str | None = None, seniors: Collection[str] | None = None
    ) -> list[tuple[str, np.ndarray]]:
        """(senior_id, float32[128]) for every template, of active and inactive seniors alike (the
        matcher must still recognise a suspended senior to tell them to see staff). `seniors`: only theirs."""
        q = select(FaceTemplateRow.senior_id, FaceTemplateRow.id, FaceTemplateRow.embedding).order_by(
            FaceTemplateRow.senior_id, FaceTemplateRow.id
        )
        if model_id is not None:
            q = q.where(FaceTemplateRow.model_id == model_id)
        if seniors is not None:
            q = q.where(FaceTemplateRow.senior_id.in_(list(seniors)))
        with self._read("could not read face templates") as s:
            rows = s.execute(q).all()
        out = []
        for sid, tid, blob in rows:
            try:
                plain = self.cipher.open(blob, sid, tid)
            except AtRestError as e:
                # altered, moved to another row or senior, or sealed under another key: never matched
                _BAD_TEMPLATE_LOG.log(log, logging.ERROR, f"bad-template:{sid}", "store %s: %s; skipped", self.path, e)
                continue
            out.append((sid, np.frombuffer(plain, dtype=EMB_DTYPE).astype(np.float32)))
        return out

    def seniors_only_in_other_models(self, model_id: str) -> dict[str, int]:
        """other model_id -> seniors with templates of that model and none of `model_id`: the daemon cannot
        recognise them (enrolled before the model or the mirror setting changed; they must be re-enrolled)."""
        q = select(FaceTemplateRow.senior_id, FaceTemplateRow.model_id).distinct()
        with self._read("could not read face template models") as s:
            rows = s.execute(q).all()
        have = {sid for sid, m in rows if m == model_id}
        out: dict[str, set[str]] = {}
        for sid, m in rows:
            if m != model_id and sid not in have:
                out.setdefault(m, set()).add(sid)
        return {m: len(v) for m, v in sorted(out.items())}

    def signature(self) -> tuple[object, ...]:
        """Changes whenever seniors or templates change (added, removed, status set): the daemon polls
        it to reload its gallery after `meal-enroll` ran in another process. Cheap: a few aggregates."""
        with self._read("could not read the enrolment signature") as s:
            seniors = s.execute(select(func.count(), func.max(SeniorRow.updated_at))).one()
            templates = s.execute(
                select(func.count(), func.max(FaceTemplateRow.id), func.total(FaceTemplateRow.id))
            ).one()
            return (*seniors, *templates)

    def template_count(self, senior_id: str) -> int:
        with self._read(f"could not count templates of {senior_id!r}") as s:
            n = s.scalar(select(func.count()).where(FaceTemplateRow.senior_id == senior_id))
            return int(n or 0)

    def photo_template_count(self, senior_id: str) -> int:
        """Templates from enrolment photos only (check-in templates left out): the enrolment capacity."""
        with self._read(f"could not count templates of {senior_id!r}") as s:
            n = s.scalar(
                select(func.count()).where(
                    FaceTemplateRow.senior_id == senior_id, ~IS_CHECKIN
                )
            )
            return int(n or 0)

    def add_checkin_template(
        self, senior_id: str, template: TemplateIn, keep: int, at: datetime | None = None
    ) -> list[int]:
        """Store a template refreshed from a check-in (source "checkin:<event_id>") and, in the same
        transaction, erase the oldest check-in templates so that at most `keep` remain. Photo templates
        are never touched. Returns the ids of the erased templates. `at` (default: now) is recorded as
        created_at: the pipeline passes its decision time, so the rate limit (last_checkin_template_at)
        follows the same clock as the decisions, also in `replay` with a pinned clock."""
        if not template.source.startswith(CHECKIN_SOURCE_PREFIX):
            raise StoreError(f"a check-in template's source must start with {CHECKIN_SOURCE_PREFIX!r}")
        if keep < 1:
            raise StoreError(f"keep must be at least 1, not {keep}")
        blob = embedding_bytes(template.embedding, senior_id, template.source)
        with self._write(f"could not store the check-in template of senior {senior_id!r}") as s:
            senior = s.get(SeniorRow, senior_id)
            if senior is None:
                raise StoreError(f"no senior with id {senior_id!r}")
            now = utcnow()
            senior.updated_at = now  # signature() changes: the daemon reloads its gallery
            if at is not None and (at.tzinfo is None or at.utcoffset() is None):
                raise StoreError(f"naive datetime {at!r}: the store keeps only timezone-aware times")
            row = FaceTemplateRow(
                senior_id=senior_id,
                embedding=_PLACEHOLDER,
                model_id=template.model_id,
                quality=float(template.quality),
                source=template.source,
                photo=None,  # never a face photo from the kiosk camera
                created_at=now if at is None else at,
                template_uid=str(uuid.uuid4()),
            )
            s.add(row)
            self._seal_rows(s, [row], [blob], [None])
            s.flush()
            ids = s.scalars(
                select(FaceTemplateRow.id)
                .where(FaceTemplateRow.senior_id == senior_id, IS_CHECKIN)
                .order_by(FaceTemplateRow.id.desc())  # insertion order, whatever the clock did
            ).all()
            erased = [int(i) for i in ids[keep:]]
            if erased:
                s.execute(delete(FaceTemplateRow).where(FaceTemplateRow.id.in_(erased)))
        return sorted(erased)

    def last_checkin_template_at(self, senior_id: str) -> datetime | None:
        """When the senior's newest check-in template was stored (UTC), None if they have none."""
        with self._read(f"could not read templates of {senior_id!r}") as s:
            rows = s.scalars(
                select(FaceTemplateRow.created_at).where(
                    FaceTemplateRow.senior_id == senior_id, IS_CHECKIN
                )
            ).all()
            return max(rows) if rows else None

    def template_info(self, senior_id: str) -> list[tuple[int, str, float, str, bool]]:
        """(id, model_id, quality, source, has_photo) per template, for `meal-enroll show`."""
        with self._read(f"could not read templates of {senior_id!r}") as s:
            rows = s.execute(
                select(
                    FaceTemplateRow.id,
                    FaceTemplateRow.model_id,
                    FaceTemplateRow.quality,
                    FaceTemplateRow.source,
                    FaceTemplateRow.photo.is_not(None),
                )
                .where(FaceTemplateRow.senior_id == senior_id)
                .order_by(FaceTemplateRow.id)
            ).all()
            return [(int(i), m, float(q), src, bool(p)) for i, m, q, src, p in rows]

