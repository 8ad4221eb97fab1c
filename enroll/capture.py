"""Hands-free enrolment at the kiosk: keep a few good, different pictures of one face from the camera.

Why: recognition works best when a senior's templates look like what the kiosk camera sees at check-in
(same camera, light and distance). A studio photo often ends as "not recognised" at the kiosk (README,
the sample clip), so staff can enrol a senior standing in front of the kiosk camera instead.

`capture()` reads frames, judges each with the SAME check as an enrolment photo (`enroll.service.check_image`:
the enrolment detector and `enroll.quality` thresholds; nothing is re-implemented here), and keeps a frame
only if it passes and differs from the frames already kept (`CapturePolicy`). The caller then enrols the kept
frames through `Enroller.enrol`, the path `meal-enroll add` takes, so duplicate refusal, lookalike warnings,
capacity and keep_photos behave exactly as for photos.

Sources (`open_capture_source`):
- a device index ("0"), a camera device path (/dev/video0) or a URL (rtsp://, http://): the live camera, read
  as the daemon reads it (`edge.recognition.capture.open_camera`, the [camera] size/queue settings). The kiosk daemon
  usually holds the camera: stop it first (`sudo systemctl stop meal-edge`), see `BUSY_HINT`; the staff
  screen's enrolment page (enroll/enrol_page.py) reads the running daemon's shared frames instead
  (edge/recognition/frameshare.py, `enroll.enrol_desk.SharedFrames`).
- a video file or a folder of images: read with `edge.recognition.capture.open_source` (replay), frame by frame on the
  video's own clock, as fast as the checks run and without dropping frames. That is for tests and
  demonstrations: the result does not depend on the machine's speed, and a 10 s clip does not take 10 s.
  (The daemon plays a video file in real time as a stand-in camera; `realtime=True` does the same here.)
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

import numpy as np

from edge.recognition.capture import CameraSource, Frame, FrameSource, SourceError, open_camera, open_source
from edge.recognition.detect import Face
from enroll.quality import MANY_FACES, Assessment, FaceMetrics
from enroll.service import PhotoIn

log = logging.getLogger(__name__)

#: what staff should do when the camera gives no picture: on a kiosk the daemon is the usual reason
BUSY_HINT = (
    "the kiosk program may be using the camera: stop meal-edge first (sudo systemctl stop meal-edge), "
    "and start it again when enrolment is done (sudo systemctl start meal-edge), or enrol on the staff "
    "screen's 录入 page instead, which borrows the running kiosk's camera; "
    "otherwise check the camera is plugged in and [camera] source (or --source) is right"
)

# Why capture stopped
DONE = "done"  # all the pictures wanted were kept
TIMEOUT = "timeout"  # --seconds elapsed
ENDED = "ended"  # a video file or image folder ran out
INTERRUPTED = "interrupted"  # Ctrl-C

# Codes of the capture's own waiting states (the quality ones come from enroll.quality)
SAME_POSE = "same_pose"
NO_PICTURE = "no_picture"

#: a video or image file named as --source that does not exist is a typo, not a camera address
_FILE_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".jpg", ".jpeg", ".png", ".bmp"}


@dataclass(frozen=True)
class CapturePolicy:
    """When a frame that passed the quality checks is different enough from the kept ones to be kept too.

    Templates that are three copies of one frame add nothing: the kiosk sees a senior from slightly
    different positions and angles every day, so the kept frames should too. But people standing in front
    of a camera move only a little, so the changes asked for are small ones that happen on their own
    within a few seconds (breathing, swaying, glancing); it prompts "move the head a little" otherwise.
    On the sample clip (640x360, face ~91 px) consecutive kept frames differ by 20-40 px in position.
    - min_gap_s 0.5: frames closer in time are nearly the same picture (same blur, same expression).
    - at least one of: face centre moved by 10% of the face width, face size changed by 10%, head turn
      (quality.pose yaw, in eye distances) changed by 0.05 (a seventh of quality's 0.35 limit), or head
      tilt changed by 3 degrees.
    - analyse_fps 5: checks run at most 5 times per second of the source's time. With the enrolment
      detector (upsampled for small second faces, ~80 ms a 640x360 frame) a live camera is checked about
      as often anyway; on a replayed file it skips most of the frames that are 33 ms apart.
    - message_every_s 1: staff read the prompt; faster would flicker.
    - first_frame_timeout_s 5: a camera that has not delivered a picture by then is busy or absent.
    """

    min_gap_s: float = 0.5
    min_shift: float = 0.10
    min_scale_change: float = 0.10
    min_yaw_change: float = 0.05
    min_roll_change_deg: float = 3.0
    analyse_fps: float = 5.0
    message_every_s: float = 1.0
    first_frame_timeout_s: float = 5.0


# -- sources -----------------------------------------------------------------------------------------


class CaptureSource(Protocol):
    #: for labels and messages: "camera 0", "clip.mp4"
    name: str
    #: a live camera (wall-clock time, may deliver nothing for a while) or a replayed file
    live: bool
    #: a replayed source has no more frames
    ended: bool

    def read(self, timeout: float) -> Frame | None:
        """The next frame, or None when there is none within `timeout` (live) or the source ended."""
        ...

    def close(self) -> None: ...


class LiveSource:
    """A camera read by `edge.recognition.capture.CameraSource` (its own thread, freshest frame, reopened if lost)."""

    live = True
    ended = False

    def __init__(self, camera: CameraSource, name: str) -> None:
        self.camera = camera
        self.name = name

    def read(self, timeout: float) -> Frame | None:
        return self.camera.next_frame(timeout)

    def close(self) -> None:
        self.camera.close()


class ReplaySource:
    """Every frame of a video file or image folder, on the source's own clock, as fast as it is read."""

    live = False

    def __init__(self, source: FrameSource, name: str) -> None:
        self.source = source
        self.name = name
        self.ended = False
        self._frames = source.frames()

    def read(self, timeout: float) -> Frame | None:
        if self.ended:
            return None
        try:
            return next(self._frames)
        except StopIteration:
            self.ended = True
            return None

    def close(self) -> None:
        self.source.close()


def open_capture_source(
    source: str,
    *,
    width: int = 0,
    height: int = 0,
    reconnect_seconds: float = 5.0,
    queue_size: int = 4,
    realtime: bool = False,
) -> CaptureSource:
    """A device index, camera device or URL -> live camera; a video file or image folder -> replay (every
    frame, not paced; `realtime=True` plays a video file as a camera instead, as the daemon does)."""
    src = source.strip()
    if not src:
        raise SourceError("no camera given: set [camera] source in the config, or --source 0")
    p = Path(src)
    if p.is_dir():
        return ReplaySource(open_source(src), p.name)
    if p.is_file() and not realtime:
        return ReplaySource(open_source(src), p.name)
    if not p.exists() and p.suffix.lower() in _FILE_SUFFIXES:
        raise SourceError(f"{src}: no such video file or image folder")
    camera = open_camera(
        src, width=width, height=height, reconnect_seconds=reconnect_seconds, queue_size=queue_size
    )
    return LiveSource(camera, p.name if p.is_file() else f"camera {src}")


# -- capture -----------------------------------------------------------------------------------------


@dataclass
class Kept:
    """A frame kept for enrolment."""

    index: int
    #: seconds on the source's clock (the video's own time for a file)
    ts: float
    rgb: np.ndarray
    face: Face
    metrics: FaceMetrics
    score: float
    #: stored as the template's source, shown by `meal-enroll show`
    label: str

    def photo(self) -> PhotoIn:
        # no encoded bytes: with keep_photos the service encodes the frame itself, as for in-memory photos
        return PhotoIn(self.label, self.rgb)


@dataclass
class CaptureResult:
    wanted: int
    kept: list[Kept] = field(default_factory=list)
    stopped: str = ""
    #: seconds from the first frame to the end (source clock; wall clock for a camera)
    elapsed_s: float = 0.0
    frames_read: int = 0
    frames_checked: int = 0
    #: why frames were not kept: reason code -> count
    issues: Counter[str] = field(default_factory=Counter)
    #: the latest staff message for each reason code
    messages: dict[str, str] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return len(self.kept) >= self.wanted

    def reason(self) -> str:
        """Why nothing (or not enough) was kept, in plain words: the most frequent problem."""
        if not self.frames_read:
            return "no picture from the camera"
        if not self.issues:
            return "no picture was checked"
        code, n = self.issues.most_common(1)[0]
        return f"{self.messages[code]} ({n} of {self.frames_checked} pictures checked)"


def _waiting_text(verdict: Assessment, faces: list[Face]) -> tuple[str, str]:
    """(code, message) for a frame that failed the quality checks: the quality module's own words, except
    for several faces, where a photo's advice ("photograph one person at a time") does not fit a camera."""
    many = f"请只让老人一人入镜 — only the senior in view, please ({len(faces)} faces seen): others step out of view"
    text = "; ".join(many if i.code == MANY_FACES else i.message for i in verdict.issues)
    return verdict.issues[0].code, text


def _moved(face: Face, m: FaceMetrics, other: Kept, p: CapturePolicy) -> bool:
    """A visible change of position, size or pose from a kept frame."""
    (t1, r1, b1, l1), (t2, r2, b2, l2) = face.box, other.face.box
    width = max(face.width, other.face.width, 1)
    shift = math.hypot((l1 + r1 - l2 - r2) / 2, (t1 + b1 - t2 - b2) / 2) / width
    scale = abs(math.log(max(face.width, 1) / max(other.face.width, 1)))
    return (
        shift >= p.min_shift
        or scale >= math.log1p(p.min_scale_change)
        or abs(m.yaw - other.metrics.yaw) >= p.min_yaw_change
        or abs(m.roll_deg - other.metrics.roll_deg) >= p.min_roll_change_deg
    )


def _label(source: CaptureSource, frame: Frame) -> str:
    # A camera's frame is labelled with the date and time (staff can tell enrolment sessions apart in
    # `meal-enroll show`); a replayed file with the position in the video (which frame it was).
    if source.live:
        when = datetime.now().astimezone()
        return f"kiosk capture ({source.name}) at {when:%Y-%m-%d %H:%M:%S}.{when.microsecond // 100000}"
    return f"kiosk capture ({source.name}) at {frame.source_ts:.2f} s"


Check = Callable[[np.ndarray], tuple[Assessment, list[Face]]]
#: (text, event): event=True for lasting news (a frame kept), False for a waiting prompt that the next
#: one replaces
Say = Callable[[str, bool], None]


def capture(
    source: CaptureSource,
    check: Check,
    photos: int,
    seconds: float,
    policy: CapturePolicy | None = None,
    say: Say | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> CaptureResult:
    """Keep up to `photos` good, different frames within `seconds`. Ctrl-C ends it with
    stopped=INTERRUPTED and what was kept so far (the caller decides whether to enrol it). Raises
    SourceError when a camera gives no picture at all (busy or absent, see BUSY_HINT)."""
    p = policy or CapturePolicy()
    tell: Say = say or (lambda _text, _event: None)
    res = CaptureResult(wanted=photos)
    started = clock()
    first_ts: float | None = None  # source clock of the first frame
    first_wall = started
    last_checked = -math.inf
    last_message = -math.inf
    step = 1.0 / p.analyse_fps if p.analyse_fps > 0 else 0.0

    def message(now: float, text: str, event: bool = False) -> None:
        nonlocal last_message
        if event or now - last_message >= p.message_every_s:
            tell(text, event)
            last_message = now

    try:
        while len(res.kept) < photos:
            frame = source.read(timeout=0.5)
            if frame is None:
                if source.ended:
                    res.stopped = ENDED
                    break
                # A live camera with no picture: not open yet, busy, or lost mid-way.
                wall = clock()
                if first_ts is None:
                    if wall - started >= min(p.first_frame_timeout_s, seconds):
                        raise SourceError(
                            f"{source.name} gave no picture within {wall - started:.0f} s: {BUSY_HINT}"
                        )
                    continue
                res.elapsed_s = wall - first_wall
                if res.elapsed_s >= seconds:
                    res.stopped = TIMEOUT
                    break
                res.issues[NO_PICTURE] += 1
                res.messages[NO_PICTURE] = "no picture from the camera: check it is plugged in"
                message(res.elapsed_s, f"{len(res.kept)}/{photos} kept — {res.messages[NO_PICTURE]}")
                continue
            res.frames_read += 1
            if first_ts is None:
                first_ts, first_wall = frame.source_ts, clock()
            # Capture time on the source's clock: a camera's is the wall clock, a replayed file's the
            # video's own time, so a test gives the same frames on any machine.
            now = frame.source_ts - first_ts
            if source.live:
                now = max(now, clock() - first_wall)
            res.elapsed_s = now
            if now >= seconds:
                res.stopped = TIMEOUT
                break
            if now - last_checked < step - 1e-6:
                continue
            last_checked = now
            res.frames_checked += 1
            verdict, faces = check(frame.image)
            n = len(res.kept)
            if not verdict.ok or verdict.face is None or verdict.metrics is None:
                code, text = _waiting_text(verdict, faces)
                res.issues[code] += 1
                res.messages[code] = text
                log.debug("frame %d at %.2f s: %s", frame.index, frame.source_ts, code)
                message(now, f"{n}/{photos} kept — {text}")
                continue
            if any(abs(frame.source_ts - k.ts) < p.min_gap_s for k in res.kept):
                continue  # a moment later it will be a different picture: nothing to tell staff
            if not all(_moved(verdict.face, verdict.metrics, k, p) for k in res.kept):
                res.issues[SAME_POSE] += 1
                res.messages[SAME_POSE] = (
                    "same position as a picture already kept: move the head a little "
                    "(turn slightly, nod, or lean)"
                )
                message(now, f"{n}/{photos} kept — {res.messages[SAME_POSE]}")
                continue
            kept = Kept(
                frame.index,
                frame.source_ts,
                frame.image,
                verdict.face,
                verdict.metrics,
                verdict.score,
                _label(source, frame),
            )
            res.kept.append(kept)
            log.info("kept frame %d at %.2f s (quality %.2f)", frame.index, frame.source_ts, verdict.score)
            left = "" if len(res.kept) >= photos else ": keep looking at the camera"
            message(now, f"{len(res.kept)}/{photos} kept (picture at {now:.1f} s){left}", event=True)
        else:
            res.stopped = DONE
    except KeyboardInterrupt:
        # Staff stopped it: report what was kept; enrolling it or not is the caller's decision.
        res.stopped = INTERRUPTED
    return res
