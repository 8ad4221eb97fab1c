"""Roster import guards (issue 12, item 6): a decompression bomb is one rejected row and the import goes on;
photo paths stay inside the CSV's folder (or --photos). Real dlib models, real LFW photos, a real 20000x20000
PNG, `meal-enroll import` in its own process (so its peak memory can be read)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_security_guards import bomb_png

from edge.store import Store

SHARED = Path(os.environ.get("MEAL_EDGE_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
LFW = SHARED / "data" / "faces" / "lfw_deepfunneled"

_RUN = (
    "import resource, sys\n"
    "from enroll.cli import main\n"
    "rc = main(sys.argv[1:])\n"
    "print(f'MAXRSS_KB {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}', file=sys.stderr)\n"
    "sys.exit(rc)\n"
)


def _photo(name: str, n: int) -> Path:
    p = LFW / name / f"{name}_{n:04d}.jpg"
    if not p.exists():
        pytest.skip(f"../shared/data/faces/lfw_deepfunneled not found: {p} (set MEAL_EDGE_SHARED)")
    return p


def _config(tmp_path: Path) -> Path:
    p = tmp_path / "meal-edge.toml"
    p.write_text(
        '[centre]\nid = "c1"\ndistrict = "徐汇"\nkiosk_id = "k1"\n[store]\npath = "state/meal.sqlite"\n',
        encoding="utf-8",
    )
    return p


def _enroll(*argv: str) -> tuple[int, str, str, int]:
    r = subprocess.run([sys.executable, "-c", _RUN, *argv], capture_output=True, text=True, timeout=300)
    rss = int(r.stderr.rsplit("MAXRSS_KB ", 1)[1].split()[0])
    assert "Traceback" not in r.stdout + r.stderr
    return r.returncode, r.stdout, r.stderr, rss


@pytest.mark.slow
def test_a_decompression_bomb_is_one_rejected_row_and_the_import_goes_on(tmp_path: Path) -> None:
    roster_dir = tmp_path / "roster"
    roster_dir.mkdir()
    shutil.copy(_photo("Wu_Yi", 1), roster_dir / "wu.jpg")
    shutil.copy(_photo("Kelly_Clarkson", 1), roster_dir / "kelly.jpg")
    bomb = bomb_png(20000, 20000)
    assert len(bomb) < 2_000_000  # a small file...
    (roster_dir / "bomb.png").write_bytes(bomb)  # ...of 400 million pixels
    csv = roster_dir / "roster.csv"
    csv.write_text(
        "senior_id,name,birth_date,hukou,photos\n"
        "S1,吴仪,1938-11-17,徐汇,wu.jpg\n"
        "S2,炸弹,1940-01-01,徐汇,bomb.png\n"
        "S3,凯莉,1941-04-24,徐汇,kelly.jpg\n",
        encoding="utf-8",
    )
    rc, out, err, rss_kb = _enroll("--config", str(_config(tmp_path)), "import", str(csv))
    assert rc == 1, out + err
    assert "rejected: row 3 S2 炸弹: bomb.png: the photo is 20000x20000 pixels (400 megapixels, at most 64)" in out
    assert "2 enrolled (2 templates), 1 rejected" in out
    # nothing decoded: the same import without the bomb row (same models, so the same baseline whichever
    # embedder the session's state folder holds) peaks within far less than the 1.2 GB one decoded
    # 20000x20000 RGB picture takes
    base_dir = tmp_path / "baseline"
    base_dir.mkdir()
    (base_dir / "roster.csv").write_text(
        "senior_id,name,birth_date,hukou,photos\nS1,吴仪,1938-11-17,徐汇,wu.jpg\nS3,凯莉,1941-04-24,徐汇,kelly.jpg\n",
        encoding="utf-8",
    )
    base_rc, base_out, _, base_kb = _enroll(
        "--config", str(_config(base_dir)), "import", str(base_dir / "roster.csv"), "--photos", str(roster_dir)
    )
    assert base_rc == 0 and "2 enrolled (2 templates)" in base_out, base_out
    assert rss_kb < base_kb + 400_000, (rss_kb, base_kb)
    with Store(tmp_path / "state" / "meal.sqlite") as st:
        assert {s.senior_id for s, _ in st.list_seniors()} == {"S1", "S3"}
        # each enrolment is audited, as the operating-system user who ran the import, without names
        lines = [(a.action, a.target, a.details["templates"]) for a in st.audit_log()]
        assert lines == [("enrol", "senior:S1", 1), ("enrol", "senior:S3", 1)]
        assert all(a.staff_id.startswith("os:") for a in st.audit_log())
        assert "吴仪" not in str([a.to_json() for a in st.audit_log()])


@pytest.mark.slow
def test_roster_photo_paths_stay_inside_the_roster_folder(tmp_path: Path) -> None:
    roster_dir = tmp_path / "roster"
    roster_dir.mkdir()
    shutil.copy(_photo("Wu_Yi", 1), roster_dir / "wu.jpg")
    # someone else's file, outside the roster's folder
    secret = tmp_path / "elsewhere"
    secret.mkdir()
    shutil.copy(_photo("Kelly_Clarkson", 1), secret / "kelly.jpg")
    shutil.copy(_photo("Zhu_Rongji", 2), secret / "zhu.jpg")
    (roster_dir / "link.jpg").symlink_to(secret / "zhu.jpg")
    csv = roster_dir / "roster.csv"
    csv.write_text(
        "senior_id,name,birth_date,hukou,photos\n"
        "S1,吴仪,1938-11-17,徐汇,wu.jpg\n"
        "S2,凯莉,1941-04-24,徐汇,../elsewhere/kelly.jpg\n"
        f"S3,朱镕,1928-10-01,徐汇,{secret / 'zhu.jpg'}\n"
        "S4,朱明,1940-01-01,徐汇,link.jpg\n",
        encoding="utf-8",
    )
    cfg = str(_config(tmp_path))
    rc, out, err, _ = _enroll("--config", cfg, "import", str(csv))
    assert rc == 1, out + err
    for row, sid in ((3, "S2"), (4, "S3"), (5, "S4")):
        assert f"rejected: row {row} {sid}: " in out and "is outside" in out, out
    assert "1 enrolled (1 templates), 3 rejected" in out
    # --photos names another allowed folder: what lies inside it is then fine (rows 3 and 4)
    _enroll("--config", cfg, "import", str(csv), "--photos", str(secret))
    with Store(tmp_path / "state" / "meal.sqlite") as st:
        assert {s.senior_id for s, _ in st.list_seniors()} == {"S1", "S2", "S3"}
