"""Audit snapshots (edge/store/evidence.py): what is kept, where, for how long, and that a failure to keep one
never costs a meal. Real photo (Grace Hopper, from matplotlib's sample data, as the demo uses), real
detector, real files."""

from __future__ import annotations

import logging
from datetime import date, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest
import test_confirm as confirm_tests
from test_confirm import at, light_pipeline, n_events

from edge.cli.demo import hopper
from edge.config import Config, parse_config
from edge.meals.rules import Senior
from edge.recognition.decide import Verdict
from edge.recognition.detect import Detector
from edge.store import Store
from edge.store.evidence import MAX_SIDE, EvidenceKeeper, confirmation_name, crop

SH = at("11:45").tzinfo
cfg = confirm_tests.cfg  # the same fixtures: a config in tmp_path and a store with senior S0001
store = confirm_tests.store


def face_of(img: np.ndarray) -> tuple[int, int, int, int]:
    faces = Detector(detect_width=640).detect(img)
    assert len(faces) == 1
    return faces[0].box


def test_crop_keeps_one_face_width_around_the_face_and_stays_small() -> None:
    img = np.zeros((720, 1280, 3), np.uint8)
    out = crop(img, (300, 700, 400, 600))  # a 100 px face in the middle: 300 x 300 px kept
    assert out.shape == (300, 300, 3)
    out = crop(img, (0, 100, 100, 0))  # at the corner: clipped to the frame
    assert out.shape == (200, 200, 3)
    big = crop(img, (100, 900, 500, 500))  # a 400 px face: 1200 x 1200 clipped to 720 x 1280, scaled down
    assert max(big.shape[:2]) == MAX_SIDE
    with pytest.raises(ValueError, match="outside"):
        crop(img, (1000, 100, 1100, 0))


def test_saved_snapshot_shows_the_face_and_is_found_by_name(tmp_path: Path) -> None:
    img = hopper()
    keeper = EvidenceKeeper(tmp_path / "ev", retention_days=30)
    when = datetime(2026, 11, 30, 11, 45, tzinfo=SH)
    p = keeper.save("6f1c0c39-1b7e-4a43-9d54-3d4f6a1f2b11", img, face_of(img), when)
    assert p == tmp_path / "ev" / "2026-11-30" / "6f1c0c39-1b7e-4a43-9d54-3d4f6a1f2b11.jpg"
    snap = cv2.imread(str(p))[:, :, ::-1]
    assert max(snap.shape[:2]) <= MAX_SIDE
    assert len(Detector(detect_width=640, upsample=1).detect(np.ascontiguousarray(snap))) == 1  # an auditor sees her
    assert keeper.find("6f1c0c39-1b7e-4a43-9d54-3d4f6a1f2b11") == p
    assert keeper.find("no-such-event") is None and keeper.find("../etc/passwd") is None
    assert [x.name for x in p.parent.iterdir()] == [p.name]  # no temporary file left behind
    with pytest.raises(ValueError, match="not a snapshot name"):
        keeper.save("../x", img, face_of(img), when)


def test_purge_deletes_only_day_folders_past_retention(tmp_path: Path) -> None:
    ev = tmp_path / "ev"
    today = date(2026, 11, 30)
    for back in (0, 1, 6, 7, 30):
        d = ev / (today - timedelta(days=back)).isoformat()
        d.mkdir(parents=True)
        (d / "x.jpg").write_bytes(b"x")
    (ev / "notes").mkdir()
    (ev / "README.txt").write_text("kept")
    keeper = EvidenceKeeper(ev, retention_days=7)  # today and the 6 days before it
    assert keeper.purge(today) == 2
    assert sorted(p.name for p in ev.iterdir()) == ["2026-11-24", "2026-11-29", "2026-11-30", "README.txt", "notes"]
    assert keeper.purge(today) == 0  # once a day
    assert keeper.purge(today + timedelta(days=1)) == 1  # 2026-11-24 is now 7 days back


def test_a_meal_and_a_confirmation_are_kept_an_unknown_face_is_not(store: Store, cfg: Config) -> None:
    img = hopper()
    snap = (img, face_of(img))
    keeper = EvidenceKeeper(cfg.evidence_dir, cfg.evidence.retention_days)
    pipe = light_pipeline(cfg, store, evidence=keeper)
    meal = pipe.finalise(1, Verdict("accept", "S0001", 0.2, 0.2, 5), at("11:45"), 1.0, snapshot=snap)
    conf = pipe.finalise(2, Verdict("confirm", "S0001", 0.41, 0.03, 5, ("ambiguous_margin",)), at("11:46"), 2.0,
                          snapshot=snap)
    unknown = pipe.finalise(3, Verdict("unknown", None, 0.7, 0.0, 5, ("no_close_match",)), at("11:47"), 3.0,
                             snapshot=snap)
    assert (meal.kind, conf.kind, unknown.kind) == ("meal", "confirm", "unknown")
    assert meal.event_id is not None and conf.confirmation_id is not None
    day = cfg.evidence_dir / "2026-11-30"
    assert cfg.evidence_dir == cfg.store_path.parent / "evidence"  # the default: beside the store
    assert sorted(p.name for p in day.iterdir()) == sorted(
        [f"{meal.event_id}.jpg", f"{confirmation_name(conf.confirmation_id)}.jpg"]
    )


def test_a_snapshot_that_cannot_be_written_never_costs_the_meal(
    store: Store, cfg: Config, caplog: pytest.LogCaptureFixture
) -> None:
    img = hopper()
    snap = (img, face_of(img))
    blocked = cfg.store_path.parent / "evidence"
    blocked.write_text("a file where the folder should be")  # like a full disk: every write fails
    pipe = light_pipeline(cfg, store, evidence=EvidenceKeeper(blocked, 30))
    caplog.set_level(logging.WARNING, logger="edge.store.evidence")
    d1 = pipe.finalise(1, Verdict("accept", "S0001", 0.2, 0.2, 5), at("11:45"), 1.0, snapshot=snap)
    store.add_senior(Senior("S0002", "Li Lei", date(1950, 1, 1), "xuhui"))
    d2 = pipe.finalise(2, Verdict("accept", "S0002", 0.2, 0.2, 5), at("11:46"), 2.0, snapshot=snap)
    assert (d1.kind, d2.kind) == ("meal", "meal") and n_events(store) == 2
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "free disk space" in errors[0].getMessage()  # once, not once per meal
    blocked.unlink()
    store.add_senior(Senior("S0003", "Han Mei", date(1950, 1, 1), "xuhui"))
    d3 = pipe.finalise(3, Verdict("accept", "S0003", 0.2, 0.2, 5), at("11:47"), 3.0, snapshot=snap)
    assert (blocked / "2026-11-30" / f"{d3.event_id}.jpg").is_file()
    assert any("kept again" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


def test_evidence_config_paths(tmp_path: Path) -> None:
    base = '[centre]\nid = "c"\ndistrict = "d"\nkiosk_id = "k"\n[store]\npath = "state/s.sqlite"\n'
    c = parse_config(base, tmp_path / "meal-edge.toml")
    assert c.evidence.enabled and c.evidence.retention_days == 30
    assert c.evidence_dir == tmp_path / "state" / "evidence"
    c = parse_config(base + '[evidence]\ndir = "snaps"\nretention_days = 7\n', tmp_path / "meal-edge.toml")
    assert (c.evidence_dir, c.evidence.retention_days) == (tmp_path / "snaps", 7)
    with pytest.raises(ValueError, match="line 8"):
        parse_config(base + "[evidence]\nretention_days = 0\n", tmp_path / "meal-edge.toml")


def test_meal_edge_evidence_finds_a_meal_a_confirmation_and_a_staff_confirmed_meal(
    store: Store, cfg: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from edge.cli.main import main as edge_main
    from edge.meals.confirm import confirm

    img = hopper()
    snap = (img, face_of(img))
    pipe = light_pipeline(cfg, store, evidence=EvidenceKeeper(cfg.evidence_dir, cfg.evidence.retention_days))
    store.add_senior(Senior("S0002", "Li Lei", date(1950, 1, 1), "xuhui"))
    meal = pipe.finalise(1, Verdict("accept", "S0001", 0.2, 0.2, 5), at("11:45"), 1.0, snapshot=snap)
    conf = pipe.finalise(2, Verdict("confirm", "S0002", 0.41, 0.03, 5, ("ambiguous_margin",)), at("11:46"), 2.0,
                          snapshot=snap)
    assert conf.confirmation_id is not None
    r = confirm(store, cfg, conf.confirmation_id, True, "Zhang", now=at("11:50"))
    assert r.event_id is not None
    conf_snap = cfg.evidence_dir / "2026-11-30" / f"{confirmation_name(conf.confirmation_id)}.jpg"
    config = str(cfg.source_path)

    def evidence(*args: str) -> tuple[int, str, str]:
        rc = edge_main(["--config", config, "evidence", *args])
        out, err = capsys.readouterr()
        return rc, out.strip(), err

    assert evidence(str(meal.event_id)) == (0, str(cfg.evidence_dir / "2026-11-30" / f"{meal.event_id}.jpg"), "")
    assert evidence(str(conf.confirmation_id))[1] == str(conf_snap)
    assert evidence(r.event_id)[1] == str(conf_snap)  # the staff-confirmed meal: its confirmation's snapshot
    out_file = tmp_path / "copy.jpg"
    assert evidence(str(meal.event_id), "--out", str(out_file))[0] == 0
    assert out_file.read_bytes()[:2] == b"\xff\xd8"  # a JPEG
    rc, _, err = evidence("00000000-0000-4000-8000-000000000000")
    assert rc == 1 and "older than 30 days" in err
    # an audit sample: several at once into a folder, each named as asked for (the staff-confirmed meal by its
    # event_id too); the one that has none is named, the others are still copied
    rc, out, err = evidence(str(meal.event_id), "999", r.event_id, "--out", str(tmp_path / "sample"))
    assert rc == 1 and "'999'" in err and err.count("no audit snapshot") == 1
    copied = sorted(p.name for p in (tmp_path / "sample").iterdir())
    assert copied == sorted([f"{meal.event_id}.jpg", f"{r.event_id}.jpg"])
    assert (tmp_path / "sample" / f"{r.event_id}.jpg").read_bytes() == conf_snap.read_bytes()
    assert (tmp_path / "sample" / f"{meal.event_id}.jpg").read_bytes() == out_file.read_bytes()
