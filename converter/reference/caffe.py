"""Caffe reference: runs a deploy prototxt + caffemodel without the Caffe runtime.

No Caffe build exists here, so two independent implementations stand in for it:

1. **caffe2onnx + onnxruntime** (a third-party converter). It runs in a SUBPROCESS
   with ``PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python`` (its generated protobuf code
   needs the pure-Python backend; liteconv's own process keeps the fast one). It is
   used when every active layer is in :data:`CAFFE2ONNX_LAYERS` — layer types and
   parameter forms for which its ONNX matches Caffe (checked in
   tests/parsers/test_caffe_nets.py). Its tensor names (``<top>_input`` inputs,
   an in-place layer's output named after the layer) are mapped back to Caffe top names.
2. **NumPy** (:class:`NumpyNet`, this module): a direct, loop-based transcription of the
   Caffe layer forward passes (``caffe/src/caffe/layers/*.cpp``), written for
   verification only and sharing no code with the front end. Used for every other net,
   and when the caffe2onnx subprocess fails.

Outputs are keyed by Caffe top name: the blobs no later layer reads, exactly the
front end's graph outputs. :func:`param_shapes` gives the blob shapes each layer
expects; test-model generators use it to write matching caffemodels.
"""

from __future__ import annotations

import logging
import math
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from converter.errors import ConvertError

__all__ = ["CAFFE2ONNX_LAYERS", "NumpyNet", "net_outputs", "param_shapes", "run", "run_all"]

logger = logging.getLogger(__name__)

Array = np.ndarray
Shape = tuple[int, ...]


def run(
    source: str | Path,
    feeds: Mapping[str, np.ndarray],
    threads: int = 2,
    weight_file: str | os.PathLike | None = None,
    **options: Any,
) -> dict[str, np.ndarray]:
    """Outputs of the Caffe net ``source`` with weights ``weight_file`` on ``feeds``.

    ``options["engine"]`` forces ``"numpy"`` or ``"caffe2onnx"``.
    """
    from parsers.caffe.proto import read_caffemodel, read_prototxt

    if weight_file is None:
        raise ConvertError("the Caffe reference needs the .caffemodel (--weightFile)")
    net = read_prototxt(source)
    weights = read_caffemodel(weight_file)
    engine = options.get("engine") or ("caffe2onnx" if caffe2onnx_supports(net) else "numpy")
    if engine == "caffe2onnx":
        try:
            return run_caffe2onnx(net, Path(source), Path(weight_file), feeds, threads)
        except _Caffe2OnnxFailed as exc:
            if options.get("engine"):
                raise ConvertError(f"caffe2onnx reference failed: {exc}") from None
            logger.warning("caffe2onnx reference failed (%s); using the NumPy reference", exc)
    blobs = {layer.name: [_blob(b) for b in layer.blobs] for layer in _all_layers(weights)}
    return NumpyNet(net, blobs).forward(feeds)


def run_all(
    source: str | Path,
    feeds: Mapping[str, np.ndarray],
    threads: int = 2,
    weight_file: str | os.PathLike | None = None,
    **_: Any,
) -> dict[str, np.ndarray]:
    """Every blob value of the net, named as :mod:`parsers.caffe.net` names IR values.

    Runs the NumPy reference (:meth:`NumpyNet.forward_named`): a blob rewritten in place
    keeps each of its values under the front end's name (``<top>/<layer>``).
    """
    from parsers.caffe.proto import read_caffemodel, read_prototxt

    if weight_file is None:
        raise ConvertError("the Caffe reference needs the .caffemodel (--weightFile)")
    net = read_prototxt(source)
    weights = read_caffemodel(weight_file)
    blobs = {layer.name: [_blob(b) for b in layer.blobs] for layer in _all_layers(weights)}
    return NumpyNet(net, blobs).forward_named(feeds)


def _all_layers(model: Any) -> list[Any]:
    return list(model.layer) + list(model.layers)


def _blob(b: Any) -> Array:
    shape = tuple(b.shape.dim) if len(b.shape.dim) else (b.num, b.channels, b.height, b.width)
    data = b.data if len(b.data) else b.double_data
    return np.asarray(data, np.float32).reshape(shape)


def _active(layer: Any) -> bool:
    def test_phase(rule: Any) -> bool:
        return not rule.HasField("phase") or rule.phase == 1

    if len(layer.include):
        return any(test_phase(r) for r in layer.include)
    return not any(test_phase(r) for r in layer.exclude)


def _layers(net: Any) -> list[Any]:
    return [layer for layer in net.layer if _active(layer)]


def net_outputs(net: Any) -> list[str]:
    """Blobs produced by a layer and read by no later one, in production order."""
    available: list[str] = []
    for layer in _layers(net):
        if layer.type == "Input":
            continue
        available = [b for b in available if b not in set(layer.bottom) | set(layer.top)]
        available += list(layer.top)
    return available


# ======================================================================================
# caffe2onnx in a subprocess
# ======================================================================================
class _Caffe2OnnxFailed(Exception):
    pass


#: Layer types whose caffe2onnx lowering matches Caffe, given the parameter checks of
#: :func:`caffe2onnx_supports`. Left out on purpose (checked against the NumPy
#: reference): LRN with k != 1 (caffe2onnx drops k), padded or AVE windowed Pooling
#: (it pads explicitly and loses Caffe's last-window rule), PReLU (wrong broadcast),
#: Eltwise coefficients, Split, Interp (division by zero).
CAFFE2ONNX_LAYERS = frozenset(
    {"Input", "Convolution", "InnerProduct", "ReLU", "Sigmoid", "TanH", "Softmax", "Concat",
     "Eltwise", "Dropout", "BatchNorm", "Scale", "LRN", "Pooling", "Permute", "Flatten",
     "Reshape"}
)  # fmt: skip


def caffe2onnx_supports(net: Any) -> bool:
    """True when every active layer is one caffe2onnx converts faithfully."""
    layers = _layers(net)
    inputs = [layer for layer in layers if layer.type == "Input"]
    if len(net.input) + len(inputs) != 1 or not layers:
        return False
    if inputs and (layers[0].type != "Input" or len(inputs[0].top) != 1):
        return False
    return all(layer.type in CAFFE2ONNX_LAYERS and _c2o_params_ok(layer) for layer in layers)


def _c2o_params_ok(layer: Any) -> bool:
    t = layer.type
    if t == "Eltwise":
        return not len(layer.eltwise_param.coeff)
    if t == "ReLU":
        return layer.relu_param.negative_slope == 0
    if t == "InnerProduct":
        p = layer.inner_product_param
        return p.axis == 1 and not p.transpose
    if t == "Scale":
        return len(layer.bottom) == 1 and layer.scale_param.axis == 1
    if t == "Softmax":
        return layer.softmax_param.axis in (1, 2)
    if t == "LRN":
        return layer.lrn_param.k == 1 and layer.lrn_param.norm_region == 0
    if t == "BatchNorm":
        p = layer.batch_norm_param
        return not p.HasField("use_global_stats") or p.use_global_stats
    if t == "Pooling":
        p = layer.pooling_param
        no_pad = p.pad == 0 and p.pad_h == 0 and p.pad_w == 0
        return p.global_pooling or (p.pool == 0 and no_pad and p.round_mode == 0)
    return True


_DRIVER = """
import sys, onnx
from google.protobuf import text_format
from caffe2onnx.proto import caffe_upsample_pb2 as pb
from caffe2onnx.src.caffe2onnx import Caffe2Onnx
net = pb.NetParameter(); text_format.Merge(open(sys.argv[1]).read(), net)
model = pb.NetParameter(); model.ParseFromString(open(sys.argv[2], "rb").read())
m = Caffe2Onnx(net, model, sys.argv[3]).createOnnxModel()
del m.opset_import[:]
m.opset_import.add(domain="", version=11)
m.ir_version = 6
onnx.save(m, sys.argv[3])
"""


def _caffe2onnx_names(net: Any) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """caffe2onnx's (input name, Caffe top) pairs and, per top, the ONNX name of its value."""
    inputs: list[tuple[str, str]] = [("input", name) for name in net.input]
    names: dict[str, str] = {name: "input" for name in net.input}
    for layer in _layers(net):
        if layer.type == "Input":
            top = layer.top[0]
            inputs.append((f"{top}_input", top))
            names[top] = f"{top}_input"
            continue
        in_place = list(layer.top) == list(layer.bottom) and len(layer.top) == 1
        for top in layer.top:
            names[top] = layer.name if in_place else top
    return inputs, names


def run_caffe2onnx(
    net: Any, prototxt: Path, caffemodel: Path, feeds: Mapping[str, Array], threads: int
) -> dict[str, Array]:
    import onnx
    import onnxruntime as ort

    inputs, names = _caffe2onnx_names(net)
    env = dict(os.environ, PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION="python")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "net.onnx"
        cmd = [sys.executable, "-c", _DRIVER, str(prototxt), str(caffemodel), str(out)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        if proc.returncode != 0 or not out.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise _Caffe2OnnxFailed(tail[0])
        model = onnx.load(out)
    wanted = net_outputs(net)
    present = {o.name for o in model.graph.output}
    for top in wanted:
        if names.get(top) not in present:
            model.graph.output.add(name=names[top])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(model.SerializeToString(), opts, ["CPUExecutionProvider"])
        fetch = [names[t] for t in wanted]
        ort_feeds = {name: np.asarray(feeds[top], np.float32) for name, top in inputs}
        results = sess.run(fetch, ort_feeds)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises assorted error types
        raise _Caffe2OnnxFailed(str(exc).splitlines()[0]) from None
    return dict(zip(wanted, results, strict=True))


# ======================================================================================
# NumPy reference
# ======================================================================================
def _hw(values: Any, h: Any, w: Any, has_hw: bool, default: int) -> tuple[int, int]:
    if has_hw:
        return int(h), int(w)
    vals = [int(v) for v in values] or [default]
    return (vals[0], vals[-1]) if len(vals) <= 2 else (vals[0], vals[1])


def _conv_params(p: Any) -> dict[str, tuple[int, int]]:
    return {
        "k": _hw(p.kernel_size, p.kernel_h, p.kernel_w, p.HasField("kernel_h"), 0),
        "s": _hw(p.stride, p.stride_h, p.stride_w, p.HasField("stride_h"), 1),
        "p": _hw(p.pad, p.pad_h, p.pad_w, p.HasField("pad_h"), 0),
        "d": _hw(p.dilation, 0, 0, False, 1),
    }


def param_shapes(layer: Any, bottoms: list[Shape]) -> list[Shape]:
    """The shapes of the blobs ``layer`` reads from the caffemodel (Caffe's LayerSetUp)."""
    t = layer.type
    if t in ("Convolution", "Deconvolution"):
        p = layer.convolution_param
        g = _conv_params(p)
        cin, cout, group = bottoms[0][1], int(p.num_output), int(p.group)
        w = (cin, cout // group, *g["k"]) if t == "Deconvolution" else (cout, cin // group, *g["k"])
        return [w, (cout,)] if p.bias_term else [w]
    if t == "InnerProduct":
        p = layer.inner_product_param
        axis = p.axis % len(bottoms[0])
        k, n = math.prod(bottoms[0][axis:]), int(p.num_output)
        w = (k, n) if p.transpose else (n, k)
        return [w, (n,)] if p.bias_term else [w]
    if t == "BatchNorm":
        c = bottoms[0][1]
        return [(c,), (c,), (1,)]
    if t in ("Scale", "Bias"):
        p = layer.scale_param if t == "Scale" else layer.bias_param
        if len(bottoms) > 1:
            return [tuple(bottoms[1])] if t == "Scale" and p.bias_term else []
        axis = p.axis % len(bottoms[0])
        end = len(bottoms[0]) if p.num_axes == -1 else axis + p.num_axes
        shape = tuple(bottoms[0][axis:end])
        return [shape, shape] if t == "Scale" and p.bias_term else [shape]
    if t == "PReLU":
        return [(1,) if layer.prelu_param.channel_shared else (bottoms[0][1],)]
    return []


class NumpyNet:
    """Caffe's forward pass, layer by layer, in NumPy (float32 data, float64 sums)."""

    def __init__(self, net: Any, blobs: Mapping[str, list[Array]]) -> None:
        self.net = net
        self.blobs = blobs

    def input_shapes(self) -> dict[str, Shape]:
        shapes: dict[str, Shape] = {}
        dims = list(self.net.input_dim)
        for i, name in enumerate(self.net.input):
            if i < len(self.net.input_shape):
                shapes[name] = tuple(self.net.input_shape[i].dim)
            else:
                shapes[name] = tuple(dims[4 * i : 4 * i + 4])
        for layer in _layers(self.net):
            if layer.type == "Input":
                sh = list(layer.input_param.shape)
                for j, top in enumerate(layer.top):
                    shapes[top] = tuple((sh[j] if j < len(sh) else sh[0]).dim)
        return shapes

    def forward(
        self, feeds: Mapping[str, Array], keep_all: bool = False, on_layer: Callable | None = None
    ) -> dict[str, Array]:
        env: dict[str, Array] = {k: np.asarray(v, np.float32) for k, v in feeds.items()}
        for layer in _layers(self.net):
            if layer.type in ("Input", "Silence"):
                continue
            fn = _FORWARD.get(layer.type)
            if fn is None:
                raise ConvertError(f"the NumPy Caffe reference has no {layer.type} layer")
            xs = [env[b] for b in layer.bottom]
            if on_layer is not None:
                on_layer(layer, xs)
            params = list(self.blobs.get(layer.name, []))
            outs = fn(layer, xs, params)
            for top, y in zip(layer.top, outs, strict=True):
                env[top] = np.asarray(y, np.float32)
        if keep_all:
            return env
        return {name: env[name] for name in net_outputs(self.net)}

    def forward_named(self, feeds: Mapping[str, Array]) -> dict[str, Array]:
        """Every value of every blob, keyed the way the front end names IR values.

        An in-place layer's result takes the top name and the value it overwrote becomes
        ``<top>/<its producing layer>``; in place on a net input, the input keeps its
        name and each result is ``<top>/<layer>``.
        """
        env: dict[str, Array] = {k: np.asarray(v, np.float32) for k, v in feeds.items()}
        named = dict(env)
        current = {k: k for k in env}  # blob -> name of the value it holds now
        producer: dict[str, str | None] = dict.fromkeys(env)
        for layer in _layers(self.net):
            if layer.type in ("Input", "Silence"):
                continue
            fn = _FORWARD.get(layer.type)
            if fn is None:
                raise ConvertError(f"the NumPy Caffe reference has no {layer.type} layer")
            outs = fn(layer, [env[b] for b in layer.bottom], list(self.blobs.get(layer.name, [])))
            for top, y in zip(layer.top, outs, strict=True):
                env[top] = y = np.asarray(y, np.float32)
                old, made_by = current.get(top), producer.get(top)
                name = top
                if old is not None and (made_by is None or old != top):
                    name = f"{top}/{layer.name}"
                elif old is not None:
                    named[f"{top}/{made_by}"] = named.pop(top)
                named[name] = y
                current[top], producer[top] = name, layer.name
        return named


_FORWARD: dict[str, Callable[[Any, list[Array], list[Array]], list[Array]]] = {}


def _layer(*types: str) -> Callable:
    def register(fn: Callable) -> Callable:
        for t in types:
            _FORWARD[t] = fn
        return fn

    return register


def _pad_hw(x: Array, ph: int, pw: int, value: float = 0.0) -> Array:
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=value)


@_layer("Convolution", "ConvolutionDepthwise")
def _conv(layer: Any, xs: list[Array], params: list[Array]) -> list[Array]:
    p = layer.convolution_param
    g = _conv_params(p)
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = g["k"], g["s"], g["p"], g["d"]
    x = _pad_hw(xs[0].astype(np.float64), ph, pw)
    n, cin, hp, wp = x.shape
    cout = int(p.num_output)
    group = cin if layer.type == "ConvolutionDepthwise" else int(p.group)
    w = params[0].astype(np.float64).reshape(cout, cin // group, kh, kw)
    oh = (hp - (dh * (kh - 1) + 1)) // sh + 1
    ow = (wp - (dw * (kw - 1) + 1)) // sw + 1
    y = np.zeros((n, cout, oh, ow))
    ci, co = cin // group, cout // group
    for gi in range(group):
        xg = x[:, gi * ci : (gi + 1) * ci]
        wg = w[gi * co : (gi + 1) * co]
        for i in range(kh):
            for j in range(kw):
                patch = xg[:, :, i * dh : i * dh + sh * (oh - 1) + 1 : sh,
                           j * dw : j * dw + sw * (ow - 1) + 1 : sw]  # fmt: skip
                y[:, gi * co : (gi + 1) * co] += np.einsum("nchw,oc->nohw", patch, wg[:, :, i, j])
    if p.bias_term:
        y += params[1].reshape(1, cout, 1, 1)
    return [y]


@_layer("Deconvolution")
def _deconv(layer: Any, xs: list[Array], params: list[Array]) -> list[Array]:
    p = layer.convolution_param
    g = _conv_params(p)
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = g["k"], g["s"], g["p"], g["d"]
    x = xs[0].astype(np.float64)
    n, cin, h, w_ = x.shape
    cout, group = int(p.num_output), int(p.group)
    ci, co = cin // group, cout // group
    wt = params[0].astype(np.float64).reshape(cin, co, kh, kw)
    fh, fw = (h - 1) * sh + dh * (kh - 1) + 1, (w_ - 1) * sw + dw * (kw - 1) + 1
    full = np.zeros((n, cout, fh, fw))
    for gi in range(group):
        xg = x[:, gi * ci : (gi + 1) * ci]
        for i in range(kh):
            for j in range(kw):
                contrib = np.einsum("nchw,co->nohw", xg, wt[gi * ci : (gi + 1) * ci, :, i, j])
                full[:, gi * co : (gi + 1) * co,
                     i * dh : i * dh + sh * (h - 1) + 1 : sh,
                     j * dw : j * dw + sw * (w_ - 1) + 1 : sw] += contrib  # fmt: skip
    y = full[:, :, ph : fh - ph, pw : fw - pw]
    if p.bias_term:
        y = y + params[1].reshape(1, cout, 1, 1)
    return [y]


@_layer("InnerProduct")
def _inner_product(layer: Any, xs: list[Array], params: list[Array]) -> list[Array]:
    p = layer.inner_product_param
    x = xs[0].astype(np.float64)
    axis = p.axis % x.ndim
    flat = x.reshape(*x.shape[:axis], -1)
    w = params[0].astype(np.float64).reshape(-1, flat.shape[-1]) if not p.transpose else None
    y = flat @ (params[0].astype(np.float64).reshape(flat.shape[-1], -1) if w is None else w.T)
    if p.bias_term:
        y = y + params[1].reshape(-1)
    return [y]


@_layer("Pooling")
def _pool(layer: Any, xs: list[Array], params: list[Array]) -> list[Array]:
    p = layer.pooling_param
    x = xs[0].astype(np.float64)
    n, c, h, w = x.shape
    if p.global_pooling:
        red = np.max if p.pool == 0 else np.mean
        return [red(x, axis=(2, 3), keepdims=True)]
    kh, kw = (p.kernel_h, p.kernel_w) if p.HasField("kernel_h") else (p.kernel_size,) * 2
    sh, sw = (p.stride_h, p.stride_w) if p.HasField("stride_h") else (p.stride,) * 2
    ph, pw = (p.pad_h, p.pad_w) if p.HasField("pad_h") else (p.pad,) * 2
    rnd = math.ceil if p.round_mode == 0 else math.floor
    oh = int(rnd((h + 2 * ph - kh) / sh)) + 1
    ow = int(rnd((w + 2 * pw - kw) / sw)) + 1
    if ph or pw:
        if (oh - 1) * sh >= h + ph:
            oh -= 1
        if (ow - 1) * sw >= w + pw:
            ow -= 1
    y = np.zeros((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            hs, ws = i * sh - ph, j * sw - pw
            he, we = min(hs + kh, h + ph), min(ws + kw, w + pw)
            size = (he - hs) * (we - ws)
            hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
            window = x[:, :, hs:he, ws:we]
            if p.pool == 0:
                y[:, :, i, j] = window.max(axis=(2, 3))
            else:
                y[:, :, i, j] = window.sum(axis=(2, 3)) / size
    return [y]


@_layer("ReLU")
def _relu(layer: Any, xs: list[Array], params: list[Array]) -> list[Array]:
    x = xs[0]
    return [np.where(x > 0, x, x * layer.relu_param.negative_slope)]


@_layer("ReLU6")
def _relu6(layer: Any, xs: list[Array], params: list[Array]) -> list[Array]:
    return [np.minimum(np.maximum(xs[0], 0), 6)]


@_layer("Clip")
def _clip_layer(layer: Any, xs: list[Array], params: list[Array]) -> list[Array]:
    return [np.minimum(np.maximum(xs[0], layer.clip_param.min), layer.clip_param.max)]


@_layer("PReLU")
def _prelu(layer: Any, xs: list[Array], params: list[Array]) -> list[Array]:
    x = xs[0]
    slope = params[0].reshape(-1)
    if not layer.prelu_param.channel_shared:
        slope = slope.reshape([1, -1] + [1] * (x.ndim - 2))
    return [np.where(x > 0, x, x * slope)]


@_layer("ELU")
def _elu(layer: Any, xs: list[Array], params: list[Array]) -> list[Array]:
    x = xs[0].astype(np.float64)
    return [np.where(x > 0, x, layer.elu_param.alpha * (np.exp(np.minimum(x, 0)) - 1))]


_SIMPLE = {
    "Sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "TanH": np.tanh,
    "AbsVal": np.abs,
    "BNLL": lambda x: np.where(x > 0, x + np.log1p(np.exp(-np.abs(x))), np.log1p(np.exp(x))),
}
for _name, _f in _SIMPLE.items():
    _FORWARD[_name] = lambda layer, xs, params, f=_f: [f(xs[0].astype(np.float64))]


@_layer("Swish")
def _swish(layer: Any, xs: list[Array], params: list[Array]) -> list[Array]:
    x = xs[0].astype(np.float64)
    return [x / (1 + np.exp(-layer.swish_param.beta * x))]


@_layer("Threshold")
def _threshold(layer: Any, xs: list[Array], params: list[Array]) -> list[Array]:
    return [(xs[0] > layer.threshold_param.threshold).astype(np.float32)]


@_layer("Power")
def _power(layer: Any, xs: list[Array], params: list[Array]) -> list[Array]:
    p = layer.power_param
    return [np.power(p.shift + p.scale * xs[0].astype(np.float64), p.power)]


@_layer("Exp")
def _exp(layer: Any, xs: list[Array], params: list[Array]) -> list[Array]:
    p = layer.exp_param
    z = p.shift + p.scale * xs[0].astype(np.float64)
    return [np.exp(z) if p.base == -1 else np.power(p.base, z)]


@_layer("Log")
def _log(layer: Any, xs: list[Array], params: list[Array]) -> list[Array]:
    p = layer.log_param
    y = np.log(p.shift + p.scale * xs[0].astype(np.float64))
    return [y if p.base == -1 else y / np.log(p.base)]


@_layer("Dropout", "Split")
def _copy(layer: Any, xs: list[Array], params: list[Array]) -> list[Array]:
    return [xs[0].copy() for _ in layer.top]


@_layer("BatchNorm")
def _batch_norm(layer: Any, xs: list[Array], params: list[Array]) -> list[Array]:
    p = layer.batch_norm_param
    x = xs[0].astype(np.float64)
    bshape = [1, -1] + [1] * (x.ndim - 2)
    if p.HasField("use_global_stats") and not p.use_global_stats:
        axes = tuple(a for a in range(x.ndim) if a != 1)
        mean = x.mean(axis=axes, keepdims=True)
        var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    else:
        s = float(params[2].reshape(-1)[0])
        f = 0.0 if s == 0 else 1.0 / s
        mean = params[0].astype(np.float64).reshape(bshape) * f
        var = params[1].astype(np.float64).reshape(bshape) * f
    return [(x - mean) / np.sqrt(var + p.eps)]


def _bcast(x: Array, v: Array, axis: int, n_axes: int) -> Array:
    axis %= x.ndim
    return v.reshape([1] * axis + list(v.shape[:n_axes]) + [1] * (x.ndim - axis - n_axes))


def _second_operand(p: Any, xs: list[Array], params: list[Array]) -> tuple[Array, Array, int, int]:
    """Scale/Bias: (x, operand, axis, n_axes), the operand spanning x's axes [axis, axis+n_axes).

    The operand is the second bottom when there is one, else the first blob
    shaped as ``num_axes`` axes of x from ``axis`` (-1: through the last axis).
    """
    x = xs[0].astype(np.float64)
    axis = p.axis % x.ndim
    if len(xs) > 1:
        v = xs[1].astype(np.float64)
        n_axes = v.ndim
    else:
        n_axes = x.ndim - axis if p.num_axes == -1 else p.num_axes
        v = params[0].astype(np.float64).reshape(x.shape[axis : axis + n_axes])
    return x, v, axis, n_axes


@_layer("Scale")
def _scale(layer: Any, xs: list[Array], params: list[Array]) -> list[Array]:
    p = layer.scale_param
    x, scale, axis, n_axes = _second_operand(p, xs, params)
    y = x * _bcast(x, scale, axis, n_axes)
    if p.bias_term:
        bias = params[-1].astype(np.float64).reshape(x.shape[axis : axis + n_axes])
        y = y + _bcast(x, bias, axis, n_axes)
    return [y]


@_layer("Bias")
def _bias(layer: Any, xs: list[Array], params: list[Array]) -> list[Array]:
    x, b, axis, n_axes = _second_operand(layer.bias_param, xs, params)
    return [x + _bcast(x, b, axis, n_axes)]


@_layer("LRN")
def _lrn(layer: Any, xs: list[Array], params: list[Array]) -> list[Array]:
    p = layer.lrn_param
    x = xs[0].astype(np.float64)
    n, c, h, w = x.shape
    size, half = p.local_size, (p.local_size - 1) // 2
    sq = x * x
    if p.norm_region == 0:
        padded = np.pad(sq, ((0, 0), (half, half), (0, 0), (0, 0)))
        total = np.zeros_like(x)
        for ch in range(c):
            total[:, ch] = padded[:, ch : ch + size].sum(axis=1)
        return [x / np.power(p.k + p.alpha / size * total, p.beta)]
    padded = _pad_hw(sq, half, half)
    total = np.zeros_like(x)
    for i in range(h):
        for j in range(w):
            total[:, :, i, j] = padded[:, :, i : i + size, j : j + size].sum(axis=(2, 3))
    return [x * np.power(1 + p.alpha * total / (size * size), -p.beta)]


@_layer("Eltwise")
def _eltwise(layer: Any, xs: list[Array], params: list[Array]) -> list[Array]:
    p = layer.eltwise_param
    arrs = [x.astype(np.float64) for x in xs]
    if p.operation == 0:
        return [math.prod(arrs[1:], start=arrs[0])]
    if p.operation == 2:
        return [np.maximum.reduce(arrs)]
    coeffs = list(p.coeff) or [1.0] * len(arrs)
    return [sum(c * a for c, a in zip(coeffs, arrs, strict=True))]


@_layer("Concat")
def _concat(layer: Any, xs: list[Array], params: list[Array]) -> list[Array]:
    p = layer.concat_param
    axis = p.concat_dim if p.HasField("concat_dim") else p.axis
    return [np.concatenate(xs, axis=axis)]


@_layer("Slice")
def _slice(layer: Any, xs: list[Array], params: list[Array]) -> list[Array]:
    p = layer.slice_param
    axis = (p.slice_dim if p.HasField("slice_dim") else p.axis) % xs[0].ndim
    points = list(p.slice_point)
    if not points:
        step = xs[0].shape[axis] // len(layer.top)
        points = [step * i for i in range(1, len(layer.top))]
    return list(np.split(xs[0], points, axis=axis))


@_layer("Softmax")
def _softmax(layer: Any, xs: list[Array], params: list[Array]) -> list[Array]:
    x = xs[0].astype(np.float64)
    e = np.exp(x - x.max(axis=layer.softmax_param.axis, keepdims=True))
    return [e / e.sum(axis=layer.softmax_param.axis, keepdims=True)]


@_layer("Flatten")
def _flatten(layer: Any, xs: list[Array], params: list[Array]) -> list[Array]:
    x = xs[0]
    a, b = layer.flatten_param.axis % x.ndim, layer.flatten_param.end_axis % x.ndim
    return [x.reshape(*x.shape[:a], -1, *x.shape[b + 1 :])]


@_layer("Reshape")
def _reshape(layer: Any, xs: list[Array], params: list[Array]) -> list[Array]:
    p = layer.reshape_param
    x = xs[0]
    start = p.axis if p.axis >= 0 else x.ndim + p.axis + 1
    end = x.ndim if p.num_axes == -1 else start + p.num_axes
    dims = [x.shape[start + i] if d == 0 else d for i, d in enumerate(p.shape.dim)]
    return [x.reshape(*x.shape[:start], *dims, *x.shape[end:])]


@_layer("Permute")
def _permute(layer: Any, xs: list[Array], params: list[Array]) -> list[Array]:
    order = list(layer.permute_param.order)
    order += [a for a in range(xs[0].ndim) if a not in order]
    return [np.transpose(xs[0], order)]


@_layer("Crop")
def _crop(layer: Any, xs: list[Array], params: list[Array]) -> list[Array]:
    p = layer.crop_param
    x, ref = xs
    axis = p.axis % x.ndim
    offs = list(p.offset)
    index = []
    for a in range(x.ndim):
        if a < axis:
            index.append(slice(None))
            continue
        o = 0 if not offs else (offs[0] if len(offs) == 1 else offs[a - axis])
        index.append(slice(o, o + ref.shape[a]))
    return [x[tuple(index)]]


@_layer("Interp")
def _interp(layer: Any, xs: list[Array], params: list[Array]) -> list[Array]:
    p = layer.interp_param
    x = xs[0].astype(np.float64)
    n, c, h1, w1 = x.shape
    if len(xs) > 1:
        h2, w2 = xs[1].shape[2:]
    elif p.HasField("shrink_factor") and not p.HasField("zoom_factor"):
        h2, w2 = (h1 - 1) // p.shrink_factor + 1, (w1 - 1) // p.shrink_factor + 1
    elif p.HasField("zoom_factor") and not p.HasField("shrink_factor"):
        h2, w2 = h1 + (h1 - 1) * (p.zoom_factor - 1), w1 + (w1 - 1) * (p.zoom_factor - 1)
    elif p.HasField("zoom_factor"):
        h2, w2 = (h1 - 1) // p.shrink_factor + 1, (w1 - 1) // p.shrink_factor + 1
        h2, w2 = h2 + (h2 - 1) * (p.zoom_factor - 1), w2 + (w2 - 1) * (p.zoom_factor - 1)
    else:
        h2, w2 = p.height, p.width
    # caffe_cpu_interp2
    rh = (h1 - 1) / (h2 - 1) if h2 > 1 else 0.0
    rw = (w1 - 1) / (w2 - 1) if w2 > 1 else 0.0
    y = np.zeros((n, c, h2, w2))
    for i in range(h2):
        r = rh * i
        a = int(r)
        ap = 1 if a < h1 - 1 else 0
        la = r - a
        for j in range(w2):
            s = rw * j
            b = int(s)
            bp = 1 if b < w1 - 1 else 0
            lb = s - b
            y[:, :, i, j] = (1 - la) * ((1 - lb) * x[:, :, a, b] + lb * x[:, :, a, b + bp]) + la * (
                (1 - lb) * x[:, :, a + ap, b] + lb * x[:, :, a + ap, b + bp]
            )
    return [y]


@_layer("Upsample")
def _upsample(layer: Any, xs: list[Array], params: list[Array]) -> list[Array]:
    s = int(layer.upsample_param.scale)
    return [np.repeat(np.repeat(xs[0], s, axis=2), s, axis=3)]


@_layer("ShuffleChannel")
def _shuffle(layer: Any, xs: list[Array], params: list[Array]) -> list[Array]:
    x = xs[0]
    g = layer.shuffle_channel_param.group
    n, c = x.shape[:2]
    return [x.reshape(n, g, c // g, *x.shape[2:]).swapaxes(1, 2).reshape(x.shape)]
