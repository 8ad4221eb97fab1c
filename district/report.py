"""`meal-district report --month YYYY-MM --out DIR`: the month's settlement, to the fen, byte-identical on re-run.

The adjustments are recomputed here from the stored events with the same pure rules serve uses
(district.reconcile), so the settlement does not depend on when the watcher last ran. A void reverses the
subsidy of the meal it names in that meal's month, whenever the void arrived before the report.

Files: centres.csv (the contract's columns), seniors.csv (one line per meal), summary.xlsx, meals-per-day.png,
subsidy-per-centre.png, check-in-method.png, statement.txt. The statement's totals are checked three ways
(per centre, per meal line, and a SQL sum over the stored events) and carry a sha256 of the inputs.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import zipfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, func, select
from sqlalchemy.orm import Session

from district import reconcile
from district.db.models import Event as EventRow
from district.queries import month_range
from district.watch import void_map

CENTRE_COLUMNS = ["centre_id", "meals", "subsidised_meals", "subsidy_fen", "payable_fen", "adjustments",
                  "adjustment_fen", "net_subsidy_fen"]
SENIOR_COLUMNS = ["senior_id", "local_date", "decided_at", "centre_id", "kiosk_id", "event_id", "meal", "check_in",
                  "subsidy_fen", "payable_fen", "adjustment", "adjustment_fen", "net_subsidy_fen"]
CHECK_INS = ("face", "face_confirmed", "manual")


class ReportError(RuntimeError):
    pass


@dataclass
class Settlement:
    month: str
    district: str
    centres: list[dict[str, Any]]
    lines: list[dict[str, Any]]
    totals: dict[str, int]
    inputs_sha256: str
    events: int
    per_day: dict[str, Counter[date]] = field(default_factory=dict)
    check_in: Counter[str] = field(default_factory=Counter)
    #: per centre, meals confirmed by staff or checked in by hand (check_in other than face)
    staff: dict[str, int] = field(default_factory=dict)

    def staff_share(self, centre_id: str | None = None) -> str:
        n = sum(self.staff.values()) if centre_id is None else self.staff.get(centre_id, 0)
        meals = self.totals["meals"] if centre_id is None else next(
            (c["meals"] for c in self.centres if c["centre_id"] == centre_id), 0)
        return f"{100 * n / meals:.1f}%" if meals else "-"


def settle(conn: Connection, month: str, district: str, cap_fen: int = 300) -> Settlement:
    first, end = month_range(month)
    rows = Session(conn).scalars(select(EventRow).where(EventRow.kind == "meal", EventRow.local_date >= first,
                                               EventRow.local_date < end)
                        .order_by(EventRow.senior_id, EventRow.decided_at, EventRow.event_id)).all()
    voids = void_map(conn, [r.event_id for r in rows])
    meals = [reconcile.Meal(r.event_id, r.senior_id, r.local_date, r.centre_id, r.decided_at, r.subsidy_fen)
             for r in rows]
    flags = {f.event_id: f for f in reconcile.flags(meals, voids, cap_fen)}
    digest = hashlib.sha256()
    void_raw = {eid: raw for eid, raw in conn.execute(select(EventRow.event_id, EventRow.raw).where(
        EventRow.event_id.in_(sorted(set(voids.values())) or [""])))}
    for eid, raw in sorted([(r.event_id, r.raw) for r in rows] + list(void_raw.items())):
        digest.update(f"{eid}:{hashlib.sha256(raw).hexdigest()}\n".encode())

    centres: dict[str, dict[str, Any]] = {}
    lines: list[dict[str, Any]] = []
    per_day: dict[str, Counter[date]] = defaultdict(Counter)
    check_in: Counter[str] = Counter()
    staff: Counter[str] = Counter()  # meals confirmed or checked in by staff, per centre
    for r in rows:
        c = centres.setdefault(r.centre_id, dict.fromkeys(CENTRE_COLUMNS, 0) | {"centre_id": r.centre_id})
        f = flags.get(r.event_id)
        adj = f.amount_fen if f else 0
        c["meals"] += 1
        c["subsidised_meals"] += r.subsidy_fen > 0
        c["subsidy_fen"] += r.subsidy_fen
        c["payable_fen"] += r.payable_fen
        c["adjustments"] += f is not None
        c["adjustment_fen"] += adj
        c["net_subsidy_fen"] += r.subsidy_fen - adj
        staff[r.centre_id] += r.check_in != "face"
        per_day[r.centre_id][r.local_date] += 1
        check_in[r.check_in] += 1
        lines.append({"senior_id": r.senior_id, "local_date": r.local_date.isoformat(),
                      "decided_at": r.decided_at.isoformat(), "centre_id": r.centre_id, "kiosk_id": r.kiosk_id,
                      "event_id": r.event_id, "meal": r.meal, "check_in": r.check_in, "subsidy_fen": r.subsidy_fen,
                      "payable_fen": r.payable_fen, "adjustment": f.reason if f else "", "adjustment_fen": adj,
                      "net_subsidy_fen": r.subsidy_fen - adj})
    table = [centres[k] for k in sorted(centres)]
    totals: dict[str, int] = {k: sum(int(c[k]) for c in table) for k in CENTRE_COLUMNS[1:]}
    # three independent sums must agree to the fen: per centre, per meal line, and the database's own
    db_sub, db_pay, db_n = conn.execute(select(func.coalesce(func.sum(EventRow.subsidy_fen), 0),
                                               func.coalesce(func.sum(EventRow.payable_fen), 0), func.count())
                                        .where(EventRow.kind == "meal", EventRow.local_date >= first,
                                               EventRow.local_date < end)).one()
    line_net = sum(int(ln["net_subsidy_fen"]) for ln in lines)
    if (totals["subsidy_fen"], totals["payable_fen"], totals["meals"]) != (int(db_sub), int(db_pay), int(db_n)) \
            or line_net != totals["net_subsidy_fen"] \
            or totals["net_subsidy_fen"] != totals["subsidy_fen"] - totals["adjustment_fen"]:
        raise ReportError(f"totals do not reconcile: centres {totals}, database subsidy {db_sub} payable {db_pay} "
                          f"meals {db_n}, meal lines net {line_net}; events changed while reading? run it again")
    return Settlement(month, district, table, lines, totals, digest.hexdigest(), len(rows) + len(void_raw),
                      dict(per_day), check_in, dict(staff))


def _csv(rows: list[dict[str, Any]], columns: list[str]) -> bytes:
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue().encode("utf-8")


def yuan(fen: int) -> str:
    return f"{fen // 100}.{fen % 100:02d}" if fen >= 0 else "-" + yuan(-fen)


def statement_text(s: Settlement, files: dict[str, bytes]) -> bytes:
    t = s.totals
    out = [
        f"meal-district settlement statement: district {s.district}, month {s.month}",
        "",
        f"centres                  {len(s.centres)}",
        f"meals                    {t['meals']}",
        f"subsidised meals         {t['subsidised_meals']}",
        f"subsidy granted          {t['subsidy_fen']} fen (CNY {yuan(t['subsidy_fen'])})",
        f"adjustments              {t['adjustments']} meals, {t['adjustment_fen']} fen "
        f"(CNY {yuan(t['adjustment_fen'])})",
        f"net subsidy payable      {t['net_subsidy_fen']} fen (CNY {yuan(t['net_subsidy_fen'])})",
        f"paid by seniors          {t['payable_fen']} fen (CNY {yuan(t['payable_fen'])})",
        f"staff-confirmed share    {s.staff_share()} of meals (confirmed by staff or checked in by hand)",
        "",
        "Reconciliation: the per-centre totals, the per-meal lines and the database's own sums over the stored",
        "events agree to the fen (the report refuses to write otherwise).",
        "net subsidy = subsidy granted - adjustments (second subsidies of a senior on one local date, district-wide,",
        "and voided meals).",
        "",
        f"inputs: {s.events} stored events (meals of the month and the voids naming them)",
        f"inputs sha256 (sorted event_id:sha256(payload) lines): {s.inputs_sha256}",
        "",
        "files:",
        *[f"  {hashlib.sha256(data).hexdigest()}  {name}" for name, data in sorted(files.items())],
        "",
    ]
    return "\n".join(out).encode("utf-8")


def _fixed_zip(data: bytes, stamp: str) -> bytes:
    """The same zip with every member dated 1980-01-01 and the document's modified time set to `stamp`:
    openpyxl stamps the time of writing in both places."""
    src = zipfile.ZipFile(io.BytesIO(data))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            fixed = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
            fixed.compress_type = zipfile.ZIP_DEFLATED
            fixed.external_attr = 0o600 << 16
            body = src.read(info.filename)
            if info.filename == "docProps/core.xml":
                body = re.sub(rb"(<dcterms:modified[^>]*>)[^<]*(</dcterms:modified>)",
                              rb"\g<1>" + stamp.encode() + rb"\g<2>", body)
            dst.writestr(fixed, body)
    return buf.getvalue()


def xlsx(s: Settlement) -> bytes:
    from datetime import datetime

    from openpyxl import Workbook
    from openpyxl.styles import Font

    wb = Workbook()
    fixed = datetime(int(s.month[:4]), int(s.month[5:7]), 1)
    wb.properties.created = fixed
    wb.properties.modified = fixed
    wb.properties.creator = "meal-district"
    ws = wb.active
    assert ws is not None
    ws.title = "centres"
    ws.append([*CENTRE_COLUMNS, "staff_confirmed_share"])
    for c in s.centres:
        ws.append([*(c[k] for k in CENTRE_COLUMNS), s.staff_share(c["centre_id"])])
    ws.append(["TOTAL", *[s.totals[k] for k in CENTRE_COLUMNS[1:]], s.staff_share()])
    for cell in ws[1] + ws[ws.max_row]:
        cell.font = Font(bold=True)
    ws.column_dimensions["A"].width = 16
    for col in "BCDEFGHI":
        ws.column_dimensions[col].width = 15
    ws.freeze_panes = "A2"
    lines = wb.create_sheet("meals")
    lines.append(SENIOR_COLUMNS)
    for ln in s.lines:
        lines.append([ln[k] for k in SENIOR_COLUMNS])
    lines.freeze_panes = "A2"
    st = wb.create_sheet("statement")
    for k, v in [("district", s.district), ("month", s.month), *s.totals.items(), ("inputs_sha256", s.inputs_sha256)]:
        st.append([k, v])
    buf = io.BytesIO()
    wb.save(buf)
    return _fixed_zip(buf.getvalue(), fixed.strftime("%Y-%m-%dT%H:%M:%SZ"))


def write_report(conn: Connection, month: str, out: Path, district: str, cap_fen: int = 300) -> Settlement:
    from district import charts

    s = settle(conn, month, district, cap_fen)
    files = {
        "centres.csv": _csv(s.centres, CENTRE_COLUMNS),
        "seniors.csv": _csv(s.lines, SENIOR_COLUMNS),
        "summary.xlsx": xlsx(s),
        **charts.render(s),
    }
    files["statement.txt"] = statement_text(s, files)
    out.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        tmp = out / f".{name}.tmp"
        tmp.write_bytes(data)
        tmp.replace(out / name)
    return s
