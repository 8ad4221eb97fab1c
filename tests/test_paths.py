"""Shipped files are package data, made files go to the state folder (edge/paths.py; the folder's defaults are
tested in test_config.py, the installed wheel in test_wheel.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge import paths
from edge.config import DEFAULT_CONFIG, parse_config
from edge.modelbuild.manifest import model_folders

REPO = Path(__file__).resolve().parent.parent


def test_the_checkouts_models_folder_is_the_shipped_one() -> None:
    # a development install maps the package edge.models onto the repository's models/, its source of truth
    assert paths.PROJECT_MODELS_DIR == REPO / "models"
    assert paths.checkout_models_dir() == REPO / "models"
    assert (paths.PROJECT_MODELS_DIR / "manifest.toml").is_file()


def test_an_installed_package_has_no_checkout_to_write_into(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site_models = tmp_path / "site-packages" / "edge" / "models"
    site_models.mkdir(parents=True)
    monkeypatch.setattr(paths, "PROJECT_MODELS_DIR", site_models)
    assert paths.checkout_models_dir() is None


def test_schemas_and_default_config_ship_as_package_data() -> None:
    schema = json.loads(paths.schema_text("events.schema.json"))
    assert schema == json.loads((REPO / "docs" / "events.schema.json").read_text())
    assert paths.default_config_text() == DEFAULT_CONFIG
    parse_config(DEFAULT_CONFIG)  # complete and valid as shipped


def test_the_model_is_built_into_the_state_folder_unless_a_models_folder_is_named(tmp_path: Path) -> None:
    assert model_folders() == (paths.PROJECT_MODELS_DIR, paths.default_state_dir() / "models")
    assert model_folders(onnx_dir=tmp_path) == (paths.PROJECT_MODELS_DIR, tmp_path)
    assert model_folders(tmp_path) == (tmp_path, tmp_path)


def test_models_build_writes_the_pinned_model_into_the_state_folder_and_leaves_the_manifest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import hashlib

    from edge.cli.main import main
    from edge.modelbuild.manifest import read_manifest

    manifest = paths.PROJECT_MODELS_DIR / "manifest.toml"
    before = manifest.read_bytes()
    cfg = tmp_path / "c.toml"
    cfg.write_text(DEFAULT_CONFIG.replace('state_dir = ""', 'state_dir = "state"'))
    assert main(["--config", str(cfg), "models", "build"]) == 0
    out = capsys.readouterr().out
    onnx = tmp_path / "state" / "models" / "dlib_face_recognition_resnet_model_v1.onnx"
    assert f"built {onnx} " in out and "(checked, unchanged)" in out
    assert hashlib.sha256(onnx.read_bytes()).hexdigest() == read_manifest(paths.PROJECT_MODELS_DIR).onnx_sha256
    assert manifest.read_bytes() == before
