"""5-point similarity alignment (edge/recognition/align.py): exact on known transforms, right on a real photo."""

from __future__ import annotations

import math
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.recognition.align import ARCFACE_112, CHIP_SIZE, DLIB5_TEMPLATE, align, apply, dlib5_points, umeyama

SHARED = Path(os.environ.get("MEAL_EDGE_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
SAMPLES = SHARED / "data" / "samples"


def similarity(scale: float, angle_deg: float, tx: float, ty: float) -> np.ndarray:
    a = math.radians(angle_deg)
    r = scale * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return np.hstack([r, [[tx], [ty]]])


@pytest.mark.parametrize(
    "scale,angle,tx,ty", [(1.0, 0.0, 0.0, 0.0), (2.5, 17.0, -40.0, 310.0), (0.3, -120.0, 5.5, 9.25)]
)
def test_recovers_a_known_similarity_exactly(scale: float, angle: float, tx: float, ty: float) -> None:
    m = similarity(scale, angle, tx, ty)
    src = np.array([(10.0, 20.0), (80.0, 22.0), (45.0, 60.0), (20.0, 90.0), (75.0, 88.0)])
    got = umeyama(src, apply(m, src))
    np.testing.assert_allclose(got, m, atol=1e-9)


def test_least_squares_with_noise_and_no_reflection() -> None:
    rng = np.random.default_rng(3)
    m = similarity(3.0, 30.0, 100.0, 50.0)
    dst = apply(m, ARCFACE_112) + rng.normal(0, 0.2, (5, 2))
    got = umeyama(ARCFACE_112, dst)
    # close to the true transform, and no worse a fit than the truth (it is the least-squares optimum)
    np.testing.assert_allclose(apply(got, ARCFACE_112), apply(m, ARCFACE_112), atol=1.0)
    np.testing.assert_allclose(got[:, :2], m[:, :2], atol=0.05)
    assert np.sum((apply(got, ARCFACE_112) - dst) ** 2) <= np.sum((apply(m, ARCFACE_112) - dst) ** 2) + 1e-9
    # a mirrored point set must not be matched by a reflection: the determinant stays positive
    mirrored = ARCFACE_112 * [-1, 1]
    assert np.linalg.det(umeyama(ARCFACE_112, mirrored)[:, :2]) > 0


def test_refuses_degenerate_points() -> None:
    with pytest.raises(ValueError, match="one point"):
        umeyama(np.ones((5, 2)), ARCFACE_112)
    with pytest.raises(ValueError, match="matching"):
        umeyama(np.zeros((5, 2)), np.zeros((4, 2)))


def test_warp_puts_the_landmarks_on_the_template() -> None:
    """Draw dots at landmark positions in a rotated, scaled frame; the aligned chip has them at the template."""
    m = similarity(2.2, -25.0, 130.0, 90.0)
    marks = apply(m, ARCFACE_112)
    img = np.zeros((480, 640, 3), np.uint8)
    for x, y in marks:
        cv2.circle(img, (round(x), round(y)), 4, (255, 255, 255), -1)
    chip = align(img, marks)
    assert chip.shape == (CHIP_SIZE, CHIP_SIZE, 3) and chip.dtype == np.uint8
    for x, y in ARCFACE_112:
        assert chip[round(y), round(x), 0] > 200, (x, y)
    assert chip[5, 5, 0] == 0 and chip[56, 5, 0] == 0


def test_dlib5_points_order() -> None:
    # dlib: image-right eye outer, inner; image-left eye outer, inner; nose base
    p = np.array([(80, 50), (70, 50), (30, 50), (40, 50), (55, 80)], np.float32)
    np.testing.assert_allclose(dlib5_points(p), [(35, 50), (75, 50), (55, 80)])
    assert DLIB5_TEMPLATE.shape == (3, 2)


@pytest.mark.slow
def test_aligns_a_real_photo() -> None:
    """YuNet's landmarks on Obama's portrait fit the template closely; the photo tilted by 20 degrees and
    shrunk gives the same chip (alignment undoes rotation and scale); and YuNet, run on the chip, finds
    the eyes where the template puts them."""
    photo = SAMPLES / "obama.jpg"
    if not photo.exists():
        pytest.skip(f"{photo}: face_recognition's sample photos not found (set MEAL_EDGE_SHARED)")
    from edge.recognition.detect import load_image
    from edge.recognition.yunet import YuNetDetector

    det = YuNetDetector(detect_width=640)
    rgb = load_image(photo)
    face = det.detect(rgb)[0]
    m = umeyama(face.landmarks, ARCFACE_112)
    assert np.abs(apply(m, face.landmarks) - ARCFACE_112).max() < 6
    chip = align(rgb, face.landmarks)

    h, w = rgb.shape[:2]
    tilt = cv2.getRotationMatrix2D((w / 2, h / 2), 20, 0.7)
    turned = cv2.warpAffine(rgb, tilt, (w, h), flags=cv2.INTER_CUBIC)
    # the same landmarks carried into the tilted, shrunk photo give the same chip: only resampling differs
    tchip = align(turned, apply(tilt, face.landmarks))
    x, y = chip.astype(np.float32).ravel(), tchip.astype(np.float32).ravel()
    assert np.corrcoef(x, y)[0, 1] > 0.97
    assert np.abs(x - y).mean() < 8
    # and YuNet on the tilted photo finds landmarks the alignment makes nearly upright again
    tface = det.detect(turned)[0]
    eyes = apply(umeyama(tface.landmarks, ARCFACE_112), tface.landmarks[:2])
    assert abs(math.degrees(math.atan2(eyes[1, 1] - eyes[0, 1], eyes[1, 0] - eyes[0, 0]))) < 10

    big = cv2.resize(chip, (448, 448), interpolation=cv2.INTER_CUBIC)
    again = det.detect(big)
    assert again, "YuNet finds the face in its own aligned chip"
    eyes = again[0].landmarks[:2] / 4
    assert np.abs(eyes - ARCFACE_112[:2]).max() < 5, eyes
