"""Meal events and their outbox rows, written together in one transaction with the kiosk's next sequence
number; what the publisher reads and marks delivered."""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from edge.delivery.events import MealEvent, build_payload, dumps
from edge.meals.rules import PriorMeal, VoidTarget, void_refusal
from edge.store.auditlog import AuditEntry
from edge.store.base import StoreBase
from edge.store.models import KioskSeqRow, MealEventRow, OutboxRow
from edge.store.records import AlreadyServed, EventRow, StoredEvent, StoreError, VoidRefused, utcnow
from edge.store.signer import SigningError
from edge.store.staffdb import add_audit


def _published(payload: str) -> dict[str, Any]:
    try:
        obj = json.loads(payload)
    except ValueError:
        return {}
    return obj if isinstance(obj, dict) else {}


def _check_in(obj: dict[str, Any], confirmed_by: str | None) -> str:
    """How a stored event says the senior was checked in (events before check_in existed: from confirmed_by)."""
    value = obj.get("check_in")
    return str(value) if value else ("face_confirmed" if confirmed_by else "face")


def _text(obj: dict[str, Any], key: str) -> str | None:
    value = obj.get(key)
    return None if value is None else str(value)


class MealStore(StoreBase):
    """Meal events and the outbox."""

    def meals_on(self, senior_id: str, local_date: date) -> list[PriorMeal]:
        with self._read(f"could not read meals of {senior_id!r}") as s:
            rows = s.execute(
                select(MealEventRow.meal, MealEventRow.subsidy_fen, MealEventRow.voided_by)
                .where(
                    MealEventRow.senior_id == senior_id,
                    MealEventRow.local_date == local_date,
                    MealEventRow.kind == "meal",
                )
                .order_by(MealEventRow.seq)
            ).all()
            # voided meals too, marked: whether they count is the rules' decision (edge.meals.rules)
            return [PriorMeal(m, int(f), voided=v is not None) for m, f, v in rows]

    def record_meal(self, event: MealEvent, topic: str, audit: AuditEntry | None = None) -> StoredEvent:
        """Allocate the kiosk's next seq and write the event and its outbox row in ONE transaction.

        Either both rows and the new seq are committed (fsync'd: synchronous=FULL) or nothing is; so is
        `audit` (a staff member's manual check-in or void: no such event without its audit line).
        A void (kind "void") goes the same way; the meal it names is marked voided in the same transaction,
        after edge.meals.rules.void_refusal allowed it (VoidRefused otherwise, nothing written).
        Raises StoreError (disk full, I/O error, duplicate event_id) or ValueError (invalid event).
        """
        with self._write(f"could not record meal event {event.event_id}") as s:
            stored = self._insert_meal(s, event, topic)
            add_audit(s, audit)
            return stored

    def _insert_meal(self, s: Session, event: MealEvent, topic: str) -> StoredEvent:
        """The body of record_meal, inside the caller's write transaction: seq, chain link and signature
        are committed together with the event or not at all."""
        seq_row = s.get(KioskSeqRow, event.kiosk_id)
        if seq_row is None:
            seq_row = KioskSeqRow(kiosk_id=event.kiosk_id, last_seq=0)
            s.add(seq_row)
        seq = seq_row.last_seq + 1
        seq_row.last_seq = seq
        previous = s.scalar(
            select(MealEventRow.payload).where(MealEventRow.kiosk_id == event.kiosk_id, MealEventRow.seq == seq - 1)
        )
        try:
            payload_obj = self.signer.sign(build_payload(event, seq, self.signer.prev_hash(previous, seq)))
        except SigningError as e:
            raise StoreError(f"meal event {event.event_id} not recorded: {e}") from e
        text = dumps(payload_obj)
        now = utcnow()
        if s.get(MealEventRow, event.event_id) is not None:
            raise StoreError(f"meal event {event.event_id} is already recorded")
        if event.kind == "void":
            self._mark_voided(s, event)
        else:
            # Checked inside the IMMEDIATE write transaction (and backed by a unique index), so two writers
            # (the kiosk and a staff confirmation) can never record the same meal twice. A voided meal
            # does not stand: the senior may be served again.
            earlier = s.scalar(
                select(MealEventRow.event_id).where(
                    MealEventRow.senior_id == event.senior_id,
                    MealEventRow.local_date == event.local_date,
                    MealEventRow.meal == event.meal,
                    MealEventRow.kind == "meal",
                    MealEventRow.voided_by.is_(None),
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
                voids=event.voids,
            )
        )
        s.flush()  # the event row first: the outbox row references it
        s.add(
            OutboxRow(
                event_id=event.event_id, seq=seq, topic=topic, payload=text, created_at=now, attempts=0
            )
        )
        return StoredEvent(event.event_id, seq, topic, text.encode("utf-8"))

    @staticmethod
    def _mark_voided(s: Session, event: MealEvent) -> None:
        """The void's side of the transaction: the meal it names must be today's (the void's local date),
        standing and a meal; it is then marked voided by this event. The void repeats the meal's senior, meal
        window, date and money, so the district can reverse it without looking anything up."""
        original = s.get(MealEventRow, event.voids) if event.voids else None
        target = None if original is None else VoidTarget(
            original.kind, original.local_date, original.voided_by is not None)
        refusal = void_refusal(target, event.local_date)
        if refusal is not None or original is None:
            raise VoidRefused(refusal or "not_found", f"event {event.voids} cannot be voided: {refusal}")
        mine = (event.senior_id, event.meal, event.price_fen, event.subsidy_fen, event.payable_fen, event.centre_id)
        theirs = (original.senior_id, original.meal, original.price_fen, original.subsidy_fen, original.payable_fen,
                  original.centre_id)
        if mine != theirs:
            raise ValueError(f"void {event.event_id} does not repeat meal {original.event_id}: {mine} != {theirs}")
        original.voided_by = event.event_id

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
                .values(attempts=OutboxRow.attempts + 1, last_attempt_at=utcnow(), last_error=error)
            )

    def list_events(self, pending_only: bool = False, limit: int | None = None) -> list[EventRow]:
        """Events in seq order; with `limit`, the newest `limit` of them."""
        out = self._events(OutboxRow.delivered_at.is_(None) if pending_only else None, limit)
        out.reverse()
        return out

    def event(self, event_id: str) -> EventRow | None:
        """One meal event with its delivery state, by id."""
        return next(iter(self._events(MealEventRow.event_id == event_id)), None)

    def meals_of_day(self, local_date: date) -> list[EventRow]:
        """The meal events of one local date (every kiosk sharing this store), newest first."""
        return self._events(MealEventRow.local_date == local_date)

    def last_delivery(self) -> datetime | None:
        """When the broker last acknowledged an event (UTC), None if never."""
        with self._read("could not read the outbox") as s:
            return s.scalar(select(func.max(OutboxRow.delivered_at)))

    def _events(self, where: Any = None, limit: int | None = None) -> list[EventRow]:
        """Events (newest first) with their outbox rows."""
        q = select(MealEventRow, OutboxRow).join(OutboxRow, OutboxRow.event_id == MealEventRow.event_id)
        if where is not None:
            q = q.where(where)
        q = q.order_by(MealEventRow.seq.desc(), MealEventRow.kiosk_id.desc())
        if limit is not None:
            q = q.limit(limit)
        with self._read("could not list events") as s:
            return [self._row(e, o, _published(e.payload)) for e, o in s.execute(q)]

    @staticmethod
    def _row(e: MealEventRow, o: OutboxRow, obj: dict[str, Any]) -> EventRow:
        return EventRow(
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
            check_in=_check_in(obj, e.confirmed_by),
            voids=e.voids,
            void_reason=_text(obj, "void_reason"),
            void_note=_text(obj, "void_note"),
            voided_by=e.voided_by,
            staff_id=_text(obj, "staff_id"),
            reasons=tuple(e.reasons or ()),
        )

    def newest_event_time(self) -> datetime | None:
        """The latest `decided_at` of any meal event in the store (compared as instants, whatever their
        offsets): the clock guard's reference. None for a store without events."""
        with self._read("could not read the newest meal event") as s:
            return s.scalar(
                select(MealEventRow.decided_at).order_by(func.julianday(MealEventRow.decided_at).desc()).limit(1)
            )

    def last_seq(self, kiosk_id: str) -> int:
        with self._read("could not read the sequence") as s:
            row = s.get(KioskSeqRow, kiosk_id)
            return 0 if row is None else row.last_seq
