"""Lowerings of TFLite's shape, indexing and data-movement builtins.

Index and shape inputs are int32 in TFLite and int64 in the IR: constant ones are
converted at parse time, computed ones through a Cast. STRIDED_SLICE expands its
ellipsis/new-axis/shrink masks into Slice -> Squeeze -> Unsqueeze. PACK/UNPACK are
Unsqueeze+Concat / Split+Squeeze. MIRROR_PAD REFLECT is Pad(mode="reflect"); SYMMETRIC
is built from reversed slices and Concat. QUANTIZE/DEQUANTIZE are QuantizeLinear /
DequantizeLinear (a float16 constant behind DEQUANTIZE is folded to float32 here),
DENSIFY turns a sparse constant into a dense one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ir import DataType, Value
from parsers.tflite.lower import LoweringError, OpContext
from parsers.tflite.sparse import densify as densify_tensor

__all__ = ["INT_SAFE", "LOWERINGS"]

BIG = np.iinfo(np.int64).max
SMALL = np.iinfo(np.int64).min + 1


def _int64(ctx: OpContext, i: int, what: str) -> Value:
    """Input ``i`` as an int64 Value (constant converted now, computed one Cast)."""
    arr = ctx.const(i)
    if arr is not None:
        return ctx.ints([int(v) for v in np.ravel(arr)], what)
    v = ctx.input(i)
    assert v is not None
    if v.dtype == DataType.INT64:
        return v
    return ctx.one("Cast", [v], {"to": int(DataType.INT64)})


def reshape(ctx: OpContext) -> None:
    if ctx.has(1):
        shape = _int64(ctx, 1, "shape")
    elif ctx.opts is not None and ctx.opts.NewShapeLength():
        shape = ctx.ints([int(d) for d in ctx.opts.NewShapeAsNumpy()], "shape")
    else:
        shape = ctx.ints(list(ctx.out_tensor().shape), "shape")
    ctx.emit("Reshape", [ctx.input(0), shape], outputs=[ctx.out(0)])


def squeeze(ctx: OpContext) -> None:
    o = ctx.opts
    dims = [int(d) for d in o.SqueezeDimsAsNumpy()] if o is not None and o.SqueezeDimsLength() \
        else []  # fmt: skip
    axes = ctx.ints(dims, "axes") if dims else None
    ctx.emit("Squeeze", [ctx.input(0), axes], outputs=[ctx.out(0)])


def expand_dims(ctx: OpContext) -> None:
    ctx.emit("Unsqueeze", [ctx.input(0), _int64(ctx, 1, "axes")], outputs=[ctx.out(0)])


def transpose(ctx: OpContext) -> None:
    perm = [int(p) for p in np.ravel(ctx.need_const(1, "perm"))]
    ctx.emit("Transpose", [ctx.input(0)], {"perm": perm}, outputs=[ctx.out(0)])


def concatenation(ctx: OpContext) -> None:
    ins = [ctx.input(i) for i in range(ctx.num_inputs)]
    ctx.finish_op("Concat", ins, {"axis": int(ctx.opts.Axis())},
                  int(ctx.opts.FusedActivationFunction()))  # fmt: skip


def _bits(mask: int, i: int) -> bool:
    return bool((mask >> i) & 1)


def strided_slice(ctx: OpContext) -> None:
    o = ctx.opts
    begin = [int(v) for v in ctx.need_const(1, "begin")]
    end = [int(v) for v in ctx.need_const(2, "end")]
    strides = [int(v) for v in ctx.const(3)] if ctx.has(3) and ctx.const(3) is not None \
        else [1] * len(begin)  # fmt: skip
    if ctx.has(3) and ctx.const(3) is None:
        raise LoweringError("strides must be a constant")
    bm, em = o.BeginMask(), o.EndMask()
    ellipsis, new_axis, shrink = o.EllipsisMask(), o.NewAxisMask(), o.ShrinkAxisMask()
    offset = bool(o.Offset()) if hasattr(o, "Offset") else False
    rank = ctx.rank(0)
    n = len(begin)
    real = sum(1 for i in range(n) if not _bits(ellipsis, i) and not _bits(new_axis, i))
    starts: list[int] = []
    ends: list[int] = []
    steps: list[int] = []
    axes: list[int] = []
    squeeze_axes: list[int] = []
    unsqueeze_axes: list[int] = []
    dim = out_pos = 0
    seen_ellipsis = False
    for i in range(n):
        if _bits(ellipsis, i) and not seen_ellipsis:
            seen_ellipsis = True
            span = rank - real
            dim += span
            out_pos += span
            continue
        if _bits(new_axis, i):
            unsqueeze_axes.append(out_pos)
            out_pos += 1
            continue
        b, e, s = begin[i], end[i], strides[i]
        if offset:
            e = b + e
        if _bits(shrink, i):
            starts.append(b)
            ends.append(b + 1 if b != -1 else BIG)
            steps.append(1)
            axes.append(dim)
            squeeze_axes.append(dim)
        else:
            if s == 0:
                raise LoweringError("stride 0")
            starts.append((0 if s > 0 else BIG) if _bits(bm, i) else b)
            ends.append((BIG if s > 0 else SMALL) if _bits(em, i) else e)
            steps.append(s)
            axes.append(dim)
            out_pos += 1
        dim += 1
    y = ctx.input(0)
    assert y is not None
    final: list[tuple[str, list[Value | None]]] = []
    if axes:
        final.append(("Slice", [ctx.ints(starts, "starts"), ctx.ints(ends, "ends"),
                                ctx.ints(axes, "axes"), ctx.ints(steps, "steps")]))
    if squeeze_axes:
        final.append(("Squeeze", [ctx.ints(squeeze_axes, "squeeze")]))
    if unsqueeze_axes:
        final.append(("Unsqueeze", [ctx.ints(unsqueeze_axes, "unsqueeze")]))
    if not final:
        ctx.set_out(0, y)
        return
    for k, (op, extra) in enumerate(final):
        last = k == len(final) - 1
        y = ctx.one(op, [y, *extra], out=ctx.out(0) if last else None)


def slice_(ctx: OpContext) -> None:
    """SLICE(x, begin, size): size -1 runs to the end; computed begin/size are allowed
    (ends = where(size == -1, BIG, begin + size))."""
    if ctx.const(1) is None or ctx.const(2) is None:
        _dynamic_slice(ctx)
        return
    begin = [int(v) for v in ctx.need_const(1, "begin")]
    size = [int(v) for v in ctx.need_const(2, "size")]
    ends = [BIG if s == -1 else b + s for b, s in zip(begin, size, strict=True)]
    ins = [ctx.input(0), ctx.ints(begin, "starts"), ctx.ints(ends, "ends"),
           ctx.ints(list(range(len(begin))), "axes")]  # fmt: skip
    ctx.emit("Slice", ins, outputs=[ctx.out(0)])


def _dynamic_slice(ctx: OpContext) -> None:
    n = ctx.tensor(1).shape[0] if len(ctx.tensor(1).shape) == 1 else None
    if n is None:
        raise LoweringError("begin must be a 1-D tensor")
    starts, size = _int64(ctx, 1, "starts"), _int64(ctx, 2, "size")
    to_end = ctx.one("Equal", [size, ctx.ints([-1] * n, "minus_one")])
    ends = ctx.one("Where", [to_end, ctx.ints([BIG] * n, "big"),
                             ctx.one("Add", [starts, size])])  # fmt: skip
    ins = [ctx.input(0), starts, ends, ctx.ints(list(range(n)), "axes")]
    ctx.emit("Slice", ins, outputs=[ctx.out(0)])


def gather(ctx: OpContext) -> None:
    o = ctx.opts
    if o is not None and o.BatchDims():
        raise LoweringError("batch_dims != 0 is not supported")
    axis = int(o.Axis()) if o is not None else 0
    ctx.emit("Gather", [ctx.input(0), ctx.input(1)], {"axis": axis}, outputs=[ctx.out(0)])


def gather_nd(ctx: OpContext) -> None:
    idx = _int64(ctx, 1, "indices") if ctx.const(1) is None else ctx.constant(
        ctx.const(1).astype(np.int64), f"{ctx.name}_indices")
    ctx.emit("GatherND", [ctx.input(0), idx], outputs=[ctx.out(0)])


def split(ctx: OpContext) -> None:
    axis = int(np.ravel(ctx.need_const(0, "the axis"))[0])
    n = len(ctx.op.outputs)
    outs = [ctx.out(j) for j in range(n)]
    ctx.emit("Split", [ctx.input(1)], {"axis": axis, "num_outputs": n}, outputs=outs)


def split_v(ctx: OpContext) -> None:
    sizes = [int(v) for v in ctx.need_const(1, "size_splits")]
    axis = int(np.ravel(ctx.need_const(2, "the axis"))[0])
    if -1 in sizes:
        shape = ctx.static_shape(0)
        if shape is None:
            raise LoweringError("size_splits has -1 and the input shape is unknown")
        known = sum(s for s in sizes if s != -1)
        sizes = [shape[axis] - known if s == -1 else s for s in sizes]
    outs = [ctx.out(j) for j in range(len(ctx.op.outputs))]
    ctx.emit("Split", [ctx.input(0), ctx.ints(sizes, "split")], {"axis": axis}, outputs=outs)


def pack(ctx: OpContext) -> None:
    axis = int(ctx.opts.Axis())
    rank = ctx.rank(0) + 1
    axis = axis % rank
    ax = ctx.ints([axis], "axis")
    parts = [ctx.one("Unsqueeze", [ctx.input(i), ax]) for i in range(ctx.num_inputs)]
    ctx.emit("Concat", parts, {"axis": axis}, outputs=[ctx.out(0)])


def unpack(ctx: OpContext) -> None:
    axis = int(ctx.opts.Axis())
    n = len(ctx.op.outputs)
    parts = ctx.emit("Split", [ctx.input(0)], {"axis": axis, "num_outputs": n}, outputs=n)
    ax = ctx.ints([axis], "axis")
    for j, part in enumerate(parts):
        ctx.emit("Squeeze", [part, ax], outputs=[ctx.out(j)])


def _pads(ctx: OpContext) -> list[int]:
    p = np.asarray(ctx.need_const(1, "paddings")).reshape(-1, 2)
    return [int(v) for v in p[:, 0]] + [int(v) for v in p[:, 1]]


def pad(ctx: OpContext) -> None:
    x = ctx.input(0)
    assert x is not None
    value: Value | None = None
    if ctx.has(2):
        value = ctx.input(2)
        if value is not None and value.shape not in ((), None):
            value = ctx.one("Reshape", [value, ctx.ints([], "scalar")])
    elif ctx.int_mode and ctx.tensor(0).quant is not None:
        zp = ctx.tensor(0).quant.zero_point.reshape(())
        value = ctx.constant(zp.astype(x.dtype.numpy), f"{ctx.name}_zp")
    ctx.emit("Pad", [x, ctx.ints(_pads(ctx), "pads"), value], outputs=[ctx.out(0)])


def mirror_pad(ctx: OpContext) -> None:
    mode = int(ctx.opts.Mode()) if ctx.opts is not None else 0
    pads = _pads(ctx)
    if mode == 0:  # REFLECT
        ctx.emit("Pad", [ctx.input(0), ctx.ints(pads, "pads")], {"mode": "reflect"},
                 outputs=[ctx.out(0)])  # fmt: skip
        return
    x = ctx.input(0)
    rank = len(pads) // 2
    for axis in range(rank):
        b, e = pads[axis], pads[rank + axis]
        if not b and not e:
            continue
        pieces = []
        ax = ctx.ints([axis], "axis")
        step = ctx.ints([-1], "step")
        if b:
            pieces.append(ctx.one("Slice", [x, ctx.ints([b - 1], "s"), ctx.ints([SMALL], "e"),
                                            ax, step]))
        pieces.append(x)
        if e:
            pieces.append(ctx.one("Slice", [x, ctx.ints([-1], "s"), ctx.ints([-e - 1], "e"),
                                            ax, step]))
        x = ctx.one("Concat", pieces, {"axis": axis})
    ctx.set_out(0, x)


def tile(ctx: OpContext) -> None:
    ctx.emit("Tile", [ctx.input(0), _int64(ctx, 1, "repeats")], outputs=[ctx.out(0)])


def broadcast_to(ctx: OpContext) -> None:
    ctx.emit("Expand", [ctx.input(0), _int64(ctx, 1, "shape")], outputs=[ctx.out(0)])


def fill(ctx: OpContext) -> None:
    dims = _int64(ctx, 0, "dims")
    value = ctx.const(1)
    if value is not None and ctx.tensor(1).quant is None:
        arr = np.asarray(value).reshape(1)
        ctx.emit("ConstantOfShape", [dims], {"value": arr}, outputs=[ctx.out(0)])
        return
    ctx.emit("Expand", [ctx.input(1), dims], outputs=[ctx.out(0)])


def shape(ctx: OpContext) -> None:
    out_dtype = ctx.out_tensor().dtype
    if out_dtype == DataType.INT64:
        ctx.emit("Shape", [ctx.input(0)], outputs=[ctx.out(0)])
        return
    s = ctx.one("Shape", [ctx.input(0)])
    ctx.emit("Cast", [s], {"to": int(out_dtype)}, outputs=[ctx.out(0)])


def cast(ctx: OpContext) -> None:
    to = ctx.out_tensor().dtype
    ctx.emit("Cast", [ctx.input(0)], {"to": int(to)}, outputs=[ctx.out(0)])


def quantize(ctx: OpContext) -> None:
    """float -> int (QuantizeLinear) or int -> int requantization (DQ -> Q)."""
    ctx.set_out(0, ctx.input(0))


def dequantize(ctx: OpContext) -> None:
    t = ctx.tensor(0)
    data = ctx.const(0)
    if data is not None and t.dtype in (DataType.FLOAT16, DataType.BFLOAT16):
        out = ctx.out_tensor()
        folded = Value(out.name, const=np.asarray(data, np.float32))
        ctx.low.values[ctx.op.outputs[0]] = folded
        return
    x = ctx.input(0)
    assert x is not None
    if x.dtype != DataType.FLOAT:
        x = ctx.one("Cast", [x], {"to": int(DataType.FLOAT)})
    ctx.set_out(0, x)


def densify(ctx: OpContext) -> None:
    t = ctx.tensor(0)
    if t.sparse is None or t.data is None:
        raise LoweringError("DENSIFY needs a sparse constant input")
    dense = densify_tensor(np.asarray(t.data).reshape(-1), t.shape, t.sparse)
    out = ctx.out_tensor()
    v = Value(out.name, const=dense)
    ctx.low.values[ctx.op.outputs[0]] = v
    if t.quant is not None:
        from parsers.tflite.lower import _ir_quant

        v.quant = _ir_quant(t.quant)


def reverse_v2(ctx: OpContext) -> None:
    axes = [int(a) for a in np.ravel(ctx.need_const(1, "the axes"))]
    n = len(axes)
    ins = [ctx.input(0), ctx.ints([-1] * n, "starts"), ctx.ints([SMALL] * n, "ends"),
           ctx.ints(axes, "axes"), ctx.ints([-1] * n, "steps")]  # fmt: skip
    ctx.emit("Slice", ins, outputs=[ctx.out(0)])


def _like(value: float) -> Callable[[OpContext], None]:
    def lower(ctx: OpContext) -> None:
        s = ctx.one("Shape", [ctx.input(0)])
        arr = np.asarray([value], ctx.out_tensor().dtype.numpy)
        ctx.emit("ConstantOfShape", [s], {"value": arr}, outputs=[ctx.out(0)])

    return lower


def topk_v2(ctx: OpContext) -> None:
    k = _int64(ctx, 1, "k")
    values, idx = ctx.out(0), ctx.out(1)
    if ctx.out_tensor(1).dtype == DataType.INT64:
        ctx.emit("TopK", [ctx.input(0), k], {"axis": -1}, outputs=[values, idx])
        return
    v, i = ctx.emit("TopK", [ctx.input(0), k], {"axis": -1}, outputs=2)
    ctx.emit("Identity", [v], outputs=[values])
    ctx.emit("Cast", [i], {"to": int(ctx.out_tensor(1).dtype)}, outputs=[idx])


def one_hot(ctx: OpContext) -> None:
    axis = int(ctx.opts.Axis()) if ctx.opts is not None else -1
    on, off = ctx.input(2), ctx.input(3)
    scalar = ctx.ints([1], "one")
    values = ctx.one("Concat", [ctx.one("Reshape", [off, scalar]),
                                ctx.one("Reshape", [on, scalar])], {"axis": 0})
    ins = [ctx.input(0), _int64(ctx, 1, "depth"), values]
    ctx.emit("OneHot", ins, {"axis": axis}, outputs=[ctx.out(0)])


def range_(ctx: OpContext) -> None:
    ctx.emit("Range", [ctx.input(0), ctx.input(1), ctx.input(2)], outputs=[ctx.out(0)])


def cumsum(ctx: OpContext) -> None:
    o = ctx.opts
    attrs: dict[str, Any] = {}
    if o is not None:
        attrs = {"exclusive": int(bool(o.Exclusive())), "reverse": int(bool(o.Reverse()))}
    ctx.emit("CumSum", [ctx.input(0), _int64(ctx, 1, "axis")], attrs, outputs=[ctx.out(0)])


def where(ctx: OpContext) -> None:
    nz = ctx.one("NonZero", [ctx.input(0)])
    t = ctx.one("Transpose", [nz], {"perm": [1, 0]})
    ctx.emit("Cast", [t], {"to": int(ctx.out_tensor().dtype)}, outputs=[ctx.out(0)])


LOWERINGS: dict[str, Callable[[OpContext], None]] = {
    "RESHAPE": reshape,
    "SQUEEZE": squeeze,
    "EXPAND_DIMS": expand_dims,
    "TRANSPOSE": transpose,
    "CONCATENATION": concatenation,
    "STRIDED_SLICE": strided_slice,
    "SLICE": slice_,
    "GATHER": gather,
    "GATHER_ND": gather_nd,
    "SPLIT": split,
    "SPLIT_V": split_v,
    "PACK": pack,
    "UNPACK": unpack,
    "PAD": pad,
    "PADV2": pad,
    "MIRROR_PAD": mirror_pad,
    "TILE": tile,
    "BROADCAST_TO": broadcast_to,
    "FILL": fill,
    "SHAPE": shape,
    "CAST": cast,
    "QUANTIZE": quantize,
    "DEQUANTIZE": dequantize,
    "DENSIFY": densify,
    "REVERSE_V2": reverse_v2,
    "ZEROS_LIKE": _like(0),
    "ONES_LIKE": _like(1),
    "TOPK_V2": topk_v2,
    "ONE_HOT": one_hot,
    "RANGE": range_,
    "CUMSUM": cumsum,
    "WHERE": where,
}

INT_SAFE = {
    "RESHAPE", "SQUEEZE", "EXPAND_DIMS", "TRANSPOSE", "CONCATENATION", "STRIDED_SLICE",
    "SLICE", "GATHER", "GATHER_ND", "SPLIT", "SPLIT_V", "PACK", "UNPACK", "PAD", "MIRROR_PAD",
    "TILE", "BROADCAST_TO", "REVERSE_V2",
}  # fmt: skip
