"""meal-enroll end to end: real dlib models on real LFW photos, a real SQLite store in tmp_path.

The CLI is driven through `enroll.cli.main([...])`; the enrolment service directly where a test is
about one decision (capacity, lookalike warning). Each photo costs ~0.1-0.3 s, so few are used.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import replace
from datetime import date
from pathlib import Path

import numpy as np
import pytest

from edge.meals.rules import Senior
from edge.recognition.decide import default_policy
from edge.recognition.detect import Detector
from edge.recognition.embed.dlib_backend import DlibEmbedder
from edge.store import Store
from enroll.cli import main
from enroll.output import display_width
from enroll.photochecks import EnrolPolicy
from enroll.service import CAPACITY, DISAGREES, DUPLICATE, SAME_PHOTO, Enroller

SHARED = Path(os.environ.get("MEAL_EDGE_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
LFW = SHARED / "data" / "faces" / "lfw_deepfunneled"
SAMPLES = SHARED / "data" / "samples"


def lfw(name: str, n: int) -> str:
    p = LFW / name / f"{name}_{n:04d}.jpg"
    if not p.exists():
        pytest.skip(f"../shared/data/faces/lfw_deepfunneled not found: {p} (set MEAL_EDGE_SHARED)")
    return str(p)


def write_config(tmp_path: Path, keep_photos: bool = False) -> str:
    p = tmp_path / "meal-edge.toml"
    p.write_text(
        "[centre]\n"
        'id = "c1"\n'
        'district = "徐汇"\n'
        'kiosk_id = "k1"\n'
        "[store]\n"
        'path = "state/meal.sqlite"\n'
        f"keep_photos = {'true' if keep_photos else 'false'}\n",
        encoding="utf-8",
    )
    return str(p)


@pytest.fixture
def cfg(tmp_path: Path) -> str:
    return write_config(tmp_path)


def db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "meal.sqlite"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


def add(
    cfg: str, sid: str, name: str, *photos: str, birth: str = "1940-05-01", extra: tuple[str, ...] = ()
) -> list[str]:
    return ["--config", cfg, "add", "--senior-id", sid, "--name", name, "--birth-date", birth,
            "--hukou", "徐汇", *extra, *photos]  # fmt: skip


# -- add / list / show / remove ----------------------------------------------------------------------


def test_add_list_show_remove_with_chinese_names(
    tmp_path: Path, cfg: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, _ = run(capsys, *add(cfg, "S001", "王芳", lfw("Wu_Yi", 1), lfw("Wu_Yi", 2), birth="1938-11-17"))
    assert rc == 0, out
    assert "S001 王芳: enrolled, 2 template(s) added" in out
    assert "Wu_Yi_0001.jpg: ok" in out and "Wu_Yi_0002.jpg: ok" in out

    rc, out, _ = run(capsys, "--config", cfg, "list")
    assert rc == 0
    lines = out.splitlines()
    assert lines[0].split() == ["id", "name", "birth", "date", "hukou", "status", "templates"]
    assert lines[1].split() == ["S001", "王芳", "1938-11-17", "徐汇", "active", "2"]
    # columns line up in a terminal even with double-width characters
    assert lines[0].index("birth date") == display_width(lines[1][: lines[1].index("1938-11-17")])

    rc, out, _ = run(capsys, "show", "S001", "--config", cfg)  # --config after the command works too
    assert rc == 0
    assert "王芳" in out and "templates      2" in out and "subsidy today  eligible" in out
    assert "from Wu_Yi_0001.jpg" in out

    with Store(db(tmp_path)) as st:
        blobs = [e.astype("<f4").tobytes() for _, e in st.templates()]
    assert len(blobs) == 2

    rc, out, _ = run(capsys, "--config", cfg, "remove", "S001", "--yes")
    assert rc == 0
    assert out.strip() == "removed S001 王芳: 2 templates erased"
    with Store(db(tmp_path)) as st:
        assert st.templates() == [] and st.get_senior("S001") is None and st.template_count("S001") == 0
    # erased for good: the embedding bytes are in neither the database file nor its WAL
    for f in (db(tmp_path), db(tmp_path).with_name("meal.sqlite-wal")):
        if f.exists():
            raw = f.read_bytes()
            assert not any(b in raw for b in blobs), f
    con = sqlite3.connect(db(tmp_path))
    assert con.execute("select count(*) from face_templates").fetchone() == (0,)
    con.close()

    rc, out, _ = run(capsys, "--config", cfg, "list")
    assert rc == 0 and "no seniors enrolled" in out


def test_duplicate_is_refused_naming_the_other_senior_unless_forced(
    tmp_path: Path, cfg: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, *add(cfg, "S001", "王芳", lfw("Wu_Yi", 1), lfw("Wu_Yi", 2)))[0] == 0

    rc, out, _ = run(capsys, *add(cfg, "S002", "李明", lfw("Wu_Yi", 3)))
    assert rc == 1
    assert "S002 李明: NOT enrolled" in out
    assert "matches already enrolled senior S001 王芳" in out and "--force" in out
    with Store(db(tmp_path)) as st:
        assert st.get_senior("S002") is None and st.template_count("S002") == 0

    rc, out, _ = run(capsys, *add(cfg, "S002", "李明", lfw("Wu_Yi", 3), extra=("--force",)))
    assert rc == 0, out
    assert "S002 李明: enrolled, 1 template(s) added" in out
    assert "warning: enrolled despite looking like S001 王芳" in out
    with Store(db(tmp_path)) as st:
        assert st.template_count("S002") == 1


def test_a_different_persons_photo_among_a_seniors_photos_is_refused(
    tmp_path: Path, cfg: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, _ = run(
        capsys,
        *add(cfg, "S003", "朱明", lfw("Zhu_Rongji", 2), lfw("Zhu_Rongji", 1), lfw("Kelly_Clarkson", 1)),
    )
    assert rc == 1
    assert "S003 朱明: enrolled, 2 template(s) added" in out
    assert "Kelly_Clarkson_0001.jpg: rejected: does not look like the same person as the other photos" in out

    # two photos of two people: no way to tell which is the senior, so neither is kept
    rc, out, _ = run(capsys, *add(cfg, "S004", "赵丽", lfw("John_Mayer", 1), lfw("Kelly_Clarkson", 3)))
    assert rc == 1 and "S004 赵丽: NOT enrolled" in out
    assert out.count("do not agree on one person") == 2
    with Store(db(tmp_path)) as st:
        assert st.get_senior("S004") is None
        assert st.template_count("S003") == 2

    # more photos for an enrolled senior must show the same person as their templates
    rc, out, _ = run(capsys, *add(cfg, "S003", "朱明", lfw("John_Mayer", 1)))
    assert rc == 1 and "does not look like S003 as already enrolled" in out


def test_bad_photos_are_reported_and_nothing_is_stored(
    tmp_path: Path, cfg: str, capsys: pytest.CaptureFixture[str]
) -> None:
    notes = tmp_path / "scan.jpg"
    notes.write_text("this is not a photo", encoding="utf-8")
    two = SAMPLES / "two_people.jpg"
    if not two.exists():
        pytest.skip(f"../shared/data/samples not found: {two}")
    rc, out, _ = run(capsys, *add(cfg, "S005", "孙强", str(notes), str(two), str(tmp_path / "missing.jpg")))
    assert rc == 1
    assert "scan.jpg: rejected: not a readable image" in out
    assert "two_people.jpg: rejected: 2 faces in photo: photograph one person at a time" in out
    assert "missing.jpg: rejected: " in out and "file not found" in out
    with Store(db(tmp_path)) as st:
        assert st.list_seniors() == []


def test_existing_id_with_other_details_is_refused(
    tmp_path: Path, cfg: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, *add(cfg, "S001", "王芳", lfw("Wu_Yi", 1)))[0] == 0
    rc, out, _ = run(capsys, *add(cfg, "S001", "王芳芳", lfw("Wu_Yi", 2)))
    assert rc == 1 and "S001 is already enrolled as 王芳" in out
    # the same photo again for the same senior is skipped, not stored twice
    rc, out, _ = run(capsys, *add(cfg, "S001", "王芳", lfw("Wu_Yi", 1)))
    assert (
        rc == 0
        and "skipped: the same photo is already enrolled" in out
        and "unchanged (1 template(s))" in out
    )


# -- import ------------------------------------------------------------------------------------------


def test_import_roster_reports_rows_and_enrols_the_rest(
    tmp_path: Path, cfg: str, capsys: pytest.CaptureFixture[str]
) -> None:
    lfw("Wu_Yi", 1)
    roster = tmp_path / "名单.csv"
    roster.write_bytes(
        b"\xef\xbb\xbf"
        + (
            "senior_id,name,birth_date,hukou,photos,card_no\n"  # card_no: the optional meal-card column
            "S1,吴仪,1938-11-17,徐汇,Wu_Yi/Wu_Yi_0001.jpg;Wu_Yi/Wu_Yi_0002.jpg,C1\n"  # 2 ok
            "S2,李明,1948-02-30,徐汇,Zhu_Rongji/Zhu_Rongji_0004.jpg,\n"  # 3 bad date
            "S3,朱明,1940-01-01,徐汇,Zhu_Rongji/Zhu_Rongji_0002.jpg;nobody.jpg,\n"  # 4 one photo missing
            ",无名,1940-01-01,徐汇,x.jpg,\n"  # 5 empty id
            "S1,吴仪,1938-11-17,徐汇,Wu_Yi/Wu_Yi_0003.jpg,\n"  # 6 duplicate id in the file
            "S4,凯莉,1941-04-24,徐汇,Kelly_Clarkson/Kelly_Clarkson_0001.jpg,C4\n"  # 7 ok
            "S5,吴丽,1939-01-01,徐汇,Wu_Yi/Wu_Yi_0003.jpg,C5\n"  # 8 the face of S1 again
        ).encode()
    )
    rc, out, err = run(capsys, "--config", cfg, "import", str(roster), "--photos", str(LFW))
    assert rc == 1
    # progress on stderr, one plain line per row (stderr is not a terminal here)
    assert "[1/4]  25% row 2 S1 吴仪 ok" in err
    assert "[4/4] 100% row 8 S5 吴丽 REJECTED" in err
    assert "row 3: rejected: bad birth date '1948-02-30'" in err
    assert "\r" not in err
    # the report on stdout: every problem with its row number and reason
    assert "rejected: row 3 S2: bad birth date '1948-02-30': write it as YYYY-MM-DD" in out
    assert "rejected: row 5: empty senior_id" in out
    assert "rejected: row 6 S1: senior id S1 already used in row 2" in out
    assert "rejected: row 4 S3 朱明: nobody.jpg: file not found (" in out
    assert "rejected: row 8 S5 吴丽: " in out and "matches already enrolled senior S1 吴仪" in out
    assert (
        "名单.csv: 3 enrolled (4 templates), 4 rejected, 0 warning(s); 1 enrolled with some photos rejected"
        in out
    )
    with Store(db(tmp_path)) as st:
        assert {s.senior_id: n for s, n in st.list_seniors()} == {"S1": 2, "S3": 1, "S4": 1}
        assert {sid: card for sid, _name, card in st.roster()} == {"S1": "C1", "S3": None, "S4": "C4"}

    # running the same file again stores nothing twice; enrolled seniors are left alone without --update
    rc, out, _ = run(capsys, "--config", cfg, "import", str(roster), "--photos", str(LFW))
    assert rc == 1
    assert "3 already enrolled, unchanged (--update adds photos)" in out
    rc, out, _ = run(capsys, "--config", cfg, "import", str(roster), "--photos", str(LFW), "--update")
    assert rc == 1
    assert "2 already enrolled, unchanged" in out
    with Store(db(tmp_path)) as st:
        assert {s.senior_id: n for s, n in st.list_seniors()} == {"S1": 2, "S3": 1, "S4": 1}


def test_import_file_errors_are_usage_errors(
    tmp_path: Path, cfg: str, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "r.csv"
    bad.write_text("id,name,born,hukou,photos\nS1,a,1940-01-01,x,p.jpg\n", encoding="utf-8")
    rc, _, err = run(capsys, "--config", cfg, "import", str(bad))
    assert rc == 2 and "row 1 (header)" in err and "senior_id,name,birth_date,hukou,photos" in err
    rc, _, err = run(capsys, "--config", cfg, "import", str(tmp_path / "none.csv"))
    assert rc == 2 and "roster file not found" in err
    rc, _, err = run(capsys, "--config", cfg, "import", str(bad), "--photos", str(tmp_path / "nodir"))
    assert rc == 2 and "no such folder" in err


# -- status, usage and config errors --------------------------------------------------------------------


def test_set_status_and_unknown_ids(tmp_path: Path, cfg: str, capsys: pytest.CaptureFixture[str]) -> None:
    with Store(db(tmp_path)) as st:  # no photo needed to test the bookkeeping commands
        st.add_senior(Senior("S7", "周敏", date(1944, 2, 29), "徐汇"))
    rc, out, _ = run(capsys, "--config", cfg, "set-status", "S7", "suspended")
    assert rc == 0 and "S7: status suspended" in out
    rc, out, _ = run(capsys, "--config", cfg, "list", "--status", "suspended")
    assert rc == 0 and "S7" in out and "suspended" in out
    rc, out, _ = run(capsys, "--config", cfg, "show", "S7")
    assert rc == 0 and "not eligible: status suspended" in out
    for cmd in (["set-status", "S9", "active"], ["show", "S9"], ["remove", "S9"]):
        rc, out, _ = run(capsys, "--config", cfg, *cmd)
        assert rc == 1 and "S9" in out, cmd
    rc, _, err = run(capsys, "--config", cfg, "set-status", "S7", "gone")
    assert rc == 2 and "invalid choice: 'gone'" in err


def test_usage_and_config_errors_exit_2(
    tmp_path: Path, cfg: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MEAL_EDGE_CONFIG", raising=False)
    rc, _, err = run(capsys, "list")
    assert rc == 2 and "no config: give --config FILE" in err
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[centre]\nid = "c"\ndistrict = "d"\nkiosk_id = "k"\n[store]\npaht = "x"\n', encoding="utf-8"
    )
    rc, _, err = run(capsys, "--config", str(bad), "list")
    assert rc == 2 and "line 6: store.paht: unknown key" in err
    rc, _, err = run(capsys, "--config", str(tmp_path / "none.toml"), "list")
    assert rc == 2 and "config file not found" in err
    rc, _, err = run(capsys, *add(cfg, "S1", "王芳", *(["p.jpg"] * 6)))
    assert rc == 2 and "6 photos given, at most 5" in err
    rc, _, err = run(capsys, *add(cfg, "S1", "王芳", "p.jpg", birth="1948/03/15"))
    assert rc == 2 and "write it as YYYY-MM-DD" in err
    rc, _, err = run(capsys, "--config", cfg, "add", "--name", "x", "p.jpg")
    assert rc == 2 and "--senior-id" in err
    rc, _, err = run(capsys, "--config", cfg, "frobnicate")
    assert rc == 2 and "invalid choice" in err
    monkeypatch.setenv("MEAL_EDGE_CONFIG", cfg)
    assert run(capsys, "list")[0] == 0


def test_photos_are_kept_only_when_the_config_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    off, on = tmp_path / "off", tmp_path / "on"
    off.mkdir()
    on.mkdir()
    for folder, keep in ((off, False), (on, True)):
        c = write_config(folder, keep_photos=keep)
        assert run(capsys, *add(c, "S1", "王芳", lfw("Wu_Yi", 1)))[0] == 0
        with Store(db(folder)) as st:
            assert [has_photo for *_, has_photo in st.template_info("S1")] == [keep]
        rc, out, _ = run(capsys, "--config", c, "remove", "S1", "--yes")
        assert out.strip() == "removed S1 王芳: 1 templates erased" + (", 1 photos erased" if keep else "")


# -- the service on its own ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def models() -> tuple[Detector, DlibEmbedder]:
    from enroll.service import ENROL_DETECT_WIDTH, ENROL_UPSAMPLE

    return Detector(ENROL_DETECT_WIDTH, ENROL_UPSAMPLE), DlibEmbedder()


def test_at_most_max_templates_per_senior(tmp_path: Path, models: tuple[Detector, DlibEmbedder]) -> None:
    with Store(tmp_path / "s.sqlite") as st:
        e = Enroller(st, *models, policy=EnrolPolicy(max_templates=3))
        s = Senior("S1", "朱明", date(1940, 1, 1), "徐汇")
        assert e.enrol(s, [lfw("Zhu_Rongji", 2), lfw("Zhu_Rongji", 1)]).templates_added == 2
        res = e.enrol(s, [lfw("Zhu_Rongji", 2), lfw("Zhu_Rongji", 4), lfw("Zhu_Rongji", 5)])
        assert [p.code for p in res.photos].count(SAME_PHOTO) == 1
        assert sorted(p.code for p in res.photos) == sorted([SAME_PHOTO, "", CAPACITY])
        assert res.templates_added == 1 and res.templates_total == 3 and res.rejected
        assert "at most 3" in res.rejected_photos[0].reason
        assert st.template_count("S1") == 3


def test_lookalike_warning_names_the_other_senior(
    tmp_path: Path, models: tuple[Detector, DlibEmbedder]
) -> None:
    with Store(tmp_path / "s.sqlite") as st:
        # thresholds moved so that two different real people fall in the "lookalike" band
        loose = replace(default_policy(models[1].model_id), lookalike_distance=1.9)
        e = Enroller(st, *models, policy=EnrolPolicy(duplicate_distance=0.05), decision_policy=loose)
        a = e.enrol(Senior("S1", "吴仪", date(1938, 11, 17), "徐汇"), [lfw("Wu_Yi", 1)])
        b = e.enrol(Senior("S2", "朱明", date(1940, 1, 1), "徐汇"), [lfw("Zhu_Rongji", 2)])
        assert a.enrolled and b.enrolled and not b.rejected
        assert len(b.warnings) == 1 and b.warnings[0].startswith("looks similar to S1 吴仪 (distance")
        # and with the real thresholds, the same face under another id is a duplicate
        e2 = Enroller(st, *models)
        c = e2.enrol(Senior("S3", "吴丽", date(1939, 1, 1), "徐汇"), [lfw("Wu_Yi", 2)])
        assert not c.enrolled and [p.code for p in c.photos] == [DUPLICATE]
        assert st.get_senior("S3") is None
        # the in-memory gallery follows enrolments and removals
        assert e2.gallery.senior_ids == ("S1", "S2")
        st.remove_senior("S1")
        e2.forget("S1")
        assert e2.enrol(Senior("S3", "吴丽", date(1939, 1, 1), "徐汇"), [lfw("Wu_Yi", 2)]).enrolled


def test_disagreeing_photo_code(tmp_path: Path, models: tuple[Detector, DlibEmbedder]) -> None:
    with Store(tmp_path / "s.sqlite") as st:
        res = Enroller(st, *models).enrol(
            Senior("S1", "朱明", date(1940, 1, 1), "徐汇"),
            [lfw("Zhu_Rongji", 2), lfw("Zhu_Rongji", 1), lfw("Kelly_Clarkson", 1)],
        )
        assert [p.code for p in res.photos] == ["", "", DISAGREES]
        assert np.isclose(st.template_count("S1"), 2)
