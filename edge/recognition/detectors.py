"""Choose the face detector named by the config's `[detect] detector`: YuNet (default) or HOG."""

from __future__ import annotations

from pathlib import Path

from edge.recognition.detect import Detector, FaceDetector

DETECTORS = ("yunet", "hog")


def make_detector(
    kind: str = "yunet",
    detect_width: int = 640,
    upsample: int = 0,
    *,
    threads: int = 0,
    models_dir: Path | None = None,
    onnx_dir: Path | None = None,
) -> FaceDetector:
    """yunet: YuNet on onnxruntime (twice as fast as cv2.FaceDetectorYN here, docs/models.md); `upsample`
    does not apply (YuNet finds faces from about 10 px). hog: dlib's HOG + shape_predictor_5.
    models_dir / onnx_dir: as edge.modelbuild.manifest.model_folders (default: shipped manifest, state folder)."""
    if kind == "hog":
        return Detector(detect_width=detect_width, upsample=upsample)
    if kind == "yunet":
        from edge.recognition.yunet import YuNetDetector

        # YuNet is small: two threads halve its time at 640x360 (8 vs 15 ms) on the kiosk's 2 cores
        return YuNetDetector(
            detect_width, runner="onnxruntime", threads=threads or 2, models_dir=models_dir, onnx_dir=onnx_dir
        )
    raise ValueError(f"unknown face detector {kind!r}; choose one of {', '.join(DETECTORS)}")
