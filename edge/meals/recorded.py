"""What the paths that record a meal share: the meal event made from the rules' answer (the kiosk's desk,
edge/meals/desk.py; a manual check-in, edge/meals/checkin.py; an accepted confirmation, edge/meals/confirm.py),
and, for the two staff paths, the meal fields of their result and the words for the operator and the kiosk.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from edge.config import Config
from edge.delivery.events import MealEvent, new_event_id
from edge.meals.feedback import Language, message, reasons_text
from edge.meals.rules import RuleResult


def yuan(fen: int) -> str:
    """An amount for the operator: 300 -> "3.00"."""
    return f"{fen // 100}.{fen % 100:02d}"


def meal_event(
    cfg: Config,
    r: RuleResult,
    senior_id: str,
    *,
    kiosk_id: str,
    local_date: date,
    decided_at: datetime,
    **how: Any,
) -> MealEvent:
    """The meal event for a rules' answer of kind "meal" (a new event id; amounts and reasons from `r`). `how`:
    the fields that say how it was checked in (match, check_in + staff_id, confirmed_by, source_ts)."""
    c = cfg.centre
    return MealEvent(
        event_id=new_event_id(),
        kind="meal",
        centre_id=c.id,
        district=c.district,
        kiosk_id=kiosk_id,
        senior_id=senior_id,
        meal=r.meal or "",
        local_date=local_date,
        decided_at=decided_at,
        price_fen=r.price_fen,
        subsidy_fen=r.subsidy_fen,
        payable_fen=r.payable_fen,
        reasons=r.reasons,
        **how,
    )


@dataclass(frozen=True, kw_only=True)
class MealFields:
    """The meal part of a staff action's result (CheckinResult, ConfirmResult): what the rules said and, for a
    recorded meal, its amounts and event."""

    meal: str | None = None
    price_fen: int = 0
    subsidy_fen: int = 0
    payable_fen: int = 0
    reasons: tuple[str, ...] = ()
    event_id: str | None = None
    seq: int | None = None
    #: what the kiosk would say to the senior, in the centre's language (empty when refused)
    says: str = ""


def why_not(r: RuleResult) -> str:
    """Why the rules recorded no meal (repeat, refused, closed), for the operator."""
    return reasons_text(r.reasons, "en") or r.kind


def says_not(r: RuleResult, lang: Language) -> str:
    """What the kiosk would say for a rules' answer that records no meal."""
    return message(r.kind, r.reasons, lang=lang)


def says_meal(r: RuleResult, lang: Language, name: str) -> str:
    """What the kiosk would say for a recorded meal: the senior's name, the meal, what they pay."""
    return message(
        "meal", r.reasons, lang=lang, name=name, meal=r.meal, payable_fen=r.payable_fen, subsidy_fen=r.subsidy_fen
    )


def subsidy_note(r: RuleResult) -> str:
    """The subsidy of a recorded meal for the operator ("subsidy 3.00"), or why there is none."""
    return f"subsidy {yuan(r.subsidy_fen)}" if r.subsidy_fen else reasons_text(r.reasons, "en")
