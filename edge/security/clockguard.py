"""Clock guard (issue 12, item 4): no meal is decided on a clock that cannot be right.

Every meal event carries the time it was decided, and the subsidy is paid per local date, so a wrong
clock pays the wrong day (a replay with a pinned --now a month back did exactly that). The reference is
the newest `decided_at` in the store:
- `behind`: the clock is earlier than the newest event. Time does not run backwards: refuse, at every
  decision, until the clock is right again (e.g. a dead RTC battery before NTP has synchronised).
- `ahead`: at start, the clock is more than `max_skew` beyond the newest event (e.g. set a year
  forward). Checked until the clock is first found plausible in this run: the events that follow would
  carry future dates and, once the clock is corrected, would make every later decision `behind`.
The kiosk says so (edge/meals/feedback.py, kind "clock"); the log gets one line when the state changes,
not one per face.
Pure: the caller hands in the times (the store's newest event, the decision clock).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

log = logging.getLogger(__name__)

State = Literal["ok", "behind", "ahead"]

@dataclass(frozen=True)
class ClockState:
    state: State
    #: the clock that was checked (the decision time)
    now: datetime
    #: the newest event in the store, None for an empty store
    newest: datetime | None

    @property
    def ok(self) -> bool:
        return self.state == "ok"

    def explain(self, max_skew: timedelta | None = None) -> str:
        """For the log and the operator: what is wrong and what to do."""
        if self.state == "ok":
            return f"clock {self.now.isoformat(timespec='seconds')} is plausible"
        assert self.newest is not None
        newest = self.newest.isoformat(timespec="seconds")
        fix = "check the date, time and time zone (timedatectl; NTP)"
        if self.state == "behind":
            return (f"the clock ({self.now.isoformat(timespec='seconds')}) is earlier than the newest meal event in "
                    f"the store ({newest}): no meal is recorded until it is right; {fix}")
        skew = f" by more than {max_skew.total_seconds() / 86400:g} days" if max_skew is not None else ""
        return (f"the clock ({self.now.isoformat(timespec='seconds')}) is ahead of the newest meal event in the store "
                f"({newest}){skew}: no meal is recorded until it is right; {fix}. If the kiosk really has not "
                "served for that long, raise [clock] max_start_skew_days")


class ClockGuard:
    """Checks each decision time against the newest event; `recorded(t)` moves the reference forward.

    `max_skew`: None (or 0) turns the start check off. `on_change(state)` is called (outside the
    lock) whenever the state changes, e.g. to republish the retained kiosk status."""

    def __init__(self, newest: datetime | None, max_skew: timedelta | None,
                 on_change: Callable[[ClockState], None] | None = None) -> None:
        if newest is not None and (newest.tzinfo is None or newest.utcoffset() is None):
            raise ValueError(f"naive datetime {newest!r}: the clock guard compares aware times")
        self.max_skew = max_skew if max_skew else None
        self.on_change = on_change
        self._lock = threading.Lock()
        self._newest = newest
        #: the start check runs until the clock is first found plausible
        self._starting = True
        self.current: ClockState | None = None

    @property
    def newest(self) -> datetime | None:
        return self._newest

    def check(self, now: datetime) -> ClockState:
        if now.tzinfo is None or now.utcoffset() is None:
            raise ValueError(f"naive datetime {now!r}: decision times must be timezone-aware")
        with self._lock:
            newest = self._newest
            state: State = "ok"
            if newest is not None:
                if now < newest:
                    state = "behind"
                elif self._starting and self.max_skew is not None and now - newest > self.max_skew:
                    state = "ahead"
            if state == "ok":
                self._starting = False
            result = ClockState(state, now, newest)
            previous = self.current
            self.current = result
        if previous is None or previous.state != state:
            self._report(previous, result)
            if self.on_change is not None:
                self.on_change(result)
        return result

    def recorded(self, decided_at: datetime) -> None:
        """A meal event was recorded with this time: later decisions must not be earlier."""
        with self._lock:
            if self._newest is None or decided_at > self._newest:
                self._newest = decided_at

    def _report(self, previous: ClockState | None, s: ClockState) -> None:
        if s.state != "ok":
            log.error("clock guard: %s", s.explain(self.max_skew))
        elif previous is not None:
            log.warning("clock guard: the clock (%s) is right again; meals are decided again",
                        s.now.isoformat(timespec="seconds"))
