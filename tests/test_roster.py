"""Roster CSV parsing: every bad row reported with its spreadsheet row number, the good ones kept."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from enroll.roster import RosterError, parse_birth_date, read_roster

TODAY = date(2026, 6, 1)
HEADER = "senior_id,name,birth_date,hukou,photos\n"


def write(tmp_path: Path, text: str, bom: bool = False, name: str = "roster.csv") -> Path:
    p = tmp_path / name
    p.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return p


@pytest.mark.parametrize("bom", [False, True])
def test_good_rows_with_chinese_names_and_bom(tmp_path: Path, bom: bool) -> None:
    p = write(
        tmp_path,
        HEADER + "S001,王芳,1948-03-15,徐汇,a.jpg;b.jpg\nS002,Li Wei,1950-12-31,xuhui, c.jpg \n",
        bom,
    )
    rows, errors = read_roster(p, today=TODAY)
    assert errors == []
    assert [r.row for r in rows] == [2, 3]
    s = rows[0].senior
    assert (s.senior_id, s.name, s.birth_date, s.hukou, s.status) == (
        "S001",
        "王芳",
        date(1948, 3, 15),
        "徐汇",
        "active",
    )
    assert rows[0].photos == (tmp_path / "a.jpg", tmp_path / "b.jpg")
    assert rows[1].photos == (tmp_path / "c.jpg",)


def test_photos_relative_to_photos_dir_and_absolute_kept(tmp_path: Path) -> None:
    other = tmp_path / "pics"
    p = write(tmp_path, HEADER + f"S1,A,1940-01-01,x,a.jpg;{tmp_path / 'abs.jpg'}\n")
    rows, _ = read_roster(p, photos_dir=other, today=TODAY)
    assert rows[0].photos == (other / "a.jpg", tmp_path / "abs.jpg")


def test_header_columns_in_any_order_and_case(tmp_path: Path) -> None:
    p = write(tmp_path, "Name,SENIOR_ID,photos,hukou,birth_date\n王芳,S9,p.jpg,xuhui,1940-02-29\n")
    rows, errors = read_roster(p, today=TODAY)
    assert errors == [] and rows[0].senior.senior_id == "S9" and rows[0].senior.name == "王芳"
    assert rows[0].senior.birth_date == date(1940, 2, 29)


def test_every_bad_row_reported_with_row_number_and_others_kept(tmp_path: Path) -> None:
    text = HEADER + (
        "S01,王芳,1948-03-15,xuhui,a.jpg\n"  # 2 ok
        "S02,李明,1948-13-01,xuhui,a.jpg\n"  # 3 bad month
        ",张伟,1948-01-01,xuhui,a.jpg\n"  # 4 empty id
        "S01,王芳二,1949-01-01,xuhui,b.jpg\n"  # 5 duplicate id
        "S05,赵丽,1950-01-01\n"  # 6 missing columns
        "\n"  # 7 blank: skipped, still counted
        "S07,孙强,15/03/1948,xuhui,a.jpg\n"  # 8 wrong date format
        "S08,周敏,2030-01-01,xuhui,a.jpg\n"  # 9 future
        "S09,吴刚,1948-01-01,xuhui,\n"  # 10 no photos
        "S10,郑洁,1948-01-01,xuhui,1.jpg;2.jpg;3.jpg;4.jpg;5.jpg;6.jpg\n"  # 11 too many photos
        "S11,,1948-01-01,xuhui,a.jpg\n"  # 12 empty name
        "S12,王五,1948-01-01,,a.jpg\n"  # 13 empty hukou
        "S13,钱七,1948-01-01,xuhui,a.jpg,extra\n"  # 14 too many values
        "S 14,钱八,1948-01-01,xuhui,a.jpg\n"  # 15 space in id
        '"S15","陈,九",1948-01-01,xuhui,"a.jpg;b.jpg"\n'  # 16 ok: quoted comma
    )
    rows, errors = read_roster(write(tmp_path, text), today=TODAY)
    assert [(r.row, r.senior.senior_id) for r in rows] == [(2, "S01"), (16, "S15")]
    assert rows[1].senior.name == "陈,九"
    by_row = {e.row: e.reason for e in errors}
    assert sorted(by_row) == [3, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14, 15]
    assert "bad birth date '1948-13-01'" in by_row[3] and "YYYY-MM-DD" in by_row[3]
    assert "empty senior_id" in by_row[4]
    assert "already used in row 2" in by_row[5]
    assert "missing column(s) hukou, photos" in by_row[6]
    assert "YYYY-MM-DD" in by_row[8]
    assert "in the future" in by_row[9]
    assert "no photos" in by_row[10]
    assert "6 photos, at most 5" in by_row[11]
    assert "empty name" in by_row[12]
    assert "empty hukou" in by_row[13]
    assert "quotes" in by_row[14]
    assert "space" in by_row[15]
    # the id is kept for the summary when the row had one
    assert {e.row: e.senior_id for e in errors}[3] == "S02"


@pytest.mark.parametrize(
    "header, expect",
    [
        ("id,name,birth_date,hukou,photos\n", "missing column(s) senior_id"),
        ("senior_id,name,birth_date,hukou,photos,notes\n", "unknown column(s) 'notes'"),
        ("senior_id,name,name,birth_date,hukou,photos\n", "repeated column(s) name"),
        (
            "S01,王芳,1948-03-15,xuhui,a.jpg\n",
            "the first row must be exactly senior_id,name,birth_date,hukou,photos",
        ),
    ],
)
def test_wrong_header_is_a_file_error(tmp_path: Path, header: str, expect: str) -> None:
    with pytest.raises(RosterError, match="row 1") as e:
        read_roster(write(tmp_path, header + "S01,王芳,1948-03-15,xuhui,a.jpg\n"), today=TODAY)
    assert expect in str(e.value)


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(RosterError, match="not found"):
        read_roster(tmp_path / "nope.csv")
    with pytest.raises(RosterError, match="empty"):
        read_roster(write(tmp_path, ""))
    gbk = tmp_path / "gbk.csv"
    gbk.write_bytes((HEADER + "S01,王芳,1948-03-15,徐汇,a.jpg\n").encode("gbk"))
    with pytest.raises(RosterError, match="not UTF-8.*CSV UTF-8"):
        read_roster(gbk)
    with pytest.raises(RosterError, match="folder"):
        read_roster(tmp_path)


def test_crlf_and_multiline_cell_keep_spreadsheet_row_numbers(tmp_path: Path) -> None:
    text = (
        HEADER.replace("\n", "\r\n")
        + 'S1,"王\r\n芳",1948-03-15,xuhui,a.jpg\r\nS2,李,1948-99-01,xuhui,a.jpg\r\n'
    )
    rows, errors = read_roster(write(tmp_path, text), today=TODAY)
    assert rows[0].row == 2 and errors[0].row == 3


@pytest.mark.parametrize("text", ["1948-3-15", "19480315", "", "1948-02-30", " 1948-03-15x"])
def test_bad_birth_dates(text: str) -> None:
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        parse_birth_date(text, TODAY)


def test_birth_date_bounds() -> None:
    assert parse_birth_date(" 1948-03-15 ", TODAY) == date(1948, 3, 15)
    with pytest.raises(ValueError, match="implausibly early"):
        parse_birth_date("1850-01-01", TODAY)


def test_an_optional_meal_card_column(tmp_path: Path) -> None:
    text = (
        "senior_id,name,birth_date,hukou,photos,card_no\n"
        "S01,王芳,1948-03-15,xuhui,a.jpg,C-1001\n"
        "S02,汪峰,1949-03-15,xuhui,b.jpg,\n"
        "S03,李明,1947-03-15,xuhui,c.jpg,C-1001\n"
        "S04,赵雷,1947-03-15,xuhui,d.jpg,C 1004\n"
    )
    rows, bad = read_roster(write(tmp_path, text), today=TODAY)
    assert [(r.senior.senior_id, r.card_no) for r in rows] == [("S01", "C-1001"), ("S02", None)]
    assert [(b.row, b.senior_id) for b in bad] == [(4, "S03"), (5, "S04")]
    assert "meal card C-1001 already used in row 2" in bad[0].reason and "without spaces" in bad[1].reason
    # without the column, as before
    rows, bad = read_roster(write(tmp_path, HEADER + "S01,王芳,1948-03-15,xuhui,a.jpg\n", name="b.csv"), today=TODAY)
    assert rows[0].card_no is None and not bad
