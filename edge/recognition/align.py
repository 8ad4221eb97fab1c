"""5-point face alignment to the ArcFace 112x112 template, as SFace (and ArcFace-family models) expect.

A least-squares similarity transform (rotation, uniform scale, translation; Umeyama 1991) maps the
detector's landmarks onto fixed template positions, and `cv2.warpAffine` resamples the frame. This is
what OpenCV's `FaceRecognizerSF.alignCrop` does for SFace; it is written here so any landmark source
(YuNet's 5 points, dlib's 5-point predictor) can use it and so it can be tested on its own.

Pure: numpy in, numpy out.
"""

from __future__ import annotations

import cv2
import numpy as np

CHIP_SIZE = 112

#: (x, y) in the 112x112 chip: right eye, left eye (as seen: image-left first), nose tip, right and left
#: mouth corners; the subject's right eye is on the image's left. YuNet reports its landmarks in this order.
ARCFACE_112 = np.array(
    [
        (38.2946, 51.6963),
        (73.5318, 51.5014),
        (56.0252, 71.7366),
        (41.5493, 92.3655),
        (70.7299, 92.2041),
    ],
    dtype=np.float64,
)


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The similarity transform [2, 3] that maps `src` points [n, 2] onto `dst` [n, 2] with the least
    squared error (Umeyama, "Least-squares estimation of transformation parameters between two point
    patterns", TPAMI 1991). Needs at least two distinct points; never reflects."""
    s = np.asarray(src, np.float64)
    d = np.asarray(dst, np.float64)
    if s.ndim != 2 or s.shape[1] != 2 or s.shape != d.shape or len(s) < 2:
        raise ValueError(f"need matching [n>=2, 2] point arrays, got {s.shape} and {d.shape}")
    mu_s, mu_d = s.mean(axis=0), d.mean(axis=0)
    sc, dc = s - mu_s, d - mu_d
    var_s = float((sc**2).sum() / len(s))
    if var_s <= 1e-12:
        raise ValueError("landmarks are all at one point: no transform")
    cov = dc.T @ sc / len(s)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1.0  # the best rotation, not a reflection
    rot = u @ np.diag(sign) @ vt
    scale = float((sig * sign).sum() / var_s)
    t = mu_d - scale * rot @ mu_s
    return np.hstack([scale * rot, t[:, None]])


def apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Points [n, 2] through a [2, 3] affine transform."""
    p = np.asarray(pts, np.float64)
    return p @ m[:, :2].T + m[:, 2]


def align(
    rgb: np.ndarray, landmarks: np.ndarray, template: np.ndarray = ARCFACE_112, size: int = CHIP_SIZE
) -> np.ndarray:
    """uint8 [h, w, 3] frame + landmarks [k, 2] (matching `template`'s rows) -> uint8 [size, size, 3] chip.
    Outside the frame is black, as in OpenCV's alignCrop."""
    m = umeyama(landmarks, template)
    return cv2.warpAffine(np.ascontiguousarray(rgb), m, (size, size), flags=cv2.INTER_LINEAR, borderValue=0)


def dlib5_points(landmarks: np.ndarray) -> np.ndarray:
    """dlib's 5-point shape (image-right eye outer/inner, image-left eye outer/inner, nose base) ->
    [3, 2]: image-left eye centre, image-right eye centre, nose base; to be used with `DLIB5_TEMPLATE`.
    dlib has no mouth corners, and its nose point is the base of the nose, not the tip."""
    p = np.asarray(landmarks, np.float64)
    if p.shape != (5, 2):
        raise ValueError(f"dlib 5-point landmarks must be [5, 2], got {p.shape}")
    return np.stack([(p[2] + p[3]) / 2, (p[0] + p[1]) / 2, p[4]])


#: where `dlib5_points` falls in the ArcFace chip: the median of dlib's points mapped through the
#: YuNet-landmark alignment, on one photo each of 150 LFW identities of the calibration half outside the
#: East Asian and elderly slices (bench/compare_detectors.py --fit-dlib5). dlib's eye centres (mean of the
#: corners) sit 2 px lower than YuNet's eye points, and the nose base 9 px below the template's nose tip.
DLIB5_TEMPLATE = np.array([(36.911, 53.977), (72.494, 53.415), (55.232, 80.591)], dtype=np.float64)
