"""The one interface every embedding back-end implements.

Each back-end makes its own chips from a detected face (`chips(rgb, faces)`), because each model expects
its own alignment: dlib's 5-point chip (`dlib.get_face_chip(img, shape, size=150, padding=0.25)`, uint8
RGB [n, 150, 150, 3]) or SFace's ArcFace 112x112 chip (edge.recognition.embed.sface).
Output is float32 [n, 128]: dlib's descriptor as `compute_face_descriptor` returns it (not normalised; the
matcher normalises), or SFace's unit vector.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

CHIP_SIZE = 150
CHIP_PADDING = 0.25
EMBEDDING_DIM = 128


class FaceLike(Protocol):
    """What a chip maker needs of a detected face (edge.recognition.detect.Face)."""

    @property
    def box(self) -> tuple[int, int, int, int]: ...

    @property
    def landmarks(self) -> np.ndarray: ...

    @property
    def scheme(self) -> str: ...


@runtime_checkable
class Embedder(Protocol):
    #: "dlib", "onnx" or "sface"
    name: str
    #: side of the square chips `embed` takes (dlib 150, SFace 112)
    chip_size: int
    #: identifies the network weights (e.g. "dlib_face_recognition_resnet_model_v1:<sha256[:16]>");
    #: calibration files and stored templates are keyed by it so a model change cannot silently
    #: keep old thresholds or mix incompatible templates.
    model_id: str

    def chips(self, rgb: np.ndarray, faces: Sequence[FaceLike]) -> np.ndarray:
        """The model's own aligned chips, uint8 [n, chip_size, chip_size, 3], of faces in an RGB frame: each
        model expects its own geometry, so the pipeline asks the back-end, not the detector."""
        ...

    def embed(self, chips: np.ndarray) -> np.ndarray:
        """uint8 [n,chip_size,chip_size,3] RGB chips -> float32 [n,128] descriptors."""
        ...


def check_chips(chips: np.ndarray, size: int = CHIP_SIZE) -> np.ndarray:
    """Validate a chip batch and return it as a contiguous uint8 array."""
    if chips.ndim == 3:
        chips = chips[None]
    if chips.ndim != 4 or chips.shape[1:] != (size, size, 3):
        raise ValueError(f"face chips must be uint8 [n,{size},{size},3], got {chips.shape}")
    if chips.dtype != np.uint8:
        raise ValueError(f"face chips must be uint8, got {chips.dtype}")
    return np.ascontiguousarray(chips)
