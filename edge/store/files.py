"""The store's files on disk: private permissions, the integrity check at start, and the template key.

Faces are biometric data and the store holds names, birth dates and hukou beside them: outside systemd
(which makes the state folder 0700 itself) the code must not rely on the umask. The folder is made 0700 and
the database 0600 before SQLite opens it; SQLite creates the -wal and -shm files with the database's mode.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
from pathlib import Path

from edge.security.atrest import AtRestError, TemplateCipher, key_exists, load_key, load_or_create_key

log = logging.getLogger(__name__)

#: the files beside the database that hold its pages
SIDE_FILES = ("-wal", "-shm", "-journal")


class DamagedStore(RuntimeError):
    """`PRAGMA quick_check` found damage; the message says what to do. The file is left as it is."""


def _tighten(path: Path, mode: int) -> None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return
    if stat.S_IMODE(st.st_mode) & 0o077 and st.st_uid == os.geteuid():
        os.chmod(path, mode)
        log.warning("%s was readable by other users: now %o", path, mode)


def make_private(db: Path) -> None:
    """The store's folder 0700 (created so, or tightened if ours), the database file created 0600 (or
    tightened), and any -wal/-shm beside it 0600."""
    folder = db.parent
    if not folder.exists():
        folder.mkdir(mode=0o700, parents=True)
    _tighten(folder, 0o700)
    if not db.exists():
        os.close(os.open(db, os.O_WRONLY | os.O_CREAT, 0o600))
    _tighten(db, 0o600)
    for suffix in SIDE_FILES:
        _tighten(Path(str(db) + suffix), 0o600)


def quick_check(db: Path) -> None:
    """`PRAGMA quick_check` on its own read-only connection before anything writes. DamagedStore when it finds
    damage (or cannot even read the pages). An empty or new file passes."""
    if not db.exists() or db.stat().st_size == 0:
        return
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    except sqlite3.Error:
        return  # cannot open at all: the store's own open says why
    try:
        rows = [str(r[0]) for r in con.execute("PRAGMA quick_check(5)").fetchall()]
    except sqlite3.DatabaseError as e:
        if "not a database" in str(e) or "encrypted" in str(e):
            return  # not an SQLite file: the store's open refuses it with its own message
        rows = [str(e)]
    finally:
        con.close()
    if rows != ["ok"]:
        raise DamagedStore(
            f"{db}: the store file is damaged (PRAGMA quick_check: {'; '.join(rows)[:300]}). It was kept as it is, "
            "nothing was written: stop meal-edge, copy the file somewhere safe, and restore the last backup "
            "(a technician may recover the rest with `sqlite3 FILE .recover`)"
        )


def cipher_for(key_file: Path, has_sealed_templates: bool) -> TemplateCipher:
    """The template cipher. A key is made only while no sealed template exists: a lost key must be restored,
    never silently replaced (the templates sealed under it would all stop matching)."""
    try:
        if has_sealed_templates or key_exists(key_file):
            return TemplateCipher(load_key(key_file))
        return TemplateCipher(load_or_create_key(key_file))
    except AtRestError:
        raise
    except OSError as e:
        raise AtRestError(f"{key_file}: cannot read or create the template key ({e})") from e
