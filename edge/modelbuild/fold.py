"""Folding OpenCV Zoo's block-quantised ONNX graphs (edge/modelbuild/zoo.py) to plain fp32, and checking the result.

`fold()` computes every weight once, offline: each DequantizeLinear (and the Reshape after it) whose
inputs are all constants becomes a float32 initializer, exactly `(q - zero_point) * scale` as the ONNX
spec defines it. Nothing else in the graph changes. The declared inputs that no node reads are dropped,
the batch (SFace) and frame size (YuNet) become symbolic, and the file is written at opset 17 / IR 8 so
onnxruntime from 1.14 on and OpenCV's DNN module load it. `check_equivalence()` runs the original,
quantised graph with the ONNX reference implementation (independent of our numpy) and the folded one
with onnxruntime, on the same input, and compares them. Why fold at all: edge/modelbuild/sface.py.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edge.modelbuild import ModelError
from edge.modelbuild.zoo import SOURCE_PACKAGE, SOURCE_VERSION, ZooModel

#: bump when fold() changes (the folded files' sha256 change with it)
FOLDER_VERSION = "1"
OPSET = 17
IR_VERSION = 8
#: written into every folded file (its sha256 is pinned): the module's old name, kept
PRODUCER = "meal-edge edge.modelbuild.sface"


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
