"""`meal-edge demo`: the main job end to end, on a fresh machine, with no camera and no ../shared.

Faces come only from images that ship inside PyPI packages we already depend on:
- Grace Hopper: matplotlib's sample data `grace_hopper.jpg` (US Navy photo, public domain).
- Eileen Collins: scikit-image's `data.astronaut()` (NASA photo, public domain).
The scene is made here: the portraits are pasted onto a plain wall and moved in front of a virtual
kiosk camera, frame by frame, as people walk up to it.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import cv2
import matplotlib
import numpy as np

from edge.config import DEFAULT_CONFIG, load_config
from edge.detect import load_image, to_rgb

log = logging.getLogger(__name__)

FRAME_W, FRAME_H, FPS = 640, 360, 10.0


def hopper() -> np.ndarray:
    img = load_image(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")
    return np.ascontiguousarray(img[20:520, 40:500])  # head and shoulders, as a kiosk camera sees them


def collins() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(to_rgb(data.astronaut(), bgr=False)[0:330, 60:390])


def _wall(rng: np.random.Generator) -> np.ndarray:
    y = np.linspace(0, 1, FRAME_H, dtype=np.float32)[:, None, None]
    base = np.array([205, 198, 186], np.float32) * (0.9 + 0.1 * y)
    wall = np.broadcast_to(base, (FRAME_H, FRAME_W, 3)).copy()
    wall += rng.normal(0, 3, wall.shape).astype(np.float32)
    return np.clip(wall, 0, 255).astype(np.uint8)


def variant(img: np.ndarray, angle: float = 0.0, gain: float = 1.0, scale: float = 1.0) -> np.ndarray:
    """Another 'photo' of the same person: small rotation, exposure and scale changes."""
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
    out = cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REFLECT)
    return np.clip(out.astype(np.float32) * gain, 0, 255).astype(np.uint8)


def _paste(frame: np.ndarray, person: np.ndarray, cx: float, height: int) -> None:
    h, w = person.shape[:2]
    s = height / h
    p = cv2.resize(person, (max(1, round(w * s)), height), interpolation=cv2.INTER_AREA)
    x0 = round(cx - p.shape[1] / 2)
    y0 = FRAME_H - height
    xa, xb = max(0, x0), min(FRAME_W, x0 + p.shape[1])
    if xb > xa:
        frame[y0 : y0 + height, xa:xb] = p[:, xa - x0 : xb - x0]


@dataclass(frozen=True)
class Visit:
    person: str
    frames: int  # frames standing at the kiosk


def make_scene(folder: Path, visits: list[Visit], seed: int = 0) -> list[tuple[str, float, float]]:
    """Write the scene as numbered JPEG frames; returns (person, start_s, end_s) per visit."""
    rng = np.random.default_rng(seed)
    faces = {"hopper": hopper(), "collins": collins()}
    wall = _wall(rng)
    folder.mkdir(parents=True, exist_ok=True)
    i = 0
    spans = []

    def write(frame: np.ndarray) -> None:
        nonlocal i
        noisy = np.clip(frame.astype(np.int16) + rng.integers(-4, 5, frame.shape), 0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / f"frame_{i:05d}.jpg"), noisy[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
        i += 1

    for v in visits:
        for _ in range(6):  # empty kiosk between people
            write(wall.copy())
        start = i / FPS
        walk = 8
        for k in range(walk + v.frames + walk):
            frame = wall.copy()
            if k < walk:  # walking up from the left
                cx = FRAME_W * (0.1 + 0.4 * k / walk)
            elif k < walk + v.frames:
                cx = FRAME_W * 0.5 + rng.normal(0, 3)
            else:  # leaving to the right
                cx = FRAME_W * (0.5 + 0.45 * (k - walk - v.frames) / walk)
            _paste(frame, faces[v.person], cx, int(FRAME_H * 0.95 + rng.normal(0, 2)))
            write(frame)
        spans.append((v.person, start, i / FPS))
    for _ in range(12):
        write(wall.copy())
    return spans
