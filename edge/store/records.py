"""What the store hands out and takes in (plain dataclasses, no SQLAlchemy), its errors, and the small
conversions every part of the store shares."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np
from sqlalchemy import func
from sqlalchemy.exc import DBAPIError

from edge.meals.rules import STATUSES, Senior
from edge.recognition.refresh import CHECKIN_SOURCE_PREFIX
from edge.store.models import EMBEDDING_BYTES, ConfirmationRow, FaceTemplateRow, SeniorRow

EMBEDDING_DIM = EMBEDDING_BYTES // 4
# little-endian float32 on disk whatever the host, so a store file can move between machines
EMB_DTYPE = np.dtype("<f4")


# templates refreshed from check-ins (edge.recognition.refresh): compared exactly (LIKE ignores case)
IS_CHECKIN = func.substr(FaceTemplateRow.source, 1, len(CHECKIN_SOURCE_PREFIX)) == CHECKIN_SOURCE_PREFIX


class StoreError(RuntimeError):
    """A store problem phrased for the operator (what failed, on which file, why)."""


class AlreadyServed(StoreError):
    """The senior already has this meal on this local date: a second event would pay twice."""


class VoidRefused(StoreError):
    """A void the store does not record: `kind` is edge.meals.rules.void_refusal's code (not_found, is_void,
    already_voided, not_today)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


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
    #: face | face_confirmed | manual (from the published payload)
    check_in: str = "face"
    #: kind void: the meal it reverses, and why (code, note); kind meal: the void that reversed it, if any
    voids: str | None = None
    void_reason: str | None = None
    void_note: str | None = None
    voided_by: str | None = None
    #: the staff member named in the event (manual check-in, staff confirmation, void)
    staff_id: str | None = None
    reasons: tuple[str, ...] = ()

    @property
    def state(self) -> str:
        return "delivered" if self.delivered_at is not None else "pending"


CONFIRMATION_STATES = ("pending", "confirmed", "rejected")
#: a second attempt by the same senior within this long of a pending card joins it (Store.add_confirmation)
JOIN_WITHIN = timedelta(minutes=10)


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


def to_confirmation(r: ConfirmationRow) -> Confirmation:
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


def utcnow() -> datetime:
    return datetime.now(UTC)


def describe_error(e: BaseException) -> str:
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


def to_senior(r: SeniorRow) -> Senior:
    if r.status not in STATUSES:  # unreachable behind the CHECK constraint; narrows str to Status
        raise StoreError(f"senior {r.senior_id!r} has unknown status {r.status!r}")
    return Senior(r.senior_id, r.name, r.birth_date, r.hukou, r.status)


def embedding_bytes(emb: np.ndarray, senior_id: str, source: str) -> bytes:
    a = np.asarray(emb)
    if a.size != EMBEDDING_DIM:
        raise StoreError(f"template of {senior_id!r} from {source!r}: {a.shape} is not a 128-d embedding")
    a = a.reshape(EMBEDDING_DIM).astype(EMB_DTYPE)
    if not np.all(np.isfinite(a)):
        raise StoreError(f"template of {senior_id!r} from {source!r} has non-finite values")
    return a.tobytes()


def check_status(status: str) -> None:
    if status not in STATUSES:
        raise StoreError(f"unknown status {status!r} (use one of: {', '.join(STATUSES)})")

