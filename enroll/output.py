"""What meal-enroll prints: tables sized for Chinese names, enrolment results, and import progress."""

from __future__ import annotations

import unicodedata
from typing import IO, TYPE_CHECKING

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


class Progress:
    """Per-row progress on stderr: one plain line per row, or one rewritten bar on a terminal."""

    def __init__(self, total: int, stream: IO[str]) -> None:
        self.total = max(total, 0)
        self.done = 0
        self.stream = stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)())

    def step(self, label: str, state: str) -> None:
        self.done += 1
        n = len(str(self.total))
        pct = 100 * self.done // self.total if self.total else 100
        head = f"[{self.done:>{n}}/{self.total}] {pct:3d}%"
        if self.tty:
            filled = 20 * self.done // self.total if self.total else 20
            bar = "#" * filled + "-" * (20 - filled)
            print(f"\r\x1b[K{head} [{bar}] {label} {state}", end="", file=self.stream, flush=True)
            if self.done >= self.total:
                print(file=self.stream)
        else:
            print(f"{head} {label} {state}", file=self.stream, flush=True)

    def note(self, text: str) -> None:
        if self.tty:
            print("\r\x1b[K" + text, file=self.stream, flush=True)
        else:
            print(text, file=self.stream, flush=True)
