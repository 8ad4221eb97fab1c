"""The audit log's lines (issue 12): who did what to which record, when. Kept in the store's `audit_log`
table, which SQLite triggers keep append-only (no UPDATE, no DELETE: whoever opens the file).

Details hold ids, counts and states only, never a senior's name: a removed senior must leave no name behind
(the audit log is never erased), and the log is shown to whoever runs `meal-edge audit`.
"""

from __future__ import annotations

import getpass
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

#: what staff do (confirm/reject, manual check-in and voids on the screen or the command line; enrolment tools;
#: logins)
ACTIONS = (
    "confirm",
    "reject",
    "checkin",
    "void",
    "enrol",
    "enrol_refused",  # the staff screen's enrolment page: nothing enrolled, and why (codes only)
    "card",  # a meal-card number set for a senior
    "status",
    "remove",
    "staff_add",
    "staff_remove",
    "login",
    "login_failed",
    "logout",
    # the district roster link (issue 13): an upload the district refused, seniors erased on its removal
    "upload_refused",
    "roster_erase",
)


@dataclass(frozen=True)
class AuditEntry:
    staff_id: str
    action: str
    target: str
    details: Mapping[str, Any] = field(default_factory=dict)
    #: None: when it is written
    at: datetime | None = None

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown audit action {self.action!r}")
        if not self.staff_id.strip():
            raise ValueError("an audit line needs who did it")


@dataclass(frozen=True)
class AuditRecord:
    id: int
    at: datetime
    staff_id: str
    action: str
    target: str
    details: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "staff_id": self.staff_id,
            "action": self.action,
            "target": self.target,
            "details": self.details,
        }


def os_user() -> str:
    """Who ran a command-line tool without a staff login (`meal-enroll`): the operating system account."""
    try:
        return f"os:{getpass.getuser()}"
    except (KeyError, OSError):
        return "os:?"
