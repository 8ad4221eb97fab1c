"""Hints at the kiosk when a face is seen but not usable (edge.app.Pipeline.on_hint): the real detector and
embedder on real photos from ../shared: a face too small to use asks the person to come closer, a face turned
away asks them to face the screen, a face looking at the camera gets no hint."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import test_confirm as confirm_tests
from PIL import Image

from edge.app import Parts, build_parts, make_pipeline
from edge.config import Config
from edge.recognition.capture import Frame
from edge.recognition.detect import TURNED_YAW, Detector

SHARED = Path(os.environ.get("MEAL_EDGE_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
LFW = SHARED / "data" / "faces" / "lfw_deepfunneled"
TURNED = LFW / "Xanana_Gusmao" / "Xanana_Gusmao_0002.jpg"  # a three-quarter view, looking to his right
FRONTAL = LFW / "Adrien_Brody" / "Adrien_Brody_0003.jpg"

cfg = confirm_tests.cfg


def photo(p: Path) -> np.ndarray:
    if not p.exists():
        pytest.skip(f"../shared/data/... not found: {p} (set MEAL_EDGE_SHARED to the shared data folder)")
    return np.asarray(Image.open(p).convert("RGB"))


@pytest.fixture
def parts(cfg: Config) -> Iterator[Parts]:
    """The real store, detector, embedder and policy of the config."""
    p = build_parts(cfg)
    yield p
    p.store.close()


def hints_for(cfg: Config, parts: Parts, image: np.ndarray, frames: int = 3) -> list[str | None]:
    seen: list[str | None] = []
    pipe = make_pipeline(cfg, parts, lambda _f: confirm_tests.at("11:45"), on_hint=seen.append)
    for i in range(frames):
        pipe.process(Frame(i, i / 10, image))
    return seen


def test_yaw_tells_a_turned_face_from_a_frontal_one() -> None:
    d = Detector(detect_width=640, upsample=0)
    turned = max(d.detect(photo(TURNED)), key=lambda f: f.width)
    frontal = max(d.detect(photo(FRONTAL)), key=lambda f: f.width)  # people stand behind him
    assert turned.yaw > TURNED_YAW > 0.1 > frontal.yaw


def test_yunets_own_points_tell_a_turned_face_too() -> None:
    # YuNet's 5 points (eye centres, nose tip, mouth corners) read a turn on their own scale (TURNED_YAW_YUNET);
    # reading them as dlib's points (nose = a mouth corner) gave nonsense before
    from edge.recognition.detect import TURNED_YAW_YUNET
    from edge.recognition.detectors import make_detector

    d = make_detector("yunet", 640)
    turned = max(d.detect(photo(TURNED)), key=lambda f: f.width)
    frontal = max(d.detect(photo(FRONTAL)), key=lambda f: f.width)
    assert turned.scheme == frontal.scheme == "yunet5"
    assert turned.yaw > TURNED_YAW_YUNET > 0.2 > frontal.yaw
    assert turned.turned and not frontal.turned


def test_a_face_turned_away_is_asked_to_face_the_screen(cfg: Config, parts: Parts) -> None:
    assert hints_for(cfg, parts, photo(TURNED)) == ["turn"] * 3
    assert set(hints_for(cfg, parts, photo(FRONTAL))) == {None}


def test_a_face_too_small_to_use_is_asked_to_come_closer(cfg: Config, parts: Parts) -> None:
    """The same frontal photo, small in a wide frame: found by the detector (upsampled), narrower than
    [detect] min_face_px."""
    small = Image.fromarray(photo(FRONTAL)).resize((125, 125))
    frame = np.zeros((720, 1280, 3), np.uint8)
    frame[300:425, 600:725] = np.asarray(small)
    seen = Detector(detect_width=1280, upsample=1).detect(frame)
    assert seen and all(f.width < cfg.detect.min_face_px for f in seen)
    upsampled = replace(parts, detector=Detector(detect_width=1280, upsample=1))
    assert hints_for(cfg, upsampled, frame) == ["closer"] * 3
    # nothing in view: no hint
    assert hints_for(cfg, upsampled, np.zeros((720, 1280, 3), np.uint8)) == [None] * 3
