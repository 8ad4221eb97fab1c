"""Embedding back-end on ONNX Runtime: our conversion of dlib's ResNet, same descriptors, much faster.

The .onnx is checked against models/manifest.toml on every load (and built from the installed dlib
.dat if it is missing), so it computes the same function of the same weights as DlibEmbedder and
shares its model_id: templates and calibration work with either back-end.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edge.modelbuild import ModelError
from edge.modelbuild.manifest import load_verified, model_folders
from edge.modelbuild.modelfiles import FACE_RECOGNITION_DAT, model_id_for
from edge.recognition.embed.base import CHIP_SIZE, EMBEDDING_DIM, FaceLike, check_chips

log = logging.getLogger(__name__)

#: faces per session run; bounds the memory of one run (about 10 MB of activations per face)
MAX_BATCH = 32


def session_options(threads: int = 0, *, spin: bool = False) -> ort.SessionOptions:
    so = ort.SessionOptions()
    # threads == 0: ONNX Runtime's default, one per physical core
    so.intra_op_num_threads = max(0, int(threads))
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # ENABLE_ALL adds the NCHWc blocked layout on AVX2/AVX-512 and fuses conv+add+relu
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # The daemon embeds a face now and then between HOG detections on the same 2 cores: worker
    # threads spinning while idle would steal the detector's CPU for no gain.
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    so.log_severity_level = 3
    return so


def open_session(data: bytes, threads: int, *, spin: bool, where: object) -> ort.InferenceSession:
    """An embedding network on the CPU provider; `where` names the file in the error when it does not load."""
    try:
        return ort.InferenceSession(data, session_options(threads, spin=spin), ["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types from C++
        raise ModelError(f"{where}: onnxruntime cannot load it: {e}") from e


def embed_batched(session: ort.InferenceSession, chips: np.ndarray) -> np.ndarray:
    """Checked uint8 [n, h, w, 3] chips -> the network's float32 [n, EMBEDDING_DIM] output, MAX_BATCH at a time
    (NCHW float, as both embedding networks take it)."""
    n = len(chips)
    out = np.empty((n, EMBEDDING_DIM), np.float32)
    name = session.get_inputs()[0].name
    for i in range(0, n, MAX_BATCH):
        x = chips[i : i + MAX_BATCH].transpose(0, 3, 1, 2).astype(np.float32)
        out[i : i + len(x)] = session.run(None, {name: x})[0]
    return out


class OnnxEmbedder:
    name = "onnx"
    chip_size = CHIP_SIZE

    def chips(self, rgb: np.ndarray, faces: Sequence[FaceLike]) -> np.ndarray:
        from edge.recognition.detect import Face, dlib_chips

        return dlib_chips(rgb, [Face(f.box, f.landmarks, 0.0, f.scheme) for f in faces])

    def __init__(
        self,
        *,
        threads: int = 0,
        models_dir: Path | None = None,
        onnx_dir: Path | None = None,
        dat: Path = FACE_RECOGNITION_DAT,
        build_missing: bool = True,
        warmup: bool = True,
        spin: bool = False,
    ) -> None:
        # the shipped manifest and the .onnx in the state folder, unless a models folder is named (holding both)
        manifest_dir, onnx_dir = model_folders(models_dir, onnx_dir)
        data, manifest = load_verified(manifest_dir, Path(dat), build_missing=build_missing, onnx_dir=onnx_dir)
        self._session = open_session(data, threads, spin=spin, where=onnx_dir / manifest.file)
        self.threads = threads or (os.cpu_count() or 1)
        self.model_id = model_id_for(Path(dat))
        self.manifest = manifest
        if warmup:
            # the first run allocates buffers and picks kernels; do it now, not on the first senior
            self.embed(np.zeros((1, 150, 150, 3), np.uint8))

    def embed(self, chips: np.ndarray) -> np.ndarray:
        return embed_batched(self._session, check_chips(chips))
