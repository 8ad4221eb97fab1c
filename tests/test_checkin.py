"""Manual check-in (edge/meals/checkin.py, `meal-edge checkin`): the kiosk's rules, store and outbox on a real
SQLite file; the event says check_in "manual" and who did it, and fits the published schema."""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path

import pytest
import test_confirm as confirm_tests
from test_confirm import EVENTS_SCHEMA, SH, _pin_file, _staff, at, write_config

from edge.cli.main import main as edge_main
from edge.config import Config, load_config
from edge.meals.checkin import manual_checkin
from edge.meals.rules import Senior
from edge.store import Store

cfg = confirm_tests.cfg
store = confirm_tests.store


def payload(store: Store) -> dict[str, object]:
    [ev] = store.pending()
    out = json.loads(ev.payload)
    assert isinstance(out, dict)
    return out


def test_a_manual_check_in_records_the_meal_the_kiosk_would(store: Store, cfg: Config) -> None:
    r = manual_checkin(store, cfg, "S0001", "  Li Na ", now=at("11:20"))
    assert (r.ok, r.kind, r.meal, r.subsidy_fen, r.payable_fen) == (True, "meal", "lunch", 300, 700)
    assert r.says == "Welcome Wang Fang: lunch, please pay ¥7.00 (¥3.00 subsidy applied)"
    p = payload(store)  # in the outbox for the daemon's publisher
    assert (p["check_in"], p["staff_id"], p["confirmed_by"], p["match"], p["seq"]) == ("manual", "Li Na", None, {}, 1)
    assert p["decided_at"] == "2026-11-30T11:20:00+08:00" and p["event_id"] == r.event_id
    EVENTS_SCHEMA.validate(p)
    # once per meal: the kiosk (or another member of staff) cannot pay it again
    again = manual_checkin(store, cfg, "S0001", "Zhang", now=at("11:40"))
    assert (again.ok, again.kind, again.event_id) == (True, "repeat", None) and len(store.list_events()) == 1
    # both are in the audit log under who did them; the meal's line names its event, never the senior's name
    lines = [(a.staff_id, a.action, a.target, a.details.get("outcome"), a.details.get("event_id"))
             for a in store.audit_log()]
    assert lines == [("Li Na", "checkin", "senior:S0001", "meal", r.event_id),
                     ("Zhang", "checkin", "senior:S0001", "repeat", None)]
    assert "Wang Fang" not in json.dumps([a.to_json() for a in store.audit_log()], ensure_ascii=False)


def test_the_rules_still_apply(store: Store, cfg: Config) -> None:
    assert manual_checkin(store, cfg, "S0001", "Li", now=at("09:00")).kind == "closed"
    store.add_senior(Senior("S0002", "Li Wei", date(1948, 5, 1), "xuhui", status="suspended"))
    assert manual_checkin(store, cfg, "S0002", "Li", now=at("11:20")).kind == "refused"
    store.add_senior(Senior("S0003", "Zhao Lei", date(1950, 1, 1), "minhang"))
    r = manual_checkin(store, cfg, "S0003", "Li", now=at("11:20"))
    assert (r.kind, r.subsidy_fen, r.payable_fen, r.reasons) == ("meal", 0, 1000, ("hukou_not_local",))
    assert r.says.endswith("(full price)")  # what the senior hears and sees carries no reason
    assert store.list_events()[0].senior_id == "S0003"


def test_refused_without_a_name_or_an_enrolled_senior(store: Store, cfg: Config) -> None:
    assert manual_checkin(store, cfg, "S0001", "  ", now=at("11:20")).kind == "no_name"
    assert manual_checkin(store, cfg, "S9999", "Li", now=at("11:20")).kind == "not_found"
    assert store.list_events() == [] and store.audit_log() == []


def test_the_command_finds_and_checks_in(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path, all_day=True)
    c = load_config(path)
    with Store(c.store_path) as s:
        s.add_senior(Senior("S0001", "王芳", date(1950, 2, 28), "xuhui"))
        s.add_senior(Senior("S0002", "汪峰", date(1950, 2, 28), "xuhui"))
        _staff(s)
    base = ["--config", str(path), "checkin"]
    pin = ["--pin-file", _pin_file(tmp_path, "482913")]
    assert edge_main([*base, "--find", "wf"]) == 0
    out = capsys.readouterr().out
    assert "S0001" in out and "S0002" in out and "2 found" in out
    # a staff id and its PIN: a wrong PIN or an unknown id records nothing (and the wrong PIN is audited)
    assert edge_main([*base, "S0001", "--by", "w01", "--pin-file", _pin_file(tmp_path, "000000")]) == 1
    assert "nothing changed" in capsys.readouterr().err
    assert edge_main([*base, "S0001", "--by", "李娜", *pin]) == 1
    capsys.readouterr()
    assert edge_main([*base, "S0001", "--by", "w01", *pin]) == 0
    out = capsys.readouterr().out
    assert "checked in by hand by w01" in out and "pays 7.00 yuan" in out
    assert edge_main([*base, "S0001", "--by", "w01", *pin]) == 0
    assert "no meal recorded" in capsys.readouterr().out
    assert edge_main([*base, "S0404", "--by", "w01", *pin]) == 1
    assert "no senior with id 'S0404'" in capsys.readouterr().err
    for bad in (["S0001"], [], ["S0001", "--by", " "], ["S0001", "--find", "x", "--by", "y"], ["S0001", "--pin", "1"]):
        with pytest.raises(SystemExit) as e:
            edge_main([*base, *bad])
        assert e.value.code == 2
    with Store(c.store_path) as s:
        [ev] = s.list_events()
        assert ev.local_date == datetime.now(SH).date() and json.loads(s.pending()[0].payload)["staff_id"] == "w01"
        got = [(a.staff_id, a.action, a.details.get("outcome")) for a in s.audit_log() if a.action != "staff_add"]
        assert got == [
            ("w01", "login_failed", None),
            ("?", "login_failed", None),  # not a staff id: not written as one
            ("w01", "checkin", "meal"),
            ("w01", "checkin", "repeat"),
        ]


def test_a_meal_card_number_finds_its_senior(store: Store, cfg: Config, capsys: pytest.CaptureFixture[str]) -> None:
    from edge.meals.search import Entry, search
    from edge.store import StoreError

    store.add_senior(Senior("S0002", "Li Wei", date(1948, 5, 1), "xuhui"))
    store.set_card_no("S0001", " C-1001 ")
    with pytest.raises(StoreError, match="meal card C-1001 is already senior S0001's"):
        store.set_card_no("S0002", "C-1001")
    assert store.roster() == [("S0001", "Wang Fang", "C-1001"), ("S0002", "Li Wei", None)]
    [found] = search([Entry(*r) for r in store.roster()], "c-1001")
    assert (found.entry.senior_id, found.how) == ("S0001", "card")
    store.set_card_no("S0001", None)  # the card was lost: no number until a new one is issued
    store.set_card_no("S0002", "C-1001")
    assert store.roster()[1] == ("S0002", "Li Wei", "C-1001")
    assert edge_main(["--config", str(cfg.source_path), "checkin", "--find", "C-1001"]) == 0
    assert "S0002" in capsys.readouterr().out
