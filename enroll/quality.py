"""Photo quality checks for enrolment: is this photo good enough to become a template?

A template is compared with every check-in for years, so a poor one costs far more than asking staff
for another photo. Each rejection carries a plain reason and what to do about it.

All measurements are taken on the aligned 150x150 face chip (the same pixels the embedder sees), so
they do not depend on the photo's resolution, plus the face box and the 5 landmarks in photo pixels.
The thresholds were calibrated on real photos from ../shared (see `QualityPolicy`); the figures
quoted there come from running the checks over LFW (deep-funnelled) and over degraded copies of it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from edge.recognition.detect import Face

log = logging.getLogger(__name__)

# Reason codes (stable, for logs and tests); `Issue.message` is what staff read.
NO_FACE = "no_face"
MANY_FACES = "many_faces"
TOO_SMALL = "too_small"
CUT_OFF = "cut_off"
TOO_DARK = "too_dark"
TOO_BRIGHT = "too_bright"
BLURRED = "blurred"
TURNED = "turned"
UNREADABLE = "unreadable"

REASONS = (UNREADABLE, NO_FACE, MANY_FACES, TOO_SMALL, CUT_OFF, TOO_DARK, TOO_BRIGHT, BLURRED, TURNED)


@dataclass(frozen=True)
class QualityPolicy:
    """Thresholds of the enrolment photo checks, calibrated on real photos.

    Calibration: 474 LFW deep-funnelled photos (130 people, seed 0), detector detect_width=1600
    upsample=1, plus degraded copies of the first 160 made with OpenCV (script in the report to the lead).
    - min_face_px 80: HOG boxes on LFW's 250x250 photos are 90-130 px wide (1st percentile 90).
      obama-240p.jpg (63 px) is refused: the descriptor of a small face is noisier; staff can step closer.
    - min_sharpness 12: variance of the Laplacian of the centre 100x100 of the grey 150x150 chip. LFW:
      1st percentile 14.1, median 50 (LFW is soft: 250 px JPEGs, faces upscaled into the chip; phone photos
      score in the hundreds or thousands). Gaussian blur at photo scale: sigma 1.5 -> median 11 (57% refused),
      sigma 2 -> median 7.4 (88% refused), sigma 3 -> 100% refused. Only 2 of 474 LFW photos fall below 12.
    - luminance 50..210 (mean grey level of the face centre): LFW spans 64..196. Darkened to 25% of its
      brightness: 157/159 refused as too dark; +130 brighter: 150/159 refused as too bright.
    - max_yaw 0.35: nose offset from the eye midpoint along the eye line, in eye distances. LFW median 0.07,
      99th percentile 0.31; 2 of 474 exceed 0.35 (clear three-quarter views).
    - max_roll_deg 25: eye-line tilt. LFW 99th percentile 9.8 deg, max 22; a photo rotated by 30 deg is
      refused.
    - second_face_ratio 0.5: another face at least half as wide as the largest is a second person (21 of 474
      LFW press photos have one, and one of them is larger than the named subject: the largest face is not
      a safe guess). Smaller faces are bystanders far behind: ignored with a warning.
    With these, 6.1% of the 474 LFW photos are refused: 4.4% two faces, 0.6% no face found, 1.1% quality
    (1 too small, 2 too blurred, 2 turned).
    """

    min_face_px: int = 80
    min_sharpness: float = 12.0
    min_luminance: float = 50.0
    max_luminance: float = 210.0
    max_yaw: float = 0.35
    max_roll_deg: float = 25.0
    second_face_ratio: float = 0.5
    #: the face box may come this close (pixels) to the photo edge before it counts as cut off
    edge_margin_px: int = 1


@dataclass(frozen=True)
class FaceMetrics:
    width_px: int
    sharpness: float
    luminance: float
    yaw: float
    roll_deg: float

    def as_dict(self) -> dict[str, float]:
        return {
            "width_px": float(self.width_px),
            "sharpness": round(self.sharpness, 1),
            "luminance": round(self.luminance, 1),
            "yaw": round(self.yaw, 3),
            "roll_deg": round(self.roll_deg, 1),
        }


@dataclass(frozen=True)
class Issue:
    code: str
    #: what is wrong and how to fix it, for staff
    message: str


@dataclass(frozen=True)
class Assessment:
    """Verdict on one photo. `face`/`chip` are set whenever exactly one usable face was found."""

    issues: tuple[Issue, ...]
    face: Face | None = None
    chip: np.ndarray | None = None
    metrics: FaceMetrics | None = None
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return not self.issues

    @property
    def message(self) -> str:
        return "; ".join(i.message for i in self.issues)

    @property
    def score(self) -> float:
        """0..1, informative only: how far the photo is from the nearest rejection threshold."""
        return 0.0 if self.metrics is None or self.issues else _headroom(self.metrics)


def _grey_centre(chip: np.ndarray) -> np.ndarray:
    # The chip has 25% padding around the aligned face: its centre 2/3 is the face itself
    # (eyebrows to chin), so background texture and hair do not sway the measures.
    grey = cv2.cvtColor(chip, cv2.COLOR_RGB2GRAY)
    h, w = grey.shape
    return grey[h // 6 : h - h // 6, w // 6 : w - w // 6]


def pose(landmarks: np.ndarray) -> tuple[float, float]:
    """(yaw, roll_deg) from dlib's 5 landmarks: eye corners 0-1 and 2-3, nose base 4.

    yaw: component of the nose's offset from the eye midpoint along the eye line, in eye distances
    (0 when the nose sits between the eyes; it grows as the head turns). roll: eye-line angle.
    """
    pts = np.asarray(landmarks, np.float64).reshape(5, 2)
    a, b = pts[0:2].mean(axis=0), pts[2:4].mean(axis=0)
    if a[0] > b[0]:
        a, b = b, a
    v = b - a
    d = float(np.hypot(*v))
    if d < 1e-6:
        return 0.0, 0.0
    u = v / d
    yaw = float(np.dot(pts[4] - (a + b) / 2, u) / d)
    roll = math.degrees(math.atan2(v[1], v[0]))
    return yaw, roll


def measure(face: Face, chip: np.ndarray) -> FaceMetrics:
    centre = _grey_centre(chip)
    sharpness = float(cv2.Laplacian(centre, cv2.CV_64F).var())
    yaw, roll = pose(face.landmarks)
    return FaceMetrics(face.width, sharpness, float(centre.mean()), yaw, roll)


def _headroom(m: FaceMetrics, p: QualityPolicy | None = None) -> float:
    p = p or QualityPolicy()
    terms = [
        (m.width_px - p.min_face_px) / p.min_face_px,
        (m.sharpness - p.min_sharpness) / p.min_sharpness,
        (m.luminance - p.min_luminance) / (p.max_luminance - p.min_luminance) * 2,
        (p.max_luminance - m.luminance) / (p.max_luminance - p.min_luminance) * 2,
        (p.max_yaw - abs(m.yaw)) / p.max_yaw,
        (p.max_roll_deg - abs(m.roll_deg)) / p.max_roll_deg,
    ]
    return float(np.clip(min(terms), 0.0, 1.0))


def metric_issues(m: FaceMetrics, p: QualityPolicy) -> list[Issue]:
    """Every threshold the measured face fails, in the order staff should fix them."""
    out = []
    if m.width_px < p.min_face_px:
        out.append(_too_small(m.width_px, p))
    if m.luminance < p.min_luminance:
        out.append(
            Issue(
                TOO_DARK,
                f"too dark (face brightness {m.luminance:.0f}, need at least {p.min_luminance:.0f}): "
                "add light in front of the face, avoid a window behind the person",
            )
        )
    elif m.luminance > p.max_luminance:
        out.append(
            Issue(
                TOO_BRIGHT,
                f"too bright (face brightness {m.luminance:.0f}, at most {p.max_luminance:.0f}): "
                "turn off the flash or move out of direct sunlight",
            )
        )
    # A very dark or washed-out face also has weak edges; name the exposure problem alone then,
    # because fixing it is what will fix the sharpness reading.
    if m.sharpness < p.min_sharpness and not out:
        out.append(
            Issue(
                BLURRED,
                f"too blurred (sharpness {m.sharpness:.0f}, need {p.min_sharpness:.0f}): "
                "hold still, focus on the face, clean the lens",
            )
        )
    if abs(m.yaw) > p.max_yaw or abs(m.roll_deg) > p.max_roll_deg:
        out.append(
            Issue(
                TURNED,
                f"face turned too far (turn {abs(m.yaw):.2f}, max {p.max_yaw:.2f}; "
                f"tilt {abs(m.roll_deg):.0f} deg, "
                f"max {p.max_roll_deg:.0f}): look straight at the camera, head upright",
            )
        )
    return out


def _cut_off(face: Face, shape: tuple[int, ...], margin: int) -> bool:
    h, w = shape[:2]
    top, right, bottom, left = face.box
    return top < margin or left < margin or right > w - margin or bottom > h - margin


def _image_luminance(rgb: np.ndarray) -> float:
    small = cv2.resize(rgb, (64, 64), interpolation=cv2.INTER_AREA)
    return float(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY).mean())


def _too_small(width_px: int, p: QualityPolicy) -> Issue:
    return Issue(TOO_SMALL, f"face too small ({width_px} px wide, need {p.min_face_px}): move closer")


def assess(rgb: np.ndarray, faces: list[Face], chips: np.ndarray, policy: QualityPolicy) -> Assessment:
    """Judge a photo from its detected faces (largest first, as `Detector.detect` returns them)
    and the chip of the largest."""
    if not faces:
        hint = ""
        lum = _image_luminance(rgb)
        if lum < policy.min_luminance:
            hint = " (the photo is very dark: add light)"
        elif lum > policy.max_luminance:
            hint = " (the photo is washed out: no flash, no direct sun)"
        return Assessment(
            (Issue(NO_FACE, f"no face found{hint}: face the camera, remove hat, mask or sunglasses"),)
        )
    main = faces[0]
    others = [f for f in faces[1:] if f.width >= policy.second_face_ratio * main.width]
    if others:
        n = 1 + len(others)
        many = Issue(MANY_FACES, f"{n} faces in photo: photograph one person at a time")
        if main.width < policy.min_face_px:
            # nobody is near enough yet: "move closer" is the first thing to do (YuNet finds faces down to
            # ~10 px, so a far senior and the room behind are often "two faces" of similar size)
            return Assessment((_too_small(main.width, policy), many))
        return Assessment((many,))
    warnings = []
    if len(faces) > 1:
        warnings.append(f"{len(faces) - 1} small face(s) in the background ignored")
    chip = np.ascontiguousarray(chips[0])
    m = measure(main, chip)
    issues = metric_issues(m, policy)
    if _cut_off(main, rgb.shape, policy.edge_margin_px):
        issues.insert(
            0, Issue(CUT_OFF, "face cut off by the edge of the photo: leave space around the whole head")
        )
    return Assessment(tuple(issues), main, chip, m, tuple(warnings))
