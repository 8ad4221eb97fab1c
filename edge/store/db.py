"""`Store`: the only place with SQL. One SQLite file, WAL, synchronous=FULL, secure_delete.

Concurrency: the pipeline and the publisher thread share one Store. Writes go through one
threading.Lock and `BEGIN IMMEDIATE` (which also serialises writers in other processes, such as
`meal-enroll` run while the daemon is up); reads use their own short sessions and, thanks to WAL,
never wait for a writer. Every unit of work is its own session and transaction.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import create_engine, delete, event, func, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from edge.delivery.events import MealEvent, build_payload, dumps
from edge.meals.rules import STATUSES, PriorMeal, Senior
from edge.recognition.refresh import CHECKIN_SOURCE_PREFIX
from edge.security.atrest import AtRestError, TemplateCipher
from edge.security.guards import Throttle
from edge.store import migrations
from edge.store.auditlog import AuditEntry
from edge.store.files import DamagedStore, cipher_for, make_private, quick_check
from edge.store.models import (
    EMBEDDING_BYTES,
    SEALED_EMBEDDING_BYTES,
    ConfirmationRow,
    FaceTemplateRow,
    KioskSeqRow,
    MealEventRow,
    OutboxRow,
    SchemaVersion,
    SeniorRow,
)
from edge.store.staffdb import StaffMixin, add_audit

log = logging.getLogger(__name__)
#: a template that does not decrypt is logged at most once a minute per senior (the gallery reloads often)
_BAD_TEMPLATE_LOG = Throttle(60.0)

EMBEDDING_DIM = EMBEDDING_BYTES // 4
# little-endian float32 on disk whatever the host, so a store file can move between machines
_EMB_DTYPE = np.dtype("<f4")


# templates refreshed from check-ins (edge.recognition.refresh): compared exactly (LIKE ignores case)
_IS_CHECKIN = func.substr(FaceTemplateRow.source, 1, len(CHECKIN_SOURCE_PREFIX)) == CHECKIN_SOURCE_PREFIX


class StoreError(RuntimeError):
    """A store problem phrased for the operator (what failed, on which file, why)."""


class AlreadyServed(StoreError):
    """The senior already has this meal on this local date: a second event would pay twice."""


@dataclass(frozen=True)
class TemplateIn:
    embedding: np.ndarray
    model_id: str
    quality: float
    source: str
    photo: bytes | None = None


@dataclass(frozen=True)
class RemovalReport:
    senior_id: str
    name: str
    templates_erased: int
    photos_erased: int
    #: the WAL was checkpointed and truncated, so no old copy of the erased pages is left in it
    wal_truncated: bool = True


@dataclass(frozen=True)
class StoredEvent:
    event_id: str
    seq: int
    topic: str
    #: the JSON bytes exactly as (re-)published
    payload: bytes
    attempts: int = 0


@dataclass(frozen=True)
class EventRow:
    event_id: str
    seq: int
    kiosk_id: str
    kind: str
    senior_id: str
    meal: str
    local_date: date
    decided_at: datetime
    price_fen: int
    subsidy_fen: int
    payable_fen: int
    confirmed_by: str | None
    delivered_at: datetime | None
    attempts: int
    last_error: str | None

    @property
    def state(self) -> str:
        return "delivered" if self.delivered_at is not None else "pending"


CONFIRMATION_STATES = ("pending", "confirmed", "rejected")


@dataclass(frozen=True)
class Confirmation:
    """A `confirm` decision for staff: the candidate shown at the kiosk, and what staff made of it."""

    id: int
    kiosk_id: str
    senior_id: str
    #: aware, with the centre's offset: when the kiosk decided
    decided_at: datetime
    local_date: date
    distance: float
    margin: float
    frames: int
    reasons: tuple[str, ...]
    state: str  # pending | confirmed | rejected
    resolved_at: datetime | None = None
    resolved_by: str | None = None
    event_id: str | None = None


def _to_confirmation(r: ConfirmationRow) -> Confirmation:
    return Confirmation(
        id=r.id,
        kiosk_id=r.kiosk_id,
        senior_id=r.senior_id,
        decided_at=r.decided_at,
        local_date=r.local_date,
        distance=r.distance,
        margin=r.margin,
        frames=r.frames,
        reasons=tuple(r.reasons),
        state=r.state,
        resolved_at=r.resolved_at,
        resolved_by=r.resolved_by,
        event_id=r.event_id,
    )


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _reason(e: BaseException) -> str:
    orig = e.orig if isinstance(e, DBAPIError) else e
    text = str(orig)
    low = text.lower()
    if "full" in low:
        return f"{text} (the disk holding the store is full: free space; nothing was half-written)"
    if "readonly" in low or "read-only" in low:
        return f"{text} (the store file or its folder is not writable by this user)"
    if "locked" in low or "busy" in low:
        return f"{text} (another process held the database too long)"
    return text


def _to_senior(r: SeniorRow) -> Senior:
    if r.status not in STATUSES:  # unreachable behind the CHECK constraint; narrows str to Status
        raise StoreError(f"senior {r.senior_id!r} has unknown status {r.status!r}")
    return Senior(r.senior_id, r.name, r.birth_date, r.hukou, r.status)


def _embedding_bytes(emb: np.ndarray, senior_id: str, source: str) -> bytes:
    a = np.asarray(emb)
    if a.size != EMBEDDING_DIM:
        raise StoreError(f"template of {senior_id!r} from {source!r}: {a.shape} is not a 128-d embedding")
    a = a.reshape(EMBEDDING_DIM).astype(_EMB_DTYPE)
    if not np.all(np.isfinite(a)):
        raise StoreError(f"template of {senior_id!r} from {source!r} has non-finite values")
    return a.tobytes()


#: what a new template row holds until it is flushed and sealed with its id (same size: the CHECK holds)
_PLACEHOLDER = bytes(SEALED_EMBEDDING_BYTES)


def _check_status(status: str) -> None:
    if status not in STATUSES:
        raise StoreError(f"unknown status {status!r} (use one of: {', '.join(STATUSES)})")


class Store(StaffMixin):
    def __init__(self, path: Path | str, keep_photos: bool = False, *, key_file: Path | str | None = None) -> None:
        """Open (create or migrate) the store. `keep_photos=False` drops any photo bytes handed to
        add_templates, so a caller that forgets the config can never keep a face photo by accident.

        Face templates (and kept photos) are sealed with AES-GCM under the key in `key_file` (default:
        "template.key" beside the store; a systemd credential wins, edge.security.atrest), made on first use.
        The folder is made 0700 and the files 0600, and `PRAGMA quick_check` runs before anything is
        written: a damaged file is refused (StoreError) and left as it is."""
        self.path = Path(path).expanduser()
        self.keep_photos = keep_photos
        self.key_file = Path(key_file) if key_file is not None else self.path.parent / "template.key"
        self._lock = threading.Lock()
        self._cipher: TemplateCipher | None = None
        try:
            make_private(self.path)
        except OSError as e:
            raise StoreError(f"{self.path}: cannot create the store's folder or file: {e}") from e
        try:
            quick_check(self.path)
        except DamagedStore as e:
            raise StoreError(str(e)) from None
        self._engine = create_engine(f"sqlite:///{self.path}", connect_args={"timeout": 30})
        event.listen(self._engine, "connect", self._on_connect)
        event.listen(self._engine, "begin", self._on_begin)
        self._write_engine = self._engine.execution_options(sqlite_begin="IMMEDIATE")
        try:
            self.schema_version = self._migrate()
            if self._cipher is None:
                self._cipher = self._load_cipher()
        except AtRestError as e:
            self._engine.dispose()
            raise StoreError(f"{self.path}: {e}") from e
        except StoreError:
            self._engine.dispose()
            raise
        except SQLAlchemyError as e:
            self._engine.dispose()
            raise StoreError(f"{self.path}: cannot open the store: {_reason(e)}") from e

    # -- connection set-up ---------------------------------------------------------------------

    @staticmethod
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Autocommit at the driver level: we issue BEGIN ourselves (see _on_begin), so pragmas and
        # DDL are not wrapped in pysqlite's implicit transactions.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        try:
            mode = cur.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"journal_mode is {mode!r}, WAL could not be enabled")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            # erased seniors' templates are overwritten with zeros on disk, not just unlinked
            cur.execute("PRAGMA secure_delete=ON")
        finally:
            cur.close()

    @staticmethod
    def _on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")

    @contextmanager
    def _write(self, what: str) -> Iterator[Session]:
        """One write transaction; any SQLite error rolls everything back and becomes a StoreError."""
        with self._lock:
            try:
                with Session(self._write_engine, expire_on_commit=False) as s, s.begin():
                    yield s
            except IntegrityError as e:
                raise StoreError(f"{what}: {_reason(e)}") from e
            except SQLAlchemyError as e:
                raise StoreError(f"{what}: {self.path}: {_reason(e)}") from e

    @contextmanager
    def _read(self, what: str) -> Iterator[Session]:
        try:
            with Session(self._engine, expire_on_commit=False) as s, s.begin():
                yield s
        except SQLAlchemyError as e:
            raise StoreError(f"{what}: {self.path}: {_reason(e)}") from e

    def _migrate(self) -> int:
        steps = migrations.MIGRATIONS
        latest = len(steps)
        with self._lock, self._write_engine.begin() as conn:
            tables = {
                r[0]
                for r in conn.exec_driver_sql(
                    "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"
                )
            }
            if "schema_version" in tables:
                top = conn.exec_driver_sql("SELECT coalesce(max(version), 0) FROM schema_version").scalar()
                current = int(top or 0)
            elif tables:
                raise StoreError(
                    f"{self.path}: not a meal-edge store (it has tables {sorted(tables)} "
                    "but no schema_version); refusing to touch it"
                )
            else:
                current = 0
            if current > latest:
                raise StoreError(
                    f"{self.path}: the store has schema version {current}, newer than this meal-edge "
                    f"understands (up to {latest}); upgrade meal-edge or use a matching backup. "
                    "The file was not changed."
                )
            for version in range(current + 1, latest + 1):
                step = steps[version - 1]
                log.info(
                    "store %s: migrating to schema version %d (%s)",
                    self.path, version, step.description
                )
                try:
                    if step.seal is not None:
                        self._cipher = self._cipher or self._load_cipher(conn)
                        step.seal(conn, self._cipher)
                    else:
                        step.apply(conn)
                except (SQLAlchemyError, AtRestError):
                    raise
                except Exception as e:
                    raise StoreError(
                        f"{self.path}: migration to schema version {version} failed ({e}); "
                        f"nothing was changed, the store is still at version {current}"
                    ) from e
                conn.exec_driver_sql(
                    "INSERT INTO schema_version (version, description, applied_at) VALUES (?, ?, ?)",
                    (version, step.description, _utcnow().isoformat()),
                )
        if current < latest:
            # old page images (plaintext templates before version 3) must not stay in the WAL
            self._checkpoint_truncate()
        return latest

    def _load_cipher(self, conn: Any = None) -> TemplateCipher:
        """The template key; made only while the store holds no sealed template (see files.cipher_for)."""
        if conn is not None:
            sealed = False  # migrating to version 3: nothing sealed yet
        else:
            with self._engine.connect() as c:
                sealed = bool(c.exec_driver_sql("SELECT count(*) FROM face_templates").scalar())
        return cipher_for(self.key_file, sealed)

    @property
    def cipher(self) -> TemplateCipher:
        assert self._cipher is not None  # set by __init__
        return self._cipher

    def _seal_rows(
        self, s: Session, rows: list[FaceTemplateRow], blobs: list[bytes], photos: list[bytes | None]
    ) -> None:
        """Give new template rows their sealed embedding (and photo): the row id is part of the associated
        data, so the rows are flushed first with a placeholder of the sealed size."""
        s.flush()
        for row, blob, photo in zip(rows, blobs, photos, strict=True):
            row.embedding = self.cipher.seal(blob, row.senior_id, row.id)
            row.photo = None if photo is None else self.cipher.seal(photo, row.senior_id, row.id, kind="photo")

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def pragma(self, name: str) -> Any:
        """Read a pragma on a fresh pooled connection (for `check` commands and tests)."""
        raw = self._engine.raw_connection()
        try:
            cur = raw.cursor()
            row = cur.execute(f"PRAGMA {name}").fetchone()
            cur.close()
            return None if row is None else row[0]
        finally:
            raw.close()

    # -- seniors -----------------------------------------------------------------------------------

    def add_senior(self, senior: Senior) -> None:
        _check_status(senior.status)
        with self._write(f"could not add senior {senior.senior_id!r}") as s:
            if s.get(SeniorRow, senior.senior_id) is not None:
                raise StoreError(f"senior {senior.senior_id!r} is already enrolled")
            now = _utcnow()
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
        _check_status(senior.status)
        with self._write(f"could not save senior {senior.senior_id!r}") as s:
            now = _utcnow()
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
            return None if row is None else _to_senior(row)

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
            return [(_to_senior(r), int(n)) for r, n in rows]

    def set_status(self, senior_id: str, status: str, audit: AuditEntry | None = None) -> None:
        _check_status(status)
        with self._write(f"could not set the status of senior {senior_id!r}") as s:
            row = s.get(SeniorRow, senior_id)
            if row is None:
                raise StoreError(f"no senior with id {senior_id!r}")
            row.status = status
            row.updated_at = _utcnow()
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

    def _checkpoint_truncate(self) -> bool:
        # secure_delete zeroes the pages in the database, but in WAL mode the earlier page images (with
        # the templates) also sit in the -wal file until it is reset: checkpoint and truncate it.
        with self._lock:
            raw = self._engine.raw_connection()
            try:
                cur = raw.cursor()
                busy, _, _ = cur.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                cur.close()
                return busy == 0
            except sqlite3.Error as e:
                log.warning("store %s: checkpoint failed: %s", self.path, e)
                return False
            finally:
                raw.close()

    # -- templates ---------------------------------------------------------------------------------

    def add_templates(self, senior_id: str, templates: list[TemplateIn], audit: AuditEntry | None = None) -> int:
        blobs = [_embedding_bytes(t.embedding, senior_id, t.source) for t in templates]
        with self._write(f"could not store templates of senior {senior_id!r}") as s:
            senior = s.get(SeniorRow, senior_id)
            if senior is None:
                raise StoreError(f"no senior with id {senior_id!r}")
            now = _utcnow()
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
                )
                for t in templates
            ]
            s.add_all(rows)
            self._seal_rows(s, rows, blobs, [t.photo if self.keep_photos else None for t in templates])
            add_audit(s, audit)
        return len(templates)

    def templates(self, model_id: str | None = None) -> list[tuple[str, np.ndarray]]:
        """(senior_id, float32[128]) for every template, of active and inactive seniors alike (the
        matcher must still recognise a suspended senior to tell them to see staff)."""
        q = select(FaceTemplateRow.senior_id, FaceTemplateRow.id, FaceTemplateRow.embedding).order_by(
            FaceTemplateRow.senior_id, FaceTemplateRow.id
        )
        if model_id is not None:
            q = q.where(FaceTemplateRow.model_id == model_id)
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
            out.append((sid, np.frombuffer(plain, dtype=_EMB_DTYPE).astype(np.float32)))
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
                    FaceTemplateRow.senior_id == senior_id, ~_IS_CHECKIN
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
        blob = _embedding_bytes(template.embedding, senior_id, template.source)
        with self._write(f"could not store the check-in template of senior {senior_id!r}") as s:
            senior = s.get(SeniorRow, senior_id)
            if senior is None:
                raise StoreError(f"no senior with id {senior_id!r}")
            now = _utcnow()
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
            )
            s.add(row)
            self._seal_rows(s, [row], [blob], [None])
            s.flush()
            ids = s.scalars(
                select(FaceTemplateRow.id)
                .where(FaceTemplateRow.senior_id == senior_id, _IS_CHECKIN)
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
                    FaceTemplateRow.senior_id == senior_id, _IS_CHECKIN
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

    # -- meals and the outbox ----------------------------------------------------------------------

    def meals_on(self, senior_id: str, local_date: date) -> list[PriorMeal]:
        with self._read(f"could not read meals of {senior_id!r}") as s:
            rows = s.execute(
                select(MealEventRow.meal, MealEventRow.subsidy_fen)
                .where(
                    MealEventRow.senior_id == senior_id,
                    MealEventRow.local_date == local_date,
                    MealEventRow.kind == "meal",
                )
                .order_by(MealEventRow.seq)
            ).all()
            return [PriorMeal(m, int(f)) for m, f in rows]

    def record_meal(self, event: MealEvent, topic: str) -> StoredEvent:
        """Allocate the kiosk's next seq and write the event and its outbox row in ONE transaction.

        Either both rows and the new seq are committed (fsync'd: synchronous=FULL) or nothing is.
        Raises StoreError (disk full, I/O error, duplicate event_id) or ValueError (invalid event).
        """
        with self._write(f"could not record meal event {event.event_id}") as s:
            return self._insert_meal(s, event, topic)

    @staticmethod
    def _insert_meal(s: Session, event: MealEvent, topic: str) -> StoredEvent:
        """The body of record_meal, inside the caller's write transaction."""
        seq_row = s.get(KioskSeqRow, event.kiosk_id)
        if seq_row is None:
            seq_row = KioskSeqRow(kiosk_id=event.kiosk_id, last_seq=0)
            s.add(seq_row)
        seq = seq_row.last_seq + 1
        seq_row.last_seq = seq
        payload_obj = build_payload(event, seq)
        text = dumps(payload_obj)
        now = _utcnow()
        if s.get(MealEventRow, event.event_id) is not None:
            raise StoreError(f"meal event {event.event_id} is already recorded")
        # Checked inside the IMMEDIATE write transaction (and backed by a unique index), so two writers
        # (the kiosk and a staff confirmation) can never record the same meal twice.
        earlier = s.scalar(
            select(MealEventRow.event_id).where(
                MealEventRow.senior_id == event.senior_id,
                MealEventRow.local_date == event.local_date,
                MealEventRow.meal == event.meal,
            )
        )
        if earlier is not None:
            raise AlreadyServed(
                f"senior {event.senior_id} already has {event.meal} on {event.local_date} "
                f"(event {earlier}): not recorded twice"
            )
        s.add(
            MealEventRow(
                event_id=event.event_id,
                seq=seq,
                kiosk_id=event.kiosk_id,
                centre_id=event.centre_id,
                district=event.district,
                kind=event.kind,
                senior_id=event.senior_id,
                meal=event.meal,
                local_date=event.local_date,
                decided_at=event.decided_at,
                price_fen=event.price_fen,
                subsidy_fen=event.subsidy_fen,
                payable_fen=event.payable_fen,
                reasons=list(event.reasons),
                confirmed_by=event.confirmed_by,
                match=payload_obj["match"],
                source_ts=payload_obj["source_ts"],
                payload=text,
                recorded_at=now,
            )
        )
        s.flush()  # the event row first: the outbox row references it
        s.add(
            OutboxRow(
                event_id=event.event_id, seq=seq, topic=topic, payload=text, created_at=now, attempts=0
            )
        )
        return StoredEvent(event.event_id, seq, topic, text.encode("utf-8"))

    def pending(self, limit: int = 100) -> list[StoredEvent]:
        with self._read("could not read the outbox") as s:
            rows = s.execute(
                select(
                    OutboxRow.event_id, OutboxRow.seq, OutboxRow.topic, OutboxRow.payload, OutboxRow.attempts
                )
                .where(OutboxRow.delivered_at.is_(None))
                .order_by(OutboxRow.seq, OutboxRow.event_id)
                .limit(limit)
            ).all()
            return [StoredEvent(e, int(q), t, p.encode("utf-8"), int(a)) for e, q, t, p, a in rows]

    def pending_count(self) -> int:
        with self._read("could not read the outbox") as s:
            return int(s.scalar(select(func.count()).where(OutboxRow.delivered_at.is_(None))) or 0)

    def mark_delivered(self, event_id: str, at: datetime) -> None:
        """Called on the broker's PUBACK only. The first acknowledgement's time is kept."""
        if at.tzinfo is None or at.utcoffset() is None:
            raise ValueError(f"naive datetime {at!r}: delivery times must be timezone-aware")
        with self._write(f"could not mark event {event_id} delivered") as s:
            res = s.execute(
                update(OutboxRow)
                .where(OutboxRow.event_id == event_id, OutboxRow.delivered_at.is_(None))
                .values(delivered_at=at, last_error=None)
            )
            if res.rowcount == 0 and s.get(OutboxRow, event_id) is None:  # type: ignore[attr-defined]
                raise StoreError(f"no outbox entry for event {event_id}")

    def note_attempt(self, event_id: str, error: str | None) -> None:
        with self._write(f"could not note a delivery attempt of {event_id}") as s:
            s.execute(
                update(OutboxRow)
                .where(OutboxRow.event_id == event_id)
                .values(attempts=OutboxRow.attempts + 1, last_attempt_at=_utcnow(), last_error=error)
            )

    def list_events(self, pending_only: bool = False, limit: int | None = None) -> list[EventRow]:
        """Events in seq order; with `limit`, the newest `limit` of them."""
        q = select(MealEventRow, OutboxRow).join(OutboxRow, OutboxRow.event_id == MealEventRow.event_id)
        if pending_only:
            q = q.where(OutboxRow.delivered_at.is_(None))
        q = q.order_by(MealEventRow.seq.desc(), MealEventRow.kiosk_id.desc())
        if limit is not None:
            q = q.limit(limit)
        with self._read("could not list events") as s:
            out = [
                EventRow(
                    event_id=e.event_id,
                    seq=e.seq,
                    kiosk_id=e.kiosk_id,
                    kind=e.kind,
                    senior_id=e.senior_id,
                    meal=e.meal,
                    local_date=e.local_date,
                    decided_at=e.decided_at,
                    price_fen=e.price_fen,
                    subsidy_fen=e.subsidy_fen,
                    payable_fen=e.payable_fen,
                    confirmed_by=e.confirmed_by,
                    delivered_at=o.delivered_at,
                    attempts=o.attempts,
                    last_error=o.last_error,
                )
                for e, o in s.execute(q)
            ]
        out.reverse()
        return out

    def last_seq(self, kiosk_id: str) -> int:
        with self._read("could not read the sequence") as s:
            row = s.get(KioskSeqRow, kiosk_id)
            return 0 if row is None else row.last_seq

    def versions(self) -> list[tuple[int, str]]:
        with self._read("could not read the schema version") as s:
            rows = s.scalars(select(SchemaVersion).order_by(SchemaVersion.version))
            return [(v.version, v.description) for v in rows]

    # -- staff confirmations -------------------------------------------------------------------------

    def add_confirmation(
        self,
        kiosk_id: str,
        senior_id: str,
        decided_at: datetime,
        local_date: date,
        distance: float,
        margin: float,
        frames: int,
        reasons: tuple[str, ...] | list[str],
    ) -> int:
        """Record a pending `confirm` decision (the candidate shown at the kiosk); returns its id."""
        if decided_at.tzinfo is None or decided_at.utcoffset() is None:
            raise ValueError(f"naive datetime {decided_at!r}: decision times must be timezone-aware")
        what = f"could not record a confirmation for {senior_id!r}"
        if not (math.isfinite(distance) and math.isfinite(margin)):
            raise StoreError(f"{what}: distance {distance!r} and margin {margin!r} must be finite")
        with self._write(what) as s:
            row = ConfirmationRow(
                kiosk_id=kiosk_id,
                senior_id=senior_id,
                decided_at=decided_at,
                local_date=local_date,
                distance=float(distance),
                margin=float(margin),
                frames=int(frames),
                reasons=[str(r) for r in reasons],
                state="pending",
            )
            s.add(row)
            s.flush()
            return int(row.id)

    def pending_confirmations(self, kiosk_id: str | None = None) -> list[Confirmation]:
        """Pending confirmations, oldest first; of one kiosk, or of every kiosk sharing this store."""
        q = select(ConfirmationRow).where(ConfirmationRow.state == "pending")
        if kiosk_id is not None:
            q = q.where(ConfirmationRow.kiosk_id == kiosk_id)
        with self._read("could not list pending confirmations") as s:
            return [_to_confirmation(r) for r in s.scalars(q.order_by(ConfirmationRow.id))]

    def get_confirmation(self, confirmation_id: int) -> Confirmation | None:
        with self._read(f"could not read confirmation {confirmation_id}") as s:
            row = s.get(ConfirmationRow, confirmation_id)
            return None if row is None else _to_confirmation(row)

    def confirmation_for_event(self, event_id: str) -> Confirmation | None:
        """The staff confirmation that produced this meal event, if staff confirmed it."""
        q = select(ConfirmationRow).where(ConfirmationRow.event_id == event_id)
        with self._read(f"could not look up the confirmation of event {event_id}") as s:
            row = s.scalars(q).first()
            return None if row is None else _to_confirmation(row)

    def resolve_confirmation(
        self,
        confirmation_id: int,
        state: str,
        by: str,
        event_id: str | None = None,
        audit: AuditEntry | None = None,
    ) -> Confirmation:
        """Mark a pending confirmation `confirmed` or `rejected` by `by`. A confirmation is resolved once:
        a second resolution is refused with a StoreError naming it and who resolved it."""
        with self._write(f"could not resolve confirmation {confirmation_id}") as s:
            done = self._resolve_in(s, confirmation_id, state, by, event_id)
            add_audit(s, audit)
            return done

    def record_confirmed_meal(
        self, confirmation_id: int, by: str, event: MealEvent, topic: str, audit: AuditEntry | None = None
    ) -> StoredEvent:
        """Record the meal of a confirmation and resolve it as confirmed, in ONE transaction: two staff
        confirming the same one at once get one meal event, and the second a StoreError."""
        with self._write(f"could not record the confirmed meal of confirmation {confirmation_id}") as s:
            self._check_pending(s, confirmation_id)
            stored = self._insert_meal(s, event, topic)
            s.flush()
            self._resolve_in(s, confirmation_id, "confirmed", by, event.event_id)
            add_audit(s, audit)
            return stored

    @staticmethod
    def _check_pending(s: Session, confirmation_id: int) -> ConfirmationRow:
        row = s.get(ConfirmationRow, confirmation_id)
        if row is None:
            raise StoreError(f"no confirmation with id {confirmation_id}")
        if row.state != "pending":
            at = row.resolved_at.isoformat(timespec="seconds") if row.resolved_at else "?"
            raise StoreError(
                f"confirmation {confirmation_id} was already {row.state} by {row.resolved_by} at {at}"
            )
        return row

    def _resolve_in(
        self, s: Session, confirmation_id: int, state: str, by: str, event_id: str | None
    ) -> Confirmation:
        if state not in ("confirmed", "rejected"):
            raise StoreError(f"cannot resolve confirmation {confirmation_id} as {state!r} (confirmed or rejected)")
        if not by.strip():
            raise StoreError(f"confirmation {confirmation_id}: say who resolves it (a staff name)")
        if state == "rejected" and event_id is not None:
            raise StoreError(f"confirmation {confirmation_id}: a rejected confirmation has no meal event")
        row = self._check_pending(s, confirmation_id)
        row.state = state
        row.resolved_at = _utcnow()
        row.resolved_by = by.strip()
        row.event_id = event_id
        s.flush()
        return _to_confirmation(row)
