"""Lowerings of TF neural-network ops: convolutions, pools, normalization, resize.

Data keeps TF's layout: NHWC ops get ``format="NHWC"`` (NCHW graphs keep "NCHW").
Weights are brought to ONNX layout at parse time: Conv2D ``HWIO -> OIHW`` (``group``
from input channels / I), DepthwiseConv2dNative ``HWCM -> [C*M, 1, H, W]`` with
``group = C``, Conv2DBackpropInput ``HWOI -> IOHW`` with the pads and output padding
TF's SAME/VALID rules give for the requested output size. ``SAME`` padding is ONNX's
``SAME_UPPER`` (the extra pixel at the end).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ir import Value
from parsers.tf.context import OpContext
from parsers.tf.ops_math import transpose

__all__ = ["LOWERINGS", "partial_const"]


def _nhwc(ctx: OpContext) -> bool:
    return not str(ctx.attr("data_format", "NHWC")).startswith("NC")


def _spatial(ctx: OpContext, values: list[int], rank: int = 4) -> list[int]:
    return list(values[1 : rank - 1]) if _nhwc(ctx) else list(values[2:rank])


def _geometry(ctx: OpContext, rank: int = 4) -> dict[str, Any]:
    """strides, dilations, padding and format attributes of a conv/pool node."""
    n_sp = rank - 2
    attrs: dict[str, Any] = {"format": "NHWC" if _nhwc(ctx) else "NCHW"}
    strides = ctx.attr("strides", [1] * rank)
    attrs["strides"] = _spatial(ctx, strides, rank)
    dil = ctx.attr("dilations", None)
    if dil:
        attrs["dilations"] = _spatial(ctx, dil, rank)
    padding = ctx.attr("padding", "VALID")
    if padding == "SAME":
        attrs["auto_pad"] = "SAME_UPPER"
    elif padding == "VALID":
        attrs["pads"] = [0] * (2 * n_sp)
    elif padding == "EXPLICIT":
        ep = ctx.attr("explicit_paddings", [])
        pairs = [ep[2 * i : 2 * i + 2] for i in range(rank)]
        sp = pairs[1 : rank - 1] if _nhwc(ctx) else pairs[2:rank]
        attrs["pads"] = [p[0] for p in sp] + [p[1] for p in sp]
    else:
        ctx.fail(f"padding {padding!r} is not supported")
    return attrs


def _channels(ctx: OpContext, i: int) -> int | None:
    shape = ctx.shape(i)
    if shape is None or len(shape) < 3:
        return None
    c = shape[-1] if _nhwc(ctx) else shape[1]
    return c if isinstance(c, int) else None


def _conv2d(ctx: OpContext) -> Value:
    x, w = ctx.x(0), ctx.x(1)
    attrs = _geometry(ctx)
    w_shape = w.shape
    if w_shape is None or len(w_shape) != 4:
        ctx.fail("the filter needs a known rank-4 shape")
    attrs["kernel_shape"] = [int(d) for d in w_shape[:2]]
    c_in = _channels(ctx, 0)
    if c_in is not None and isinstance(w_shape[2], int) and c_in != w_shape[2]:
        attrs["group"] = c_in // int(w_shape[2])
    return ctx.op_("Conv", [x, transpose(ctx, w, [3, 2, 0, 1])], **attrs)


def _depthwise(ctx: OpContext) -> Value:
    x, w = ctx.x(0), ctx.x(1)
    attrs = _geometry(ctx)
    if not w.is_static or len(w.shape) != 4:
        ctx.fail("the filter needs a static rank-4 shape")
    kh, kw, c, m = (int(d) for d in w.shape)
    attrs["kernel_shape"] = [kh, kw]
    attrs["group"] = c
    if w.const is not None:
        weight = ctx.const(
            np.ascontiguousarray(w.const.reshape(kh, kw, 1, c * m).transpose(3, 2, 0, 1))
        )
    else:
        flat = ctx.op_("Reshape", [w, ctx.i64([kh, kw, 1, c * m])])
        weight = ctx.op_("Transpose", [flat], perm=[3, 2, 0, 1])
    return ctx.op_("Conv", [x, weight], **attrs)


def partial_const(v: Value) -> list[int | None] | None:
    """Entries of a 1-D int tensor known at parse time (None where computed)."""
    if v.const is not None:
        return [int(e) for e in np.asarray(v.const).reshape(-1)]
    node = v.producer
    if node is None:
        return None
    if node.op == "Concat" and node.attr("axis") in (0, -1):
        out: list[int | None] = []
        for part in node.inputs:
            got = partial_const(part) if part is not None else None
            if got is None:
                return None
            out += got
        return out
    if node.op == "Unsqueeze" and node.inputs[0] is not None:
        inner = node.inputs[0]
        if inner.const is not None:
            return [int(e) for e in np.asarray(inner.const).reshape(-1)]
        return [None] if inner.shape == () else None
    if node.op == "Cast" and node.inputs[0] is not None:
        return partial_const(node.inputs[0])
    if v.shape is not None and len(v.shape) == 1 and isinstance(v.shape[0], int):
        return [None] * v.shape[0]
    return None


def _conv_backprop_input(ctx: OpContext) -> Value:
    sizes, w, x = ctx.x(0), ctx.x(1), ctx.x(2)
    attrs = _geometry(ctx)
    if not w.is_static or len(w.shape) != 4:
        ctx.fail("the filter needs a static rank-4 shape")
    ks = [int(d) for d in w.shape[:2]]
    strides = attrs["strides"]
    dil = attrs.get("dilations", [1, 1])
    xs = x.shape
    in_sp = None if xs is None else (xs[1:3] if _nhwc(ctx) else xs[2:4])
    if in_sp is None or not all(isinstance(d, int) for d in in_sp):
        ctx.fail("the input's spatial dims must be known")
    want = partial_const(sizes)
    out_sp = None if want is None else (want[1:3] if _nhwc(ctx) else want[2:4])
    same = attrs.pop("auto_pad", None) == "SAME_UPPER"
    pads: list[int] = list(attrs.get("pads", [0, 0, 0, 0]))
    out_pad = [0, 0]
    for i in range(2):
        k_eff = (ks[i] - 1) * dil[i] + 1
        full = (in_sp[i] - 1) * strides[i] + k_eff
        target = out_sp[i] if out_sp is not None else None
        if target is None:
            target = in_sp[i] * strides[i] if same else full - pads[i] - pads[i + 2]
        if same:
            total = max(0, full - target)
            pads[i], pads[i + 2] = total // 2, total - total // 2
        out_pad[i] = target - (full - pads[i] - pads[i + 2])
        if out_pad[i] < 0:
            ctx.fail(f"output size {target} is smaller than the transposed conv gives")
    attrs["pads"] = pads
    if any(out_pad):
        attrs["output_padding"] = out_pad
    attrs["kernel_shape"] = ks
    return ctx.op_("ConvTranspose", [x, transpose(ctx, w, [3, 2, 0, 1])], **attrs)


def _bias_add(ctx: OpContext) -> Value:
    x, b = ctx.x(0), ctx.x(1)
    if _nhwc(ctx):
        return ctx.op_("Add", [x, b])
    r = ctx.need_rank(0)
    return ctx.op_("Add", [x, ctx.op_("Reshape", [b, ctx.i64([-1] + [1] * (r - 2))])])


def _batch_norm(ctx: OpContext) -> list[Value]:
    if ctx.attr("is_training", False):
        mean = ctx.const_of(3)
        if mean is None or mean.size == 0:
            ctx.fail("training-mode batch normalization (batch statistics) is not supported")
    x, scale, offset, mean_v, var = (ctx.x(i) for i in range(5))
    y = ctx.op_(
        "BatchNormalization", [x, scale, offset, mean_v, var],
        epsilon=float(ctx.attr("epsilon", 1e-4)), format="NHWC" if _nhwc(ctx) else "NCHW",
    )  # fmt: skip
    return [y, mean_v, var, mean_v, var, mean_v]


def _pool(ir_op: str) -> Any:
    def lower(ctx: OpContext) -> Value:
        attrs = _geometry(ctx)
        attrs.pop("dilations", None)
        if ctx.op == "MaxPoolV2":
            ksize = [int(k) for k in ctx.need_const(1, "ksize")]
            attrs["strides"] = _spatial(ctx, [int(s) for s in ctx.need_const(2, "strides")])
        else:
            ksize = ctx.attr("ksize")
        attrs["kernel_shape"] = _spatial(ctx, ksize)
        return ctx.op_(ir_op, [ctx.x(0)], **attrs)

    return lower


def _resize(mode: str) -> Any:
    def lower(ctx: OpContext) -> Value:
        align = bool(ctx.attr("align_corners", False))
        half = bool(ctx.attr("half_pixel_centers", False))
        attrs: dict[str, Any] = {"mode": mode, "axes": [1, 2], "format": "NHWC"}
        if align:
            attrs["coordinate_transformation_mode"] = "align_corners"
        elif half:
            attrs["coordinate_transformation_mode"] = "half_pixel"
        else:
            attrs["coordinate_transformation_mode"] = "asymmetric"
        if mode == "nearest":
            attrs["nearest_mode"] = "floor" if not (align or half) else "round_prefer_ceil"
        sizes = ctx.as_i64(ctx.x(1))
        return ctx.op_("Resize", [ctx.x(0), None, None, sizes], **attrs)

    return lower


def _depth_space(ir_op: str) -> Any:
    def lower(ctx: OpContext) -> Value:
        return ctx.op_(
            ir_op, [ctx.x(0)], blocksize=int(ctx.attr("block_size")), mode="DCR",
            format="NHWC" if _nhwc(ctx) else "NCHW",
        )  # fmt: skip

    return lower


def _lrn(ctx: OpContext) -> Value:
    radius = int(ctx.attr("depth_radius", 5))
    size = 2 * radius + 1
    return ctx.op_(
        "LRN", [ctx.x(0)], size=size, alpha=float(ctx.attr("alpha", 1.0)) * size,
        beta=float(ctx.attr("beta", 0.5)), bias=float(ctx.attr("bias", 1.0)), format="NHWC",
    )  # fmt: skip


LOWERINGS = {
    "Conv2D": _conv2d,
    "DepthwiseConv2dNative": _depthwise,
    "Conv2DBackpropInput": _conv_backprop_input,
    "BiasAdd": _bias_add,
    "BiasAddV1": _bias_add,
    "FusedBatchNorm": _batch_norm,
    "FusedBatchNormV2": _batch_norm,
    "FusedBatchNormV3": _batch_norm,
    "MaxPool": _pool("MaxPool"),
    "MaxPoolV2": _pool("MaxPool"),
    "AvgPool": _pool("AveragePool"),
    "ResizeBilinear": _resize("linear"),
    "ResizeNearestNeighbor": _resize("nearest"),
    "DepthToSpace": _depth_space("DepthToSpace"),
    "SpaceToDepth": _depth_space("SpaceToDepth"),
    "LRN": _lrn,
}
