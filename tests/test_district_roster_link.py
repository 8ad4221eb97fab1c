"""`meal-district serve` with the roster link, over a real Mosquitto, against scripted kiosks built on
edge.delivery.rosterwire: sync on connect, uploads acknowledged or refused, pushes within seconds, scope,
removal receipts, a catch-up in parts after 1,000 changes, and forged messages dropped.
(The joint tests with the real kiosk daemon are in tests/test_roster_sync.py.)"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import MosquittoBroker
from district_support import ServeThread, db_url, pg_url, wait_until  # noqa: F401
from roster_support import ScriptedKiosk, embedding, roster_config
from sqlalchemy import select

from district.db.models import RosterKiosk
from district.roster import book
from district.roster.csvfile import DistrictRow
from district.roster.keys import load_keys
from edge.delivery import rosterwire as rw


def rows(*spec: tuple[str, str, tuple[str, ...] | None]) -> list[DistrictRow]:
    from datetime import date

    return [DistrictRow(i + 2, sid, f"name {sid}", date(1946, 3, 1), "本区", "active", home, None, centres)
            for i, (sid, home, centres) in enumerate(spec)]


class District:
    def __init__(self, broker: MosquittoBroker, db: str, tmp_path: Path, batch_changes: int = 500,
                 push_interval: float = 0.1) -> None:
        self.cfg, _ = roster_config(broker, db, tmp_path, batch_changes, push_interval)
        self.keys = load_keys(self.cfg)
        self.serve = ServeThread(self.cfg)
        assert self.serve.server.roster is not None
        assert self.serve.server.roster.connected.wait(10), "the roster link did not subscribe"
        self.engine = self.serve.engine
        self.broker = broker

    def kiosk(self, centre: str = "centre-001", kiosk: str = "kiosk-1", model: str = "sface",
              connect: bool = True) -> ScriptedKiosk:
        k = ScriptedKiosk(self.broker, self.keys.signing.public_key(), self.keys.transport, centre, kiosk, model)
        k.register(self.engine)
        if connect:
            k.connect()
        return k


@pytest.fixture
def district(mosquitto_broker: MosquittoBroker, db_url: str, tmp_path: Path) -> Iterator[District]:  # noqa: F811
    d = District(mosquitto_broker, db_url, tmp_path, batch_changes=100)
    yield d
    d.serve.stop()


def test_enrol_at_one_kiosk_is_received_at_another_of_its_model_only(district: District) -> None:
    book.import_rows(district.engine, rows(("S1", "centre-001", None), ("S2", "centre-002", ("centre-002",))), "t")
    a = district.kiosk("centre-001", "kiosk-1")
    b = district.kiosk("centre-002", "kiosk-1")
    other = district.kiosk("centre-002", "kiosk-2", model="arcface")
    a.wait(lambda k: set(k.roster) == {"S1"}, what="kiosk A's first sync")
    b.wait(lambda k: set(k.roster) == {"S1", "S2"}, what="kiosk B's first sync")
    other.wait(lambda k: set(k.roster) == {"S1", "S2"}, what="the other model's kiosk")
    upload_id, tids = a.upload("S1", [embedding(1), embedding(2)])
    a.wait(lambda k: upload_id in k.acks, what="the upload's ack")
    ack = a.acks[upload_id]
    assert ack.accepted and ack.version == 3 and ack.senior_id == "S1"
    took = b.wait(lambda k: len(k.roster["S1"].templates) == 2, what="the templates at kiosk B")
    assert took < 5
    assert np.allclose(b.roster["S1"].templates[tids[0]], embedding(1))
    a.wait(lambda k: k.version == 3)
    other.wait(lambda k: k.version == 3, what="the other model's kiosk to reach version 3")
    assert other.roster["S1"].templates == {}  # a kiosk never receives templates it cannot use
    # that kiosk changes to the first kiosk's model: it gets the whole roster again, with the templates
    other.model_id = "sface"
    n = len(other.batches)
    other.sync()
    other.wait(lambda k: len(k.batches) > n and k.batches[-1].full and len(k.roster["S1"].templates) == 2,
               what="a full snapshot for the new model")
    # refused: unknown senior, and the kiosk says why
    bad_id, _ = a.upload("S404", [embedding(3)])
    a.wait(lambda k: bad_id in k.acks)
    bad = a.acks[bad_id]
    assert not bad.accepted and bad.reason_code == "unknown_senior" and bad.reason == rw.REFUSALS["unknown_senior"]
    # kiosk A (centre-001) never saw S2, not even its id
    assert "S2" not in a.seen_ids
    for k in (a, b, other):
        k.disconnect()


def test_a_status_change_reaches_an_online_kiosk_within_5_s_and_a_removal_is_confirmed(district: District) -> None:
    book.import_rows(district.engine, rows(("S1", "centre-001", None), ("S2", "centre-001", None)), "t")
    a = district.kiosk()
    a.wait(lambda k: set(k.roster) == {"S1", "S2"})
    up, _ = a.upload("S1", [embedding(5)])
    a.wait(lambda k: up in k.acks and len(k.roster["S1"].templates) == 1)
    _, v = book.set_status(district.engine, "S2", "deceased", "t")
    took = a.wait(lambda k: k.roster["S2"].state.status == "deceased", what="the status change")
    assert took < 5 and a.version == v
    r = book.remove(district.engine, "S1", "t")
    assert r.kiosks == ["xuhui/centre-001/kiosk-1"]
    a.wait(lambda k: "S1" not in k.roster and k.erased.get("S1") == 1, what="the removal")

    def confirmed() -> bool:
        with district.engine.connect() as conn:
            return book.pending_erasures(conn) == []

    wait_until(confirmed, 10, "the erasure receipt")
    with district.engine.connect() as conn:
        (kr,) = conn.execute(select(RosterKiosk.applied_version)).all()
        st = book.kiosks_status(conn)
    assert kr[0] == r.version
    assert st["version"] == r.version and [(k["kiosk"], k["applied_version"], k["erasures_owed"])
                                           for k in st["kiosks"]] == [("xuhui/centre-001/kiosk-1", r.version, 0)]
    a.disconnect()


def test_an_offline_kiosk_catches_up_1000_changes_in_parts_to_the_same_roster(district: District) -> None:
    book.import_rows(district.engine, rows(*[(f"S{i:03d}", "centre-001", None) for i in range(200)]), "t")
    a = district.kiosk()
    a.wait(lambda k: len(k.roster) == 200 and k.version == 200)
    a.disconnect()
    for n in range(1000):
        sid = f"S{n % 250:03d}"
        if n % 250 < 200:
            book.set_status(district.engine, sid, "suspended" if n // 250 % 2 == 0 else "active", "t")
        else:
            book.import_rows(district.engine, rows((sid, "centre-001", None)), "t")
    book.remove(district.engine, "S007", "t")
    with district.engine.connect() as conn:
        top = book.max_version(conn)
    assert top == 200 + 1000 - 150 + 1  # seniors S200-S249 were added once, then unchanged
    link = district.serve.server.roster
    assert link is not None
    wait_until(lambda: link._pushed_max == top, 20, "the pusher to see every change")  # nothing else arrives
    batches_before = len(a.batches)
    a.connect()
    a.wait(lambda k: k.version == top, timeout=30, what="the catch-up")
    catch_up = a.batches[batches_before:]
    assert len(catch_up) >= 3 and all(not b.full for b in catch_up)  # in parts (100 changes a message)
    # compacted: 249 states (S000-S249 but S007) and S007 absent for 1,001 changes; under load a second answer
    # (the kiosk asks again after a gap) can repeat a few, which the kiosk skips by version
    ids = [c.senior_id for b in catch_up for c in b.changes]
    assert set(ids) == {f"S{i:03d}" for i in range(250)} and len(ids) <= 260, len(ids)
    answer = [b for b in catch_up if b.parts == catch_up[0].parts]  # the first answer's parts, chained
    assert [b.from_version for b in answer[1:]] == [b.to_version for b in answer[:-1]]
    fresh = district.kiosk(kiosk="kiosk-fresh")
    fresh.wait(lambda k: k.version == top, timeout=30, what="a fresh kiosk's sync")
    assert _rows(a) == _rows(fresh) and len(_rows(a)) == 249 and "S007" not in a.roster
    # a full resync gives the same roster again
    a.sync(full=True)
    a.wait(lambda k: k.batches[-1].full and k.batches[-1].part == k.batches[-1].parts, timeout=30)
    assert _rows(a) == _rows(fresh)
    a.disconnect()
    fresh.disconnect()


def _rows(k: ScriptedKiosk) -> dict[str, tuple[object, ...]]:
    return {sid: (h.state.model_dump_json(exclude={"templates"}), sorted(h.templates)) for sid, h in k.roster.items()}


def test_a_message_not_signed_by_the_kiosks_registered_key_is_dropped(district: District) -> None:
    book.import_rows(district.engine, rows(("S1", "centre-001", None)), "t")
    a = district.kiosk(connect=False)
    impostor = ScriptedKiosk(district.broker, district.keys.signing.public_key(), district.keys.transport)
    a.connect(sync=False)
    impostor.client = a.client  # same topic, another key
    impostor.sync()
    up, _ = impostor.upload("S1", [embedding(9)])
    link = district.serve.server.roster
    assert link is not None
    wait_until(lambda: link.totals.dropped >= 2, 10, "the forged messages to be dropped")
    assert a.batches == [] and up not in a.acks
    a.sync()  # the real kiosk is answered
    a.wait(lambda k: "S1" in k.roster)
    a.disconnect()


def test_with_two_serve_processes_one_pushes_and_either_answers(mosquitto_broker: MosquittoBroker, pg_url: str,  # noqa: F811
                                                                 tmp_path: Path) -> None:
    """Two serve processes on one PostgreSQL database: the holder of the pusher lock alone pushes (a change
    reaches the kiosk once), and when it stops the other takes over."""
    d = District(mosquitto_broker, pg_url, tmp_path)
    second = ServeThread(d.cfg, client_id="district-test-2")
    try:
        book.import_rows(d.engine, rows(("S1", "centre-001", None)), "t")
        a = d.kiosk()
        a.wait(lambda k: "S1" in k.roster)
        n = len(a.batches)
        _, v = book.set_status(d.engine, "S1", "suspended", "t")
        a.wait(lambda k: k.version == v)
        time.sleep(1.0)  # a second pusher would have sent its copy by now
        assert len(a.batches) == n + 1
        pushers = [s for s in (d.serve, second) if s.server.roster and s.server.roster._leader.conn is not None]
        assert len(pushers) == 1
        pushers[0].stop()
        _, v = book.set_status(d.engine, "S1", "active", "t")
        a.wait(lambda k: k.version == v, timeout=10, what="the other process to take over the pushes")
        a.disconnect()
    finally:
        for s in (d.serve, second):
            if s.thread.is_alive():
                s.stop()


def test_on_postgresql_a_commit_wakes_the_pusher_at_once(mosquitto_broker: MosquittoBroker, pg_url: str,  # noqa: F811
                                                         tmp_path: Path) -> None:
    """LISTEN/NOTIFY: with polling every 30 s, a status change still reaches the kiosk within a second."""
    d = District(mosquitto_broker, pg_url, tmp_path, push_interval=30)
    try:
        book.import_rows(d.engine, rows(("S1", "centre-001", None)), "t")
        a = d.kiosk()
        a.wait(lambda k: "S1" in k.roster)
        time.sleep(0.5)
        for status in ("suspended", "active", "deceased"):
            _, v = book.set_status(d.engine, "S1", status, "t")
            assert a.wait(lambda k, v=v: k.version == v, timeout=5, what="the pushed change") < 1.0
        a.disconnect()
    finally:
        d.serve.stop()
