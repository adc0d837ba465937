"""Lowerings of TFLite's neural-network builtins (convs, pools, dense, norms, resize).

Layout: data stays NHWC, so Conv/ConvTranspose/pools/Resize/DepthToSpace get
``format="NHWC"``. Weights are brought to the ONNX layout at parse time:
CONV_2D OHWI -> OIHW; DEPTHWISE_CONV_2D [1, H, W, C*M] -> [C*M, 1, H, W] with
``group = C``; TRANSPOSE_CONV OHWI -> IOHW. SAME padding becomes explicit pads when the
spatial input size is known (TensorFlow puts the odd pixel at the end, i.e.
``auto_pad=SAME_UPPER`` otherwise). FULLY_CONNECTED weights [out, in] become a
transposed constant for MatMul.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ir import DataType, Value
from parsers.tflite.lower import ACT_NONE, LoweringError, OpContext

__all__ = ["INT_SAFE", "LOWERINGS"]

SAME, VALID = 0, 1


def _padding(
    ctx: OpContext, padding: int, spatial: tuple[Any, ...] | None, kernel: list[int],
    strides: list[int], dilations: list[int],
) -> dict[str, Any]:
    """Attributes for TFLite SAME/VALID padding: explicit pads when sizes are known."""
    if padding == VALID:
        return {}
    if padding != SAME:
        raise LoweringError(f"padding mode {padding} is not supported")
    if spatial is None or not all(isinstance(d, int) for d in spatial):
        return {"auto_pad": "SAME_UPPER"}
    begin, end = [], []
    for size, k, s, d in zip(spatial, kernel, strides, dilations, strict=True):
        out = -(-size // s)
        total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
        begin.append(total // 2)
        end.append(total - total // 2)
    pads = begin + end
    return {"pads": pads} if any(pads) else {}


def _spatial(ctx: OpContext, i: int = 0) -> tuple[Any, ...] | None:
    s = ctx.shape(i)
    return None if s is None or len(s) != 4 else tuple(s[1:3])


def conv_2d(ctx: OpContext) -> None:
    o = ctx.opts
    w = ctx.need_const(1, "the filter")
    kernel = [int(w.shape[1]), int(w.shape[2])]
    strides = [o.StrideH(), o.StrideW()]
    dil = [o.DilationHFactor(), o.DilationWFactor()]
    cin = ctx.shape(0)[-1] if ctx.shape(0) else None
    group = cin // w.shape[3] if isinstance(cin, int) and cin != w.shape[3] else 1
    attrs = {"kernel_shape": kernel, "strides": strides, "dilations": dil, "group": group,
             "format": "NHWC", **_padding(ctx, o.Padding(), _spatial(ctx), kernel, strides, dil)}
    ins = [ctx.input(0), ctx.weight(1, (0, 3, 1, 2)), ctx.input(2)]
    ctx.finish_op("Conv", ins, attrs, o.FusedActivationFunction())


def depthwise_conv_2d(ctx: OpContext) -> None:
    o = ctx.opts
    w = ctx.need_const(1, "the filter")
    kernel = [int(w.shape[1]), int(w.shape[2])]
    strides = [o.StrideH(), o.StrideW()]
    dil = [o.DilationHFactor(), o.DilationWFactor()]
    mult = max(int(o.DepthMultiplier()), 1)
    cin = ctx.shape(0)[-1] if ctx.shape(0) else None
    group = cin if isinstance(cin, int) else int(w.shape[3]) // mult
    attrs = {"kernel_shape": kernel, "strides": strides, "dilations": dil, "group": group,
             "format": "NHWC", **_padding(ctx, o.Padding(), _spatial(ctx), kernel, strides, dil)}
    ins = [ctx.input(0), ctx.weight(1, (3, 0, 1, 2)), ctx.input(2)]
    ctx.finish_op("Conv", ins, attrs, o.FusedActivationFunction())


def transpose_conv(ctx: OpContext) -> None:
    """Inputs: output_shape, weights [O, H, W, I], input, bias (optional)."""
    o = ctx.opts
    out_shape = ctx.need_const(0, "output_shape")
    w = ctx.need_const(1, "the filter")
    kernel = [int(w.shape[1]), int(w.shape[2])]
    strides = [o.StrideH(), o.StrideW()]
    spatial = _spatial(ctx, 2)
    attrs: dict[str, Any] = {"kernel_shape": kernel, "strides": strides, "format": "NHWC"}
    target = [int(d) for d in out_shape[1:3]]
    if spatial is None or not all(isinstance(d, int) for d in spatial):
        raise LoweringError("the input's spatial size must be known")
    begin, end, extra = [], [], []
    for size, k, s, out in zip(spatial, kernel, strides, target, strict=True):
        full = (size - 1) * s + k
        if o.Padding() == SAME:
            total = max((-(-out // s) - 1) * s + k - out, 0)
            top = total // 2
        else:
            top = 0
        rest = full - out - top
        begin.append(top)
        end.append(max(rest, 0))
        extra.append(max(-rest, 0))
    attrs["pads"] = begin + end
    if any(extra):
        attrs["output_padding"] = extra
    act = o.FusedActivationFunction() if hasattr(o, "FusedActivationFunction") else ACT_NONE
    ins = [ctx.input(2), ctx.weight(1, (3, 0, 1, 2)), ctx.input(3)]
    ctx.finish_op("ConvTranspose", ins, attrs, act)


def _pool(op: str) -> Callable[[OpContext], None]:
    def lower(ctx: OpContext) -> None:
        o = ctx.opts
        kernel = [o.FilterHeight(), o.FilterWidth()]
        strides = [o.StrideH(), o.StrideW()]
        attrs = {"kernel_shape": kernel, "strides": strides, "format": "NHWC",
                 **_padding(ctx, o.Padding(), _spatial(ctx), kernel, strides, [1, 1])}
        ctx.finish_op(op, [ctx.input(0)], attrs, o.FusedActivationFunction())

    lower.__name__ = op.lower()
    return lower


def fully_connected(ctx: OpContext) -> None:
    o = ctx.opts
    keep = bool(o.KeepNumDims()) if o is not None else False
    act = o.FusedActivationFunction() if o is not None else ACT_NONE
    if o is not None and o.WeightsFormat() != 0:
        raise LoweringError("shuffled weights format is not supported")
    x = ctx.input(0)
    wshape = ctx.tensor(1).shape
    if len(wshape) != 2:
        raise LoweringError("weights must be 2-D [out, in]")
    if not keep and (ctx.shape(0) is None or len(ctx.shape(0)) != 2):
        x = ctx.one("Reshape", [x, ctx.ints([-1, wshape[1]], "shape")])
    if ctx.const(1) is not None:
        w = ctx.weight(1, (1, 0))
    else:
        w = ctx.one("Transpose", [ctx.input(1)], {"perm": [1, 0]})
    bias = ctx.input(2)
    if bias is None:
        ctx.finish_op("MatMul", [x, w], None, act)
        return
    y = ctx.one("MatMul", [x, w])
    ctx.finish_op("Add", [y, bias], None, act)


def batch_matmul(ctx: OpContext) -> None:
    o = ctx.opts
    a, b = ctx.input(0), ctx.input(1)
    if o is not None and o.AdjX():
        a = _swap_last(ctx, a, ctx.rank(0))
    if o is not None and o.AdjY():
        b = _swap_last(ctx, b, ctx.rank(1))
    ctx.emit("MatMul", [a, b], outputs=[ctx.out(0)])


def _swap_last(ctx: OpContext, v: Value, rank: int) -> Value:
    perm = list(range(rank))
    perm[-2], perm[-1] = perm[-1], perm[-2]
    return ctx.one("Transpose", [v], {"perm": perm})


def softmax(ctx: OpContext) -> None:
    x = ctx.input(0)
    beta = float(ctx.opts.Beta()) if ctx.opts is not None else 1.0
    if beta != 1.0:
        x = ctx.one("Mul", [x, ctx.scalar(beta, x, "beta")])
    ctx.emit("Softmax", [x], {"axis": -1}, outputs=[ctx.out(0)])


def log_softmax(ctx: OpContext) -> None:
    ctx.emit("LogSoftmax", [ctx.input(0)], {"axis": -1}, outputs=[ctx.out(0)])


def l2_normalization(ctx: OpContext) -> None:
    """x / max(sqrt(sum(x^2, last axis)), 1e-6), as TFLite's kernel."""
    x = ctx.input(0)
    ss = ctx.one("ReduceSumSquare", [x, ctx.ints([-1], "axes")], {"keepdims": 1})
    norm = ctx.one("Max", [ctx.one("Sqrt", [ss]), ctx.scalar(1e-6, x, "eps")])
    act = ctx.opts.FusedActivationFunction() if ctx.opts is not None else ACT_NONE
    ctx.finish_op("Div", [x, norm], None, act)


def _resize(mode: str) -> Callable[[OpContext], None]:
    def lower(ctx: OpContext) -> None:
        o = ctx.opts
        align = bool(o.AlignCorners()) if o is not None else False
        half = bool(o.HalfPixelCenters()) if o is not None else False
        attrs: dict[str, Any] = {"mode": mode, "axes": [1, 2], "format": "NHWC"}
        if align:
            attrs["coordinate_transformation_mode"] = "align_corners"
        elif half:
            # nearest: TF's floor((x + 0.5) * in/out) is half_pixel rounding up
            attrs["coordinate_transformation_mode"] = "half_pixel"
        else:
            attrs["coordinate_transformation_mode"] = "asymmetric"
        if mode == "nearest":
            attrs["nearest_mode"] = "round_prefer_ceil" if align or half else "floor"
        size = ctx.const(1)
        if size is not None:
            sizes = ctx.ints([int(d) for d in size], "sizes")
        else:
            sizes = ctx.one("Cast", [ctx.input(1)], {"to": int(DataType.INT64)})
        ctx.emit("Resize", [ctx.input(0), None, None, sizes], attrs, outputs=[ctx.out(0)])

    return lower


def _block(op: str) -> Callable[[OpContext], None]:
    def lower(ctx: OpContext) -> None:
        attrs = {"blocksize": int(ctx.opts.BlockSize()), "mode": "DCR", "format": "NHWC"}
        ctx.emit(op, [ctx.input(0)], attrs, outputs=[ctx.out(0)])

    return lower


LOWERINGS: dict[str, Callable[[OpContext], None]] = {
    "CONV_2D": conv_2d,
    "DEPTHWISE_CONV_2D": depthwise_conv_2d,
    "TRANSPOSE_CONV": transpose_conv,
    "AVERAGE_POOL_2D": _pool("AveragePool"),
    "MAX_POOL_2D": _pool("MaxPool"),
    "FULLY_CONNECTED": fully_connected,
    "BATCH_MATMUL": batch_matmul,
    "SOFTMAX": softmax,
    "LOG_SOFTMAX": log_softmax,
    "L2_NORMALIZATION": l2_normalization,
    "RESIZE_BILINEAR": _resize("linear"),
    "RESIZE_NEAREST_NEIGHBOR": _resize("nearest"),
    "DEPTH_TO_SPACE": _block("DepthToSpace"),
    "SPACE_TO_DEPTH": _block("SpaceToDepth"),
}

INT_SAFE = {"MAX_POOL_2D", "RESIZE_NEAREST_NEIGHBOR", "DEPTH_TO_SPACE", "SPACE_TO_DEPTH"}
