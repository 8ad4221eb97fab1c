"""The kiosk camera's picture lent to the staff screen's enrolment page, while the daemon keeps the camera.

Only one process can hold a camera, and the daemon (`meal-edge run`) holds it all day. To enrol a senior at the
kiosk camera without stopping check-in, the staff screen asks the daemon for its frames through two files in
the store's folder (the daemon's state directory: mode 0700, one user for both services):

- `camera-share.request`, written by the staff screen (`request`): JSON `{"until": <epoch seconds>}`. A
  request lasts `REQUEST_S` (20 s) and the enrolment page renews it with each preview picture it shows, so
  a page left open keeps it alive and a page closed lets it lapse by itself; one further in the future than
  `MAX_REQUEST_S` is ignored (a wrong clock must not share frames all day). `cancel` removes it at once.
- `camera-share.jpg`, written by the daemon (`FrameShareWriter.offer`, called with each camera frame): while
  a valid request exists, at most every `EVERY_S` (0.25 s) the latest frame as JPEG, written to a temporary
  file (mkstemp: mode 0600, it is a face) and renamed over the old one, so a reader always gets a whole
  picture. Without a request it writes nothing (no JPEG encoding, one stat of the request file every 0.25 s)
  and deletes the picture; it deletes it too when it stops.

No frame leaves the machine this way (the staff screen serves it to its own browser, on loopback by default)
and none is kept: the daemon deletes the file within `EVERY_S` of the request ending, and the staff screen
deletes both files once the capture is done.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

REQUEST_NAME = "camera-share.request"
FRAME_NAME = "camera-share.jpg"
#: the daemon looks at the request (and writes a frame, while one is requested) at most this often:
#: a live enough preview for staff, and a capture gets frames 0.25 s apart (enroll.capture wants them 0.5 s
#: apart anyway)
EVERY_S = 0.25
#: a request lapses this long after it was last renewed
REQUEST_S = 20.0
MAX_REQUEST_S = 120.0
#: a shared picture older than this is not the camera's current view (the daemon stopped, the camera is gone)
FRESH_S = 2.0
JPEG_QUALITY = 90


def request_path(folder: Path) -> Path:
    return folder / REQUEST_NAME


def frame_path(folder: Path) -> Path:
    return folder / FRAME_NAME


def _write_atomic(path: Path, data: bytes) -> None:
    """Temporary file in the same folder (mode 0600), then rename: a reader sees the old file or the new one."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _unlink(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as e:
        log.warning("cannot delete %s: %s", path, e)


def requested_until(folder: Path, now: float) -> float | None:
    """The end of a valid request (epoch seconds), or None: no request, expired, unreadable, too far ahead."""
    try:
        until = float(json.loads(request_path(folder).read_text(encoding="utf-8"))["until"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.debug("unreadable frame-share request: %s", e)
        return None
    return until if now < until <= now + MAX_REQUEST_S else None


class FrameShareWriter:
    """The daemon's side. `offer(image)` with every frame read from the camera (None when none came); it never
    raises into the check-in loop (a full disk is logged once)."""

    def __init__(self, folder: Path, every: float = EVERY_S, clock: Callable[[], float] = time.time) -> None:
        self.folder = folder
        self.every = every
        self.clock = clock
        self._last = -float("inf")
        self._sharing = False
        self._warned = False
        self.written = 0

    def offer(self, image: np.ndarray | None) -> bool:
        """Share `image` (uint8 RGB) if a capture is requested and it is time to; True when written."""
        now = self.clock()
        if now - self._last < self.every:
            return False
        self._last = now
        if requested_until(self.folder, now) is None:
            if self._sharing or frame_path(self.folder).exists():
                _unlink(frame_path(self.folder))
                self._sharing = False
                log.info("camera sharing ended")
            return False
        if image is None:
            return False
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            return False
        try:
            _write_atomic(frame_path(self.folder), buf.tobytes())
        except OSError as e:
            if not self._warned:
                log.error("cannot share the camera picture for enrolment in %s: %s", self.folder, e)
                self._warned = True
            return False
        if not self._sharing:
            log.info("camera shared with the staff screen for enrolment")
        self._sharing = True
        self.written += 1
        return True

    def close(self) -> None:
        """The daemon stops: no picture stays behind."""
        _unlink(frame_path(self.folder))
        self._sharing = False


# -- the staff screen's side --------------------------------------------------------------------------


def request(folder: Path, seconds: float = REQUEST_S, clock: Callable[[], float] = time.time) -> None:
    """Ask the daemon for its frames for the next `seconds` (renewing an earlier request)."""
    seconds = min(seconds, MAX_REQUEST_S)
    _write_atomic(request_path(folder), json.dumps({"until": clock() + seconds}).encode())


def cancel(folder: Path) -> None:
    """Stop sharing now: the request and the last picture are deleted (the daemon stops writing)."""
    _unlink(request_path(folder))
    _unlink(frame_path(folder))


@dataclass(frozen=True)
class SharedFrame:
    jpeg: bytes
    #: when the daemon wrote it (epoch seconds, the file's modification time)
    at: float

    def rgb(self) -> np.ndarray | None:
        bgr = cv2.imdecode(np.frombuffer(self.jpeg, np.uint8), cv2.IMREAD_COLOR)
        return None if bgr is None else np.ascontiguousarray(bgr[:, :, ::-1])


def latest(folder: Path, fresh_s: float = FRESH_S, clock: Callable[[], float] = time.time) -> SharedFrame | None:
    """The daemon's newest shared picture, if it is recent; None when there is none (no request yet, the
    daemon is not running, or the camera gives nothing)."""
    path = frame_path(folder)
    try:
        with path.open("rb") as f:  # one open: the stat and the bytes are of the same file
            at = os.fstat(f.fileno()).st_mtime
            data = f.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        log.warning("cannot read the shared camera picture %s: %s", path, e)
        return None
    if clock() - at > fresh_s or not data:
        return None
    return SharedFrame(data, at)
