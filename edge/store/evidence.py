"""Audit snapshots: the picture the kiosk decided on, kept for a while beside each meal and each pending
staff confirmation.

Liveness does not stop a video replayed on a phone, a mask or an injected camera feed (docs/liveness.md), and
a senior may dispute a meal ("I was not there that day"). A meal event carries the distance and margin of the
match but not what stood in front of the camera. With `[evidence] enabled`, the kiosk keeps one JPEG per meal
and per pending confirmation: the face with about one face width of its surroundings on every side (enough to
show a phone's bezel or a hand holding a print), at most 320 px on its longer side. They stay on the kiosk,
are never published, are named by the meal's `event_id` (or `confirmation-<id>`), sit in one folder per local
date and are deleted after `retention_days` (checked when `meal-edge run` starts and with the first
snapshot of each day).

Writing a snapshot never holds up or undoes a meal: a full disk or an unwritable folder is logged (once until
it works again) and check-in goes on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
from datetime import date, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

#: face widths of surroundings kept on each side of the face box
CONTEXT = 1.0
#: longest side of a kept snapshot, in pixels (a face of ~100 px stays recognisable for an auditor)
MAX_SIDE = 320
JPEG_QUALITY = 85
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def confirmation_name(confirmation_id: int) -> str:
    return f"confirmation-{confirmation_id}"


def crop(image: np.ndarray, box: tuple[int, int, int, int], context: float = CONTEXT) -> np.ndarray:
    """The face box (top, right, bottom, left) widened by `context` face widths on each side, clipped to the
    frame, scaled down so that its longer side is at most MAX_SIDE. image: uint8 RGB [H, W, 3]."""
    top, right, bottom, left = box
    pad = int(round(context * max(right - left, bottom - top)))
    h, w = image.shape[:2]
    y0, y1 = max(0, top - pad), min(h, bottom + pad)
    x0, x1 = max(0, left - pad), min(w, right + pad)
    if y1 <= y0 or x1 <= x0:
        raise ValueError(f"face box {box} lies outside the {w}x{h} frame")
    out = image[y0:y1, x0:x1]
    scale = MAX_SIDE / max(out.shape[:2])
    if scale < 1:
        out = cv2.resize(out, (max(1, round(out.shape[1] * scale)), max(1, round(out.shape[0] * scale))),
                         interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(out)


def _private_dir(folder: Path) -> None:
    """Create `folder` (and its parents) 0700, and make an existing one 0700."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    if folder.stat().st_mode & 0o077:
        os.chmod(folder, 0o700)


class EvidenceKeeper:
    """Writes, finds and expires snapshots under `directory/<YYYY-MM-DD>/<name>.jpg`."""

    def __init__(self, directory: Path, retention_days: int) -> None:
        if retention_days < 1:
            raise ValueError("retention_days must be at least 1")
        self.directory = Path(directory)
        self.retention_days = retention_days
        self._purged_on: date | None = None
        self._failing = False

    def save(self, name: str, image: np.ndarray, box: tuple[int, int, int, int], when: datetime) -> Path | None:
        """Keep the snapshot of one decision. Returns its path, or None when it could not be written (logged)."""
        if not _NAME.match(name):
            raise ValueError(f"not a snapshot name: {name!r}")
        day = when.date()
        self.purge(day)
        folder = self.directory / day.isoformat()
        path, tmp = folder / f"{name}.jpg", folder / f".{name}.jpg.tmp"
        try:
            ok, jpeg = cv2.imencode(
                ".jpg", cv2.cvtColor(crop(image, box), cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
            )
            if not ok:
                raise OSError("JPEG encoding failed")
            # faces are biometric data: only the kiosk's user may read them, whatever the umask
            _private_dir(self.directory)
            _private_dir(folder)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with open(fd, "wb") as f:
                os.fchmod(fd, 0o600)
                f.write(jpeg.tobytes())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)  # never a half-written snapshot under the real name
        except (OSError, ValueError, cv2.error) as e:
            if not self._failing:
                log.error(
                    "could not keep the audit snapshot %s in %s: %s; check-in goes on without snapshots until "
                    "this works again (free disk space or fix the folder's permissions)", name, self.directory, e,
                )
            self._failing = True
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            return None
        if self._failing:
            log.warning("audit snapshots are being kept again in %s", self.directory)
            self._failing = False
        return path

    def find(self, name: str) -> Path | None:
        """The snapshot called `name`, newest day first; None if it was never kept or has expired."""
        if not _NAME.match(name) or not self.directory.is_dir():
            return None
        for day in sorted((d for d in self.directory.iterdir() if _DAY.match(d.name)), reverse=True):
            p = day / f"{name}.jpg"
            if p.is_file():
                return p
        return None

    def purge(self, today: date) -> int:
        """Delete the day folders older than retention_days before `today` (at most once a day). Returns how
        many were deleted."""
        if self._purged_on == today:
            return 0
        self._purged_on = today
        if not self.directory.is_dir():
            return 0
        oldest_kept = today - timedelta(days=self.retention_days - 1)
        gone = 0
        for d in self.directory.iterdir():
            if not (d.is_dir() and _DAY.match(d.name)):
                continue
            try:
                expired = date.fromisoformat(d.name) < oldest_kept
            except ValueError:
                continue
            if expired:
                try:
                    shutil.rmtree(d)
                    gone += 1
                except OSError as e:
                    log.error("could not delete expired audit snapshots in %s: %s", d, e)
        if gone:
            log.info("deleted %d day(s) of audit snapshots older than %d days", gone, self.retention_days)
        return gone
