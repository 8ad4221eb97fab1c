"""Roster CSV for bulk enrolment: `senior_id,name,birth_date,hukou,photos`, and optionally `card_no`.

One senior a row; `photos` lists 1 to 5 files separated by ';', relative to the CSV's folder (or to the
folder given with --photos). A photo must lie inside one of those two folders, links resolved: a roster from
elsewhere cannot make the kiosk read (and enrol) any file the enrolling user can read.
UTF-8 with or without a byte-order mark (what Excel's "CSV UTF-8" writes).

Row numbers are the row numbers a spreadsheet shows: the header is row 1, the first senior row 2.
A bad row is returned as a `RowError` and never stops the rows after it.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TypeVar

from edge.meals.rules import Senior
from edge.security.guards import PathOutside, confine

log = logging.getLogger(__name__)

#: a parsed row of either roster CSV (the centre's RosterRow, the district's DistrictRow)
R = TypeVar("R")

COLUMNS = ("senior_id", "name", "birth_date", "hukou", "photos")
#: columns a roster may have: the number on the senior's meal card (餐卡), for finding them on the staff screen
OPTIONAL = ("card_no",)
MAX_PHOTOS = 5
PHOTO_SEPARATOR = ";"
_OLDEST_BIRTH_YEAR = 1890


class RosterError(ValueError):
    """The whole file is unusable (not found, not UTF-8, wrong header): a usage error, nothing enrolled."""


@dataclass(frozen=True)
class RosterRow:
    row: int
    senior: Senior
    photos: tuple[Path, ...]
    #: the meal card's number; None when the roster has no card_no column or the cell is empty
    card_no: str | None = None


@dataclass(frozen=True)
class RowError:
    row: int
    #: what is wrong with the row and how to fix it
    reason: str
    #: the id if the row had one, for the summary
    senior_id: str = ""


def parse_birth_date(text: str, today: date | None = None) -> date:
    """YYYY-MM-DD, a real calendar date, not in the future. ValueError with a staff-readable reason."""
    s = text.strip()
    try:
        if len(s) != 10:
            raise ValueError
        d = date.fromisoformat(s)
    except ValueError:
        raise ValueError(f"bad birth date {text!r}: write it as YYYY-MM-DD, e.g. 1948-03-15") from None
    today = today or date.today()
    if d > today:
        raise ValueError(f"birth date {s} is in the future: check the year")
    if d.year < _OLDEST_BIRTH_YEAR:
        raise ValueError(f"birth date {s} is implausibly early: check the year")
    return d


def _decode(data: bytes, path: Path) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise RosterError(
            f"{path}: not UTF-8 text (byte {e.start}): in Excel use 'Save As' > 'CSV UTF-8 (comma delimited)'"
        ) from None


def read_roster(
    path: str | Path, photos_dir: str | Path | None = None, today: date | None = None
) -> tuple[list[RosterRow], list[RowError]]:
    """Parse a roster file into good rows and bad rows (each with its row number and reason)."""
    p = Path(path)
    text = read_text(p)
    base = Path(photos_dir) if photos_dir is not None else p.parent
    roots = [p.parent] if photos_dir is None else [p.parent, Path(photos_dir)]
    return parse_roster(text, base, today=today, name=str(p), roots=roots)


def check_header(
    cells: list[str], name: str, columns: tuple[str, ...] = COLUMNS, optional: tuple[str, ...] = OPTIONAL
) -> dict[str, int]:
    """Column name -> index; RosterError naming what is missing, unknown or repeated (shared with the
    district's roster import, district/roster/csvfile.py)."""
    found = [c.strip().lower() for c in cells]
    missing = [c for c in columns if c not in found]
    unknown = [c for c in found if c not in columns + optional]
    dupes = sorted({c for c in found if found.count(c) > 1})
    if missing or unknown or dupes:
        parts = []
        if missing:
            parts.append(f"missing column(s) {', '.join(missing)}")
        if unknown:
            parts.append(f"unknown column(s) {', '.join(repr(c) for c in unknown)}")
        if dupes:
            parts.append(f"repeated column(s) {', '.join(dupes)}")
        raise RosterError(
            f"{name}: row 1 (header): {'; '.join(parts)}: the first row must be exactly {','.join(columns)} "
            f"(and optionally {','.join(optional)})"
        )
    return {c: found.index(c) for c in columns + optional if c in found}


def read_text(path: str | Path) -> str:
    """The text of a roster file; RosterError when it cannot be read or is not UTF-8."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise RosterError(f"{p}: roster file not found") from None
    except IsADirectoryError:
        raise RosterError(f"{p}: is a folder; give the roster's .csv file") from None
    except OSError as e:
        raise RosterError(f"{p}: cannot read the roster ({e.strerror})") from None
    return _decode(data, p)


def csv_rows(text: str) -> Iterator[tuple[int, list[str]] | RowError]:
    """(spreadsheet row number, cells) of every non-blank row, header included; a RowError (and the end) for
    unreadable CSV."""
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""))
    # Count spreadsheet rows ourselves: csv's line_num counts physical lines, which differs
    # from the row number when a quoted cell holds a line break.
    row_no = 0
    try:
        for cells in reader:
            row_no += 1
            if any(c.strip() for c in cells):
                yield row_no, cells
    except csv.Error as e:
        yield RowError(row_no + 1, f"unreadable CSV ({e}): check the quotes on this row")


def check_width(row_no: int, cells: list[str], header: dict[str, int]) -> RowError | None:
    width = len(header)
    sid_guess = cells[header["senior_id"]].strip() if header["senior_id"] < len(cells) else ""
    if len(cells) < width:
        missing = [c for c, i in header.items() if i >= len(cells)]
        return RowError(
            row_no,
            f"missing column(s) {', '.join(missing)}: the row needs {width} comma-separated values",
            sid_guess,
        )
    if len(cells) > width and any(c.strip() for c in cells[width:]):
        return RowError(
            row_no,
            f"{len(cells)} values, expected {width}: put quotes around a value that contains a comma",
            sid_guess,
        )
    return None


def check_row(
    row_no: int, cells: list[str], header: dict[str, int], today: date | None = None
) -> tuple[dict[str, str], Senior] | RowError:
    """A row's cells by column (stripped) and the senior they describe, or the row's error: the checks both roster
    CSVs start with (the district's in district/roster/csvfile.py)."""
    if (bad := check_width(row_no, cells, header)) is not None:
        return bad
    v = {c: cells[i].strip() for c, i in header.items()}
    senior = check_senior(row_no, v, today)
    if isinstance(senior, RowError):
        return senior
    return v, senior


def check_senior(row_no: int, v: dict[str, str], today: date | None = None) -> Senior | RowError:
    """The id, name, hukou and birth date of a row (cells stripped)."""
    sid = v["senior_id"]
    if not sid:
        return RowError(row_no, "empty senior_id: every senior needs the id the district gave them")
    if any(ch.isspace() for ch in sid) or any(ch in sid for ch in "/+#;"):
        return RowError(
            row_no, f"senior id {sid!r} contains a space or one of / + # ;: use letters and digits", sid
        )
    if not v["name"]:
        return RowError(row_no, "empty name: write the senior's name as on their ID card", sid)
    if not v["hukou"]:
        return RowError(row_no, "empty hukou: write the senior's hukou district", sid)
    try:
        birth = parse_birth_date(v["birth_date"], today)
    except ValueError as e:
        return RowError(row_no, str(e), sid)
    return Senior(sid, v["name"], birth, v["hukou"])


def check_card(row_no: int, card: str | None, sid: str) -> RowError | None:
    if card is not None and (len(card) > 32 or any(ch.isspace() for ch in card)):
        return RowError(row_no, f"meal card number {card!r}: write it as printed on the card, without spaces", sid)
    return None


class Uniques:
    """Each senior id and meal card once per file: the row that used it first is named."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.cards: dict[str, int] = {}

    def check(self, row_no: int, sid: str, card: str | None) -> RowError | None:
        if card is not None and card in self.cards:
            return RowError(row_no, f"meal card {card} already used in row {self.cards[card]}", sid)
        if sid in self.ids:
            return RowError(
                row_no, f"senior id {sid} already used in row {self.ids[sid]}: each senior once per file", sid
            )
        self.ids[sid] = row_no
        if card is not None:
            self.cards[card] = row_no
        return None


def parse_roster(
    text: str, base: Path, today: date | None = None, name: str = "<roster>", roots: list[Path] | None = None
) -> tuple[list[RosterRow], list[RowError]]:
    """`roots`: the folders photos must lie in (default: `base`)."""
    in_roots = roots if roots is not None else [base]
    return parse_rows(
        text, name,
        lambda row_no, cells, header: _parse_row(row_no, cells, header, base, in_roots, today),
        lambda row: (row.senior.senior_id, row.card_no),
    )


def parse_rows(
    text: str,
    name: str,
    parse: Callable[[int, list[str], dict[str, int]], R | RowError],
    ids: Callable[[R], tuple[str, str | None]],
    columns: tuple[str, ...] = COLUMNS,
    optional: tuple[str, ...] = OPTIONAL,
) -> tuple[list[R], list[RowError]]:
    """A roster CSV's rows: the header checked (RosterError when wrong, or for an empty file), each row parsed by
    `parse` (a RowError for a bad one), each senior id and meal card once per file (`ids`: a row's). Shared with
    the district's roster import (district/roster/csvfile.py)."""
    rows: list[R] = []
    errors: list[RowError] = []
    header: dict[str, int] | None = None
    uniques = Uniques()
    for item in csv_rows(text):
        if isinstance(item, RowError):
            errors.append(item)
            break
        row_no, cells = item
        if header is None:
            header = check_header(cells, name, columns, optional)
            continue
        parsed = parse(row_no, cells, header)
        if isinstance(parsed, RowError):
            errors.append(parsed)
        elif (dup := uniques.check(row_no, *ids(parsed))) is not None:
            errors.append(dup)
        else:
            rows.append(parsed)
    if header is None:
        raise RosterError(f"{name}: the roster is empty: the first row must be {','.join(columns)}")
    return rows, errors


def _parse_row(
    row_no: int, cells: list[str], header: dict[str, int], base: Path, roots: list[Path], today: date | None
) -> RosterRow | RowError:
    checked = check_row(row_no, cells, header, today)
    if isinstance(checked, RowError):
        return checked
    v, senior = checked
    sid = senior.senior_id
    names = [s.strip() for s in v["photos"].split(PHOTO_SEPARATOR) if s.strip()]
    if not names:
        return RowError(row_no, "no photos: list 1 to 5 photo files separated by ';'", sid)
    if len(names) > MAX_PHOTOS:
        return RowError(row_no, f"{len(names)} photos, at most {MAX_PHOTOS}: keep the best {MAX_PHOTOS}", sid)
    photos = tuple(Path(n) if Path(n).is_absolute() else base / n for n in names)
    for n, photo in zip(names, photos, strict=True):
        try:
            confine(photo, roots, n)
        except PathOutside as e:
            return RowError(row_no, str(e), sid)
    card = v.get("card_no") or None
    if (bad := check_card(row_no, card, sid)) is not None:
        return bad
    return RosterRow(row_no, senior, photos, card)
