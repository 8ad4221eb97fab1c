"""Photo -> descriptor for the offline tools, per model: the detector, landmarks and chips each model
is run with at the kiosk.

* "dlib": HOG (upsampled once: LFW faces are ~100 px) + dlib's 5-point shape + dlib's 150x150 chip +
  the dlib ResNet (ONNX when it verifies, else dlib), mirrored unless --no-mirror ("+flip");
* "sface": YuNet (its own 5 landmarks) + the ArcFace 112x112 similarity alignment + SFace; the figures
  in docs/accuracy.md are for plain SFace descriptors (--no-mirror).

Of several faces the one nearest the picture's centre is taken (LFW and rmfrd photos are centred on
their subject; other faces are bystanders); a picture without a face gives None (no decision, as a
kiosk that sees no face makes none). `tag` names the detector settings in cache file names.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np

from edge.recognition.detect import Face, FaceDetector
from edge.recognition.embed.base import Embedder

if TYPE_CHECKING:
    from edge.recognition.embed.sface import SFaceEmbedder
    from edge.recognition.yunet import YuNetDetector

log = logging.getLogger(__name__)

MODELS = ("sface", "dlib")


class PhotoEncoder(Protocol):
    model_id: str
    #: detector settings, for cache file names
    tag: str

    def encode(self, rgbs: Sequence[np.ndarray]) -> list[np.ndarray | None]:
        """One float32 [128] descriptor (or None: no face) per uint8 RGB picture."""
        ...


def nearest_centre(faces: list[Face], shape: tuple[int, ...]) -> Face:
    h, w = shape[:2]
    cy, cx = h / 2, w / 2

    def dist(f: Face) -> float:
        t, r, b, left = f.box
        return float(((t + b) / 2 - cy) ** 2 + ((left + r) / 2 - cx) ** 2)

    return min(faces, key=dist)


class KioskEncoder:
    """The kiosk's own detector and embedder for a model ([detect] detector, [recognition] model/mirror):
    edge.recognition.detectors.make_detector + edge.recognition.embed.factory.make_embedder, chips made
    by the embedder. Its cache files are the ones `meal-edge calibrate/eval` have always used for HOG
    (`embeddings-<model id>-w640-u1.npz`) and `...-<detector>-w640-u1.npz` for any other detector."""

    def __init__(
        self,
        model: str = "dlib",
        mirror: bool = True,
        detector: str | None = None,
        detect_width: int = 640,
        upsample: int = 1,
        embedder: Embedder | None = None,
    ) -> None:
        from edge.recognition.embed.mirror import reference_model_id

        self.model, self.mirror = model, mirror
        self.detector_kind = detector or ("yunet" if model == "sface" else "hog")
        # both dlib back-ends share the reference model's id, so a cached run never loads a network
        self.model_id = embedder.model_id if embedder is not None else reference_model_id(mirror, model)
        prefix = "" if self.detector_kind == "hog" else f"{self.detector_kind}-"
        self.tag = f"{prefix}w{detect_width}-u{upsample}"
        self._detect_width, self._upsample = detect_width, upsample
        self._detector: FaceDetector | None = None
        self._embedder: Embedder | None = embedder

    def encode(self, rgbs: Sequence[np.ndarray]) -> list[np.ndarray | None]:
        from edge.recognition.detectors import make_detector
        from edge.recognition.embed.factory import make_embedder

        if self._detector is None:
            self._detector = make_detector(self.detector_kind, self._detect_width, self._upsample)
        if self._embedder is None:
            self._embedder = make_embedder("auto", mirror=self.mirror, model=self.model)
            if self._embedder.model_id != self.model_id:
                raise ValueError(f"embedder model {self._embedder.model_id!r} is not the reference {self.model_id!r}")
        out: list[np.ndarray | None] = [None] * len(rgbs)
        chips, where = [], []
        for i, rgb in enumerate(rgbs):
            faces = self._detector.detect(rgb)
            if faces:
                chips.append(self._embedder.chips(rgb, [nearest_centre(faces, rgb.shape)])[0])
                where.append(i)
        if chips:
            for i, e in zip(where, self._embedder.embed(np.stack(chips)), strict=True):
                out[i] = e
        return out


class SFaceEncoder:
    """Plain SFace with YuNet run by cv2.FaceDetectorYN (the kiosk runs the same folded YuNet on
    onnxruntime; edge.recognition.yunet decodes it with OpenCV's arithmetic). The figures in
    docs/accuracy.md were measured with this encoder, and its cache files (`...-yunet-w640.npz`) are kept
    apart from the kiosk encoder's."""

    def __init__(self, detect_width: int = 640, threads: int = 0) -> None:
        from edge.modelbuild.zoo import SFACE

        self.model_id = SFACE.model_id
        self.tag = f"yunet-w{detect_width}"
        self._detect_width, self._threads = detect_width, threads
        self._detector: YuNetDetector | None = None
        self._embedder: SFaceEmbedder | None = None

    def encode(self, rgbs: Sequence[np.ndarray]) -> list[np.ndarray | None]:
        from edge.recognition.embed.sface import SFaceEmbedder
        from edge.recognition.yunet import YuNetDetector

        if self._detector is None:
            self._detector = YuNetDetector(self._detect_width, runner="opencv")
            self._embedder = SFaceEmbedder(threads=self._threads)
        assert self._detector is not None and self._embedder is not None
        out: list[np.ndarray | None] = [None] * len(rgbs)
        chips, where = [], []
        for i, rgb in enumerate(rgbs):
            faces = self._detector.detect(rgb)
            if faces:
                chips.append(self._embedder.chips(rgb, [nearest_centre(faces, rgb.shape)])[0])
                where.append(i)
        if chips:
            for i, e in zip(where, self._embedder.embed(np.stack(chips)), strict=True):
                out[i] = e
        return out


def make_encoder(model: str, mirror: bool = True, detector: str | None = None) -> PhotoEncoder:
    """Plain SFace on YuNet: the evaluated SFace configuration (SFaceEncoder); anything else: the kiosk's own
    detector and embedder (KioskEncoder)."""
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
    if model == "sface" and not mirror and detector in (None, "yunet"):
        return SFaceEncoder()
    return KioskEncoder(model, mirror, detector)
