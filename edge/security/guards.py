"""Guards on input and operations (issue 12, item 6).

- `check_pixels`: the image's size read from its header (Pillow's `Image.open` reads only the header) and
  compared with a limit *before* anything is decoded: a 20000x20000 PNG of 1 MB would otherwise take
  1.2 GB (RGB) to decode, and Pillow's own bomb check raises an exception nobody expected.
- `confine`: a path named in a roster must stay inside the roster's folder (or --photos), symlinks resolved.
- `StoreLock`: one `meal-edge run` per store (fcntl.flock on `<store>.lock`, released by the kernel when the
  process dies, so a crash never leaves a stale lock).
- `Throttle`: at most one log line a minute per key (a burst of aborted connections must not flood the
  journal).

Standalone: imports nothing from edge.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import logging
import os
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

#: 64 megapixels: a 64 MP phone photo still passes; a decompression bomb (400 MP) does not
MAX_PIXELS = 64_000_000


class ImageTooLarge(ValueError):
    """The picture's header announces more pixels than allowed; nothing was decoded."""


class UnknownImage(ValueError):
    """Pillow cannot identify the picture, so its size cannot be checked before decoding."""


class PathOutside(ValueError):
    """A path that leaves the folder it must stay in."""


class StoreInUse(RuntimeError):
    """Another process holds the store's lock."""


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the header only. UnknownImage when Pillow does not know the format."""
    from PIL import Image, UnidentifiedImageError

    with warnings.catch_warnings():
        # Pillow warns (or, past twice its own limit, raises) on big headers: we judge the size ourselves
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        saved = Image.MAX_IMAGE_PIXELS
        try:
            Image.MAX_IMAGE_PIXELS = None  # only Image.open's check; no pixel is decoded here
            with Image.open(io.BytesIO(data)) as im:
                return int(im.width), int(im.height)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            raise UnknownImage(str(e)) from None
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def check_pixels(data: bytes, label: str, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """Refuse (ImageTooLarge) a picture whose header announces more than `max_pixels`; returns its size."""
    w, h = image_size(data)
    if w * h > max_pixels:
        raise ImageTooLarge(
            f"{label}: the photo is {w}x{h} pixels ({w * h / 1e6:.0f} megapixels, at most "
            f"{max_pixels / 1e6:.0f}): save a smaller copy (about 2000 pixels wide is plenty)"
        )
    return w, h


def confine(path: Path, roots: list[Path], label: str = "") -> Path:
    """`path` with symlinks resolved, if it lies inside one of `roots` (also resolved); else PathOutside."""
    real = path.resolve()
    for root in roots:
        if real.is_relative_to(root.resolve()):
            return real
    where = " or ".join(str(r) for r in roots)
    raise PathOutside(
        f"{label or path}: the photo is outside {where} (a '..', an absolute path or a link leading elsewhere): "
        "copy it into that folder, or give its folder with --photos"
    )


class StoreLock:
    """An exclusive, non-blocking lock on `<store>.lock`: one daemon per store.

    The lock file keeps the holder's pid (only informative: the lock itself is the flock, which the kernel
    drops when the process ends, however it ends)."""

    def __init__(self, store_path: Path) -> None:
        self.path = Path(str(store_path) + ".lock")
        self._fd: int | None = None

    def acquire(self) -> StoreLock:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _read_pid(fd)
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise StoreInUse(f"{self.path}: cannot lock the store: {e}") from e
            who = f" (pid {holder})" if holder else ""
            raise StoreInUse(
                f"the store {self.path.with_suffix('')} is already in use by another `meal-edge run`{who}: "
                "only one kiosk daemon may run on a store; stop the other one first "
                "(`systemctl stop meal-edge`), or give this one its own [store] path"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> StoreLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


class Throttle:
    """At most one `allow` per key per `interval` seconds; counts what it held back in between."""

    def __init__(self, interval: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}
        #: every call per key, logged or not (for status pages and tests)
        self.seen: dict[str, int] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> tuple[bool, int]:
        """(log it now?, how many were held back since the last one logged)."""
        now = self.clock()
        with self._lock:
            self.seen[key] = self.seen.get(key, 0) + 1
            last = self._last.get(key)
            if last is not None and now - last < self.interval:
                self._held[key] = self._held.get(key, 0) + 1
                return False, 0
            self._last[key] = now
            return True, self._held.pop(key, 0)

    def log(self, logger: logging.Logger, level: int, key: str, msg: str, *args: object) -> bool:
        """Log `msg` (never with a traceback) if `key` was not logged in the last interval."""
        ok, held = self.allow(key)
        if ok:
            if held:
                msg += f" ({held} more like it in the last {self.interval:.0f} s not logged)"
            logger.log(level, msg, *args)
        return ok
