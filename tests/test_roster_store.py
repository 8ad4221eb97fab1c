"""The district roster in the kiosk's store (edge/store/rosterdb.py), on real SQLite files: batches applied in
order and idempotently, full snapshots, erasure that leaves nothing in the files, uploads queued with the
enrolment and the district's answers."""

from __future__ import annotations

import sqlite3
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pytest
from roster_scripted import ScriptedDistrict, embedding
from sqlalchemy import create_engine, text

from edge.delivery import rosterwire as rw
from edge.meals.rules import Senior
from edge.store import Store, StoreError, TemplateIn, migrations

C, K, M = "centre-001", "kiosk-1", "model-a"


def _store(tmp_path: Path, name: str = "kiosk.sqlite") -> Store:
    return Store(tmp_path / name)


def _gallery(store: Store) -> dict[str, list[np.ndarray]]:
    out: dict[str, list[np.ndarray]] = {}
    for sid, e in store.templates(M):
        out.setdefault(sid, []).append(e)
    return out


def test_a_v4_store_migrates_with_template_ids_and_a_roster_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                    ) -> None:
    path = tmp_path / "old.sqlite"
    monkeypatch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:4])
    with Store(path) as s:
        cipher = s.cipher
    # rows as a version-4 meal-edge wrote them (today's models have the new columns)
    con = sqlite3.connect(path)
    with con:
        con.execute("INSERT INTO seniors VALUES ('S1', 'Wang Fang', '1946-03-01', '本区', 'active', ?, ?, NULL)",
                    ("2026-01-01T00:00:00+00:00", "2026-01-01T00:00:00+00:00"))
        for i in range(3):
            blob = cipher.seal(embedding(i).astype("<f4").tobytes(), "S1", i + 1)
            con.execute("INSERT INTO face_templates VALUES (?, 'S1', ?, ?, 0.9, 'p.jpg', NULL, ?)",
                        (i + 1, blob, M, "2026-01-01T00:00:00+00:00"))
    con.close()
    monkeypatch.undo()
    with Store(path) as s:
        assert s.schema_version == 6
        assert s.roster_state().version == 0
        uids = s.roster_rows()[0][7]
        assert len(uids) == 3 and len(set(uids)) == 3 and all(len(u) == 36 for u in uids)
        assert len(s.templates(M)) == 3  # still open under the same key after the migration


def test_batches_apply_in_order_and_idempotently(tmp_path: Path) -> None:
    d = ScriptedDistrict(model_id=M)
    v1 = d.put("S1", embeddings=[embedding(1), embedding(2)], card_no="C1")
    d.put("S2", name="李明", embeddings=[embedding(3)])
    with _store(tmp_path) as s:
        b1 = d.batch(C, K, d.changes_since(0, C, M), 0)
        r = s.apply_roster_batch(b1, d.tkey, M)
        assert (r.outcome, r.version, r.changed) == ("applied", 2, 2)
        g = _gallery(s)
        assert sorted(g) == ["S1", "S2"] and len(g["S1"]) == 2
        assert np.allclose(sorted(g["S2"][0]), sorted(embedding(3)), atol=1e-6)
        before = s.roster_rows()
        assert s.apply_roster_batch(b1, d.tkey, M).outcome == "duplicate"  # the same batch again: nothing changes
        assert s.roster_rows() == before
        # a batch that starts after what this kiosk has: a gap, nothing applied
        d.put("S1", status="suspended", card_no="C1")
        d.put("S3", embeddings=[embedding(4)])
        late = d.batch(C, K, d.changes_since(3, C, M), 3)
        assert s.apply_roster_batch(late, d.tkey, M).outcome == "gap"
        assert s.get_senior("S3") is None and s.roster_state().version == 2
        # an overlapping batch (from 1): the changes it repeats are skipped, the new ones applied
        over = d.batch(C, K, d.changes_since(v1, C, M), v1)
        r = s.apply_roster_batch(over, d.tkey, M)
        assert (r.outcome, r.version, r.changed) == ("applied", 4, 2)
        st1 = s.get_senior("S1")
        assert st1 is not None and st1.status == "suspended"
        assert len(_gallery(s)["S1"]) == 2  # same template ids: not stored twice
        # a batch for another model is not applied
        assert s.apply_roster_batch(d.batch(C, K, [], 4, 5, model_id="other"), d.tkey, M).outcome == "wrong_model"


def test_a_card_number_moved_by_the_district_leaves_its_old_holder(tmp_path: Path) -> None:
    d = ScriptedDistrict(model_id=M)
    d.put("S1", card_no="C9", embeddings=[embedding(1)])
    d.put("S2", embeddings=[embedding(2)])
    d.put("S1", card_no=None)
    d.put("S2", card_no="C9")
    with _store(tmp_path) as s:
        # delivered in two batches, the second compacted: S2 takes C9 while S1 still holds it locally
        s.apply_roster_batch(d.batch(C, K, [d.change_for("S1", d.roster["S1"], C, M).model_copy(
            update={"version": 1, "state": d.roster["S1"].state.model_copy(update={"card_no": "C9"})})], 0, 1),  # type: ignore[union-attr]
            d.tkey, M)
        s.apply_roster_batch(d.batch(C, K, [d.change_for("S2", d.roster["S2"], C, M)], 1, 4), d.tkey, M)
        rows = {r[0]: r[5] for r in s.roster_rows()}
        assert rows == {"S1": None, "S2": "C9"}  # S1 keeps its record, the card follows the district


def _files(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists())


def test_removal_erases_the_senior_from_the_files_and_owes_a_receipt(tmp_path: Path) -> None:
    d = ScriptedDistrict(model_id=M)
    d.put("S1", name="张秀英", embeddings=[embedding(1), embedding(2)], card_no="C-77331")
    d.put("S2", name="李明", embeddings=[embedding(3)])
    path = tmp_path / "kiosk.sqlite"
    with Store(path) as s:
        s.apply_roster_batch(d.batch(C, K, d.changes_since(0, C, M), 0), d.tkey, M)
        eng = create_engine(f"sqlite:///{path}")
        with eng.connect() as c:
            sealed = [bytes(r[0]) for r in c.execute(text("SELECT embedding FROM face_templates WHERE senior_id='S1'"))]
        eng.dispose()
        assert len(sealed) == 2
        s._checkpoint_truncate()
        raw = _files(path)
        assert "张秀英".encode() in raw and all(b[20:80] in raw for b in sealed)  # the scan can see them
        v = d.remove("S1")
        r = s.apply_roster_batch(d.batch(C, K, d.changes_since(2, C, M), 2), d.tkey, M)
        assert (r.outcome, r.version, r.erased) == ("applied", v, {"S1": 2})
        assert s.roster_state().erased_pending == {"S1": 2}
        assert s.get_senior("S1") is None and sorted(_gallery(s)) == ["S2"]
        # again (a repeated batch): nothing more erased, nothing owed twice
        assert s.apply_roster_batch(d.batch(C, K, d.changes_since(2, C, M), 2), d.tkey, M).outcome == "duplicate"
        s.receipt_acknowledged({"S1": 2})
        assert s.roster_state().erased_pending == {}
    raw = _files(path)
    assert "张秀英".encode() not in raw and b"C-77331" not in raw
    for b in sealed:
        assert b[20:80] not in raw  # no piece of the sealed template either
    assert "李明".encode() in raw  # the scan would find a senior who is still there


def test_a_full_snapshot_in_parts_erases_the_unseen_but_not_a_pending_enrolment(tmp_path: Path) -> None:
    d = ScriptedDistrict(model_id=M)
    for i in range(5):
        d.put(f"S{i}", embeddings=[embedding(i)])
    with _store(tmp_path) as s:
        s.apply_roster_batch(d.batch(C, K, d.changes_since(0, C, M), 0), d.tkey, M)
        s.add_senior(Senior("L1", "Local", date(1940, 1, 1), "本区"))
        s.add_templates("L1", [TemplateIn(embedding(50), M, 0.8, "l.jpg")], upload=True)
        d.remove("S4")  # the district removes S4 and forgets... the snapshot simply does not name it
        del d.roster["S4"]
        changes = d.changes_since(0, C, M)
        p1 = d.batch(C, K, changes[:2], 0, d.version, full=True, part=1, parts=2)
        p2 = d.batch(C, K, changes[2:], 0, d.version, full=True, part=2, parts=2)
        assert s.apply_roster_batch(p1, d.tkey, M).outcome == "snapshot_part"
        assert s.roster_state().version == 5 and s.get_senior("S4") is not None  # nothing erased before the end
        # a part out of order restarts the snapshot
        assert s.apply_roster_batch(p2.model_copy(update={"part": 2, "to_version": 99}), d.tkey, M).outcome \
            == "snapshot_restart"
        assert s.apply_roster_batch(p1, d.tkey, M).outcome == "snapshot_part"
        r = s.apply_roster_batch(p2, d.tkey, M)
        assert (r.outcome, r.version) == ("applied", d.version)
        assert sorted(x[0] for x in s.roster_rows()) == ["L1", "S0", "S1", "S2", "S3"]


def test_an_enrolment_queues_its_upload_in_the_same_transaction_and_a_refusal_removes_the_templates(
        tmp_path: Path) -> None:
    with _store(tmp_path) as s:
        s.add_senior(Senior("S1", "Wang Fang", date(1946, 3, 1), "本区"))
        s.add_templates("S1", [TemplateIn(embedding(i), M, 0.9, f"p{i}.jpg") for i in range(2)], upload=True)
        s.add_templates("S1", [TemplateIn(embedding(9), M, 0.9, "q.jpg")])  # not for the district
        ups = s.pending_uploads()
        assert len(ups) == 1 and ups[0].senior_id == "S1" and ups[0].model_id == M
        assert sorted(float(t[2][0]) for t in ups[0].templates) == sorted(float(embedding(i)[0]) for i in range(2))
        # a failing write rolls the upload back with the templates
        with pytest.raises(StoreError):
            s.add_templates("NOBODY", [TemplateIn(embedding(3), M, 0.9, "x.jpg")], upload=True)
        assert len(s.uploads()) == 1
        ack = rw.UploadAck(msg_id=rw.new_msg_id(), district="xuhui", centre_id=C, kiosk_id=K,
                           sent_at=datetime.now(UTC), upload_id=ups[0].upload_id, senior_id="S1", accepted=False,
                           reason_code="unknown_senior", reason=rw.REFUSALS["unknown_senior"])
        assert s.answer_upload(ack) == 2
        assert s.answer_upload(ack) == 0  # repeated answer
        assert s.template_count("S1") == 1
        (u,) = s.uploads("S1")
        assert u.state == "refused" and u.reason_code == "unknown_senior" and "district roster" in (u.reason or "")
        assert "upload_refused" in [a.action for a in s.audit_log()]
