"""A per-row progress bar for imports (meal-enroll import, meal-district roster import): pure, no imports."""

from __future__ import annotations

from typing import IO


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
