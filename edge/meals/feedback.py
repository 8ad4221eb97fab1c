"""What the kiosk says, in the senior's language: short, the outcome first, the amount to pay next.

Decisions and events carry machine reason codes; this module is the only place that turns them
into words. Chinese is the default (the programme's centres are in Zhengzhou); English is kept for
operators and tests. The same sentences are shown and spoken by the kiosk screen (edge/screens/display.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from edge.meals import rules

Language = Literal["zh", "en"]

_REASONS: dict[str, dict[Language, str]] = {
    rules.SUBSIDISED: {"zh": "已享受助餐补贴", "en": "Subsidy applied"},
    rules.UNDER_AGE: {"zh": "未满补贴年龄，按原价", "en": "Full price: under the subsidy age"},
    rules.NOT_LOCAL_HUKOU: {
        "zh": "非本区户籍，按原价",
        "en": "Full price: household registration is not in this district",
    },
    rules.DAILY_LIMIT: {"zh": "今日补贴已使用，按原价", "en": "Full price: today's subsidised meal already used"},
    rules.SUSPENDED: {"zh": "餐卡已暂停，请找工作人员", "en": "Please see staff: your meal card is suspended"},
    rules.DECEASED: {"zh": "请找工作人员", "en": "Please see staff"},
    rules.NOT_SERVING: {"zh": "现在不是供餐时间", "en": "The centre is not serving meals now"},
    rules.ALREADY_SERVED: {"zh": "您这一餐已经签到过了", "en": "You are already checked in for this meal"},
}

_KIND: dict[str, dict[Language, str]] = {
    "unknown": {"zh": "未能识别，请找工作人员签到", "en": "Not recognised: please see staff to check in"},
    "confirm": {"zh": "请稍候，工作人员将为您确认", "en": "Please wait: staff will confirm your check-in"},
    "error": {"zh": "签到未能保存，请找工作人员", "en": "Check-in could not be saved: please see staff"},
    # the clock guard refused to decide (edge/security/clockguard.py): staff must fix the date and time
    "clock": {"zh": "时钟错误，请找工作人员", "en": "Clock error: please ask a staff member"},
}

_MEALS: dict[str, str] = {"breakfast": "早餐", "lunch": "午餐", "dinner": "晚餐"}


def reasons_text(reasons: tuple[str, ...], lang: Language) -> str:
    sep = "；" if lang == "zh" else "; "
    return sep.join(_REASONS[r][lang] for r in reasons if r in _REASONS)


def message(
    kind: str,
    reasons: tuple[str, ...] = (),
    *,
    lang: Language = "zh",
    name: str | None = None,
    meal: str | None = None,
    payable_fen: int = 0,
    subsidy_fen: int = 0,
) -> str:
    if kind in _KIND:
        return _KIND[kind][lang]
    if kind != "meal":  # repeat, refused, closed: the reason says it all
        return reasons_text(reasons, lang)
    pay = payable_fen / 100
    if lang == "zh":
        meal_zh = _MEALS.get(meal or "", meal or "")
        text = f"{name}，您好！{meal_zh}签到成功，请付 {pay:.2f} 元"
        return text + (f"（已补贴 {subsidy_fen / 100:.2f} 元）" if subsidy_fen else f"。{reasons_text(reasons, lang)}")
    text = f"Welcome {name}: {meal}, please pay ¥{pay:.2f}"
    if subsidy_fen:
        return text + f" (¥{subsidy_fen / 100:.2f} subsidy applied)"
    return text + f". {reasons_text(reasons, lang)}"


@dataclass(frozen=True)
class Decision:
    """What happened for one presence; printed by `replay`, shown at the kiosk, logged."""

    kind: str  # meal | repeat | unknown | confirm | refused | closed | error | clock
    track_id: int
    decided_at: datetime
    source_ts: float
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
