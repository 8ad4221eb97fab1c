"""District-wide subsidy rules, pure: at most one subsidised meal per senior per local date; voids reverse.

Each kiosk decides offline and grants at most one subsidy per senior per day on its own, so only the district
sees a senior subsidised at two centres on one day. The earliest `decided_at` (an instant: centres may use
different UTC offsets) stands, ties broken by event_id so every run decides the same; the others are
flagged, with both events kept. A voided meal's subsidy is reversed whatever else happened that day, and a
voided meal does not count against the day's limit (the next subsidised meal that day stands instead).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime

DOUBLE = "double_subsidy"
VOIDED = "voided"


@dataclass(frozen=True)
class Meal:
    event_id: str
    senior_id: str
    local_date: date
    centre_id: str
    decided_at: datetime
    subsidy_fen: int


@dataclass(frozen=True)
class Flag:
    event_id: str
    senior_id: str
    local_date: date
    centre_id: str
    reason: str
    #: the meal that stands (double subsidy) or the void event (voided)
    other_event_id: str | None
    amount_fen: int


def flags_for_day(meals: Iterable[Meal], voids: dict[str, str], cap_fen: int = 300) -> list[Flag]:
    """The adjustments for one senior's meals of one local date. `voids`: voided meal id -> void event id."""
    out: list[Flag] = []
    granted = 0
    standing: str | None = None
    for m in sorted(meals, key=lambda m: (m.decided_at, m.event_id)):
        if m.subsidy_fen <= 0:
            continue
        if m.event_id in voids:
            out.append(Flag(m.event_id, m.senior_id, m.local_date, m.centre_id, VOIDED, voids[m.event_id],
                            m.subsidy_fen))
            continue
        excess = min(m.subsidy_fen, max(0, granted + m.subsidy_fen - cap_fen))
        if excess:
            out.append(Flag(m.event_id, m.senior_id, m.local_date, m.centre_id, DOUBLE, standing, excess))
        else:
            standing = m.event_id
        granted += m.subsidy_fen - excess
    return out


def flags(meals: Iterable[Meal], voids: dict[str, str], cap_fen: int = 300) -> list[Flag]:
    """All adjustments for any set of meals, grouped by senior and local date."""
    days: dict[tuple[str, date], list[Meal]] = {}
    for m in meals:
        days.setdefault((m.senior_id, m.local_date), []).append(m)
    out: list[Flag] = []
    for key in sorted(days):
        out.extend(flags_for_day(days[key], voids, cap_fen))
    return out
