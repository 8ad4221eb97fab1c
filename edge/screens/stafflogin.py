"""The staff screen's login (issue 12): who is at the screen, as a staff account, before anything is shown or
paid.

- `POST /login` (staff id + PIN, and the page's form token) checks the PIN with edge.security.staffauth: after
  5 wrong PINs in a row the account is locked for 15 minutes (kept in the store, so it counts with `meal-edge
  confirm` too). A good login sets the session cookie: random, HttpOnly (no script reads it), SameSite=Strict
  (no other site's page sends it), Path=/; only its SHA-256 is kept, in this process's memory.
- A session ends after 5 minutes without a request from that screen (the list's own reloads do not count:
  see `StaffScreen.session`), 12 hours after login, at `POST /logout`, and when the account is removed or
  locked.
- Every login, failed login and logout is written to the audit log.

Standard library and edge.security only; the HTML shares the staff screen's page frame and policy.
"""

from __future__ import annotations

import html
from http.cookies import CookieError, SimpleCookie

from edge.meals.feedback import Language

COOKIE = "meal_edge_staff"
MAX_ID, MAX_PIN = 32, 128

_T: dict[str, dict[Language, str]] = {
    "title": {"zh": "工作人员登录", "en": "Staff login"},
    "intro": {
        "zh": "确认签到前，请用您自己的工号和密码登录。",
        "en": "Log in with your own staff id and PIN before confirming check-ins.",
    },
    "id": {"zh": "工号", "en": "Staff id"},
    "pin": {"zh": "密码", "en": "PIN"},
    "go": {"zh": "登录", "en": "Log in"},
    "bad": {"zh": "工号或密码不对。", "en": "Wrong staff id or PIN."},
    "locked": {
        "zh": "密码错误次数太多，此账号已暂时锁定。请稍后再试，或联系负责人。",
        "en": "Too many wrong PINs: this account is locked for a while. Try later or ask the manager.",
    },
    "expired": {
        "zh": "您已退出或登录已过期：没有做任何操作。请重新登录。",
        "en": "You were logged out (or the login expired): nothing was done. Please log in again.",
    },
    "who": {"zh": "当前登录：{name}（{id}）", "en": "Logged in: {name} ({id})"},
    "logout": {"zh": "退出", "en": "Log out"},
}


def t(key: str, lang: Language, **kw: object) -> str:
    text = _T[key][lang]
    return text.format(**kw) if kw else text


def token_from(cookie_header: str | None) -> str | None:
    """The session token from a Cookie header (None: none, or an unreadable header)."""
    if not cookie_header:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(cookie_header)
    except CookieError:
        return None
    morsel = jar.get(COOKIE)
    return morsel.value if morsel is not None and morsel.value else None


def set_cookie(token: str, max_age_s: int) -> str:
    # no Secure flag: the screen is served over plain HTTP on loopback (a browser would drop the cookie)
    return f"{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_s}"


def clear_cookie() -> str:
    return f"{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"


def login_body(lang: Language, form_token: str, message: str | None = None, staff_id: str = "") -> str:
    """The login form (inside the staff screen's page frame)."""
    e = html.escape
    note = f'<div class="flash warn" role="alert">{e(message)}</div>' if message else ""
    return (
        f"<h1>{e(t('title', lang))}</h1>{note}"
        f'<p class="intro">{e(t("intro", lang))}</p>'
        '<form class="login" method="post" action="/login">'
        f'<input type="hidden" name="token" value="{e(form_token)}">'
        f'<label>{e(t("id", lang))}<input name="staff_id" value="{e(staff_id[:MAX_ID])}" required '
        f'maxlength="{MAX_ID}" autocomplete="username" autocapitalize="none" autofocus></label>'
        f'<label>{e(t("pin", lang))}<input name="pin" type="password" required maxlength="{MAX_PIN}" '
        'autocomplete="current-password" inputmode="numeric"></label>'
        f'<button class="yes" type="submit">{e(t("go", lang))}</button></form>'
    )


def who_bar(lang: Language, form_token: str, staff_id: str, name: str) -> str:
    """Who is logged in, and the button to log out (a POST with the form token: a link cannot log anyone
    out)."""
    e = html.escape
    return (
        f'<form class="who" method="post" action="/logout"><span>{e(t("who", lang, name=name, id=staff_id))}</span>'
        f'<input type="hidden" name="token" value="{e(form_token)}">'
        f'<button class="out" type="submit">{e(t("logout", lang))}</button></form>'
    )
