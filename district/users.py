"""District staff accounts for the dashboard: argon2id hashes, lockout after failed logins, and the audit log."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.orm import Session

from district.db.models import Audit, User

log = logging.getLogger(__name__)

_hasher = PasswordHasher()
MIN_PASSWORD = 10
MAX_FAILED = 5
LOCKOUT = timedelta(minutes=15)
_NAME = re.compile(r"^[A-Za-z0-9_.@\-]{1,64}$")
# verifying against this when the user does not exist keeps the time of a failed login the same
_DUMMY = _hasher.hash("not a password of anyone")


class UserError(ValueError):
    pass


def audit(conn: Connection, actor: str, action: str, detail: str = "") -> None:
    conn.execute(insert(Audit).values(at=datetime.now(UTC), actor=actor[:64], action=action[:64],
                                      detail=detail[:1000]))


def add_user(engine: Engine, name: str, password: str, actor: str = "cli") -> None:
    if not _NAME.match(name):
        raise UserError(f"user name {name!r}: use 1-64 letters, digits, '_', '.', '@' or '-'")
    if len(password) < MIN_PASSWORD:
        raise UserError(f"the password must have at least {MIN_PASSWORD} characters")
    with engine.begin() as conn:
        if conn.execute(select(User.id).where(User.name == name)).first():
            conn.execute(update(User).where(User.name == name).values(
                password_hash=_hasher.hash(password), failed_logins=0, locked_until=None, disabled=False))
            audit(conn, actor, "user.password", name)
        else:
            conn.execute(insert(User).values(name=name, password_hash=_hasher.hash(password),
                                             created_at=datetime.now(UTC), disabled=False, failed_logins=0))
            audit(conn, actor, "user.add", name)


def check_login(engine: Engine, name: str, password: str) -> str | None:
    """None when the login is good, else a message for the login page (the same for an unknown user and a
    wrong password, so names cannot be probed)."""
    now = datetime.now(UTC)
    with engine.begin() as conn:
        u = Session(conn).scalars(select(User).where(User.name == name)).first()
        if u is None or u.disabled:
            try:
                _hasher.verify(_DUMMY, password)
            except VerificationError:
                pass
            audit(conn, name or "-", "login.failed", "unknown or disabled user")
            return "Wrong name or password."
        if u.locked_until is not None and u.locked_until > now:
            audit(conn, name, "login.locked", "")
            return "Too many failed logins: this account is locked for a few minutes."
        try:
            _hasher.verify(u.password_hash, password)
        except (VerificationError, InvalidHashError):
            failed = u.failed_logins + 1
            conn.execute(update(User).where(User.id == u.id).values(
                failed_logins=failed, locked_until=now + LOCKOUT if failed >= MAX_FAILED else None))
            audit(conn, name, "login.failed", f"wrong password ({failed})")
            return "Wrong name or password."
        vals: dict[str, object] = {"failed_logins": 0, "locked_until": None}
        if _hasher.check_needs_rehash(u.password_hash):
            vals["password_hash"] = _hasher.hash(password)
        conn.execute(update(User).where(User.id == u.id).values(**vals))
        audit(conn, name, "login", "")
    return None


def any_users(engine: Engine) -> bool:
    with engine.connect() as conn:
        return conn.execute(select(User.id).limit(1)).first() is not None
