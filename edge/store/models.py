"""SQLAlchemy 2.0 typed models of the local store (one SQLite file).

The schema itself is created by the numbered migrations in `edge.store.migrations`, not by
`create_all`: these classes describe the newest schema, and a test checks that both agree.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    Date,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

EMBEDDING_BYTES = 128 * 4
#: a template as stored since schema version 3: sealed with AES-GCM (edge.security.atrest), 1 + 12 + 512 + 16
SEALED_EMBEDDING_BYTES = 1 + 12 + EMBEDDING_BYTES + 16


class AwareDateTime(TypeDecorator[datetime]):
    """An aware datetime stored as ISO 8601 text with its offset (SQLite has no time zone type).

    `utc=True` normalises to UTC on the way in (bookkeeping times); otherwise the offset is kept
    (decided_at keeps the centre's wall-clock offset, as published).
    """

    impl = String(40)
    cache_ok = True

    def __init__(self, utc: bool = True) -> None:
        super().__init__()
        self.utc = utc

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: the store keeps only timezone-aware times")
        if self.utc:
            value = value.astimezone(UTC)
        return value.isoformat()

    def process_result_value(self, value: str | None, dialect: Dialect) -> datetime | None:
        return None if value is None else datetime.fromisoformat(value)


class Base(DeclarativeBase):
    pass


class SchemaVersion(Base):
    __tablename__ = "schema_version"

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    description: Mapped[str] = mapped_column(String)
    applied_at: Mapped[datetime] = mapped_column(AwareDateTime())


class SeniorRow(Base):
    __tablename__ = "seniors"
    __table_args__ = (
        CheckConstraint("status IN ('active', 'suspended', 'deceased')", name="ck_status"),
        Index("uq_seniors_card_no", "card_no", unique=True),
    )

    senior_id: Mapped[str] = mapped_column(String, primary_key=True)
    name: Mapped[str] = mapped_column(String)
    birth_date: Mapped[date] = mapped_column(Date)
    hukou: Mapped[str] = mapped_column(String)
    status: Mapped[str] = mapped_column(String)
    created_at: Mapped[datetime] = mapped_column(AwareDateTime())
    updated_at: Mapped[datetime] = mapped_column(AwareDateTime())
    #: the meal card's number (schema version 3), None when the roster gives none
    card_no: Mapped[str | None] = mapped_column(String, nullable=True)
    #: the senior's own centre in the district roster (schema version 6); None: enrolled here only
    home_centre: Mapped[str | None] = mapped_column(String, nullable=True)


class FaceTemplateRow(Base):
    __tablename__ = "face_templates"
    __table_args__ = (
        CheckConstraint(f"length(embedding) = {SEALED_EMBEDDING_BYTES}", name="ck_embedding_size"),
        Index("ix_face_templates_senior", "senior_id"),
        Index("ix_face_templates_model", "model_id"),
        Index("uq_face_templates_uid", "template_uid", unique=True),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    senior_id: Mapped[str] = mapped_column(String, ForeignKey("seniors.senior_id", ondelete="CASCADE"))
    #: 128 float32, little-endian (512 bytes, the raw descriptor, not normalised), sealed with AES-GCM under the
    #: template key and bound to (senior_id, id): see edge.security.atrest
    embedding: Mapped[bytes] = mapped_column(LargeBinary)
    model_id: Mapped[str] = mapped_column(String)
    quality: Mapped[float] = mapped_column(Float)
    #: the enrolment photo's file name, for `meal-enroll show`
    source: Mapped[str] = mapped_column(String)
    #: the photo itself, only when [store] keep_photos is true; sealed like the embedding
    photo: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    created_at: Mapped[datetime] = mapped_column(AwareDateTime())
    #: a UUID made where the template was made (schema version 6): the same template keeps it at the district
    #: and on every kiosk (edge.delivery.rosterwire); NULL never happens after the migration's backfill
    template_uid: Mapped[str | None] = mapped_column(String(36), nullable=True)


class MealEventRow(Base):
    __tablename__ = "meal_events"
    __table_args__ = (
        UniqueConstraint("kiosk_id", "seq", name="uq_meal_events_kiosk_seq"),
        Index("ix_meal_events_senior_date", "senior_id", "local_date"),
        # one standing meal per senior, meal window and local day (schema version 5: a voided meal no longer
        # stands, so the senior can be served again; voids themselves are not meals)
        Index(
            "uq_meal_events_senior_meal", "senior_id", "local_date", "meal", unique=True,
            sqlite_where=text("kind = 'meal' AND voided_by IS NULL"),
        ),
        # a meal is voided once
        Index("uq_meal_events_voids", "voids", unique=True, sqlite_where=text("voids IS NOT NULL")),
    )

    event_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer)
    kiosk_id: Mapped[str] = mapped_column(String)
    centre_id: Mapped[str] = mapped_column(String)
    district: Mapped[str] = mapped_column(String)
    kind: Mapped[str] = mapped_column(String)
    #: not a foreign key: events outlive a removed senior (audit and settlement)
    senior_id: Mapped[str] = mapped_column(String)
    meal: Mapped[str] = mapped_column(String)
    local_date: Mapped[date] = mapped_column(Date)
    decided_at: Mapped[datetime] = mapped_column(AwareDateTime(utc=False))
    price_fen: Mapped[int] = mapped_column(Integer)
    subsidy_fen: Mapped[int] = mapped_column(Integer)
    payable_fen: Mapped[int] = mapped_column(Integer)
    reasons: Mapped[list[str]] = mapped_column(JSON)
    confirmed_by: Mapped[str | None] = mapped_column(String, nullable=True)
    match: Mapped[dict[str, Any]] = mapped_column(JSON)
    source_ts: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: the JSON text exactly as published
    payload: Mapped[str] = mapped_column(Text)
    recorded_at: Mapped[datetime] = mapped_column(AwareDateTime())
    #: kind void (schema version 5): the event_id of the meal it voids
    voids: Mapped[str | None] = mapped_column(String(36), nullable=True)
    #: kind meal: the void event that reverses it, set in the void's transaction (the payload never changes)
    voided_by: Mapped[str | None] = mapped_column(String(36), nullable=True)


class OutboxRow(Base):
    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_pending", "delivered_at", "seq"),)

    event_id: Mapped[str] = mapped_column(String(36), ForeignKey("meal_events.event_id"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer)
    topic: Mapped[str] = mapped_column(String)
    payload: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(AwareDateTime())
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_attempt_at: Mapped[datetime | None] = mapped_column(AwareDateTime(), nullable=True)
    delivered_at: Mapped[datetime | None] = mapped_column(AwareDateTime(), nullable=True)
    last_error: Mapped[str | None] = mapped_column(String, nullable=True)


class KioskSeqRow(Base):
    __tablename__ = "kiosk_seq"

    kiosk_id: Mapped[str] = mapped_column(String, primary_key=True)
    last_seq: Mapped[int] = mapped_column(Integer)


class ConfirmationRow(Base):
    """A `confirm` decision waiting for staff (schema version 2): the kiosk showed the candidate's name
    because the match was close but not certain, or liveness was not confirmed."""

    __tablename__ = "confirmations"
    __table_args__ = (
        CheckConstraint("state IN ('pending', 'confirmed', 'rejected')", name="ck_confirmation_state"),
        Index("ix_confirmations_state_kiosk", "state", "kiosk_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kiosk_id: Mapped[str] = mapped_column(String)
    #: the candidate shown at the kiosk; not a foreign key (the record outlives a removed senior)
    senior_id: Mapped[str] = mapped_column(String)
    #: when the kiosk decided, with the centre's offset (the meal window and the subsidy are as of then)
    decided_at: Mapped[datetime] = mapped_column(AwareDateTime(utc=False))
    local_date: Mapped[date] = mapped_column(Date)
    distance: Mapped[float] = mapped_column(Float)
    margin: Mapped[float] = mapped_column(Float)
    frames: Mapped[int] = mapped_column(Integer)
    reasons: Mapped[list[str]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String)
    resolved_at: Mapped[datetime | None] = mapped_column(AwareDateTime(), nullable=True)
    #: the staff member who confirmed or rejected it (kept locally, never published)
    resolved_by: Mapped[str | None] = mapped_column(String, nullable=True)
    #: the meal event a confirmation produced; None when pending, rejected, or the rules gave no meal
    event_id: Mapped[str | None] = mapped_column(
        String(36), ForeignKey("meal_events.event_id"), nullable=True
    )


class StaffRow(Base):
    """A staff account (schema version 3): who may log in to the staff screen and confirm meals."""

    __tablename__ = "staff"
    __table_args__ = (CheckConstraint("role IN ('staff', 'manager')", name="ck_staff_role"),)

    staff_id: Mapped[str] = mapped_column(String, primary_key=True)
    name: Mapped[str] = mapped_column(String)
    role: Mapped[str] = mapped_column(String)
    #: argon2id hash of the PIN or password (the PIN itself is never stored)
    secret_hash: Mapped[str] = mapped_column(String)
    #: wrong PINs in a row since the last good one
    failures: Mapped[int] = mapped_column(Integer)
    locked_until: Mapped[datetime | None] = mapped_column(AwareDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(AwareDateTime())


class AuditRow(Base):
    """One staff action (schema version 3). Append-only: triggers refuse UPDATE and DELETE."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_staff", "staff_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(AwareDateTime())
    staff_id: Mapped[str] = mapped_column(String)
    action: Mapped[str] = mapped_column(String)
    #: what it was done to: "confirmation:12", "senior:S0001", "staff:w01"
    target: Mapped[str] = mapped_column(String)
    #: ids, counts and states; never a senior's name
    details: Mapped[dict[str, Any]] = mapped_column(JSON)


class RosterStateRow(Base):
    """Where this kiosk is in the district roster (schema version 6): one row (id 1)."""

    __tablename__ = "roster_state"
    __table_args__ = (CheckConstraint("id = 1", name="ck_roster_state_one"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    #: the district roster version applied here (every change up to it is in the store)
    version: Mapped[int] = mapped_column(Integer)
    #: the model the applied templates are for
    model_id: Mapped[str | None] = mapped_column(String, nullable=True)
    #: the last message from the district (a batch or an ack)
    last_sync_at: Mapped[datetime | None] = mapped_column(AwareDateTime(), nullable=True)
    last_batch_at: Mapped[datetime | None] = mapped_column(AwareDateTime(), nullable=True)
    #: a full snapshot in progress: the version it brings, the next part expected, the seniors seen so far
    snapshot_to: Mapped[int | None] = mapped_column(Integer, nullable=True)
    snapshot_next: Mapped[int | None] = mapped_column(Integer, nullable=True)
    snapshot_seen: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    #: `meal-edge roster resync` asks the running daemon for a full snapshot
    resync_requested: Mapped[int] = mapped_column(Integer)
    #: senior_id -> templates erased on the district's removal, until a receipt for them is acknowledged
    erased_pending: Mapped[dict[str, int]] = mapped_column(JSON)
    #: set by a kiosk configured for the district roster ([roster] enabled): every enrolment on this store, from
    #: whichever tool, then queues its templates for the district
    uploads_enabled: Mapped[int] = mapped_column(Integer)


class RosterUploadRow(Base):
    """Templates made by an enrolment here, to be sent to the district (schema version 6). The payload names
    the templates (their template_uid) and the model: the sealed message is made when it is sent, so no
    second copy of a face lives in this table."""

    __tablename__ = "roster_uploads"
    __table_args__ = (
        CheckConstraint("state IN ('pending', 'accepted', 'refused')", name="ck_roster_upload_state"),
        Index("ix_roster_uploads_state", "state"),
    )

    upload_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    senior_id: Mapped[str] = mapped_column(String)
    payload: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String)
    reason_code: Mapped[str | None] = mapped_column(String, nullable=True)
    reason: Mapped[str | None] = mapped_column(String, nullable=True)
    #: the district roster version that added the templates, when accepted
    version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(AwareDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(AwareDateTime(), nullable=True)
    answered_at: Mapped[datetime | None] = mapped_column(AwareDateTime(), nullable=True)
