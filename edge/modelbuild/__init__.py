"""Build our own ONNX copy of dlib's face-recognition ResNet (issue 3) and check it on every load.

- `dlib_dat`: reads dlib's serialisation of `dlib_face_recognition_resnet_model_v1.dat`.
- `convert`: turns the parsed layers into an ONNX graph (the model contract is in `docs/models.md`).
- `manifest`: `models/manifest.toml`, the sha256 of source and built files; build and verify.
- `cli`: `meal-edge models build|verify`.
"""

from __future__ import annotations


class ModelError(RuntimeError):
    """A model file that is missing, truncated, corrupt or not the one the manifest names.

    The message always names the file, so staff can act on it (reinstall the package, rebuild).
    """
