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
from pathlib import Path
from typing import Any

from sqlalchemy import Connection

from district import charts
from district.settle import CENTRE_COLUMNS, SENIOR_COLUMNS, ReportError, Settlement, settle, yuan

__all__ = ["ReportError", "Settlement", "settle", "write_report", "yuan"]


def _csv(rows: list[dict[str, Any]], columns: list[str]) -> bytes:
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue().encode("utf-8")

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
    ws.append(CENTRE_COLUMNS)
    for c in s.centres:
        ws.append([c[k] for k in CENTRE_COLUMNS])
    ws.append(["TOTAL", *[s.totals[k] for k in CENTRE_COLUMNS[1:]]])
    for cell in ws[1] + ws[ws.max_row]:
        cell.font = Font(bold=True)
    ws.column_dimensions["A"].width = 16
    for col in "BCDEFGH":
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
