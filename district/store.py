"""Writing one batch of verdicts in one transaction: events stored once, duplicates counted, conflicting copies
and quarantined payloads kept, kiosk state updated. The caller acknowledges the MQTT messages after commit.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import psycopg
from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError

from district import verify
from district.db.engine import Partitions, is_postgres
from district.db.models import Conflict, EventId, Kiosk, Quarantine
from district.db.models import Event as EventRow
from district.validate import Event, KioskKey, Rejected, Status


@dataclass(frozen=True)
class Incoming:
    """One received message and its verdict."""

    topic: str
    payload: bytes
    verdict: Event | Status | Rejected
    received_at: datetime


@dataclass
class BatchResult:
    stored: int = 0
    duplicates: int = 0
    conflicts: int = 0
    quarantined: int = 0
    statuses: int = 0
    kiosks: set[KioskKey] = field(default_factory=set)
    #: (senior_id, local_date) of stored meals, and event ids named by stored voids: to reconcile
    keys: set[tuple[str, date]] = field(default_factory=set)
    voided: set[str] = field(default_factory=set)
    #: received -> committed, seconds, of stored events
    delays: list[float] = field(default_factory=list)
    new_received: list[datetime] = field(default_factory=list)
    quarantine_reasons: list[str] = field(default_factory=list)


def merge(total: BatchResult, one: BatchResult) -> None:
    total.stored += one.stored
    total.duplicates += one.duplicates
    total.conflicts += one.conflicts
    total.quarantined += one.quarantined
    total.statuses += one.statuses
    total.kiosks |= one.kiosks
    total.keys |= one.keys
    total.voided |= one.voided
    total.delays += one.delays
    total.quarantine_reasons += one.quarantine_reasons


def _insert(conn: Connection, table: Any) -> Any:
    return (postgresql.insert if is_postgres(conn) else sqlite.insert)(table)


class KeyCache:
    """Registered public keys, re-read at most every `ttl` seconds (a newly registered kiosk counts soon)."""

    def __init__(self, ttl: float = 10.0) -> None:
        self.ttl = ttl
        self._keys: dict[KioskKey, str] = {}
        self._at = -1e9

    def get(self, conn: Connection, kiosk: KioskKey) -> str | None:
        if kiosk not in self._keys and time.monotonic() - self._at > min(self.ttl, 1.0) or \
                time.monotonic() - self._at > self.ttl:
            rows = conn.execute(select(Kiosk.district, Kiosk.centre_id, Kiosk.kiosk_id, Kiosk.public_key)
                                .where(Kiosk.public_key.is_not(None)))
            self._keys = {KioskKey(r[0], r[1], r[2]): str(r[3]) for r in rows}
            self._at = time.monotonic()
        return self._keys.get(kiosk)


def _naive_utc(dt: datetime) -> datetime:
    return dt.astimezone(UTC).replace(tzinfo=None)


def _arbiter(conn: Connection, rows: list[tuple[str, date, str, datetime]]) -> set[str]:
    """Insert (event_id, local_date, sha256, received_at) into event_ids; the ids that were not there yet."""
    if is_postgres(conn):
        # arrays instead of one placeholder per value: one short statement whatever the batch size
        cur = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        cur.execute("INSERT INTO event_ids (event_id, local_date, sha256, received_at) "
                    "SELECT * FROM unnest(%s::varchar[], %s::date[], %s::varchar[], %s::timestamp[]) "
                    "ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
                    [[r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows],
                     [_naive_utc(r[3]) for r in rows]])
        return {r[0] for r in cur.fetchall()}
    ins = _insert(conn, EventId).on_conflict_do_nothing(index_elements=["event_id"]).returning(EventId.event_id)
    return set(conn.execute(ins, [{"event_id": r[0], "local_date": r[1], "sha256": r[2], "received_at": r[3]}
                                  for r in rows]).scalars())


def _kiosk_seen(conn: Connection, items: list[tuple[KioskKey, dict[str, Any]]], now: datetime) -> None:
    """Raise each kiosk's max seq and last event time; one statement, kiosks in a fixed order (two processes
    updating the same kiosks cannot deadlock)."""
    if is_postgres(conn):
        cur = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        cur.execute(
            "INSERT INTO kiosks (district, centre_id, kiosk_id, state, max_seq, last_event_at, last_received_at) "
            "SELECT d, c, k, 'unknown', s, e, %s FROM unnest(%s::varchar[], %s::varchar[], %s::varchar[], "
            "%s::bigint[], %s::timestamp[]) AS t(d, c, k, s, e) "
            "ON CONFLICT (district, centre_id, kiosk_id) DO UPDATE SET "
            "max_seq = greatest(kiosks.max_seq, excluded.max_seq), "
            "last_event_at = greatest(kiosks.last_event_at, excluded.last_event_at), "
            "last_received_at = excluded.last_received_at",
            [_naive_utc(now), [k.district for k, _ in items], [k.centre_id for k, _ in items],
             [k.kiosk_id for k, _ in items], [v["max_seq"] for _, v in items],
             [_naive_utc(v["last_event_at"]) for _, v in items]])
        return
    ins = _insert(conn, Kiosk)
    conn.execute(ins.on_conflict_do_update(
        index_elements=["district", "centre_id", "kiosk_id"],
        set_={"max_seq": func.max(Kiosk.max_seq, ins.excluded.max_seq),
              "last_event_at": func.coalesce(func.max(Kiosk.last_event_at, ins.excluded.last_event_at),
                                             ins.excluded.last_event_at),
              "last_received_at": ins.excluded.last_received_at}),
        [{"district": k.district, "centre_id": k.centre_id, "kiosk_id": k.kiosk_id, "state": "unknown",
          "max_seq": v["max_seq"], "last_event_at": v["last_event_at"], "last_received_at": now} for k, v in items])


EVENT_COLUMNS = ("event_id", "local_date", "version", "kind", "district", "centre_id", "kiosk_id", "seq", "senior_id",
                 "meal", "decided_at", "price_fen", "subsidy_fen", "payable_fen", "check_in", "staff_id", "voids",
                 "reasons", "prev_hash", "event_hash", "signed", "topic", "raw", "received_at", "ingested_at")
assert set(EVENT_COLUMNS) == {c.name for c in EventRow.__table__.columns}


def _event_row(e: Event, received_at: datetime, now: datetime, naive: bool) -> tuple[Any, ...]:
    """The events row in EVENT_COLUMNS order; times as naive UTC for COPY (naive=True), else aware."""
    o = e.obj
    t = _naive_utc if naive else (lambda d: d)
    return (e.event_id, e.local_date, e.version, e.kind, e.kiosk.district, e.kiosk.centre_id, e.kiosk.kiosk_id,
            e.seq, o["senior_id"], o["meal"], t(e.decided_at), o["price_fen"], o["subsidy_fen"], o["payable_fen"],
            e.check_in, o.get("staff_id"), o.get("voids"), ",".join(o["reasons"])[:300], o.get("prev_hash"),
            verify.event_hash(o) if e.signed else None, e.signed, e.topic[:300], e.raw, t(received_at), t(now))


def _insert_events(conn: Connection, items: list[tuple[Event, datetime]], now: datetime) -> None:
    if not is_postgres(conn):
        conn.execute(_insert(conn, EventRow), [dict(zip(EVENT_COLUMNS, _event_row(e, at, now, False), strict=True))
                                               for e, at in items])
        return
    # COPY into the partitioned table: PostgreSQL routes each row to its month
    cur = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    with cur.copy(f"COPY events ({', '.join(EVENT_COLUMNS)}) FROM STDIN") as copy:
        for e, at in items:
            copy.write_row(_event_row(e, at, now, True))


class BatchWriter:
    def __init__(self, engine: Engine, *, keep_bytes: int = 4096) -> None:
        self.engine = engine
        self.keep_bytes = keep_bytes
        self.partitions = Partitions()
        self.keys = KeyCache()

    def write(self, batch: Sequence[Incoming]) -> BatchResult:
        """All of the batch in one transaction; raises a SQLAlchemy error (nothing committed) if the database
        fails, also for what the fast path sent through the driver itself."""
        try:
            return self._write(batch)
        except psycopg.Error as e:
            raise DBAPIError.instance("(COPY or array insert)", None, e, psycopg.Error) from e

    def _write(self, batch: Sequence[Incoming]) -> BatchResult:
        res = BatchResult()
        events = [m for m in batch if isinstance(m.verdict, Event)]
        self.partitions.ensure(self.engine, {m.verdict.local_date for m in events if isinstance(m.verdict, Event)})
        with self.engine.begin() as conn:
            quarantine: list[tuple[Incoming, str]] = [
                (m, m.verdict.reason) for m in batch if isinstance(m.verdict, Rejected)]
            first: dict[str, tuple[Event, datetime]] = {}
            later: list[tuple[Event, datetime]] = []
            for m in events:
                e = m.verdict
                assert isinstance(e, Event)
                if e.signed and (why := verify.verify(e.obj, self.keys.get(conn, e.kiosk))):
                    quarantine.append((m, why))
                elif e.event_id in first:
                    later.append((e, m.received_at))
                else:
                    first[e.event_id] = (e, m.received_at)
            now = datetime.now(UTC)
            self._quarantine(conn, quarantine, now, res)
            self._events(conn, first, later, now, res)
            self._statuses(conn, [m for m in batch if isinstance(m.verdict, Status)], res)
        done = time.time()
        res.delays = [done - t.timestamp() for t in res.new_received]
        return res

    def _quarantine(self, conn: Connection, items: list[tuple[Incoming, str]], now: datetime,
                    res: BatchResult) -> None:
        if not items:
            return
        conn.execute(_insert(conn, Quarantine), [
            {"received_at": m.received_at, "topic": m.topic[:300], "reason": reason[:400], "size": len(m.payload),
             "sha256": hashlib.sha256(m.payload).hexdigest(), "raw": m.payload[: self.keep_bytes]}
            for m, reason in items])
        res.quarantined += len(items)
        res.quarantine_reasons.extend(r for _, r in items)

    def _events(self, conn: Connection, first: dict[str, tuple[Event, datetime]],
                later: list[tuple[Event, datetime]], now: datetime, res: BatchResult) -> None:
        if not first:
            return
        # the arbiter: whichever transaction inserts the event_id first stores the event
        new = _arbiter(conn, [(eid, e.local_date, e.sha256, at) for eid, (e, at) in first.items()])
        copies = [first[eid] for eid in set(first) - new] + later
        if copies:
            ids = sorted({e.event_id for e, _ in copies})
            q = select(EventId.event_id, EventId.sha256).where(EventId.event_id.in_(ids))
            kept = {eid: sha for eid, sha in conn.execute(q)}
            kept.update({eid: first[eid][0].sha256 for eid in new})
            for e, at in copies:
                if kept.get(e.event_id) == e.sha256:
                    res.duplicates += 1
                else:
                    self._conflict(conn, e, kept.get(e.event_id, ""), at)
                    res.conflicts += 1
        if not new:
            return
        items = [first[eid] for eid in new]
        res.new_received = [at for _, at in items]
        _insert_events(conn, items, now)
        res.stored += len(items)
        per_kiosk: dict[KioskKey, dict[str, Any]] = {}
        for eid in new:
            e = first[eid][0]
            res.kiosks.add(e.kiosk)
            if e.kind == "void":
                res.voided.add(str(e.obj["voids"]))
            else:
                res.keys.add((str(e.obj["senior_id"]), e.local_date))
            k = per_kiosk.setdefault(e.kiosk, {"max_seq": 0, "last_event_at": e.decided_at})
            k["max_seq"] = max(k["max_seq"], e.seq)
            k["last_event_at"] = max(k["last_event_at"], e.decided_at)
        _kiosk_seen(conn, sorted(per_kiosk.items(), key=lambda kv: str(kv[0])), now)

    def _conflict(self, conn: Connection, e: Event, kept_sha: str, at: datetime) -> None:
        ins = _insert(conn, Conflict).values(
            event_id=e.event_id, kept_sha256=kept_sha, other_sha256=e.sha256, topic=e.topic[:300],
            raw=e.raw[: self.keep_bytes], first_at=at, copies=1)
        conn.execute(ins.on_conflict_do_update(index_elements=["event_id", "other_sha256"],
                                               set_={"copies": Conflict.copies + 1}))

    def _statuses(self, conn: Connection, items: list[Incoming], res: BatchResult) -> None:
        for m in items:
            s = m.verdict
            assert isinstance(s, Status)
            vals = {"state": s.state, "state_reason": s.reason, "status_ts": s.ts, "status_at": m.received_at,
                    "backlog": s.backlog, "reported_last_seq": s.last_seq}
            ins = _insert(conn, Kiosk).values(district=s.kiosk.district, centre_id=s.kiosk.centre_id,
                                              kiosk_id=s.kiosk.kiosk_id, max_seq=0, **vals)
            conn.execute(ins.on_conflict_do_update(index_elements=["district", "centre_id", "kiosk_id"], set_=vals))
            res.statuses += 1
            res.kiosks.add(s.kiosk)


def register_kiosk(engine: Engine, district: str, centre_id: str, kiosk_id: str, public_key: str,
                   actor: str = "cli") -> None:
    """Record a kiosk's public key (base64 of the raw Ed25519 key); its signed events verify against it."""
    from district.users import audit

    with engine.begin() as conn:
        ins = _insert(conn, Kiosk).values(district=district, centre_id=centre_id, kiosk_id=kiosk_id,
                                          public_key=public_key, state="unknown", max_seq=0)
        conn.execute(ins.on_conflict_do_update(index_elements=["district", "centre_id", "kiosk_id"],
                                               set_={"public_key": public_key}))
        audit(conn, actor, "kiosk.register", f"{district}/{centre_id}/{kiosk_id} {public_key}")
