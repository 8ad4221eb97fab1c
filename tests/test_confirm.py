"""Staff confirmation of `confirm` decisions, on real SQLite files: the pipeline keeps a pending
confirmation, `meal-edge confirm` accepts it (the rules as of the kiosk's decision) or rejects it, once."""

from __future__ import annotations

import io
import json
import sqlite3
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from conftest import meal_event
from jsonschema import Draft202012Validator

from edge.app import Pipeline
from edge.cli.main import main as edge_main
from edge.config import DEFAULT_CONFIG, Config, load_config
from edge.delivery.events import MealEvent
from edge.meals.confirm import LIVENESS_NOT_CONFIRMED, confirm, needs_named_staff
from edge.meals.feedback import Decision
from edge.meals.rules import PriorMeal, Senior
from edge.recognition.decide import Policy, Verdict, tolerance_policy
from edge.recognition.detect import Face
from edge.recognition.liveness import LivenessVerdict
from edge.recognition.track import Observation, Track
from edge.security.staffauth import StaffAuth
from edge.store import Store, StoreError, TemplateIn, migrations
from edge.store.evidence import EvidenceKeeper

SH = ZoneInfo("Asia/Shanghai")
DAY = date(2026, 11, 30)
TOPIC = "meal/v1/xuhui/centre-001/kiosk-1/events"
EVENTS_SCHEMA = Draft202012Validator(
    json.loads((Path(__file__).resolve().parents[1] / "docs" / "events.schema.json").read_text(encoding="utf-8")),
    format_checker=Draft202012Validator.FORMAT_CHECKER,
)


def at(hhmm: str, day: date = DAY) -> datetime:
    h, m = map(int, hhmm.split(":"))
    return datetime(day.year, day.month, day.day, h, m, tzinfo=SH)


def write_config(tmp: Path, *, all_day: bool = False) -> Path:
    text = DEFAULT_CONFIG.replace('[store]\npath = ""', '[store]\npath = "state/meal-edge.sqlite"').replace(
        'language = "zh"', 'language = "en"'
    )
    if all_day:  # one window over the whole day, for the CLI test that runs on the wall clock
        text = text.replace('start = "10:30"', 'start = "00:00"').replace('end = "13:30"', 'end = "23:59"')
        text = text[: text.rindex("[[rules.meals]]")]  # no dinner
    p = tmp / "meal-edge.toml"
    p.write_text(text, encoding="utf-8")
    return p


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    return load_config(write_config(tmp_path))


@pytest.fixture
def store(cfg: Config) -> Iterator[Store]:
    s = Store(cfg.store_path)
    s.add_senior(Senior("S0001", "Wang Fang", date(1950, 2, 28), "xuhui"))
    yield s
    s.close()


def pending(
    store: Store,
    when: datetime,
    senior_id: str = "S0001",
    reasons: tuple[str, ...] = ("ambiguous_margin",),
    join_within: timedelta | None = None,
) -> int:
    """A pending card; by default a card of its own (the tests below that want a second attempt to join the
    first pass `join_within`)."""
    return store.add_confirmation(
        kiosk_id="kiosk-1",
        senior_id=senior_id,
        decided_at=when,
        local_date=when.astimezone(SH).date(),
        distance=0.4123456,
        margin=0.031,
        frames=5,
        reasons=reasons,
        join_within=join_within,
    )


#: what edge.app.Pipeline keeps when a suspected photo was otherwise a clear match
NOT_LIVE = ("liveness_not_confirmed", "planar_motion")


def lunch_event(senior_id: str = "S0001", subsidy: int = 300) -> MealEvent:
    return meal_event(
        senior_id=senior_id,
        local_date=DAY,
        decided_at=at("11:10"),
        subsidy_fen=subsidy,
        payable_fen=1000 - subsidy,
        reasons=("subsidised",) if subsidy else ("daily_subsidy_used",),
        match={"distance": 0.3, "frames": 3},
    )


def n_events(store: Store) -> int:
    return len(store.list_events())


# -- accept ----------------------------------------------------------------------------------------------


def test_accept_records_one_staff_confirmed_meal_with_the_subsidy(store: Store, cfg: Config) -> None:
    cid = pending(store, at("11:45"))
    assert [c.id for c in store.pending_confirmations()] == [cid]
    assert [c.id for c in store.pending_confirmations("kiosk-1")] == [cid]
    assert store.pending_confirmations("kiosk-2") == []

    r = confirm(store, cfg, cid, accept=True, by="Li Na", now=at("11:50"))
    assert r.ok and r.kind == "meal", r.message
    assert (r.meal, r.price_fen, r.subsidy_fen, r.payable_fen) == ("lunch", 1000, 300, 700)
    assert r.reasons == ("subsidised",) and r.seq == 1
    assert "please pay ¥7.00" in r.says

    [ev] = store.list_events()
    assert (ev.event_id, ev.senior_id, ev.meal) == (r.event_id, "S0001", "lunch")
    assert (ev.price_fen, ev.subsidy_fen, ev.payable_fen) == (1000, 300, 700)
    assert ev.confirmed_by == "staff" and ev.local_date == DAY
    [out] = store.pending()  # in the outbox: the daemon's publisher sends it on its next poll
    assert out.topic == TOPIC
    payload = json.loads(out.payload)
    EVENTS_SCHEMA.validate(payload)
    assert payload["confirmed_by"] == "staff"
    assert payload["decided_at"] == "2026-11-30T11:45:00+08:00"
    assert payload["match"] == {"distance": 0.4123, "margin": 0.031, "frames": 5, "confirmed": True}

    c = store.get_confirmation(cid)
    assert c is not None
    assert (c.state, c.resolved_by, c.event_id) == ("confirmed", "Li Na", r.event_id)
    assert c.resolved_at is not None and c.resolved_at.tzinfo is not None
    assert store.pending_confirmations() == []


def test_accept_later_in_the_day_pays_what_the_kiosk_would_have_paid(store: Store, cfg: Config) -> None:
    cid = pending(store, at("11:45"))  # lunch; staff only get to it during dinner
    r = confirm(store, cfg, cid, accept=True, by="Li Na", now=at("17:05"))
    assert r.ok and (r.kind, r.meal, r.subsidy_fen) == ("meal", "lunch", 300)
    assert store.list_events()[0].decided_at == at("11:45")


def test_second_meal_of_the_day_gets_no_second_subsidy(store: Store, cfg: Config) -> None:
    store.record_meal(lunch_event(), TOPIC)
    cid = pending(store, at("17:00"))
    r = confirm(store, cfg, cid, accept=True, by="Li Na", now=at("17:01"))
    assert r.ok and (r.kind, r.meal, r.subsidy_fen, r.payable_fen) == ("meal", "dinner", 0, 1000)
    assert r.reasons == ("daily_subsidy_used",)


def test_confirming_twice_is_refused_and_records_nothing_more(store: Store, cfg: Config) -> None:
    cid = pending(store, at("11:45"))
    assert confirm(store, cfg, cid, accept=True, by="Li Na", now=at("11:50")).ok
    again = confirm(store, cfg, cid, accept=True, by="Zhao Lei", now=at("11:51"))
    assert not again.ok and again.kind == "already_resolved"
    assert f"confirmation {cid} was already confirmed by Li Na" in again.message
    assert not confirm(store, cfg, cid, accept=False, by="Zhao Lei", now=at("11:51")).ok
    assert n_events(store) == 1 and store.last_seq("kiosk-1") == 1
    with pytest.raises(StoreError, match=f"confirmation {cid} was already confirmed by Li Na"):
        store.resolve_confirmation(cid, "rejected", "Zhao Lei")
    assert not confirm(store, cfg, 999, accept=True, by="Li Na", now=at("11:51")).ok


def test_the_meal_and_the_resolution_are_one_transaction(store: Store, cfg: Config) -> None:
    """Two staff at once: the one whose resolution loses records no meal either (and burns no seq)."""
    cid = pending(store, at("11:45"))
    store.resolve_confirmation(cid, "rejected", "Zhao Lei")
    with pytest.raises(StoreError, match=f"confirmation {cid} was already rejected by Zhao Lei"):
        store.record_confirmed_meal(cid, "Li Na", lunch_event(), TOPIC)
    assert n_events(store) == 0 and store.last_seq("kiosk-1") == 0


# -- no meal ---------------------------------------------------------------------------------------------


def test_reject_records_nothing(store: Store, cfg: Config) -> None:
    cid = pending(store, at("11:45"))
    r = confirm(store, cfg, cid, accept=False, by="Li Na", now=at("11:50"))
    assert r.ok and r.kind == "rejected" and r.event_id is None
    c = store.get_confirmation(cid)
    assert c is not None and (c.state, c.resolved_by, c.event_id) == ("rejected", "Li Na", None)
    assert n_events(store) == 0


def test_already_served_this_meal_is_a_repeat_without_event(store: Store, cfg: Config) -> None:
    store.record_meal(lunch_event(), TOPIC)  # served automatically at 11:10 (a later, clean presence)
    cid = pending(store, at("11:45"))
    r = confirm(store, cfg, cid, accept=True, by="Li Na", now=at("11:50"))
    assert r.ok and r.kind == "repeat" and r.event_id is None
    assert "Already checked in for this meal today" in r.message
    c = store.get_confirmation(cid)
    assert c is not None and (c.state, c.event_id) == ("confirmed", None)
    assert n_events(store) == 1


def test_kiosk_serving_the_senior_between_read_and_write_gives_a_repeat(
    store: Store, cfg: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race: staff confirm while the kiosk serves the same senior. The store refuses the second lunch
    inside its write transaction; confirm() re-reads and answers repeat. One event in all."""
    cid = pending(store, at("11:45"))
    real_meals_on = store.meals_on
    calls: list[str] = []

    def meals_on_then_kiosk_serves(senior_id: str, day: date) -> list[PriorMeal]:
        calls.append(senior_id)
        prior = real_meals_on(senior_id, day)
        if len(calls) == 1:
            store.record_meal(lunch_event(), TOPIC)  # the kiosk commits right after our read
        return prior

    monkeypatch.setattr(store, "meals_on", meals_on_then_kiosk_serves)
    r = confirm(store, cfg, cid, accept=True, by="Li Na", now=at("11:50"))
    assert r.ok and r.kind == "repeat" and r.event_id is None
    assert n_events(store) == 1 and len(calls) == 2
    c = store.get_confirmation(cid)
    assert c is not None and (c.state, c.event_id) == ("confirmed", None)


def test_suspended_senior_gets_no_meal(store: Store, cfg: Config) -> None:
    cid = pending(store, at("11:45"))
    store.set_status("S0001", "suspended")  # takes effect at once, also for confirmations
    r = confirm(store, cfg, cid, accept=True, by="Li Na", now=at("11:50"))
    assert r.ok and r.kind == "refused" and r.reasons == ("status_suspended",)
    assert "suspended" in r.message and n_events(store) == 0
    c = store.get_confirmation(cid)
    assert c is not None and c.state == "confirmed"


def test_outside_the_meal_windows_is_closed(store: Store, cfg: Config) -> None:
    cid = pending(store, at("15:00"))
    r = confirm(store, cfg, cid, accept=True, by="Li Na", now=at("15:01"))
    assert r.ok and r.kind == "closed" and n_events(store) == 0


def test_yesterdays_confirmation_cannot_be_accepted(store: Store, cfg: Config) -> None:
    cid = pending(store, at("11:45", DAY - timedelta(days=1)))
    r = confirm(store, cfg, cid, accept=True, by="Li Na", now=at("08:00"))
    assert not r.ok and r.kind == "not_today"
    assert "from 2026-11-29 (today is 2026-11-30)" in r.message and "back-dated" in r.message
    c = store.get_confirmation(cid)
    assert c is not None and c.state == "pending" and n_events(store) == 0
    # "today" is the centre's date: 00:30 in Shanghai is still 29 November in UTC, and not the same day
    assert not confirm(store, cfg, cid, accept=True, by="Li Na", now=at("00:30")).ok
    # it can still be rejected, to clear the list
    assert confirm(store, cfg, cid, accept=False, by="Li Na", now=at("08:00")).ok


def test_removed_senior_is_refused(store: Store, cfg: Config) -> None:
    cid = pending(store, at("11:45"))
    store.remove_senior("S0001")
    r = confirm(store, cfg, cid, accept=True, by="Li Na", now=at("11:50"))
    assert not r.ok and r.kind == "not_enrolled" and n_events(store) == 0


# -- liveness not confirmed: a named staff member must check -----------------------------------------------


def test_needs_named_staff_only_when_liveness_was_not_confirmed(store: Store) -> None:
    def needs(reasons: tuple[str, ...]) -> bool:
        c = store.get_confirmation(pending(store, at("11:45"), reasons=reasons))
        assert c is not None and c.reasons == reasons  # as stored and read back
        return needs_named_staff(c)

    assert LIVENESS_NOT_CONFIRMED == "liveness_not_confirmed"
    assert needs(NOT_LIVE) and needs(("liveness_not_confirmed",))
    assert needs(("not_close_enough", "liveness_not_confirmed", "too_still"))
    for other in ((), ("ambiguous_margin",), ("not_close_enough", "frames_disagree"), ("lookalike_margin",)):
        assert not needs(other), other


@dataclass
class _NotLive:
    """A liveness checker that saw a flat face (a photo held up to the camera)."""

    calls: int = 0

    def assess(self, frames: list[np.ndarray], faces: list[Face]) -> LivenessVerdict:
        self.calls += 1
        return LivenessVerdict(False, -2.0, ("planar_motion",))


def test_the_pipeline_keeps_a_suspected_photo_for_a_named_staff_member(store: Store, cfg: Config) -> None:
    """The reasons as the real Pipeline stores them (not typed in by the test) trigger the rule."""
    emb = np.random.default_rng(1).normal(size=128).astype(np.float32)
    store.add_templates("S0001", [TemplateIn(emb, "test-model", 0.9, "a.jpg")])
    checker = _NotLive()
    pipe = light_pipeline(cfg, store, liveness=checker)
    face = Face((10, 110, 110, 10), np.zeros((5, 2), np.float32), 1.0)
    track = Track(1, 0, 4, observations=[Observation(i, i / 10, face, emb.copy()) for i in range(5)])
    d = pipe.decide_track(track, None, final=True)  # type: ignore[arg-type]
    assert d is not None and d.kind == "confirm" and checker.calls == 1, d
    c = store.get_confirmation(d.confirmation_id or -1)
    assert c is not None and LIVENESS_NOT_CONFIRMED in c.reasons and "planar_motion" in c.reasons
    assert needs_named_staff(c)


def test_a_suspected_photo_is_accepted_only_when_the_staff_member_gave_their_pin_for_it(
    store: Store, cfg: Config
) -> None:
    """`staff_checked`: a logged-in screen alone (or any typed text) does not accept a suspected photo."""
    cid = pending(store, at("11:45"), reasons=NOT_LIVE)
    r = confirm(store, cfg, cid, accept=True, by="w01", now=at("11:50"))
    assert not r.ok and r.kind == "needs_staff_name" and r.event_id is None
    assert "a staff member must check the person and enter their own PIN" in r.message
    c = store.get_confirmation(cid)
    assert c is not None and (c.state, c.resolved_by) == ("pending", None)
    assert n_events(store) == 0 and store.pending() == [] and store.last_seq("kiosk-1") == 0
    assert store.audit_log() == []

    r = confirm(store, cfg, cid, accept=True, by=" w01 ", now=at("11:50"), staff_checked=True)
    assert r.ok and r.kind == "meal" and r.subsidy_fen == 300
    c = store.get_confirmation(cid)
    assert c is not None and (c.state, c.resolved_by, c.event_id) == ("confirmed", "w01", r.event_id)
    [ev] = store.list_events()
    assert ev.confirmed_by == "staff"  # the staff id stays in the store
    # the audit line, written in the same transaction as the meal
    [line] = store.audit_log()
    assert (line.staff_id, line.action, line.target) == ("w01", "confirm", f"confirmation:{cid}")
    assert line.details["event_id"] == r.event_id and line.details["staff_checked"] is True

    other = pending(store, at("11:46"), reasons=NOT_LIVE)
    r = confirm(store, cfg, other, accept=False, by="w01", now=at("11:50"))
    assert r.ok and r.kind == "rejected"  # rejecting needs no fresh PIN
    c = store.get_confirmation(other)
    assert c is not None and (c.state, c.resolved_by) == ("rejected", "w01")
    assert [(a.action, a.target) for a in store.audit_log()][-1] == ("reject", f"confirmation:{other}")


def test_a_blank_staff_id_is_refused(store: Store, cfg: Config) -> None:
    for reasons in (NOT_LIVE, ("ambiguous_margin",)):
        cid = pending(store, at("11:45"), reasons=reasons)
        for accept in (True, False):
            r = confirm(store, cfg, cid, accept=accept, by="  ", now=at("11:50"), staff_checked=True)
            assert not r.ok and r.kind == "no_name"
        c = store.get_confirmation(cid)
        assert c is not None and c.state == "pending"
    assert store.audit_log() == []


# -- schema v1 -> v2 -------------------------------------------------------------------------------------


def test_a_v1_store_is_migrated_and_keeps_its_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "v1.sqlite"
    with monkeypatch.context() as m:
        m.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:1])
        with Store(path) as s:
            assert s.schema_version == 1
    # the meal as a kiosk at schema 1 recorded it: today's store records it, the v1 columns are copied over
    # (today's code cannot write to a v1 file: its tables lack the newer columns)
    with Store(tmp_path / "now.sqlite") as now:
        stored = now.record_meal(lunch_event(), TOPIC)
    con = sqlite3.connect(path)
    with con:
        con.execute("ATTACH DATABASE ? AS now", (str(tmp_path / "now.sqlite"),))
        cols = ", ".join(f'"{r[1]}"' for r in con.execute("PRAGMA main.table_info(meal_events)"))
        con.execute(f"INSERT INTO main.meal_events ({cols}) SELECT {cols} FROM now.meal_events")
        for table in ("outbox", "kiosk_seq"):
            con.execute(f"INSERT INTO main.{table} SELECT * FROM now.{table}")
    con.execute("DETACH DATABASE now")
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    with con:  # a senior as the v1 schema had them (today's model has a meal-card column)
        con.execute(
            "INSERT INTO seniors (senior_id, name, birth_date, hukou, status, created_at, updated_at) "
            "VALUES ('S0001', 'Wang Fang', '1950-02-28', 'xuhui', 'active', '2026-11-30T00:00:00+00:00', "
            "'2026-11-30T00:00:00+00:00')"
        )
    con.close()
    assert "confirmations" not in tables

    with Store(path) as s:
        assert s.schema_version == len(migrations.MIGRATIONS)
        assert [v for v, _ in s.versions()] == [1, 2, 3, 4, 5, 6]
        assert s.get_senior("S0001") is not None
        assert [e.event_id for e in s.list_events()] == [stored.event_id]
        assert [e.payload for e in s.pending()] == [stored.payload]
        cid = pending(s, at("17:00"))
        assert [c.id for c in s.pending_confirmations()] == [cid]
    with Store(path) as s:  # reopening does not migrate again
        assert [v for v, _ in s.versions()] == [1, 2, 3, 4, 5, 6]


# -- the pipeline keeps confirm decisions ------------------------------------------------------------------


@dataclass
class _NoEmbedder:
    """finalise never embeds; the pipeline only needs the model's identity."""

    model_id: str = "test-model"
    name: str = "none"


def light_pipeline(
    cfg: Config,
    store: Store,
    *,
    policy: Policy | None = None,
    liveness: object = None,
    on_decision: Callable[[Decision], None] | None = None,
    evidence: EvidenceKeeper | None = None,
) -> Pipeline:
    """The real Pipeline (rules, store, decisions) at 11:45, with no detector and no network: tests hand it
    tracks and verdicts directly. Model "test-model"; face_recognition's single threshold unless `policy`."""
    return Pipeline(
        cfg,
        detector=None,  # type: ignore[arg-type]
        embedder=_NoEmbedder(),  # type: ignore[arg-type]
        store=store,
        policy=policy or tolerance_policy("test-model"),
        clock=lambda _f: at("11:45"),
        liveness=liveness,  # type: ignore[arg-type]
        on_decision=on_decision,
        evidence=evidence,
    )


def test_confirm_decision_is_kept_for_staff(store: Store, cfg: Config) -> None:
    seen: list[Decision] = []
    pipe = light_pipeline(cfg, store, on_decision=seen.append)
    v = Verdict("confirm", "S0001", 0.41, 0.03, 5, ("liveness_not_confirmed",), best_id="S0001")
    d = pipe.finalise(7, v, at("11:45"), 1.5)
    assert d.kind == "confirm" and d.confirmation_id is not None and seen == [d]
    j = d.to_json()
    assert j["confirmation_id"] == d.confirmation_id and j["name"] == "Wang Fang"
    [c] = store.pending_confirmations()
    assert (c.id, c.kiosk_id, c.senior_id, c.local_date, c.frames) == (d.confirmation_id, "kiosk-1", "S0001", DAY, 5)
    assert c.decided_at == at("11:45") and c.decided_at.utcoffset() == timedelta(hours=8)
    assert c.reasons == ("liveness_not_confirmed",) and c.distance == pytest.approx(0.41)
    assert n_events(store) == 0

    # other decisions keep none
    unknown = pipe.finalise(8, Verdict("unknown", None, 0.7, 0.0, 5, ("too_far",)), at("11:46"), 2.0)
    assert unknown.to_json()["confirmation_id"] is None
    accepted = pipe.finalise(9, Verdict("accept", "S0001", 0.2, 0.2, 5), at("11:47"), 3.0)
    assert accepted.kind == "meal" and accepted.confirmation_id is None
    assert len(store.pending_confirmations()) == 1

    # then staff confirm: the lunch was already served by the clean presence at 11:47
    r = confirm(store, cfg, c.id, accept=True, by="Li Na", now=at("11:50"), staff_checked=True)
    assert r.ok and r.kind == "repeat" and n_events(store) == 1


# -- the command -------------------------------------------------------------------------------------------


def _staff(s: Store, staff_id: str = "w01", pin: str = "482913") -> None:
    StaffAuth(s).add(staff_id, "Li Na", "staff", pin)


def _pin_file(tmp_path: Path, pin: str) -> str:
    p = tmp_path / f"pin-{pin}"
    p.write_text(pin + "\n", encoding="utf-8")
    return str(p)


def test_confirm_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path, all_day=True)
    cfg = load_config(path)
    today = datetime.now(SH).date()
    with Store(cfg.store_path) as s:
        s.add_senior(Senior("S0001", "Wang Fang", date(1950, 2, 28), "xuhui"))
        _staff(s)
        first = pending(s, at("12:00", today))
        second = pending(s, at("12:05", today))
        old = pending(s, at("12:00", today - timedelta(days=1)))
    c = ["--config", str(path), "confirm"]
    pin = ["--pin-file", _pin_file(tmp_path, "482913")]

    assert edge_main(c) == 0
    out = capsys.readouterr().out
    assert "Wang Fang" in out and "ambiguous_margin" in out and "3 pending" in out
    assert f"{today:%Y-%m-%d} 12:05" in out and "not today" in out

    assert edge_main([*c, str(first), "--yes", "--by", "w01", *pin]) == 0
    out = capsys.readouterr().out
    assert "confirmed by w01" in out and "pays 7.00 yuan (subsidy 3.00)" in out
    assert edge_main([*c, str(first), "--no", "--by", "w01", *pin]) == 1
    assert "already confirmed" in capsys.readouterr().err
    assert edge_main([*c, str(second), "--no", "--by", "w01", *pin]) == 0
    assert edge_main([*c, str(old), "--yes", "--by", "w01", *pin]) == 1
    assert "only today's" in capsys.readouterr().err
    for bad in ([str(old)], [str(old), "--yes"], [str(old), "--yes", "--no", "--by", "x"], ["--by", "x"]):
        with pytest.raises(SystemExit) as e:
            edge_main([*c, *bad])
        assert e.value.code == 2

    with Store(cfg.store_path) as s:
        assert [c.id for c in s.pending_confirmations()] == [old]
        [ev] = s.list_events()
        assert ev.confirmed_by == "staff" and ev.subsidy_fen == 300
        assert [(a.staff_id, a.action, a.target) for a in s.audit_log()] == [
            ("w01", "confirm", f"confirmation:{first}"),
            ("w01", "reject", f"confirmation:{second}"),
        ]


def test_confirm_command_needs_the_staff_members_pin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name is not enough: --by names a staff account and its PIN must follow (a file or standard input,
    never an argument). A wrong PIN changes nothing and is audited; the PIN never appears anywhere."""
    path = write_config(tmp_path, all_day=True)
    cfg = load_config(path)
    today = datetime.now(SH).date()
    with Store(cfg.store_path) as s:
        s.add_senior(Senior("S0001", "Wang Fang", date(1950, 2, 28), "xuhui"))
        _staff(s)
        cid = pending(s, at("12:00", today), reasons=NOT_LIVE)
    c = ["--config", str(path), "confirm"]

    assert edge_main(c) == 0
    out = capsys.readouterr().out
    assert "liveness_not_confirmed, planar_motion" in out
    assert "[maybe a photo or a phone screen: look at the person yourself before --yes]" in out

    for bad in ([str(cid), "--yes"], [str(cid), "--yes", "--by", "  "], [str(cid), "--yes", "--by", ""]):
        with pytest.raises(SystemExit) as e:
            edge_main([*c, *bad])
        assert e.value.code == 2
        assert "--by STAFF_ID" in capsys.readouterr().err
    # a wrong PIN, an unknown staff id, and a typed name that is no account: refused, nothing changed
    for by, pin in (("w01", "111111"), ("nobody", "482913"), ("Li Na", "482913")):
        assert edge_main([*c, str(cid), "--yes", "--by", by, "--pin-file", _pin_file(tmp_path, pin)]) == 1
        err = capsys.readouterr().err
        assert "unknown staff id or wrong PIN" in err and "nothing changed" in err and pin not in err
    with Store(cfg.store_path) as s:
        got = s.get_confirmation(cid)
        assert got is not None and got.state == "pending" and s.list_events() == []
        assert [(a.staff_id, a.action) for a in s.audit_log()] == [
            ("w01", "login_failed"), ("nobody", "login_failed"), ("?", "login_failed")
        ]
        assert "111111" not in str([a.to_json() for a in s.audit_log()])

    # the right PIN on standard input
    monkeypatch.setattr(sys, "stdin", io.StringIO("482913\n"))
    assert edge_main([*c, str(cid), "--yes", "--by", "w01", "--pin-file", "-"]) == 0
    assert "confirmed by w01" in capsys.readouterr().out
    with Store(cfg.store_path) as s:
        got = s.get_confirmation(cid)
        [ev] = s.list_events()
        assert got is not None and (got.state, got.resolved_by, got.event_id) == ("confirmed", "w01", ev.event_id)
        assert s.audit_log()[-1].details["staff_checked"] is True

    # `meal-edge audit` lists it all, as text and as JSON
    assert edge_main(["--config", str(path), "audit"]) == 0
    out = capsys.readouterr().out
    assert "w01" in out and "confirm" in out and f"confirmation:{cid}" in out and "4 line(s)" in out
    assert edge_main(["--config", str(path), "audit", "--json", "--last", "1"]) == 0
    [line] = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert (line["staff_id"], line["action"], line["details"]["event_id"]) == ("w01", "confirm", ev.event_id)
    assert "Wang Fang" not in json.dumps(line, ensure_ascii=False)


def test_confirm_command_without_the_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path)
    store_path = load_config(path).store_path
    for args in ([], ["1", "--yes", "--by", "Li Na"]):
        assert edge_main(["--config", str(path), "confirm", *args]) == 1
        err = capsys.readouterr().err
        assert err == f"error: store {store_path} not found (is this the daemon's config?)\n"
    assert not store_path.exists()  # never created


def test_a_second_attempt_joins_the_pending_card(store: Store) -> None:
    """One card per senior for staff: the same senior again within the window joins it (with any new
    reason, so a later liveness doubt still needs a named staff member); later, or once answered, a new one."""
    first = pending(store, at("11:10"), join_within=timedelta(minutes=10))
    again = pending(store, at("11:15"), reasons=NOT_LIVE, join_within=timedelta(minutes=10))
    assert again == first and len(store.pending_confirmations()) == 1
    c = store.get_confirmation(first)
    assert c is not None and c.reasons == ("ambiguous_margin", *NOT_LIVE) and needs_named_staff(c)
    assert c.decided_at == at("11:10")  # the rules stay as of the first attempt
    late = pending(store, at("11:26"), join_within=timedelta(minutes=10))
    assert late != first
    store.resolve_confirmation(late, "rejected", "Li")
    after = pending(store, at("11:27"), join_within=timedelta(minutes=10))
    assert after not in (first, late)  # the pending 11:10 card is 17 min earlier: too long ago to join
    store.add_senior(Senior("S0002", "Li Wei", date(1948, 5, 1), "xuhui"))
    assert pending(store, at("11:27"), senior_id="S0002", join_within=timedelta(minutes=10)) != after


def test_the_pipeline_makes_one_card_for_repeated_attempts(store: Store, cfg: Config) -> None:
    pipe = light_pipeline(cfg, store)
    verdict = Verdict("confirm", "S0001", 0.45, 0.02, 5, ("ambiguous_margin",))
    ids = {pipe.finalise(track, verdict, at("11:45"), 1.0).confirmation_id for track in (1, 2, 3)}
    assert len(ids) == 1 and len(store.pending_confirmations()) == 1
