"""Tensor-manipulation kernels: reshaping, indexing, gather/scatter, padding, casts.

Semantics: the ONNX operator spec, latest opset (see ir/ops/tensor.py). Kernels are
pure data movement wherever the op is, so they run on every dtype NumPy and
ml_dtypes hold (float16, bfloat16, float8, int4/uint4, bool, strings); arithmetic
ones (scatter reductions, Range, casts) keep the input dtype exactly.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

from converter.executor.registry import KernelContext, UnsupportedKernel
from ir.dtypes import DataType
from ir.ops.tensor import range_length, shape_range, split_sizes

__all__ = ["KERNELS"]

_I64 = np.int64


def _ints(a: np.ndarray | None) -> list[int]:
    return [] if a is None else [int(v) for v in np.asarray(a).reshape(-1)]


def _norm(axis: int, rank: int) -> int:
    if not -rank <= axis < max(rank, 1):
        raise ValueError(f"axis {axis} out of range for rank {rank}")
    return axis + rank if axis < 0 else axis


def _wrap(indices: np.ndarray, dim: int | np.ndarray) -> np.ndarray:
    """Negative indices counted from the end, as int64."""
    idx = indices.astype(_I64, copy=False)
    return np.where(idx < 0, idx + dim, idx)


# -- shape ops -----------------------------------------------------------------


def _reshape(ctx: KernelContext, x: np.ndarray, shape: np.ndarray) -> np.ndarray:
    target = _ints(shape)
    if not ctx.attr("allowzero"):
        target = [x.shape[i] if t == 0 else t for i, t in enumerate(target)]
    return x.reshape(target)


def _flatten(ctx: KernelContext, x: np.ndarray) -> np.ndarray:
    axis = ctx.attr("axis")
    axis = axis + x.ndim if axis < 0 else axis
    outer = int(np.prod(x.shape[:axis], dtype=_I64))
    return x.reshape(outer, int(np.prod(x.shape[axis:], dtype=_I64)))


def _transpose(ctx: KernelContext, x: np.ndarray) -> np.ndarray:
    return np.transpose(x, ctx.attr("perm"))


def _squeeze(ctx: KernelContext, x: np.ndarray, axes: np.ndarray | None = None) -> np.ndarray:
    if axes is None:
        return np.squeeze(x)
    return np.squeeze(x, axis=tuple(_norm(a, x.ndim) for a in _ints(axes)))


def _unsqueeze(ctx: KernelContext, x: np.ndarray, axes: np.ndarray) -> np.ndarray:
    ax = _ints(axes)
    return np.expand_dims(x, tuple(_norm(a, x.ndim + len(ax)) for a in ax))


def _concat(ctx: KernelContext, *xs: np.ndarray | None) -> np.ndarray:
    arrays = [x for x in xs if x is not None]
    return np.concatenate(arrays, axis=_norm(ctx.attr("axis"), arrays[0].ndim))


def _split(
    ctx: KernelContext, x: np.ndarray, split: np.ndarray | None = None
) -> tuple[np.ndarray, ...]:
    axis = _norm(ctx.attr("axis"), x.ndim)
    dim = x.shape[axis]
    if split is not None:
        sizes = _ints(split)
    else:
        n = ctx.attr("num_outputs") or ctx.num_outputs
        if ctx.attr("num_outputs") is None and dim % n:
            raise ValueError(f"Split: dim {dim} not divisible into {n} outputs")
        sizes = split_sizes(dim, n)
    if sum(sizes) != dim:
        raise ValueError(f"Split: sizes {sizes} do not add up to {dim}")
    return tuple(np.split(x, np.cumsum(sizes)[:-1], axis=axis))


def _slice(
    ctx: KernelContext,
    x: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    axes: np.ndarray | None = None,
    steps: np.ndarray | None = None,
) -> np.ndarray:
    st, en = _ints(starts), _ints(ends)
    ax = list(range(len(st))) if axes is None else [_norm(a, x.ndim) for a in _ints(axes)]
    sp = [1] * len(st) if steps is None else _ints(steps)
    index = [slice(None)] * x.ndim
    for a, s, e, p in zip(ax, st, en, sp, strict=True):
        if p == 0:
            raise ValueError("Slice: step 0")
        index[a] = slice(s, e, p)  # Python's clamping equals ONNX's for int64 bounds
    return x[tuple(index)]


def _expand(ctx: KernelContext, x: np.ndarray, shape: np.ndarray) -> np.ndarray:
    out = np.broadcast_shapes(x.shape, tuple(_ints(shape)))
    return np.array(np.broadcast_to(x, out))


def _tile(ctx: KernelContext, x: np.ndarray, repeats: np.ndarray) -> np.ndarray:
    return np.tile(x, _ints(repeats))


def _pad(
    ctx: KernelContext,
    x: np.ndarray,
    pads: np.ndarray,
    value: np.ndarray | None = None,
    axes: np.ndarray | None = None,
) -> np.ndarray:
    p = _ints(pads)
    ax = list(range(x.ndim)) if axes is None else [_norm(a, x.ndim) for a in _ints(axes)]
    if len(p) != 2 * len(ax):
        raise ValueError(f"Pad: {len(p)} pads for {len(ax)} axes")
    width = [[0, 0] for _ in range(x.ndim)]
    for i, a in enumerate(ax):
        width[a] = [p[i], p[len(ax) + i]]
    crop = tuple(slice(max(-b, 0), x.shape[i] - max(-e, 0)) for i, (b, e) in enumerate(width))
    x = x[crop]  # negative pads crop
    width = [[max(b, 0), max(e, 0)] for b, e in width]
    mode = ctx.attr("mode")
    if mode == "constant":
        fill = np.zeros((), x.dtype) if value is None else np.asarray(value, x.dtype).reshape(())
        return np.pad(x, width, mode="constant", constant_values=fill)
    if mode not in ("reflect", "edge", "wrap"):
        raise UnsupportedKernel(f"Pad: mode {mode!r} not supported")
    return np.pad(x, width, mode=mode)


def _shape(ctx: KernelContext, x: np.ndarray) -> np.ndarray:
    start, end = shape_range(x.ndim, ctx.attr("start"), ctx.attr("end"))
    return np.array(x.shape[start:end], dtype=_I64)


def _size(ctx: KernelContext, x: np.ndarray) -> np.ndarray:
    return np.array(x.size, dtype=_I64)


# -- casts -----------------------------------------------------------------------

_FLOAT8_SATURATE = {
    np.dtype(ml_dtypes.float8_e4m3fn),
    np.dtype(ml_dtypes.float8_e4m3fnuz),
    np.dtype(ml_dtypes.float8_e5m2),
    np.dtype(ml_dtypes.float8_e5m2fnuz),
}


def cast_array(x: np.ndarray, to: DataType, saturate: bool = True) -> np.ndarray:
    """ONNX Cast of ``x`` to ``to``: floats truncate into ints, float8 saturates."""
    want = to.numpy
    if x.dtype == want:
        return x.copy()
    if to == DataType.STRING:
        is_float = x.dtype != object and DataType.from_numpy(x.dtype).is_float
        flat = [_to_str(v, is_float) for v in x.reshape(-1)]
        return np.array(flat, dtype=object).reshape(x.shape)
    if x.dtype == object or x.dtype.kind in "US":
        return _from_str(x, want)
    with np.errstate(invalid="ignore", over="ignore"):
        if want in _FLOAT8_SATURATE:
            src = x.astype(np.float32) if x.dtype.itemsize < 4 else x
            if saturate:
                hi = float(ml_dtypes.finfo(want).max)
                src = np.clip(src, -hi, hi)  # NaN stays NaN, inf becomes +-max
            return src.astype(want)
        if want.kind in "iu" and x.dtype.kind == "f" and x.dtype.itemsize < 4:
            x = x.astype(np.float32)  # bfloat16/float8 -> int goes through float32
        return x.astype(want)


def _to_str(v: np.generic, is_float: bool) -> str:
    """Shortest round-trip text; special floats use the spec's NaN / INF / -INF literals."""
    if is_float:
        f = float(v)
        if np.isnan(f):
            return "NaN"
        if np.isinf(f):
            return "INF" if f > 0 else "-INF"
    return str(v)


def _from_str(x: np.ndarray, want: np.dtype) -> np.ndarray:
    flat = [v.decode() if isinstance(v, bytes) else str(v) for v in x.reshape(-1).tolist()]
    if want.kind in "iub":
        vals = np.array([int(float(s)) if "." in s or "e" in s.lower() else int(s) for s in flat])
        return vals.astype(want).reshape(x.shape)
    return np.array([float(s) for s in flat], dtype=np.float64).astype(want).reshape(x.shape)


def _cast(ctx: KernelContext, x: np.ndarray) -> np.ndarray:
    return cast_array(x, DataType(ctx.attr("to")), bool(ctx.attr("saturate")))


def _cast_like(ctx: KernelContext, x: np.ndarray, target: np.ndarray) -> np.ndarray:
    return cast_array(x, DataType.from_numpy(target.dtype), bool(ctx.attr("saturate")))


# -- generators ------------------------------------------------------------------


def _constant_of_shape(ctx: KernelContext, shape: np.ndarray) -> np.ndarray:
    value = ctx.attr("value")
    value = np.zeros(1, np.float32) if value is None else np.asarray(value)
    return np.full(tuple(_ints(shape)), value.reshape(-1)[0], dtype=value.dtype)


def _range(
    ctx: KernelContext, start: np.ndarray, limit: np.ndarray, delta: np.ndarray
) -> np.ndarray:
    dtype = start.dtype
    work = dtype
    if dtype in (np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16)):
        stash = DataType(ctx.attr("stash_type"))
        if stash not in (DataType.FLOAT, DataType.DOUBLE):
            raise UnsupportedKernel(f"Range: stash_type {stash.name} not supported")
        work = stash.numpy
    s, lim, d = (np.asarray(v).astype(work).reshape(-1)[0] for v in (start, limit, delta))
    n = range_length(s.item(), lim.item(), d.item())
    return (s + np.arange(n, dtype=work) * d).astype(dtype, copy=False)


def _one_hot(
    ctx: KernelContext, indices: np.ndarray, depth: np.ndarray, values: np.ndarray
) -> np.ndarray:
    n = int(np.asarray(depth).reshape(-1)[0])
    idx = indices.astype(_I64) if indices.dtype.kind in "iub" else np.trunc(indices).astype(_I64)
    idx = np.where(idx < 0, idx + n, idx)
    hot = idx[..., None] == np.arange(n, dtype=_I64)
    off, on = values.reshape(-1)[0], values.reshape(-1)[1]
    out = np.where(hot, on, off).astype(values.dtype, copy=False)
    axis = _norm(ctx.attr("axis"), indices.ndim + 1)
    return np.moveaxis(out, -1, axis)


def _eye_like(ctx: KernelContext, x: np.ndarray) -> np.ndarray:
    dtype = x.dtype if ctx.attr("dtype") is None else DataType(ctx.attr("dtype")).numpy
    if x.ndim != 2:
        raise ValueError(f"EyeLike: input must be 2-D, got rank {x.ndim}")
    return np.eye(x.shape[0], x.shape[1], k=ctx.attr("k"), dtype=dtype)


def _trilu(ctx: KernelContext, x: np.ndarray, k: np.ndarray | None = None) -> np.ndarray:
    kk = 0 if k is None else int(np.asarray(k).reshape(-1)[0])
    rows, cols = x.shape[-2:]
    keep = np.arange(cols)[None, :] - np.arange(rows)[:, None]
    mask = keep >= kk if ctx.attr("upper") else keep <= kk
    return np.where(mask, x, np.zeros((), x.dtype))


# -- indexing --------------------------------------------------------------------


def _gather(ctx: KernelContext, x: np.ndarray, indices: np.ndarray) -> np.ndarray:
    axis = _norm(ctx.attr("axis"), x.ndim)
    return np.take(x, _wrap(indices, x.shape[axis]), axis=axis)


def _gather_elements(ctx: KernelContext, x: np.ndarray, indices: np.ndarray) -> np.ndarray:
    axis = _norm(ctx.attr("axis"), x.ndim)
    return x[_element_index(indices, axis, x.shape[axis])]


def _element_index(indices: np.ndarray, axis: int, dim: int) -> tuple[np.ndarray, ...]:
    """Index tuple addressing data[..., indices[i], ...] at every position i of ``indices``."""
    grid = list(np.indices(indices.shape, sparse=True))
    grid[axis] = _wrap(indices, dim)
    return tuple(grid)


def _gather_nd(ctx: KernelContext, x: np.ndarray, indices: np.ndarray) -> np.ndarray:
    b = ctx.attr("batch_dims")
    k = indices.shape[-1]
    batch = x.shape[:b]
    nb = int(np.prod(batch, dtype=_I64))
    data = x.reshape(nb, *x.shape[b:])
    idx = _wrap(indices.reshape(nb, -1, k), np.array(x.shape[b : b + k], dtype=_I64))
    rows = np.arange(nb)[:, None]
    out = data[(rows, *np.moveaxis(idx, -1, 0))]
    return out.reshape(*indices.shape[:-1], *x.shape[b + k :])


_REDUCE = {"add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}


def _scatter_into(out: np.ndarray, where: tuple, updates: np.ndarray, reduction: str) -> None:
    if reduction == "none":
        out[where] = updates
    elif reduction in _REDUCE:
        _REDUCE[reduction].at(out, where, updates)
    else:
        raise UnsupportedKernel(f"Scatter: reduction {reduction!r} not supported")


def _scatter_elements(
    ctx: KernelContext, x: np.ndarray, indices: np.ndarray, updates: np.ndarray
) -> np.ndarray:
    axis = _norm(ctx.attr("axis"), x.ndim)
    out = x.copy()
    _scatter_into(out, _element_index(indices, axis, x.shape[axis]), updates, ctx.attr("reduction"))
    return out


def _scatter_nd(
    ctx: KernelContext, x: np.ndarray, indices: np.ndarray, updates: np.ndarray
) -> np.ndarray:
    k = indices.shape[-1]
    idx = _wrap(indices.reshape(-1, k), np.array(x.shape[:k], dtype=_I64))
    upd = updates.reshape(idx.shape[0], *x.shape[k:])
    out = x.copy()
    _scatter_into(out, tuple(idx.T), upd, ctx.attr("reduction"))
    return out


def _nonzero(ctx: KernelContext, x: np.ndarray) -> np.ndarray:
    if x.ndim == 0:
        return np.zeros((0, int(bool(x))), dtype=_I64)
    return np.array(np.nonzero(x), dtype=_I64).reshape(x.ndim, -1)


def _compress(ctx: KernelContext, x: np.ndarray, condition: np.ndarray) -> np.ndarray:
    axis = ctx.attr("axis")
    cond = condition.reshape(-1).astype(bool)
    if axis is None:
        return np.compress(cond, x.reshape(-1))
    return np.compress(cond, x, axis=_norm(axis, x.ndim))


def _topk(ctx: KernelContext, x: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    axis = _norm(ctx.attr("axis"), x.ndim)
    kk = int(np.asarray(k).reshape(-1)[0])
    n = x.shape[axis]
    if ctx.attr("largest"):
        # stable descending order (ties keep the lower index first)
        order = np.argsort(np.flip(x, axis), axis=axis, kind="stable")
        order = (n - 1) - np.flip(order, axis)
    else:
        order = np.argsort(x, axis=axis, kind="stable")
    order = np.take(order, np.arange(kk), axis=axis).astype(_I64)
    return np.take_along_axis(x, order, axis=axis), order


def _reverse_sequence(ctx: KernelContext, x: np.ndarray, lens: np.ndarray) -> np.ndarray:
    b_ax, t_ax = ctx.attr("batch_axis"), ctx.attr("time_axis")
    t = np.arange(x.shape[t_ax])
    n = lens.astype(_I64)
    src = np.where(t[None, :] < n[:, None], n[:, None] - 1 - t[None, :], t[None, :])  # (B, T)
    shape = [1] * x.ndim
    shape[b_ax], shape[t_ax] = x.shape[b_ax], x.shape[t_ax]
    src = src if b_ax < t_ax else src.T
    idx = np.broadcast_to(src.reshape(shape), x.shape)
    return np.take_along_axis(x, idx, axis=t_ax)


def _unique(ctx: KernelContext, x: np.ndarray) -> tuple[np.ndarray, ...]:
    axis = ctx.attr("axis")
    ax = None if axis is None else _norm(axis, x.ndim)
    y, first, inverse, counts = np.unique(
        x, return_index=True, return_inverse=True, return_counts=True, axis=ax
    )
    inverse = inverse.reshape(-1)
    if not ctx.attr("sorted"):
        order = np.argsort(first, kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        y = np.take(y, order, axis=0 if ax is None else ax)
        first, counts, inverse = first[order], counts[order], rank[inverse]
    outs = (y, first.astype(_I64), inverse.astype(_I64), counts.astype(_I64))
    return outs[: ctx.num_outputs]


# -- layout ------------------------------------------------------------------------


def _to_nchw(x: np.ndarray, fmt: str) -> np.ndarray:
    if x.ndim != 4:
        raise ValueError(f"expected a 4-D input, got rank {x.ndim}")
    return x if fmt == "NCHW" else np.transpose(x, (0, 3, 1, 2))


def _from_nchw(y: np.ndarray, fmt: str) -> np.ndarray:
    return y if fmt == "NCHW" else np.transpose(y, (0, 2, 3, 1))


def _depth_to_space(ctx: KernelContext, x: np.ndarray) -> np.ndarray:
    fmt, bs = ctx.attr("format"), ctx.attr("blocksize")
    v = _to_nchw(x, fmt)
    n, c, h, w = v.shape
    if ctx.attr("mode") == "DCR":
        t = v.reshape(n, bs, bs, c // (bs * bs), h, w).transpose(0, 3, 4, 1, 5, 2)
    else:
        t = v.reshape(n, c // (bs * bs), bs, bs, h, w).transpose(0, 1, 4, 2, 5, 3)
    return _from_nchw(t.reshape(n, c // (bs * bs), h * bs, w * bs), fmt)


def _space_to_depth(ctx: KernelContext, x: np.ndarray) -> np.ndarray:
    fmt, bs = ctx.attr("format"), ctx.attr("blocksize")
    v = _to_nchw(x, fmt)
    n, c, h, w = v.shape
    t = v.reshape(n, c, h // bs, bs, w // bs, bs)
    perm = (0, 3, 5, 1, 2, 4) if ctx.attr("mode") == "DCR" else (0, 1, 3, 5, 2, 4)
    return _from_nchw(t.transpose(perm).reshape(n, c * bs * bs, h // bs, w // bs), fmt)


KERNELS = {
    "Reshape": _reshape,
    "Flatten": _flatten,
    "Transpose": _transpose,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Concat": _concat,
    "Split": _split,
    "Slice": _slice,
    "Gather": _gather,
    "GatherElements": _gather_elements,
    "GatherND": _gather_nd,
    "ScatterElements": _scatter_elements,
    "ScatterND": _scatter_nd,
    "Expand": _expand,
    "Tile": _tile,
    "Pad": _pad,
    "Shape": _shape,
    "Size": _size,
    "Cast": _cast,
    "CastLike": _cast_like,
    "ConstantOfShape": _constant_of_shape,
    "Range": _range,
    "OneHot": _one_hot,
    "NonZero": _nonzero,
    "TopK": _topk,
    "Trilu": _trilu,
    "DepthToSpace": _depth_to_space,
    "SpaceToDepth": _space_to_depth,
    "EyeLike": _eye_like,
    "Compress": _compress,
    "ReverseSequence": _reverse_sequence,
    "Unique": _unique,
}
