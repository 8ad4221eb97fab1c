"""Eligibility, meal windows and the subsidy: pure functions of values, no I/O, no clock.

Money is integer fen. `now` is always an aware datetime; the local date and time come from the
centre's time zone, so "today" and the meal windows follow the centre's wall clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Literal
from zoneinfo import ZoneInfo

from edge.config import MealWindow, RulesConfig

Status = Literal["active", "suspended", "deceased"]
STATUSES: tuple[Status, ...] = ("active", "suspended", "deceased")


@dataclass(frozen=True)
class Senior:
    senior_id: str
    name: str
    birth_date: date
    hukou: str
    status: Status = "active"


@dataclass(frozen=True)
class PriorMeal:
    """A meal the senior already had on the same local date."""

    meal: str
    subsidy_fen: int
    #: reversed by a void (wrong person, served twice, left without eating): as if it had not been recorded
    voided: bool = False


# Reason codes go into events (machine-readable); edge.meals.feedback turns them into words.
SUBSIDISED = "subsidised"
UNDER_AGE = "under_min_age"
NOT_LOCAL_HUKOU = "hukou_not_local"
DAILY_LIMIT = "daily_subsidy_used"
SUSPENDED = "status_suspended"
DECEASED = "status_deceased"
NOT_SERVING = "outside_meal_window"
ALREADY_SERVED = "already_served_this_meal"

Kind = Literal["meal", "repeat", "refused", "closed"]


@dataclass(frozen=True)
class RuleResult:
    kind: Kind
    meal: str | None
    price_fen: int = 0
    subsidy_fen: int = 0
    payable_fen: int = 0
    reasons: tuple[str, ...] = field(default_factory=tuple)


def local(now: datetime, tz: ZoneInfo) -> datetime:
    if now.tzinfo is None:
        raise ValueError("rules need an aware datetime")
    return now.astimezone(tz)


def meal_window(meals: list[MealWindow], local_now: datetime) -> MealWindow | None:
    """The window serving at this local time; start inclusive, end exclusive."""
    t = local_now.time().replace(tzinfo=None)
    for m in meals:
        if m.start_time <= t < m.end_time:
            return m
    return None


def age_on(birth: date, on: date) -> int:
    """Completed years on `on`. A 29 February birthday is reached on 1 March in common years,
    so nobody is counted older than they are (the subsidy never starts a day early)."""
    years = on.year - birth.year
    if (on.month, on.day) < (birth.month, birth.day):
        years -= 1
    return years


def ineligibility(senior: Senior, on: date, rules: RulesConfig, district: str) -> list[str]:
    """Why an active senior gets no subsidy regardless of today's meals (empty: eligible)."""
    reasons = []
    if age_on(senior.birth_date, on) < rules.min_age:
        reasons.append(UNDER_AGE)
    if senior.hukou.strip().casefold() != district.strip().casefold():
        reasons.append(NOT_LOCAL_HUKOU)
    return reasons


def decide_meal(
    senior: Senior,
    now: datetime,
    prior: list[PriorMeal],
    rules: RulesConfig,
    district: str,
    tz: ZoneInfo,
) -> RuleResult:
    """What one recognised senior gets now: a meal (with or without subsidy), a repeat, or a refusal."""
    if senior.status == "deceased":
        return RuleResult("refused", None, reasons=(DECEASED,))
    if senior.status == "suspended":
        return RuleResult("refused", None, reasons=(SUSPENDED,))
    when = local(now, tz)
    window = meal_window(rules.meals, when)
    if window is None:
        return RuleResult("closed", None, reasons=(NOT_SERVING,))
    # a voided meal was never had: neither a repeat nor the day's subsidy
    prior = [p for p in prior if not p.voided]
    if any(p.meal == window.name for p in prior):
        return RuleResult("repeat", window.name, reasons=(ALREADY_SERVED,))
    reasons = ineligibility(senior, when.date(), rules, district)
    if not reasons and sum(1 for p in prior if p.subsidy_fen > 0) >= rules.subsidised_meals_per_day:
        reasons.append(DAILY_LIMIT)
    price = window.price_fen
    subsidy = 0 if reasons else min(rules.subsidy_fen, price)
    return RuleResult(
        "meal",
        window.name,
        price_fen=price,
        subsidy_fen=subsidy,
        payable_fen=max(0, price - subsidy),
        reasons=tuple(reasons) if reasons else (SUBSIDISED,),
    )


def next_meal(meals: list[MealWindow], local_now: datetime) -> tuple[MealWindow, bool] | None:
    """The next window to start after this local time, and whether it is tomorrow's (the earliest window of
    the day, once today's have all started); None without any windows."""
    if not meals:
        return None
    t = local_now.time().replace(tzinfo=None)
    later = [m for m in meals if m.start_time > t]
    if later:
        return min(later, key=lambda m: m.start_time), False
    return min(meals, key=lambda m: m.start_time), True


@dataclass(frozen=True)
class VoidTarget:
    """The event a void would reverse, as the store has it."""

    kind: str
    local_date: date
    voided: bool


# Why a void is refused (codes; edge.meals.void says them in words)
VOID_NOT_FOUND = "not_found"
VOID_OF_VOID = "is_void"
VOID_TWICE = "already_voided"
VOID_NOT_TODAY = "not_today"


def void_refusal(target: VoidTarget | None, today: date) -> str | None:
    """Why this event cannot be voided today (None: it can). Only a meal of today (the centre's local date) that
    no void has reversed yet: an earlier day's subsidy is settled by the district, a void is not undone by
    another void, and a meal is voided once."""
    if target is None:
        return VOID_NOT_FOUND
    if target.kind != "meal":
        return VOID_OF_VOID
    if target.voided:
        return VOID_TWICE
    if target.local_date != today:
        return VOID_NOT_TODAY
    return None
