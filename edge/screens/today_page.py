"""The staff screen's "today" page (GET /today) and the end-of-day CSV (GET /today.csv).

What staff need to see their day and reconcile the cash: today's meals (how many, how many subsidised, how
much to collect), the list newest first with how each senior was checked in, the confirmations still
waiting, and the link to the district (events waiting to be delivered, the last delivery). Read from the
store the daemon writes; nothing here changes anything.

A voided meal (edge.meals.void) stays on the list, struck out with its reason, and counts in nothing: not in
the meals, the subsidised or the amount to collect. A logged-in manager sees a 作废 (void) link on each
standing meal (edge/screens/void_page.py). The CSV keeps one row per meal, a voided one marked in its own
columns (voided, void_reason, void_note, void_staff_id, void_event_id) and left out of the total row.
"""

from __future__ import annotations

import csv
import html
import io
from dataclasses import dataclass, field
from datetime import date, datetime, tzinfo

from edge.meals.feedback import Language, meal_name
from edge.meals.void import reason_text
from edge.store import EventRow, Store
from edge.store.kioskstate import KioskState


@dataclass(frozen=True)
class Today:
    day: date
    #: the meal events (voided ones too), newest first, with the senior's name (None: removed since)
    meals: list[tuple[EventRow, str | None]]
    pending_confirmations: int
    outbox_waiting: int
    last_delivery: datetime | None
    #: what the running daemon last said (today's unknown faces and refusals, the camera); None: not known
    kiosk: KioskState | None = None
    #: the void events of the day by the meal they void
    voids: dict[str, EventRow] = field(default_factory=dict)

    @property
    def standing(self) -> list[EventRow]:
        """The meals that count: not voided."""
        return [e for e, _ in self.meals if not e.voided_by]

    @property
    def voided(self) -> int:
        return sum(1 for e, _ in self.meals if e.voided_by)

    @property
    def subsidised(self) -> int:
        return sum(1 for e in self.standing if e.subsidy_fen > 0)

    @property
    def to_collect_fen(self) -> int:
        return sum(e.payable_fen for e in self.standing)


def summary(store: Store, day: date, kiosk_id: str, kiosk: KioskState | None = None) -> Today:
    names = {sid: name for sid, name, _card in store.roster()}
    events = store.meals_of_day(day)
    meals = [(e, names.get(e.senior_id)) for e in events if e.kind == "meal"]
    voids = {e.voids: e for e in events if e.kind == "void" and e.voids}
    waiting = [c for c in store.pending_confirmations(kiosk_id) if c.local_date == day]
    return Today(day, meals, len(waiting), store.pending_count(), store.last_delivery(), kiosk, voids)


_W: dict[str, dict[Language, str]] = {
    "open": {"zh": "今日用餐", "en": "Today"},
    "title": {"zh": "今日用餐 {day}", "en": "Today, {day}"},
    "meals": {"zh": "用餐", "en": "Meals"},
    "subsidised": {"zh": "享受补贴", "en": "Subsidised"},
    "collect": {"zh": "应收", "en": "To collect"},
    "waiting": {"zh": "待确认", "en": "Waiting for staff"},
    "link": {"zh": "区里：{n} 条待发送，最近送达 {at}", "en": "District: {n} waiting to be sent, last delivered {at}"},
    "never": {"zh": "从未", "en": "never"},
    "kiosk": {
        "zh": "签到机：未能识别 {unknown} 次，请找工作人员 {refused} 次；摄像头{camera}（{at} 更新）",
        "en": "Kiosk: {unknown} not recognised, {refused} sent to staff; camera {camera} (as of {at})",
    },
    "kiosk_unknown": {
        "zh": "签到机状态未知（meal-edge 没有运行？）",
        "en": "Kiosk state not known (is meal-edge running?)",
    },
    "camera_ok": {"zh": "正常", "en": "working"},
    "up": {"zh": "区里连接正常。", "en": "The district link is up."},
    "down": {
        "zh": "区里连接中断：用餐记录先存在本机，恢复后自动发送。",
        "en": "The district link is DOWN: meals are kept here and sent when it is back.",
    },
    "camera_bad": {"zh": "故障，请检查", "en": "NOT delivering pictures: check it"},
    "none": {"zh": "今天还没有用餐记录。", "en": "No meals yet today."},
    "csv": {"zh": "下载今日明细（CSV，对账用）", "en": "Download today's list (CSV, for the cash count)"},
    "back": {"zh": "返回确认列表", "en": "Back to confirmations"},
    "face": {"zh": "刷脸", "en": "face"},
    "face_confirmed": {"zh": "刷脸+确认", "en": "face, confirmed"},
    "manual": {"zh": "手工", "en": "by hand"},
    "sent": {"zh": "已送达", "en": "delivered"},
    "unsent": {"zh": "待发送", "en": "waiting"},
    "voided_n": {"zh": "已作废", "en": "Voided"},
    "voided": {"zh": "已作废：{reason}", "en": "Voided: {reason}"},
    "void": {"zh": "作废", "en": "Void"},
}


def word(key: str, lang: Language, **kw: object) -> str:
    text = _W[key][lang]
    return text.format(**kw) if kw else text


def yuan(fen: int) -> str:
    return f"¥{fen // 100}.{fen % 100:02d}"


def render(lang: Language, t: Today, tz: tzinfo, *, can_void: bool = False, flash: str = "") -> str:
    """The page body. `can_void`: a manager is logged in (a 作废 link on each standing meal); `flash`: the
    HTML of a result to show on top (made and escaped by the caller)."""
    e = html.escape
    at = f"{t.last_delivery.astimezone(tz):%H:%M}" if t.last_delivery else word("never", lang)
    voided = f'<div class="voidn"><b>{t.voided}</b>{e(word("voided_n", lang))}</div>' if t.voided else ""
    parts = [
        flash,
        f"<h1>{e(word('title', lang, day=t.day.isoformat()))}</h1>",
        '<div class="tally">'
        f'<div><b>{len(t.standing)}</b>{e(word("meals", lang))}</div>'
        f'<div><b>{t.subsidised}</b>{e(word("subsidised", lang))}</div>'
        f'<div><b>{e(yuan(t.to_collect_fen))}</b>{e(word("collect", lang))}</div>'
        f'<div><b>{t.pending_confirmations}</b>{e(word("waiting", lang))}</div>{voided}</div>',
        f'<p class="link">{e(word("link", lang, n=t.outbox_waiting, at=at))}</p>',
        f'<p class="link">{e(_kiosk_line(lang, t, tz))}</p>',
        f'<a class="back" href="/today.csv">{e(word("csv", lang))}</a> '
        f'<a class="back" href="/">{e(word("back", lang))}</a>',
    ]
    if not t.meals:
        parts.append(f'<p class="empty">{e(word("none", lang))}</p>')
    else:
        parts.append('<table class="today"><tbody>')
        for ev, name in t.meals:
            if ev.voided_by:
                v = t.voids.get(ev.event_id)
                why = reason_text(v.void_reason if v else None, v.void_note if v else None, lang)
                who = ""
                if v is not None and v.staff_id:
                    who = f"（{v.staff_id}）" if lang == "zh" else f" ({v.staff_id})"
                # whether the district has the void yet (the struck-out cell before says it of the meal)
                sent = f" · {word('sent' if v.delivered_at else 'unsent', lang)}" if v is not None else ""
                last = f'<td class="why">{e(word("voided", lang, reason=why) + who + sent)}</td>'
            elif can_void:
                last = (f'<td><a class="void" href="/void/{e(ev.event_id, quote=True)}">'
                        f'{e(word("void", lang))}</a></td>')
            else:
                last = ""
            parts.append(
                ('<tr class="voided">' if ev.voided_by else "<tr>")
                + f"<td>{ev.decided_at.astimezone(tz):%H:%M}</td><td>{e(name or ev.senior_id)}</td>"
                f"<td>{e(meal_name(ev.meal, lang))}</td><td>{e(yuan(ev.payable_fen))}</td>"
                f"<td>{e(word(ev.check_in, lang) if ev.check_in in _W else ev.check_in)}</td>"
                f"<td>{e(word('sent' if ev.delivered_at else 'unsent', lang))}</td>{last}</tr>"
            )
        parts.append("</tbody></table>")
    return "".join(parts)


def _kiosk_line(lang: Language, t: Today, tz: tzinfo) -> str:
    k = t.kiosk
    if k is None:
        return word("kiosk_unknown", lang)
    counts = k.counts if k.day == t.day.isoformat() else {}
    try:
        at = f"{datetime.fromisoformat(k.updated_at).astimezone(tz):%H:%M}"
    except ValueError:
        at = "?"
    camera = word("camera_ok" if k.camera_ok else "camera_bad", lang)
    line = word("kiosk", lang, unknown=counts.get("unknown", 0), refused=counts.get("refused", 0), camera=camera, at=at)
    if k.district_connected is not None:
        line += (" " if lang == "en" else "") + word("up" if k.district_connected else "down", lang)
    return line


CSV_COLUMNS = ("time", "senior_id", "name", "meal", "price", "subsidy", "payable", "check_in", "event_id",
               "delivered", "voided", "void_reason", "void_note", "void_staff_id", "void_event_id")


def csv_text(t: Today, tz: tzinfo) -> str:
    """Today's meals for the cash count, oldest first, amounts in yuan; with a byte-order mark so that Excel
    reads the Chinese names. A voided meal keeps its row (marked in the void columns, for the audit trail) and
    is left out of the total row, which counts the standing meals only."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\r\n")
    w.writerow(CSV_COLUMNS)
    for ev, name in reversed(t.meals):
        v = t.voids.get(ev.event_id)
        w.writerow([
            ev.decided_at.astimezone(tz).isoformat(timespec="seconds"), ev.senior_id, name or "", ev.meal,
            f"{ev.price_fen / 100:.2f}", f"{ev.subsidy_fen / 100:.2f}", f"{ev.payable_fen / 100:.2f}", ev.check_in,
            ev.event_id, "yes" if ev.delivered_at else "no", "yes" if ev.voided_by else "",
            (v.void_reason or "") if v else "", (v.void_note or "") if v else "", (v.staff_id or "") if v else "",
            ev.voided_by or "",
        ])
    standing = t.standing
    w.writerow(["total", "", "", f"{len(standing)} meals", "", f"{sum(e.subsidy_fen for e in standing) / 100:.2f}",
                f"{t.to_collect_fen / 100:.2f}", "", "", "", f"{t.voided} voided" if t.voided else "", "", "", "",
                ""])
    return "\ufeff" + out.getvalue()
