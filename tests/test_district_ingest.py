"""What the district does with each payload, on real PostgreSQL and SQLite: stored once, copies counted,
conflicting copies kept aside, every kind of malformed payload quarantined with its reason; gaps; the
district-wide double subsidy; voids; and the settlement, equal to the events to the fen and byte-stable."""

from __future__ import annotations

import csv
import hashlib
import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from district_support import DISTRICT, PREFIX, db_url, payload, status_payload, topic  # noqa: F401
from sqlalchemy import Engine, func, select

from district import queries
from district.db.engine import open_engine
from district.db.models import Adjustment, Conflict, Quarantine
from district.db.models import Event as EventRow
from district.report import write_report
from district.store import BatchWriter, Incoming
from district.validate import Event, KioskKey, Rejected, classify
from district.watch import Watcher


@pytest.fixture
def engine(db_url: str) -> Engine:  # noqa: F811
    eng = open_engine(db_url)
    yield eng
    eng.dispose()


def incoming(items: list[tuple[str, bytes]], accept_unsigned: bool = True, max_bytes: int = 16384) -> list[Incoming]:
    now = datetime.now(UTC)
    return [Incoming(t, p, classify(t, p, prefix=PREFIX, district=DISTRICT, max_bytes=max_bytes,
                                    accept_unsigned=accept_unsigned), now) for t, p in items]


def ingest(engine: Engine, items: list[tuple[str, bytes]], **kw: Any) -> Any:
    res = BatchWriter(engine).write(incoming(items, **kw))
    w = Watcher(engine)
    w.check_kiosks(res.kiosks)
    w.reconcile(res.keys, res.voided)
    return res


def n(engine: Engine, model: type) -> int:
    with engine.connect() as c:
        return int(c.execute(select(func.count()).select_from(model)).scalar_one())


def test_duplicates_are_ignored_and_byte_different_copies_kept_as_conflicts(engine: Engine) -> None:
    p1, p2 = payload(1), payload(2)
    res = ingest(engine, [(topic(), p1), (topic(), p2), (topic(), p1)])  # a copy inside the batch
    assert (res.stored, res.duplicates, res.conflicts) == (2, 1, 0)
    res = ingest(engine, [(topic(), p1)])  # a copy in a later batch
    assert (res.stored, res.duplicates) == (0, 1)
    changed = json.loads(p2)
    changed["subsidy_fen"], changed["payable_fen"] = 0, 1000  # same event_id, different content
    other = json.dumps(changed, sort_keys=True, separators=(",", ":")).encode()
    for _ in range(2):
        res = ingest(engine, [(topic(), other)])
        assert (res.stored, res.conflicts) == (0, 1)
    with engine.connect() as c:
        [conf] = c.execute(select(Conflict)).all()
        stored = c.execute(select(EventRow.raw, EventRow.subsidy_fen).where(
            EventRow.event_id == changed["event_id"])).one()
    assert stored == (p2, 300), "the first copy stands, never overwritten"
    assert (conf.event_id, conf.copies, conf.raw) == (changed["event_id"], 2, other)
    assert conf.kept_sha256 == hashlib.sha256(p2).hexdigest()
    assert n(engine, EventRow) == 2


def _mutated(**changes: Any) -> bytes:
    obj = json.loads(payload(1))
    for k, v in changes.items():
        if v is _DROP:
            del obj[k]
        else:
            obj[k] = v
    return json.dumps(obj).encode()


_DROP = object()

MALFORMED: list[tuple[str, str, bytes, str]] = [
    ("not UTF-8", topic(), b'{"schema":"\xff"}', "not UTF-8"),
    ("not JSON", topic(), b'{"schema": ', "not JSON"),
    ("truncated", topic(), payload(1)[:-5], "not JSON"),
    ("NaN", topic(), payload(1).replace(b'"source_ts":null', b'"source_ts":NaN'), "not a number in JSON"),
    ("duplicate key", topic(), payload(1)[:-1] + b',"seq":2}', "duplicate key 'seq'"),
    ("array", topic(), b"[1,2]", "not a JSON object but a list"),
    ("deep nesting", topic(), b"[" * 8000 + b"]" * 8000, "not JSON: nested too deeply"),
    ("oversized", topic(), payload(1)[:-1] + b',"x":"' + b"a" * 20000 + b'"}', "oversized: "),
    ("unknown schema", topic(), _mutated(schema="meal-edge/meal-event/9"), "unknown event schema"),
    ("missing field", topic(), _mutated(senior_id=_DROP), "'senior_id' is a required property"),
    ("extra field", topic(), _mutated(photo="base64..."), "properties are not allowed ('photo' was unexpected)"),
    ("money as float", topic(), _mutated(subsidy_fen=300.0), "subsidy_fen must be written as an integer, not 300.0"),
    ("money as a string", topic(), _mutated(subsidy_fen="300"), "subsidy_fen: '300' is not of type 'integer'"),
    ("negative price", topic(), _mutated(price_fen=-1), "price_fen: -1 is less than the minimum of 0"),
    ("bad uuid", topic(), _mutated(event_id="42"), "event_id"),
    ("seq zero", topic(), _mutated(seq=0), "seq: 0 is less than the minimum of 1"),
    ("naive time", topic(), _mutated(decided_at="2026-11-30T11:45:00"), "decided_at"),
    ("no such date", topic(), _mutated(local_date="2026-02-30", decided_at="2026-02-30T11:45:00+08:00"),
     "local_date: '2026-02-30' is not a 'date'"),
    ("date mismatch", topic(), _mutated(local_date="2026-11-29"), "is not the date of decided_at"),
    ("money does not add up", topic(), _mutated(payable_fen=1), "payable_fen 1 != price_fen 1000 - subsidy_fen 300"),
    ("wrong kiosk in topic", topic(kiosk="kiosk-2"), payload(1), "kiosk_id 'kiosk-1' does not match the topic"),
    ("other district", f"{PREFIX}/other/centre-001/kiosk-1/events", payload(1), "belongs to district 'other'"),
    ("bad topic", f"{PREFIX}/{DISTRICT}/centre-001/events", payload(1), "is not meal/v1/<district>"),
    ("bad status", topic(leaf="status"), b'{"schema":"meal-edge/status/1","state":"sleeping"}', "status"),
    ("status of another kiosk", topic(leaf="status", kiosk="kiosk-2"), status_payload("online", "connected"),
     "another kiosk"),
]


@pytest.mark.parametrize(("case", "where", "body", "reason"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_every_kind_of_malformed_payload_is_rejected_with_its_reason(
        case: str, where: str, body: bytes, reason: str) -> None:
    [m] = incoming([(where, body)])
    assert isinstance(m.verdict, Rejected), case
    assert reason in m.verdict.reason, m.verdict.reason


def test_malformed_payloads_are_quarantined_size_capped_and_nothing_else_is_lost(engine: Engine) -> None:
    good = payload(1)
    batch = incoming([(where, body) for _, where, body, _ in MALFORMED] + [(topic(), good)])
    res = BatchWriter(engine, keep_bytes=1024).write(batch)
    assert (res.quarantined, res.stored) == (len(MALFORMED), 1)
    with engine.connect() as c:
        rows = {q.sha256: q for q in c.execute(select(Quarantine))}
    for m in batch[:-1]:
        assert isinstance(m.verdict, Rejected)
        q = rows[hashlib.sha256(m.payload).hexdigest()]  # traceable to the original bytes
        assert q.reason == m.verdict.reason[:400] and q.size == len(m.payload) and q.topic == m.topic
        assert q.raw == m.payload[:1024]  # size-capped


def test_unsigned_events_need_accept_unsigned(engine: Engine) -> None:
    [m] = incoming([(topic(), payload(1))], accept_unsigned=False)
    assert isinstance(m.verdict, Rejected) and "accept_unsigned" in m.verdict.reason


def test_a_signed_event_without_the_signing_module_or_key_is_quarantined_as_unverifiable(engine: Engine) -> None:
    obj = json.loads(payload(1))
    obj.update(schema="meal-edge/meal-event/2", check_in="face", staff_id=None, prev_hash="", sig="A" * 86 + "==")
    body = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    [m] = incoming([(topic(), body)], accept_unsigned=False)
    assert isinstance(m.verdict, Event) and m.verdict.signed
    res = BatchWriter(engine).write([m])
    assert (res.stored, res.quarantined) == (0, 1)
    assert res.quarantine_reasons[0].startswith("unverifiable:")


def test_gaps_open_and_close(engine: Engine) -> None:
    ingest(engine, [(topic(), payload(s)) for s in (1, 2, 5, 6, 9)])
    with engine.connect() as c:
        assert [(g["first_seq"], g["last_seq"]) for g in queries.open_gaps(c)] == [(3, 4), (7, 8)]
    ingest(engine, [(topic(), payload(4)), (topic(), payload(8))])  # partly filled
    with engine.connect() as c:
        assert [(g["first_seq"], g["last_seq"]) for g in queries.open_gaps(c)] == [(3, 3), (7, 7)]
    ingest(engine, [(topic(), payload(3)), (topic(), payload(7))])
    with engine.connect() as c:
        assert queries.open_gaps(c) == []
        [k] = queries.kiosk_health(c)
    assert (k.max_seq, k.open_gaps, k.missing_events) == (9, 0, 0)


def test_gaps_seen_from_a_fresh_watcher_and_the_reported_last_seq(engine: Engine) -> None:
    ingest(engine, [(topic(), payload(s)) for s in (2, 3)])
    ingest(engine, [(topic(leaf="status"), status_payload("online", "connected", backlog=2, last_seq=5))])
    Watcher(engine).check_kiosks([KioskKey(DISTRICT, "centre-001", "kiosk-1")])
    with engine.connect() as c:
        assert [(g["first_seq"], g["last_seq"]) for g in queries.open_gaps(c)] == [(1, 1), (4, 5)]


def test_double_subsidy_across_centres_earliest_stands(engine: Engine) -> None:
    # S0001 subsidised at centre-002 at 11:30 and at centre-001 at 11:45 Shanghai time, and at centre-003 in
    # another time zone at 04:40 UTC (12:40 Shanghai); S0002 once: not flagged.
    a = payload(1, "S0001", centre="centre-001", minute=45)
    b = payload(1, "S0001", centre="centre-002", minute=30)
    c = payload(1, "S0001", centre="centre-003", hour=4, minute=40,
                decided_at=datetime(2026, 11, 30, 4, 40, tzinfo=UTC))
    d = payload(2, "S0002", centre="centre-001")
    ingest(engine, [(topic("centre-001"), a), (topic("centre-001"), d)])
    with engine.connect() as conn:
        assert queries.flagged(conn) == []
    ingest(engine, [(topic("centre-002"), b), (topic("centre-003"), c)])
    with engine.connect() as conn:
        flags = {f["centre_id"]: f for f in queries.flagged(conn)}
    eid_b = json.loads(b)["event_id"]
    assert set(flags) == {"centre-001", "centre-003"}
    assert all(f["reason"] == "double_subsidy" and f["other_event_id"] == eid_b and f["amount_fen"] == 300
               for f in flags.values())
    assert n(engine, EventRow) == 4  # every event kept


def _void(original: bytes, seq: int) -> Incoming:
    """A v2 void, built without the signing module (signature checks are the verify seam's tests)."""
    o = json.loads(original)
    obj = {**o, "schema": "meal-edge/meal-event/2", "kind": "void", "voids": o["event_id"], "seq": seq,
           "event_id": "0f0e0d0c-0b0a-4900-8800-000000000001", "void_reason": "double_serving",
           "check_in": "manual", "staff_id": "staff-7", "prev_hash": ""}
    raw = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    ev = Event(obj, raw, hashlib.sha256(raw).hexdigest(), topic(), KioskKey(DISTRICT, "centre-001", "kiosk-1"), 2,
               date.fromisoformat(obj["local_date"]), datetime.fromisoformat(obj["decided_at"]))
    return Incoming(topic(), raw, ev, datetime.now(UTC))


def test_a_void_reverses_the_subsidy_and_lets_the_next_meal_stand(engine: Engine, tmp_path: Path) -> None:
    first = payload(1, "S0001", centre="centre-001", minute=0)
    second = payload(1, "S0001", centre="centre-002", minute=30)
    ingest(engine, [(topic("centre-001"), first), (topic("centre-002"), second)])
    with engine.connect() as c:
        assert [f["reason"] for f in queries.flagged(c)] == ["double_subsidy"]
    res = BatchWriter(engine).write([_void(first, 2)])
    Watcher(engine).reconcile(res.keys, res.voided)
    with engine.connect() as c:
        [flag] = queries.flagged(c)
    assert (flag["event_id"], flag["reason"]) == (json.loads(first)["event_id"], "voided")
    s = write_report(engine.connect(), "2026-11", tmp_path, DISTRICT)
    assert (s.totals["subsidy_fen"], s.totals["adjustment_fen"], s.totals["net_subsidy_fen"]) == (600, 300, 300)


def test_report_totals_equal_the_events_to_the_fen_and_rerun_gives_the_same_bytes(
        engine: Engine, tmp_path: Path) -> None:
    import random

    rng = random.Random(5)
    items = []
    seqs: dict[str, int] = {}
    for i in range(400):
        centre = f"centre-{rng.randrange(1, 5):03d}"
        seqs[centre] = seqs.get(centre, 0) + 1
        sub = rng.choice([300, 300, 0])
        items.append((topic(centre), payload(seqs[centre], f"S{rng.randrange(60):04d}", centre=centre,
                                             day=rng.randrange(1, 31), hour=rng.choice([11, 17]),
                                             minute=rng.randrange(60), subsidy=sub, price_fen=1000 + 50 * (i % 3),
                                             payable_fen=1000 + 50 * (i % 3) - sub,
                                             confirmed_by="staff" if i % 4 == 0 else None)))
    items.append((topic("centre-001"), payload(99, "S0001", day=1).replace(b"2026-11-01", b"2026-10-31")
                  .replace(b"2026-11-01T", b"2026-10-31T")))  # October: not in the report
    ingest(engine, items)
    events = [json.loads(p) for _, p in items if b'"local_date":"2026-11' in p]
    want_sub = sum(e["subsidy_fen"] for e in events)
    want_pay = sum(e["payable_fen"] for e in events)
    per_day: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for e in events:
        if e["subsidy_fen"]:
            per_day.setdefault((e["senior_id"], e["local_date"]), []).append(e)
    want_adj = sum(300 * (len(v) - 1) for v in per_day.values())

    out1, out2 = tmp_path / "a", tmp_path / "b"
    with engine.connect() as c:
        s = write_report(c, "2026-11", out1, DISTRICT)
    with engine.connect() as c:
        write_report(c, "2026-11", out2, DISTRICT)
    assert (s.totals["meals"], s.totals["subsidy_fen"], s.totals["payable_fen"]) == (len(events), want_sub, want_pay)
    assert s.totals["adjustment_fen"] == want_adj and s.totals["net_subsidy_fen"] == want_sub - want_adj
    with (out1 / "centres.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["centre_id", "meals", "subsidised_meals", "subsidy_fen", "payable_fen", "adjustments",
                             "adjustment_fen", "net_subsidy_fen"]
    assert sum(int(r["subsidy_fen"]) for r in rows) == want_sub
    assert sum(int(r["net_subsidy_fen"]) for r in rows) == want_sub - want_adj
    with (out1 / "seniors.csv").open() as f:
        assert sum(int(r["net_subsidy_fen"]) for r in csv.DictReader(f)) == want_sub - want_adj
    names = sorted(p.name for p in out1.iterdir())
    assert names == ["centres.csv", "check-in-method.png", "meals-per-day.png", "seniors.csv", "statement.txt",
                     "subsidy-per-centre.png", "summary.xlsx"]
    for name in names:
        assert (out1 / name).read_bytes() == (out2 / name).read_bytes(), f"{name} differs on a re-run"
    statement = (out1 / "statement.txt").read_text()
    assert f"net subsidy payable      {want_sub - want_adj} fen" in statement
    assert s.inputs_sha256 in statement
    staff = sum(1 for e in events if e["confirmed_by"] == "staff")
    assert f"staff-confirmed share    {100 * staff / len(events):.1f}% of meals" in statement
    from openpyxl import load_workbook

    ws = load_workbook(out1 / "summary.xlsx")["centres"]
    last = [c.value for c in ws[ws.max_row]]
    assert last[0] == "TOTAL" and last[3] == want_sub and last[7] == want_sub - want_adj


def test_report_of_an_empty_month_and_a_bad_month(engine: Engine, tmp_path: Path) -> None:
    with engine.connect() as c:
        s = write_report(c, "2026-12", tmp_path, DISTRICT)
        assert s.totals["meals"] == 0 and (tmp_path / "meals-per-day.png").stat().st_size > 0
        with pytest.raises(ValueError, match="is not YYYY-MM"):
            write_report(c, "2026-13", tmp_path, DISTRICT)


def test_adjustments_table_matches_the_report(engine: Engine, tmp_path: Path) -> None:
    items = [(topic(f"centre-00{c}"), payload(s, f"S{s % 3}", centre=f"centre-00{c}", minute=c * 5))
             for c in (1, 2, 3) for s in range(1, 7)]
    ingest(engine, items)
    with engine.connect() as c:
        table = {r.event_id: (r.reason, r.amount_fen) for r in c.execute(select(Adjustment))}
        s = write_report(c, "2026-11", tmp_path, DISTRICT)
    report = {ln["event_id"]: (ln["adjustment"], ln["adjustment_fen"]) for ln in s.lines if ln["adjustment"]}
    assert table == report and len(table) == 18 - 3
