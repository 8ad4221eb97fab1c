"""Outbox drain bookkeeping (pure, no paho, no SQL) and the `meal-edge events` listing.

The publisher hands at most `size` events to the MQTT client at a time. Each handed-over event is
tracked by the message id (mid) the client gave it, until the broker's PUBACK for that mid arrives;
only then is the event marked delivered. Events still in flight when the connection drops stay in
the window: the MQTT client re-sends them itself on reconnect (same mid, DUP flag). After a restart
the window is empty and every undelivered event is handed over again from the outbox, with the same
event_id, seq and payload bytes.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from edge.store import EventRow, Store, StoredEvent


class InflightWindow:
    """mid <-> event_id for events handed to the MQTT client and not yet acknowledged."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("the in-flight window needs room for at least one event")
        self.size = size
        self._by_mid: dict[int, str] = {}
        self._events: set[str] = set()

    def __len__(self) -> int:
        return len(self._by_mid)

    @property
    def room(self) -> int:
        return max(0, self.size - len(self._by_mid))

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._events

    def add(self, mid: int, event_id: str) -> None:
        if mid in self._by_mid:
            raise ValueError(f"mid {mid} is already in flight for event {self._by_mid[mid]}")
        self._by_mid[mid] = event_id
        self._events.add(event_id)

    def ack(self, mid: int) -> str | None:
        """The event acknowledged by this mid, or None for a mid we did not track (status messages)."""
        event_id = self._by_mid.pop(mid, None)
        if event_id is not None:
            self._events.discard(event_id)
        return event_id

    def to_send(self, pending: Iterable[StoredEvent]) -> list[StoredEvent]:
        """The next events to hand over: not already in flight, in seq order, as many as there is room."""
        out: list[StoredEvent] = []
        for ev in sorted(pending, key=lambda e: e.seq):
            if len(out) >= self.room:
                break
            if ev.event_id not in self._events:
                out.append(ev)
        return out

    def clear(self) -> None:
        self._by_mid.clear()
        self._events.clear()


@dataclass
class Outage:
    """Logs a broker outage once when it starts and once when it ends, not once per retry."""

    started: float | None = None
    retries: int = field(default=0)

    def failed(self, now: float) -> bool:
        """A connection failed or was lost; True if this starts an outage (log it)."""
        if self.started is None:
            self.started = now
            self.retries = 0
            return True
        self.retries += 1
        return False

    def recovered(self, now: float) -> float | None:
        """Connected; the outage's length in seconds if one was running (log it), else None."""
        if self.started is None:
            return None
        length = now - self.started
        self.started = None
        return length


# -------------------------------------------------------------------------------------------------
# meal-edge events [--pending] [--json]


def _yuan(fen: int) -> str:
    return f"{fen // 100}.{fen % 100:02d}"


def _row_json(r: EventRow) -> str:
    obj = {
        "event_id": r.event_id,
        "seq": r.seq,
        "kiosk_id": r.kiosk_id,
        "kind": r.kind,
        "senior_id": r.senior_id,
        "meal": r.meal,
        "local_date": r.local_date.isoformat(),
        "decided_at": r.decided_at.isoformat(),
        "price_fen": r.price_fen,
        "subsidy_fen": r.subsidy_fen,
        "payable_fen": r.payable_fen,
        "confirmed_by": r.confirmed_by,
        "state": r.state,
        "delivered_at": None if r.delivered_at is None else r.delivered_at.isoformat(),
        "attempts": r.attempts,
        "last_error": r.last_error,
    }
    if r.kind == "void":
        obj.update(voids=r.voids, void_reason=r.void_reason, void_note=r.void_note)
    elif r.voided_by:
        obj["voided_by"] = r.voided_by
    return json.dumps(obj, ensure_ascii=False)


def _fmt_time(dt: datetime | None) -> str:
    return "-" if dt is None else dt.isoformat(timespec="seconds")


def events_command(store: Store, pending_only: bool, as_json: bool, out: TextIO | None = None) -> int:
    """`meal-edge events`: a table for people, or one JSON object per line for scripts. Exit code 0."""
    out = out or sys.stdout  # looked up now, not at import (tests and callers swap sys.stdout)
    rows = store.list_events(pending_only=pending_only)
    if as_json:
        for r in rows:
            out.write(_row_json(r) + "\n")
        return 0
    headers = (
        "seq", "event_id", "decided_at", "senior_id", "meal", "price ¥", "subsidy ¥", "payable ¥", "state",
        "attempts",
    )
    table = [
        (
            str(r.seq),
            r.event_id,
            _fmt_time(r.decided_at),
            r.senior_id,
            r.meal + (" (staff)" if r.confirmed_by else "") + (f" VOID of {r.voids}" if r.kind == "void" else "")
            + (" (voided)" if r.voided_by else ""),
            _yuan(r.price_fen),
            _yuan(r.subsidy_fen),
            _yuan(r.payable_fen),
            r.state if r.delivered_at is None else f"delivered {_fmt_time(r.delivered_at)}",
            str(r.attempts),
        )
        for r in rows
    ]
    widths = [max([len(h)] + [len(row[i]) for row in table]) for i, h in enumerate(headers)]
    numeric = {0, 5, 6, 7, 9}

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(c.rjust(w) if i in numeric else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    out.write(line(headers) + "\n")
    for row in table:
        out.write(line(row) + "\n")
    pending = sum(1 for r in rows if r.delivered_at is None)
    what = "pending events" if pending_only else "events"
    out.write(f"{len(rows)} {what}" + ("" if pending_only else f", {pending} pending delivery") + "\n")
    errors = [r for r in rows if r.delivered_at is None and r.last_error]
    if errors:
        out.write(f"last delivery error: {errors[-1].last_error}\n")
    return 0
