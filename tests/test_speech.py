"""Spoken amounts and times (edge/meals/speech.py), and how long the kiosk's voice takes."""

from __future__ import annotations

import shutil
import subprocess
import wave
from datetime import time
from pathlib import Path

import pytest

from edge.meals.speech import (
    clock_en,
    clock_zh,
    hold_seconds,
    number_en,
    number_zh,
    read_digit_by_digit,
    speech_seconds,
    yuan_en,
    yuan_zh,
)


@pytest.mark.parametrize(
    ("n", "said"),
    [
        (0, "零"), (1, "一"), (10, "十"), (12, "十二"), (20, "二十"), (100, "一百"), (105, "一百零五"),
        (110, "一百一十"), (1000, "一千"), (1005, "一千零五"), (1050, "一千零五十"), (10000, "一万"),
        (10005, "一万零五"), (100005, "十万零五"), (120000, "十二万"), (1000_0000, "一千万"),
        (1_0000_0000, "一亿"), (1_0001_0000, "一亿零一万"),
    ],
)
def test_numbers_in_chinese(n: int, said: str) -> None:
    assert number_zh(n) == said


@pytest.mark.parametrize(
    ("fen", "said"),
    [
        (700, "七元"), (750, "七元五角"), (1205, "十二元零五分"), (1255, "十二元五角五分"), (50, "五角"),
        (5, "五分"), (55, "五角五分"), (0, "零元"), (200, "两元"), (220, "两元两角"), (1000, "十元"),
        (1200, "十二元"), (2000, "二十元"), (10050, "一百元五角"), (10005, "一百元零五分"), (100, "一元"),
    ],
)
def test_amounts_in_chinese_as_people_say_them(fen: int, said: str) -> None:
    assert yuan_zh(fen) == said


@pytest.mark.parametrize(
    ("fen", "said"),
    [
        (700, "seven yuan"), (750, "seven yuan fifty"), (1205, "twelve yuan and five fen"), (50, "fifty fen"),
        (0, "zero yuan"), (100, "one yuan"), (1234, "twelve yuan thirty-four"), (10500, "one hundred and five yuan"),
    ],
)
def test_amounts_in_english(fen: int, said: str) -> None:
    assert yuan_en(fen) == said


@pytest.mark.parametrize("bad", [-1, 7.0, True, "700"])
def test_an_amount_is_whole_fen(bad: object) -> None:
    with pytest.raises(ValueError, match="fen"):
        yuan_zh(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="fen"):
        yuan_en(bad)  # type: ignore[arg-type]


def test_every_amount_up_to_a_hundred_yuan_is_words_only() -> None:
    for fen in range(0, 10001):
        zh, en = yuan_zh(fen), yuan_en(fen)
        assert not any(c.isdigit() for c in zh + en), fen
        assert zh.endswith(("元", "角", "分")), (fen, zh)
        assert zh.count("零") <= 1 or fen == 0, (fen, zh)
    assert number_en(1_234_567) == "one million two hundred and thirty-four thousand five hundred and sixty-seven"


@pytest.mark.parametrize(
    ("t", "zh", "en"),
    [
        (time(10, 30), "上午十点半", "half past ten in the morning"),
        (time(12, 0), "中午十二点", "noon"),
        (time(16, 30), "下午四点半", "half past four in the afternoon"),
        (time(14, 0), "下午两点", "two o'clock in the afternoon"),
        (time(7, 5), "早上七点零五分", "seven oh five in the morning"),
        (time(18, 45), "晚上六点四十五分", "six forty-five in the evening"),
    ],
)
def test_clock_times(t: time, zh: str, en: str) -> None:
    assert (clock_zh(t), clock_en(t)) == (zh, en)


def test_what_reads_digit_by_digit_is_found() -> None:
    assert read_digit_by_digit("请付 7.00 元") == ["7.0", "0 元"]
    assert read_digit_by_digit("请付七元") == []
    assert read_digit_by_digit("Please pay ¥7.00") != []
    assert read_digit_by_digit("午餐 10:30 开始") == ["10:30"]
    assert read_digit_by_digit("请付 12 元") == ["12 元"]


def test_longer_sentences_take_longer_and_the_screen_waits_for_them() -> None:
    short, long = "请付七元", "王芳，您好！午餐签到成功，请付七元，已补贴三元"
    assert 0 < speech_seconds(short, "zh") < speech_seconds(long, "zh")
    assert speech_seconds("", "zh") == 0
    assert speech_seconds(long, "zh", rate=0.9) > speech_seconds(long, "zh", rate=1.2)
    assert hold_seconds(short, "zh", 8.0) == 8.0
    assert hold_seconds(long * 3, "zh", 8.0) > speech_seconds(long * 3, "zh") >= 8.0


# -- the estimate against a real voice ----------------------------------------------------------------------

SENTENCES = {
    "zh": [
        "王芳，您好！午餐签到成功，请付七元。已补贴三元。",
        "请稍候，工作人员将为您确认",
        "现在不是供餐时间。下一餐：午餐，上午十点半开始",
        "请走近一点",
    ],
    "en": [
        "Welcome Wang Fang: lunch, please pay seven yuan. Subsidy applied.",
        "Please wait: staff will confirm your check-in",
        "The centre is not serving meals now. Next: lunch at half past ten in the morning",
    ],
}


def _espeak_seconds(text: str, voice: str, wpm: int, out: Path) -> float:
    exe = shutil.which("espeak-ng")
    assert exe is not None
    subprocess.run([exe, "-v", voice, "-s", str(wpm), "-w", str(out), text], check=True, timeout=30)
    with wave.open(str(out)) as w:
        return w.getnframes() / w.getframerate()


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_the_estimate_is_not_shorter_than_espeak_ng_says_it(lang: str, tmp_path: Path) -> None:
    """espeak-ng (the voice Chromium reaches through speech-dispatcher on Debian) at the page's rate: its
    default 175 words a minute times 0.9. The estimate must never be shorter than the real voice, or the
    screen would go back to the prompt while it is still speaking."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng): the estimate is checked against it")
    voice = "cmn" if lang == "zh" else "en-us"
    for text in SENTENCES[lang]:
        real = _espeak_seconds(text, voice, round(175 * 0.9), tmp_path / "s.wav")
        est = speech_seconds(text, lang)  # type: ignore[arg-type]
        assert est >= real, (text, est, real)
        assert est <= real * 1.8 + 1.0, (text, est, real)  # and not so long that the queue waits for nothing
