"""After events are committed: sequence gaps per kiosk (open until filled), signature-chain breaks, and the
district-wide double-subsidy flags for the (senior, date) pairs that changed.

Safe with several serve processes: each step locks its kiosks or (senior, date) pairs (PostgreSQL advisory
locks) and reads after its own commit, so the last process to look sees every committed event.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Connection, Engine, and_, delete, insert, select, update
from sqlalchemy.orm import Session

from district import reconcile
from district.db.engine import in_pairs, in_values, lock_keys
from district.db.models import Adjustment, Alert, Gap, Kiosk
from district.db.models import Event as EventRow
from district.validate import KioskKey

log = logging.getLogger(__name__)


def missing_ranges(seqs: Iterable[int], start: int, upto: int | None = None) -> list[tuple[int, int]]:
    """Ranges of numbers missing from `seqs` after `start` (everything up to start is known present), up to
    max(seqs) or `upto` (a kiosk's reported last seq)."""
    out: list[tuple[int, int]] = []
    expect = start + 1
    top = start
    for s in sorted(set(seqs)):
        if s < expect:
            continue
        if s > expect:
            out.append((expect, s - 1))
        expect = s + 1
        top = s
    if upto is not None and upto > top:
        out.append((top + 1, upto))
    return out


class Watcher:
    def __init__(self, engine: Engine, cap_fen: int = 300) -> None:
        self.engine = engine
        self.cap_fen = cap_fen
        #: per kiosk, the highest seq with 1..seq all present, as of this process's last look
        self.contiguous: dict[KioskKey, int] = {}

    # -- gaps and chain --------------------------------------------------------------------------------

    def check_kiosks(self, kiosks: Iterable[KioskKey]) -> None:
        ordered = sorted(kiosks, key=str)
        with self.engine.begin() as conn:
            lock_keys(conn, [f"kiosk:{k}" for k in ordered])
            for k in ordered:
                self._check_kiosk(conn, k)

    def _check_kiosk(self, conn: Connection, k: KioskKey) -> None:
        where = and_(EventRow.district == k.district, EventRow.centre_id == k.centre_id,
                     EventRow.kiosk_id == k.kiosk_id)
        low = self.contiguous.get(k, 0)
        rows = conn.execute(select(EventRow.seq, EventRow.event_id, EventRow.event_hash, EventRow.prev_hash)
                            .where(where, EventRow.seq >= max(low, 1)).order_by(EventRow.seq)).all()
        reported = conn.execute(select(Kiosk.reported_last_seq).where(
            Kiosk.district == k.district, Kiosk.centre_id == k.centre_id, Kiosk.kiosk_id == k.kiosk_id)).scalar()
        seqs = [r.seq for r in rows]
        gaps = missing_ranges(seqs, low, reported)
        self.contiguous[k] = gaps[0][0] - 1 if gaps else max([low, *seqs])
        now = datetime.now(UTC)
        kw = {"district": k.district, "centre_id": k.centre_id, "kiosk_id": k.kiosk_id}
        open_rows = conn.execute(select(Gap.id, Gap.first_seq, Gap.last_seq).where(
            Gap.district == k.district, Gap.centre_id == k.centre_id, Gap.kiosk_id == k.kiosk_id,
            Gap.closed_at.is_(None))).all()
        have = {(g.first_seq, g.last_seq): g.id for g in open_rows}
        # every open gap below `low` has been filled: 1..low were all present at an earlier look
        current = set(gaps)
        closed = [gid for r, gid in have.items() if r not in current]
        if closed:
            conn.execute(update(Gap).where(Gap.id.in_(closed)).values(closed_at=now))
        new = [r for r in gaps if r not in have]
        if new:
            conn.execute(insert(Gap), [{**kw, "first_seq": a, "last_seq": b, "opened_at": now} for a, b in new])
            for a, b in new:
                log.warning("kiosk %s: events %s missing (seq gap open)", k, f"{a}-{b}" if a != b else a)
        self._chain(conn, k, rows, now)

    def _chain(self, conn: Connection, k: KioskKey, rows: Sequence[Any], now: datetime) -> None:
        alerts = []
        for prev, cur in zip(rows, rows[1:], strict=False):
            if cur.seq == prev.seq:
                alerts.append(("seq_reused", cur.event_id, f"seq {cur.seq} also used by event {prev.event_id}"))
            elif cur.seq == prev.seq + 1 and cur.prev_hash is not None and prev.event_hash is not None \
                    and cur.prev_hash != prev.event_hash:
                alerts.append(("chain_break", cur.event_id,
                               f"seq {cur.seq}: prev_hash does not match the hash of seq {prev.seq} ({prev.event_id})"))
        if not alerts:
            return
        existing = set(conn.execute(select(Alert.kind, Alert.event_id).where(
            Alert.event_id.in_([a[1] for a in alerts]))))
        fresh = [a for a in alerts if (a[0], a[1]) not in existing]
        if fresh:
            conn.execute(insert(Alert), [
                {"at": now, "kind": kind, "district": k.district, "centre_id": k.centre_id, "kiosk_id": k.kiosk_id,
                 "event_id": eid, "detail": detail[:400]} for kind, eid, detail in fresh])
            for kind, _eid, detail in fresh:
                log.warning("kiosk %s: %s: %s", k, kind, detail)

    # -- double subsidies and voids --------------------------------------------------------------------

    def reconcile(self, keys: set[tuple[str, date]], voided: set[str]) -> int:
        """Recompute the adjustments of these (senior, date) pairs and of the meals these voids name.
        Returns the number of flags now standing for them."""
        if not keys and not voided:
            return 0
        with self.engine.begin() as conn:
            if voided:
                keys = keys | set(conn.execute(select(EventRow.senior_id, EventRow.local_date).where(
                    EventRow.event_id.in_(sorted(voided)), EventRow.kind == "meal")))
            if not keys:
                return 0
            lock_keys(conn, [f"day:{s}:{d}" for s, d in keys])
            total = 0
            ordered = sorted(keys)
            step = 5000 if conn.dialect.name == "postgresql" else 400  # SQLite: bound variables per statement
            for i in range(0, len(ordered), step):
                total += self._reconcile(conn, ordered[i:i + step])
            return total

    def _reconcile(self, conn: Connection, keys: list[tuple[str, date]]) -> int:
        # only subsidised meals can be flagged; most (senior, date) pairs have one and no adjustment yet
        meals = [reconcile.Meal(r.event_id, r.senior_id, r.local_date, r.centre_id, r.decided_at, r.subsidy_fen)
                 for r in conn.execute(select(EventRow.event_id, EventRow.senior_id, EventRow.local_date,
                                              EventRow.centre_id, EventRow.decided_at, EventRow.subsidy_fen)
                                       .where(in_pairs(conn, EventRow.senior_id, EventRow.local_date, keys),
                                              EventRow.kind == "meal", EventRow.subsidy_fen > 0))]
        have = {r.event_id: r for r in Session(conn).scalars(select(Adjustment).where(
            in_pairs(conn, Adjustment.senior_id, Adjustment.local_date, keys)))}
        voids = void_map(conn, [m.event_id for m in meals])
        want = {f.event_id: f for f in reconcile.flags(meals, voids, self.cap_fen)}
        gone = [eid for eid, a in have.items() if eid not in want or (a.reason, a.other_event_id, a.amount_fen)
                != (want[eid].reason, want[eid].other_event_id, want[eid].amount_fen)]
        if gone:
            conn.execute(delete(Adjustment).where(Adjustment.event_id.in_(gone)))
        now = datetime.now(UTC)
        add = [f for eid, f in want.items() if eid not in have or eid in gone]
        if add:
            conn.execute(insert(Adjustment), [
                {"event_id": f.event_id, "local_date": f.local_date, "senior_id": f.senior_id,
                 "centre_id": f.centre_id, "reason": f.reason, "other_event_id": f.other_event_id,
                 "amount_fen": f.amount_fen, "flagged_at": now} for f in add])
            for f in add:
                if f.reason == reconcile.DOUBLE:
                    log.warning("senior %s subsidised twice on %s: %s at %s flagged, %s stands", f.senior_id,
                                f.local_date, f.event_id, f.centre_id, f.other_event_id)
        return len(want)


def void_map(conn: Connection, meal_ids: list[str]) -> dict[str, str]:
    """voided meal id -> the (first stored) void event naming it."""
    out: dict[str, str] = {}
    for i in range(0, len(meal_ids), 5000):
        q = select(EventRow.voids, EventRow.event_id).where(
            EventRow.kind == "void", in_values(conn, EventRow.voids, meal_ids[i:i + 5000]))
        for voids, eid in conn.execute(q.order_by(EventRow.decided_at, EventRow.event_id)):
            if voids is not None:
                out.setdefault(voids, eid)
    return out
