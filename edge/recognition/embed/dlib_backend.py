"""Reference embedding back-end: dlib's ResNet via dlib-bin (about 98 ms a face on 2 cores)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import dlib
import numpy as np

from edge.modelbuild.modelfiles import FACE_RECOGNITION_DAT, model_id_for
from edge.recognition.embed.base import CHIP_SIZE, EMBEDDING_DIM, FaceLike, check_chips

log = logging.getLogger(__name__)


class DlibEmbedder:
    name = "dlib"
    chip_size = CHIP_SIZE

    def chips(self, rgb: np.ndarray, faces: Sequence[FaceLike]) -> np.ndarray:
        from edge.recognition.detect import Face, dlib_chips

        return dlib_chips(rgb, [Face(f.box, f.landmarks, 0.0, f.scheme) for f in faces])

    def __init__(self, model_path: Path = FACE_RECOGNITION_DAT) -> None:
        self._net = dlib.face_recognition_model_v1(str(model_path))
        self.model_id = model_id_for(model_path)

    def embed(self, chips: np.ndarray) -> np.ndarray:
        chips = check_chips(chips)
        if len(chips) == 0:
            return np.zeros((0, EMBEDDING_DIM), np.float32)
        # The chip overload of compute_face_descriptor takes an already aligned 150x150 image.
        out = self._net.compute_face_descriptor([c for c in chips])
        return np.asarray([np.asarray(v, dtype=np.float32) for v in out], dtype=np.float32)
