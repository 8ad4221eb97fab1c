"""The store's connection: one SQLite file, WAL, synchronous=FULL, secure_delete, foreign keys; one write
transaction at a time (`BEGIN IMMEDIATE`), short read sessions; the schema migrated on open."""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from sqlalchemy import create_engine, event, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from edge.security.atrest import AtRestError, TemplateCipher
from edge.store import migrations
from edge.store.files import DamagedStore, cipher_for, make_private, quick_check
from edge.store.models import SchemaVersion
from edge.store.records import StoreError, describe_error, utcnow
from edge.store.signer import EventSigner, key_path_for

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

log = logging.getLogger(__name__)


class StoreBase:
    """Opening, migrating and closing the file, and the transactions the rest of the store runs in."""

    def __init__(
        self,
        path: Path | str,
        keep_photos: bool = False,
        signing_key: Ed25519PrivateKey | None = None,
        *,
        key_file: Path | str | None = None,
    ) -> None:
        """Open (create or migrate) the store. `keep_photos=False` drops any photo bytes handed to
        add_templates, so a caller that forgets the config can never keep a face photo by accident.
        `signing_key`: the key meal events are signed with; None: the kiosk's key beside the store
        (edge/store/signer.py).

        Face templates (and kept photos) are sealed with AES-GCM under the key in `key_file` (default:
        "template.key" beside the store; a systemd credential wins, edge.security.atrest), made on first use.
        The folder is made 0700 and the files 0600, and `PRAGMA quick_check` runs before anything is
        written: a damaged file is refused (StoreError) and left as it is."""
        self.path = Path(path).expanduser()
        self.keep_photos = keep_photos
        self.key_file = Path(key_file) if key_file is not None else self.path.parent / "template.key"
        self.signer = EventSigner(key_path_for(self.path), signing_key)
        self._lock = threading.Lock()
        self._cipher: TemplateCipher | None = None
        try:
            make_private(self.path)
        except OSError as e:
            raise StoreError(f"{self.path}: cannot create the store's folder or file: {e}") from e
        try:
            quick_check(self.path)
        except DamagedStore as e:
            raise StoreError(str(e)) from None
        self._engine = create_engine(f"sqlite:///{self.path}", connect_args={"timeout": 30})
        event.listen(self._engine, "connect", self._on_connect)
        event.listen(self._engine, "begin", self._on_begin)
        self._write_engine = self._engine.execution_options(sqlite_begin="IMMEDIATE")
        try:
            self.schema_version = self._migrate()
            if self._cipher is None:
                self._cipher = self._load_cipher()
        except AtRestError as e:
            self._engine.dispose()
            raise StoreError(f"{self.path}: {e}") from e
        except StoreError:
            self._engine.dispose()
            raise
        except SQLAlchemyError as e:
            self._engine.dispose()
            raise StoreError(f"{self.path}: cannot open the store: {describe_error(e)}") from e

    # -- connection set-up ---------------------------------------------------------------------

    @staticmethod
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Autocommit at the driver level: we issue BEGIN ourselves (see _on_begin), so pragmas and
        # DDL are not wrapped in pysqlite's implicit transactions.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        try:
            mode = cur.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"journal_mode is {mode!r}, WAL could not be enabled")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            # erased seniors' templates are overwritten with zeros on disk, not just unlinked
            cur.execute("PRAGMA secure_delete=ON")
        finally:
            cur.close()

    @staticmethod
    def _on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")

    @contextmanager
    def _write(self, what: str) -> Iterator[Session]:
        """One write transaction; any SQLite error rolls everything back and becomes a StoreError."""
        with self._lock:
            try:
                with Session(self._write_engine, expire_on_commit=False) as s, s.begin():
                    yield s
            except IntegrityError as e:
                raise StoreError(f"{what}: {describe_error(e)}") from e
            except SQLAlchemyError as e:
                raise StoreError(f"{what}: {self.path}: {describe_error(e)}") from e

    @contextmanager
    def _read(self, what: str) -> Iterator[Session]:
        try:
            with Session(self._engine, expire_on_commit=False) as s, s.begin():
                yield s
        except SQLAlchemyError as e:
            raise StoreError(f"{what}: {self.path}: {describe_error(e)}") from e

    def _migrate(self) -> int:
        steps = migrations.MIGRATIONS
        latest = len(steps)
        with self._lock, self._write_engine.begin() as conn:
            tables = {
                r[0]
                for r in conn.exec_driver_sql(
                    "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"
                )
            }
            if "schema_version" in tables:
                top = conn.exec_driver_sql("SELECT coalesce(max(version), 0) FROM schema_version").scalar()
                current = int(top or 0)
            elif tables:
                raise StoreError(
                    f"{self.path}: not a meal-edge store (it has tables {sorted(tables)} "
                    "but no schema_version); refusing to touch it"
                )
            else:
                current = 0
            if current > latest:
                raise StoreError(
                    f"{self.path}: the store has schema version {current}, newer than this meal-edge "
                    f"understands (up to {latest}); upgrade meal-edge or use a matching backup. "
                    "The file was not changed."
                )
            for version in range(current + 1, latest + 1):
                step = steps[version - 1]
                log.info(
                    "store %s: migrating to schema version %d (%s)",
                    self.path, version, step.description
                )
                try:
                    if step.seal is not None:
                        self._cipher = self._cipher or self._load_cipher(conn)
                        step.seal(conn, self._cipher)
                    else:
                        step.apply(conn)
                except (SQLAlchemyError, AtRestError):
                    raise
                except Exception as e:
                    raise StoreError(
                        f"{self.path}: migration to schema version {version} failed ({e}); "
                        f"nothing was changed, the store is still at version {current}"
                    ) from e
                conn.exec_driver_sql(
                    "INSERT INTO schema_version (version, description, applied_at) VALUES (?, ?, ?)",
                    (version, step.description, utcnow().isoformat()),
                )
        if current < latest:
            # old page images (plaintext templates before version 3) must not stay in the WAL
            self._checkpoint_truncate()
        return latest

    def _checkpoint_truncate(self) -> bool:
        # secure_delete zeroes the pages in the database, but in WAL mode the earlier page images (with
        # the templates) also sit in the -wal file until it is reset: checkpoint and truncate it.
        with self._lock:
            raw = self._engine.raw_connection()
            try:
                cur = raw.cursor()
                busy, _, _ = cur.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                cur.close()
                return bool(busy == 0)
            except sqlite3.Error as e:
                log.warning("store %s: checkpoint failed: %s", self.path, e)
                return False
            finally:
                raw.close()

    def _load_cipher(self, conn: Any = None) -> TemplateCipher:
        """The template key; made only while the store holds no sealed template (see files.cipher_for)."""
        if conn is not None:
            sealed = False  # migrating to version 3: nothing sealed yet
        else:
            with self._engine.connect() as c:
                sealed = bool(c.exec_driver_sql("SELECT count(*) FROM face_templates").scalar())
        return cipher_for(self.key_file, sealed)

    @property
    def cipher(self) -> TemplateCipher:
        assert self._cipher is not None  # set by __init__
        return self._cipher

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def versions(self) -> list[tuple[int, str]]:
        with self._read("could not read the schema version") as s:
            rows = s.scalars(select(SchemaVersion).order_by(SchemaVersion.version))
            return [(v.version, v.description) for v in rows]

    def pragma(self, name: str) -> Any:
        """Read a pragma on a fresh pooled connection (for `check` commands and tests)."""
        raw = self._engine.raw_connection()
        try:
            cur = raw.cursor()
            row = cur.execute(f"PRAGMA {name}").fetchone()
            cur.close()
            return None if row is None else row[0]
        finally:
            raw.close()

