"""Frame sources: a camera (device index or RTSP/HTTP URL), a video file, or a folder of images.

Every source yields `Frame`s with `source_ts`, seconds since the source started (the video's own
timestamps for files, the monotonic clock for live cameras). A live camera is read by its own thread
into a small queue that drops the oldest frame when full, so recognition always works on a fresh
frame; drops are counted. When a camera goes away the reader logs it, waits and reopens it, for ever.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from edge.recognition.detect import ImageError, load_image

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


class SourceError(RuntimeError):
    """A frame source that cannot be opened, with the reason and what to check."""


@dataclass(frozen=True)
class Frame:
    index: int
    #: seconds since the start of the source
    source_ts: float
    #: uint8 RGB [h, w, 3]
    image: np.ndarray


class FrameSource(Protocol):
    def frames(self) -> Iterator[Frame]: ...

    def close(self) -> None: ...


class VideoFileSource:
    """Every frame of a video file, in order (replay must not drop frames)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise SourceError(f"{self.path}: video file not found")
        self._cap = cv2.VideoCapture(str(self.path))
        if not self._cap.isOpened():
            raise SourceError(f"{self.path}: cannot open video (corrupt file or unsupported codec)")
        self.fps = float(self._cap.get(cv2.CAP_PROP_FPS)) or 25.0

    def frames(self) -> Iterator[Frame]:
        i = 0
        while True:
            ok, bgr = self._cap.read()
            if not ok:
                break
            yield Frame(i, i / self.fps, np.ascontiguousarray(bgr[:, :, ::-1]))
            i += 1
        self.close()

    def close(self) -> None:
        self._cap.release()


class ImageFolderSource:
    """Images of a folder in name order, as if filmed at `fps` frames a second."""

    def __init__(self, path: str | Path, fps: float = 10.0) -> None:
        self.path = Path(path)
        self.fps = fps
        if not self.path.is_dir():
            raise SourceError(f"{self.path}: not a folder")
        self.files = sorted(p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise SourceError(f"{self.path}: no images (.jpg, .png, ...) in the folder")

    def frames(self) -> Iterator[Frame]:
        for i, p in enumerate(self.files):
            try:
                img = load_image(p)
            except ImageError as e:
                # One bad frame must not end the replay; say which and go on.
                log.warning("skipping frame %s: %s", p.name, e)
                continue
            yield Frame(i, i / self.fps, img)

    def close(self) -> None:
        pass


class CameraSource:
    """A live camera read by its own thread; reopens it when it goes away."""

    def __init__(
        self,
        source: str,
        width: int = 0,
        height: int = 0,
        reconnect_seconds: float = 5.0,
        queue_size: int = 4,
    ) -> None:
        self.source: int | str = int(source) if source.isdigit() else source
        self.width = width
        self.height = height
        self.reconnect_seconds = reconnect_seconds
        self._queue: queue.Queue[Frame] = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.dropped = 0
        self.connected = False
        # A video file standing in for a camera (tests, a recorded scene on a kiosk) plays at its own
        # frame rate and loops, as a camera would deliver it; a real camera paces itself.
        self.is_file = isinstance(self.source, str) and Path(self.source).is_file()

    def _open(self) -> cv2.VideoCapture | None:
        cap = cv2.VideoCapture(self.source)
        if not cap.isOpened():
            cap.release()
            return None
        if self.width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
        if self.height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        return cap

    def _reader(self) -> None:
        t0 = time.monotonic()
        index = 0
        outage_logged = False
        while not self._stop.is_set():
            cap = self._open()
            if cap is None:
                if not outage_logged:
                    log.error(
                        "camera %r cannot be opened (unplugged, wrong index or URL?); retrying every %g s",
                        self.source,
                        self.reconnect_seconds,
                    )
                    outage_logged = True
                self._stop.wait(self.reconnect_seconds)
                continue
            if outage_logged:
                log.warning("camera %r is back", self.source)
            outage_logged = False
            self.connected = True
            log.info("camera %r opened", self.source)
            period = 1.0 / (cap.get(cv2.CAP_PROP_FPS) or 25.0) if self.is_file else 0.0
            next_at = time.monotonic()
            while not self._stop.is_set():
                ok, bgr = cap.read()
                if not ok:
                    if self.is_file:
                        log.info("end of %s; playing it again", self.source)
                    else:
                        log.error("camera %r stopped delivering frames; reopening", self.source)
                        outage_logged = True
                    break
                if period:
                    next_at += period
                    self._stop.wait(max(0.0, next_at - time.monotonic()))
                frame = Frame(index, time.monotonic() - t0, np.ascontiguousarray(bgr[:, :, ::-1]))
                index += 1
                try:
                    self._queue.put_nowait(frame)
                except queue.Full:
                    try:
                        self._queue.get_nowait()
                        self.dropped += 1
                    except queue.Empty:
                        pass
                    self._queue.put_nowait(frame)
            self.connected = False
            cap.release()
            if not self.is_file:
                self._stop.wait(self.reconnect_seconds)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._reader, name="capture", daemon=True)
            self._thread.start()

    def next_frame(self, timeout: float = 0.5) -> Frame | None:
        """The next frame, or None after `timeout` without one (camera away): the daemon's loop keeps
        turning, so it can still ping the watchdog and notice SIGTERM."""
        self.start()
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def frames(self) -> Iterator[Frame]:
        while not self._stop.is_set():
            frame = self.next_frame()
            if frame is not None:
                yield frame

    def request_stop(self) -> None:
        """Safe from a signal handler: only sets a flag."""
        self._stop.set()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def open_source(source: str) -> FrameSource:
    """For replay: a video file plays every frame; a folder is a sequence of images in name order."""
    p = Path(source)
    if p.is_dir():
        return ImageFolderSource(p)
    if p.is_file():
        return VideoFileSource(p)
    raise SourceError(f"{source}: no such video file or image folder")


def open_camera(source: str, **kwargs: float | int) -> CameraSource:
    """For the daemon: a device index, an RTSP/HTTP URL, or a video file standing in for a camera."""
    if Path(source).is_dir():
        raise SourceError(f"{source}: a folder of images is for `meal-edge replay`, not a camera")
    return CameraSource(source, **kwargs)  # type: ignore[arg-type]
