"""Per-layer lowerings of the Caffe front end, keyed by Caffe layer type.

Each lowering reads ``ctx.layer`` (a ``caffe.LayerParameter``), its bottoms and blobs,
emits IR ops (ONNX semantics, NCHW data, Conv weights OIHW, ConvTranspose IOHW — the
layouts Caffe stores) and binds one value per top with ``ctx.set_results``.

Semantics that differ from the obvious ONNX op:

- Pooling: Caffe sizes outputs with ``ceil`` (``round_mode`` CEIL, the default) and drops
  a last window that would start at or beyond ``H + pad``. The output size is computed
  here and expressed with explicit (asymmetric) pads and ``ceil_mode=0``. AVE divides by
  the window clipped to ``[−pad, H + pad)``: ``count_include_pad=1`` when no window
  crosses ``H + pad``, else an explicit zero Pad of ``pad`` followed by
  ``count_include_pad=0``.
- BatchNorm: ``mean/s``, ``var/s`` with ``s`` the third blob (0 -> 0), then Scale (a
  separate layer) applies gamma/beta; ``use_global_stats: false`` normalizes with the
  batch statistics.
- LRN WITHIN_CHANNEL: ``x * (1 + alpha * avgpool(x^2, size, pad=(size-1)/2))^-beta``
  (Caffe ignores ``k`` there); ACROSS_CHANNELS is ONNX LRN with ``bias = k``.
- Interp: bilinear with aligned corners (Caffe's ``caffe_cpu_interp2``), output size
  from height/width, zoom/shrink factors or a second bottom. Upsample: nearest,
  ``out[i] = in[floor(i / scale)]``.
- Power: ``(shift + scale * x) ^ power``; Exp: ``base ^ (shift + scale * x)``;
  Log: ``log_base(shift + scale * x)`` (``base = -1`` means e).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ir import Value
from parsers.caffe.net import LayerContext, LayerProblem

__all__ = ["LOWERINGS"]

Lowering = Callable[[LayerContext], None]
LOWERINGS: dict[str, Lowering] = {}

_MAX, _AVE = 0, 1  # PoolingParameter.PoolMethod
_ACROSS = 0  # LRNParameter.NormRegion
_PROD, _SUM, _EMAX = 0, 1, 2  # EltwiseParameter.EltwiseOp


def lowering(*types: str) -> Callable[[Lowering], Lowering]:
    def register(fn: Lowering) -> Lowering:
        for t in types:
            LOWERINGS[t] = fn
        return fn

    return register


def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


# -- convolution ------------------------------------------------------------------------
def _spatial(
    values: Sequence[int], h: int, w: int, has_hw: bool, nd: int, default: int, name: str
) -> list[int]:
    """Caffe's repeated/h/w spatial parameter -> one value per spatial axis."""
    if has_hw:
        if nd != 2:
            raise LayerProblem(f"{name}_h/{name}_w need 2 spatial axes")
        return [int(h), int(w)]
    vals = [int(v) for v in values]
    if not vals:
        return [default] * nd
    if len(vals) == 1:
        return vals * nd
    if len(vals) != nd:
        raise LayerProblem(f"{name} has {len(vals)} values for {nd} spatial axes")
    return vals


def _conv_geometry(p: Any, nd: int) -> dict[str, list[int]]:
    kernel = _spatial(
        p.kernel_size, p.kernel_h, p.kernel_w, p.HasField("kernel_h"), nd, 0, "kernel"
    )
    if any(k <= 0 for k in kernel):
        raise LayerProblem("kernel size is missing")
    stride = _spatial(p.stride, p.stride_h, p.stride_w, p.HasField("stride_h"), nd, 1, "stride")
    pad = _spatial(p.pad, p.pad_h, p.pad_w, p.HasField("pad_h"), nd, 0, "pad")
    dilation = _spatial(p.dilation, 0, 0, False, nd, 1, "dilation")
    return {"kernel": kernel, "stride": stride, "pad": pad, "dilation": dilation}


@lowering("Convolution", "Deconvolution", "ConvolutionDepthwise", "DepthwiseConvolution")
def _convolution(ctx: LayerContext) -> None:
    p = ctx.layer.convolution_param
    shape = ctx.shape()
    if p.axis != 1:
        raise LayerProblem(f"axis {p.axis} (only 1 is supported)")
    nd = len(shape) - 2
    g = _conv_geometry(p, nd)
    cin, cout = shape[1], int(p.num_output)
    group = int(p.group)
    if ctx.layer.type in ("ConvolutionDepthwise", "DepthwiseConvolution"):
        group = cin
    if group <= 0 or cin % group or cout % group:
        raise LayerProblem(f"group {group} does not divide {cin} inputs and {cout} outputs")
    deconv = ctx.layer.type == "Deconvolution"
    blobs = ctx.blobs((1, 2) if p.bias_term else 1)
    wshape = [cin, cout // group, *g["kernel"]] if deconv else [cout, cin // group, *g["kernel"]]
    weight = ctx.expect(blobs[0], wshape, "weight")
    inputs: list[Value | None] = [ctx.bottoms[0], ctx.const(weight, "W")]
    if p.bias_term:
        if len(blobs) < 2:
            raise LayerProblem("bias_term is set but the caffemodel has no bias blob")
        inputs.append(ctx.const(ctx.expect(blobs[1], [cout], "bias"), "B"))
    attrs: dict[str, Any] = {
        "kernel_shape": g["kernel"],
        "strides": g["stride"],
        "pads": g["pad"] + g["pad"],
        "dilations": g["dilation"],
        "group": group,
    }
    ctx.set_results(ctx.emit("ConvTranspose" if deconv else "Conv", inputs, attrs))


@lowering("InnerProduct")
def _inner_product(ctx: LayerContext) -> None:
    p = ctx.layer.inner_product_param
    shape = ctx.shape()
    axis = _axis(int(p.axis), len(shape))
    k = math.prod(shape[axis:])
    n = int(p.num_output)
    blobs = ctx.blobs((1, 2) if p.bias_term else 1)
    if p.transpose:
        weight = ctx.expect(blobs[0], [k, n], "weight")
    else:
        weight = ctx.expect(blobs[0], [n, k], "weight").T
    bias = ctx.expect(blobs[1], [n], "bias") if p.bias_term and len(blobs) > 1 else None
    x = ctx.bottoms[0]
    if axis == 1:
        if len(shape) != 2:
            x = ctx.emit1("Flatten", [x], axis=1)
        inputs = [x, ctx.const(np.ascontiguousarray(weight), "W")]
        if bias is not None:
            inputs.append(ctx.const(bias, "B"))
        ctx.set_results(ctx.emit("Gemm", inputs))
        return
    flat = ctx.const([*shape[:axis], k], "shape", np.int64)
    y = ctx.emit1("MatMul", [ctx.emit1("Reshape", [x, flat]), ctx.const(weight, "W")])
    if bias is not None:
        y = ctx.emit1("Add", [y, ctx.const(bias, "B")])
    ctx.set_results([y])


# -- pooling ----------------------------------------------------------------------------
def caffe_pool_size(size: int, kernel: int, stride: int, pad: int, ceil: bool, padded: bool) -> int:
    """Caffe's pooled output size, including its rule for the last window."""
    span = size + 2 * pad - kernel
    out = (-(-span // stride) if ceil else span // stride) + 1
    if padded and (out - 1) * stride >= size + pad:
        out -= 1
    return out


@lowering("Pooling")
def _pooling(ctx: LayerContext) -> None:
    p = ctx.layer.pooling_param
    shape = ctx.shape()
    if len(shape) != 4:
        raise LayerProblem(f"pooling needs a 4-D input, got rank {len(shape)}")
    if p.pool not in (_MAX, _AVE):
        raise LayerProblem("STOCHASTIC pooling is not supported")
    x = ctx.bottoms[0]
    if p.global_pooling:
        op = "GlobalMaxPool" if p.pool == _MAX else "GlobalAveragePool"
        ctx.set_results([ctx.emit1(op, [x])])
        return
    h, w = shape[2], shape[3]
    kernel = (
        [int(p.kernel_h), int(p.kernel_w)] if p.HasField("kernel_h") else [int(p.kernel_size)] * 2
    )
    stride = [int(p.stride_h), int(p.stride_w)] if p.HasField("stride_h") else [int(p.stride)] * 2
    pad = [int(p.pad_h), int(p.pad_w)] if p.HasField("pad_h") else [int(p.pad)] * 2
    if min(kernel) <= 0 or min(stride) <= 0:
        raise LayerProblem("kernel size and stride must be positive")
    ceil = p.round_mode == 0
    padded = any(pad)
    out = [
        caffe_pool_size(n, k, s, q, ceil, padded)
        for n, k, s, q in zip((h, w), kernel, stride, pad, strict=True)
    ]
    for n, o, s, q in zip((h, w), out, stride, pad, strict=True):
        if (o - 1) * s >= n + q:
            raise LayerProblem("its last window lies outside the input (kernel < stride, CEIL)")
    # end pad so that floor((n + pad + end - k) / s) + 1 == out
    end = [
        (o - 1) * s + k - n - q
        for o, s, k, n, q in zip(out, stride, kernel, (h, w), pad, strict=True)
    ]
    attrs: dict[str, Any] = {"kernel_shape": kernel, "strides": stride}
    if p.pool == _MAX:
        attrs["pads"] = pad + [max(e, 0) for e in end]
        ctx.set_results([ctx.emit1("MaxPool", [x], **attrs)])
        return
    if all(e <= q for e, q in zip(end, pad, strict=True)):
        attrs.update(pads=pad + [max(e, 0) for e in end], count_include_pad=1)
    elif not padded:
        attrs.update(pads=[0, 0] + end, count_include_pad=0)
    else:  # windows cross H + pad: pad explicitly, then count only inside the padded input
        pads = ctx.const([0, 0, pad[0], pad[1], 0, 0, pad[0], pad[1]], "pads", np.int64)
        x = ctx.emit1("Pad", [x, pads])
        attrs.update(pads=[0, 0] + [max(e - q, 0) for e, q in zip(end, pad, strict=True)])
        attrs["count_include_pad"] = 0
    ctx.set_results([ctx.emit1("AveragePool", [x], **attrs)])


# -- activations ------------------------------------------------------------------------
@lowering("ReLU")
def _relu(ctx: LayerContext) -> None:
    slope = float(ctx.layer.relu_param.negative_slope)
    x = ctx.bottoms[0]
    y = ctx.emit1("LeakyRelu", [x], alpha=slope) if slope else ctx.emit1("Relu", [x])
    ctx.set_results([y])


@lowering("ReLU6")
def _relu6(ctx: LayerContext) -> None:
    lo, hi = ctx.const(0.0, "min"), ctx.const(6.0, "max")
    ctx.set_results([ctx.emit1("Clip", [ctx.bottoms[0], lo, hi])])


@lowering("Clip")
def _clip(ctx: LayerContext) -> None:
    p = ctx.layer.clip_param
    lo, hi = ctx.const(float(p.min), "min"), ctx.const(float(p.max), "max")
    ctx.set_results([ctx.emit1("Clip", [ctx.bottoms[0], lo, hi])])


@lowering("PReLU")
def _prelu(ctx: LayerContext) -> None:
    shape = ctx.shape()
    shared = ctx.layer.prelu_param.channel_shared
    channels = 1 if shared or len(shape) < 2 else shape[1]
    slope = ctx.expect(ctx.blobs(1)[0], [channels], "slope")
    slope = slope.reshape([channels] + [1] * max(len(shape) - 2, 0)) if not shared else slope
    ctx.set_results([ctx.emit1("PRelu", [ctx.bottoms[0], ctx.const(slope, "slope")])])


def _unary(op: str) -> Lowering:
    def lower(ctx: LayerContext) -> None:
        ctx.set_results([ctx.emit1(op, [ctx.bottoms[0]])])

    return lower


for _type, _op in {
    "Sigmoid": "Sigmoid",
    "TanH": "Tanh",
    "AbsVal": "Abs",
    "BNLL": "Softplus",
}.items():
    LOWERINGS[_type] = _unary(_op)


@lowering("ELU")
def _elu(ctx: LayerContext) -> None:
    ctx.set_results([ctx.emit1("Elu", [ctx.bottoms[0]], alpha=float(ctx.layer.elu_param.alpha))])


@lowering("Swish")
def _swish(ctx: LayerContext) -> None:
    x = ctx.bottoms[0]
    beta = float(ctx.layer.swish_param.beta)
    z = x if beta == 1.0 else ctx.emit1("Mul", [x, ctx.const(beta, "beta")])
    ctx.set_results([ctx.emit1("Mul", [x, ctx.emit1("Sigmoid", [z])])])


@lowering("Threshold")
def _threshold(ctx: LayerContext) -> None:
    t = ctx.const(float(ctx.layer.threshold_param.threshold), "threshold")
    above = ctx.emit1("Greater", [ctx.bottoms[0], t])
    ctx.set_results([ctx.emit1("Cast", [above], to=1)])


def _affine(ctx: LayerContext, x: Value, scale: float, shift: float) -> Value:
    if scale != 1.0:
        x = ctx.emit1("Mul", [x, ctx.const(scale, "scale")])
    if shift != 0.0:
        x = ctx.emit1("Add", [x, ctx.const(shift, "shift")])
    return x


@lowering("Power")
def _power(ctx: LayerContext) -> None:
    p = ctx.layer.power_param
    y = _affine(ctx, ctx.bottoms[0], float(p.scale), float(p.shift))
    if float(p.power) != 1.0:
        y = ctx.emit1("Pow", [y, ctx.const(float(p.power), "power")])
    elif y is ctx.bottoms[0]:
        y = ctx.emit1("Identity", [y])
    ctx.set_results([y])


@lowering("Exp")
def _exp(ctx: LayerContext) -> None:
    p = ctx.layer.exp_param
    ln_base = 1.0 if p.base == -1 else math.log(float(p.base))
    x = _affine(ctx, ctx.bottoms[0], float(p.scale) * ln_base, float(p.shift) * ln_base)
    ctx.set_results([ctx.emit1("Exp", [x])])


@lowering("Log")
def _log(ctx: LayerContext) -> None:
    p = ctx.layer.log_param
    y = ctx.emit1("Log", [_affine(ctx, ctx.bottoms[0], float(p.scale), float(p.shift))])
    if p.base != -1:
        y = ctx.emit1("Mul", [y, ctx.const(1.0 / math.log(float(p.base)), "inv_ln_base")])
    ctx.set_results([y])


@lowering("Dropout", "Split")
def _identity(ctx: LayerContext) -> None:
    ctx.set_results([ctx.emit1("Identity", [ctx.bottoms[0]]) for _ in ctx.layer.top])


# -- normalization and affine -----------------------------------------------------------
@lowering("BatchNorm")
def _batch_norm(ctx: LayerContext) -> None:
    p = ctx.layer.batch_norm_param
    shape = ctx.shape()
    channels = shape[1] if len(shape) > 1 else 1
    eps = float(p.eps)
    x = ctx.bottoms[0]
    if p.HasField("use_global_stats") and not p.use_global_stats:
        _batch_stats_norm(ctx, x, len(shape), eps)
        return
    blobs = ctx.blobs(3)
    mean = ctx.expect(blobs[0], [channels], "mean")
    var = ctx.expect(blobs[1], [channels], "variance")
    s = float(ctx.expect(blobs[2], [1], "scale factor")[0])
    factor = 0.0 if s == 0 else 1.0 / s
    inputs = [
        x,
        ctx.const(np.ones(channels), "scale"),
        ctx.const(np.zeros(channels), "bias"),
        ctx.const(mean * np.float32(factor), "mean"),
        ctx.const(var * np.float32(factor), "var"),
    ]
    ctx.set_results([ctx.emit1("BatchNormalization", inputs, epsilon=eps)])


def _batch_stats_norm(ctx: LayerContext, x: Value, rank: int, eps: float) -> None:
    axes = ctx.const([0, *range(2, rank)], "axes", np.int64)
    mean = ctx.emit1("ReduceMean", [x, axes])
    centered = ctx.emit1("Sub", [x, mean])
    var = ctx.emit1("ReduceMean", [ctx.emit1("Mul", [centered, centered]), axes])
    std = ctx.emit1("Sqrt", [ctx.emit1("Add", [var, ctx.const(eps, "eps")])])
    ctx.set_results([ctx.emit1("Div", [centered, std])])


def _param_shape(ctx: LayerContext, axis: int, num_axes: int, what: str) -> list[int]:
    """Broadcastable shape of a Scale/Bias operand covering ``num_axes`` from ``axis``.

    With a second bottom, its rank sets the covered axes (Caffe ignores num_axes).
    """
    shape = ctx.shape()
    axis = _axis(axis, len(shape))
    if len(ctx.bottoms) > 1:
        num_axes = len(ctx.shape(1))
    end = len(shape) if num_axes == -1 else axis + num_axes
    if not 0 <= axis <= end <= len(shape):
        raise LayerProblem(f"{what} axis {axis} / num_axes {num_axes} do not fit rank {len(shape)}")
    return list(shape[axis:end]) + [1] * (len(shape) - end)


def _operand(ctx: LayerContext, blob: np.ndarray | None, shape: list[int], what: str) -> Value:
    """The learned (blob) or second-bottom operand of Scale/Bias, broadcastable to x."""
    if blob is not None:
        core = [d for d in shape]
        while core and core[-1] == 1:
            core.pop()
        return ctx.const(ctx.expect(blob, core, what).reshape(shape), what)
    if len(ctx.bottoms) < 2:
        raise LayerProblem(f"no {what} blob and no second bottom")
    other = ctx.bottoms[1]
    if tuple(other.shape or ()) == tuple(shape):
        return other
    return ctx.emit1("Reshape", [other, ctx.const(shape, "shape", np.int64)])


@lowering("Scale")
def _scale(ctx: LayerContext) -> None:
    p = ctx.layer.scale_param
    learned = len(ctx.bottoms) == 1
    pshape = _param_shape(ctx, int(p.axis), int(p.num_axes), "scale")
    want = int(learned) + int(p.bias_term)
    blobs = ctx.blobs(want) if want else []
    scale = _operand(ctx, blobs[0] if learned else None, pshape, "scale")
    y = ctx.emit1("Mul", [ctx.bottoms[0], scale])
    if p.bias_term:
        y = ctx.emit1("Add", [y, _operand(ctx, blobs[-1], pshape, "bias")])
    ctx.set_results([y])


@lowering("Bias")
def _bias(ctx: LayerContext) -> None:
    p = ctx.layer.bias_param
    pshape = _param_shape(ctx, int(p.axis), int(p.num_axes), "bias")
    blob = ctx.blobs(1)[0] if len(ctx.bottoms) == 1 else None
    ctx.set_results([ctx.emit1("Add", [ctx.bottoms[0], _operand(ctx, blob, pshape, "bias")])])


@lowering("LRN")
def _lrn(ctx: LayerContext) -> None:
    p = ctx.layer.lrn_param
    size = int(p.local_size)
    if size % 2 == 0:
        raise LayerProblem(f"local_size {size} must be odd")
    x = ctx.bottoms[0]
    if p.norm_region == _ACROSS:
        attrs = {"size": size, "alpha": float(p.alpha), "beta": float(p.beta), "bias": float(p.k)}
        ctx.set_results(ctx.emit("LRN", [x], attrs))
        return
    half = (size - 1) // 2
    sq = ctx.emit1("Mul", [x, x])
    avg = ctx.emit1(
        "AveragePool", [sq], kernel_shape=[size, size], pads=[half] * 4, count_include_pad=1
    )
    base = _affine(ctx, avg, float(p.alpha), 1.0)
    scale = ctx.emit1("Pow", [base, ctx.const(-float(p.beta), "neg_beta")])
    ctx.set_results([ctx.emit1("Mul", [x, scale])])


# -- tensor layers ----------------------------------------------------------------------
@lowering("Eltwise")
def _eltwise(ctx: LayerContext) -> None:
    p = ctx.layer.eltwise_param
    xs = list(ctx.bottoms)
    if p.operation == _EMAX:
        ctx.set_results([ctx.emit1("Max", xs)])
        return
    if p.operation == _PROD:
        y = xs[0]
        for x in xs[1:]:
            y = ctx.emit1("Mul", [y, x])
        ctx.set_results([y])
        return
    coeffs = [float(c) for c in p.coeff]
    if coeffs and len(coeffs) != len(xs):
        raise LayerProblem(f"{len(coeffs)} coefficients for {len(xs)} bottoms")
    terms = [
        x
        if not coeffs or coeffs[i] == 1.0
        else ctx.emit1("Mul", [x, ctx.const(coeffs[i], "coeff")])
        for i, x in enumerate(xs)
    ]
    y = terms[0]
    for t in terms[1:]:
        y = ctx.emit1("Add", [y, t])
    if y is xs[0]:
        y = ctx.emit1("Identity", [y])
    ctx.set_results([y])


@lowering("Concat")
def _concat(ctx: LayerContext) -> None:
    p = ctx.layer.concat_param
    axis = int(p.concat_dim) if p.HasField("concat_dim") and not p.HasField("axis") else int(p.axis)
    ctx.set_results([ctx.emit1("Concat", list(ctx.bottoms), axis=axis)])


@lowering("Slice")
def _slice(ctx: LayerContext) -> None:
    p = ctx.layer.slice_param
    shape = ctx.shape()
    axis = int(p.slice_dim) if p.HasField("slice_dim") and not p.HasField("axis") else int(p.axis)
    axis = _axis(axis, len(shape))
    n, tops = shape[axis], len(ctx.layer.top)
    points = [int(v) for v in p.slice_point]
    if points:
        if len(points) != tops - 1:
            raise LayerProblem(f"{len(points)} slice points for {tops} tops")
        bounds = [0, *points, n]
    else:
        if n % tops:
            raise LayerProblem(f"axis size {n} does not split into {tops} equal parts")
        bounds = [i * n // tops for i in range(tops + 1)]
    sizes = [b - a for a, b in zip(bounds, bounds[1:], strict=False)]
    if any(s <= 0 for s in sizes):
        raise LayerProblem(f"slice points {points} are not increasing inside size {n}")
    split = ctx.const(sizes, "split", np.int64)
    ctx.set_results(ctx.emit("Split", [ctx.bottoms[0], split], {"axis": axis}, tops))


@lowering("Softmax")
def _softmax(ctx: LayerContext) -> None:
    axis = int(ctx.layer.softmax_param.axis)
    ctx.set_results([ctx.emit1("Softmax", [ctx.bottoms[0]], axis=axis)])


def _reshape_to(ctx: LayerContext, shape: Sequence[int]) -> None:
    target = ctx.const(list(shape), "shape", np.int64)
    ctx.set_results([ctx.emit1("Reshape", [ctx.bottoms[0], target])])


@lowering("Flatten")
def _flatten(ctx: LayerContext) -> None:
    p = ctx.layer.flatten_param
    shape = ctx.shape()
    start, end = _axis(int(p.axis), len(shape)), _axis(int(p.end_axis), len(shape))
    _reshape_to(ctx, [*shape[:start], math.prod(shape[start : end + 1]), *shape[end + 1 :]])


@lowering("Reshape")
def _reshape(ctx: LayerContext) -> None:
    p = ctx.layer.reshape_param
    shape = list(ctx.shape())
    rank = len(shape)
    start = int(p.axis) + (rank + 1 if p.axis < 0 else 0)
    end = rank if p.num_axes == -1 else start + int(p.num_axes)
    if not 0 <= start <= end <= rank:
        raise LayerProblem(f"axis {p.axis} / num_axes {p.num_axes} do not fit rank {rank}")
    dims = [int(d) for d in p.shape.dim]
    new = [shape[start + i] if d == 0 else d for i, d in enumerate(dims)]
    full = shape[:start] + new + shape[end:]
    if full.count(-1) > 1:
        raise LayerProblem("more than one -1 in the shape")
    if -1 in full:
        known = math.prod(d for d in full if d != -1)
        full[full.index(-1)] = math.prod(shape) // known if known else 0
    if math.prod(full) != math.prod(shape):
        raise LayerProblem(f"cannot reshape {shape} to {full}")
    _reshape_to(ctx, full)


@lowering("Permute")
def _permute(ctx: LayerContext) -> None:
    rank = len(ctx.shape())
    order = [_axis(int(o), rank) for o in ctx.layer.permute_param.order]
    if len(set(order)) != len(order) or any(not 0 <= o < rank for o in order):
        raise LayerProblem(f"order {order} is not a permutation of rank {rank}")
    perm = order + [a for a in range(rank) if a not in order]
    ctx.set_results([ctx.emit1("Transpose", [ctx.bottoms[0]], perm=perm)])


@lowering("Crop")
def _crop(ctx: LayerContext) -> None:
    p = ctx.layer.crop_param
    if len(ctx.bottoms) != 2:
        raise LayerProblem("Crop needs two bottoms")
    shape, ref = ctx.shape(0), ctx.shape(1)
    axis = _axis(int(p.axis), len(shape))
    offsets = [int(o) for o in p.offset]
    axes = list(range(axis, len(shape)))
    if len(offsets) not in (0, 1, len(axes)):
        raise LayerProblem(f"{len(offsets)} offsets for {len(axes)} cropped axes")
    offs = offsets * len(axes) if len(offsets) == 1 else (offsets or [0] * len(axes))
    for a, o in zip(axes, offs, strict=True):
        if o + ref[a] > shape[a]:
            raise LayerProblem(f"offset {o} + size {ref[a]} exceeds {shape[a]} on axis {a}")
    starts = ctx.const(offs, "starts", np.int64)
    ends = ctx.const([o + ref[a] for a, o in zip(axes, offs, strict=True)], "ends", np.int64)
    axes_v = ctx.const(axes, "axes", np.int64)
    ctx.set_results([ctx.emit1("Slice", [ctx.bottoms[0], starts, ends, axes_v])])


@lowering("Interp")
def _interp(ctx: LayerContext) -> None:
    p = ctx.layer.interp_param
    shape = ctx.shape()
    if len(shape) != 4:
        raise LayerProblem("Interp needs a 4-D input")
    if p.pad_beg != 0 or p.pad_end != 0:
        raise LayerProblem("pad_beg/pad_end are not supported")
    h, w = shape[2], shape[3]
    zoom, shrink = int(p.zoom_factor), int(p.shrink_factor)
    if len(ctx.bottoms) == 2:
        oh, ow = ctx.shape(1)[2:4]
    elif p.HasField("shrink_factor") and p.HasField("zoom_factor"):
        oh, ow = (h - 1) // shrink + 1, (w - 1) // shrink + 1
        oh, ow = oh + (oh - 1) * (zoom - 1), ow + (ow - 1) * (zoom - 1)
    elif p.HasField("shrink_factor"):
        oh, ow = (h - 1) // shrink + 1, (w - 1) // shrink + 1
    elif p.HasField("zoom_factor"):
        oh, ow = h + (h - 1) * (zoom - 1), w + (w - 1) * (zoom - 1)
    elif p.height > 0 and p.width > 0:
        oh, ow = int(p.height), int(p.width)
    else:
        raise LayerProblem("no output size (height/width, zoom_factor, shrink_factor)")
    sizes = ctx.const([shape[0], shape[1], oh, ow], "sizes", np.int64)
    y = ctx.emit1(
        "Resize", [ctx.bottoms[0], None, None, sizes],
        mode="linear", coordinate_transformation_mode="align_corners",
    )  # fmt: skip
    ctx.set_results([y])


@lowering("Upsample")
def _upsample(ctx: LayerContext) -> None:
    if len(ctx.bottoms) != 1:
        raise LayerProblem("Upsample with a pooling mask (two bottoms) is not supported")
    shape = ctx.shape()
    scale = int(ctx.layer.upsample_param.scale)
    if scale < 1 or len(shape) != 4:
        raise LayerProblem(f"needs a 4-D input and a positive integer scale, got {scale}")
    sizes = ctx.const([shape[0], shape[1], shape[2] * scale, shape[3] * scale], "sizes", np.int64)
    y = ctx.emit1(
        "Resize", [ctx.bottoms[0], None, None, sizes],
        mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor",
    )  # fmt: skip
    ctx.set_results([y])


@lowering("ShuffleChannel")
def _shuffle_channel(ctx: LayerContext) -> None:
    shape = ctx.shape()
    group = int(ctx.layer.shuffle_channel_param.group)
    if len(shape) < 2 or group <= 0 or shape[1] % group:
        raise LayerProblem(f"group {group} does not divide the channels")
    n, c, rest = shape[0], shape[1], list(shape[2:])
    split = ctx.const([n, group, c // group, *rest], "split_shape", np.int64)
    y = ctx.emit1("Reshape", [ctx.bottoms[0], split])
    y = ctx.emit1("Transpose", [y], perm=[0, 2, 1, *range(3, len(shape) + 1)])
    y = ctx.emit1("Reshape", [y, ctx.const(list(shape), "shape", np.int64)])
    ctx.set_results([y])
