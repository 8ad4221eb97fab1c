"""Read-only views for `meal-district status`, `quarantine` and the dashboard."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Connection, case, func, select
from sqlalchemy.orm import Session

from district import voids
from district.db.engine import next_month
from district.db.models import Adjustment, Alert, Conflict, Gap, Kiosk, Quarantine
from district.db.models import Event as EventRow
from district.roster import book


@dataclass(frozen=True)
class KioskHealth:
    district: str
    centre_id: str
    kiosk_id: str
    state: str
    state_reason: str | None
    since: str | None
    backlog: int | None
    max_seq: int
    last_event_at: str | None
    open_gaps: int
    missing_events: int
    registered_key: bool


def _iso(dt: datetime | None) -> str | None:
    return dt.astimezone(UTC).isoformat(timespec="seconds") if dt else None


def kiosk_health(conn: Connection) -> list[KioskHealth]:
    gaps = {(r[0], r[1], r[2]): (r[3], r[4]) for r in conn.execute(
        select(Gap.district, Gap.centre_id, Gap.kiosk_id, func.count(), func.sum(Gap.last_seq - Gap.first_seq + 1))
        .where(Gap.closed_at.is_(None)).group_by(Gap.district, Gap.centre_id, Gap.kiosk_id))}
    out = []
    for k in Session(conn).scalars(select(Kiosk).order_by(Kiosk.district, Kiosk.centre_id, Kiosk.kiosk_id)):
        n, missing = gaps.get((k.district, k.centre_id, k.kiosk_id), (0, 0))
        out.append(KioskHealth(k.district, k.centre_id, k.kiosk_id, k.state, k.state_reason, _iso(k.status_at),
                               k.backlog, k.max_seq, _iso(k.last_event_at), int(n), int(missing or 0),
                               k.public_key is not None))
    return out


def open_gaps(conn: Connection) -> list[dict[str, Any]]:
    rows = Session(conn).scalars(select(Gap).where(Gap.closed_at.is_(None))
                        .order_by(Gap.district, Gap.centre_id, Gap.kiosk_id, Gap.first_seq))
    return [{"kiosk": f"{g.district}/{g.centre_id}/{g.kiosk_id}", "first_seq": g.first_seq, "last_seq": g.last_seq,
             "missing": g.last_seq - g.first_seq + 1, "opened_at": _iso(g.opened_at)} for g in rows]


def counts(conn: Connection) -> dict[str, int]:
    def n(q: Any) -> int:
        return int(conn.execute(q).scalar_one() or 0)

    return {
        "events": n(select(func.count()).select_from(EventRow)),
        "conflicts": n(select(func.count()).select_from(Conflict)),
        "quarantined": n(select(func.count()).select_from(Quarantine)),
        "gaps_open": n(select(func.count()).select_from(Gap).where(Gap.closed_at.is_(None))),
        "double_subsidies": n(select(func.count()).where(Adjustment.reason == "double_subsidy")),
        "voided": n(select(func.count()).where(Adjustment.reason == "voided")),
        "alerts": n(select(func.count()).select_from(Alert)),
    }


def status(conn: Connection) -> dict[str, Any]:
    return {"counts": counts(conn), "kiosks": [asdict(k) for k in kiosk_health(conn)], "gaps": open_gaps(conn),
            "roster": roster(conn)}


def quarantine(conn: Connection, limit: int = 100) -> list[dict[str, Any]]:
    rows = Session(conn).scalars(select(Quarantine).order_by(Quarantine.id.desc()).limit(limit))
    return [{"id": q.id, "received_at": _iso(q.received_at), "topic": q.topic, "reason": q.reason, "size": q.size,
             "sha256": q.sha256, "kept_bytes": len(q.raw),
             "preview": q.raw[:200].decode("utf-8", "replace")} for q in rows]


def by_centre(conn: Connection, first: date, end: date) -> list[dict[str, Any]]:
    """Meals, subsidised meals and subsidy granted per centre for local dates first <= d < end."""
    meal = EventRow.kind == "meal"
    q = (select(EventRow.centre_id, func.count(), func.sum(case((EventRow.subsidy_fen > 0, 1), else_=0)),
                func.sum(EventRow.subsidy_fen), func.sum(case((EventRow.check_in != "face", 1), else_=0)))
         .where(meal, EventRow.local_date >= first, EventRow.local_date < end)
         .group_by(EventRow.centre_id).order_by(EventRow.centre_id))
    flags = {c: n for c, n in conn.execute(select(Adjustment.centre_id, func.sum(Adjustment.amount_fen))
                                           .where(Adjustment.local_date >= first, Adjustment.local_date < end)
                                           .group_by(Adjustment.centre_id))}
    return [{"centre_id": c, "meals": int(n), "subsidised_meals": int(s or 0), "subsidy_fen": int(f or 0),
             "staff_checked": int(st or 0), "adjustment_fen": int(flags.get(c) or 0)}
            for c, n, s, f, st in conn.execute(q)]


def month_range(month: str) -> tuple[date, date]:
    """'2026-11' -> (2026-11-01, 2026-12-01); ValueError with the expected form otherwise."""
    try:
        first = datetime.strptime(month, "%Y-%m").date()
    except ValueError as e:
        raise ValueError(f"month {month!r} is not YYYY-MM, e.g. 2026-11") from e
    return first, next_month(first)


def flagged(conn: Connection, limit: int = 200) -> list[dict[str, Any]]:
    rows = Session(conn).scalars(select(Adjustment).order_by(Adjustment.local_date.desc(), Adjustment.senior_id)
                        .limit(limit))
    return [{"event_id": a.event_id, "local_date": a.local_date.isoformat(), "senior_id": a.senior_id,
             "centre_id": a.centre_id, "reason": a.reason, "other_event_id": a.other_event_id,
             "amount_fen": a.amount_fen} for a in rows]


def senior_history(conn: Connection, senior_id: str, limit: int = 200) -> list[dict[str, Any]]:
    adj = {eid: reason for eid, reason in conn.execute(
        select(Adjustment.event_id, Adjustment.reason).where(Adjustment.senior_id == senior_id))}
    rows = list(Session(conn).scalars(select(EventRow).where(EventRow.senior_id == senior_id)
                             .order_by(EventRow.decided_at.desc()).limit(limit)))
    # a voided meal shows the void that reverses it; a void event shows its own reason
    meal_voids = voids.voids_of(conn, [e.event_id for e in rows if e.kind == "meal"])
    own = voids.described(conn, [e.event_id for e in rows if e.kind == "void"])
    return [{"event_id": e.event_id, "kind": e.kind, "local_date": e.local_date.isoformat(), "meal": e.meal,
             "centre_id": e.centre_id, "kiosk_id": e.kiosk_id, "decided_at": _iso(e.decided_at),
             "check_in": e.check_in, "subsidy_fen": e.subsidy_fen, "payable_fen": e.payable_fen,
             "flag": adj.get(e.event_id), "voids": e.voids, "staff_id": e.staff_id,
             "void": meal_voids.get(e.event_id) or own.get(e.event_id)} for e in rows]


def roster(conn: Connection) -> dict[str, Any]:
    """The roster link at a glance (book.kiosks_status, summed): version, kiosks behind it, erasures owed."""
    return book.summary(book.kiosks_status(conn))


def alerts(conn: Connection, limit: int = 100) -> list[dict[str, Any]]:
    rows = Session(conn).scalars(select(Alert).order_by(Alert.id.desc()).limit(limit))
    return [{"at": _iso(a.at), "kind": a.kind, "kiosk": f"{a.district}/{a.centre_id}/{a.kiosk_id}",
             "event_id": a.event_id, "detail": a.detail} for a in rows]
