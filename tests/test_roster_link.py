"""The kiosk's roster link (edge/delivery/rostersync.py) over a real Mosquitto, on real SQLite stores, against
a scripted district built only on the wire contract (tests/roster_scripted.py): sync on connect, pushed
changes, uploads and their answers, erasure receipts, forged batches, catch-up after an outage, resync."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from conftest import MosquittoBroker
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from roster_kiosk import Kiosk, kiosk_key, wait_until
from roster_kiosk import kiosk_config as _kiosk_config
from roster_kiosk import start_kiosk as _start_kiosk
from roster_scripted import ScriptedDistrict, embedding

from edge.config import Config
from edge.delivery import rosterwire as rw
from edge.delivery.rostersync import problem
from edge.meals.rules import Senior
from edge.security.signing import public_key_text
from edge.store import Store, TemplateIn

M = "model-a"


def kiosk_config(broker: MosquittoBroker, folder: Path, d: ScriptedDistrict, centre: str = "centre-001",
                 kiosk: str = "kiosk-1", *, district_key: str | None = None) -> Config:
    key = public_key_text(d.key.public_key()) if district_key is None else district_key
    return _kiosk_config(broker, folder, key, d.tkey, centre, kiosk)


def start_kiosk(cfg: Config, d: ScriptedDistrict, store: Store | None = None) -> Kiosk:
    d.kiosk_keys[(cfg.centre.id, cfg.centre.kiosk_id)] = kiosk_key(cfg).public_key()
    return _start_kiosk(cfg, M, store)


@pytest.fixture
def district(mosquitto_broker: MosquittoBroker) -> Iterator[ScriptedDistrict]:
    d = ScriptedDistrict(model_id=M)
    d.serve(mosquitto_broker.host, mosquitto_broker.port, chunk=100)
    yield d
    d.stop()


def expected_rows(d: ScriptedDistrict, centre: str) -> list[tuple[object, ...]]:
    out = []
    for sid, e in sorted(d.roster.items()):
        if e.state is None or not d.in_scope(e, centre):
            continue
        s = e.state
        out.append((sid, s.name, s.birth_date.isoformat(), s.hukou, s.status, s.card_no, s.home_centre,
                    tuple(sorted(t[0] for t in e.templates if t[1] == M))))
    return out


def test_a_kiosk_syncs_on_connect_and_applies_pushed_changes(mosquitto_broker: MosquittoBroker,
                                                              district: ScriptedDistrict, tmp_path: Path) -> None:
    d = district
    for i in range(3):
        d.put(f"S{i}", name=f"老人{i}", embeddings=[embedding(i), embedding(10 + i)])
    k = start_kiosk(kiosk_config(mosquitto_broker, tmp_path, d), d)
    try:
        wait_until(lambda: k.store.roster_state().version == 3, 10, "the first sync")
        assert k.store.roster_rows() == expected_rows(d, "centre-001")
        assert len(k.store.templates(M)) == 6
        wait_until(lambda: any(r.version == 3 for r in d.receipts), 5, "a receipt for version 3")
        # a status change, pushed as the district's pusher does: applied and the gallery told at once
        n = len(k.changes)
        v = d.put("S1", name="老人1", status="suspended")
        t0 = time.monotonic()
        d.push("centre-001", "kiosk-1", 3)
        took = wait_until(lambda: (s := k.store.get_senior("S1")) is not None and s.status == "suspended", 5,
                          "the suspension")
        assert took < 5 and k.store.roster_state().version == v
        wait_until(lambda: len(k.changes) > n, 2, "on_change")
        assert k.changes[-1] - t0 < 5
        # a batch signed by anyone else is never applied
        forged = d.batch("centre-001", "kiosk-1", [d.change_for("S1", d.roster["S1"], "centre-001", M)], v, v + 1)
        d._client.publish(rw.topic("meal/v1", "xuhui", "centre-001", "kiosk-1", "down", "roster"),  # type: ignore[union-attr]
                          rw.encode(forged.model_copy(update={"changes": [rw.Change(
                              version=v + 1, senior_id="S0", op="absent", why="removed")]}),
                              Ed25519PrivateKey.generate()), qos=1)
        time.sleep(0.5)
        assert k.store.get_senior("S0") is not None and k.store.roster_state().version == v
    finally:
        k.stop()
        k.store.close()


def test_uploads_are_answered_and_a_refusal_removes_the_templates(mosquitto_broker: MosquittoBroker,
                                                                  district: ScriptedDistrict, tmp_path: Path) -> None:
    d = district
    d.put("S1", name="王芳", embeddings=[])
    k = start_kiosk(kiosk_config(mosquitto_broker, tmp_path, d), d)
    try:
        wait_until(lambda: k.store.roster_state().version == 1, 10, "the first sync")
        assert k.store.roster_uploads_enabled()
        # enrolled here: the district knows S1, not X9
        k.store.add_templates("S1", [TemplateIn(embedding(1), M, 0.9, "a.jpg"), TemplateIn(embedding(2), M, 0.9,
                                                                                           "b.jpg")], upload=True)
        k.store.add_senior(Senior("X9", "Stranger", date(1945, 1, 1), "本区"))
        k.store.add_templates("X9", [TemplateIn(embedding(3), M, 0.9, "x.jpg")], upload=True)
        wait_until(lambda: {u.state for u in k.store.uploads()} == {"accepted", "refused"}, 10, "both answers")
        (x9,) = k.store.uploads("X9")
        assert x9.reason_code == "unknown_senior" and k.store.template_count("X9") == 0
        (s1,) = k.store.uploads("S1")
        assert s1.state == "accepted" and s1.version == 2
        # the district's copy is the kiosk's, opened under the transport key
        assert len(d.roster["S1"].templates) == 2
        # the accepted templates come back down in the next change with the same ids: nothing doubles
        d.push("centre-001", "kiosk-1", 1)
        wait_until(lambda: k.store.roster_state().version == 2, 5, "version 2")
        assert k.store.template_count("S1") == 2
        assert k.store.roster_rows() == [r for r in expected_rows(d, "centre-001")] + [
            ("X9", "Stranger", "1945-01-01", "本区", "active", None, None, ())]
    finally:
        k.stop()
        k.store.close()


def test_removal_is_receipted_and_an_offline_kiosk_catches_up_row_by_row(
        mosquitto_broker: MosquittoBroker, district: ScriptedDistrict, tmp_path: Path) -> None:
    d = district
    for i in range(20):
        d.put(f"S{i:04d}", embeddings=[embedding(i)])
    cfg = kiosk_config(mosquitto_broker, tmp_path, d)
    k = start_kiosk(cfg, d)
    try:
        wait_until(lambda: k.store.roster_state().version == 20, 10, "the first sync")
        v = d.remove("S0003")
        d.push("centre-001", "kiosk-1", 20)
        wait_until(lambda: any(r.erased == {"S0003": 1} and r.version == v for r in d.receipts), 5, "erasure receipt")
        wait_until(lambda: k.store.roster_state().erased_pending == {}, 5, "the receipt acknowledged")
    finally:
        k.stop()
    # offline while the district makes 1,000 changes: new seniors, status changes, removals, out of scope
    for i in range(1000):
        sid = f"S{i % 300:04d}"
        if i % 97 == 0:
            d.remove(sid)
        elif i % 41 == 0:
            d.put(sid, centres=["centre-002"], embeddings=[embedding(5000 + i)])
        else:
            d.put(sid, name=f"老人{i}", status=("active", "suspended", "deceased")[i % 3],
                  embeddings=[embedding(1000 + i)] if i % 5 == 0 else [], card_no=f"C{i}" if i % 7 == 0 else None)
    t0 = time.monotonic()
    k = start_kiosk(cfg, d, store=k.store)
    try:
        wait_until(lambda: k.store.roster_state().version == d.version, 30, "catch-up")
        took = time.monotonic() - t0
        assert k.store.roster_rows() == expected_rows(d, "centre-001")
        assert not d.syncs[-1].full  # caught up from its version, no full reload
        print(f"catch-up of 1,000 changes: {took:.2f} s")
    finally:
        k.stop()
        k.store.close()


def test_resync_asks_for_a_full_snapshot_that_drops_what_the_district_no_longer_has(
        mosquitto_broker: MosquittoBroker, district: ScriptedDistrict, tmp_path: Path) -> None:
    d = district
    d.chunk = 4
    for i in range(10):
        d.put(f"S{i}", embeddings=[embedding(i)])
    k = start_kiosk(kiosk_config(mosquitto_broker, tmp_path, d), d)
    try:
        wait_until(lambda: k.store.roster_state().version == 10, 10, "the first sync")
        with d.lock:
            del d.roster["S5"]  # lost at the district without a removal change (a restored backup)
        k.store.request_resync()  # what `meal-edge roster resync` does
        wait_until(lambda: any(s.full for s in d.syncs), 5, "a full sync request")
        wait_until(lambda: k.store.get_senior("S5") is None, 5, "the snapshot applied")
        assert k.store.roster_rows() == expected_rows(d, "centre-001")
    finally:
        k.stop()
        k.store.close()


def test_no_district_key_no_sync(mosquitto_broker: MosquittoBroker, tmp_path: Path) -> None:
    d = ScriptedDistrict(model_id=M)
    cfg = kiosk_config(mosquitto_broker, tmp_path, d, district_key="")
    assert "no district roster key" in (problem(cfg) or "")
    cfg2 = kiosk_config(mosquitto_broker, tmp_path / "b", d)
    os.chmod(tmp_path / "b" / "roster.key", 0o644)
    assert "readable by every user" in (problem(cfg2) or "")


def test_roster_status_and_resync_commands(mosquitto_broker: MosquittoBroker, district: ScriptedDistrict,
                                           tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edge.cli.main import main

    d = district
    d.put("S1", embeddings=[embedding(1)])
    cfg = kiosk_config(mosquitto_broker, tmp_path, d)
    conf = str(cfg.source_path)
    k = start_kiosk(cfg, d)
    try:
        wait_until(lambda: k.store.roster_state().version == 1, 10, "the first sync")
        k.store.add_senior(Senior("X9", "Stranger", date(1945, 1, 1), "本区"))
        k.store.add_templates("X9", [TemplateIn(embedding(3), M, 0.9, "x.jpg")], upload=True)
        wait_until(lambda: [u.state for u in k.store.uploads()] == ["refused"], 10, "the refusal")
        capsys.readouterr()
        assert main(["roster", "status", "--config", conf]) == 0
        out = capsys.readouterr().out
        assert "district roster: on" in out and "version: 1 (model model-a)" in out
        assert "0 pending, 0 accepted, 1 refused" in out and "REFUSED  X9" in out and "district roster first" in out
        assert main(["--config", conf, "roster", "status", "--json"]) == 0
        js = json.loads(capsys.readouterr().out)
        assert js["version"] == 1 and js["refused"][0]["reason_code"] == "unknown_senior" and js["syncing"]
        from enroll.cli import main as enroll_main

        assert enroll_main(["--config", conf, "remove", "X9", "--yes"]) == 0
        assert "on this kiosk only" in capsys.readouterr().out and k.store.uploads("X9") == []
        n = len(d.syncs)
        assert main(["roster", "resync", "--config", conf]) == 0
        assert "asks the district for the whole roster" in capsys.readouterr().out
        wait_until(lambda: len(d.syncs) > n and d.syncs[-1].full, 5, "the full sync request")
    finally:
        k.stop()
        k.store.close()
    bad = kiosk_config(mosquitto_broker, tmp_path / "nokey", d, district_key="")
    Store(bad.store_path).close()
    assert main(["roster", "status", "--config", str(bad.source_path)]) == 0
    assert "NOT syncing: no district roster key" in capsys.readouterr().out
    main(["check-config", str(bad.source_path)])
    assert "roster: does NOT sync: no district roster key" in capsys.readouterr().err
    main(["check-config", conf])
    assert "roster: syncs with the district roster" in capsys.readouterr().out


def test_an_old_snapshot_replayed_later_does_not_roll_the_roster_back(
        mosquitto_broker: MosquittoBroker, district: ScriptedDistrict, tmp_path: Path) -> None:
    from edge.delivery import rostersync

    d = district
    d.put("S1", embeddings=[embedding(1)])
    old = d.batch("centre-001", "kiosk-1", d.changes_since(0, "centre-001", M), 0, 1, full=True)
    d.put("S1", status="deceased")
    k = start_kiosk(kiosk_config(mosquitto_broker, tmp_path, d), d)
    try:
        wait_until(lambda: k.store.roster_state().version == 2, 10, "the first sync")
        k.link._last_sync -= rostersync.SNAPSHOT_ANSWER_S + 1  # long after the kiosk's last sync request
        d.send("centre-001", "kiosk-1", old)  # signed by the district, but stale: S1 active again
        time.sleep(1.0)
        s1 = k.store.get_senior("S1")
        assert s1 is not None and s1.status == "deceased" and k.store.roster_state().version == 2
    finally:
        k.stop()
        k.store.close()


def test_an_enrolment_while_the_broker_is_away_is_sent_when_it_is_back(
        mosquitto_broker: MosquittoBroker, district: ScriptedDistrict, tmp_path: Path) -> None:
    d = district
    d.put("S1", embeddings=[])
    k = start_kiosk(kiosk_config(mosquitto_broker, tmp_path, d), d)
    try:
        wait_until(lambda: k.store.roster_state().version == 1, 10, "the first sync")
        mosquitto_broker.stop()
        wait_until(lambda: not k.publisher.link_up, 10, "the kiosk sees the broker gone")
        k.store.add_templates("S1", [TemplateIn(embedding(1), M, 0.9, "a.jpg")], upload=True)
        time.sleep(1.5)
        (u,) = k.store.uploads("S1")
        assert u.state == "pending" and u.sent_at is None  # nothing handed to the client while offline
        mosquitto_broker.start()
        wait_until(lambda: [x.state for x in k.store.uploads("S1")] == ["accepted"], 20, "sent and accepted")
        wait_until(lambda: k.store.roster_state().version == 2, 10, "the district's change back down")
        assert len(d.uploads) == 1
    finally:
        k.stop()
        k.store.close()


def test_a_snapshot_whose_last_part_is_lost_is_asked_for_again(
        mosquitto_broker: MosquittoBroker, district: ScriptedDistrict, tmp_path: Path) -> None:
    d = district
    d.chunk = 3
    for i in range(6):
        d.put(f"S{i}", embeddings=[embedding(i)])
    k = start_kiosk(kiosk_config(mosquitto_broker, tmp_path, d), d)
    try:
        wait_until(lambda: k.store.roster_state().version == 6, 10, "the first sync")
        send, dropped = d.send, []

        def lossy(centre: str, kiosk: str, msg: rw.RosterBatch | rw.UploadAck) -> None:
            if isinstance(msg, rw.RosterBatch) and msg.full and msg.part == 2 and not dropped:
                dropped.append(msg)  # lost on the way
                return
            send(centre, kiosk, msg)

        d.send = lossy  # type: ignore[method-assign]
        with d.lock:
            del d.roster["S5"]
        k.store.request_resync()
        wait_until(lambda: k.store.roster_state().snapshot_to is not None, 5, "the snapshot started")
        assert k.store.get_senior("S5") is not None  # nothing erased on an unfinished snapshot
        wait_until(lambda: sum(s.full for s in d.syncs) == 2, 10, "the snapshot asked for again")
        wait_until(lambda: k.store.get_senior("S5") is None and k.store.roster_state().snapshot_to is None, 5,
                   "the second snapshot complete")
    finally:
        k.stop()
        k.store.close()
