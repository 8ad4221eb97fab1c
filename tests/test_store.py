"""The local store on real SQLite files: schema versions, seniors, templates, seq allocation,
one-transaction recording, rollback on a full disk, and erasure that leaves no template bytes behind."""

from __future__ import annotations

import hashlib
import itertools
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from conftest import meal_event
from sqlalchemy import Engine, create_engine, event, inspect

from edge.delivery.events import MealEvent, new_event_id
from edge.meals.rules import PriorMeal, Senior
from edge.store import AlreadyServed, Store, StoreError, TemplateIn, migrations
from edge.store.models import Base

SH = ZoneInfo("Asia/Shanghai")
TOPIC = "meal/v1/xuhui/centre-001/kiosk-1/events"


def senior(sid: str = "S0001", status: str = "active", name: str = "Wang Fang") -> Senior:
    return Senior(sid, name, date(1950, 2, 28), "xuhui", status)  # type: ignore[arg-type]


_SENIORS = itertools.count(1000)


def meal(senior_id: str | None = None, kiosk: str = "kiosk-1", **kw: object) -> MealEvent:
    """A valid lunch event; a new senior each time unless one is named (one lunch per senior a day)."""
    if senior_id is None:
        senior_id = f"S{next(_SENIORS)}"
    return meal_event(**{"senior_id": senior_id, "kiosk_id": kiosk, "match": {"distance": 0.3, "frames": 3}, **kw})


def emb(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=128).astype(np.float32)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "state" / "meal-edge.sqlite")
    yield s
    s.close()


def counts(path: Path) -> dict[str, int]:
    con = sqlite3.connect(path)
    try:
        out = {
            t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("seniors", "face_templates", "meal_events", "outbox")
        }
        out["last_seq"] = con.execute("SELECT coalesce(max(last_seq), 0) FROM kiosk_seq").fetchone()[0]
        out["max_seq"] = con.execute("SELECT coalesce(max(seq), 0) FROM meal_events").fetchone()[0]
        out["orphans"] = con.execute(
            "SELECT count(*) FROM meal_events e FULL OUTER JOIN outbox o ON o.event_id = e.event_id "
            "WHERE e.event_id IS NULL OR o.event_id IS NULL"
        ).fetchone()[0]
        return out
    finally:
        con.close()


# -- file set-up and schema versions ----------------------------------------------------------------


def test_pragmas_are_set_on_every_connection(store: Store) -> None:
    assert store.pragma("journal_mode") == "wal"
    assert store.pragma("synchronous") == 2  # FULL
    assert store.pragma("foreign_keys") == 1
    assert store.pragma("secure_delete") == 1
    store.add_senior(senior())
    assert store.path.with_name(store.path.name + "-wal").exists()
    # WAL is a property of the file: a plain sqlite3 connection sees it too
    con = sqlite3.connect(store.path)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()


def test_new_store_is_at_the_latest_version_and_reopens_without_migrating(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "folder" / "s.sqlite"
    with Store(path) as s:
        assert s.schema_version == len(migrations.MIGRATIONS) == 6
        s.add_senior(senior())
    with Store(path) as s:
        assert [v for v, _ in s.versions()] == [1, 2, 3, 4, 5, 6]
        assert s.get_senior("S0001") == senior()


def test_migrated_schema_matches_the_models(store: Store) -> None:
    # the file as any other SQLite client sees it
    engine = create_engine(f"sqlite:///{store.path}")
    insp = inspect(engine)
    for table in Base.metadata.sorted_tables:
        db_cols = {c["name"]: c for c in insp.get_columns(table.name)}
        assert set(db_cols) == {c.name for c in table.columns}, table.name
        for col in table.columns:
            assert bool(db_cols[col.name]["nullable"]) == bool(col.nullable), f"{table.name}.{col.name}"
        db_indexes = {i["name"] for i in insp.get_indexes(table.name)}
        assert {str(i.name) for i in table.indexes} <= db_indexes, table.name
    fks = insp.get_foreign_keys("face_templates")
    assert fks[0]["options"].get("ondelete") == "CASCADE"
    assert insp.get_foreign_keys("meal_events") == []  # events outlive a removed senior
    # a confirmation names its candidate without a foreign key, and points at the meal event it produced
    assert [fk["referred_table"] for fk in insp.get_foreign_keys("confirmations")] == ["meal_events"]
    engine.dispose()


def test_migrations_run_in_order_in_one_transaction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "s.sqlite"
    with Store(path) as s:
        s.add_senior(senior())

    def v2(conn) -> None:
        conn.exec_driver_sql("CREATE TABLE extra (x INTEGER)")
        conn.exec_driver_sql("INSERT INTO extra VALUES (2)")

    def v3_broken(conn) -> None:
        conn.exec_driver_sql("ALTER TABLE seniors ADD COLUMN nickname VARCHAR")
        raise RuntimeError("simulated failure half-way through")

    n = len(migrations.MIGRATIONS)
    steps = [
        *migrations.MIGRATIONS,
        migrations.Migration("extra", v2),
        migrations.Migration("broken", v3_broken),
    ]
    monkeypatch.setattr(migrations, "MIGRATIONS", steps)
    with pytest.raises(StoreError, match=f"version {n + 2} failed.*still at version {n}"):
        Store(path)
    con = sqlite3.connect(path)
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    cols = {r[1] for r in con.execute("PRAGMA table_info(seniors)")}
    assert "extra" not in tables and "nickname" not in cols  # "extra" was rolled back with "broken"
    assert [r[0] for r in con.execute("SELECT version FROM schema_version")] == list(range(1, n + 1))
    con.close()

    monkeypatch.setattr(migrations, "MIGRATIONS", steps[: n + 1])
    with Store(path) as s:
        assert s.schema_version == n + 1
        assert [v for v, _ in s.versions()] == list(range(1, n + 2))
        assert s.get_senior("S0001") == senior()


def test_a_newer_database_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    with Store(path) as s:
        s.add_senior(senior())
    con = sqlite3.connect(path)
    con.execute("INSERT INTO schema_version VALUES (7, 'from the future', '2030-01-01T00:00:00+00:00')")
    con.commit()
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(
        StoreError,
        match=rf"schema version 7, newer than this meal-edge understands \(up to {len(migrations.MIGRATIONS)}\)",
    ):
        Store(path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def test_foreign_files_are_refused(tmp_path: Path) -> None:
    other = tmp_path / "other.sqlite"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE customers (id INTEGER)")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="not a meal-edge store"):
        Store(other)
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="junk.sqlite"):
        Store(junk)


# -- seniors and templates ---------------------------------------------------------------------------


def test_seniors(store: Store) -> None:
    store.add_senior(senior("S0002", name="Li Wei"))
    store.add_senior(senior("S0001"))
    with pytest.raises(StoreError, match="S0001.*already enrolled"):
        store.add_senior(senior("S0001", name="someone else"))
    assert store.get_senior("S0001") == senior("S0001")
    assert store.get_senior("nobody") is None
    store.upsert_senior(senior("S0002", name="Li Wei-min"))
    store.upsert_senior(senior("S0003"))
    store.set_status("S0001", "suspended")
    with pytest.raises(StoreError, match="'S0404'"):
        store.set_status("S0404", "active")
    with pytest.raises(StoreError, match="unknown status"):
        store.set_status("S0001", "retired")
    store.add_templates(
        "S0002", [TemplateIn(emb(1), "m1", 0.9, "a.jpg"), TemplateIn(emb(2), "m1", 0.8, "b.jpg")]
    )
    listed = store.list_seniors()
    assert [(s.senior_id, n) for s, n in listed] == [("S0001", 0), ("S0002", 2), ("S0003", 0)]
    assert listed[0][0].status == "suspended" and listed[1][0].name == "Li Wei-min"


def test_templates_round_trip_exactly(store: Store) -> None:
    store.add_senior(senior("S0001"))
    store.add_senior(senior("S0002", status="suspended"))
    a, b, c = emb(1), emb(2), emb(3)
    assert store.add_templates("S0002", [TemplateIn(b, "m1", 0.5, "b.jpg")]) == 1
    assert (
        store.add_templates("S0001", [TemplateIn(a, "m1", 0.9, "a.jpg"), TemplateIn(c, "m2", 0.7, "c.jpg")])
        == 2
    )
    got = store.templates("m1")
    assert [sid for sid, _ in got] == ["S0001", "S0002"]  # suspended seniors are matched too
    assert got[0][1].dtype == np.float32 and np.array_equal(got[0][1], a) and np.array_equal(got[1][1], b)
    assert len(store.templates()) == 3
    assert store.template_count("S0001") == 2 and store.template_count("nobody") == 0
    with pytest.raises(StoreError, match="not a 128-d"):
        store.add_templates("S0001", [TemplateIn(np.zeros(127, np.float32), "m1", 1.0, "x.jpg")])
    with pytest.raises(StoreError, match="non-finite"):
        store.add_templates("S0001", [TemplateIn(np.full(128, np.nan, np.float32), "m1", 1.0, "x.jpg")])
    with pytest.raises(StoreError, match="no senior with id 'S0404'"):
        store.add_templates("S0404", [TemplateIn(a, "m1", 1.0, "x.jpg")])
    assert store.template_count("S0001") == 2  # the refused batches left nothing


def test_photos_are_kept_only_when_asked(tmp_path: Path) -> None:
    for keep in (False, True):
        with Store(tmp_path / f"keep-{keep}.sqlite", keep_photos=keep) as s:
            s.add_senior(senior())
            s.add_templates("S0001", [TemplateIn(emb(1), "m1", 0.9, "a.jpg", photo=b"\xff\xd8jpeg bytes")])
            assert s.template_info("S0001")[0][4] is keep
            assert s.remove_senior("S0001").photos_erased == int(keep)


def test_signature_changes_with_enrolment(store: Store) -> None:
    sigs = [store.signature()]
    store.add_senior(senior("S0001"))
    sigs.append(store.signature())
    store.add_templates("S0001", [TemplateIn(emb(1), "m1", 0.9, "a.jpg")])
    sigs.append(store.signature())
    store.set_status("S0001", "suspended")
    sigs.append(store.signature())
    store.record_meal(meal(), TOPIC)  # meals are not enrolment
    assert store.signature() == sigs[-1]
    store.remove_senior("S0001")
    sigs.append(store.signature())
    assert all(a != b for a, b in zip(sigs, sigs[1:], strict=False))


# -- meals, seq, outbox ------------------------------------------------------------------------------


def test_record_meal_allocates_consecutive_seq_per_kiosk(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    with Store(path) as s:
        seqs = [s.record_meal(meal(kiosk="kiosk-1"), TOPIC).seq for _ in range(3)]
        other = s.record_meal(meal(kiosk="kiosk-2"), TOPIC).seq
        assert seqs == [1, 2, 3] and other == 1
    with Store(path) as s:  # after a restart the sequence continues
        assert s.record_meal(meal(kiosk="kiosk-1"), TOPIC).seq == 4
        assert s.last_seq("kiosk-1") == 4 and s.last_seq("kiosk-9") == 0


def test_concurrent_writers_get_unique_gapless_seq(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    a, b = Store(path), Store(path)  # two Store objects on one file: like the daemon and meal-enroll
    got: list[int] = []
    lock = threading.Lock()

    def work(s: Store) -> None:
        for _ in range(15):
            seq = s.record_meal(meal(), TOPIC).seq
            with lock:
                got.append(seq)

    threads = [threading.Thread(target=work, args=(s,)) for s in (a, a, b, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    a.close()
    b.close()
    assert sorted(got) == list(range(1, 61))
    assert counts(path)["orphans"] == 0


def test_meal_and_outbox_rows_are_one_transaction(store: Store) -> None:
    ev = meal("S0001")
    stored = store.record_meal(ev, TOPIC)
    assert (stored.event_id, stored.seq, stored.topic) == (ev.event_id, 1, TOPIC)
    assert store.meals_on("S0001", date(2026, 11, 30)) == [PriorMeal("lunch", 300)]
    assert store.meals_on("S0001", date(2026, 12, 1)) == []
    # a duplicate event_id is refused and consumes no seq
    with pytest.raises(StoreError, match=f"{ev.event_id}.*already recorded"):
        store.record_meal(ev, TOPIC)
    # an invalid event (payable != price - subsidy) fails after the seq was taken: all rolled back
    with pytest.raises(ValueError, match="payable_fen"):
        store.record_meal(meal(payable_fen=1), TOPIC)
    with pytest.raises(ValueError, match="naive"):
        store.record_meal(meal(decided_at=datetime(2026, 11, 30, 11, 45)), TOPIC)
    c = counts(store.path)
    assert (c["meal_events"], c["outbox"], c["last_seq"], c["orphans"]) == (1, 1, 1, 0)
    assert store.record_meal(meal(), TOPIC).seq == 2


def test_full_disk_raises_store_error_and_leaves_no_half_event(store: Store) -> None:
    store.add_senior(senior())
    for _ in range(3):
        store.record_meal(meal(), TOPIC)
    pages = store.pragma("page_count")
    limit = {"pages": pages}
    store.close()

    # Simulate a full disk: SQLite refuses to grow the file beyond max_page_count ("database or disk
    # is full", the same SQLITE_FULL a real full disk gives), on every connection a store opens from now on.
    def cap(dbapi_conn, _rec) -> None:
        dbapi_conn.execute(f"PRAGMA max_page_count = {limit['pages']}")

    event.listen(Engine, "connect", cap)
    try:
        full = Store(store.path)
        big = {"note": "x" * 3000}  # a few events fill the last free page space quickly
        recorded = 3
        with pytest.raises(StoreError, match="could not record meal event .*full") as exc:
            for _ in range(200):
                full.record_meal(meal(match=big), TOPIC)
                recorded += 1
        assert "nothing was half-written" in str(exc.value)
        c = counts(full.path)
        assert c["meal_events"] == c["outbox"] == c["last_seq"] == c["max_seq"] == recorded
        assert c["orphans"] == 0
        # the store still reads fine, and once there is space again the sequence continues without a gap
        assert len(full.pending()) == recorded
        full.close()
        limit["pages"] = 1_000_000
        with Store(store.path) as again:
            assert again.record_meal(meal(), TOPIC).seq == recorded + 1
    finally:
        event.remove(Engine, "connect", cap)


def test_outbox_pending_attempts_delivery(store: Store) -> None:
    ids = [store.record_meal(meal(), TOPIC).event_id for _ in range(5)]
    assert [e.seq for e in store.pending()] == [1, 2, 3, 4, 5]
    assert [e.seq for e in store.pending(limit=2)] == [1, 2]
    store.note_attempt(ids[0], "connection refused")
    store.note_attempt(ids[0], None)
    when = datetime(2026, 11, 30, 3, 46, tzinfo=UTC)
    store.mark_delivered(ids[0], when)
    store.mark_delivered(ids[0], when + timedelta(hours=1))  # a late duplicate ack keeps the first time
    store.mark_delivered(ids[2], when)
    assert [e.seq for e in store.pending()] == [2, 4, 5]
    assert store.pending_count() == 3
    rows = store.list_events()
    assert [r.seq for r in rows] == [1, 2, 3, 4, 5]
    assert rows[0].attempts == 2 and rows[0].delivered_at == when and rows[0].state == "delivered"
    assert rows[0].last_error is None and rows[1].state == "pending"
    assert rows[0].decided_at == datetime(2026, 11, 30, 11, 45, tzinfo=SH)
    assert rows[0].decided_at.utcoffset() == timedelta(hours=8)  # the published offset is kept
    assert [r.seq for r in store.list_events(pending_only=True)] == [2, 4, 5]
    assert [r.seq for r in store.list_events(limit=2)] == [4, 5]
    with pytest.raises(StoreError, match="no outbox entry"):
        store.mark_delivered(new_event_id(), when)
    with pytest.raises(ValueError, match="naive"):
        store.mark_delivered(ids[1], datetime(2026, 1, 1))


# -- erasure -------------------------------------------------------------------------------------------


def _file_bytes(path: Path) -> bytes:
    out = b""
    for suffix in ("", "-wal", "-journal"):
        p = path.with_name(path.name + suffix)
        if p.exists():
            out += p.read_bytes()
    return out


def test_removal_erases_templates_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    # distinctive bytes we can look for in the raw file
    secret = np.frombuffer(b"TPL-SECRET-ZHANG".ljust(16, b"!") * 32, dtype="<f4").copy()
    keep = np.frombuffer(b"TPL-KEEP-LI-WEI!" * 32, dtype="<f4").copy()
    photo = b"PHOTO-SECRET-ZHANG-" * 400  # ~7.6 kB: spills into overflow pages
    with Store(path, keep_photos=True) as s:
        s.add_senior(senior("S0001", name="Zhang SecretName"))
        s.add_senior(senior("S0002", name="Li Wei"))
        s.add_templates(
            "S0001",
            [
                TemplateIn(secret, "m1", 0.9, "zhang1.jpg", photo),
                TemplateIn(secret * 1.0, "m1", 0.8, "zhang2.jpg", photo),
            ],
        )
        s.add_templates("S0002", [TemplateIn(keep, "m1", 0.9, "li.jpg")])
        s.record_meal(meal("S0001"), TOPIC)
        raw = _file_bytes(path)
        # templates and photos are sealed (AES-GCM): their plaintext is never in the file...
        assert b"TPL-SECRET-ZHANG" not in raw and b"PHOTO-SECRET-ZHANG" not in raw and b"TPL-KEEP-LI-WEI" not in raw
        # ...but their ciphertext is, and so is the name (the test can fail: the bytes are there before removal)
        with sqlite3.connect(path) as con:
            q = "SELECT embedding, photo FROM face_templates WHERE senior_id='S0001'"
            sealed = [bytes(blob) for row in con.execute(q) for blob in row]
        con.close()
        # (the first 200 bytes: a sealed photo spills over several pages)
        assert len(sealed) == 4 and all(len(c) > 500 and c[:200] in raw for c in sealed)
        assert b"Zhang SecretName" in raw
        assert [sid for sid, e in s.templates()] == ["S0001", "S0001", "S0002"]
        assert np.array_equal(s.templates()[0][1], secret)  # and they decrypt to what was stored

        report = s.remove_senior("S0001")
        assert (report.senior_id, report.name, report.templates_erased, report.photos_erased) == (
            "S0001",
            "Zhang SecretName",
            2,
            2,
        )
        assert report.wal_truncated
        raw = _file_bytes(path)
        assert b"TPL-SECRET-ZHANG" not in raw
        assert b"PHOTO-SECRET-ZHANG" not in raw
        assert b"Zhang SecretName" not in raw
        # nothing of the sealed records either: not even the ciphertext can be found (and decrypted with the key)
        for c in sealed:
            assert c[:200] not in raw and c[1:13] not in raw  # not the record, nor its nonce
        assert np.array_equal(s.templates()[0][1], keep)  # the other senior is untouched
        assert s.get_senior("S0001") is None and s.template_count("S0001") == 0
        assert [sid for sid, _ in s.templates()] == ["S0002"]
        # the meal event stays for audit and settlement
        assert [e.senior_id for e in s.list_events()] == ["S0001"]
        with pytest.raises(StoreError, match="'S0001'"):
            s.remove_senior("S0001")
    with sqlite3.connect(path) as con:
        assert con.execute("SELECT count(*) FROM face_templates WHERE senior_id='S0001'").fetchone()[0] == 0


def test_foreign_key_cascade_also_removes_templates(store: Store) -> None:
    store.add_senior(senior())
    store.add_templates("S0001", [TemplateIn(emb(1), "m1", 0.9, "a.jpg")])
    # as any SQLite client that enforces foreign keys would delete it
    with sqlite3.connect(store.path) as con:
        con.execute("PRAGMA foreign_keys = ON")
        con.execute("DELETE FROM seniors WHERE senior_id = 'S0001'")
    assert store.template_count("S0001") == 0


# -- meal-edge events ------------------------------------------------------------------------------------


def test_events_command_table_and_json(store: Store) -> None:
    import io
    import json

    from edge.delivery.outbox import events_command

    ids = [store.record_meal(meal(f"S000{i}"), TOPIC).event_id for i in range(3)]
    store.mark_delivered(ids[0], datetime(2026, 11, 30, 3, 46, tzinfo=UTC))
    store.note_attempt(ids[1], "connection refused")
    out = io.StringIO()
    assert events_command(store, pending_only=False, as_json=False, out=out) == 0
    text = out.getvalue()
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["seq", "event_id", "decided_at"]
    assert ids[0] in lines[1] and "delivered 2026-11-30T03:46:00+00:00" in lines[1]
    assert "10.00" in lines[1] and "3.00" in lines[1] and "7.00" in lines[1]
    assert "3 events, 2 pending delivery" in text and "connection refused" in text

    out = io.StringIO()
    events_command(store, pending_only=True, as_json=True, out=out)
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["event_id"] for r in rows] == ids[1:]
    assert rows[0]["state"] == "pending" and rows[0]["attempts"] == 1 and rows[0]["seq"] == 2
    assert rows[0]["subsidy_fen"] == 300 and rows[0]["decided_at"] == "2026-11-30T11:45:00+08:00"


def test_one_meal_per_senior_window_and_day(store: Store) -> None:
    """Whoever records it (the kiosk, a staff confirmation, another process), a senior's lunch on a day is
    recorded once: the second attempt is refused inside the write transaction and uses no seq."""
    first = store.record_meal(meal("S0001"), TOPIC)
    with pytest.raises(AlreadyServed, match=f"S0001 already has lunch on 2026-11-30 \\(event {first.event_id}\\)"):
        store.record_meal(meal("S0001"), TOPIC)
    # dinner the same day, or lunch the next day, are other meals
    assert store.record_meal(meal("S0001", meal="dinner", subsidy_fen=0, payable_fen=1000), TOPIC).seq == 2
    nxt = meal("S0001", local_date=date(2026, 12, 1), decided_at=datetime(2026, 12, 1, 11, 45, tzinfo=SH))
    assert store.record_meal(nxt, TOPIC).seq == 3
    # and the database itself refuses it, whatever code writes
    with sqlite3.connect(store.path) as raw:
        raw.execute("CREATE TEMP TABLE copy AS SELECT * FROM meal_events WHERE seq = 1")
        raw.execute("UPDATE copy SET event_id = 'another', seq = 99")
        with pytest.raises(sqlite3.IntegrityError, match="UNIQUE.*senior_id"):
            raw.execute("INSERT INTO meal_events SELECT * FROM copy")
