"""What meal-enroll prints: tables sized for Chinese names, enrolment results, and import progress."""

from __future__ import annotations

import unicodedata
from typing import IO, TYPE_CHECKING

from enroll.progress import Progress

__all__ = ["Progress", "display_width", "pad", "print_result", "print_table"]

if TYPE_CHECKING:
    from enroll.service import EnrolResult


def display_width(s: str) -> int:
    """Terminal columns: Chinese characters take two."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in s)


def pad(s: str, n: int) -> str:
    return s + " " * max(0, n - display_width(s))


def print_table(rows: list[list[str]], out: IO[str]) -> None:
    widths = [max(display_width(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(pad(c, w) for c, w in zip(r, widths, strict=True)).rstrip(), file=out)


def print_result(res: EnrolResult, out: IO[str], indent: str = "") -> None:
    s = res.senior
    if res.enrolled:
        head = f"{s.senior_id} {s.name}: enrolled, {res.templates_added} template(s) added"
        head += f" ({res.templates_total} in all)" if res.templates_total != res.templates_added else ""
    elif res.rejected:
        head = f"{s.senior_id} {s.name}: NOT enrolled"
    else:
        head = f"{s.senior_id} {s.name}: unchanged ({res.templates_total} template(s))"
    print(indent + head, file=out)
    for prob in res.problems:
        print(f"{indent}  rejected: {prob}", file=out)
    for ph in res.photos:
        if ph.accepted:
            state = "ok"
        elif ph.skipped:
            state = f"skipped: {ph.reason}"
        else:
            state = f"rejected: {ph.reason}"
        print(f"{indent}  {ph.label}: {state}", file=out)
    for w in res.all_warnings:
        print(f"{indent}  warning: {w}", file=out)
