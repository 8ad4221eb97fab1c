"""The ONNX back-end computes dlib's descriptor: parity on real LFW faces (issue 3 acceptance).

The full >= 500-image run is `python bench/parity_onnx.py`; this is the same check on a small sample.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from edge.modelbuild.manifest import MANIFEST_NAME, ONNX_NAME, read_manifest
from edge.paths import PROJECT_MODELS_DIR
from edge.recognition.detect import Detector, load_image
from edge.recognition.embed.dlib_backend import DlibEmbedder
from edge.recognition.embed.onnx_backend import MAX_BATCH, OnnxEmbedder

SHARED = Path(os.environ.get("MEAL_EDGE_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
LFW = SHARED / "data" / "faces" / "lfw_deepfunneled"
PEOPLE = ["Colin_Powell", "George_W_Bush", "Jennifer_Aniston", "Serena_Williams", "Junichiro_Koizumi", "Hugo_Chavez"]
PER_PERSON = 4

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def chips() -> tuple[np.ndarray, np.ndarray]:
    if not LFW.is_dir():
        pytest.skip(f"../shared/data/faces/lfw_deepfunneled not found: {LFW} (set MEAL_EDGE_SHARED)")
    det = Detector(upsample=1)
    out, ident = [], []
    for i, person in enumerate(PEOPLE):
        photos = sorted((LFW / person).glob("*.jpg"))[:PER_PERSON]
        if len(photos) < 2:
            pytest.skip(f"{LFW / person}: expected several photos of {person}")
        for p in photos:
            rgb = load_image(p)
            faces = det.detect(rgb)
            if faces:
                h, w = rgb.shape[:2]
                f = min(
                    faces, key=lambda f: abs((f.box[1] + f.box[3]) / 2 - w / 2) + abs((f.box[0] + f.box[2]) / 2 - h / 2)
                )
                out.append(det.chips(rgb, [f])[0])
                ident.append(i)
    assert len(out) >= 20, "too few faces found in the LFW sample"
    return np.stack(out), np.array(ident)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The committed manifest alone: the .onnx is built from the installed .dat on first use."""
    manifest = PROJECT_MODELS_DIR / MANIFEST_NAME
    if not manifest.exists():
        pytest.fail(f"{manifest} missing: run `meal-edge models build`")
    d = tmp_path_factory.mktemp("models")
    shutil.copyfile(manifest, d / MANIFEST_NAME)
    return d


@pytest.fixture(scope="module")
def onnx_emb(models_dir: Path) -> OnnxEmbedder:
    emb = OnnxEmbedder(models_dir=models_dir, threads=2)
    assert (models_dir / ONNX_NAME).exists()
    return emb


def _pairs(e: np.ndarray) -> np.ndarray:
    e = e.astype(np.float64)
    i, j = np.triu_indices(len(e), 1)
    return np.linalg.norm(e[i] - e[j], axis=1)


def test_descriptors_match_dlib_on_real_faces(chips: tuple[np.ndarray, np.ndarray], onnx_emb: OnnxEmbedder) -> None:
    x, ident = chips
    ref = DlibEmbedder().embed(x)
    got = onnx_emb.embed(x)
    assert got.shape == ref.shape == (len(x), 128) and got.dtype == np.float32
    cos = np.sum(ref * got, axis=1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
    assert cos.min() >= 0.9999
    assert np.linalg.norm(ref - got, axis=1).max() <= 0.01
    assert np.abs(_pairs(ref) - _pairs(got)).max() <= 0.005
    # and the sample is a real recognition problem, so the parity is not between two constant outputs
    i, j = np.triu_indices(len(x), 1)
    d = _pairs(got)
    same = ident[i] == ident[j]
    assert np.median(d[same]) < 0.5 < np.median(d[~same])


def test_batching_does_not_change_descriptors(chips: tuple[np.ndarray, np.ndarray], onnx_emb: OnnxEmbedder) -> None:
    x, _ = chips
    one_by_one = np.concatenate([onnx_emb.embed(c) for c in x[:5]])
    big = np.concatenate([x] * (MAX_BATCH // len(x) + 2))[: MAX_BATCH + 7]  # spans two session runs
    batched = onnx_emb.embed(big)
    np.testing.assert_allclose(batched[:5], one_by_one, atol=1e-5)
    np.testing.assert_allclose(batched[len(x) : len(x) + 5], one_by_one, atol=1e-5)
    assert onnx_emb.embed(x[:0]).shape == (0, 128)


def test_model_runs_by_its_contract_alone(chips: tuple[np.ndarray, np.ndarray], models_dir: Path) -> None:
    """Anyone with onnxruntime and the manifest can use the file: NCHW float32 RGB 0..255 in, descriptor out."""
    import onnxruntime as ort

    x, _ = chips
    m = read_manifest(models_dir)
    c = m.contract
    sess = ort.InferenceSession(str(models_dir / m.file), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == [c["input_name"]]
    assert [o.name for o in sess.get_outputs()] == [c["output_name"]]
    assert list(sess.get_inputs()[0].shape) == c["input_shape"]
    out = sess.run([c["output_name"]], {c["input_name"]: x[:3].transpose(0, 3, 1, 2).astype(np.float32)})[0]
    np.testing.assert_allclose(out, DlibEmbedder().embed(x[:3]), atol=1e-4)
