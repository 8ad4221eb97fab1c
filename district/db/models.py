"""The district database (SQLAlchemy 2.0). The Alembic migrations in db/migrations create exactly these.

`events` is partitioned by month of local_date on PostgreSQL (db/partitions.py creates each month's partition
when its first event arrives). A unique key on a partitioned table must contain the partition key, so the
district-wide uniqueness of event_id is enforced by the small `event_ids` table: inserting there first, with
ON CONFLICT DO NOTHING, is the arbiter that decides which copy of an event is stored.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Dialect,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, stored as UTC without a zone (same on SQLite and PostgreSQL), aware UTC out."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the district stores aware times only")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class EventId(Base):
    __tablename__ = "event_ids"
    event_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    local_date: Mapped[date] = mapped_column(Date)
    sha256: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (
        Index(None, "district", "centre_id", "kiosk_id", "seq"),
        Index(None, "senior_id", "local_date"),
        Index(None, "centre_id", "local_date"),
        Index(None, "voids"),
        {"postgresql_partition_by": "RANGE (local_date)"},
    )
    event_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    local_date: Mapped[date] = mapped_column(Date, primary_key=True)
    version: Mapped[int] = mapped_column(SmallInteger)
    kind: Mapped[str] = mapped_column(String(8))
    district: Mapped[str] = mapped_column(String(64))
    centre_id: Mapped[str] = mapped_column(String(64))
    kiosk_id: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(BigInteger)
    senior_id: Mapped[str] = mapped_column(String(64))
    meal: Mapped[str] = mapped_column(String(64))
    decided_at: Mapped[datetime] = mapped_column(UtcDateTime)
    price_fen: Mapped[int] = mapped_column(Integer)
    subsidy_fen: Mapped[int] = mapped_column(Integer)
    payable_fen: Mapped[int] = mapped_column(Integer)
    check_in: Mapped[str] = mapped_column(String(16))
    staff_id: Mapped[str | None] = mapped_column(String(64))
    voids: Mapped[str | None] = mapped_column(String(36))
    reasons: Mapped[str] = mapped_column(String(300))
    prev_hash: Mapped[str | None] = mapped_column(String(64))
    event_hash: Mapped[str | None] = mapped_column(String(64))
    signed: Mapped[bool] = mapped_column(Boolean)
    topic: Mapped[str] = mapped_column(String(300))
    #: the payload exactly as received (the canonical bytes the kiosk signed and stored)
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)
    ingested_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Conflict(Base):
    """A second copy of an event_id with different bytes: kept here, the first copy stands."""

    __tablename__ = "conflicts"
    __table_args__ = (UniqueConstraint("event_id", "other_sha256"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(36), index=True)
    kept_sha256: Mapped[str] = mapped_column(String(64))
    other_sha256: Mapped[str] = mapped_column(String(64))
    topic: Mapped[str] = mapped_column(String(300))
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    first_at: Mapped[datetime] = mapped_column(UtcDateTime)
    copies: Mapped[int] = mapped_column(Integer, default=1)


class Quarantine(Base):
    __tablename__ = "quarantine"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    topic: Mapped[str] = mapped_column(String(300))
    reason: Mapped[str] = mapped_column(String(400))
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    #: the first [ingest] quarantine_keep_bytes of the payload
    raw: Mapped[bytes] = mapped_column(LargeBinary)


class Kiosk(Base):
    __tablename__ = "kiosks"
    district: Mapped[str] = mapped_column(String(64), primary_key=True)
    centre_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kiosk_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    #: base64 of the raw Ed25519 public key (edge.security.signing.public_key_text)
    public_key: Mapped[str | None] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(8), default="unknown")
    state_reason: Mapped[str | None] = mapped_column(String(32))
    status_ts: Mapped[str | None] = mapped_column(String(40))
    #: when the district received the status (for a last will: the moment the connection was lost)
    status_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    backlog: Mapped[int | None] = mapped_column(Integer)
    reported_last_seq: Mapped[int | None] = mapped_column(BigInteger)
    max_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    last_event_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_received_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class Gap(Base):
    """Missing seq numbers first_seq..last_seq of a kiosk; open (closed_at null) until they arrive."""

    __tablename__ = "gaps"
    __table_args__ = (Index(None, "district", "centre_id", "kiosk_id", "closed_at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    district: Mapped[str] = mapped_column(String(64))
    centre_id: Mapped[str] = mapped_column(String(64))
    kiosk_id: Mapped[str] = mapped_column(String(64))
    first_seq: Mapped[int] = mapped_column(BigInteger)
    last_seq: Mapped[int] = mapped_column(BigInteger)
    opened_at: Mapped[datetime] = mapped_column(UtcDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class Adjustment(Base):
    """A meal whose subsidy the district claws back: a second subsidy for the senior that day, or voided."""

    __tablename__ = "adjustments"
    event_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    local_date: Mapped[date] = mapped_column(Date, index=True)
    senior_id: Mapped[str] = mapped_column(String(64))
    centre_id: Mapped[str] = mapped_column(String(64))
    #: double_subsidy | voided
    reason: Mapped[str] = mapped_column(String(32))
    #: the event that stands (double_subsidy) or the void (voided)
    other_event_id: Mapped[str | None] = mapped_column(String(36))
    amount_fen: Mapped[int] = mapped_column(Integer)
    flagged_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Alert(Base):
    """Things to look at that are not rejections: a broken signature chain, one seq with two event ids."""

    __tablename__ = "alerts"
    __table_args__ = (UniqueConstraint("kind", "event_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    kind: Mapped[str] = mapped_column(String(32))
    district: Mapped[str] = mapped_column(String(64))
    centre_id: Mapped[str] = mapped_column(String(64))
    kiosk_id: Mapped[str] = mapped_column(String(64))
    event_id: Mapped[str] = mapped_column(String(36))
    detail: Mapped[str] = mapped_column(String(400))


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UtcDateTime)


class Audit(Base):
    __tablename__ = "audit"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    detail: Mapped[str] = mapped_column(String(1000))


# -- the district roster (issue 13; docs/roster.md) ----------------------------------------------------


class RosterSenior(Base):
    """A senior of the district roster. `version` is the roster version of their latest change."""

    __tablename__ = "roster_seniors"
    senior_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    birth_date: Mapped[date] = mapped_column(Date)
    hukou: Mapped[str] = mapped_column(String(100))
    #: active | suspended | deceased
    status: Mapped[str] = mapped_column(String(16))
    card_no: Mapped[str | None] = mapped_column(String(32))
    home_centre: Mapped[str] = mapped_column(String(64))
    #: the centres where the senior may eat; null = every centre of the district
    centres: Mapped[list[str] | None] = mapped_column(JSON)
    #: removed by `roster remove`: fields kept (settled meals name the senior), templates erased
    removed: Mapped[bool] = mapped_column(Boolean, default=False)
    version: Mapped[int] = mapped_column(BigInteger, index=True)


class RosterTemplate(Base):
    """A face template sent up by a kiosk's enrolment, sealed at rest under the district's template key."""

    __tablename__ = "roster_templates"
    template_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    senior_id: Mapped[str] = mapped_column(String(64), index=True)
    model_id: Mapped[str] = mapped_column(String(64))
    quality: Mapped[float] = mapped_column(Float)
    #: TemplateCipher blob, bound to (senior_id, template row); see district.roster.book
    embedding: Mapped[bytes] = mapped_column(LargeBinary)
    #: district/centre/kiosk that made it
    from_kiosk: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    version: Mapped[int] = mapped_column(BigInteger)


class RosterChange(Base):
    """One roster change: versions are handed out in commit order (a lock around every roster write)."""

    __tablename__ = "roster_changes"
    __table_args__ = (Index(None, "senior_id", "version"),)
    version: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    senior_id: Mapped[str] = mapped_column(String(64))
    #: import | fields | status | scope | templates | removed
    kind: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    actor: Mapped[str] = mapped_column(String(200))


class RosterKiosk(Base):
    """A kiosk of the roster link: its model (from its last sync request) and how far it has come."""

    __tablename__ = "roster_kiosks"
    district: Mapped[str] = mapped_column(String(64), primary_key=True)
    centre_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kiosk_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    model_id: Mapped[str | None] = mapped_column(String(64))
    #: the version the kiosk said it applied (its last receipt)
    applied_version: Mapped[int] = mapped_column(BigInteger, default=0)
    #: the to_version of the last batch the district sent it (the next batch's from_version)
    sent_version: Mapped[int] = mapped_column(BigInteger, default=0)
    last_sync_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_receipt_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class RosterErasure(Base):
    """A removal that a kiosk must confirm; confirmed_at null until its receipt names the senior."""

    __tablename__ = "roster_erasures"
    senior_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    district: Mapped[str] = mapped_column(String(64), primary_key=True)
    centre_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kiosk_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)
    confirmed_at: Mapped[datetime | None] = mapped_column(UtcDateTime, index=True)
    #: templates the kiosk said it erased
    templates_erased: Mapped[int | None] = mapped_column(Integer)
