"""The month's settlement as numbers: what each centre and senior is owed, reconciled to the fen.

Kept apart from the file writers (report) and the charts so that both can use it without a circle."""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date
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
                      dict(per_day), check_in)


def yuan(fen: int) -> str:
    return f"{fen // 100}.{fen % 100:02d}" if fen >= 0 else "-" + yuan(-fen)
