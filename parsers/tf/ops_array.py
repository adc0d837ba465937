"""Lowerings of TF array ops: reshapes, slicing, gathers, padding, shape queries, lists.

Index inputs (shapes, axes, begin/end, paddings) become int64 as the IR wants, folded
when constant. ``StridedSlice`` handles every mask: its spec is expanded into one ONNX
``Slice`` over the input axes, a ``Squeeze`` of the shrunk axes and an ``Unsqueeze`` of
the new ones. ``Reshape`` keeps TF's literal zeros (``allowzero=1`` when a constant shape
has one). TensorList ops act on the stacked tensor (see parsers.tf.context.TensorList).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ir import DataType, Graph, Value
from parsers.tf.context import INT64_MAX, INT64_MIN, OpContext, TensorList

__all__ = ["LOWERINGS"]

_PASSTHROUGH = (
    "Identity", "StopGradient", "Snapshot", "PreventGradient", "EnsureShape", "CheckNumerics",
    "PlaceholderWithDefault", "ReadVariableOp",
)  # fmt: skip


def _identity(ctx: OpContext) -> Any:
    return ctx.inputs[0]


def _identity_n(ctx: OpContext) -> list[Any]:
    return list(ctx.inputs)


def _reshape(ctx: OpContext) -> Value:
    shape = ctx.const_of(1)
    if shape is not None:
        attrs = {"allowzero": 1} if np.any(np.asarray(shape) == 0) else {}
        return ctx.op_("Reshape", [ctx.x(0), ctx.i64(np.asarray(shape).reshape(-1))], **attrs)
    return ctx.op_("Reshape", [ctx.x(0), ctx.as_i64(ctx.x(1))])


def _squeeze(ctx: OpContext) -> Value:
    dims = ctx.attr("squeeze_dims", [])
    if not dims:
        return ctx.op_("Squeeze", [ctx.x(0)])
    return ctx.op_("Squeeze", [ctx.x(0), ctx.i64(dims)])


def _expand_dims(ctx: OpContext) -> Value:
    axis = ctx.const_of(1)
    axes = (
        ctx.i64(np.asarray(axis).reshape(-1))
        if axis is not None
        else ctx.op_("Reshape", [ctx.as_i64(ctx.x(1)), ctx.i64([-1])])
    )
    return ctx.op_("Unsqueeze", [ctx.x(0), axes])


def _transpose(ctx: OpContext) -> Value:
    perm = [int(p) for p in np.asarray(ctx.need_const(1, "the permutation")).reshape(-1)]
    x = ctx.x(0)
    if x.const is not None:
        return ctx.const(np.ascontiguousarray(np.transpose(x.const, perm)))
    return ctx.op_("Transpose", [x], perm=perm)


def _concat(axis_first: bool) -> Any:
    def lower(ctx: OpContext) -> Value:
        n = len(ctx.inputs)
        axis_i = 0 if axis_first else n - 1
        axis = int(np.asarray(ctx.need_const(axis_i, "the axis")).reshape(-1)[0])
        values = [ctx.x(i) for i in range(n) if i != axis_i]
        if len(values) == 1:
            return values[0]
        if all(v.const is not None for v in values):
            return ctx.const(np.concatenate([v.const for v in values], axis=axis))
        return ctx.op_("Concat", values, axis=axis)

    return lower


def _pack(ctx: OpContext) -> Value:
    axis = int(ctx.attr("axis", 0))
    values = [ctx.x(i) for i in range(len(ctx.inputs))]
    if all(v.const is not None for v in values):
        return ctx.const(np.stack([v.const for v in values], axis=axis))
    parts = [ctx.op_("Unsqueeze", [v, ctx.i64([axis])]) for v in values]
    return parts[0] if len(parts) == 1 else ctx.op_("Concat", parts, axis=axis)


def _unpack(ctx: OpContext) -> list[Value]:
    num = int(ctx.attr("num"))
    axis = int(ctx.attr("axis", 0))
    x = ctx.x(0)
    if num == 1:
        return [ctx.op_("Squeeze", [x, ctx.i64([axis])])]
    parts = ctx.op_("Split", [x], n_out=num, axis=axis, num_outputs=num)
    return [ctx.op_("Squeeze", [p, ctx.i64([axis])]) for p in parts]


def _split(ctx: OpContext) -> list[Value]:
    axis = int(np.asarray(ctx.need_const(0, "the axis")).reshape(-1)[0])
    num = int(ctx.attr("num_split"))
    if num == 1:
        return [ctx.x(1)]
    return ctx.op_("Split", [ctx.x(1)], n_out=num, axis=axis, num_outputs=num)


def _split_v(ctx: OpContext) -> list[Value]:
    sizes = [int(s) for s in np.asarray(ctx.need_const(1, "size_splits")).reshape(-1)]
    axis = int(np.asarray(ctx.need_const(2, "the axis")).reshape(-1)[0])
    if len(sizes) == 1:
        return [ctx.x(0)]
    if -1 in sizes:
        shape = ctx.shape(0)
        dim = None if shape is None else shape[axis]
        if not isinstance(dim, int):
            ctx.fail("a -1 split size needs the axis length known")
        sizes[sizes.index(-1)] = dim - (sum(sizes) + 1)
    return ctx.op_("Split", [ctx.x(0), ctx.i64(sizes)], n_out=len(sizes), axis=axis)


def _strided_slice(ctx: OpContext) -> Value:
    x = ctx.x(0)
    begin = np.asarray(ctx.need_const(1, "begin")).reshape(-1)
    end = np.asarray(ctx.need_const(2, "end")).reshape(-1)
    strides = np.asarray(ctx.need_const(3, "strides")).reshape(-1)
    bm, em = int(ctx.attr("begin_mask", 0)), int(ctx.attr("end_mask", 0))
    elm, nam = int(ctx.attr("ellipsis_mask", 0)), int(ctx.attr("new_axis_mask", 0))
    sam = int(ctx.attr("shrink_axis_mask", 0))
    n = len(begin)
    consumed = sum(1 for i in range(n) if not (nam >> i) & 1 and not (elm >> i) & 1)
    ell_len = 0
    if elm:
        first = (elm & -elm).bit_length() - 1
        if any(not (elm >> i) & 1 for i in range(first + 1, n)):
            ell_len = ctx.need_rank(0) - consumed
    axes, starts, ends, steps, shrink, new = [], [], [], [], [], []
    in_axis = out_pos = 0
    for i in range(n):
        bit = 1 << i
        if elm & bit:
            in_axis += ell_len
            out_pos += ell_len
            continue
        if nam & bit:
            new.append(out_pos)
            out_pos += 1
            continue
        b, e, s = int(begin[i]), int(end[i]), int(strides[i])
        if sam & bit:
            axes.append(in_axis)
            starts.append(b)
            ends.append(INT64_MAX if b == -1 else b + 1)
            steps.append(1)
            shrink.append(in_axis)
            in_axis += 1
            continue
        if s == 0:
            ctx.fail("stride 0")
        if bm & bit:
            b = 0 if s > 0 else INT64_MAX
        if em & bit:
            e = INT64_MAX if s > 0 else INT64_MIN
        if not (b == 0 and e == INT64_MAX and s == 1):
            axes.append(in_axis)
            starts.append(b)
            ends.append(e)
            steps.append(s)
        in_axis += 1
        out_pos += 1
    out = x
    if axes:
        out = ctx.op_("Slice", [x, ctx.i64(starts), ctx.i64(ends), ctx.i64(axes), ctx.i64(steps)])
    if shrink:
        out = ctx.op_("Squeeze", [out, ctx.i64(shrink)])
    if new:
        out = ctx.op_("Unsqueeze", [out, ctx.i64(new)])
    if out is x:
        out = ctx.op_("Identity", [x])
    return out


def _slice(ctx: OpContext) -> Value:
    x = ctx.x(0)
    begin, size = ctx.const_of(1), ctx.const_of(2)
    if begin is not None and size is not None:
        b = np.asarray(begin, np.int64).reshape(-1)
        sz = np.asarray(size, np.int64).reshape(-1)
        e = np.where(sz == -1, INT64_MAX, b + sz)
        return ctx.op_("Slice", [x, ctx.i64(b), ctx.i64(e), ctx.i64(np.arange(len(b)))])
    bv, sv = ctx.as_i64(ctx.x(1)), ctx.as_i64(ctx.x(2))
    shape = ctx.x(1).shape
    if shape is None or not isinstance(shape[0], int):
        ctx.fail("begin needs a known length")
    e = ctx.op_(
        "Where",
        [ctx.op_("Equal", [sv, ctx.i64(-1)]), ctx.i64(INT64_MAX), ctx.op_("Add", [bv, sv])],
    )
    return ctx.op_("Slice", [x, bv, e, ctx.i64(np.arange(shape[0]))])


def _gather(ctx: OpContext) -> Value:
    axis = 0
    if ctx.op == "GatherV2":
        axis = int(np.asarray(ctx.need_const(2, "the axis")).reshape(-1)[0])
        if int(ctx.attr("batch_dims", 0)) != 0:
            ctx.fail("batch_dims != 0 is not supported")
    return ctx.op_("Gather", [ctx.x(0), ctx.x(1)], axis=axis)


def _gather_nd(ctx: OpContext) -> Value:
    return ctx.op_("GatherND", [ctx.x(0), ctx.as_i64(ctx.x(1))])


def _pads(ctx: OpContext) -> Value:
    p = ctx.const_of(1)
    if p is not None:
        p = np.asarray(p, np.int64).reshape(-1, 2)
        return ctx.i64(np.concatenate([p[:, 0], p[:, 1]]))
    flat = ctx.op_("Reshape", [ctx.op_("Transpose", [ctx.x(1)], perm=[1, 0]), ctx.i64([-1])])
    return ctx.as_i64(flat)


def _pad(ctx: OpContext) -> Value:
    x = ctx.x(0)
    if ctx.op == "MirrorPad":
        mode = str(ctx.attr("mode")).upper()
        if mode != "REFLECT":
            ctx.fail(f"MirrorPad mode {mode} has no IR equivalent")
        return ctx.op_("Pad", [x, _pads(ctx)], mode="reflect")
    value = ctx.x(2) if ctx.op == "PadV2" and len(ctx.inputs) > 2 else None
    return ctx.op_("Pad", [x, _pads(ctx), value])


def _shape(ctx: OpContext) -> Value:
    x = ctx.x(0)
    want = ctx.attr("out_type", DataType.INT32)
    if x.is_static:
        return ctx.const(np.asarray(x.shape, dtype=want.numpy))
    out = ctx.op_("Shape", [x])
    return out if want == DataType.INT64 else ctx.op_("Cast", [out], to=int(want))


def _shape_n(ctx: OpContext) -> list[Value]:
    want = ctx.attr("out_type", DataType.INT32)
    outs = []
    for i in range(len(ctx.inputs)):
        out = ctx.op_("Shape", [ctx.x(i)])
        outs.append(out if want == DataType.INT64 else ctx.op_("Cast", [out], to=int(want)))
    return outs


def _size(ctx: OpContext) -> Value:
    want = ctx.attr("out_type", DataType.INT32)
    out = ctx.op_("Size", [ctx.x(0)])
    return out if want == DataType.INT64 else ctx.op_("Cast", [out], to=int(want))


def _rank(ctx: OpContext) -> Value:
    r = ctx.rank(0)
    if r is not None:
        return ctx.const(np.asarray(r, np.int32))
    size = ctx.op_("Size", [ctx.op_("Shape", [ctx.x(0)])])
    return ctx.op_("Cast", [size], to=int(DataType.INT32))


def _fill(ctx: OpContext) -> Value:
    dims, value = ctx.const_of(0), ctx.const_of(1)
    if dims is not None and value is not None:
        return ctx.const(np.full(np.asarray(dims).reshape(-1), value))
    return ctx.op_("Expand", [ctx.x(1), ctx.as_i64(ctx.x(0))])


def _like(fill: float) -> Any:
    def lower(ctx: OpContext) -> Value:
        x = ctx.x(0)
        if x.is_static:
            return ctx.const(np.full(x.shape, fill, dtype=x.dtype.numpy))
        return ctx.op_("Expand", [ctx.scalar_like(fill, x), ctx.op_("Shape", [x])])

    return lower


def _tile(ctx: OpContext) -> Value:
    return ctx.op_("Tile", [ctx.x(0), ctx.as_i64(ctx.x(1))])


def _broadcast_to(ctx: OpContext) -> Value:
    return ctx.op_("Expand", [ctx.x(0), ctx.as_i64(ctx.x(1))])


def _range(ctx: OpContext) -> Value:
    start, limit, delta = ctx.const_of(0), ctx.const_of(1), ctx.const_of(2)
    want = ctx.attr("Tidx", None)
    if start is not None and limit is not None and delta is not None:
        dt = want.numpy if isinstance(want, DataType) else np.asarray(start).dtype
        return ctx.const(np.arange(start, limit, delta).astype(dt))
    return ctx.op_("Range", [ctx.x(0), ctx.x(1), ctx.x(2)])


def _select(ctx: OpContext) -> Value:
    cond, a, b = ctx.x(0), ctx.x(1), ctx.x(2)
    if ctx.op == "Select" and cond.rank == 1 and a.rank is not None and a.rank > 1:
        cond = ctx.op_("Reshape", [cond, ctx.i64([-1] + [1] * (a.rank - 1))])
    return ctx.op_("Where", [cond, a, b])


def _reverse(ctx: OpContext) -> Value:
    axes = [int(a) for a in np.asarray(ctx.need_const(1, "the axes")).reshape(-1)]
    if not axes:
        return ctx.x(0)
    k = len(axes)
    return ctx.op_(
        "Slice",
        [ctx.x(0), ctx.i64([-1] * k), ctx.i64([INT64_MIN] * k), ctx.i64(axes), ctx.i64([-1] * k)],
    )


def _one_hot(ctx: OpContext) -> Value:
    on, off = ctx.x(2), ctx.x(3)
    values = ctx.op_("Concat", [ctx.op_("Reshape", [v, ctx.i64([1])]) for v in (off, on)], axis=0)
    depth = ctx.op_("Reshape", [ctx.as_i64(ctx.x(1)), ctx.i64([1])])
    return ctx.op_("OneHot", [ctx.x(0), depth, values], axis=int(ctx.attr("axis", -1)))


def _top_k(ctx: OpContext) -> list[Value]:
    k = ctx.op_("Reshape", [ctx.as_i64(ctx.x(1)), ctx.i64([1])])
    values, idx = ctx.op_("TopK", [ctx.x(0), k], n_out=2, axis=-1, largest=1, sorted=1)
    want = ctx.attr("index_type", DataType.INT32)
    return [values, idx if want == DataType.INT64 else ctx.op_("Cast", [idx], to=int(want))]


def _where(ctx: OpContext) -> Value:
    return ctx.op_("Transpose", [ctx.op_("NonZero", [ctx.x(0)])], perm=[1, 0])


# -- TensorList (TensorArray v2) -------------------------------------------------------
def _list_from_tensor(ctx: OpContext) -> TensorList:
    x = ctx.x(0)
    return TensorList(x, x.dtype)


def _list_reserve(ctx: OpContext) -> TensorList:
    return TensorList(None, ctx.attr("element_dtype", DataType.UNDEFINED))


def _list_stack(ctx: OpContext) -> Value:
    lst = ctx.inputs[0]
    if not isinstance(lst, TensorList) or lst.tensor is None:
        ctx.fail("the TensorList's contents are not known at conversion time")
    return lst.tensor


def _list_get(ctx: OpContext) -> Value:
    lst = ctx.inputs[0]
    if not isinstance(lst, TensorList) or lst.tensor is None:
        ctx.fail("the TensorList's contents are not known at conversion time")
    return ctx.op_("Gather", [lst.tensor, ctx.x(1)], axis=0)


# -- control flow ----------------------------------------------------------------------
def _if(ctx: OpContext) -> list[Value]:
    from parsers.tf.lower import Builder

    cond = ctx.x(0)
    args = ctx.inputs[1:]
    branches = []
    for key in ("then_branch", "else_branch"):
        g = Graph(name=f"{ctx.name}/{key}")
        inner = Builder(ctx.b.s, g, ctx.b)
        outs = inner.call_function(ctx.attr(key), args)
        if any(not isinstance(v, Value) for v in outs):
            ctx.fail("an If branch returns a TensorList")
        g.outputs = [
            v if v.producer is not None and v.producer.graph is g
            else inner.emit("Identity", [v], hint="branch_out")[0]
            for v in outs
        ]  # fmt: skip
        branches.append(g)
    if cond.dtype != DataType.BOOL:
        cond = ctx.op_("Cast", [cond], to=int(DataType.BOOL))
    n = len(branches[0].outputs)
    outs = ctx.op_("If", [cond], n_out=n, then_branch=branches[0], else_branch=branches[1])
    return outs if n > 1 else [outs]


def _while(ctx: OpContext) -> list[Any]:
    from parsers.tf.rnn import lower_while

    return lower_while(ctx)


LOWERINGS: dict[str, Any] = {name: _identity for name in _PASSTHROUGH}
LOWERINGS.update({
    "IdentityN": _identity_n, "Reshape": _reshape, "Squeeze": _squeeze,
    "ExpandDims": _expand_dims, "Transpose": _transpose, "ConjugateTranspose": _transpose,
    "ConcatV2": _concat(False), "Concat": _concat(True), "Pack": _pack, "Unpack": _unpack,
    "Split": _split, "SplitV": _split_v, "StridedSlice": _strided_slice, "Slice": _slice,
    "GatherV2": _gather, "Gather": _gather, "GatherNd": _gather_nd, "Pad": _pad,
    "PadV2": _pad, "MirrorPad": _pad, "Shape": _shape, "ShapeN": _shape_n, "Size": _size,
    "Rank": _rank, "Fill": _fill, "ZerosLike": _like(0.0), "OnesLike": _like(1.0),
    "Tile": _tile, "BroadcastTo": _broadcast_to, "Range": _range, "Select": _select,
    "SelectV2": _select, "ReverseV2": _reverse, "OneHot": _one_hot, "TopKV2": _top_k,
    "Where": _where, "TensorListFromTensor": _list_from_tensor,
    "TensorListReserve": _list_reserve, "TensorListStack": _list_stack,
    "TensorListGetItem": _list_get, "If": _if, "StatelessIf": _if, "While": _while,
    "StatelessWhile": _while,
})  # fmt: skip
