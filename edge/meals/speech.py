"""How the kiosk's voice says amounts and times, and how long a sentence takes to say.

Speech synthesis reads "7.00 元" as "七点零零元" (or worse, "七零零元"), and "10:30" digit by digit. Nobody
says money like that: people say "七元", "七元五角", "十二元零五分". These are pure functions from fen (and
from a clock time) to the words people use, in Chinese and English; the screen keeps showing "¥7.00".

`speech_seconds` estimates how long the browser's voice takes to say a sentence, so the kiosk holds the
result on screen at least that long (a senior who hears the end of a sentence must still be able to read
it). The rates are measured with espeak-ng (the voice Chromium uses through speech-dispatcher on Debian),
at the page's speaking rate, and rounded down (slower) so the estimate errs on the long side; see
tests/test_speech.py and docs/display.md.
"""

from __future__ import annotations

import math
import re
from datetime import time
from typing import Literal

Language = Literal["zh", "en"]

#: the page's SpeechSynthesisUtterance.rate (a little slower than normal, for elderly listeners)
RATE = 0.9

_DIGITS_ZH = "零一二三四五六七八九"
_UNITS_ZH = ("", "十", "百", "千")


def _below_10000_zh(n: int) -> str:
    """0 < n < 10000, with 零 for each run of missing places inside (一千零五, 一百一十)."""
    out: list[str] = []
    zero = False
    for place in range(3, -1, -1):
        d = n // 10**place % 10
        if d == 0:
            zero = bool(out)  # a gap only counts once something came before it
            continue
        if zero:
            out.append("零")
            zero = False
        out.append(_DIGITS_ZH[d] + _UNITS_ZH[place])
    return "".join(out)


def number_zh(n: int) -> str:
    """A whole number as it is said in Mandarin: 12 -> 十二, 105 -> 一百零五, 110 -> 一百一十, 100005 -> 十万零五."""
    if n < 0:
        raise ValueError(f"a negative number {n} has no spoken amount")
    if n == 0:
        return "零"
    if n >= 10**12:
        raise ValueError(f"{n} is too large to say")
    groups = [(n // 10**8, "亿"), (n // 10**4 % 10**4, "万"), (n % 10**4, "")]
    out = ""
    gap = False
    for g, unit in groups:
        if g == 0:
            gap = bool(out)
            continue
        if out and (gap or g < 1000):  # 一万零五, 一亿零一万
            out += "零"
        out += _below_10000_zh(g) + unit
        gap = False
    # 10 to 19 are said 十, 十一, ... at the start, never 一十二
    return out[1:] if out.startswith("一十") else out


def _small_zh(d: int) -> str:
    """A single digit before a unit of money: 两 for 2 (两元, 两角), as people say it."""
    return "两" if d == 2 else _DIGITS_ZH[d]


def yuan_zh(fen: int) -> str:
    """700 -> 七元, 750 -> 七元五角, 1205 -> 十二元零五分, 50 -> 五角, 5 -> 五分, 0 -> 零元, 200 -> 两元."""
    if type(fen) is not int or fen < 0:
        raise ValueError(f"an amount is a non-negative integer number of fen, got {fen!r}")
    yuan, jiao, f = fen // 100, fen // 10 % 10, fen % 10
    if fen == 0:
        return "零元"
    out = ""
    if yuan:
        out = (_small_zh(yuan) if yuan < 10 else number_zh(yuan)) + "元"
    if jiao:
        out += _small_zh(jiao) + "角"
    if f:
        if yuan and not jiao:
            out += "零"
        out += _small_zh(f) + "分"
    return out


_ONES_EN = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen"
).split()
_TENS_EN = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_en(n: int) -> str:
    """A whole number in words (up to the millions): 105 -> one hundred and five."""
    if n < 0:
        raise ValueError(f"a negative number {n} has no spoken amount")
    if n < 20:
        return _ONES_EN[n]
    if n < 100:
        return _TENS_EN[n // 10] + ("" if n % 10 == 0 else "-" + _ONES_EN[n % 10])
    if n < 1000:
        rest = n % 100
        return _ONES_EN[n // 100] + " hundred" + ("" if rest == 0 else " and " + number_en(rest))
    for size, word in ((1_000_000_000, "billion"), (1_000_000, "million"), (1000, "thousand")):
        if n >= size:
            rest = n % size
            head = number_en(n // size) + " " + word
            if rest == 0:
                return head
            return head + (" and " if rest < 100 else " ") + number_en(rest)
    raise AssertionError("unreachable")


def yuan_en(fen: int) -> str:
    """700 -> seven yuan, 750 -> seven yuan fifty, 1205 -> twelve yuan and five fen, 50 -> fifty fen."""
    if type(fen) is not int or fen < 0:
        raise ValueError(f"an amount is a non-negative integer number of fen, got {fen!r}")
    yuan, rest = divmod(fen, 100)
    if fen == 0:
        return "zero yuan"
    if not yuan:
        return f"{number_en(rest)} fen"
    head = f"{number_en(yuan)} yuan"
    if not rest:
        return head
    # "seven yuan fifty" as one says "seven fifty"; a lone few fen are named, or "twelve yuan five" is unclear
    return f"{head} {number_en(rest)}" if rest >= 10 else f"{head} and {number_en(rest)} fen"


def say_amount(fen: int, lang: Language) -> str:
    return yuan_zh(fen) if lang == "zh" else yuan_en(fen)


def clock_zh(t: time) -> str:
    """10:30 -> 上午十点半, 12:00 -> 中午十二点, 16:30 -> 下午四点半, 7:05 -> 早上七点零五分."""
    h, m = t.hour, t.minute
    if h < 5:
        part, shown = "凌晨", h
    elif h < 9:
        part, shown = "早上", h
    elif h < 12:
        part, shown = "上午", h
    elif h < 13:
        part, shown = "中午", h
    elif h < 18:
        part, shown = "下午", h - 12
    else:
        part, shown = "晚上", h - 12
    hour = "两" if shown == 2 else number_zh(shown)
    if m == 0:
        minutes = ""
    elif m == 30:
        minutes = "半"
    elif m < 10:
        minutes = f"零{number_zh(m)}分"
    else:
        minutes = f"{number_zh(m)}分"
    return f"{part}{hour}点{minutes}"


def clock_en(t: time) -> str:
    """10:30 -> half past ten in the morning, 16:00 -> four o'clock in the afternoon."""
    h, m = t.hour, t.minute
    part = "in the morning" if h < 12 else "in the afternoon" if h < 18 else "in the evening"
    h12 = h % 12 or 12
    if h in (0, 12) and m == 0:
        return "midnight" if h == 0 else "noon"
    hour = number_en(h12)
    if m == 0:
        return f"{hour} o'clock {part}"
    if m == 30:
        return f"half past {hour} {part}"
    if m == 15:
        return f"quarter past {hour} {part}"
    return f"{hour} {('oh ' + number_en(m)) if m < 10 else number_en(m)} {part}"


def say_clock(t: time, lang: Language) -> str:
    return clock_zh(t) if lang == "zh" else clock_en(t)


# -- how long it takes to say --------------------------------------------------------------------------------

# Measured with espeak-ng 1.51 (Debian 12) at 158 words a minute (its default 175 times the page's 0.9),
# the voice Chromium reaches through speech-dispatcher: the cmn voice says about 2.5 Han characters a second
# with ~0.15 s per pause and ~0.7 s of silence around; en-us about 3 words a second, ~0.3 s per pause. The
# constants below are per rate 1.0 and a little slower than that, so the estimate errs long (a more natural
# voice is faster still).
#: Han characters per second at rate 1.0 (Mandarin), and seconds per pause (，。！；：)
ZH_CHARS_PER_S = 2.6
ZH_PAUSE_S = 0.2
#: words per second at rate 1.0 (English), and seconds per pause (, . ! ; :)
EN_WORDS_PER_S = 2.8
EN_PAUSE_S = 0.3
#: silence before and after the voice (speech-dispatcher and the voice starting)
START_S = 0.8

_HAN = re.compile(r"[\u3400-\u9fff]")
_ZH_PAUSES = re.compile(r"[，。！？；、,.!?;：:]")
_EN_WORDS = re.compile(r"[A-Za-z0-9']+")
_EN_PAUSES = re.compile(r"[,.!?;:]")


def speech_seconds(text: str, lang: Language, rate: float = RATE) -> float:
    """About how long the kiosk's voice takes to say `text` at `rate` (seconds)."""
    if not text.strip():
        return 0.0
    if lang == "zh":
        # Latin words inside a Chinese sentence (a name in pinyin) take about a syllable and a half each
        units = len(_HAN.findall(text)) + 1.5 * len(_EN_WORDS.findall(text))
        talk = units / (ZH_CHARS_PER_S * rate)
        pauses = len(_ZH_PAUSES.findall(text)) * ZH_PAUSE_S
    else:
        talk = len(_EN_WORDS.findall(text)) / (EN_WORDS_PER_S * rate)
        pauses = len(_EN_PAUSES.findall(text)) * EN_PAUSE_S
    return round(START_S + talk + pauses / rate, 2)


def hold_seconds(text: str, lang: Language, at_least: float, rate: float = RATE) -> float:
    """How long the screen keeps a result: `[display] show_seconds`, or longer when the sentence is longer,
    with a second to read it after the voice has finished."""
    spoken = speech_seconds(text, lang, rate)
    return max(at_least, math.ceil((spoken + 1.0) * 10) / 10) if spoken else at_least


# -- the check the tests run on every kiosk sentence ----------------------------------------------------------

#: what a voice would read digit by digit: a decimal number ("7.00", "3.5"), a digit string right before 元,
#: a currency sign, or a clock time ("10:30")
_DIGIT_BY_DIGIT = re.compile(r"\d+[.．]\d|\d+\s*元|[¥￥]|\d{1,2}[:：]\d{2}")


def read_digit_by_digit(text: str) -> list[str]:
    """The pieces of `text` a voice would read digit by digit (empty: fine to say)."""
    return [m.group(0) for m in _DIGIT_BY_DIGIT.finditer(text)]
