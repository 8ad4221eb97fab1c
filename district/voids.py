"""Voids as the district office reads them: which void stands for a meal, its reason in plain words, when and by
whom. The subsidy itself is reversed by reconcile/watch (an Adjustment `voided`); this module only describes.

The reason codes are the event contract's (edge.delivery.events.VOID_REASONS); the words are the staff screen's
(edge.meals.void.REASON_WORDS, which the district may not import: scripts/check_imports.py keeps the kiosk out of
the district); tests/test_district_web.py fails if the two lists ever differ.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import UTC
from typing import Any

from sqlalchemy import Connection, select

from district.db.models import Event as EventRow
from district.watch import void_map

log = logging.getLogger(__name__)

#: code -> (Chinese, English), as the kiosk's staff screen words them
REASON_WORDS: dict[str, tuple[str, str]] = {
    "wrong_person": ("认错人", "Wrong person"),
    "double_serving": ("重复打卡", "Recorded twice"),
    "not_eaten": ("未用餐", "Left without eating"),
    "other": ("其他", "Other"),
}


def reason_words(code: str | None) -> tuple[str, str]:
    """(zh, en) for a reason code; an unknown code (a newer kiosk) is shown as it came, never dropped."""
    return REASON_WORDS.get(code or "", (code or "?", code or "?"))


def _iso(row: Any) -> str:
    return str(row.decided_at.astimezone(UTC).isoformat(timespec="seconds"))


def describe(row: Any) -> dict[str, Any]:
    """A stored void event (an events row with raw) as shown: reason code and words, note, time, staff, kiosk."""
    try:
        obj = json.loads(row.raw)
    except ValueError:  # stored events were validated; a broken one is still shown, without its reason
        log.warning("void %s: stored payload is not JSON", row.event_id)
        obj = {}
    code = obj.get("void_reason")
    zh, en = reason_words(code)
    return {"event_id": row.event_id, "voids": row.voids, "reason": code, "reason_zh": zh, "reason_en": en,
            "note": obj.get("void_note"), "at": _iso(row), "staff_id": row.staff_id,
            "kiosk": f"{row.centre_id}/{row.kiosk_id}"}


def _rows(conn: Connection, event_ids: Sequence[str]) -> list[Any]:
    out: list[Any] = []
    for i in range(0, len(event_ids), 900):
        out.extend(conn.execute(select(EventRow.event_id, EventRow.voids, EventRow.raw, EventRow.decided_at,
                                       EventRow.staff_id, EventRow.centre_id, EventRow.kiosk_id)
                                .where(EventRow.event_id.in_(event_ids[i:i + 900]))))
    return out


def voids_of(conn: Connection, meal_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """meal id -> the void that stands for it (the first stored, as the settlement counts it), described."""
    standing = void_map(conn, list(meal_ids))
    return {str(r.voids): describe(r) for r in _rows(conn, sorted(set(standing.values())))}


def described(conn: Connection, void_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """void event id -> described (for void events listed themselves, e.g. in a senior's history)."""
    return {r.event_id: describe(r) for r in _rows(conn, sorted(set(void_ids)))}
