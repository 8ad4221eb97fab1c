"""The district roster CSV (`meal-district roster import`): senior_id,name,birth_date,hukou,status,home_centre
and optionally card_no and centres (";"-separated centre ids; empty: every centre of the district).

The row checks shared with `meal-enroll import` (id, name, hukou, birth date, meal card, each id and card once
per file, row numbers as a spreadsheet shows them) are enroll.roster's; this adds status, home_centre and
centres. A bad row is returned as a RowError with its number and never stops the rows after it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

from edge.delivery.rosterwire import STATUSES
from enroll.roster import (
    RosterError,
    RowError,
    check_card,
    check_row,
    parse_rows,
    read_text,
)

COLUMNS = ("senior_id", "name", "birth_date", "hukou", "status", "home_centre")
OPTIONAL = ("card_no", "centres")
CENTRE_SEPARATOR = ";"

__all__ = ["COLUMNS", "OPTIONAL", "RosterError", "RowError", "DistrictRow", "parse_district_roster",
           "read_district_roster", "check_centre"]


@dataclass(frozen=True)
class DistrictRow:
    row: int
    senior_id: str
    name: str
    birth_date: date
    hukou: str
    status: str
    home_centre: str
    card_no: str | None
    #: None: every centre of the district
    centres: tuple[str, ...] | None


def check_centre(c: str) -> str | None:
    """Why `c` is not a centre id (an MQTT topic level), or None."""
    if not c or any(ch in c for ch in "/+#;") or any(ch.isspace() for ch in c) or len(c) > 64:
        return f"centre {c!r}: a centre id has no spaces, '/', '+', '#' or ';' (e.g. centre-001)"
    return None


def _row(row_no: int, cells: list[str], header: dict[str, int], today: date | None) -> DistrictRow | RowError:
    checked = check_row(row_no, cells, header, today)
    if isinstance(checked, RowError):
        return checked
    v, senior = checked
    sid = senior.senior_id
    if len(sid) > 64:
        return RowError(row_no, f"senior id of {len(sid)} characters: at most 64", sid)
    if len(senior.name) > 100 or len(senior.hukou) > 100:
        return RowError(row_no, "name or hukou over 100 characters: check the columns", sid)
    status = v["status"].lower()
    if status not in STATUSES:
        return RowError(row_no, f"status {v['status']!r}: write one of {', '.join(STATUSES)}", sid)
    home = v["home_centre"]
    if not home:
        return RowError(row_no, "empty home_centre: write the id of the senior's own centre (e.g. centre-001)", sid)
    if why := check_centre(home):
        return RowError(row_no, f"home_centre: {why}", sid)
    card = v.get("card_no") or None
    if (bad := check_card(row_no, card, sid)) is not None:
        return bad
    centres: tuple[str, ...] | None = None
    if raw := v.get("centres", ""):
        listed = [c.strip() for c in raw.split(CENTRE_SEPARATOR) if c.strip()]
        for c in listed:
            if why := check_centre(c):
                return RowError(row_no, f"centres: {why}", sid)
        centres = tuple(dict.fromkeys(listed))
        if home not in centres:
            return RowError(row_no, f"centres {raw!r} leaves out the home centre {home}: add it, or leave centres "
                            "empty for every centre", sid)
    return DistrictRow(row_no, sid, senior.name, senior.birth_date, senior.hukou, status, home, card, centres)


def parse_district_roster(text: str, name: str = "<roster>",
                          today: date | None = None) -> tuple[list[DistrictRow], list[RowError]]:
    return parse_rows(
        text, name,
        lambda row_no, cells, header: _row(row_no, cells, header, today),
        lambda row: (row.senior_id, row.card_no),
        COLUMNS, OPTIONAL,
    )


def read_district_roster(path: str | Path, today: date | None = None) -> tuple[list[DistrictRow], list[RowError]]:
    return parse_district_roster(read_text(path), str(path), today)
