"""The district roster in the database (SQLite and real PostgreSQL): import with bad rows, status changes,
removal and erasure receipts, scope, catch-up compaction, and versions handed out in commit order."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pytest
from district_support import DEFAULT_CONFIG, db_url  # noqa: F401
from roster_support import embedding
from sqlalchemy import Engine, select

from district.cli import main
from district.db.engine import open_engine
from district.db.models import Audit, RosterChange, RosterTemplate
from district.roster import book
from district.roster.csvfile import DistrictRow, parse_district_roster
from district.roster.csvfile import RosterError as CsvRosterError
from district.validate import KioskKey
from edge.delivery import rosterwire as rw
from edge.security.atrest import TemplateCipher

HEADER = "senior_id,name,birth_date,hukou,status,home_centre,card_no,centres\n"
TKEY = bytes(range(32))
CIPHER = TemplateCipher(bytes(range(32, 64)))
K1 = KioskKey("xuhui", "centre-001", "kiosk-1")
K2 = KioskKey("xuhui", "centre-002", "kiosk-1")


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:  # noqa: F811
    eng = open_engine(db_url)
    yield eng
    eng.dispose()


def row(sid: str, status: str = "active", home: str = "centre-001", centres: tuple[str, ...] | None = None,
        n: int = 2) -> DistrictRow:
    return DistrictRow(n, sid, f"name {sid}", date(1946, 3, 1), "本区", status, home, None, centres)


def upload(sid: str, kiosk: KioskKey = K1, model: str = "sface", seed: int = 1) -> rw.TemplateUpload:
    tid = rw.new_msg_id()
    t = rw.WireTemplate(template_id=tid, model_id=model, quality=0.8,
                        sealed=rw.seal_template(TKEY, sid, model, tid, embedding(seed)))
    return rw.TemplateUpload(msg_id=rw.new_msg_id(), district=kiosk.district, centre_id=kiosk.centre_id,
                             kiosk_id=kiosk.kiosk_id, sent_at=datetime.now(UTC), senior_id=sid, templates=[t])


def changes(engine: Engine, k: KioskKey, after: int = 0, model: str = "sface") -> list[rw.Change]:
    with engine.connect() as conn:
        return book.changes_since(conn, k.centre_id, model, after, book.max_version(conn), TKEY, CIPHER)


def test_import_reports_each_bad_row_and_loads_the_good_ones(db_url: str, tmp_path: Path,  # noqa: F811
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "d.toml"
    cfg.write_text(DEFAULT_CONFIG.replace('url = ""', f'url = "{db_url}"', 1))
    csv = tmp_path / "roster.csv"
    csv.write_text(HEADER +
                   "S1,王芳,1946-03-01,本区,active,centre-001,C1,\n"
                   "S2,李明,1950-13-01,本区,active,centre-001,,\n"          # bad date
                   "S3,张三,1950-01-01,本区,dead,centre-001,,\n"            # bad status
                   "S4,赵四,1950-01-01,本区,suspended,centre-002,,centre-002;centre-003\n"
                   "S5,钱五,1950-01-01,本区,active,centre-002,,centre-003\n"  # home centre left out
                   "S1,王芳,1946-03-01,本区,active,centre-001,,\n"          # id twice
                   "S6,孙六,1950-01-01,本区,active,,,\n", encoding="utf-8")  # no home centre
    assert main(["--config", str(cfg), "roster", "import", str(csv)]) == 1
    out, err = capsys.readouterr()
    assert "2 added, 0 updated, 0 unchanged, 5 rejected" in out
    for r, why in ((3, "bad birth date"), (4, "status 'dead'"), (6, "leaves out the home centre"),
                   (7, "already used in row 2"), (8, "empty home_centre")):
        assert f"row {r} " in out and why in out, (r, why)
    assert "[2/2] 100%" in err
    # again: nothing changes, no new versions; then one status change through the CLI
    assert main(["--config", str(cfg), "roster", "import", str(csv)]) == 1
    assert "0 added, 0 updated, 2 unchanged" in capsys.readouterr().out
    assert main(["--config", str(cfg), "roster", "set-status", "S4", "deceased"]) == 0
    assert "suspended -> deceased (roster version 3)" in capsys.readouterr().out
    assert main(["--config", str(cfg), "roster", "set-status", "S4", "deceased"]) == 0
    assert "already deceased" in capsys.readouterr().out
    assert main(["--config", str(cfg), "roster", "set-status", "S9", "active"]) == 2
    assert "no senior S9" in capsys.readouterr().err
    assert main(["--config", str(cfg), "roster", "show", "S4"]) == 0
    out = capsys.readouterr().out
    assert "deceased" in out and "eats at centre-002, centre-003" in out and "roster version 3" in out
    eng = open_engine(db_url)
    with eng.connect() as conn:
        assert [r.kind for r in conn.execute(select(RosterChange).order_by(RosterChange.version))] == [
            "import", "import", "status"]
        actions = [a for (a,) in conn.execute(select(Audit.action))]
    eng.dispose()
    assert actions.count("roster.import") == 2 and "roster.set-status" in actions and "roster.show" in actions


def test_the_csv_checks_are_the_enrolment_ones() -> None:
    rows, bad = parse_district_roster("senior_id,name,birth_date,hukou,status,home_centre\n"
                                      "S 1,王芳,1946-03-01,本区,active,centre-001\n"
                                      "S2,王芳,2999-03-01,本区,active,centre-001\n"
                                      "S3,王芳,1946-03-01,,active,centre-001\n")
    assert not rows
    assert ["contains a space" in bad[0].reason, "in the future" in bad[1].reason, "empty hukou" in bad[2].reason] \
        == [True, True, True]
    with pytest.raises(CsvRosterError, match="missing column"):
        parse_district_roster("senior_id,name,birth_date,hukou\n")


def test_templates_of_an_unknown_deceased_or_out_of_scope_senior_are_refused(engine: Engine) -> None:
    book.import_rows(engine, [row("S1"), row("S2", "deceased"), row("S3", home="centre-002",
                                                                     centres=("centre-002",))], "test")
    assert book.accept_upload(engine, K1, upload("S9"), TKEY, CIPHER).reason_code == "unknown_senior"
    assert book.accept_upload(engine, K1, upload("S2"), TKEY, CIPHER).reason_code == "deceased"
    assert book.accept_upload(engine, K1, upload("S3"), TKEY, CIPHER).reason_code == "not_in_scope"
    moved = upload("S1")
    moved = moved.model_copy(update={"senior_id": "S3"})  # sealed for S1, sent as S3's
    assert book.accept_upload(engine, K2, moved, TKEY, CIPHER).reason_code == "bad_template"
    up = upload("S1")
    ok = book.accept_upload(engine, K1, up, TKEY, CIPHER)
    assert ok.accepted and ok.version == 4 and ok.added == 1
    again = book.accept_upload(engine, K1, up, TKEY, CIPHER)  # a re-sent upload: same answer, nothing new
    assert again.accepted and again.version == 4 and again.added == 0
    with engine.connect() as conn:
        (blob,) = conn.execute(select(RosterTemplate.embedding)).one()
        assert embedding(1).tobytes() not in blob  # sealed at rest
        assert book.max_version(conn) == 4
    # what a kiosk of the same model receives opens to the embedding; another model gets no templates
    got = {c.senior_id: c for c in changes(engine, K1)}
    assert got["S1"].state is not None
    assert np.allclose(rw.open_template(TKEY, "S1", got["S1"].state.templates[0]), embedding(1))
    other = {c.senior_id: c for c in changes(engine, K1, model="arcface")}
    assert other["S1"].state is not None and other["S1"].state.templates == []


def test_scope_a_kiosk_outside_the_centres_never_receives_the_senior(engine: Engine) -> None:
    book.import_rows(engine, [row("S1"), row("S2", home="centre-002", centres=("centre-002",))], "test")
    assert {c.senior_id for c in changes(engine, K1)} == {"S1"}
    assert {c.senior_id for c in changes(engine, K2)} == {"S1", "S2"}
    with engine.connect() as conn:
        full = book.snapshot(conn, "centre-001", "sface", TKEY, CIPHER)[1]
    assert [c.senior_id for c in full] == ["S1"]
    start = book.import_rows(engine, [row("S2", status="suspended", home="centre-002", centres=("centre-002",))],
                             "test").first_version
    assert start is not None
    assert changes(engine, K1, after=start - 1) == []  # a change of S2 is not even named to centre-001
    # S1 leaves centre-001's scope: its kiosks get `absent` (out_of_scope), centre-002's the new state
    v = book.import_rows(engine, [row("S1", home="centre-002", centres=("centre-002",))], "test").first_version
    assert v is not None
    (c1,) = changes(engine, K1, after=v - 1)
    assert (c1.op, c1.why) == ("absent", "out_of_scope")
    (c2,) = changes(engine, K2, after=v - 1)
    assert c2.op == "state" and c2.state is not None and c2.state.centres == ["centre-002"]


def test_removal_erases_at_the_district_and_waits_for_each_kiosk_in_scope(engine: Engine) -> None:
    book.import_rows(engine, [row("S1"), row("S2", home="centre-002", centres=("centre-002",))], "test")
    book.accept_upload(engine, K1, upload("S1"), TKEY, CIPHER)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        for k in (K1, K2):
            book.kiosk_synced(conn, k, "sface", now)
    r = book.remove(engine, "S1", "test")
    assert r.templates_erased == 1 and sorted(r.kiosks) == [str(K1), str(K2)]
    with pytest.raises(book.RosterError, match="already removed"):
        book.remove(engine, "S1", "test")
    assert book.import_rows(engine, [row("S1")], "test").refused == 1
    with engine.connect() as conn:
        assert conn.execute(select(RosterTemplate)).all() == []
        assert {e["kiosk"] for e in book.pending_erasures(conn)} == {str(K1), str(K2)}
    (c,) = changes(engine, K1, after=r.version - 1)
    assert (c.senior_id, c.op, c.why) == ("S1", "absent", "removed")
    assert book.accept_upload(engine, K1, upload("S1"), TKEY, CIPHER).reason_code == "removed"
    rec = rw.Receipt(msg_id=rw.new_msg_id(), district="xuhui", centre_id="centre-001", kiosk_id="kiosk-1",
                     sent_at=now, version=r.version, model_id="sface", erased={"S1": 1})
    assert book.record_receipt(engine, K1, rec) == 1
    with engine.connect() as conn:
        assert [e["kiosk"] for e in book.pending_erasures(conn)] == [str(K2)]
        shown = book.show(conn, "S1")
    assert shown["removed"] and shown["templates"] == []
    assert {e["kiosk"]: e["templates_erased"] for e in shown["erasures"]} == {str(K1): 1, str(K2): None}


def test_a_catch_up_sends_each_senior_once_in_their_latest_state(engine: Engine) -> None:
    book.import_rows(engine, [row(f"S{i}") for i in range(10)], "test")
    for n in range(110):  # 11 rounds: suspended, active, ..., suspended
        assert book.set_status(engine, f"S{n % 10}", "suspended" if n // 10 % 2 == 0 else "active", "test")[1]
    book.remove(engine, "S9", "test")
    got = changes(engine, K1, after=10)
    assert [c.senior_id for c in got] == [f"S{i}" for i in range(10)]  # ordered by their latest version
    assert [c.version for c in got] == sorted(c.version for c in got)
    assert got[-1].op == "absent" and got[-1].why == "removed"
    assert all(c.state is not None and c.state.status == "suspended" for c in got[:-1])
    assert len(changes(engine, K1, after=0)) == 10


def test_versions_are_handed_out_in_commit_order_under_two_writers(db_url: str) -> None:  # noqa: F811
    """A reader never sees version N without every version below it (else a kiosk at N could miss one).
    PostgreSQL: the advisory lock; SQLite: the first write takes the write lock before the version is read."""
    engine = open_engine(db_url)
    try:
        book.import_rows(engine, [row("A"), row("B")], "test")
        errors: list[str] = []
        done = threading.Event()

        def writer(sid: str) -> None:
            for i in range(60):
                book.set_status(engine, sid, "suspended" if i % 2 == 0 else "active", "test")

        def reader() -> None:
            while not done.is_set():
                with engine.connect() as conn:
                    vs = [v for (v,) in conn.execute(select(RosterChange.version).order_by(RosterChange.version))]
                if vs != list(range(1, len(vs) + 1)):
                    errors.append(f"gap in {vs[-5:]}")

        threads = [threading.Thread(target=writer, args=(s,)) for s in ("A", "B")]
        r = threading.Thread(target=reader)
        r.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        done.set()
        r.join()
        assert not errors
        with engine.connect() as conn:
            assert book.max_version(conn) == 122
    finally:
        engine.dispose()


def test_the_import_says_which_file_problem_stops_it(tmp_path: Path) -> None:
    cfg = tmp_path / "d.toml"
    cfg.write_text(DEFAULT_CONFIG.replace('url = ""', f'url = "sqlite:///{tmp_path / "d.sqlite"}"', 1))
    out, err = io.StringIO(), io.StringIO()
    import contextlib

    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        assert main(["--config", str(cfg), "roster", "import", str(tmp_path / "nope.csv")]) == 2
    assert "roster file not found" in err.getvalue()


def test_keys_roster_init_makes_the_keys_once_and_serve_needs_them(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from district.roster.keys import load_keys

    cfg = tmp_path / "d.toml"
    text = DEFAULT_CONFIG.replace('url = ""', f'url = "sqlite:///{tmp_path / "d.sqlite"}"', 1).replace(
        "[roster]\nenabled = false", "[roster]\nenabled = true").replace(
        'signing_key_file = ""', 'signing_key_file = "keys/sign.key"').replace(
        'transport_key_file = ""', 'transport_key_file = "keys/transport.key"').replace(
        'template_key_file = ""', 'template_key_file = "keys/template.key"').replace(
        'listen = "127.0.0.1:9464"', 'listen = ""')
    cfg.write_text(text)
    assert main(["--config", str(cfg), "serve"]) == 2
    assert "[roster] enabled, but roster signing key" in capsys.readouterr().err
    assert main(["--config", str(cfg), "keys", "roster-init"]) == 0
    out = capsys.readouterr().out
    assert out.count("made ") == 3 and 'district_key = "' in out
    for f in ("sign.key", "transport.key", "template.key"):
        assert (tmp_path / "keys" / f).stat().st_mode & 0o077 == 0
    before = {f: (tmp_path / "keys" / f).read_bytes() for f in ("sign.key", "transport.key", "template.key")}
    assert main(["--config", str(cfg), "keys", "roster-init"]) == 0
    assert capsys.readouterr().out.count("kept ") == 3
    assert before == {f: (tmp_path / "keys" / f).read_bytes() for f in before}
    from district.config import load_config
    from edge.security.signing import public_key_text

    keys = load_keys(load_config(cfg))
    assert f'district_key = "{public_key_text(keys.signing.public_key())}"' in out
    assert before["transport.key"].decode().strip() not in out  # the secret is never printed
