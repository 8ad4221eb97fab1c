"""The kiosk side against the real district (`meal-district serve` with the roster link, real PostgreSQL), two
kiosks at once (store, event publisher, roster link as `meal-edge run` wires them) over a real Mosquitto:
the kiosk's rules end to end, beside the joint acceptance of tests/test_roster_sync.py.

- one scenario across two centres: scope, a local senior the district refuses (kept, without templates),
  a suspension at both kiosks within 5 s, a removal scanned out of both store files (name, card number);
- a catch-up after 1,000 changes that include scope moves (out_of_scope erasures) and card numbers.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator
from contextlib import redirect_stdout
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest
from conftest import MosquittoBroker
from district_support import DISTRICT, ServeThread, pg_url  # noqa: F401
from roster_kiosk import Kiosk, kiosk_config, kiosk_key, start_kiosk, wait_until
from roster_scripted import embedding
from roster_support import roster_config
from sqlalchemy import Engine, select

from district.cli import main as district_main
from district.db.models import RosterErasure, RosterSenior, RosterTemplate
from district.roster import book
from district.roster.keys import roster_init, transport_key_path
from district.store import register_kiosk
from edge.meals.rules import Senior
from edge.security.signing import public_key_text
from edge.store import TemplateIn

M = "model-a"
A = ("centre-001", "kiosk-1")
B = ("centre-002", "kiosk-1")
HEADER = "senior_id,name,birth_date,hukou,status,home_centre,card_no,centres\n"


@dataclass
class World:
    broker: MosquittoBroker
    cfg_path: Path
    serve: ServeThread
    district_key: str
    transport: Path
    tmp: Path

    @property
    def engine(self) -> Engine:
        return self.serve.engine

    def cli(self, *args: str) -> tuple[int, str]:
        buf = io.StringIO()
        with redirect_stdout(buf):
            rc = district_main(["--config", str(self.cfg_path), *args])
        return rc, buf.getvalue()

    def import_rows(self, lines: list[str]) -> None:
        csv = self.tmp / f"roster-{len(lines)}-{os.urandom(3).hex()}.csv"
        csv.write_text(HEADER + "".join(f"{ln}\n" for ln in lines), encoding="utf-8")
        rc, out = self.cli("roster", "import", str(csv))
        assert rc == 0, out

    def kiosks(self, *wheres: tuple[str, str], model_id: str = M, extra: Callable[[str], str] | None = None
               ) -> list[Kiosk]:
        """Kiosks registered at the district (`meal-district kiosk register`), then started."""
        cfgs = []
        for where in wheres:
            folder = self.tmp / f"{where[0]}-{where[1]}"
            cfg = kiosk_config(self.broker, folder, self.district_key, self.transport, *where,
                               extra=extra or (lambda t: t))
            register_kiosk(self.engine, DISTRICT, where[0], where[1], public_key_text(kiosk_key(cfg).public_key()),
                           actor="test")
            cfgs.append(cfg)
        return [start_kiosk(cfg, model_id) for cfg in cfgs]

    def version(self) -> int:
        with self.engine.connect() as c:
            return book.max_version(c)

    def expected_rows(self, centre: str, model_id: str = M) -> list[tuple[object, ...]]:
        """The district roster as a kiosk of `centre` must hold it, in the kiosk store's row format."""
        with self.engine.connect() as c:
            seniors = c.execute(select(RosterSenior).where(RosterSenior.removed.is_(False))).all()
            temps: dict[str, list[str]] = {}
            for sid, tid in c.execute(select(RosterTemplate.senior_id, RosterTemplate.template_id)
                                      .where(RosterTemplate.model_id == model_id)):
                temps.setdefault(sid, []).append(tid)
        out = []
        for s in sorted(seniors, key=lambda r: r.senior_id):
            if not book.in_scope(s.centres, centre):
                continue
            out.append((s.senior_id, s.name, s.birth_date.isoformat(), s.hukou, s.status, s.card_no, s.home_centre,
                        tuple(sorted(temps.get(s.senior_id, [])))))
        return out


@pytest.fixture
def world(mosquitto_broker: MosquittoBroker, pg_url: str, tmp_path: Path) -> Iterator[World]:  # noqa: F811
    cfg, path = roster_config(mosquitto_broker, pg_url, tmp_path, batch_changes=200)
    init = roster_init(cfg)
    serve = ServeThread(cfg)
    try:
        yield World(mosquitto_broker, path, serve, init.public_key, transport_key_path(cfg), tmp_path)
    finally:
        serve.stop()


def _files(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists())


def test_status_removal_refusal_and_scope_across_two_kiosks(world: World) -> None:
    world.import_rows([
        "S0001,张秀英,1946-03-01,xuhui,active,centre-001,C-55001,",
        "S0002,李明,1944-05-02,xuhui,active,centre-001,,centre-001",  # may eat only at centre-001
        "S0003,王芳,1945-07-03,xuhui,active,centre-002,,",
    ])
    a, b = world.kiosks(A, B)
    try:
        v = world.version()
        wait_until(lambda: a.store.roster_state().version == v and b.store.roster_state().version == v, 15,
                   "both kiosks at the district's version")
        assert a.store.roster_rows() == world.expected_rows("centre-001")
        assert b.store.roster_rows() == world.expected_rows("centre-002")
        assert b.store.get_senior("S0002") is None  # outside S0002's centres: never received
        # enrolled at A: S0001 (known) and S0009 (unknown to the district)
        a.store.add_templates("S0001", [TemplateIn(embedding(1), M, 0.9, "a.jpg"),
                                        TemplateIn(embedding(2), M, 0.9, "b.jpg")], upload=True)
        a.store.add_senior(Senior("S0009", "Stranger", date(1945, 1, 1), "xuhui"))
        a.store.add_templates("S0009", [TemplateIn(embedding(9), M, 0.9, "x.jpg")], upload=True)
        a.store.add_templates("S0002", [TemplateIn(embedding(3), M, 0.9, "c.jpg")], upload=True)
        wait_until(lambda: {u.senior_id: u.state for u in a.store.uploads()}
                   == {"S0001": "accepted", "S0009": "refused", "S0002": "accepted"}, 15, "the district's answers")
        (refused,) = a.store.uploads("S0009")
        assert refused.reason_code == "unknown_senior" and a.store.template_count("S0009") == 0
        # S0001's templates reach kiosk B (same model); S0002's never do
        wait_until(lambda: b.store.template_count("S0001") == 2, 10, "S0001's templates at kiosk B")
        v = world.version()
        # (kiosk B need not reach v: the last change, S0002's templates, is not in its scope)
        wait_until(lambda: a.store.roster_state().version == v, 10, "kiosk A at the district's version")
        assert b.store.get_senior("S0002") is None
        assert a.store.roster_rows() == [r for r in world.expected_rows("centre-001")] + [
            ("S0009", "Stranger", "1945-01-01", "xuhui", "active", None, None, ())]
        assert b.store.roster_rows() == world.expected_rows("centre-002")

        # a suspension reaches both online kiosks within 5 s
        rc, out = world.cli("roster", "set-status", "S0003", "suspended")
        assert rc == 0, out
        for k in (a, b):
            took = wait_until(lambda k=k: (s := k.store.get_senior("S0003")) is not None and s.status == "suspended",
                              5, "the suspension")
            assert took < 5

        # removal: erased on both kiosks, nothing left in the files, receipts arrive
        for k in (a, b):
            k.store._checkpoint_truncate()
            raw = _files(k.cfg.store_path)
            assert "张秀英".encode() in raw and b"C-55001" in raw  # the scan sees a senior who is there
        rc, out = world.cli("roster", "remove", "S0001", "--yes")
        assert rc == 0, out
        for k in (a, b):
            wait_until(lambda k=k: k.store.get_senior("S0001") is None, 5, "the removal")

        def confirmed() -> bool:
            with world.engine.connect() as c:
                rows = c.execute(select(RosterErasure.centre_id, RosterErasure.confirmed_at)
                                 .where(RosterErasure.senior_id == "S0001")).all()
            return len(rows) == 2 and all(t is not None for _, t in rows)

        wait_until(confirmed, 10, "both erasure receipts")
        rc, out = world.cli("roster", "erasures")
        assert rc == 0 and "S0001" not in out
        for k in (a, b):
            wait_until(lambda k=k: k.store.roster_state().erased_pending == {}, 5, "receipt acknowledged")
    finally:
        a.stop()
        b.stop()
    for k in (a, b):
        k.store.close()
        raw = _files(k.cfg.store_path)
        assert "张秀英".encode() not in raw and b"C-55001" not in raw, k.cfg.centre.id
        assert "王芳".encode() in raw


def test_a_kiosk_offline_during_1000_changes_catches_up_row_by_row(world: World) -> None:
    world.import_rows([f"S{i:04d},老人{i},1946-03-01,xuhui,active,centre-001,," for i in range(100)])
    (a,) = world.kiosks(A)
    try:
        wait_until(lambda: a.store.roster_state().version == world.version(), 15, "the first sync")
        a.store.add_templates("S0001", [TemplateIn(embedding(1), M, 0.9, "a.jpg")], upload=True)
        wait_until(lambda: [u.state for u in a.store.uploads()] == ["accepted"], 10, "the upload accepted")
    finally:
        a.stop()
    start = world.version()
    statuses = ("suspended", "active", "deceased")
    lines = []
    for i in range(100, 400):  # 300 new seniors (one import: 300 changes), some only at centre-002
        home = "centre-002" if i % 10 == 0 else "centre-001"
        lines.append(f"S{i:04d},老人{i},1946-03-01,xuhui,active,{home},C{i},{'centre-002' if i % 10 == 0 else ''}")
    world.import_rows(lines)
    # 20 seniors A had move to centre-002 only (out of A's scope), S0001 among them (A's own enrolment)
    world.import_rows([f"S{i:04d},老人{i},1946-03-01,xuhui,active,centre-002,,centre-002" for i in range(0, 40, 2)])
    i = 0
    removed: set[str] = set()
    while world.version() - start < 1000:  # status changes and removals, one version each
        sid = f"S{i % 400:04d}"
        i += 1
        if sid in removed:
            continue
        if i % 50 == 7:
            book.remove(world.engine, sid, actor="test")
            removed.add(sid)
        else:
            book.set_status(world.engine, sid, statuses[i % 3], actor="test")
    assert world.version() - start >= 1000
    a = start_kiosk(a.cfg, M, store=a.store)
    try:
        took = wait_until(lambda: a.store.roster_state().version == world.version(), 60, "the catch-up")
        assert a.store.roster_rows() == world.expected_rows("centre-001")
        print(f"catch-up of {world.version() - start} changes: {took:.2f} s")
    finally:
        a.stop()
        a.store.close()
