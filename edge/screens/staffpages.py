"""The staff screen's pages, from edge/screens/templates/staff/ with the style and script of
edge/screens/static/ inlined (allowed by their hash in the Content-Security-Policy)."""

from __future__ import annotations

from http import HTTPStatus

from markupsafe import Markup

from edge.meals.feedback import Language
from edge.screens.localweb import csp_hash, render, static_text
from edge.screens.stafflogin import MAX_ID, MAX_PIN
from edge.screens.staffscreen import (
    NEED_NAME_NOSCRIPT_REFRESH_S,
    REFRESH_S,
    RESULT_REFRESH_S,
    Flash,
    PendingItem,
    StaffScreen,
)
from edge.screens.staffwords import phrase, why_text
from edge.security.staffauth import Session

CSS = static_text("staff.css")
JS = static_text("staff.js")

# Only our own inline style and script (by hash) and our own images (the snapshots), nothing from anywhere
# else; forms post only to us.
CSP = (
    f"default-src 'none'; style-src {csp_hash(CSS)}; script-src {csp_hash(JS)}; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def _page(template: str, lang: Language, **values: object) -> str:
    return render(
        f"staff/{template}",
        lang=lang,
        css=Markup(CSS),
        js=Markup(JS),
        t=lambda key, **kw: phrase(key, lang, **kw),
        **values,
    )


def render_login(screen: StaffScreen, message: str | None = None, staff_id: str = "") -> str:
    """The login form; it does not reload itself (a half-typed PIN would be lost)."""
    lang = screen.lang
    return _page(
        "login.html",
        lang,
        title=phrase("login_title", lang),
        refresh=0,
        noscript_refresh=None,
        message=message,
        staff_id=staff_id[:MAX_ID],
        token=screen.token,
        max_id=MAX_ID,
        max_pin=MAX_PIN,
    )


def render_list(
    screen: StaffScreen, items: list[PendingItem], older: int, flash: Flash | None, session: Session
) -> str:
    lang = screen.lang
    # without JavaScript nothing holds the reload while the PIN is typed again: give it time
    slow = NEED_NAME_NOSCRIPT_REFRESH_S if any(it.needs_name and it.name is not None for it in items) else None
    return _page(
        "list.html",
        lang,
        title=phrase("title", lang),
        refresh=RESULT_REFRESH_S if flash is not None else REFRESH_S,
        noscript_refresh=slow,
        items=items,
        older=older,
        flash=flash,
        token=screen.token,
        max_pin=MAX_PIN,
        staff_id=session.staff_id,
        staff_name=session.name,
        # turned off: no "no snapshot" note on every card
        show_snapshots=screen.evidence is not None,
        why=lambda reasons: why_text(reasons, lang),
    )


def render_body(lang: Language, title: str, body: str, *, refresh: int = 0) -> str:
    """A page around HTML made by edge/screens/checkin_page.py or today_page.py (escaped there)."""
    return _page("fragment.html", lang, title=title, refresh=refresh, noscript_refresh=None, body=Markup(body))


def render_error(lang: Language, status: HTTPStatus, message: str, detail: str | None = None) -> str:
    unavailable = status == HTTPStatus.SERVICE_UNAVAILABLE
    return _page(
        "error.html",
        lang,
        title=f"{status.value} {status.phrase}",
        # an unattended touch screen must not stay on an error: back to the list by itself (a 503 page thus
        # keeps retrying, and the screen recovers when the store does)
        refresh=REFRESH_S * 2,
        noscript_refresh=None,
        heading=phrase("e503_title", lang) if unavailable else message,
        detail=detail,
        unavailable=unavailable,
        text=message,
        back=phrase("reload", lang) if unavailable else phrase("back", lang),
    )
