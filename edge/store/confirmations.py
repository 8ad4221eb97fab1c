"""Pending staff confirmations and their resolution; a confirmed one records its meal in the same transaction."""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from edge.delivery.events import MealEvent
from edge.store.auditlog import AuditEntry
from edge.store.meals import MealStore
from edge.store.models import ConfirmationRow
from edge.store.records import JOIN_WITHIN, Confirmation, StoredEvent, StoreError, to_confirmation, utcnow
from edge.store.staffdb import add_audit


class ConfirmationStore(MealStore):
    """Staff confirmations."""

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
        *,
        join_within: timedelta | None = JOIN_WITHIN,
    ) -> int:
        """Record a pending `confirm` decision (the candidate shown at the kiosk); returns its id.

        A second attempt for the same senior at the same kiosk on the same day, within `join_within` of a
        card that is still pending, joins that card instead of making another (one card per senior for
        staff, and one answer): its id is returned and the new reasons are added to it, so a later doubt
        about liveness still asks for a named staff member."""
        if decided_at.tzinfo is None or decided_at.utcoffset() is None:
            raise ValueError(f"naive datetime {decided_at!r}: decision times must be timezone-aware")
        what = f"could not record a confirmation for {senior_id!r}"
        if not (math.isfinite(distance) and math.isfinite(margin)):
            raise StoreError(f"{what}: distance {distance!r} and margin {margin!r} must be finite")
        with self._write(what) as s:
            if join_within is not None:
                earlier = s.scalars(
                    select(ConfirmationRow)
                    .where(
                        ConfirmationRow.state == "pending",
                        ConfirmationRow.kiosk_id == kiosk_id,
                        ConfirmationRow.senior_id == senior_id,
                        ConfirmationRow.local_date == local_date,
                    )
                    .order_by(ConfirmationRow.id.desc())
                ).first()
                if earlier is not None and abs(decided_at - earlier.decided_at) <= join_within:
                    joined = list(earlier.reasons) + [str(r) for r in reasons if str(r) not in earlier.reasons]
                    if joined != list(earlier.reasons):
                        earlier.reasons = joined
                    return int(earlier.id)
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
            return [to_confirmation(r) for r in s.scalars(q.order_by(ConfirmationRow.id))]

    def get_confirmation(self, confirmation_id: int) -> Confirmation | None:
        with self._read(f"could not read confirmation {confirmation_id}") as s:
            row = s.get(ConfirmationRow, confirmation_id)
            return None if row is None else to_confirmation(row)

    def confirmation_for_event(self, event_id: str) -> Confirmation | None:
        """The staff confirmation that produced this meal event, if staff confirmed it."""
        q = select(ConfirmationRow).where(ConfirmationRow.event_id == event_id)
        with self._read(f"could not look up the confirmation of event {event_id}") as s:
            row = s.scalars(q).first()
            return None if row is None else to_confirmation(row)

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
            add_audit(s, audit)  # in the same transaction: no resolution without its audit line
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
        row.resolved_at = utcnow()
        row.resolved_by = by.strip()
        row.event_id = event_id
        s.flush()
        return to_confirmation(row)
