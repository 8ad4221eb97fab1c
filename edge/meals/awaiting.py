"""The kiosk's side of a staff confirmation: wait for staff, then tell the senior.

When the kiosk is not sure it shows "请稍候" and keeps a pending confirmation in the store. Staff answer it
on the staff screen, which is its own process sharing the SQLite store, so the daemon learns the answer by
reading the store: one primary-key read per waiting confirmation, at most every `every` seconds (cheap; WAL
readers never wait for a writer). The outcome goes back to the senior's screen and voice:

- `paid`: staff confirmed and a meal was recorded (the amount to pay is the event's);
- `no_meal`: staff confirmed, but the rules gave no meal (already served, outside the windows, refused);
- `rejected`: staff said it is not this person;
- `timeout`: nobody answered within `[display] confirm_wait_seconds`: the senior is sent to staff, and the
  card stays on the staff screen (staff may still confirm it; the kiosk no longer waits for it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from edge.store import Store, StoreError

log = logging.getLogger(__name__)

#: seconds between store reads while a confirmation is waiting
POLL_EVERY = 0.5


@dataclass(frozen=True)
class Outcome:
    kind: str  # paid | no_meal | rejected | timeout
    confirmation_id: int
    senior_id: str
    event_id: str | None = None


class ConfirmWait:
    """The confirmations the kiosk is waiting on. `watch` from the pipeline's callback, `poll` from the
    daemon's loop (both on the main thread)."""

    def __init__(
        self, store: Store, timeout_s: float, *, every: float = POLL_EVERY, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.store = store
        self.timeout_s = timeout_s
        self.every = every
        self.clock = clock
        self._waiting: dict[int, tuple[str, float]] = {}
        self._last = 0.0

    def watch(self, confirmation_id: int, senior_id: str) -> None:
        """Wait for this one (again: a second attempt that joined the same card restarts the wait)."""
        self._waiting[confirmation_id] = (senior_id, self.clock() + self.timeout_s)

    @property
    def waiting(self) -> list[int]:
        return list(self._waiting)

    def poll(self) -> list[Outcome]:
        """The confirmations answered (or timed out) since the last call; at most one store read per waiting
        confirmation every `every` seconds. A store that cannot be read is logged; waiting goes on until
        the timeout."""
        now = self.clock()
        if not self._waiting or now - self._last < self.every:
            return []
        self._last = now
        out: list[Outcome] = []
        for cid, (senior_id, deadline) in list(self._waiting.items()):
            try:
                c = self.store.get_confirmation(cid)
            except StoreError as e:
                log.warning("cannot read confirmation %d (the kiosk keeps waiting): %s", cid, e)
                c = None
            if c is not None and c.state == "confirmed":
                out.append(Outcome("paid" if c.event_id else "no_meal", cid, senior_id, c.event_id))
            elif c is not None and c.state == "rejected":
                out.append(Outcome("rejected", cid, senior_id))
            elif now >= deadline:
                out.append(Outcome("timeout", cid, senior_id))
            else:
                continue
            del self._waiting[cid]
        return out
