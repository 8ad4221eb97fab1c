"""Voids: a manager reverses today's meal recorded by mistake (`meal-edge void`, the staff screen's 作废 button).

A void is a NEW event (`kind: "void"`) naming the meal's `event_id` in `voids`, with a reason code
(`void_reason`: wrong_person 认错人, double_serving 重复打卡, not_eaten 未用餐, other 其他 with a note) and the
manager's staff id. It repeats the meal's senior, meal window, date and money, so the district reverses the
subsidy without looking anything up. It goes through exactly the path a meal takes: `Store.record_meal` gives it
the kiosk's next seq, its chain link and signature, and its outbox row, and marks the meal voided in the same
transaction (the running daemon's publisher sends it like any other event).

The rules: only a manager may void; only a meal of today (the centre's local date) that is not voided yet, and
never a void (edge.meals.rules.void_refusal, checked again by the store inside its write transaction, so two
managers at once void a meal once). A voided meal no longer counts: the senior may check in again today, and
the day's subsidy is free again (edge.meals.rules.decide_meal ignores voided meals). Every void, and every
refused attempt, is a "void" line in the audit log under the staff id (a recorded void's line in the same
transaction as the void).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from edge.config import Config
from edge.delivery.events import MAX_VOID_NOTE, VOID_REASONS, MealEvent, event_topic, new_event_id
from edge.meals.feedback import Language
from edge.meals.rules import VoidTarget, void_refusal
from edge.store import EventRow, Store, StoreError, VoidRefused
from edge.store.auditlog import AuditEntry

MAX_STAFF_ID = 60
MANAGER = "manager"
_UUID = re.compile(r"^[0-9a-fA-F-]{36}$")

#: the reasons as staff choose them, in the order shown
REASON_WORDS: dict[str, dict[Language, str]] = {
    "wrong_person": {"zh": "认错人", "en": "Wrong person"},
    "double_serving": {"zh": "重复打卡", "en": "Recorded twice"},
    "not_eaten": {"zh": "未用餐", "en": "Left without eating"},
    "other": {"zh": "其他", "en": "Other"},
}


def reason_text(code: str | None, note: str | None, lang: Language) -> str:
    """A void's reason as shown to staff: the chosen reason, and the note after it."""
    words = REASON_WORDS.get(code or "", {}).get(lang, code or "?")
    if not note:
        return words
    return f"{words}：{note}" if lang == "zh" else f"{words}: {note}"


@dataclass(frozen=True)
class VoidResult:
    """What a void did. `ok` False: nothing recorded; `kind` says why (the screen says it in words)."""

    ok: bool
    #: ok: voided; not ok: no_name | not_manager | bad_reason | need_note | bad_note | not_found | is_void |
    #: already_voided | not_today | store_failed
    kind: str
    #: one line for the operator (English, like the other commands)
    message: str
    #: the meal (as it was before the void), when it was found
    meal: EventRow | None = None
    event_id: str | None = None
    seq: int | None = None


def clean_note(note: str | None) -> str | None:
    """The note as it goes into the event: stripped, single line; None when empty."""
    if note is None:
        return None
    text = " ".join(note.split())
    return text or None


def _audit(by: str, target: str, **details: object) -> AuditEntry:
    """A void's audit line: ids, the reason code and the outcome, never the senior's name (nor the note,
    which staff may have written a name into: it is in the event, which names no one else)."""
    return AuditEntry(by or "?", "void", f"event:{target}", details)


def _refuse(store: Store, by: str, event_id: str, kind: str, message: str, meal: EventRow | None = None,
            **details: object) -> VoidResult:
    """A refused void: audited (who tried, what, why) and said; nothing else written."""
    try:
        store.audit(_audit(by, event_id, outcome="refused", why=kind, **details))
    except StoreError as e:
        return VoidResult(False, "store_failed", f"{e}; nothing was recorded", meal)
    return VoidResult(False, kind, message, meal)


def void_meal(
    store: Store,
    cfg: Config,
    event_id: str,
    reason: str,
    note: str | None,
    by: str,
    *,
    now: datetime | None = None,
) -> VoidResult:
    """Void meal `event_id` now, as staff member `by` (a staff id the caller authenticated: the screen's login or
    the command's PIN). Refused (audited, nothing recorded) unless `by` is a manager, the reason is one of
    VOID_REASONS (other with a note) and edge.meals.rules.void_refusal allows it."""
    c = cfg.centre
    by = "".join(ch for ch in by if ch.isprintable()).strip()[:MAX_STAFF_ID]
    event_id = event_id.strip()[:36]
    if not by:
        return VoidResult(False, "no_name", "say who voids the meal (a manager's staff id)")
    account = store.get_staff(by)
    if account is None or account.role != MANAGER:
        return _refuse(store, by, event_id, "not_manager",
                       f"{by} is not a manager: only a manager may void a meal (meal-enroll staff add ID --role "
                       "manager)")
    note = clean_note(note)
    if reason not in VOID_REASONS:
        return _refuse(store, by, event_id, "bad_reason",
                       f"reason {reason!r}: choose one of {', '.join(VOID_REASONS)}", reason=str(reason)[:20])
    if note is not None and (len(note) > MAX_VOID_NOTE or not note.isprintable()):
        return _refuse(store, by, event_id, "bad_note", f"the note must be 1 to {MAX_VOID_NOTE} printable characters",
                       reason=reason)
    if reason == "other" and note is None:
        return _refuse(store, by, event_id, "need_note", "reason other needs a note saying why (--note TEXT)",
                       reason=reason)
    meal = store.event(event_id) if _UUID.match(event_id) else None
    when = (now or datetime.now(c.tz)).astimezone(c.tz)
    target = None if meal is None else VoidTarget(meal.kind, meal.local_date, meal.voided_by is not None)
    refusal = void_refusal(target, when.date())
    if refusal is not None or meal is None:
        kind = refusal or "not_found"
        return _refuse(store, by, event_id, kind, _why(kind, event_id, meal, when), meal, reason=reason)
    void = MealEvent(
        event_id=new_event_id(),
        kind="void",
        centre_id=c.id,
        district=c.district,
        kiosk_id=c.kiosk_id,
        senior_id=meal.senior_id,
        meal=meal.meal,
        local_date=when.date(),
        decided_at=when,
        price_fen=meal.price_fen,
        subsidy_fen=meal.subsidy_fen,
        payable_fen=meal.payable_fen,
        reasons=meal.reasons,
        check_in="manual",
        staff_id=by,
        match={},
        source_ts=None,
        voids=meal.event_id,
        void_reason=reason,
        void_note=note,
    )
    topic = event_topic(cfg.mqtt.topic_prefix, c.district, c.id, c.kiosk_id)
    audit = _audit(by, meal.event_id, outcome="voided", reason=reason, void_event_id=void.event_id,
                   senior_id=meal.senior_id, subsidy_fen=meal.subsidy_fen, payable_fen=meal.payable_fen)
    try:
        stored = store.record_meal(void, topic, audit=audit)
    except VoidRefused as e:
        # voided meanwhile (another manager, the command line): the store's own check, in its transaction
        return _refuse(store, by, event_id, e.kind, _why(e.kind, event_id, meal, when), meal, reason=reason)
    except StoreError as e:
        return VoidResult(False, "store_failed", f"{e}; nothing was recorded", meal)
    return VoidResult(
        True, "voided",
        f"meal {meal.event_id} ({meal.senior_id}, {meal.meal} at {meal.decided_at.astimezone(c.tz):%H:%M}, "
        f"subsidy {meal.subsidy_fen / 100:.2f}, paid {meal.payable_fen / 100:.2f}) voided by {by} ({reason}); "
        f"void event {stored.event_id} seq {stored.seq}",
        meal, stored.event_id, stored.seq,
    )


def _why(kind: str, event_id: str, meal: EventRow | None, when: datetime) -> str:
    if kind == "not_found" or meal is None:
        return f"no meal event {event_id!r} in this kiosk's store (see meal-edge events)"
    if kind == "is_void":
        return f"event {event_id} is itself a void: a void cannot be voided (check the senior in again instead)"
    if kind == "already_voided":
        return f"meal {event_id} is already voided (by event {meal.voided_by})"
    return (f"meal {event_id} is of {meal.local_date}, not today ({when.date()}): only today's meals can be "
            "voided; ask the district to correct an earlier day")
