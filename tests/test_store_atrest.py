"""Biometric data at rest (issue 12, item 5), on real SQLite files: templates sealed with AES-GCM under a key
outside the database, an old plaintext store sealed on first open, swapped rows refused, a lost key never
silently replaced, the store's folder and files private whatever the umask, audit lines append-only."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from edge.meals.rules import Senior
from edge.security import atrest
from edge.store import Store, StoreError, TemplateIn, migrations
from edge.store.auditlog import AuditEntry
from edge.store.evidence import EvidenceKeeper
from edge.store.models import SEALED_EMBEDDING_BYTES

MARK_A = np.frombuffer(b"PLAINTEXT-TPL-A!" * 32, dtype="<f4").copy()
MARK_B = np.frombuffer(b"PLAINTEXT-TPL-B!" * 32, dtype="<f4").copy()


@pytest.fixture(autouse=True)
def _no_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)  # the usual desktop/server umask: files 0644, folders 0755 unless the code says
    try:
        yield
    finally:
        os.umask(old)


def _raw(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists())


def _v2_store_with_plaintext(path: Path) -> None:
    """A store as meal-edge wrote it before templates were sealed (schema version 2), built with the frozen
    DDL of versions 1 and 2."""
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    for stmt in migrations._V1 + migrations._V2:
        con.execute(stmt)
    now = "2026-11-01T00:00:00+00:00"
    con.execute("INSERT INTO schema_version VALUES (1, 'v1', ?), (2, 'v2', ?)", (now, now))
    for sid, name in (("S0001", "Zhang Wei"), ("S0002", "Li Ming")):
        con.execute(
            "INSERT INTO seniors VALUES (?, ?, '1940-01-01', 'xuhui', 'active', ?, ?)", (sid, name, now, now)
        )
    con.execute(
        "INSERT INTO face_templates (senior_id, embedding, model_id, quality, source, photo, created_at) "
        "VALUES ('S0001', ?, 'm1', 0.9, 'a.jpg', ?, ?), ('S0002', ?, 'm1', 0.9, 'b.jpg', NULL, ?)",
        (MARK_A.tobytes(), b"PLAINTEXT-PHOTO-" * 50, now, MARK_B.tobytes(), now),
    )
    con.commit()
    con.close()


def test_an_old_plaintext_store_is_sealed_on_first_open(tmp_path: Path) -> None:
    path = tmp_path / "state" / "meal.sqlite"
    path.parent.mkdir()
    _v2_store_with_plaintext(path)
    assert b"PLAINTEXT-TPL-A" in _raw(path)  # the test can fail: the plaintext is there before
    with Store(path) as s:
        assert s.schema_version == len(migrations.MIGRATIONS)
        got = dict(s.templates())
        assert np.array_equal(got["S0001"], MARK_A) and np.array_equal(got["S0002"], MARK_B)
        assert s.template_info("S0001")[0][4] is True  # the photo is kept, sealed
    raw = _raw(path)
    assert b"PLAINTEXT-TPL-A" not in raw and b"PLAINTEXT-TPL-B" not in raw and b"PLAINTEXT-PHOTO" not in raw
    key = tmp_path / "state" / "template.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    # a plaintext template cannot be put back in: the table takes sealed records only
    con = sqlite3.connect(path)
    with pytest.raises(sqlite3.IntegrityError, match="ck_embedding_size"):
        con.execute(
            "INSERT INTO face_templates (senior_id, embedding, model_id, quality, source, created_at) "
            "VALUES ('S0001', ?, 'm1', 0.9, 'x', '2026-11-01T00:00:00+00:00')",
            (MARK_B.tobytes(),),
        )
    con.close()


def test_sealed_templates_match_as_before_and_cannot_be_swapped(tmp_path: Path) -> None:
    path = tmp_path / "meal.sqlite"
    with Store(path) as s:
        for sid, mark in (("S0001", MARK_A), ("S0002", MARK_B)):
            s.add_senior(Senior(sid, f"name {sid}", date(1940, 1, 1), "xuhui"))
            s.add_templates(sid, [TemplateIn(mark, "m1", 0.9, f"{sid}.jpg")])
        assert [sid for sid, _ in s.templates()] == ["S0001", "S0002"]
    con = sqlite3.connect(path)
    rows = con.execute("SELECT id, senior_id, embedding FROM face_templates ORDER BY id").fetchall()
    assert all(len(blob) == SEALED_EMBEDDING_BYTES for _, _, blob in rows)
    # someone with write access to the file (but not the key) swaps the two seniors' templates, so that
    # S0002's face would be paid as S0001
    (id_a, _, blob_a), (id_b, _, blob_b) = rows
    con.execute("UPDATE face_templates SET embedding = ? WHERE id = ?", (blob_b, id_a))
    con.execute("UPDATE face_templates SET embedding = ? WHERE id = ?", (blob_a, id_b))
    con.commit()
    con.close()
    with Store(path) as s:
        assert s.templates() == []  # neither opens under the other senior's row: never matched as them
    # nor a template copied to another row of the same senior (its row id is bound too)
    with Store(path) as s:
        s.add_templates("S0001", [TemplateIn(MARK_A, "m1", 0.8, "again.jpg"), TemplateIn(MARK_B, "m1", 0.8, "b.jpg")])
        assert len(s.templates()) == 2
    con = sqlite3.connect(path)
    (id_1, blob_1), (id_2, _) = con.execute(
        "SELECT id, embedding FROM face_templates WHERE quality = 0.8 ORDER BY id"
    ).fetchall()
    con.execute("UPDATE face_templates SET embedding = ? WHERE id = ?", (blob_1, id_2))
    con.commit()
    con.close()
    with Store(path) as s:
        assert [np.array_equal(e, MARK_A) for _, e in s.templates()] == [True]


def test_a_lost_key_is_refused_not_replaced(tmp_path: Path) -> None:
    path = tmp_path / "meal.sqlite"
    with Store(path) as s:
        s.add_senior(Senior("S0001", "Zhang Wei", date(1940, 1, 1), "xuhui"))
        s.add_templates("S0001", [TemplateIn(MARK_A, "m1", 0.9, "a.jpg")])
    key = tmp_path / "template.key"
    saved = key.read_bytes()
    key.unlink()
    with pytest.raises(StoreError, match="template key is missing.*restore it from the backup"):
        Store(path)
    assert not key.exists()  # not re-created: the templates sealed under the old key would be lost for good
    key.write_bytes(saved)
    key.chmod(0o600)
    with Store(path) as s:
        assert np.array_equal(s.templates()[0][1], MARK_A)
    # another key (a wrong backup): nothing opens, nothing is matched
    key.write_bytes(os.urandom(32))
    with Store(path) as s:
        assert s.templates() == []


def test_the_key_can_be_a_systemd_credential(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / atrest.CREDENTIAL_NAME).write_bytes(os.urandom(32))
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    path = tmp_path / "state" / "meal.sqlite"
    with Store(path) as s:
        s.add_senior(Senior("S0001", "Zhang Wei", date(1940, 1, 1), "xuhui"))
        s.add_templates("S0001", [TemplateIn(MARK_A, "m1", 0.9, "a.jpg")])
    assert not (tmp_path / "state" / "template.key").exists()
    with Store(path) as s:
        assert np.array_equal(s.templates()[0][1], MARK_A)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    with pytest.raises(StoreError, match="missing"):
        Store(path)


def test_the_store_folder_and_files_are_private_whatever_the_umask(tmp_path: Path, umask_022: None) -> None:
    folder = tmp_path / "state"
    path = folder / "meal.sqlite"
    s = Store(path)
    try:
        s.add_senior(Senior("S0001", "Zhang Wei", date(1940, 1, 1), "xuhui"))  # the WAL and -shm now exist
        mode = {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()}
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert mode == {"meal.sqlite": 0o600, "meal.sqlite-wal": 0o600, "meal.sqlite-shm": 0o600,
                        "template.key": 0o600}, mode
    finally:
        s.close()
    # an existing store left readable by others is tightened when opened
    path.chmod(0o644)
    folder.chmod(0o755)
    Store(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(folder.stat().st_mode) == 0o700


def test_evidence_snapshots_are_private_whatever_the_umask(tmp_path: Path, umask_022: None) -> None:
    keeper = EvidenceKeeper(tmp_path / "evidence", 30)
    img = np.zeros((240, 320, 3), np.uint8)
    when = datetime(2026, 11, 30, 11, 45, tzinfo=ZoneInfo("Asia/Shanghai"))
    p = keeper.save("confirmation-1", img, (80, 200, 160, 120), when)
    assert p is not None
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
    assert stat.S_IMODE(p.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "evidence").stat().st_mode) == 0o700


def test_the_audit_log_is_append_only(tmp_path: Path) -> None:
    path = tmp_path / "meal.sqlite"
    with Store(path) as s:
        s.audit(AuditEntry("w01", "confirm", "confirmation:1", {"senior_id": "S0001"}))
        s.audit(AuditEntry("os:kiosk", "remove", "senior:S0001"))
        assert [(a.staff_id, a.action) for a in s.audit_log()] == [("w01", "confirm"), ("os:kiosk", "remove")]
    con = sqlite3.connect(path)
    with pytest.raises(sqlite3.IntegrityError, match="append-only.*changed"):
        con.execute("UPDATE audit_log SET staff_id = 'someone-else'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only.*deleted"):
        con.execute("DELETE FROM audit_log")
    assert con.execute("SELECT count(*) FROM audit_log").fetchone()[0] == 2
    con.close()
    with pytest.raises(ValueError, match="unknown audit action"):
        AuditEntry("w01", "pay-everyone", "x")
