"""Every sentence the kiosk can show and say (edge/meals/feedback.py): amounts and times said in words, never
digit by digit; no private reason in front of the queue; each sentence held on screen as long as it is said."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from datetime import time

import pytest

from edge.meals import feedback, rules
from edge.meals.feedback import KINDS, Language, NextMeal, Words, words
from edge.meals.speech import hold_seconds, read_digit_by_digit, speech_seconds

LANGS: tuple[Language, ...] = ("zh", "en")
ALL_REASONS = (rules.SUBSIDISED, rules.UNDER_AGE, rules.NOT_LOCAL_HUKOU, rules.DAILY_LIMIT, rules.SUSPENDED,
               rules.DECEASED, rules.NOT_SERVING, rules.ALREADY_SERVED)
#: words that would tell the queue why a senior pays full price or is refused
PRIVATE = re.compile(r"户籍|年龄|补贴已使用|暂停|去世|household|registration|age\b|suspend|deceased|already used",
                     re.IGNORECASE)


def every_sentence(lang: Language) -> Iterator[tuple[str, Words]]:
    """Each kind, each meal name, amounts from 0 to ¥30 in 5-fen steps, with and without subsidy, every next
    meal time of a day in quarter hours, today and tomorrow."""
    for kind in KINDS:
        if kind == "meal":
            for meal, pay, sub in itertools.product(("breakfast", "lunch", "dinner", "supper"), range(0, 3001, 5),
                                                    (0, 300)):
                yield f"meal {meal} {pay} {sub}", words(kind, lang=lang, name="王芳", meal=meal, payable_fen=pay,
                                                          subsidy_fen=sub)
        elif kind == "closed":
            yield "closed", words(kind, lang=lang)
            for h, m, tomorrow in itertools.product(range(24), (0, 5, 15, 30, 45), (False, True)):
                yield f"closed {h}:{m}", words(kind, lang=lang, next_meal=NextMeal("lunch", time(h, m), tomorrow))
        else:
            yield kind, words(kind, lang=lang)


@pytest.mark.parametrize("lang", LANGS)
def test_no_amount_or_time_is_said_digit_by_digit(lang: Language) -> None:
    n = 0
    for label, w in every_sentence(lang):
        assert w.speech and w.screen, label
        assert read_digit_by_digit(w.speech) == [], (label, w.speech)
        assert not re.search(r"\d", w.speech), (label, w.speech)
        n += 1
    assert n > 4000


def test_the_examples_people_say() -> None:
    zh = words("meal", lang="zh", name="王芳", meal="lunch", payable_fen=700, subsidy_fen=300)
    assert zh.speech == "王芳，午餐签到成功，请付七元。"
    assert zh.screen == "王芳，您好！午餐签到成功，请付 ¥7.00（已补贴 ¥3.00）"
    assert "七元五角" in words("meal", lang="zh", name="王芳", meal="lunch", payable_fen=750).speech
    assert "十二元零五分" in words("meal", lang="zh", name="王芳", meal="lunch", payable_fen=1205).speech
    full = words("meal", lang="zh", name="王芳", meal="lunch", payable_fen=1000)
    assert full.speech == "王芳，午餐签到成功，按原价，请付十元。" and full.screen.endswith("请付 ¥10.00（按原价）")
    en = words("meal", lang="en", name="Wang Fang", meal="lunch", payable_fen=750, subsidy_fen=300)
    assert en.speech == "Wang Fang, lunch checked in. Please pay seven yuan fifty."
    closed = words("closed", lang="zh", next_meal=NextMeal("lunch", time(10, 30)))
    assert closed.screen == "现在不是供餐时间。下一餐：午餐 10:30"
    assert closed.speech == "现在不是供餐时间。午餐上午十点半开始"
    assert words("closed", lang="en", next_meal=NextMeal("breakfast", time(7, 0), True)).screen.endswith(
        "Next: tomorrow, breakfast at 7:00")


@pytest.mark.parametrize("lang", LANGS)
def test_no_private_reason_in_front_of_the_queue(lang: Language) -> None:
    for label, w in every_sentence(lang):
        assert not PRIVATE.search(w.screen + " " + w.speech), (label, w)
    for r in ALL_REASONS:  # message() takes the reasons a decision carries, and never says them
        for kind in ("meal", "refused", "repeat", "closed"):
            shown = feedback.message(kind, (r,), lang=lang, name="王芳", meal="lunch", payable_fen=1000)
            assert not PRIVATE.search(shown), (kind, r, shown)
    # staff still get every reason in words
    assert "户籍" in feedback.reasons_text((rules.NOT_LOCAL_HUKOU,), "zh")


@pytest.mark.parametrize("lang", LANGS)
def test_every_sentence_stays_on_screen_while_it_is_said(lang: Language) -> None:
    longest = max((speech_seconds(w.speech, lang), label) for label, w in every_sentence(lang))
    for _label, w in every_sentence(lang):
        assert hold_seconds(w.speech, lang, 8.0) >= speech_seconds(w.speech, lang) + 1.0
    # the usual sentence (a subsidised meal) fits the default 8 s; longer ones hold the screen longer
    usual = words("meal", lang=lang, name="王芳", meal="lunch", payable_fen=700, subsidy_fen=300).speech
    assert speech_seconds(usual, lang) < 8.0
    assert longest[0] < 12.0, longest
