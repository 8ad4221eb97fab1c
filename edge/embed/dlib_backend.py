"""Reference embedding back-end: dlib's ResNet via dlib-bin (about 98 ms a face on 2 cores)."""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path

import dlib
import numpy as np

from edge.embed.base import EMBEDDING_DIM, check_chips
from edge.modelfiles import FACE_RECOGNITION_DAT, sha256_file

log = logging.getLogger(__name__)


@lru_cache(maxsize=4)
def file_sha256(path: Path) -> str:
    """Cached: the model id is asked for often and the weights do not change under a running process."""
    return sha256_file(path)


def model_id_for(path: Path = FACE_RECOGNITION_DAT) -> str:
    """Both back-ends compute the same function of the same weights, so they share this id."""
    return f"dlib_face_recognition_resnet_model_v1:{file_sha256(path)[:16]}"


class DlibEmbedder:
    name = "dlib"

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
