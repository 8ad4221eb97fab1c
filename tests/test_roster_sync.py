"""Issue 13's joint acceptance: the real district (`meal-district serve` with the roster link, PostgreSQL)
and real kiosks (store, event publisher and roster link as `meal-edge run` wires them, tests/roster_kiosk.py)
over a real Mosquitto.

- enrol at kiosk A (meal-enroll, real LFW faces, real model), recognised at kiosk B (another store);
- a status change reaches an online kiosk within 5 s;
- a kiosk offline during 1,000 changes catches up to the same roster, compared row by row;
- a removal erases the templates on every kiosk (the store files scanned), and the receipts arrive;
- a template for an unknown senior is refused (and the kiosk says why);
- a kiosk outside a senior's centres never receives them.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from conftest import MosquittoBroker
from district_support import ServeThread, pg_url, wait_until  # noqa: F401
from roster_kiosk import Kiosk, kiosk_config, kiosk_key, start_kiosk
from roster_support import roster_config
from sqlalchemy import select

from district.db.models import RosterTemplate
from district.roster import book
from district.roster.csvfile import DistrictRow
from district.roster.keys import load_keys, transport_key_path
from district.store import register_kiosk
from edge.config import Config
from edge.security.signing import public_key_text
from edge.store import Store

SHARED = Path(os.environ.get("MEAL_EDGE_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
LFW = SHARED / "data" / "faces" / "lfw_deepfunneled"
M = "model-a"


def drow(sid: str, home: str = "centre-001", centres: tuple[str, ...] | None = None, status: str = "active",
         name: str | None = None) -> DistrictRow:
    return DistrictRow(2, sid, name or f"老人{sid}", date(1946, 3, 1), "徐汇", status, home, None, centres)


class World:
    """One district and its kiosks."""

    def __init__(self, broker: MosquittoBroker, db: str, tmp_path: Path) -> None:
        self.broker, self.tmp = broker, tmp_path
        self.cfg, _ = roster_config(broker, db, tmp_path / "district")
        self.keys = load_keys(self.cfg)
        self.serve = ServeThread(self.cfg)
        assert self.serve.server.roster is not None and self.serve.server.roster.connected.wait(10)
        self.engine = self.serve.engine
        self.kiosks: list[Kiosk] = []

    def kiosk_cfg(self, centre: str, kiosk: str = "kiosk-1") -> Config:
        cfg = kiosk_config(self.broker, self.tmp / f"{centre}-{kiosk}", public_key_text(self.keys.signing.public_key()),
                           transport_key_path(self.cfg), centre, kiosk)
        register_kiosk(self.engine, "xuhui", centre, kiosk, public_key_text(kiosk_key(cfg).public_key()), "test")
        return cfg

    def start(self, cfg: Config, model_id: str = M) -> Kiosk:
        k = start_kiosk(cfg, model_id)
        self.kiosks.append(k)
        return k

    def stop_kiosk(self, k: Kiosk) -> None:
        k.stop()
        self.kiosks.remove(k)

    def expected(self, centre: str, model_id: str = M) -> list[tuple[object, ...]]:
        """The district's roster as a kiosk of `centre` on `model_id` must hold it (Store.roster_rows)."""
        with self.engine.connect() as conn:
            tids: dict[str, list[str]] = {}
            for sid, tid in conn.execute(select(RosterTemplate.senior_id, RosterTemplate.template_id)
                                         .where(RosterTemplate.model_id == model_id)):
                tids.setdefault(sid, []).append(tid)
            out = []
            for sid in sorted(r[0] for r in conn.execute(select(book.RosterSenior.senior_id))):
                s = book.show(conn, sid)
                if s["removed"] or not book.in_scope(s["centres"], centre):
                    continue
                out.append((sid, s["name"], s["birth_date"], s["hukou"], s["status"], s["card_no"], s["home_centre"],
                            tuple(sorted(tids.get(sid, [])))))
        return out

    def close(self) -> None:
        for k in list(self.kiosks):
            self.stop_kiosk(k)
        self.serve.stop()


@pytest.fixture
def world(mosquitto_broker: MosquittoBroker, pg_url: str, tmp_path: Path) -> Iterator[World]:  # noqa: F811
    w = World(mosquitto_broker, pg_url, tmp_path)
    yield w
    w.close()


def until(cond: object, timeout: float, what: str) -> float:
    t0 = time.monotonic()
    wait_until(cond, timeout, what)  # type: ignore[arg-type]
    return time.monotonic() - t0


def store_files(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists())


def lfw(name: str, n: int) -> str:
    p = LFW / name / f"{name}_{n:04d}.jpg"
    if not p.exists():
        pytest.skip(f"LFW photos not found ({p}): put ../shared beside the checkout or set MEAL_EDGE_SHARED")
    return str(p)


@pytest.mark.slow
def test_enrolled_at_kiosk_a_recognised_at_kiosk_b(world: World) -> None:
    """Real LFW faces and the kiosk's real model: enrolled with meal-enroll at A, matched at B."""
    from edge.recognition.decide import Verdict, decide
    from edge.recognition.detect import load_image
    from edge.recognition.match import Gallery
    from enroll.cli import main as enroll_main
    from enroll.cli import make_enroller

    photos = [lfw("Aaron_Peirsol", 2), lfw("Aaron_Peirsol", 3)]
    probe_photo, stranger_photo = lfw("Aaron_Peirsol", 1), lfw("George_W_Bush", 1)
    book.import_rows(world.engine, [drow("S0001", centres=("centre-001", "centre-002"))], "test")
    a_cfg, b_cfg = world.kiosk_cfg("centre-001"), world.kiosk_cfg("centre-002")
    enroller_b = make_enroller(b_cfg, Store(b_cfg.store_path))
    model_id = enroller_b.embedder.model_id
    a, b = world.start(a_cfg, model_id), world.start(b_cfg, model_id)
    until(lambda: b.store.get_senior("S0001") is not None, 10, "kiosk B to receive the senior's record")
    assert b.store.templates(model_id) == []
    assert enroll_main(["--config", str(a_cfg.source_path), "add", "--senior-id", "S0001", "--name", "老人S0001",
                        "--birth-date", "1946-03-01", "--hukou", "徐汇", *photos]) == 0
    until(lambda: len(b.store.templates(model_id)) == 2, 20, "kiosk B to receive the templates made at A")
    assert [u.state for u in a.store.uploads("S0001")] == ["accepted"]
    gallery = Gallery.from_pairs(b.store.templates(model_id), model_id)

    policy = enroller_b.decision_policy  # kiosk B's own thresholds for its model (edge.recognition.decide)

    def probe(path: str) -> Verdict:
        rgb = load_image(path)
        _, faces = enroller_b.check_image(rgb)
        assert faces, f"no face found in {path}"
        emb = enroller_b.embedder.embed(enroller_b.embedder.chips(rgb, faces[:1]))
        return decide(gallery, emb, policy)

    v = probe(probe_photo)  # a photo kiosk A never saw
    assert (v.outcome, v.senior_id) == ("accept", "S0001"), v
    stranger = probe(stranger_photo)
    assert stranger.outcome == "unknown", stranger  # someone else is not taken for them


def test_a_status_change_reaches_an_online_kiosk_within_5_s(world: World) -> None:
    book.import_rows(world.engine, [drow("S1"), drow("S2")], "test")
    k = world.start(world.kiosk_cfg("centre-001"))
    until(lambda: k.store.roster_rows() == world.expected("centre-001"), 10, "the first sync")
    for status in ("deceased", "suspended", "active"):
        _, v = book.set_status(world.engine, "S2", status, "test")
        took = until(lambda s=status: (x := k.store.get_senior("S2")) is not None and x.status == s, 5,  # type: ignore[misc]
                     f"S2 {status} at the kiosk")
        assert took < 5 and k.store.roster_state().version == v


@pytest.mark.slow
def test_a_kiosk_offline_during_1000_changes_catches_up_row_by_row(world: World) -> None:
    book.import_rows(world.engine, [drow(f"S{i:03d}") for i in range(300)], "test")
    cfg = world.kiosk_cfg("centre-001")
    k = world.start(cfg)
    until(lambda: k.store.roster_state().version == 300, 30, "the first sync")
    world.stop_kiosk(k)
    statuses = ("suspended", "active", "deceased")
    for n in range(1000):
        sid = f"S{n % 300:03d}"
        if n % 100 == 99:
            book.import_rows(world.engine, [drow(sid, name=f"改名{n}")], "test")
        else:
            book.set_status(world.engine, sid, statuses[(n // 300) % 3], "test")
    book.remove(world.engine, "S010", "test")
    book.import_rows(world.engine, [drow("S011", home="centre-002", centres=("centre-002",))], "test")  # leaves
    with world.engine.connect() as conn:
        top = book.max_version(conn)
    assert top >= 300 + 1000
    k = world.start(cfg)
    took = until(lambda: k.store.roster_state().version == top, 60, "the catch-up")
    rows = k.store.roster_rows()
    assert rows == world.expected("centre-001")
    assert len(rows) == 298 and not {"S010", "S011"} & {r[0] for r in rows}
    assert k.store.roster_state().snapshot_to is None  # caught up incrementally, no full reload
    print(f"caught up 1,000+ changes in {took:.2f} s")


def test_a_removal_erases_every_kiosk_and_the_receipts_arrive(world: World) -> None:
    name = "独一无二的名字"
    book.import_rows(world.engine, [drow("S1", name=name), drow("S2")], "test")
    ks = [world.start(world.kiosk_cfg(c)) for c in ("centre-001", "centre-002")]
    for k in ks:
        until(lambda k=k: len(k.store.roster_rows()) == 2, 10, "the first sync")  # type: ignore[misc]
    # an enrolment at the first kiosk, sent to both
    from roster_support import embedding

    from edge.store import TemplateIn

    ks[0].store.add_templates("S1", [TemplateIn(embedding(1), M, 0.9, "enrol")],
                              upload=True)
    for k in ks:
        until(lambda k=k: len(k.store.templates(M)) == 1, 10, "the template at every kiosk")  # type: ignore[misc]
    before = [store_files(Path(k.cfg.store_path)) for k in ks]
    assert all(name.encode() in s for s in before)
    # each kiosk's template as it sits in its file (sealed under that kiosk's own at-rest key)
    sealed = []
    for k in ks:
        db = sqlite3.connect(k.cfg.store_path)
        try:
            (blob,) = db.execute("SELECT embedding FROM face_templates WHERE senior_id = 'S1'").fetchone()
        finally:
            db.close()
        assert bytes(blob) in store_files(Path(k.cfg.store_path))
        sealed.append(bytes(blob))
    r = book.remove(world.engine, "S1", "test")
    assert sorted(r.kiosks) == ["xuhui/centre-001/kiosk-1", "xuhui/centre-002/kiosk-1"]

    def confirmed() -> bool:
        with world.engine.connect() as conn:
            return book.pending_erasures(conn) == []

    until(confirmed, 10, "every kiosk's erasure receipt")
    for k in ks:
        assert k.store.get_senior("S1") is None and k.store.templates(M) == []
        raw = store_files(Path(k.cfg.store_path))
        assert name.encode() not in raw, "the removed senior's name is still in the store files"
        for blob in sealed:  # nor any 32-byte piece of a sealed template
            assert not any(blob[i : i + 32] in raw for i in range(0, len(blob) - 32, 32)), "a template is left"
    with world.engine.connect() as conn:
        shown = book.show(conn, "S1")
    assert {e["kiosk"]: e["templates_erased"] for e in shown["erasures"]} == {
        "xuhui/centre-001/kiosk-1": 1, "xuhui/centre-002/kiosk-1": 1}


def test_a_template_for_an_unknown_senior_is_refused_and_the_kiosk_says_why(world: World) -> None:
    from roster_support import embedding

    from edge.meals.rules import Senior
    from edge.store import TemplateIn

    k = world.start(world.kiosk_cfg("centre-001"))
    until(lambda: k.store.roster_state().last_sync_at is not None, 10, "the first sync")
    k.store.add_senior(Senior("S404", "外来", date(1946, 3, 1), "徐汇"))
    k.store.add_templates("S404", [TemplateIn(embedding(2), M, 0.9, "enrol")], upload=True)
    until(lambda: [u.state for u in k.store.uploads("S404")] == ["refused"], 10, "the refusal")
    (u,) = k.store.uploads("S404")
    assert u.reason_code == "unknown_senior" and "no senior with this id" in (u.reason or "")
    assert k.store.templates(M) == []  # the kiosk removed the refused templates
    with world.engine.connect() as conn:
        assert conn.execute(select(RosterTemplate)).all() == []


def test_a_kiosk_outside_a_seniors_centres_never_receives_them(world: World) -> None:
    book.import_rows(world.engine, [drow("S1", centres=("centre-001",)), drow("S2")], "test")
    inside, outside = world.start(world.kiosk_cfg("centre-001")), world.start(world.kiosk_cfg("centre-002"))
    until(lambda: len(inside.store.roster_rows()) == 2 and len(outside.store.roster_rows()) == 1, 10, "the syncs")
    for status in ("suspended", "deceased"):
        book.set_status(world.engine, "S1", status, "test")
    book.set_status(world.engine, "S2", "suspended", "test")
    until(lambda: outside.store.get_senior("S2").status == "suspended", 5, "S2's change")  # type: ignore[union-attr]
    until(lambda: inside.store.get_senior("S1").status == "deceased", 5, "S1's change")  # type: ignore[union-attr]
    assert [r[0] for r in outside.store.roster_rows()] == ["S2"]
    assert b"S1" not in store_files(Path(outside.cfg.store_path)).replace(b"S10", b"")
    assert outside.store.roster_rows() == world.expected("centre-002")
