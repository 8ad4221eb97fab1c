"""The staff screen's login cookie (issue 12): who is at the screen, as a staff account, before anything is
shown or paid.

- `POST /login` (staff id + PIN, and the page's form token) checks the PIN with edge.security.staffauth: after
  5 wrong PINs in a row the account is locked for 15 minutes (kept in the store, so it counts with `meal-edge
  confirm` too). A good login sets the session cookie: random, HttpOnly (no script reads it), SameSite=Strict
  (no other site's page sends it), Path=/; only its SHA-256 is kept, in this process's memory.
- A session ends after 5 minutes without a tap (the list's own reloads do not count: `StaffScreen.session`),
  12 hours after login, at `POST /logout`, and when the account is removed or locked.
- Every login, failed login and logout is written to the audit log.

The login page is edge/screens/templates/staff/login.html; its words are in edge/screens/staffwords.py.
"""

from __future__ import annotations

from http.cookies import CookieError, SimpleCookie

COOKIE = "meal_edge_staff"
MAX_ID, MAX_PIN = 32, 128


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
