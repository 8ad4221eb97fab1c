"""The one interface every embedding back-end implements.

Input is a batch of aligned face chips as dlib's 5-point alignment produces them
(`dlib.get_face_chip(img, shape, size=150, padding=0.25)`): uint8 RGB, shape [n, 150, 150, 3].
Output is float32 [n, 128]: the descriptor exactly as dlib's `compute_face_descriptor` returns it
(not normalised; the matcher normalises).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

CHIP_SIZE = 150
CHIP_PADDING = 0.25
EMBEDDING_DIM = 128


@runtime_checkable
class Embedder(Protocol):
    #: "dlib" or "onnx"
    name: str
    #: identifies the network weights (e.g. "dlib_face_recognition_resnet_model_v1:<sha256[:16]>");
    #: calibration files and stored templates are keyed by it so a model change cannot silently
    #: keep old thresholds or mix incompatible templates.
    model_id: str

    def embed(self, chips: np.ndarray) -> np.ndarray:
        """uint8 [n,150,150,3] RGB chips -> float32 [n,128] descriptors."""
        ...


def check_chips(chips: np.ndarray) -> np.ndarray:
    """Validate a chip batch and return it as a contiguous uint8 array."""
    if chips.ndim == 3:
        chips = chips[None]
    if chips.ndim != 4 or chips.shape[1:] != (CHIP_SIZE, CHIP_SIZE, 3):
        raise ValueError(f"face chips must be uint8 [n,{CHIP_SIZE},{CHIP_SIZE},3], got {chips.shape}")
    if chips.dtype != np.uint8:
        raise ValueError(f"face chips must be uint8, got {chips.dtype}")
    return np.ascontiguousarray(chips)
