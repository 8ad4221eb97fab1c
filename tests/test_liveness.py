"""Passive liveness on real data: a real LFW photo rendered as a print held in front of the camera, and a real
track of the real clip. Needs ../shared (skips with a clear message without it)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from edge.lab.attack_render import decode
from edge.lab.liveness_set import CLIP_REL, FACES_REL, read_clip, render_attack, track_of
from edge.recognition.detect import Detector, Face, load_image
from edge.recognition.liveness import LivenessChecker, LivenessParams

SHARED = Path(os.environ.get("MEAL_EDGE_SHARED") or Path(__file__).resolve().parents[1].parent / "shared")
PHOTO = SHARED / FACES_REL / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg"
CLIP = SHARED / CLIP_REL

pytestmark = pytest.mark.slow


def _need(p: Path) -> None:
    if not p.exists():
        pytest.skip(f"../shared/data/... not found: {p}")


@pytest.fixture(scope="module")
def detector() -> Detector:
    return Detector()


def _wall() -> np.ndarray:
    yy, xx = np.mgrid[0:360, 0:640].astype(np.float32)
    wall = np.stack([170 + 20 * xx / 640, 160 + 10 * yy / 360, 150 + 0 * xx], axis=2)
    return wall + np.random.default_rng(3).normal(0, 3, wall.shape).astype(np.float32)


def _print_attack(detector: Detector, *, still: bool, seed: int) -> tuple[list[np.ndarray], list[Face]]:
    _need(PHOTO)
    photo = load_image(PHOTO)
    f = Detector(upsample=1).detect(photo)[0]
    uv = np.array([(f.box[1] + f.box[3]) / 2, (f.box[0] + f.box[2]) / 2])
    rng = np.random.default_rng(seed)
    jpegs, centres = render_attack("print", [photo], [uv], f.width, _wall(), rng, 16, still=still)
    kj, faces = track_of(detector, jpegs, centres)
    assert len(kj) >= 12, "the detector should find the printed face in most rendered frames"
    return [decode(j) for j in kj], faces


def test_handheld_printed_photo_is_flagged(detector: Detector) -> None:
    frames, faces = _print_attack(detector, still=False, seed=5)
    v = LivenessChecker().assess(frames, faces)
    assert v.live is False, v
    assert "planar_motion" in v.reasons


def test_printed_photo_on_a_stand_is_not_live(detector: Detector) -> None:
    frames, faces = _print_attack(detector, still=True, seed=6)
    v = LivenessChecker().assess(frames, faces)
    assert v.live is not True, v
    assert v.reasons and v.reasons[0] in ("too_still", "planar_motion")


@pytest.fixture(scope="module")
def clip_track(detector: Detector) -> tuple[list[np.ndarray], list[Face]]:
    _need(CLIP)
    # frames 130-149: the performer faces the camera, a single face in every frame
    frames = read_clip(CLIP)[130:150]
    faces = []
    for f in frames:
        found = detector.detect(f)
        assert found, "the real clip has one face in each of these frames"
        faces.append(found[0])
    return frames, faces


def test_real_track_passes(clip_track: tuple[list[np.ndarray], list[Face]]) -> None:
    frames, faces = clip_track
    v = LivenessChecker().assess(frames, faces)
    assert v.live is True, v
    assert v.score > LivenessParams().threshold


def test_too_few_frames_gives_no_verdict(clip_track: tuple[list[np.ndarray], list[Face]]) -> None:
    frames, faces = clip_track
    n = LivenessParams().min_frames - 1
    v = LivenessChecker().assess(frames[:n], faces[:n])
    assert v.live is None
    assert v.reasons == ("too_few_frames",)


def test_screen_edges_is_logged_but_not_scored(clip_track: tuple[list[np.ndarray], list[Face]]) -> None:
    frames, faces = clip_track
    assert "screen_edges" not in (LivenessChecker().assess(frames, faces).features or {})  # daemon default
    chk = LivenessChecker(LivenessParams(measure_unscored=True))
    v = chk.assess(frames, faces)
    assert v.features is not None and "screen_edges" in v.features
    assert v.features["screen_edges"] == 0.0  # a stage curtain, no phone edges around the performer
    feats = {k: x for k, x in v.features.items() if k != "screen_edges"}
    assert chk.score(feats)[0] == v.score
