"""Opening the database: SQLite (the embedded default) or PostgreSQL through psycopg 3."""

from __future__ import annotations

import logging
import sqlite3
import zlib
from collections.abc import Iterable, Sequence
from datetime import date
from pathlib import Path
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Date,
    Engine,
    String,
    any_,
    bindparam,
    create_engine,
    event,
    func,
    select,
    text,
    tuple_,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from district.db import migrate

log = logging.getLogger(__name__)


class DatabaseError(RuntimeError):
    """The database cannot be used, phrased for the operator."""


def _sqlite_pragmas(dbapi_conn: sqlite3.Connection, record: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL: the dashboard reads while serve writes; busy_timeout: writers wait for each other
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


def open_engine(url: str, *, migrate_schema: bool = True) -> Engine:
    try:
        u = make_url(url)
    except ArgumentError as e:
        raise DatabaseError(f"[database] url {url!r} is not a database URL: {e}") from e
    if u.get_backend_name() == "sqlite":
        if u.database and u.database != ":memory:":
            Path(u.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(u)
        event.listen(engine, "connect", _sqlite_pragmas)
    elif u.get_backend_name() == "postgresql":
        if u.get_driver_name() not in ("psycopg", "psycopg2"):
            u = u.set(drivername="postgresql+psycopg")
        engine = create_engine(u, pool_pre_ping=True, pool_size=4, max_overflow=4)
    else:
        raise DatabaseError(f"[database] url: {u.get_backend_name()} is not supported (use sqlite or postgresql)")
    if migrate_schema:
        try:
            migrate.upgrade(engine)
        except Exception as e:
            engine.dispose()
            raise DatabaseError(f"cannot open the database {u.render_as_string(hide_password=True)}: {e}") from e
    return engine


def is_postgres(conn: Connection | Engine) -> bool:
    return conn.dialect.name == "postgresql"


def lock_keys(conn: Connection, keys: Iterable[str]) -> None:
    """Serialise work on the same keys across serve processes (PostgreSQL transaction-scoped advisory locks,
    always taken in one order so two processes cannot deadlock). SQLite serialises writers by itself."""
    if not is_postgres(conn):
        return
    ids = sorted({zlib.crc32(k.encode("utf-8")) for k in keys})
    if ids:
        conn.execute(text("SELECT pg_advisory_xact_lock(k) FROM unnest(CAST(:ids AS bigint[])) AS k ORDER BY k"),
                     {"ids": ids})


def in_pairs(conn: Connection, a: Any, b: Any,
             pairs: Sequence[tuple[str, date]]) -> ColumnElement[bool]:
    """(a, b) IN pairs. On PostgreSQL as two array parameters (one short statement, prepared once, whatever
    the number of pairs); elsewhere as a row-value list."""
    if is_postgres(conn):
        f = func.unnest(bindparam(None, [p[0] for p in pairs], type_=ARRAY(String)),
                        bindparam(None, [p[1] for p in pairs], type_=ARRAY(Date)))
        t = f.table_valued("s", "d").render_derived()
        return tuple_(a, b).in_(select(t.c.s, t.c.d))
    return tuple_(a, b).in_(list(pairs))


def in_values(conn: Connection, col: Any, values: Sequence[str]) -> ColumnElement[bool]:
    """col IN values; on PostgreSQL `col = ANY(array parameter)`."""
    if is_postgres(conn):
        return col == any_(bindparam(None, list(values), type_=ARRAY(String)))
    return col.in_(list(values))


# -- monthly partitions of events (PostgreSQL) -------------------------------------------------------


def month_start(d: date) -> date:
    return d.replace(day=1)


def next_month(d: date) -> date:
    return date(d.year + d.month // 12, d.month % 12 + 1, 1)


def partition_name(d: date) -> str:
    return f"events_{d.year:04d}_{d.month:02d}"


class Partitions:
    """Creates the month's partition of `events` before its first event is inserted (cached per process)."""

    def __init__(self) -> None:
        self.known: set[date] = set()

    def ensure(self, engine: Engine, days: Iterable[date]) -> None:
        if engine.dialect.name != "postgresql":
            return
        months = {month_start(d) for d in days} - self.known
        if not months:
            return
        with engine.begin() as conn:
            existing = {r[0] for r in conn.execute(text(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'events'"))}
            for m in sorted(months):
                name = partition_name(m)
                if name not in existing:
                    # serialise creation between processes; the second one finds it made
                    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": zlib.crc32(name.encode())})
                    conn.execute(text(
                        f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF events "
                        f"FOR VALUES FROM ('{m.isoformat()}') TO ('{next_month(m).isoformat()}')"))
                    log.info("created partition %s of events", name)
        self.known |= months
