"""Manual check-in: staff record a meal for a chosen senior (`meal-edge checkin ID --by STAFF_ID`, staff screen).

About 1 to 2 in 100 seniors are not recognised on a given day (docs/accuracy.md) and are told "please see
staff". Staff then pick the senior and check them in by hand. The meal goes through exactly what the kiosk
uses: the same rules (`decide_meal`, as of now), the same store transaction (one meal per senior, meal and
day; the kiosk's sequence and the outbox), so the running daemon's publisher sends it like any other. The
event says `check_in: "manual"` and who did it (`staff_id`: the staff account logged in on the staff screen,
or whose PIN the command was given), so the district can tell hand-recorded meals from face check-ins. Every
manual check-in leaves a "checkin" line in the audit log under that staff id (a recorded meal in the same
transaction as the meal: none without the other).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from edge.config import Config
from edge.delivery.events import event_topic
from edge.meals.recorded import MealFields, meal_event, says_meal, says_not, subsidy_note, why_not, yuan
from edge.meals.rules import decide_meal
from edge.store import AlreadyServed, Store, StoreError
from edge.store.auditlog import AuditEntry

MAX_STAFF_ID = 60


@dataclass(frozen=True)
class CheckinResult(MealFields):
    """What a manual check-in did. `ok` False: nothing recorded (`kind` says why)."""

    ok: bool
    #: ok: meal | repeat | refused | closed; not ok: not_found | no_name | store_failed
    kind: str
    #: one line for the operator (English, like the other commands)
    message: str
    senior_id: str
    name: str | None = None


def _audit(by: str, senior_id: str, **details: object) -> AuditEntry:
    """The audit line of a manual check-in: ids and the outcome, never the senior's name."""
    return AuditEntry(by, "checkin", f"senior:{senior_id}", details)


def manual_checkin(store: Store, cfg: Config, senior_id: str, by: str, *, now: datetime | None = None) -> CheckinResult:
    """Record a meal for `senior_id` now, by staff member `by` (a staff id the caller authenticated). A meal
    already had, a suspended senior or a time outside the meal windows records nothing and says so (audited
    too); so does a store failure (nothing half-written)."""
    c = cfg.centre
    tz = c.tz
    by = "".join(ch for ch in by if ch.isprintable()).strip()[:MAX_STAFF_ID]
    if not by:
        return CheckinResult(False, "no_name", "say who checks the senior in (--by STAFF_ID)", senior_id)
    senior = store.get_senior(senior_id)
    if senior is None:
        return CheckinResult(False, "not_found", f"no senior with id {senior_id!r} on this kiosk's roster", senior_id)
    when = (now or datetime.now(tz)).astimezone(tz)
    prior = store.meals_on(senior.senior_id, when.date())
    r = decide_meal(senior, when, prior, cfg.rules, c.district, tz)
    who = f"{senior.name} ({senior.senior_id})"
    common = dict(senior_id=senior.senior_id, name=senior.name, meal=r.meal, reasons=r.reasons)
    if r.kind != "meal":
        try:
            store.audit(_audit(by, senior.senior_id, outcome=r.kind, reasons=list(r.reasons)))
        except StoreError as e:
            return CheckinResult(False, "store_failed", f"{e}; nothing was recorded", senior.senior_id, senior.name)
        return CheckinResult(
            True, r.kind, f"no meal recorded for {who}: {why_not(r)}", says=says_not(r, c.language),
            **common,  # type: ignore[arg-type]
        )
    event = meal_event(
        cfg, r, senior.senior_id, kiosk_id=c.kiosk_id, local_date=when.date(), decided_at=when,
        check_in="manual", staff_id=by, match={}, source_ts=None,
    )
    topic = event_topic(cfg.mqtt.topic_prefix, c.district, c.id, c.kiosk_id)
    try:
        audit = _audit(by, senior.senior_id, outcome="meal", event_id=event.event_id, meal=event.meal)
        stored = store.record_meal(event, topic, audit=audit)
    except AlreadyServed:
        # recorded meanwhile by the kiosk or another staff member: the rules now say repeat
        return manual_checkin(store, cfg, senior_id, by, now=now)
    except StoreError as e:
        return CheckinResult(False, "store_failed", f"{e}; nothing was recorded", senior.senior_id, senior.name)
    return CheckinResult(
        True,
        "meal",
        f"{who} checked in by hand by {by}: {r.meal} at {when:%H:%M}, pays {yuan(r.payable_fen)} yuan "
        f"({subsidy_note(r)}); event {stored.event_id} seq {stored.seq}",
        price_fen=r.price_fen,
        subsidy_fen=r.subsidy_fen,
        payable_fen=r.payable_fen,
        event_id=stored.event_id,
        seq=stored.seq,
        says=says_meal(r, c.language, senior.name),
        **common,  # type: ignore[arg-type]
    )
