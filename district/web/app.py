"""The district dashboard: FastAPI + Jinja2 templates (files in web/templates), served by uvicorn.

Every page needs a login (district staff accounts, district.users); a signed session cookie (HttpOnly,
SameSite=Strict) lasts [web] session_hours. Forms carry a per-session CSRF token. Pages only read, except
logging in and out; settlement downloads are computed on request and audited, and so are looking up a senior's
meals or roster record. The roster page only reads: roster changes stay on the audited CLI.
"""

from __future__ import annotations

import io
import logging
import os
import secrets
import tempfile
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy import Engine
from starlette.middleware.sessions import SessionMiddleware

from district import queries, reconcile, voids
from district.config import Config, read_secret
from district.db.engine import next_month
from district.paths import package_dir, state_dir
from district.report import yuan
from district.roster import book
from district.settle import ReportError, settle
from district.users import audit, check_login

log = logging.getLogger(__name__)

REPORT_FILES = ("centres.csv", "seniors.csv", "summary.xlsx", "statement.txt", "meals-per-day.png",
                "subsidy-per-centre.png", "check-in-method.png")


class LoginRequired(Exception):
    pass


def session_key(cfg: Config) -> str:
    if cfg.web.session_key_file:
        return read_secret(cfg.web.session_key_file, cfg)
    path = state_dir() / "session.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


def when(iso: str | None) -> str:
    """An ISO time as the pages show it: UTC to the second, '2026-11-30 03:31:00' (the headers say UTC)."""
    if not iso:
        return "-"
    try:
        dt = datetime.fromisoformat(iso)
    except ValueError:
        return iso
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def create_app(cfg: Config, engine: Engine, key: str | None = None) -> FastAPI:
    app = FastAPI(title="meal-district", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(SessionMiddleware, secret_key=key or session_key(cfg), session_cookie="meal_district",
                       max_age=int(cfg.web.session_hours * 3600), same_site="strict", https_only=cfg.web.secure_cookies)
    templates = Jinja2Templates(directory=str(package_dir("web", "templates")))
    templates.env.filters["yuan"] = yuan
    templates.env.filters["when"] = when
    app.mount("/static", StaticFiles(directory=str(package_dir("web", "static"))), name="static")
    tz = ZoneInfo(cfg.district.timezone)

    @app.middleware("http")
    async def headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        response.headers["Content-Security-Policy"] = "default-src 'self'; img-src 'self'; frame-ancestors 'none'"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.exception_handler(LoginRequired)
    async def to_login(request: Request, exc: LoginRequired) -> Response:
        return RedirectResponse(f"/login?next={request.url.path}", status_code=303)

    def user(request: Request) -> str:
        name = request.session.get("user")
        expires = request.session.get("until", 0)
        if not name or expires < datetime.now(UTC).timestamp():
            request.session.clear()
            raise LoginRequired
        return str(name)

    def csrf(request: Request) -> str:
        if "csrf" not in request.session:
            request.session["csrf"] = secrets.token_urlsafe(24)
        return str(request.session["csrf"])

    def page(request: Request, name: str, **ctx: Any) -> HTMLResponse:
        ctx.update(user=request.session.get("user"), district=cfg.district, csrf=csrf(request),
                   nav=request.url.path)
        return templates.TemplateResponse(request, name, ctx)

    @app.get("/login", response_class=HTMLResponse)
    def login_form(request: Request, next: str = "/") -> HTMLResponse:
        return page(request, "login.html", error=None, next=next if next.startswith("/") else "/")

    @app.post("/login", response_class=HTMLResponse)
    def login(request: Request, name: str = Form(...), password: str = Form(...), token: str = Form(...),
              next: str = Form("/")) -> Response:
        if not secrets.compare_digest(token, csrf(request)):
            return page(request, "login.html", error="The form expired; please try again.", next=next)
        error = check_login(engine, name.strip(), password)
        if error:
            return page(request, "login.html", error=error, next=next)
        request.session.clear()
        request.session.update(user=name.strip(), until=(datetime.now(UTC) + timedelta(
            hours=cfg.web.session_hours)).timestamp(), csrf=secrets.token_urlsafe(24))
        return RedirectResponse(next if next.startswith("/") and not next.startswith("//") else "/", status_code=303)

    @app.post("/logout")
    def logout(request: Request, token: str = Form(...)) -> Response:
        if secrets.compare_digest(token, csrf(request)) and request.session.get("user"):
            with engine.begin() as conn:
                audit(conn, str(request.session["user"]), "logout", "")
        request.session.clear()
        return RedirectResponse("/login", status_code=303)

    @app.get("/", response_class=HTMLResponse)
    def overview(request: Request) -> HTMLResponse:
        user(request)
        today = datetime.now(tz).date()
        first = today.replace(day=1)
        with engine.connect() as conn:
            return page(request, "overview.html", today=today, month=first.strftime("%Y-%m"),
                        today_rows=queries.by_centre(conn, today, today + timedelta(1)),
                        month_rows=queries.by_centre(conn, first, next_month(first)),
                        counts=queries.counts(conn), kiosks=queries.kiosk_health(conn))

    @app.get("/kiosks", response_class=HTMLResponse)
    def kiosks(request: Request) -> HTMLResponse:
        user(request)
        with engine.connect() as conn:
            return page(request, "kiosks.html", kiosks=queries.kiosk_health(conn), alerts=queries.alerts(conn))

    @app.get("/gaps", response_class=HTMLResponse)
    def gaps(request: Request) -> HTMLResponse:
        user(request)
        with engine.connect() as conn:
            return page(request, "gaps.html", gaps=queries.open_gaps(conn))

    @app.get("/flags", response_class=HTMLResponse)
    def flags(request: Request) -> HTMLResponse:
        user(request)
        with engine.connect() as conn:
            flags = queries.flagged(conn)
            why = voids.described(conn, [f["other_event_id"] for f in flags if f["reason"] == reconcile.VOIDED])
            return page(request, "flags.html", flags=flags, why=why)

    @app.get("/quarantine", response_class=HTMLResponse)
    def quarantine(request: Request) -> HTMLResponse:
        user(request)
        with engine.connect() as conn:
            return page(request, "quarantine.html", rows=queries.quarantine(conn, 200))

    @app.get("/seniors", response_class=HTMLResponse)
    def seniors(request: Request, id: str = "") -> HTMLResponse:
        name = user(request)
        rows: list[dict[str, Any]] = []
        if id:
            with engine.begin() as conn:
                rows = queries.senior_history(conn, id.strip()[:64])
                audit(conn, name, "senior.history", id.strip()[:64])
        return page(request, "senior.html", senior_id=id, rows=rows)

    @app.get("/roster", response_class=HTMLResponse)
    def roster(request: Request, id: str = "") -> HTMLResponse:
        """Read-only: changes stay on the audited `meal-district roster` commands. Same queries as those."""
        name = user(request)
        senior_id = id.strip()[:64]
        record, error = None, None
        with engine.begin() as conn:
            st = book.kiosks_status(conn)
            pending = book.pending_erasures(conn)
            if senior_id:
                try:
                    record = book.show(conn, senior_id)
                except book.RosterError as e:
                    error = str(e)
                audit(conn, name, "roster.show", senior_id)  # a person's record was looked up, as on the CLI
        return page(request, "roster.html", st=st, summary=book.summary(st), pending=pending, senior_id=senior_id,
                    record=record, error=error)

    @app.get("/settlement", response_class=HTMLResponse)
    def settlement(request: Request, month: str = "") -> HTMLResponse:
        name = user(request)
        month = month or datetime.now(tz).date().replace(day=1).strftime("%Y-%m")
        error = None
        try:
            queries.month_range(month)
        except ValueError as e:
            error, month = str(e), datetime.now(tz).date().strftime("%Y-%m")
        with engine.begin() as conn:
            try:  # the statement's own numbers, so the page and the files cannot disagree
                s = settle(conn, month, cfg.district.id, cfg.report.daily_subsidy_cap_fen)
            except ReportError as e:
                s, error = None, str(e)
            voided = [ln for ln in s.lines if ln["adjustment"] == reconcile.VOIDED] if s else []
            words = voids.voids_of(conn, [ln["event_id"] for ln in voided])
            audit(conn, name, "settlement.view", month)  # the page lists seniors' voided meals
        return page(request, "settlement.html", month=month, files=REPORT_FILES, error=error, s=s,
                    voided=[ln | {"void": words.get(ln["event_id"])} for ln in voided],
                    reversed_fen=sum(int(ln["adjustment_fen"]) for ln in voided))

    @app.get("/settlement/{month}/{name}")
    def download(request: Request, month: str, name: str) -> Response:
        who = user(request)
        try:
            queries.month_range(month)
        except ValueError as e:
            return Response(str(e), status_code=400, media_type="text/plain")
        if name not in (*REPORT_FILES, "all.zip"):
            return Response("no such file", status_code=404, media_type="text/plain")
        from district.report import write_report

        with tempfile.TemporaryDirectory(prefix="meal-district-report-") as tmp, engine.begin() as conn:
            write_report(conn, month, Path(tmp), cfg.district.id, cfg.report.daily_subsidy_cap_fen)
            audit(conn, who, "settlement.download", f"{month} {name}")
            if name == "all.zip":
                buf = io.BytesIO()
                with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
                    for f in REPORT_FILES:
                        z.write(Path(tmp) / f, f"settlement-{month}/{f}")
                data = buf.getvalue()
            else:
                data = (Path(tmp) / name).read_bytes()
        types = {".csv": "text/csv; charset=utf-8", ".png": "image/png", ".txt": "text/plain; charset=utf-8",
                 ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                 ".zip": "application/zip"}
        inline = name.endswith(".png")
        return Response(data, media_type=types[Path(name).suffix], headers={
            "Content-Disposition": f'{"inline" if inline else "attachment"}; filename="{month}-{name}"'})

    return app


def run_web(cfg: Config, engine: Engine, host: str, port: int) -> int:
    import uvicorn

    from district.users import any_users

    if not any_users(engine):
        log.warning("no dashboard users yet: add one with `meal-district --config FILE user add NAME`")
    log.info("dashboard on http://%s:%d/", host, port)
    uvicorn.run(create_app(cfg, engine), host=host, port=port, log_level="info", proxy_headers=False,
                server_header=False)
    return 0



