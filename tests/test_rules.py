"""Table-driven tests of every rule: meal windows, age (birthdays, 29 February), hukou, status,
daily subsidy limit, repeats, money."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from edge.config import DEFAULT_CONFIG, MealWindow, RulesConfig, parse_config
from edge.meals.rules import (
    ALREADY_SERVED,
    DAILY_LIMIT,
    DECEASED,
    NOT_LOCAL_HUKOU,
    NOT_SERVING,
    SUBSIDISED,
    SUSPENDED,
    UNDER_AGE,
    PriorMeal,
    Senior,
    age_on,
    decide_meal,
    meal_window,
)

SH = ZoneInfo("Asia/Shanghai")
RULES = parse_config(DEFAULT_CONFIG).rules
DISTRICT = "xuhui"


def at(hhmm: str, day: date = date(2026, 11, 30), tz: ZoneInfo = SH) -> datetime:
    h, m = map(int, hhmm.split(":"))
    return datetime(day.year, day.month, day.day, h, m, tzinfo=tz)


def senior(birth: date = date(1950, 5, 1), hukou: str = DISTRICT, status: str = "active") -> Senior:
    return Senior("S1", "王芳", birth, hukou, status)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "birth, on, age",
    [
        (date(1956, 11, 30), date(2026, 11, 30), 70),  # birthday today
        (date(1956, 12, 1), date(2026, 11, 30), 69),  # birthday tomorrow
        (date(1956, 11, 29), date(2026, 11, 30), 70),
        (date(1956, 2, 29), date(2026, 2, 28), 69),  # leap-day birthday, common year: not yet
        (date(1956, 2, 29), date(2026, 3, 1), 70),  # ... reached on 1 March
        (date(1956, 2, 29), date(2028, 2, 29), 72),  # leap year: on the day
        (date(1956, 2, 29), date(2028, 2, 28), 71),
        (date(1956, 1, 1), date(2026, 12, 31), 70),
    ],
)
def test_age_on(birth: date, on: date, age: int) -> None:
    assert age_on(birth, on) == age


@pytest.mark.parametrize(
    "hhmm, meal",
    [
        ("10:29", None),
        ("10:30", "lunch"),  # start inclusive
        ("12:00", "lunch"),
        ("13:29", "lunch"),
        ("13:30", None),  # end exclusive
        ("16:30", "dinner"),
        ("18:29", "dinner"),
        ("18:30", None),
        ("03:00", None),
    ],
)
def test_meal_window(hhmm: str, meal: str | None) -> None:
    w = meal_window(RULES.meals, at(hhmm))
    assert (w.name if w else None) == meal


# (description, senior, local time, prior meals today, kind, meal, subsidy, payable, reasons)
CASES = [
    ("eligible lunch", senior(), "11:00", [], "meal", "lunch", 300, 700, (SUBSIDISED,)),
    ("eligible dinner", senior(), "17:00", [], "meal", "dinner", 300, 700, (SUBSIDISED,)),
    ("repeat in the same window", senior(), "12:00", [PriorMeal("lunch", 300)], "repeat", "lunch", 0, 0,
     (ALREADY_SERVED,)),
    ("repeat of a full-price meal", senior(), "12:00", [PriorMeal("lunch", 0)], "repeat", "lunch", 0, 0,
     (ALREADY_SERVED,)),
    ("second meal of the day: no second subsidy", senior(), "17:00", [PriorMeal("lunch", 300)], "meal",
     "dinner", 0, 1000, (DAILY_LIMIT,)),
    ("second meal after a full-price lunch keeps the subsidy", senior(), "17:00", [PriorMeal("lunch", 0)],
     "meal", "dinner", 300, 700, (SUBSIDISED,)),
    ("69 today: full price", senior(birth=date(1956, 12, 1)), "11:00", [], "meal", "lunch", 0, 1000,
     (UNDER_AGE,)),
    ("70th birthday today: subsidised", senior(birth=date(1956, 11, 30)), "11:00", [], "meal", "lunch", 300,
     700, (SUBSIDISED,)),
    ("hukou elsewhere: full price", senior(hukou="pudong"), "11:00", [], "meal", "lunch", 0, 1000,
     (NOT_LOCAL_HUKOU,)),
    ("hukou compared without case or spaces", senior(hukou=" XuHui "), "11:00", [], "meal", "lunch", 300, 700,
     (SUBSIDISED,)),
    ("young and not local: both reasons", senior(birth=date(1980, 1, 1), hukou="pudong"), "11:00", [], "meal",
     "lunch", 0, 1000, (UNDER_AGE, NOT_LOCAL_HUKOU)),
    ("suspended: no meal", senior(status="suspended"), "11:00", [], "refused", None, 0, 0, (SUSPENDED,)),
    ("deceased: no meal", senior(status="deceased"), "11:00", [], "refused", None, 0, 0, (DECEASED,)),
    ("suspended outside hours is still refused", senior(status="suspended"), "20:00", [], "refused", None, 0, 0,
     (SUSPENDED,)),
    ("not serving", senior(), "14:00", [], "closed", None, 0, 0, (NOT_SERVING,)),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_decide_meal(case: tuple) -> None:  # type: ignore[type-arg]
    _, s, hhmm, prior, kind, meal, subsidy, payable, reasons = case
    r = decide_meal(s, at(hhmm), prior, RULES, DISTRICT, SH)
    assert (r.kind, r.meal, r.subsidy_fen, r.payable_fen, r.reasons) == (kind, meal, subsidy, payable, reasons)
    if kind == "meal":
        assert r.price_fen == 1000
        assert r.payable_fen == r.price_fen - r.subsidy_fen


def test_windows_follow_the_centre_zone_not_utc() -> None:
    # 03:00 UTC is 11:00 in Shanghai: lunch. The same instant is 22:00 the day before in New York.
    utc = datetime(2026, 11, 30, 3, 0, tzinfo=UTC)
    assert decide_meal(senior(), utc, [], RULES, DISTRICT, SH).meal == "lunch"
    ny = ZoneInfo("America/New_York")
    assert decide_meal(senior(), utc, [], RULES, DISTRICT, ny).kind == "closed"


def test_age_uses_the_local_date() -> None:
    # 2026-11-29 17:00 UTC is already 30 November 01:00 in Shanghai: the 70th birthday.
    s = senior(birth=date(1956, 11, 30))
    rules = RULES.model_copy(update={"meals": [MealWindow(name="night", start="00:00", end="02:00", price_fen=800)]})
    r = decide_meal(s, datetime(2026, 11, 29, 17, 0, tzinfo=UTC), [], rules, DISTRICT, SH)
    assert (r.kind, r.subsidy_fen, r.payable_fen) == ("meal", 300, 500)


@pytest.mark.parametrize(
    "subsidy, price, per_day, prior, want_subsidy, want_payable",
    [
        (300, 1000, 1, [], 300, 700),
        (1200, 1000, 1, [], 1000, 0),  # subsidy larger than the price: payable never negative
        (300, 0, 1, [], 0, 0),  # a free meal
        (300, 1000, 2, [PriorMeal("breakfast", 300)], 300, 700),  # two subsidised meals a day allowed
        (300, 1000, 0, [], 0, 1000),  # subsidy switched off
    ],
)
def test_money(subsidy: int, price: int, per_day: int, prior: list[PriorMeal], want_subsidy: int,
               want_payable: int) -> None:
    rules = RulesConfig(
        subsidy_fen=subsidy,
        subsidised_meals_per_day=per_day,
        meals=[MealWindow(name="lunch", start="10:30", end="13:30", price_fen=price)],
    )
    r = decide_meal(senior(), at("11:00"), prior, rules, DISTRICT, SH)
    assert (r.subsidy_fen, r.payable_fen) == (want_subsidy, want_payable)
    assert isinstance(r.subsidy_fen, int) and isinstance(r.payable_fen, int)
    assert r.payable_fen >= 0


def test_naive_datetime_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        decide_meal(senior(), datetime(2026, 11, 30, 11, 0), [], RULES, DISTRICT, SH)


def test_dst_zone_day_boundary() -> None:
    # A centre configured in a zone with DST still gets local wall-clock windows.
    berlin = ZoneInfo("Europe/Berlin")
    summer = datetime(2026, 7, 1, 9, 0, tzinfo=UTC)  # 11:00 CEST
    assert decide_meal(senior(), summer, [], RULES, DISTRICT, berlin).meal == "lunch"
    winter = summer.replace(month=12) + timedelta(hours=0)  # 10:00 CET: not serving yet
    assert decide_meal(senior(), winter, [], RULES, DISTRICT, berlin).kind == "closed"
