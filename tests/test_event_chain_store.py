"""Events are signed and chained by the store as they are recorded, with the kiosk's key from `meal-edge
keys init` (edge/store/signer.py, edge/cli/keys.py); the district's verifier accepts them."""

from __future__ import annotations

import json
import sqlite3
import stat
from pathlib import Path

import pytest
from conftest import meal_event

from edge.cli.main import main as edge_main
from edge.config import DEFAULT_CONFIG
from edge.security.signing import (
    ChainError,
    check_link,
    event_hash,
    public_key_from_text,
    verify_chain,
    verify_event,
)
from edge.store import Store, StoreError

TOPIC = "meal/v1/xuhui/centre-001/kiosk-1/events"


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / "meal-edge.toml"
    # the store (and the kiosk key beside it) in this test's folder, not in the session's state folder: a key
    # left there by one test would let another's `run` start for real
    text = DEFAULT_CONFIG.replace('[store]\npath = ""', '[store]\npath = "state/meal-edge.sqlite"', 1)
    assert text != DEFAULT_CONFIG
    path.write_text(text)
    return path


def keys(cfg: Path, action: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = edge_main(["--config", str(cfg), "keys", action])
    out, err = capsys.readouterr()
    return rc, out, err


def test_keys_init_show_and_events_verify_with_the_printed_key(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path)
    rc, _, err = keys(cfg, "show", capsys)
    assert rc == 1 and "keys init" in err
    rc, out, err = keys(cfg, "init", capsys)
    assert rc == 0 and "new signing key" in err
    key_file = tmp_path / "state" / "signing.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert "kiosk xuhui/centre-001/kiosk-1" in out
    text = out.split("register it with the district): ")[1].strip()
    assert len(text) == 44
    rc, out2, err = keys(cfg, "init", capsys)  # never replaced
    assert rc == 0 and "kept" in err and out2 == out
    rc, out3, _ = keys(cfg, "show", capsys)
    assert rc == 0 and out3 == out

    pub = public_key_from_text(text)
    with Store(tmp_path / "state" / "meal-edge.sqlite") as store:  # the store finds the kiosk's key beside it
        for i in range(3):
            store.record_meal(meal_event(senior_id=f"S{i:04d}"), TOPIC)
        events = [json.loads(e.payload) for e in store.pending()]
    assert [e["seq"] for e in events] == [1, 2, 3]
    for e in events:
        verify_event(e, pub)
    assert events[0]["prev_hash"] == "" and events[1]["prev_hash"] == event_hash(events[0])
    assert verify_chain(events, pub) == 3


def test_run_refuses_without_a_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path)
    assert edge_main(["--config", str(cfg), "run"]) == 1
    err = capsys.readouterr().err
    assert "no signing key" in err and "meal-edge keys init" in err
    assert not (tmp_path / "state" / "signing.key").exists()  # run never makes one by itself


def test_confirmed_meals_join_the_chain(tmp_path: Path) -> None:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    with Store(tmp_path / "s.sqlite") as store:
        store.record_meal(meal_event(senior_id="S0001"), TOPIC)
        at = datetime(2026, 11, 30, 11, 40, tzinfo=ZoneInfo("Asia/Shanghai"))
        cid = store.add_confirmation("kiosk-1", "S0002", at, at.date(), 0.4, 0.05, 3, ("small_margin",))
        store.record_confirmed_meal(cid, "w01", meal_event(senior_id="S0002", confirmed_by="staff"), TOPIC)
        store.record_meal(meal_event(senior_id="S0003"), TOPIC)
        events = [json.loads(e.payload) for e in store.pending()]
        pub = store.signer.key().public_key()
    assert [(e["seq"], e["check_in"]) for e in events] == [(1, "face"), (2, "face_confirmed"), (3, "face")]
    assert verify_chain(events, pub) == 3


def test_a_signing_failure_records_nothing(tmp_path: Path) -> None:
    (tmp_path / "signing.key").mkdir()  # not a key file: the first event cannot be signed
    with Store(tmp_path / "s.sqlite") as store:
        with pytest.raises(StoreError, match="not recorded"):
            store.record_meal(meal_event(), TOPIC)
        assert store.last_seq("kiosk-1") == 0 and store.pending_count() == 0  # no seq used, no row


def test_chain_starts_after_unsigned_version_1_events(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    with Store(db) as store:
        first = store.record_meal(meal_event(senior_id="S0001"), TOPIC)
    # as if seq 1 had been recorded by a kiosk before the upgrade: a version-1 payload
    v1 = {k: v for k, v in json.loads(first.payload).items() if k not in ("check_in", "staff_id", "prev_hash", "sig")}
    v1["schema"] = "meal-edge/meal-event/1"
    con = sqlite3.connect(db)
    with con:
        con.execute("UPDATE meal_events SET payload = ? WHERE seq = 1", (json.dumps(v1),))
    con.close()
    with Store(db) as store:
        second = json.loads(store.record_meal(meal_event(senior_id="S0002"), TOPIC).payload)
        pub = store.signer.key().public_key()
    assert second["seq"] == 2 and second["prev_hash"] == ""
    verify_event(second, pub)
    check_link(second, v1)
    with pytest.raises(ChainError):
        check_link({**second, "prev_hash": "ab" * 32}, v1)
