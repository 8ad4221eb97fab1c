"""Bring a database to the newest schema with the Alembic migrations shipped in the package.

Run by every command that opens the database, so an upgraded server migrates on its first start. On
PostgreSQL an advisory lock makes concurrent starts (several serve processes) take turns.
"""

from __future__ import annotations

import logging

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text

from district.paths import package_dir

log = logging.getLogger(__name__)

#: pg_advisory_lock key: "meal-district migrations"
_LOCK = 0x6D64_6D69_6772


def alembic_config(connection: Connection | None = None) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(package_dir("db", "migrations")))
    cfg.attributes["connection"] = connection
    return cfg


def head() -> str:
    return str(ScriptDirectory.from_config(alembic_config()).get_current_head())


def current(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine) -> None:
    with engine.connect() as conn:
        pg = conn.dialect.name == "postgresql"
        if pg:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _LOCK})
            conn.commit()
        try:
            before = current(conn)
            conn.commit()
            if before != head():
                command.upgrade(alembic_config(conn), "head")
                conn.commit()
                log.info("database migrated from %s to %s", before or "empty", head())
        finally:
            if pg:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _LOCK})
                conn.commit()
