"""Staff accounts, logins and sessions (issue 12, item 3): who may pay a subsidy by hand.

Pure logic over a small storage protocol (`StaffStorage`, implemented by the kiosk store), so the rules can
be tested on their own and on the real SQLite store:

- an account is a staff id, a display name, a role ("staff" or "manager") and an argon2id hash of the
  staff member's PIN or password (argon2-cffi's PasswordHasher: salted, memory-hard, parameters inside the
  hash, so they can be raised later and old hashes are re-hashed at the next good login);
- `authenticate` checks a PIN; after `max_failures` wrong ones in a row the account is locked for
  `lockout` (kept in the store: counts across the staff screen, `meal-edge confirm` and restarts). An unknown
  id gets the same answer and takes the same time as a wrong PIN, so ids cannot be probed;
- `login` gives a session token (random, 256 bits; only its SHA-256 is kept, in memory: a restart logs
  everyone out). A session ends after `idle` without use, or `max_age` after login, whichever comes first,
  and at once when the account is removed or locked.

Standalone: imports nothing from edge.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Literal, Protocol

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

Role = Literal["staff", "manager"]
ROLES: tuple[Role, ...] = ("staff", "manager")
STAFF_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")
MIN_SECRET, MAX_SECRET = 6, 128


class AuthError(Exception):
    """A refused login. `kind`: bad (unknown id or wrong PIN: deliberately the same), locked."""

    def __init__(self, kind: Literal["bad", "locked"], message: str, *, until: datetime | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.until = until


class AccountError(ValueError):
    """Bad account details (id, name, role, PIN), phrased for the manager."""


@dataclass(frozen=True)
class StaffAccount:
    staff_id: str
    name: str
    role: Role
    secret_hash: str
    failures: int = 0
    locked_until: datetime | None = None
    created_at: datetime | None = None


class StaffStorage(Protocol):
    """What staffauth needs from a store. `add_login_failure` must be atomic (two processes at once)."""

    def get_staff(self, staff_id: str) -> StaffAccount | None: ...

    def add_staff(self, account: StaffAccount) -> None: ...

    def remove_staff(self, staff_id: str) -> bool: ...

    def list_staff(self) -> list[StaffAccount]: ...

    def add_login_failure(self, staff_id: str) -> int:
        """Count one more wrong PIN; returns the failures in a row so far."""
        ...

    def set_login_state(self, staff_id: str, failures: int, locked_until: datetime | None) -> None: ...

    def set_secret_hash(self, staff_id: str, secret_hash: str) -> None: ...


@dataclass(frozen=True)
class AuthPolicy:
    max_failures: int = 5
    lockout: timedelta = timedelta(minutes=15)
    #: a touch screen left logged in must not let the next person (or a senior) confirm: short idle time
    idle: timedelta = timedelta(minutes=5)
    max_age: timedelta = timedelta(hours=12)


@dataclass(frozen=True)
class Session:
    staff_id: str
    name: str
    role: Role
    created_at: datetime
    last_seen: datetime

    @property
    def is_manager(self) -> bool:
        return self.role == "manager"


def check_staff_id(staff_id: str) -> str:
    if not STAFF_ID.match(staff_id):
        raise AccountError(
            f"staff id {staff_id!r}: use 1 to 32 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return staff_id


def check_secret(secret: str) -> str:
    if not MIN_SECRET <= len(secret) <= MAX_SECRET:
        raise AccountError(f"the PIN or password must be {MIN_SECRET} to {MAX_SECRET} characters long")
    if not secret.isprintable():
        raise AccountError("the PIN or password contains a control character")
    if len(set(secret)) == 1:
        raise AccountError("the PIN or password must not be one character repeated")
    return secret


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _token_key(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class StaffAuth:
    def __init__(
        self,
        storage: StaffStorage,
        policy: AuthPolicy | None = None,
        *,
        clock: Callable[[], datetime] = _utcnow,
        hasher: PasswordHasher | None = None,
    ) -> None:
        self.storage = storage
        self.policy = policy or AuthPolicy()
        self.clock = clock
        self.hasher = hasher or PasswordHasher()
        # verified against for unknown ids, so they take as long as a wrong PIN
        self._dummy = self.hasher.hash(secrets.token_urlsafe(16))
        self._sessions: dict[bytes, Session] = {}
        self._lock = threading.Lock()

    # -- accounts -----------------------------------------------------------------------------------------

    def add(self, staff_id: str, name: str, role: str, secret: str) -> StaffAccount:
        check_staff_id(staff_id)
        if not name.strip() or not name.isprintable() or len(name) > 60:
            raise AccountError("give the staff member's name (1 to 60 printable characters)")
        if role not in ROLES:
            raise AccountError(f"role {role!r}: use one of {', '.join(ROLES)}")
        check_secret(secret)
        if self.storage.get_staff(staff_id) is not None:
            raise AccountError(f"staff id {staff_id!r} is already taken: choose another")
        acct = StaffAccount(staff_id, name.strip(), role, self.hasher.hash(secret), created_at=self.clock())
        self.storage.add_staff(acct)
        return acct

    def remove(self, staff_id: str) -> bool:
        gone = self.storage.remove_staff(staff_id)
        self._drop_sessions(staff_id)
        return gone

    # -- logins -------------------------------------------------------------------------------------------

    def authenticate(self, staff_id: str, secret: str) -> StaffAccount:
        """The account if `secret` is its PIN; AuthError otherwise (and a failure counted)."""
        now = self.clock()
        acct = self.storage.get_staff(staff_id) if STAFF_ID.match(staff_id) else None
        if acct is None:
            self._verify(self._dummy, secret)
            raise AuthError("bad", "unknown staff id or wrong PIN")
        if acct.locked_until is not None and acct.locked_until > now:
            raise AuthError("locked", self._locked_text(acct.locked_until, now), until=acct.locked_until)
        if not self._verify(acct.secret_hash, secret):
            n = self.storage.add_login_failure(staff_id)
            if n >= self.policy.max_failures:
                until = now + self.policy.lockout
                self.storage.set_login_state(staff_id, 0, until)
                self._drop_sessions(staff_id)
                raise AuthError("locked", self._locked_text(until, now), until=until)
            left = self.policy.max_failures - n
            raise AuthError("bad", f"unknown staff id or wrong PIN ({left} more tries before a lockout)")
        if acct.failures or acct.locked_until is not None:
            self.storage.set_login_state(staff_id, 0, None)
        if self.hasher.check_needs_rehash(acct.secret_hash):
            self.storage.set_secret_hash(staff_id, self.hasher.hash(secret))
        return replace(acct, failures=0, locked_until=None)

    def _verify(self, secret_hash: str, secret: str) -> bool:
        try:
            return self.hasher.verify(secret_hash, secret)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def _locked_text(self, until: datetime, now: datetime) -> str:
        minutes = max(1, int((until - now).total_seconds() + 59) // 60)
        return f"too many wrong PINs: this account is locked for {minutes} more minute(s); ask a manager"

    def login(self, staff_id: str, secret: str) -> tuple[str, Session]:
        acct = self.authenticate(staff_id, secret)
        now = self.clock()
        token = secrets.token_urlsafe(32)
        s = Session(acct.staff_id, acct.name, acct.role, now, now)
        with self._lock:
            self._expire(now)
            self._sessions[_token_key(token)] = s
        return token, s

    def session(self, token: str | None, *, touch: bool = True) -> Session | None:
        """The live session of `token`, or None: unknown, expired, account gone or locked. `touch` restarts
        its idle time: a person's action does, a page reloading itself must not (else it never expires)."""
        if not token:
            return None
        now = self.clock()
        key = _token_key(token)
        with self._lock:
            self._expire(now)
            # looked up by the token's SHA-256: a timing difference tells nothing about a live token
            s = self._sessions.get(key)
        if s is None:
            return None
        acct = self.storage.get_staff(s.staff_id)
        if acct is None or (acct.locked_until is not None and acct.locked_until > now):
            self.logout(token)
            return None
        fresh = replace(s, last_seen=now if touch else s.last_seen, name=acct.name, role=acct.role)
        with self._lock:
            if key in self._sessions:
                self._sessions[key] = fresh
        return fresh

    def logout(self, token: str | None) -> None:
        if token:
            with self._lock:
                self._sessions.pop(_token_key(token), None)

    def _alive(self, s: Session, now: datetime) -> bool:
        return now - s.last_seen < self.policy.idle and now - s.created_at < self.policy.max_age

    def _expire(self, now: datetime) -> None:
        for k in [k for k, s in self._sessions.items() if not self._alive(s, now)]:
            del self._sessions[k]

    def _drop_sessions(self, staff_id: str) -> None:
        with self._lock:
            for k in [k for k, s in self._sessions.items() if s.staff_id == staff_id]:
                del self._sessions[k]


def read_secret(pin_file: str | None, prompt: str = "PIN: ", *, confirm: bool = False) -> str:
    """A PIN or password for a command line tool, never from argv: the first line of `pin_file` ("-": standard
    input), else a prompt on the terminal (twice with `confirm`), else the first line of standard input."""
    import getpass
    import sys
    from pathlib import Path

    if pin_file == "-" or (pin_file is None and not sys.stdin.isatty()):
        return sys.stdin.readline().rstrip("\r\n")
    if pin_file is not None:
        try:
            lines = Path(pin_file).read_text(encoding="utf-8").splitlines()
        except OSError as e:
            raise AccountError(f"{pin_file}: cannot read the PIN file ({e.strerror})") from None
        return lines[0] if lines else ""
    secret = getpass.getpass(prompt)
    if confirm and getpass.getpass("again: ") != secret:
        raise AccountError("the two entries differ: nothing changed")
    return secret
