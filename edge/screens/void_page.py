"""The staff screen's void step (GET /void/<event_id>, POST /void/<event_id>): a manager reverses today's meal.

On /today each of today's standing meals has a 作废 (void) link, shown only to a logged-in manager. It opens
this page: the senior, the time, the meal and the amount, then the reason to choose (认错人 wrong person,
重复打卡 recorded twice, 未用餐 left without eating, 其他 other with a note) and the button that voids. The
void itself is edge.meals.void.void_meal (the same as `meal-edge void`): it checks the role again from the
store (a non-manager's POST gets 403 and an audit line), records a new signed void event through the kiosk's
store and outbox, and the page goes back to /today, where the meal is struck out with its reason.

Served by edge.screens.staffserver behind the same login, Host check and form token as every other form
(`handles`, `get`, `post` below are its only entry points).
"""

from __future__ import annotations

import html
import logging
import re
from datetime import tzinfo
from http import HTTPStatus
from typing import Protocol
from urllib.parse import urlencode

from edge.delivery.events import MAX_VOID_NOTE, VOID_REASONS
from edge.meals.feedback import Language, meal_name
from edge.meals.rules import VoidTarget, void_refusal
from edge.meals.void import REASON_WORDS, VoidResult, clean_note, void_meal
from edge.meals.void import reason_text as void_reason_text
from edge.screens import staffpages
from edge.screens.staffscreen import Flash, StaffScreen
from edge.screens.staffwords import phrase
from edge.security.staffauth import Session
from edge.store import EventRow, StoreError

log = logging.getLogger(__name__)

PATH = re.compile(r"/void/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})")

_W: dict[str, dict[Language, str]] = {
    "button": {"zh": "作废", "en": "Void"},
    "title": {"zh": "作废这条用餐记录？", "en": "Void this meal?"},
    "meal_line": {"zh": "{time} {meal}，实收 {payable}（补贴 {subsidy}）",
                  "en": "{meal} at {time}, paid {payable} ({subsidy} subsidy)"},
    "pick": {"zh": "请选择原因：", "en": "Why:"},
    "note": {"zh": "说明（选“其他”时必填）", "en": "Note (needed for Other)"},
    "go": {"zh": "确认作废", "en": "Void this meal"},
    "cancel": {"zh": "不作废，返回", "en": "Cancel"},
    "after": {
        "zh": "作废后补贴退回区里，老人今天可以重新签到。",
        "en": "The subsidy goes back to the district; the senior may check in again today.",
    },
    "back": {"zh": "返回今日用餐", "en": "Back to today"},
    "voided": {"zh": "已作废：{reason}", "en": "Voided: {reason}"},
    "voided_by": {"zh": "（{staff}）", "en": " ({staff})"},
    # results and refusals: what happened and what to do
    "done": {
        "zh": "已作废：{name} {time} {meal}（{reason}）。如已收款 {payable}，请退还。老人如需用餐可重新签到。",
        "en": "Voided: {name}, {meal} at {time} ({reason}). If {payable} was paid, give it back. "
        "The senior may check in again.",
    },
    "not_manager": {
        "zh": "只有管理员可以作废用餐记录。没有作废。请让管理员用自己的账号登录后再作废。",
        "en": "Only a manager may void a meal. Nothing was voided: ask a manager to log in with their own account.",
    },
    "bad_reason": {"zh": "请先选择作废原因，再按“确认作废”。没有作废。",
                   "en": "Choose a reason first, then press Void. Nothing was voided."},
    "need_note": {"zh": "选择“其他”时，请在说明里写明原因。没有作废。",
                  "en": "With Other, write why in the note. Nothing was voided."},
    "bad_note": {"zh": f"说明太长或含有无法显示的字符（最多 {MAX_VOID_NOTE} 字）。没有作废。",
                 "en": f"The note is too long or has unprintable characters (at most {MAX_VOID_NOTE}). "
                 "Nothing was voided."},
    "not_found": {"zh": "找不到这条用餐记录。请回到今日用餐，重新选择。",
                  "en": "This meal is not in this kiosk's records. Go back to today's list and choose again."},
    "is_void": {"zh": "这是一条作废记录，不能再作废。如老人确实用餐，请为其重新签到。",
                "en": "This is a void, which cannot be voided. If the senior did eat, check them in again."},
    "already_voided": {"zh": "这条用餐已经作废过了，不会再作废一次。",
                       "en": "This meal is already voided: it is not voided twice."},
    "not_today": {"zh": "只能作废今天的用餐。以前日期的记录请联系区里更正。",
                  "en": "Only today's meals can be voided. Ask the district to correct an earlier day."},
    "no_name": {"zh": "请先登录再作废。没有作废。", "en": "Log in first. Nothing was voided."},
}


def word(key: str, lang: Language, **kw: object) -> str:
    text = _W[key][lang]
    return text.format(**kw) if kw else text


def yuan(fen: int) -> str:
    return f"¥{fen // 100}.{fen % 100:02d}"


class Handler(Protocol):
    """What this page needs from edge.screens.staffserver's request handler (kept small: the server module
    registers the routes, this one serves them)."""

    @property
    def screen(self) -> StaffScreen: ...

    def _send(self, status: HTTPStatus, body: str, ctype: str, headers: dict[str, str] | None = None) -> None: ...

    def _session(self, *, touch: bool) -> Session | None: ...

    def _login_page(self, status: HTTPStatus, message: str | None = None, staff_id: str = "") -> None: ...

    def _form(self) -> dict[str, list[str]] | None: ...


def handles(path: str) -> str | None:
    """The event id of a /void/<event_id> path, else None."""
    m = PATH.fullmatch(path)
    return m.group(1) if m else None


def _page(h: Handler, status: HTTPStatus, body: str) -> None:
    lang = h.screen.lang
    h._send(status, staffpages.render_body(lang, word("title", lang), body), "text/html")


def _refusal(lang: Language, kind: str) -> str:
    return (f'<h1>{html.escape(word(kind, lang))}</h1>'
            f'<a class="back" href="/today">{html.escape(word("back", lang))}</a>')


def get(h: Handler, event_id: str, flash_key: str = "") -> None:
    """The confirm step: the meal, the reasons, the button. Nothing is changed by it."""
    session = h._session(touch=True)
    screen = h.screen
    lang = screen.lang
    if session is None:  # names and amounts: nothing before a login
        h._login_page(HTTPStatus.UNAUTHORIZED)
        return
    if not session.is_manager:
        _page(h, HTTPStatus.FORBIDDEN, _refusal(lang, "not_manager"))
        return
    meal = screen.store().event(event_id)
    target = None if meal is None else VoidTarget(meal.kind, meal.local_date, meal.voided_by is not None)
    refusal = void_refusal(target, screen.today())
    if refusal is not None or meal is None:
        _page(h, HTTPStatus.NOT_FOUND if refusal == "not_found" else HTTPStatus.CONFLICT,
              _refusal(lang, refusal or "not_found"))
        return
    name = next((n for sid, n, _card in screen.store().roster() if sid == meal.senior_id), None)
    flash = screen.get_flash(flash_key) if flash_key else None
    _page(h, HTTPStatus.OK, render(lang, screen.token, meal, name, screen.tz, flash))


def render(lang: Language, token: str, meal: EventRow, name: str | None, tz: tzinfo, flash: Flash | None) -> str:
    """The confirm step's body: who, when, how much; the reasons as big radio buttons; the note; two buttons."""
    e = html.escape
    when = meal.decided_at.astimezone(tz)
    line = word("meal_line", lang, time=f"{when:%H:%M}", meal=meal_name(meal.meal, lang),
                payable=yuan(meal.payable_fen), subsidy=yuan(meal.subsidy_fen))
    parts = []
    if flash is not None:
        parts.append(f'<div class="flash {flash.tone}" role="status">{e(flash.text)}</div>')
    parts += [
        f"<h1>{e(word('title', lang))}</h1>",
        f'<p class="voidwho"><span class="pname">{e(name or meal.senior_id)}</span> '
        f'<span class="sid">{e(meal.senior_id)}</span> <span class="voidmeal">{e(line)}</span></p>',
        f'<form class="decide void" method="post" action="/void/{e(meal.event_id, quote=True)}">',
        f'<input type="hidden" name="token" value="{e(token, quote=True)}">',
        f'<fieldset class="reasons"><legend>{e(word("pick", lang))}</legend>',
    ]
    for code in VOID_REASONS:
        parts.append(f'<label class="reason"><input type="radio" name="reason" value="{code}" required>'
                     f"{e(REASON_WORDS[code][lang])}</label>")
    hint = e(word("note", lang), quote=True)
    parts += [
        "</fieldset>",
        f'<input class="note" name="note" type="text" maxlength="{MAX_VOID_NOTE}" placeholder="{hint}" '
        f'aria-label="{hint}" autocomplete="off">',
        f'<p class="after">{e(word("after", lang))}</p>',
        f'<div class="voidbuttons"><button class="no voidgo" type="submit">{e(word("go", lang))}</button>'
        f'<a class="cancel" href="/today">{e(word("cancel", lang))}</a></div>',
        "</form>",
    ]
    return "".join(parts)


def post(h: Handler, event_id: str) -> None:
    """Void the meal as the logged-in staff member; back to /today with the result, or to the confirm step
    when something is missing (a reason, the note). A non-manager gets 403 (the refusal is audited)."""
    form = h._form()
    if form is None:
        return
    screen = h.screen
    lang = screen.lang
    session = h._session(touch=True)
    if session is None:  # logged out or expired: the form token alone voids nothing
        h._login_page(HTTPStatus.UNAUTHORIZED, phrase("login_expired", lang))
        return
    reason = form.get("reason", [""])[0][:20]
    note = form.get("note", [""])[0][: MAX_VOID_NOTE * 2]
    # the role is checked by void_meal from the store (and audited when refused), whatever the page showed
    r = void_meal(screen.store(), screen.cfg, event_id, reason, note, session.staff_id, now=screen.clock())
    log.info("staff screen: void of event %s by %s -> %s", event_id, session.staff_id, r.kind)
    if r.kind == "store_failed":
        raise StoreError(r.message)
    if r.kind == "not_manager":
        _page(h, HTTPStatus.FORBIDDEN, _refusal(lang, "not_manager"))
        return
    key = screen.keep_flash(flash_for(r, lang, screen, reason, note))
    if r.kind in ("bad_reason", "need_note", "bad_note"):  # fixable on the confirm step
        h._send(HTTPStatus.SEE_OTHER, "", "text/plain", {"Location": f"/void/{event_id}?{urlencode({'flash': key})}"})
        return
    h._send(HTTPStatus.SEE_OTHER, "", "text/plain", {"Location": f"/today?{urlencode({'flash': key})}"})


def flash_for(r: VoidResult, lang: Language, screen: StaffScreen, reason: str, note: str) -> Flash:
    if not r.ok:
        return Flash("warn", word(r.kind, lang) if r.kind in _W else r.message)
    meal = r.meal
    assert meal is not None
    name = next((n for sid, n, _card in screen.store().roster() if sid == meal.senior_id), meal.senior_id)
    when = meal.decided_at.astimezone(screen.tz)
    return Flash("ok", word("done", lang, name=name, time=f"{when:%H:%M}", meal=meal_name(meal.meal, lang),
                            reason=void_reason_text(reason, clean_note(note), lang),
                            payable=yuan(meal.payable_fen)))
