"""YuNet face detector (OpenCV Zoo, 2023mar): boxes, 5 landmarks and a score, in one small network.

Behind the same interface as the HOG detector (`detect(rgb) -> list[Face]`, full-frame pixels, largest
face first), so the tracker and pipeline do not change. The landmarks are YuNet's own 5 points (right
eye, left eye, nose tip, right and left mouth corners, image-left first): exactly the points SFace's
ArcFace template is defined on, so no second landmark model is needed.

Like HOG, it runs on the frame downscaled to at most `detect_width` pixels wide; boxes and landmarks
are scaled back to the full frame, where the chips are cut.

Two runners of the same folded model (edge/modelbuild/sface.py), both checked against the manifest:
- "opencv": `cv2.FaceDetectorYN` (OpenCV's own decoder and NMS);
- "onnxruntime": the graph on onnxruntime, decoded here (same arithmetic as OpenCV's face_detect.cpp).
Which is faster at the kiosk's size is measured by bench/bench_detect.py and written in docs/models.md;
the default is the faster one.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from edge.modelbuild import ModelError
from edge.modelbuild.sface import load_verified
from edge.modelbuild.zoo import YUNET
from edge.recognition.detect import Face

log = logging.getLogger(__name__)

Runner = Literal["opencv", "onnxruntime"]
RUNNERS: tuple[Runner, ...] = ("opencv", "onnxruntime")
STRIDES = (8, 16, 32)
#: YuNet works on frames padded to a multiple of its coarsest stride
DIVISOR = 32
#: a face must score at least this (sqrt(class * objectness)); OpenCV Zoo's demo uses 0.9, which misses
#: some seniors' faces in poor light; 0.7 keeps false detections rare on our sample frames (docs/models.md)
SCORE_THRESHOLD = 0.7
NMS_THRESHOLD = 0.3
TOP_K = 50


def _padded(n: int) -> int:
    return int(math.ceil(n / DIVISOR) * DIVISOR)


def decode(
    outputs: dict[str, np.ndarray], height: int, width: int, score_threshold: float = SCORE_THRESHOLD
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """YuNet's raw per-cell outputs for a (padded) input of `height` x `width` -> boxes [n, 4] (x, y, w, h),
    landmarks [n, 5, 2], scores [n], before NMS."""
    boxes, points, scores = [], [], []
    for stride in STRIDES:
        cols = width // stride
        cls = np.clip(outputs[f"cls_{stride}"].reshape(-1), 0, 1)
        obj = np.clip(outputs[f"obj_{stride}"].reshape(-1), 0, 1)
        score = np.sqrt(cls * obj)
        idx = np.flatnonzero(score >= score_threshold)
        if not len(idx):
            continue
        r, c = (idx // cols).astype(np.float32), (idx % cols).astype(np.float32)
        bb = outputs[f"bbox_{stride}"].reshape(-1, 4)[idx]
        cx, cy = (c + bb[:, 0]) * stride, (r + bb[:, 1]) * stride
        w, h = np.exp(bb[:, 2]) * stride, np.exp(bb[:, 3]) * stride
        boxes.append(np.stack([cx - w / 2, cy - h / 2, w, h], axis=1))
        kps = outputs[f"kps_{stride}"].reshape(-1, 5, 2)[idx]
        points.append(np.stack([(kps[..., 0] + c[:, None]) * stride, (kps[..., 1] + r[:, None]) * stride], axis=-1))
        scores.append(score[idx])
    if not boxes:
        return np.zeros((0, 4), np.float32), np.zeros((0, 5, 2), np.float32), np.zeros(0, np.float32)
    return (
        np.concatenate(boxes).astype(np.float32),
        np.concatenate(points).astype(np.float32),
        np.concatenate(scores).astype(np.float32),
    )


class YuNetDetector:
    """YuNet on a frame downscaled to `detect_width`; faces in full-frame pixels, largest first."""

    def __init__(
        self,
        detect_width: int = 640,
        *,
        score_threshold: float = SCORE_THRESHOLD,
        runner: Runner = "opencv",
        threads: int = 1,
        models_dir: Path | None = None,
        onnx_dir: Path | None = None,
    ) -> None:
        if runner not in RUNNERS:
            raise ValueError(f"unknown YuNet runner {runner!r}; choose one of {', '.join(RUNNERS)}")
        self.detect_width = detect_width
        self.score_threshold = score_threshold
        self.runner = runner
        self._data = load_verified(models_dir, YUNET, onnx_dir=onnx_dir)
        self._size: tuple[int, int] | None = None
        if runner == "opencv":
            try:
                self._cv = cv2.FaceDetectorYN.create(
                    "onnx",
                    np.frombuffer(self._data, np.uint8),
                    np.zeros(0, np.uint8),
                    (320, 320),
                    score_threshold,
                    NMS_THRESHOLD,
                    TOP_K,
                )
            except cv2.error as e:
                raise ModelError(f"{YUNET.file}: OpenCV cannot load it: {e}") from e
        else:
            import onnxruntime as ort

            so = ort.SessionOptions()
            so.intra_op_num_threads = max(0, int(threads))
            so.inter_op_num_threads = 1
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
            so.log_severity_level = 3
            try:
                self._ort = ort.InferenceSession(self._data, so, ["CPUExecutionProvider"])
            except Exception as e:  # onnxruntime raises its own types from C++
                raise ModelError(f"{YUNET.file}: onnxruntime cannot load it: {e}") from e
            self._names = [o.name for o in self._ort.get_outputs()]

    def _raw(self, bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boxes (x, y, w, h), landmarks [n, 5, 2] and scores on `bgr`, after NMS."""
        h, w = bgr.shape[:2]
        if self.runner == "opencv":
            if self._size != (w, h):
                self._cv.setInputSize((w, h))
                self._size = (w, h)
            _, found = self._cv.detect(bgr)
            if found is None:
                return np.zeros((0, 4), np.float32), np.zeros((0, 5, 2), np.float32), np.zeros(0, np.float32)
            return found[:, :4], found[:, 4:14].reshape(-1, 5, 2), found[:, 14]
        ph, pw = _padded(h), _padded(w)
        x = np.zeros((1, 3, ph, pw), np.float32)
        x[0, :, :h, :w] = bgr.transpose(2, 0, 1)
        outs = dict(zip(self._names, self._ort.run(None, {"input": x}), strict=True))
        boxes, points, scores = decode(outs, ph, pw, self.score_threshold)
        if not len(scores):
            return boxes, points, scores
        picked = cv2.dnn.NMSBoxes(boxes.tolist(), scores.tolist(), self.score_threshold, NMS_THRESHOLD, top_k=TOP_K)
        keep = np.asarray(picked, int).reshape(-1)
        return boxes[keep], points[keep], scores[keep]

    def detect(self, rgb: np.ndarray) -> list[Face]:
        h, w = rgb.shape[:2]
        scale = 1.0
        small = rgb
        if self.detect_width and w > self.detect_width:
            scale = self.detect_width / w
            small = cv2.resize(rgb, (self.detect_width, max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        # YuNet was trained on BGR frames
        boxes, points, scores = self._raw(cv2.cvtColor(small, cv2.COLOR_RGB2BGR))
        faces = []
        for (x, y, bw, bh), pts, s in zip(boxes, points, scores, strict=True):
            left = max(0, round(float(x) / scale))
            top = max(0, round(float(y) / scale))
            right = min(w, round(float(x + bw) / scale))
            bottom = min(h, round(float(y + bh) / scale))
            if right <= left or bottom <= top:
                continue
            marks = (np.asarray(pts, np.float32) / scale).astype(np.float32)
            faces.append(Face((top, right, bottom, left), marks, float(s), "yunet5"))
        faces.sort(key=lambda f: f.width * f.height, reverse=True)
        return faces
