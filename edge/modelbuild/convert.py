"""Parsed dlib layers -> ONNX graph (the same function of the same weights).

Model contract (also in models/manifest.toml and docs/models.md):
- one input `input`: float32 NCHW [batch, 3, 150, 150], RGB, pixel values 0..255 of the aligned
  face chip (dlib.get_face_chip(img, shape, size=150, padding=0.25));
- dlib's input normalisation is inside the graph: (x - mean_rgb) / 256;
- one output `descriptor`: float32 [batch, 128], the descriptor as dlib returns it (not normalised).

Graph choices, each checked against dlib on real faces (tests/test_onnx_parity.py):
- each `affine` (frozen batch-norm: per-channel scale and shift) is folded into the convolution
  before it: W' = W * gamma[o], b' = b * gamma[o] + beta[o]; that removes 29 element-wise passes;
- dlib pools without padding here and its output size is 1 + (n - window) // stride, as ONNX's
  floor mode; all windows lie inside the image so dlib's "mean of the clipped window" is ONNX's plain
  average;
- dlib's add_prev adds tensors of different shapes by zero-filling the smaller one at the end of each
  dimension (channels 32 -> 64 on a down-sampling block; 3x3 vs 4x4 maps in the 256-channel level):
  that is an explicit Pad before the Add;
- the export is deterministic: fixed names, no timestamps, weights computed elementwise.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edge.modelbuild.dlib_dat import (
    AddPrev,
    Affine,
    Conv,
    DlibNet,
    FcNoBias,
    InputRGB,
    Layer,
    Pool,
    Relu,
    Skip,
    Tag,
)

log = logging.getLogger(__name__)

INPUT_NAME = "input"
OUTPUT_NAME = "descriptor"
OPSET = 17
# IR 8 (onnx 1.10+, onnxruntime 1.10+) so anyone can load the file with an older runtime.
IR_VERSION = 8
PRODUCER = "meal-edge edge.modelbuild.convert"
#: bump when the graph construction changes (the manifest's onnx sha256 changes with it)
CONVERTER_VERSION = "1"


@dataclass
class _T:
    """A tensor in the graph under construction and its static shape (C, H, W); batch is dynamic."""

    name: str
    shape: tuple[int, int, int]


class _Graph:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def name(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}_{self._n}"

    def const(self, prefix: str, value: np.ndarray) -> str:
        n = self.name(prefix)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), n))
        return n

    def node(self, op: str, inputs: list[str], prefix: str, **attrs: Any) -> str:
        out = self.name(prefix)
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out


def _conv_out(n: int, k: int, s: int, p: int) -> int:
    return 1 + (n + 2 * p - k) // s


def fold_affine(conv: Conv, affine: Affine) -> Conv:
    """conv followed by per-channel y = gamma * x + beta, as one convolution."""
    g = affine.gamma.astype(np.float64)
    w = (conv.weight.astype(np.float64) * g[:, None, None, None]).astype(np.float32)
    b0 = conv.bias.astype(np.float64) if conv.bias is not None else np.zeros_like(g)
    b = (b0 * g + affine.beta.astype(np.float64)).astype(np.float32)
    return Conv(weight=w, bias=b, stride=conv.stride, padding=conv.padding, fused_relu=conv.fused_relu)


def _fold(layers: list[Layer]) -> list[Layer]:
    out: list[Layer] = []
    i = 0
    while i < len(layers):
        cur = layers[i]
        nxt = layers[i + 1] if i + 1 < len(layers) else None
        if isinstance(cur, Conv) and isinstance(nxt, Affine) and not cur.fused_relu:
            out.append(fold_affine(cur, nxt))
            i += 2
        else:
            out.append(cur)
            i += 1
    return out


def build_model(net: DlibNet, *, fold: bool = True, metadata: dict[str, str] | None = None) -> onnx.ModelProto:
    layers = list(net.layers)
    first = layers.pop(0)
    if not isinstance(first, InputRGB):
        raise ValueError("the network must start with its input layer")
    if fold:
        layers = _fold(layers)
    g = _Graph()
    h, w = first.size
    mean = g.const("rgb_mean", np.array(first.mean, np.float32).reshape(1, 3, 1, 1))
    # 1/256 is a power of two, so multiplying is bit-identical to dlib's division
    scale = g.const("inv_256", np.array(1.0 / 256.0, np.float32))
    x = g.node("Sub", [INPUT_NAME, mean], "centre")
    cur = _T(g.node("Mul", [x, scale], "normalised"), (3, h, w))
    tags: dict[int, _T] = {}

    for layer in layers:
        c, hh, ww = cur.shape
        if isinstance(layer, Conv):
            o, ci, kh, kw = layer.weight.shape
            if ci != c:
                raise ValueError(f"convolution expects {ci} channels, gets {c}")
            inputs = [cur.name, g.const("w", layer.weight)]
            if layer.bias is not None:
                inputs.append(g.const("b", layer.bias))
            (sy, sx), (py, px) = layer.stride, layer.padding
            name = g.node("Conv", inputs, "conv", kernel_shape=[kh, kw], strides=[sy, sx], pads=[py, px, py, px])
            cur = _T(name, (o, _conv_out(hh, kh, sy, py), _conv_out(ww, kw, sx, px)))
            if layer.fused_relu:
                cur = _T(g.node("Relu", [cur.name], "relu"), cur.shape)
        elif isinstance(layer, Affine):
            k = layer.gamma.size
            gamma = g.const("gamma", layer.gamma.reshape(1, k, 1, 1))
            beta = g.const("beta", layer.beta.reshape(1, k, 1, 1))
            cur = _T(g.node("Add", [g.node("Mul", [cur.name, gamma], "scale"), beta], "shift"), cur.shape)
        elif isinstance(layer, Relu):
            cur = _T(g.node("Relu", [cur.name], "relu"), cur.shape)
        elif isinstance(layer, Pool):
            if layer.kernel == (0, 0):
                op = "GlobalAveragePool" if layer.kind == "avg" else "GlobalMaxPool"
                cur = _T(g.node(op, [cur.name], "gpool"), (c, 1, 1))
            else:
                (kh, kw), (sy, sx), (py, px) = layer.kernel, layer.stride, layer.padding
                if (py, px) != (0, 0):
                    # dlib averages over the clipped window; ONNX would need count_include_pad=0 and
                    # the same centring: not needed for this network, so refuse rather than guess
                    raise ValueError("padded pooling is not supported by this converter")
                op = "MaxPool" if layer.kind == "max" else "AveragePool"
                name = g.node(op, [cur.name], "pool", kernel_shape=[kh, kw], strides=[sy, sx], pads=[0, 0, 0, 0])
                cur = _T(name, (c, _conv_out(hh, kh, sy, 0), _conv_out(ww, kw, sx, 0)))
        elif isinstance(layer, Tag):
            tags[layer.id] = cur
        elif isinstance(layer, Skip):
            cur = tags[layer.id]
        elif isinstance(layer, AddPrev):
            other = tags[layer.id]
            c2, h2, w2 = other.shape
            target = (max(c, c2), max(hh, h2), max(ww, w2))
            summed = g.node("Add", [_pad_to(g, cur, target), _pad_to(g, other, target)], "add")
            cur = _T(summed, target)
        elif isinstance(layer, FcNoBias):
            flat = g.node("Flatten", [cur.name], "flatten", axis=1)
            n_in = c * hh * ww
            if layer.weight.shape[0] != n_in:
                raise ValueError(f"fc expects {layer.weight.shape[0]} inputs, gets {n_in}")
            out = layer.weight.shape[1]
            cur = _T(g.node("MatMul", [flat, g.const("fc_w", layer.weight)], "fc"), (out, 1, 1))
        else:
            raise ValueError(f"unsupported layer {type(layer).__name__}")

    # rename the last node's output to the contract's name
    last = g.nodes[-1]
    last.output[0] = OUTPUT_NAME
    graph = helper.make_graph(
        g.nodes,
        "dlib_face_recognition_resnet_model_v1",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", 3, h, w])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", cur.shape[0]])],
        initializer=g.inits,
    )
    model = helper.make_model(
        graph,
        producer_name=PRODUCER,
        producer_version=CONVERTER_VERSION,
        opset_imports=[helper.make_opsetid("", OPSET)],
    )
    model.ir_version = IR_VERSION
    model.doc_string = (
        "dlib's face-recognition ResNet (dlib_face_recognition_resnet_model_v1), converted by meal-edge. "
        "Input 'input' float32 [batch,3,150,150] RGB 0..255 of the aligned face chip; "
        "output 'descriptor' float32 [batch,128], dlib's descriptor."
    )
    for key, value in sorted((metadata or {}).items()):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    return model


def _pad_to(g: _Graph, t: _T, target: tuple[int, int, int]) -> str:
    if t.shape == target:
        return t.name
    extra = [b - a for a, b in zip(t.shape, target, strict=True)]
    pads = g.const("pads", np.array([0, 0, 0, 0, 0, *extra], np.int64))
    return g.node("Pad", [t.name, pads], "zero_fill", mode="constant")


def serialize(model: onnx.ModelProto) -> bytes:
    # deterministic=True: map fields (none today) in a fixed order, so the same weights give the same bytes
    return model.SerializeToString(deterministic=True)
