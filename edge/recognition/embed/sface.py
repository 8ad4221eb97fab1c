"""SFace embedding back-end (OpenCV Zoo face_recognition_sface_2021dec) on onnxruntime.

Chips: the face aligned by a 5-point similarity transform to the ArcFace 112x112 template
(edge.recognition.align), uint8 RGB. The chip maker belongs to the back-end, because each model expects
its own geometry (dlib: 150x150 with padding 0.25; SFace: 112x112 ArcFace), so the pipeline asks the
embedder for its chips. Landmarks may come from YuNet (its own 5 points, the template's points) or from
dlib's 5-point predictor (eye corners and nose base: eye centres and nose base are used).

Network input: float32 NCHW, RGB 0..255, no mean or std (the graph does (x - 127.5) / 128 itself).
Output: 128-d, L2-normalised here, so the Euclidean matcher's d^2 = 2 - 2 cos is monotonic in cosine.

The model id is the quantised source file's (edge.modelbuild.zoo.SFACE.model_id): templates and
calibration made with SFace are never mixed with dlib's.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edge.modelbuild.sface import load_verified
from edge.modelbuild.zoo import SFACE
from edge.recognition.align import ARCFACE_112, CHIP_SIZE, DLIB5_TEMPLATE, align, dlib5_points
from edge.recognition.embed.base import FaceLike, check_chips

log = logging.getLogger(__name__)

#: landmark schemes this back-end can align from (edge.detect.Face.scheme)
SCHEMES = ("yunet5", "dlib5")


def sface_chip(rgb: np.ndarray, landmarks: np.ndarray, scheme: str) -> np.ndarray:
    """One uint8 [112, 112, 3] chip from a frame and a face's 5 landmarks of the named scheme."""
    if scheme == "yunet5":
        return align(rgb, landmarks, ARCFACE_112)
    if scheme == "dlib5":
        return align(rgb, dlib5_points(landmarks), DLIB5_TEMPLATE)
    raise ValueError(f"SFace cannot align landmarks of scheme {scheme!r}; known: {', '.join(SCHEMES)}")


def l2_normalise(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(n, 1e-12)).astype(np.float32)


class SFaceEmbedder:
    name = "sface"
    chip_size = CHIP_SIZE

    def __init__(
        self,
        *,
        threads: int = 0,
        models_dir: Path | None = None,
        onnx_dir: Path | None = None,
        build_missing: bool = True,
        warmup: bool = True,
        spin: bool = False,
        model_bytes: bytes | None = None,
    ) -> None:
        """`model_bytes`: run another ONNX file of the same network (bench and evaluation of int8
        variants only; the model id then no longer names what runs, so the kiosk never passes it)."""
        from edge.recognition.embed.onnx_backend import open_session

        if model_bytes is None:
            data = load_verified(models_dir, SFACE, onnx_dir=onnx_dir, build_missing=build_missing)
        else:
            data = model_bytes
        self._session = open_session(data, threads, spin=spin, where=SFACE.file)
        self.threads = threads or (os.cpu_count() or 1)
        self.model_id = SFACE.model_id
        if warmup:
            # the first run allocates buffers and picks kernels; do it now, not on the first senior
            self.embed(np.zeros((1, CHIP_SIZE, CHIP_SIZE, 3), np.uint8))

    def chips(self, rgb: np.ndarray, faces: Sequence[FaceLike]) -> np.ndarray:
        out = np.empty((len(faces), CHIP_SIZE, CHIP_SIZE, 3), np.uint8)
        for i, f in enumerate(faces):
            out[i] = sface_chip(rgb, f.landmarks, f.scheme)
        return out

    def embed(self, chips: np.ndarray) -> np.ndarray:
        """uint8 [n,112,112,3] RGB chips -> float32 [n,128] unit vectors."""
        from edge.recognition.embed.onnx_backend import embed_batched

        return l2_normalise(embed_batched(self._session, check_chips(chips, CHIP_SIZE)))
