"""The store's side of staff accounts (edge.security.staffauth.StaffStorage) and of the audit log.

A mixin of `Store`: it uses the store's own `_read` / `_write` transactions (one writer at a time, BEGIN
IMMEDIATE across processes), so a login failure counted by the staff screen and one counted by `meal-edge
confirm` at the same moment both count.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Literal, cast

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from edge.security.staffauth import ROLES, StaffAccount
from edge.store.auditlog import AuditEntry, AuditRecord
from edge.store.models import AuditRow, StaffRow


def _to_account(r: StaffRow) -> StaffAccount:
    role = cast(Literal["staff", "manager"], r.role if r.role in ROLES else "staff")
    return StaffAccount(r.staff_id, r.name, role, r.secret_hash, r.failures, r.locked_until, r.created_at)


def add_audit(s: Session, entry: AuditEntry | None) -> None:
    """Append one audit line inside the caller's write transaction (None: nothing)."""
    if entry is None:
        return
    s.add(
        AuditRow(
            at=entry.at or datetime.now(UTC),
            staff_id=entry.staff_id,
            action=entry.action,
            target=entry.target,
            details=dict(entry.details),
        )
    )


class StaffMixin:
    """Staff accounts and the audit log, for `Store`."""

    # provided by Store
    def _write(self, what: str) -> AbstractContextManager[Session]:  # pragma: no cover - Store's
        raise NotImplementedError

    def _read(self, what: str) -> AbstractContextManager[Session]:  # pragma: no cover - Store's
        raise NotImplementedError

    # -- accounts --------------------------------------------------------------------------------------------

    def get_staff(self, staff_id: str) -> StaffAccount | None:
        with self._read(f"could not read staff account {staff_id!r}") as s:
            row = s.get(StaffRow, staff_id)
            return None if row is None else _to_account(row)

    def list_staff(self) -> list[StaffAccount]:
        with self._read("could not list staff accounts") as s:
            return [_to_account(r) for r in s.scalars(select(StaffRow).order_by(StaffRow.staff_id))]

    def add_staff(self, account: StaffAccount) -> None:
        """A taken id fails on the primary key (a StoreError from `_write`); StaffAuth.add says it first."""
        with self._write(f"could not add staff account {account.staff_id!r}") as s:
            s.add(
                StaffRow(
                    staff_id=account.staff_id,
                    name=account.name,
                    role=account.role,
                    secret_hash=account.secret_hash,
                    failures=0,
                    locked_until=None,
                    created_at=account.created_at or datetime.now(UTC),
                )
            )

    def remove_staff(self, staff_id: str) -> bool:
        with self._write(f"could not remove staff account {staff_id!r}") as s:
            row = s.get(StaffRow, staff_id)
            if row is None:
                return False
            s.delete(row)
            return True

    def add_login_failure(self, staff_id: str) -> int:
        # one UPDATE inside BEGIN IMMEDIATE: two processes counting at once both count
        with self._write(f"could not count a failed login of {staff_id!r}") as s:
            s.execute(update(StaffRow).where(StaffRow.staff_id == staff_id).values(failures=StaffRow.failures + 1))
            return int(s.scalar(select(StaffRow.failures).where(StaffRow.staff_id == staff_id)) or 0)

    def set_login_state(self, staff_id: str, failures: int, locked_until: datetime | None) -> None:
        with self._write(f"could not update the login state of {staff_id!r}") as s:
            s.execute(
                update(StaffRow)
                .where(StaffRow.staff_id == staff_id)
                .values(failures=failures, locked_until=locked_until)
            )

    def set_secret_hash(self, staff_id: str, secret_hash: str) -> None:
        with self._write(f"could not update the PIN hash of {staff_id!r}") as s:
            s.execute(update(StaffRow).where(StaffRow.staff_id == staff_id).values(secret_hash=secret_hash))

    # -- the audit log ---------------------------------------------------------------------------------------

    def audit(self, entry: AuditEntry) -> None:
        """Append one line in its own transaction. Actions that change the store write theirs in the same
        transaction as the change instead (their `audit` argument)."""
        with self._write(f"could not write the audit log ({entry.action} {entry.target})") as s:
            add_audit(s, entry)

    def audit_log(self, limit: int | None = None) -> list[AuditRecord]:
        """Audit lines, oldest first; with `limit`, the newest `limit` of them."""
        q = select(AuditRow).order_by(AuditRow.id.desc())
        if limit is not None:
            q = q.limit(limit)
        with self._read("could not read the audit log") as s:
            out = [AuditRecord(r.id, r.at, r.staff_id, r.action, r.target, dict(r.details)) for r in s.scalars(q)]
        out.reverse()
        return out
