"""The staff screen's manual check-in page (GET /checkin, POST /checkin): find a senior, check them in.

When the kiosk says "please see staff" (not recognised, or staff said "not this person"), staff find the
senior by name, pinyin initials ("wf" for 王芳), id or meal-card number (edge/meals/search.py) and press
"check in": the meal is recorded by edge.meals.checkin.manual_checkin, through the kiosk's rules, store and
outbox, with the logged-in staff member's id as the event's staff_id (and in the audit log). This module holds
the page's words and HTML; edge.screens.staffserver serves it behind the same login, Host check and form token
as the confirmation buttons.
"""

from __future__ import annotations

import html

from edge.meals.feedback import Language
from edge.meals.search import Found

#: at most this many seniors are listed for one search (type more to narrow it)
MAX_FOUND = 8

_W: dict[str, dict[Language, str]] = {
    "open": {"zh": "手工签到", "en": "Check in by hand"},
    "title": {"zh": "手工签到", "en": "Check in by hand"},
    "find": {"zh": "姓名、拼音首字母、编号或餐卡号", "en": "Name, pinyin initials, id or meal-card number"},  # noqa: E501
    "search": {"zh": "查找", "en": "Find"},
    "go": {"zh": "为 {name} 签到", "en": "Check in {name}"},
    "none": {
        "zh": "没有找到“{q}”。请换一种写法，或核对编号。",
        "en": "Nobody matches \u201c{q}\u201d. Try another spelling or the id.",
    },
    "more": {
        "zh": "只显示前 {n} 位，请输入更多字来缩小范围。",
        "en": "Only the first {n} are shown: type more to narrow it.",
    },
    "back": {"zh": "返回确认列表", "en": "Back to confirmations"},
    "id": {"zh": "编号", "en": "ID"},
    "card": {"zh": "餐卡", "en": "Card"},
    "no_name": {"zh": "请先登录再签到。没有做任何记录。", "en": "Log in first. Nothing was recorded."},
    "not_found": {"zh": "名册中没有编号 {senior_id}。", "en": "No senior with id {senior_id} on the roster."},
    "no_meal": {"zh": "没有为 {name} 记录用餐：{why}", "en": "No meal recorded for {name}: {why}"},
}


def word(key: str, lang: Language, **kw: object) -> str:
    text = _W[key][lang]
    return text.format(**kw) if kw else text


def render(lang: Language, token: str, query: str, found: list[Found], more: bool) -> str:
    """The page body: the search box and one "check in" button per senior found (as the logged-in staff)."""
    e = html.escape
    hint = e(word("find", lang), quote=True)
    parts = [
        f"<h1>{e(word('title', lang))}</h1>",
        '<form class="find" method="get" action="/checkin">'
        f'<input name="q" type="search" value="{e(query, quote=True)}" placeholder="{hint}"'
        f' aria-label="{hint}" autocomplete="off" autofocus maxlength="40">'
        f'<button class="search">{e(word("search", lang))}</button></form>',
    ]
    if query.strip() and not found:
        parts.append(f'<p class="empty">{e(word("none", lang, q=query.strip()))}</p>')
    if found:
        parts.append('<ul class="found">')
        for f in found:
            en = f.entry
            card = f' <span class="sid">{e(word("card", lang))} {e(en.card_no)}</span>' if en.card_no else ""
            parts.append(
                f'<li class="person"><span class="pname">{e(en.name)}</span>'
                f'<span class="sid">{e(word("id", lang))} {e(en.senior_id)}</span>{card}'
                '<form class="decide checkin" method="post" action="/checkin">'
                f'<input type="hidden" name="token" value="{e(token, quote=True)}">'
                f'<input type="hidden" name="senior" value="{e(en.senior_id, quote=True)}">'
                f'<input type="hidden" name="q" value="{e(query, quote=True)}">'
                f'<button class="yes" name="action" value="checkin">{e(word("go", lang, name=en.name))}</button>'
                "</form></li>"
            )
        parts.append("</ul>")
        if more:
            parts.append(f'<p class="older">{e(word("more", lang, n=MAX_FOUND))}</p>')
    parts.append(f'<a class="back" href="/">{e(word("back", lang))}</a>')
    return "".join(parts)
