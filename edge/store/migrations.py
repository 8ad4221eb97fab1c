"""Numbered schema migrations, applied in order in one transaction when the store is opened.

MIGRATIONS[i] brings the schema from version i to version i + 1. The DDL is frozen here on purpose:
a migration must keep producing the schema of *its* version when the models move on, so it is never
generated from the current models. To change the schema: edit models.py, append a migration, and the
test that compares the migrated schema with the models keeps both in step.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Connection

from edge.security.atrest import TemplateCipher


@dataclass(frozen=True)
class Migration:
    description: str
    apply: Callable[[Connection], None]
    #: a step that seals data with the template key (schema 3) is called as seal(conn, cipher) instead
    seal: Callable[[Connection, TemplateCipher], None] | None = None


def _run(conn: Connection, statements: list[str]) -> None:
    for stmt in statements:
        conn.exec_driver_sql(stmt)


def _ddl(statements: list[str]) -> Callable[[Connection], None]:
    """A step that is only these statements, in order."""
    return lambda conn: _run(conn, statements)


_V1 = [
    """CREATE TABLE schema_version (
        version INTEGER NOT NULL,
        description VARCHAR NOT NULL,
        applied_at VARCHAR(40) NOT NULL,
        PRIMARY KEY (version)
    )""",
    """CREATE TABLE seniors (
        senior_id VARCHAR NOT NULL,
        name VARCHAR NOT NULL,
        birth_date DATE NOT NULL,
        hukou VARCHAR NOT NULL,
        status VARCHAR NOT NULL,
        created_at VARCHAR(40) NOT NULL,
        updated_at VARCHAR(40) NOT NULL,
        PRIMARY KEY (senior_id),
        CONSTRAINT ck_status CHECK (status IN ('active', 'suspended', 'deceased'))
    )""",
    """CREATE TABLE face_templates (
        id INTEGER NOT NULL,
        senior_id VARCHAR NOT NULL,
        embedding BLOB NOT NULL,
        model_id VARCHAR NOT NULL,
        quality FLOAT NOT NULL,
        source VARCHAR NOT NULL,
        photo BLOB,
        created_at VARCHAR(40) NOT NULL,
        PRIMARY KEY (id),
        CONSTRAINT ck_embedding_size CHECK (length(embedding) = 512),
        FOREIGN KEY(senior_id) REFERENCES seniors (senior_id) ON DELETE CASCADE
    )""",
    "CREATE INDEX ix_face_templates_model ON face_templates (model_id)",
    "CREATE INDEX ix_face_templates_senior ON face_templates (senior_id)",
    """CREATE TABLE meal_events (
        event_id VARCHAR(36) NOT NULL,
        seq INTEGER NOT NULL,
        kiosk_id VARCHAR NOT NULL,
        centre_id VARCHAR NOT NULL,
        district VARCHAR NOT NULL,
        kind VARCHAR NOT NULL,
        senior_id VARCHAR NOT NULL,
        meal VARCHAR NOT NULL,
        local_date DATE NOT NULL,
        decided_at VARCHAR(40) NOT NULL,
        price_fen INTEGER NOT NULL,
        subsidy_fen INTEGER NOT NULL,
        payable_fen INTEGER NOT NULL,
        reasons JSON NOT NULL,
        confirmed_by VARCHAR,
        "match" JSON NOT NULL,
        source_ts FLOAT,
        payload TEXT NOT NULL,
        recorded_at VARCHAR(40) NOT NULL,
        PRIMARY KEY (event_id),
        CONSTRAINT uq_meal_events_kiosk_seq UNIQUE (kiosk_id, seq)
    )""",
    "CREATE INDEX ix_meal_events_senior_date ON meal_events (senior_id, local_date)",
    """CREATE TABLE outbox (
        event_id VARCHAR(36) NOT NULL,
        seq INTEGER NOT NULL,
        topic VARCHAR NOT NULL,
        payload TEXT NOT NULL,
        created_at VARCHAR(40) NOT NULL,
        attempts INTEGER NOT NULL,
        last_attempt_at VARCHAR(40),
        delivered_at VARCHAR(40),
        last_error VARCHAR,
        PRIMARY KEY (event_id),
        FOREIGN KEY(event_id) REFERENCES meal_events (event_id)
    )""",
    "CREATE INDEX ix_outbox_pending ON outbox (delivered_at, seq)",
    """CREATE TABLE kiosk_seq (
        kiosk_id VARCHAR NOT NULL,
        last_seq INTEGER NOT NULL,
        PRIMARY KEY (kiosk_id)
    )""",
]


_V2 = [
    """CREATE TABLE confirmations (
        id INTEGER NOT NULL,
        kiosk_id VARCHAR NOT NULL,
        senior_id VARCHAR NOT NULL,
        decided_at VARCHAR(40) NOT NULL,
        local_date DATE NOT NULL,
        distance FLOAT NOT NULL,
        margin FLOAT NOT NULL,
        frames INTEGER NOT NULL,
        reasons JSON NOT NULL,
        state VARCHAR NOT NULL,
        resolved_at VARCHAR(40),
        resolved_by VARCHAR,
        event_id VARCHAR(36),
        PRIMARY KEY (id),
        CONSTRAINT ck_confirmation_state CHECK (state IN ('pending', 'confirmed', 'rejected')),
        FOREIGN KEY(event_id) REFERENCES meal_events (event_id)
    )""",
    "CREATE INDEX ix_confirmations_state_kiosk ON confirmations (state, kiosk_id)",
    # one meal per senior per meal window per local day, whoever records it (kiosk or staff)
    "CREATE UNIQUE INDEX uq_meal_events_senior_meal ON meal_events (senior_id, local_date, meal)",
]


_V3 = [
    """CREATE TABLE staff (
        staff_id VARCHAR NOT NULL,
        name VARCHAR NOT NULL,
        role VARCHAR NOT NULL,
        secret_hash VARCHAR NOT NULL,
        failures INTEGER NOT NULL,
        locked_until VARCHAR(40),
        created_at VARCHAR(40) NOT NULL,
        PRIMARY KEY (staff_id),
        CONSTRAINT ck_staff_role CHECK (role IN ('staff', 'manager'))
    )""",
    """CREATE TABLE audit_log (
        id INTEGER NOT NULL,
        at VARCHAR(40) NOT NULL,
        staff_id VARCHAR NOT NULL,
        action VARCHAR NOT NULL,
        target VARCHAR NOT NULL,
        details JSON NOT NULL,
        PRIMARY KEY (id)
    )""",
    "CREATE INDEX ix_audit_log_staff ON audit_log (staff_id)",
    # append-only, whoever opens the file with SQL: SQLite itself refuses to change or delete a line
    """CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only: its lines cannot be changed'); END""",
    """CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only: its lines cannot be deleted'); END""",
    # templates sealed with AES-GCM (edge.security.atrest): 1 + 12 + 512 + 16 bytes, so no plaintext fits
    """CREATE TABLE face_templates_sealed (
        id INTEGER NOT NULL,
        senior_id VARCHAR NOT NULL,
        embedding BLOB NOT NULL,
        model_id VARCHAR NOT NULL,
        quality FLOAT NOT NULL,
        source VARCHAR NOT NULL,
        photo BLOB,
        created_at VARCHAR(40) NOT NULL,
        PRIMARY KEY (id),
        CONSTRAINT ck_embedding_size CHECK (length(embedding) = 541),
        FOREIGN KEY(senior_id) REFERENCES seniors (senior_id) ON DELETE CASCADE
    )""",
]


def _v3_ddl(conn: Connection) -> None:
    raise RuntimeError("schema version 3 seals the templates: it needs the template key (Migration.seal)")


def _v3(conn: Connection, cipher: TemplateCipher) -> None:
    _run(conn, _V3)
    rows = conn.exec_driver_sql(
        "SELECT id, senior_id, embedding, model_id, quality, source, photo, created_at FROM face_templates"
    ).all()
    for tid, sid, emb, model_id, quality, source, photo, created in rows:
        conn.exec_driver_sql(
            "INSERT INTO face_templates_sealed VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                tid,
                sid,
                cipher.seal(bytes(emb), sid, tid),
                model_id,
                quality,
                source,
                None if photo is None else cipher.seal(bytes(photo), sid, tid, kind="photo"),
                created,
            ),
        )
    # secure_delete is on: the plaintext pages are overwritten as the old table is dropped (the store then
    # truncates the WAL, which held their old images)
    conn.exec_driver_sql("DROP TABLE face_templates")
    conn.exec_driver_sql("ALTER TABLE face_templates_sealed RENAME TO face_templates")
    conn.exec_driver_sql("CREATE INDEX ix_face_templates_model ON face_templates (model_id)")
    conn.exec_driver_sql("CREATE INDEX ix_face_templates_senior ON face_templates (senior_id)")


_V4 = [
    # the number on the senior's meal card (餐卡), from the roster's optional card_no column; one senior a card
    "ALTER TABLE seniors ADD COLUMN card_no VARCHAR",
    "CREATE UNIQUE INDEX uq_seniors_card_no ON seniors (card_no)",
]


_V5 = [
    # voids (kind "void"): the meal a void reverses, and on the meal the void that reversed it
    "ALTER TABLE meal_events ADD COLUMN voids VARCHAR(36)",
    "ALTER TABLE meal_events ADD COLUMN voided_by VARCHAR(36)",
    # a voided meal no longer counts as the senior's meal (they may be served again); a void is not a meal
    "DROP INDEX uq_meal_events_senior_meal",
    "CREATE UNIQUE INDEX uq_meal_events_senior_meal ON meal_events (senior_id, local_date, meal) "
    "WHERE kind = 'meal' AND voided_by IS NULL",
    # a meal is voided once, whoever tries (the screen and the command line at once)
    "CREATE UNIQUE INDEX uq_meal_events_voids ON meal_events (voids) WHERE voids IS NOT NULL",
]


_V6 = [
    # the same template keeps one id at every kiosk and at the district (issue 13); existing rows get one below
    "ALTER TABLE face_templates ADD COLUMN template_uid VARCHAR(36)",
    # the centre the district roster names as the senior's own (None: enrolled here before the district roster)
    "ALTER TABLE seniors ADD COLUMN home_centre VARCHAR",
    """CREATE TABLE roster_state (
        id INTEGER NOT NULL,
        version INTEGER NOT NULL,
        model_id VARCHAR,
        last_sync_at VARCHAR(40),
        last_batch_at VARCHAR(40),
        snapshot_to INTEGER,
        snapshot_next INTEGER,
        snapshot_seen JSON,
        resync_requested INTEGER NOT NULL,
        erased_pending JSON NOT NULL,
        uploads_enabled INTEGER NOT NULL,
        PRIMARY KEY (id),
        CONSTRAINT ck_roster_state_one CHECK (id = 1)
    )""",
    """CREATE TABLE roster_uploads (
        upload_id VARCHAR(36) NOT NULL,
        senior_id VARCHAR NOT NULL,
        payload TEXT NOT NULL,
        state VARCHAR NOT NULL,
        reason_code VARCHAR,
        reason VARCHAR,
        version INTEGER,
        created_at VARCHAR(40) NOT NULL,
        sent_at VARCHAR(40),
        answered_at VARCHAR(40),
        PRIMARY KEY (upload_id),
        CONSTRAINT ck_roster_upload_state CHECK (state IN ('pending', 'accepted', 'refused'))
    )""",
    "CREATE INDEX ix_roster_uploads_state ON roster_uploads (state)",
]


def _v6(conn: Connection) -> None:
    _run(conn, _V6)
    for (tid,) in conn.exec_driver_sql("SELECT id FROM face_templates").all():
        conn.exec_driver_sql("UPDATE face_templates SET template_uid = ? WHERE id = ?", (str(uuid.uuid4()), tid))
    conn.exec_driver_sql("CREATE UNIQUE INDEX uq_face_templates_uid ON face_templates (template_uid)")
    conn.exec_driver_sql(
        "INSERT INTO roster_state (id, version, resync_requested, erased_pending, uploads_enabled) "
        "VALUES (1, 0, 0, '{}', 0)"
    )


MIGRATIONS: list[Migration] = [
    Migration("initial schema: seniors, face templates, meal events, outbox, per-kiosk sequence", _ddl(_V1)),
    Migration("staff confirmations of uncertain matches; one meal per senior, window and day", _ddl(_V2)),
    Migration(
        "face templates sealed with AES-GCM under a key outside the store; staff accounts; append-only audit log",
        _v3_ddl,
        seal=_v3,
    ),
    Migration("meal-card numbers of seniors (roster column card_no)", _ddl(_V4)),
    Migration("voids: a meal reversed by a later void event no longer counts as served", _ddl(_V5)),
    Migration("district roster sync: template ids, home centre, roster version and template uploads", _v6),
]
