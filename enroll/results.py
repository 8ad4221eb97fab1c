"""What an enrolment gives back (split out of enroll/service.py, which does the work): the photos handed in,
each photo's outcome, the result, and the refusals not tied to one photo, each with a stable code.

Codes are stable (logs, tests, and the staff screen's Chinese wording in enroll/words.py, which has a text for
every code listed here and in enroll.quality.REASONS: tests/test_enrol_words.py fails on a code without one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np

from edge.meals.rules import STATUSES, Senior

# Photo outcome codes beyond the quality ones (enroll.quality.REASONS)
DUPLICATE = "duplicate"
DISAGREES = "disagrees"
CAPACITY = "capacity"
SAME_PHOTO = "same_photo"
PHOTO_CODES = (DUPLICATE, DISAGREES, CAPACITY, SAME_PHOTO)

# Refusals not tied to one photo (EnrolResult.problem_codes)
EMPTY_ID = "empty_id"
BAD_ID = "bad_id"
EMPTY_NAME = "empty_name"
EMPTY_HUKOU = "empty_hukou"
FUTURE_BIRTH = "future_birth"
BAD_STATUS = "bad_status"
ID_TAKEN = "id_taken"  # the id is enrolled with other details (name, birth date, hukou)
NO_PHOTOS = "no_photos"
TOO_MANY_PHOTOS = "too_many_photos"
ALREADY_ENROLLED = "already_enrolled"  # the face is enrolled as another senior
NOT_SAVED = "not_saved"
# Warnings: enrolled, but staff should know (EnrolResult.warning_codes)
LOOKALIKE = "lookalike"  # looks like another enrolled senior (a sibling?): the kiosk will ask staff for both
WARNING_CODES = (LOOKALIKE,)
PROBLEM_CODES = (
    EMPTY_ID, BAD_ID, EMPTY_NAME, EMPTY_HUKOU, FUTURE_BIRTH, BAD_STATUS, ID_TAKEN, NO_PHOTOS, TOO_MANY_PHOTOS,
    ALREADY_ENROLLED, NOT_SAVED,
)


@dataclass(frozen=True)
class PhotoIn:
    """A photo already in memory (tests, other front-ends): decoded pixels `rgb`, or only the file's bytes
    `data` (an upload), which the enroller decodes itself, so an unreadable file is refused as any other
    (enroll.quality.UNREADABLE). `data` is kept only with keep_photos."""

    label: str
    rgb: np.ndarray | None = None
    data: bytes | None = None


PhotoSource = str | Path | PhotoIn


@dataclass
class PhotoOutcome:
    label: str
    accepted: bool = False
    #: reason code (enroll.quality codes, or DUPLICATE, DISAGREES, CAPACITY, SAME_PHOTO); "" when accepted
    code: str = ""
    #: what is wrong and how to fix it, for staff
    reason: str = ""
    warnings: list[str] = field(default_factory=list)
    score: float = 0.0

    @property
    def skipped(self) -> bool:
        return self.code == SAME_PHOTO


@dataclass(frozen=True)
class Problem:
    code: str
    #: what is wrong and how to fix it, for staff (English, as meal-enroll prints it)
    message: str


@dataclass
class EnrolResult:
    senior: Senior
    photos: list[PhotoOutcome] = field(default_factory=list)
    #: refusals not tied to one photo (bad senior details, already enrolled as someone else, ...)
    problems: list[str] = field(default_factory=list)
    #: the code of each of `problems`, in the same order (PROBLEM_CODES)
    problem_codes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: codes of the warnings that have one (WARNING_CODES)
    warning_codes: list[str] = field(default_factory=list)
    created: bool = False
    templates_added: int = 0
    templates_total: int = 0

    def refuse(self, *problems: Problem) -> None:
        for p in problems:
            self.problems.append(p.message)
            self.problem_codes.append(p.code)

    @property
    def enrolled(self) -> bool:
        return self.templates_added > 0

    @property
    def rejected_photos(self) -> list[PhotoOutcome]:
        return [p for p in self.photos if not p.accepted and not p.skipped]

    @property
    def rejected(self) -> bool:
        """Anything refused: the caller should exit non-zero."""
        return bool(self.problems or self.rejected_photos)

    @property
    def all_warnings(self) -> list[str]:
        return self.warnings + [f"{p.label}: {w}" for p in self.photos for w in p.warnings]


def senior_problems(s: Senior, today: date | None = None) -> list[Problem]:
    out = []
    if not s.senior_id.strip():
        out.append(Problem(EMPTY_ID, "empty senior id: use the id the district gave the senior"))
    elif s.senior_id != s.senior_id.strip() or any(c in s.senior_id for c in " /+#;"):
        out.append(Problem(
            BAD_ID, f"senior id {s.senior_id!r} contains a space or one of / + # ;: use letters and digits"
        ))
    if not s.name.strip():
        out.append(Problem(EMPTY_NAME, "empty name: give the senior's name as on their ID card"))
    if not s.hukou.strip():
        out.append(Problem(EMPTY_HUKOU, "empty hukou: give the senior's hukou district"))
    if s.birth_date > (today or date.today()):
        out.append(Problem(FUTURE_BIRTH, f"birth date {s.birth_date} is in the future: check the year"))
    if s.status not in STATUSES:
        out.append(Problem(BAD_STATUS, f"unknown status {s.status!r}: use one of {', '.join(STATUSES)}"))
    return out


def validate_senior(s: Senior, today: date | None = None) -> list[str]:
    return [p.message for p in senior_problems(s, today)]


def mismatch(senior: Senior, existing: Senior) -> Problem | None:
    """Why `senior` cannot be enrolled under an id already held by `existing` (other details), or None."""
    if (existing.name, existing.birth_date, existing.hukou) == (senior.name, senior.birth_date, senior.hukou):
        return None
    return Problem(
        ID_TAKEN,
        f"{senior.senior_id} is already enrolled as {existing.name} (born {existing.birth_date}, "
        f"hukou {existing.hukou}): check the id, "
        f"or `remove {senior.senior_id}` first to replace them",
    )
