"""What the running daemon tells the staff screen that is not in the store: today's unknown faces and refusals
(they are nobody's meal, so no event), whether the camera delivers frames, and whether the link to the district
(MQTT) is up.

One small JSON file beside the store (`kiosk-state.json`), replaced atomically (write, fsync, rename) by the
daemon when a count or the camera changes, read by the staff screen's "today" page. A missing or unreadable
file means "not known" (the daemon is not running, or an older one), never an error.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FILE_NAME = "kiosk-state.json"
#: decision kinds counted for the day
COUNTED = ("unknown", "refused", "confirm")


def state_path(store_path: Path) -> Path:
    return store_path.with_name(FILE_NAME)


@dataclass
class KioskState:
    day: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    camera_ok: bool = True
    #: the MQTT link to the district: True up, False down, None not used ([mqtt] enabled = false)
    district_connected: bool | None = None
    #: ISO 8601, when the daemon last wrote it
    updated_at: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class KioskStateWriter:
    """The daemon's side: `seen(kind, day)` for each decision, `camera(ok)` each loop; writes only on change.
    A failed write is logged once and never stops check-in."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.state = KioskState()
        self._warned = False

    def seen(self, kind: str, day: date, now: datetime) -> None:
        if kind not in COUNTED:
            return
        if self.state.day != day.isoformat():
            self.state.day, self.state.counts = day.isoformat(), {}
        self.state.counts[kind] = self.state.counts.get(kind, 0) + 1
        self._write(now)

    def camera(self, ok: bool, now: datetime, district_connected: bool | None = None) -> None:
        """The camera's and the district link's state, each loop; written when either changes."""
        s = self.state
        if ok != s.camera_ok or district_connected != s.district_connected or not s.updated_at:
            s.camera_ok, s.district_connected = ok, district_connected
            self._write(now)

    def _write(self, now: datetime) -> None:
        self.state.updated_at = now.isoformat(timespec="seconds")
        data = json.dumps(self.state.to_json(), ensure_ascii=False).encode("utf-8")
        try:
            fd, tmp = tempfile.mkstemp(prefix=".kiosk-state-", dir=self.path.parent)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as e:
            if not self._warned:
                log.warning("cannot write %s for the staff screen (check-in goes on): %s", self.path, e)
                self._warned = True


def read_state(path: Path) -> KioskState | None:
    """The daemon's last word, or None when there is none (or it cannot be read)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return KioskState(
            day=str(raw["day"]), counts={str(k): int(v) for k, v in raw["counts"].items()},
            camera_ok=bool(raw["camera_ok"]), updated_at=str(raw["updated_at"]),
            district_connected=None if raw.get("district_connected") is None else bool(raw["district_connected"]),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
