"""Kiosk-like frames from one photo: what a check-in camera sees of one presence.

A kiosk decides on 3-5 consecutive frames of one person standing in front of it: one pose, one light,
small motion. Fusing 3 *different* photos of a person (LFW's press photos taken years apart) is a far
easier and far less kiosk-like probe. Here each presence is built from ONE photo, with the variation
consecutive video frames have:

* per presence: a resolution loss (the senior stands further back: downscale and upscale again) and an
  exposure gain (the room's light is not the photographer's);
* per frame: a small random walk of position, scale and roll (the senior sways), motion blur along a
  random direction in some frames (the senior moves), auto-exposure steps of the gain, sensor noise,
  and JPEG compression at a random quality (the camera's and the encoder's compression).

Pure numpy/cv2 functions of (image, parameters, generator); `presence_rng` seeds the generator from a
name (e.g. the photo's path), so a photo's frames do not depend on which trial or order it appears in
and can be cached. `Variation.tag()` names the parameter set in cache keys: change a default, and the
cached frames of the old setting are simply not found.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass

import cv2
import numpy as np

#: bump when the functions below change what they produce for the same parameters
FRAMES_VERSION = 1


@dataclass(frozen=True)
class Variation:
    """Ranges of the frame-to-frame variation (the defaults are mild, a cooperative senior at a kiosk)."""

    frames: int = 5
    #: per-frame step of the position random walk, standard deviation as a fraction of the shorter side
    shift: float = 0.012
    #: per-frame step of the log-scale random walk (standard deviation)
    scale: float = 0.015
    #: per-frame step of the roll random walk, degrees (standard deviation)
    rotate: float = 1.0
    #: a frame is motion-blurred with this probability, with a kernel of up to this many pixels
    blur_prob: float = 0.5
    blur: float = 5.0
    #: sensor noise, standard deviation in grey levels, drawn per presence in this range
    noise: tuple[float, float] = (1.5, 5.0)
    #: JPEG quality per frame
    jpeg: tuple[int, int] = (45, 85)
    #: exposure gain of the presence, and the auto-exposure step between frames (standard deviation)
    gain: tuple[float, float] = (0.75, 1.25)
    gain_step: float = 0.05
    #: the presence's resolution relative to the photo (downscaled by this factor and back)
    resolution: tuple[float, float] = (0.6, 1.0)

    def __post_init__(self) -> None:
        if self.frames < 1:
            raise ValueError("a presence needs at least one frame")
        for name in ("shift", "scale", "rotate", "blur", "gain_step"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if not 0 <= self.blur_prob <= 1:
            raise ValueError("blur_prob must be between 0 and 1")
        lo, hi = self.resolution
        if not 0 < lo <= hi <= 1:
            raise ValueError("resolution must be a range inside (0, 1]")
        qlo, qhi = self.jpeg
        if not 1 <= qlo <= qhi <= 100:
            raise ValueError("jpeg quality must be a range inside 1..100")
        glo, ghi = self.gain
        if not 0 < glo <= ghi:
            raise ValueError("gain must be a positive range")

    def tag(self) -> str:
        """Short stable name of this parameter set (and of FRAMES_VERSION), for cache keys."""
        text = json.dumps({"v": FRAMES_VERSION, **asdict(self)}, sort_keys=True)
        return "kiosk" + hashlib.sha256(text.encode()).hexdigest()[:12]


#: no variation at all: every frame is the photo itself (tests, and a baseline)
STILL = Variation(
    shift=0.0,
    scale=0.0,
    rotate=0.0,
    blur_prob=0.0,
    blur=0.0,
    noise=(0.0, 0.0),
    jpeg=(100, 100),
    gain=(1.0, 1.0),
    gain_step=0.0,
    resolution=(1.0, 1.0),
)


def presence_rng(seed: int, key: str) -> np.random.Generator:
    """A generator that depends only on (seed, key): a photo's frames are the same in every trial."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def shift_scale_rotate(rgb: np.ndarray, dx: float, dy: float, scale: float, angle: float) -> np.ndarray:
    """Move the picture by (dx, dy) pixels, scale it by `scale` and roll it by `angle` degrees about its
    centre; the border is mirrored (a kiosk frame has no black edges)."""
    if dx == 0 and dy == 0 and scale == 1 and angle == 0:
        return rgb.copy()
    h, w = rgb.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
    m[0, 2] += dx
    m[1, 2] += dy
    return cv2.warpAffine(rgb, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def motion_blur(rgb: np.ndarray, length: float, angle: float) -> np.ndarray:
    """Linear motion blur: the average along a line of `length` pixels at `angle` degrees."""
    if length < 1:
        return rgb.copy()
    size = int(math.ceil(length)) | 1  # odd, so the line is centred
    kernel = np.zeros((size, size), np.float32)
    c = size // 2
    t = math.radians(angle)
    # sample the line densely so fractional lengths and any angle give a connected streak
    for s in np.linspace(-(length - 1) / 2, (length - 1) / 2, max(2, int(length * 4))):
        x, y = c + s * math.cos(t), c + s * math.sin(t)
        kernel[int(round(y)), int(round(x))] = 1.0
    kernel /= kernel.sum()
    return cv2.filter2D(rgb, -1, kernel, borderType=cv2.BORDER_REFLECT_101)


def exposure(rgb: np.ndarray, gain: float) -> np.ndarray:
    """Scale every grey level by `gain` (clipped at white, as an over-exposed sensor clips)."""
    if gain == 1:
        return rgb.copy()
    return _u8(rgb.astype(np.float32) * gain)


def sensor_noise(rgb: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    if sigma <= 0:
        return rgb.copy()
    return _u8(rgb.astype(np.float32) + rng.normal(0.0, sigma, rgb.shape).astype(np.float32))


def jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    """Encode as JPEG at `quality` and decode again (100: the photo unchanged)."""
    if quality >= 100:
        return rgb.copy()
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("OpenCV could not encode the frame as JPEG")
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError("OpenCV could not decode its own JPEG")
    return np.ascontiguousarray(bgr[:, :, ::-1])


def resample(rgb: np.ndarray, factor: float) -> np.ndarray:
    """Lose resolution: downscale by `factor` and scale back up to the same size."""
    if factor >= 1:
        return rgb.copy()
    h, w = rgb.shape[:2]
    small = cv2.resize(rgb, (max(1, round(w * factor)), max(1, round(h * factor))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def kiosk_frames(rgb: np.ndarray, rng: np.random.Generator, v: Variation = Variation()) -> list[np.ndarray]:
    """`v.frames` uint8 RGB frames of one presence built from one photo (same size as the photo)."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"need a uint8 RGB image [h, w, 3], got {rgb.dtype} {rgb.shape}")
    h, w = rgb.shape[:2]
    side = min(h, w)
    # presence-level conditions
    factor = float(rng.uniform(*v.resolution))
    gain = float(rng.uniform(*v.gain))
    sigma = float(rng.uniform(*v.noise))
    base = resample(rgb, factor)
    x = y = log_s = roll = 0.0
    out = []
    for _ in range(v.frames):
        # the walk starts anywhere near the photo's framing and drifts from frame to frame
        x += float(rng.normal(0.0, v.shift)) * side
        y += float(rng.normal(0.0, v.shift)) * side
        log_s += float(rng.normal(0.0, v.scale))
        roll += float(rng.normal(0.0, v.rotate))
        gain *= float(np.exp(rng.normal(0.0, v.gain_step)))
        blurred = rng.random() < v.blur_prob
        length = float(rng.uniform(1.0, max(1.0, v.blur))) if blurred else 0.0
        direction = float(rng.uniform(0.0, 180.0))
        quality = int(rng.integers(v.jpeg[0], v.jpeg[1] + 1))
        f = shift_scale_rotate(base, x, y, math.exp(log_s), roll)
        f = motion_blur(f, length, direction)
        f = exposure(f, gain)
        f = sensor_noise(f, sigma, rng)
        out.append(jpeg(f, quality))
    return out


#: how `pad` fills the border: black ("constant"), or the edge pixels repeated outwards ("replicate": no hard
#: black edge right at the cut forehead or chin)
PAD_MODES = ("constant", "replicate")


def pad(rgb: np.ndarray, fraction: float, mode: str = "constant") -> np.ndarray:
    """A border of `fraction` of the image's size on each side: a tight face crop becomes a picture
    with a whole head in it, which face detectors are trained on (rmfrd_chinese's 224x224 crops)."""
    if fraction <= 0:
        return rgb
    h, w = rgb.shape[:2]
    dy, dx = int(round(h * fraction)), int(round(w * fraction))
    if mode == "replicate":
        return cv2.copyMakeBorder(rgb, dy, dy, dx, dx, cv2.BORDER_REPLICATE)
    if mode != "constant":
        raise ValueError(f"unknown padding mode {mode!r}; choose one of {', '.join(PAD_MODES)}")
    return cv2.copyMakeBorder(rgb, dy, dy, dx, dx, cv2.BORDER_CONSTANT, value=(0, 0, 0))
