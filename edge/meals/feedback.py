"""What the kiosk says, in the senior's language: short, the outcome first, the amount to pay next.

Decisions and events carry machine reason codes; this module is the only place that turns them into words.
Chinese is the default (the programme's centres are in Zhengzhou); English is kept for operators and tests.

Each kiosk sentence comes as `Words`: what the screen shows (it may say "¥7.00" and "10:30") and what the
voice says (amounts and times in words, as people say them: "请付七元", "上午十点半"; edge/meals/speech.py).
What the queue can see and hear carries no private reason: a full-price meal says only "按原价" (full price),
a refusal only "请找工作人员"; why (age, household registration, a used subsidy, a suspended card) is on the
staff screen and in the event. `reasons_text` keeps those reasons in words for staff and operators.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time
from typing import Any, Literal

from edge.config import MealWindow
from edge.meals import rules
from edge.meals.speech import say_amount, say_clock

Language = Literal["zh", "en"]


@dataclass(frozen=True)
class Words:
    #: shown on the kiosk screen
    screen: str
    #: said by the kiosk's voice (no digits that a voice would read one by one)
    speech: str


@dataclass(frozen=True)
class NextMeal:
    """The next meal window, for "not serving now": its name and start, and whether that is tomorrow."""

    meal: str
    start: time
    tomorrow: bool = False


# For staff and operators (the staff screen, `meal-edge confirm`), never for the queue.
_REASONS: dict[str, dict[Language, str]] = {
    rules.SUBSIDISED: {"zh": "已享受助餐补贴", "en": "Subsidy applied"},
    rules.UNDER_AGE: {"zh": "未满补贴年龄，按原价", "en": "Full price: under the subsidy age"},
    rules.NOT_LOCAL_HUKOU: {
        "zh": "非本区户籍，按原价",
        "en": "Full price: household registration is not in this district",
    },
    rules.DAILY_LIMIT: {"zh": "今日补贴已使用，按原价", "en": "Full price: today's subsidised meal already used"},
    # staff's words about the senior, not to them (the kiosk says only "请找工作人员")
    rules.SUSPENDED: {"zh": "餐卡已暂停使用", "en": "The meal card is suspended"},
    rules.DECEASED: {
        "zh": "名册登记为已故，请核实身份",
        "en": "The roster marks this senior deceased: check who this is",
    },
    rules.NOT_SERVING: {"zh": "现在不是供餐时间", "en": "The centre is not serving meals now"},
    rules.ALREADY_SERVED: {"zh": "这一餐今天已经签到过了", "en": "Already checked in for this meal today"},
}

# What the kiosk says for each kind of result that needs no name or amount: the same on screen and aloud.
_SAID: dict[str, dict[Language, str]] = {
    "unknown": {"zh": "未能识别，请找工作人员签到", "en": "Not recognised: please see staff to check in"},
    "confirm": {"zh": "请稍候，工作人员将为您确认", "en": "Please wait: staff will confirm your check-in"},
    "error": {"zh": "签到未能保存，请找工作人员", "en": "Check-in could not be saved: please see staff"},
    # the clock guard refused to decide (edge/security/clockguard.py): staff must fix the date and time
    "clock": {"zh": "时钟错误，请找工作人员", "en": "Clock error: please ask a staff member"},
    "repeat": {"zh": "您这一餐已经签到过了", "en": "You are already checked in for this meal"},
    # whatever the reason (a suspended card, a deceased senior's face): staff tell the person, not the queue
    "refused": {"zh": "请找工作人员", "en": "Please see staff"},
    "closed": {"zh": "现在不是供餐时间", "en": "The centre is not serving meals now"},
    # the staff's answer to a confirmation, back at the kiosk
    "rejected": {"zh": "未能确认，请找工作人员签到", "en": "Not confirmed: please see staff to check in"},
    "timeout": {"zh": "请找工作人员签到", "en": "Please see staff to check in"},
    # a face seen but not usable, and a kiosk that cannot see
    "closer": {"zh": "请走近一点", "en": "Please come a little closer"},
    "turn": {"zh": "请正对屏幕", "en": "Please face the screen"},
    # two people side by side at the front: the kiosk serves one at a time (edge/recognition/serve.py)
    "one": {"zh": "请一位一位来", "en": "One person at a time, please"},
    "fault": {"zh": "设备故障，请找工作人员", "en": "The kiosk is out of order: please see staff"},
}

#: every kind `words` knows (the tests say each of them)
KINDS = ("meal", *_SAID)

_MEALS: dict[str, str] = {"breakfast": "早餐", "lunch": "午餐", "dinner": "晚餐"}


def meal_name(meal: str | None, lang: Language) -> str:
    return _MEALS.get(meal or "", meal or "") if lang == "zh" else (meal or "")


def reasons_text(reasons: tuple[str, ...], lang: Language) -> str:
    """The reasons in words, for staff and operators (never shown or said at the kiosk)."""
    sep = "；" if lang == "zh" else "; "
    return sep.join(_REASONS[r][lang] for r in reasons if r in _REASONS)


def _yuan(fen: int) -> str:
    return f"¥{fen // 100}.{fen % 100:02d}"


def _meal(lang: Language, name: str | None, meal: str | None, payable_fen: int, subsidy_fen: int) -> Words:
    m = meal_name(meal, lang)
    who = name or ""
    if lang == "zh":
        note = f"已补贴 {_yuan(subsidy_fen)}" if subsidy_fen else "按原价"
        screen = f"{who}，您好！{m}签到成功，请付 {_yuan(payable_fen)}（{note}）"
        pay = f"请付{say_amount(payable_fen, lang)}" if payable_fen else "不用付钱"
        speech = f"{who}，{m}签到成功，" + ("" if subsidy_fen else "按原价，") + f"{pay}。"
        return Words(screen, speech)
    note = f"{_yuan(subsidy_fen)} subsidy applied" if subsidy_fen else "full price"
    screen = f"Welcome {who}: {m}, please pay {_yuan(payable_fen)} ({note})"
    pay = f"please pay {say_amount(payable_fen, lang)}" if payable_fen else "nothing to pay"
    speech = f"{who}, {m} checked in" + ("" if subsidy_fen else ", full price") + f". {pay[0].upper()}{pay[1:]}."
    return Words(screen, speech)


def _closed(lang: Language, nxt: NextMeal | None) -> Words:
    base = _SAID["closed"][lang]
    if nxt is None:
        return Words(base, base)
    m = meal_name(nxt.meal, lang)
    hhmm = f"{nxt.start:%H:%M}".lstrip("0") if nxt.start.hour else f"{nxt.start:%H:%M}"
    if lang == "zh":
        day = "明天" if nxt.tomorrow else ""
        return Words(f"{base}。下一餐：{day}{m} {hhmm}", f"{base}。{day}{m}{say_clock(nxt.start, lang)}开始")
    day = "tomorrow, " if nxt.tomorrow else ""
    return Words(f"{base}. Next: {day}{m} at {hhmm}", f"{base}. Next: {day}{m} at {say_clock(nxt.start, lang)}")


def next_meal(meals: list[MealWindow], local_now: datetime) -> NextMeal | None:
    """When the centre serves next (for "not serving now"), from the meal windows."""
    nxt = rules.next_meal(meals, local_now)
    return None if nxt is None else NextMeal(nxt[0].name, nxt[0].start_time, nxt[1])


def words(
    kind: str,
    *,
    lang: Language = "zh",
    name: str | None = None,
    meal: str | None = None,
    payable_fen: int = 0,
    subsidy_fen: int = 0,
    next_meal: NextMeal | None = None,
) -> Words:
    """What the kiosk shows and says for a result of `kind` (see KINDS). No reason is ever said: they are
    private (see the module doc)."""
    if kind == "meal":
        return _meal(lang, name, meal, payable_fen, subsidy_fen)
    if kind == "closed":
        return _closed(lang, next_meal)
    text = _SAID.get(kind, _SAID["refused"])[lang]  # an unknown kind must still send the senior somewhere
    return Words(text, text)


def message(kind: str, reasons: tuple[str, ...] = (), **kw: Any) -> str:
    """What the screen shows (`words(...).screen`); `reasons` are accepted and, being private, not used."""
    return words(kind, **kw).screen


@dataclass(frozen=True)
class Decision:
    """What happened for one presence; printed by `replay`, shown at the kiosk, logged."""

    #: meal | repeat | unknown | confirm | refused | closed | error | clock (after a confirm: rejected | timeout)
    kind: str
    track_id: int
    decided_at: datetime
    source_ts: float
    #: what the kiosk screen shows
    message: str
    senior_id: str | None = None
    name: str | None = None
    meal: str | None = None
    price_fen: int = 0
    subsidy_fen: int = 0
    payable_fen: int = 0
    reasons: tuple[str, ...] = ()
    event_id: str | None = None
    seq: int | None = None
    distance: float | None = None
    margin: float | None = None
    frames: int = 0
    #: the pending staff confirmation recorded for a `confirm` decision (see `meal-edge confirm`)
    confirmation_id: int | None = None
    #: seconds the presence had been in view when it was decided (check-in latency at the kiosk)
    in_view_s: float = 0.0
    #: what the kiosk's voice says (amounts and times in words); empty: the message itself
    speech: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "senior_id": self.senior_id,
            "name": self.name,
            "meal": self.meal,
            "price_fen": self.price_fen,
            "subsidy_fen": self.subsidy_fen,
            "payable_fen": self.payable_fen,
            "reasons": list(self.reasons),
            "message": self.message,
            "speech": self.speech,
            "event_id": self.event_id,
            "seq": self.seq,
            "source_ts": round(self.source_ts, 3),
            "decided_at": self.decided_at.isoformat(),
            "track_id": self.track_id,
            "distance": None if self.distance is None else round(self.distance, 4),
            "margin": None if self.margin is None else round(self.margin, 4),
            "frames": self.frames,
            "confirmation_id": self.confirmation_id,
            "in_view_s": round(self.in_view_s, 3),
        }
