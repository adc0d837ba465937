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


# -- reinterpretation, crop/pad, caches ------------------------------------------


def _bitcast(ctx: KernelContext, x: np.ndarray) -> np.ndarray:
    to = DataType(ctx.attr("to"))
    if to == DataType.STRING or x.dtype == object:
        raise UnsupportedKernel("BitCast: string tensors not supported")
    want = to.numpy
    if want.itemsize != x.dtype.itemsize or to in (DataType.INT4, DataType.UINT4):
        raise UnsupportedKernel(f"BitCast: {x.dtype} -> {to.name.lower()} not supported")
    return x.copy(order="C").view(want)


def _center_crop_pad(ctx: KernelContext, x: np.ndarray, shape: np.ndarray) -> np.ndarray:
    target = _ints(shape)
    axes = ctx.attr("axes")
    axes = list(range(x.ndim)) if axes is None else [_norm(a, x.ndim) for a in axes]
    if len(axes) != len(target):
        raise ValueError(f"CenterCropPad: {len(target)} sizes for {len(axes)} axes")
    src = [slice(None)] * x.ndim
    dst = [slice(None)] * x.ndim
    out_shape = list(x.shape)
    for a, t in zip(axes, target, strict=True):
        dim = x.shape[a]
        out_shape[a] = t
        if t < dim:
            start = (dim - t) // 2
            src[a] = slice(start, start + t)
        elif t > dim:
            start = (t - dim) // 2
            dst[a] = slice(start, start + dim)
    out = np.zeros(out_shape, dtype=x.dtype)
    out[tuple(dst)] = x[tuple(src)]
    return out


def _tensor_scatter(
    ctx: KernelContext, cache: np.ndarray, update: np.ndarray, write: np.ndarray | None = None
) -> np.ndarray:
    axis = _norm(ctx.attr("axis"), cache.ndim)
    mode = ctx.attr("mode")
    if mode not in ("linear", "circular") or axis == 0:
        raise UnsupportedKernel(f"TensorScatter: mode {mode!r} on axis {axis} not supported")
    batch, seq, size = cache.shape[0], update.shape[axis], cache.shape[axis]
    start = np.zeros(batch, _I64) if write is None else write.reshape(-1).astype(_I64)
    pos = start[:, None] + np.arange(seq, dtype=_I64)[None, :]
    if mode == "circular":
        pos = pos % size
    if np.any(pos >= size) or np.any(pos < 0):
        raise ValueError("TensorScatter: write positions fall outside the cache")
    out = cache.copy()
    view = np.moveaxis(out, axis, 1)  # (batch, size, ...), a view of out
    view[np.arange(batch)[:, None], pos] = np.moveaxis(update, axis, 1)
    return out


def _col2im(
    ctx: KernelContext, x: np.ndarray, image_shape: np.ndarray, block_shape: np.ndarray
) -> np.ndarray:
    image, block = _ints(image_shape), _ints(block_shape)
    nd = len(image)
    dil = ctx.attr("dilations") or [1] * nd
    pads = ctx.attr("pads") or [0] * (2 * nd)
    strides = ctx.attr("strides") or [1] * nd
    n, cols, length = x.shape
    taps = int(np.prod(block))
    c = cols // taps
    padded = [image[d] + pads[d] + pads[nd + d] for d in range(nd)]
    counts = [(padded[d] - (dil[d] * (block[d] - 1) + 1)) // strides[d] + 1 for d in range(nd)]
    if int(np.prod(counts)) != length:
        raise ValueError(f"Col2Im: {length} blocks, the shapes give {counts}")
    out = np.zeros((n, c, *padded), dtype=x.dtype)
    cols_view = x.reshape(n, c, taps, *counts)
    for t, tap in enumerate(np.ndindex(*block)):  # loop over kernel taps only
        where = tuple(
            slice(tap[d] * dil[d], tap[d] * dil[d] + strides[d] * (counts[d] - 1) + 1, strides[d])
            for d in range(nd)
        )
        out[(slice(None), slice(None), *where)] += cols_view[:, :, t]
    crop = tuple(slice(pads[d], pads[d] + image[d]) for d in range(nd))
    return np.require(out[(slice(None), slice(None), *crop)], requirements="C")


def _max_unpool(
    ctx: KernelContext, x: np.ndarray, indices: np.ndarray, output_shape: np.ndarray | None = None
) -> np.ndarray:
    """Indices address the pooled-from shape; a larger ``output_shape`` pads at the end."""
    kernel = ctx.attr("kernel_shape")
    nd = len(kernel)
    strides = ctx.attr("strides") or [1] * nd
    pads = ctx.attr("pads") or [0] * (2 * nd)
    shape = [*x.shape[:2]] + [
        (d - 1) * strides[i] + kernel[i] - pads[i] - pads[nd + i]
        for i, d in enumerate(x.shape[2:])
    ]
    flat = np.zeros(int(np.prod(shape)), dtype=x.dtype)
    flat[indices.reshape(-1).astype(_I64)] = x.reshape(-1)
    if output_shape is None:
        return flat.reshape(shape)
    target = _ints(output_shape)
    if len(target) != x.ndim or any(t < s for t, s in zip(target, shape, strict=True)):
        raise ValueError(f"MaxUnpool: output_shape {target} is smaller than {shape}")
    out = np.zeros(target, dtype=x.dtype)
    out[tuple(slice(0, s) for s in shape)] = flat.reshape(shape)
    return out


def _causal_conv_with_state(
    ctx: KernelContext,
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None = None,
    past: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    if x.ndim != 3 or weight.ndim != 3 or weight.shape[1] != 1:
        raise ValueError("CausalConvWithState: input (B, C, T) and weight (C, 1, k) expected")
    act = ctx.attr("activation")
    if act not in ("none", "silu", "swish"):
        raise UnsupportedKernel(f"CausalConvWithState: activation {act!r} not supported")
    k, length = weight.shape[2], x.shape[2]
    if past is None:
        past = np.zeros((*x.shape[:2], k - 1), dtype=x.dtype)
    padded = np.concatenate([past, x], axis=2)
    w = _float_input("CausalConvWithState", padded)
    kern = _float_input("CausalConvWithState", weight)[:, 0, :].astype(w.dtype)
    out = np.zeros(x.shape, dtype=w.dtype)
    for j in range(k):  # loop over the kernel taps
        out += w[:, :, j : j + length] * kern[None, :, j, None]
    if bias is not None:
        out += bias.astype(w.dtype)[None, :, None]
    if act != "none":
        out = out * (1.0 / (1.0 + np.exp(-out)))
    state = padded[:, :, padded.shape[2] - (k - 1) :]
    return out.astype(x.dtype), np.require(state, requirements="C")


# -- strings ---------------------------------------------------------------------


def _str_input(op: str, x: np.ndarray) -> np.ndarray:
    if x.dtype != object and x.dtype.kind not in "US":
        raise UnsupportedKernel(f"{op}: dtype {x.dtype} not supported (strings only)")
    return x


def _string_split(ctx: KernelContext, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    _str_input("StringSplit", x)
    sep = ctx.attr("delimiter") or None
    maxsplit = ctx.attr("maxsplit")
    maxsplit = -1 if maxsplit is None else maxsplit
    parts = [str(v).split(sep, maxsplit) for v in x.reshape(-1)]
    width = max((len(p) for p in parts), default=0)
    y = np.empty((len(parts), width), dtype=object)
    for i, p in enumerate(parts):
        y[i] = p + [""] * (width - len(p))
    counts = np.array([len(p) for p in parts], dtype=_I64).reshape(x.shape)
    return y.reshape(*x.shape, width), counts


def _string_normalizer(ctx: KernelContext, x: np.ndarray) -> np.ndarray:
    _str_input("StringNormalizer", x)
    if x.ndim not in (1, 2) or (x.ndim == 2 and x.shape[0] != 1):
        raise UnsupportedKernel(f"StringNormalizer: shape {list(x.shape)} not supported")
    words = [str(v) for v in x.reshape(-1)]
    sensitive = bool(ctx.attr("is_case_sensitive"))
    stops = set(ctx.attr("stopwords") or [])
    if not sensitive:
        stops = {w.lower() for w in stops}
    kept = [w for w in words if (w if sensitive else w.lower()) not in stops]
    action = ctx.attr("case_change_action")
    if action == "LOWER":
        kept = [w.lower() for w in kept]
    elif action == "UPPER":
        kept = [w.upper() for w in kept]
    elif action != "NONE":
        raise UnsupportedKernel(f"StringNormalizer: case_change_action {action!r} not supported")
    out = np.array(kept or [""], dtype=object)
    return out if x.ndim == 1 else out.reshape(1, -1)


# -- linear algebra and geometry ---------------------------------------------------------


def _float_input(op: str, x: np.ndarray) -> np.ndarray:
    """``x`` in float32 (float64 stays) for the float kernels; other dtypes refused."""
    if x.dtype == np.float64:
        return x
    if x.dtype.kind == "f" or x.dtype == np.dtype(ml_dtypes.bfloat16):
        return x.astype(np.float32)
    raise UnsupportedKernel(f"{op}: dtype {x.dtype} not supported")


def _det(ctx: KernelContext, x: np.ndarray) -> np.ndarray:
    w = _float_input("Det", x)
    return np.asarray(np.linalg.det(w)).astype(x.dtype)


def _linspace(n: int, align: bool) -> np.ndarray:
    if align:
        return np.linspace(-1.0, 1.0, n) if n > 1 else np.zeros(1)
    return (np.arange(n) * 2.0 + 1.0) / n - 1.0


def _affine_grid(ctx: KernelContext, theta: np.ndarray, size: np.ndarray) -> np.ndarray:
    w = _float_input("AffineGrid", theta)
    dims = _ints(size)
    spatial = dims[2:]
    if len(spatial) not in (2, 3):
        raise UnsupportedKernel(f"AffineGrid: {len(spatial)}-D grids not supported")
    align = bool(ctx.attr("align_corners"))
    axes = [_linspace(n, align) for n in spatial]  # (D,) H, W
    mesh = np.meshgrid(*axes, indexing="ij")  # each (D,) H, W
    coords = [*reversed(mesh), np.ones_like(mesh[0])]  # x, y, (z), 1
    base = np.stack(coords, axis=-1).reshape(-1, len(coords))  # (P, nd + 1)
    grid = np.einsum("pk,njk->npj", base, w.astype(np.float64))
    return grid.reshape(dims[0], *spatial, len(spatial)).astype(theta.dtype)


def _rotary_embedding(
    ctx: KernelContext,
    x: np.ndarray,
    cos: np.ndarray,
    sin: np.ndarray,
    position_ids: np.ndarray | None = None,
) -> np.ndarray:
    w = _float_input("RotaryEmbedding", x)
    if x.ndim == 4:
        t = w.transpose(0, 2, 1, 3)  # (batch, seq, heads, head)
    elif x.ndim == 3:
        heads = ctx.attr("num_heads")
        if not heads:
            raise ValueError("RotaryEmbedding: 3-D input needs num_heads")
        t = w.reshape(x.shape[0], x.shape[1], heads, -1)
    else:
        raise ValueError(f"RotaryEmbedding: input rank {x.ndim} (3 or 4 expected)")
    dim = ctx.attr("rotary_embedding_dim") or t.shape[-1]
    wc, ws = _float_input("RotaryEmbedding", cos), _float_input("RotaryEmbedding", sin)
    if position_ids is not None:
        wc, ws = wc[position_ids.astype(_I64)], ws[position_ids.astype(_I64)]
    if wc.shape[-1] != dim // 2:
        raise ValueError(f"RotaryEmbedding: cache width {wc.shape[-1]} != {dim // 2}")
    wc, ws = wc[:, :, None, :], ws[:, :, None, :]
    rot, rest = t[..., :dim], t[..., dim:]
    if ctx.attr("interleaved"):
        x1, x2 = rot[..., 0::2], rot[..., 1::2]
    else:
        x1, x2 = rot[..., : dim // 2], rot[..., dim // 2 :]
    real, imag = wc * x1 - ws * x2, ws * x1 + wc * x2
    if ctx.attr("interleaved"):
        rot = np.stack((real, imag), axis=-1).reshape(rot.shape)
    else:
        rot = np.concatenate((real, imag), axis=-1)
    out = np.concatenate((rot, rest), axis=-1)
    out = out.reshape(x.shape) if x.ndim == 3 else out.transpose(0, 2, 1, 3)
    return np.require(out, requirements="C").astype(x.dtype)


def _corners(boxes: np.ndarray, center: bool) -> np.ndarray:
    """(N, 4) boxes -> (N, 4) [y_min, x_min, y_max, x_max]."""
    if center:
        xc, yc, w, h = boxes.T
        return np.stack([yc - h / 2, xc - w / 2, yc + h / 2, xc + w / 2], axis=1)
    y1, x1, y2, x2 = boxes.T
    return np.stack(
        [np.minimum(y1, y2), np.minimum(x1, x2), np.maximum(y1, y2), np.maximum(x1, x2)], axis=1
    )


def _iou(c: np.ndarray) -> np.ndarray:
    """Pairwise IoU of corner boxes; 0 where boxes do not overlap or have no area."""
    ih = np.minimum(c[:, None, 2], c[None, :, 2]) - np.maximum(c[:, None, 0], c[None, :, 0])
    iw = np.minimum(c[:, None, 3], c[None, :, 3]) - np.maximum(c[:, None, 1], c[None, :, 1])
    inter = np.where((ih > 0) & (iw > 0), ih * iw, 0.0)
    area = (c[:, 2] - c[:, 0]) * (c[:, 3] - c[:, 1])
    union = area[:, None] + area[None, :] - inter
    ok = (inter > 0) & (area[:, None] > 0) & (area[None, :] > 0) & (union > 0)
    with np.errstate(all="ignore"):
        return np.where(ok, inter / np.where(union > 0, union, 1), 0.0)


def _nms(
    ctx: KernelContext,
    boxes: np.ndarray,
    scores: np.ndarray,
    max_out: np.ndarray | None = None,
    iou_threshold: np.ndarray | None = None,
    score_threshold: np.ndarray | None = None,
) -> np.ndarray:
    limit = 0 if max_out is None or max_out.size == 0 else max(int(max_out.reshape(-1)[0]), 0)
    iou_t = 0.0
    if iou_threshold is not None and iou_threshold.size:
        iou_t = float(iou_threshold.reshape(-1)[0])
    has_score_t = score_threshold is not None and score_threshold.size != 0
    score_t = float(score_threshold.reshape(-1)[0]) if has_score_t else 0.0  # type: ignore[union-attr]
    center = bool(ctx.attr("center_point_box"))
    rows: list[tuple[int, int, int]] = []
    for b in range(boxes.shape[0]):
        iou = _iou(_corners(boxes[b].astype(np.float64), center))
        for c in range(scores.shape[1]):
            s = scores[b, c].astype(np.float64)
            order = np.argsort(-s, kind="stable")
            if has_score_t:
                order = order[s[order] > score_t]
            chosen: list[int] = []
            for i in order:  # greedy: the best box left, unless it overlaps a chosen one
                if len(chosen) >= limit:
                    break
                if not chosen or not np.any(iou[i, chosen] > iou_t):
                    chosen.append(int(i))
            rows.extend((b, c, i) for i in chosen)
    return np.array(rows, dtype=_I64).reshape(-1, 3)


# -- signal ------------------------------------------------------------------------------


def _as_complex(x: np.ndarray) -> np.ndarray:
    """(..., 1) real or (..., 2) real/imag -> complex128 (...)."""
    w = x.astype(np.float64)
    if x.shape[-1] == 1:
        return w[..., 0].astype(np.complex128)
    if x.shape[-1] == 2:
        return w[..., 0] + 1j * w[..., 1]
    raise ValueError(f"DFT: last dimension must be 1 or 2, got {x.shape[-1]}")


def _from_complex(z: np.ndarray, dtype: np.dtype) -> np.ndarray:
    return np.stack((z.real, z.imag), axis=-1).astype(dtype)


def _dft(
    ctx: KernelContext,
    x: np.ndarray,
    length: np.ndarray | None = None,
    axis: np.ndarray | None = None,
) -> np.ndarray:
    _float_input("DFT", x)
    a = -2 if axis is None else int(axis.reshape(-1)[0])
    a = _norm(a, x.ndim)
    if a == x.ndim - 1:
        raise ValueError("DFT: axis cannot be the last (real/imaginary) axis")
    inverse, onesided = bool(ctx.attr("inverse")), bool(ctx.attr("onesided"))
    if length is not None:
        n = int(length.reshape(-1)[0])
    else:
        n = 2 * (x.shape[a] - 1) if inverse and onesided else x.shape[a]
    z = _as_complex(x)
    if inverse and onesided:
        return np.fft.irfft(z, n=n, axis=a)[..., None].astype(x.dtype)
    if inverse:
        return _from_complex(np.fft.ifft(z, n=n, axis=a), x.dtype)
    out = np.fft.fft(z, n=n, axis=a)
    if onesided:
        out = np.take(out, np.arange(n // 2 + 1), axis=a)
    return _from_complex(out, x.dtype)


def _stft(
    ctx: KernelContext,
    signal: np.ndarray,
    frame_step: np.ndarray,
    window: np.ndarray | None = None,
    frame_length: np.ndarray | None = None,
) -> np.ndarray:
    _float_input("STFT", signal)
    step = int(frame_step.reshape(-1)[0])
    if frame_length is not None:
        size = int(frame_length.reshape(-1)[0])
    else:
        size = signal.shape[-2] if window is None else window.shape[0]
    frames = 1 + (signal.shape[1] - size) // step
    z = _as_complex(signal)  # (batch, length)
    idx = np.arange(frames)[:, None] * step + np.arange(size)[None, :]
    chunks = z[:, idx]  # (batch, frames, size)
    if window is not None:
        chunks = chunks * window.astype(np.float64)
    out = np.fft.fft(chunks, n=size, axis=-1)
    if ctx.attr("onesided"):
        out = out[..., : size // 2 + 1]
    return _from_complex(out, signal.dtype)


def _window(kind: str):
    def kernel(ctx: KernelContext, size: np.ndarray) -> np.ndarray:
        n = int(size.reshape(-1)[0])
        denom = n if ctx.attr("periodic") else n - 1
        k = np.arange(n, dtype=np.float64)
        with np.errstate(all="ignore"):
            phase = 2.0 * np.pi * k / denom
            if kind == "hann":
                w = np.sin(np.pi * k / denom) ** 2
            elif kind == "hamming":
                w = 25.0 / 46.0 - (1.0 - 25.0 / 46.0) * np.cos(phase)
            else:
                w = 0.42 - 0.5 * np.cos(phase) + 0.08 * np.cos(2.0 * phase)
        return w.astype(DataType(ctx.attr("output_datatype")).numpy)

    return kernel


def _mel_weight_matrix(
    ctx: KernelContext,
    num_mel_bins: np.ndarray,
    dft_length: np.ndarray,
    sample_rate: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
) -> np.ndarray:
    bins, dft = int(num_mel_bins.reshape(-1)[0]), int(dft_length.reshape(-1)[0])
    rate = sample_rate.reshape(-1)[0]
    lo, hi = (float(v.reshape(-1)[0]) for v in (lower, upper))
    mel_lo = 2595 * np.log1p(lo / 700) / np.log(10)
    mel_hi = 2595 * np.log1p(hi / 700) / np.log(10)
    step = (mel_hi - mel_lo) / (bins + 2)
    hz = 700 * np.expm1((np.arange(bins + 2) * step + mel_lo) / 2595 * np.log(10))
    edges = (((dft + 1) * hz) // rate).astype(_I64)
    out = np.zeros((dft // 2 + 1, bins))
    j = np.arange(dft // 2 + 1)[:, None]
    left, mid, right = edges[:-2][None, :], edges[1:-1][None, :], edges[2:][None, :]
    with np.errstate(all="ignore"):
        rise = np.where((j >= left) & (j <= mid), (j - left) / np.maximum(mid - left, 1), 0.0)
        fall = np.where((j >= mid) & (j < right), (right - j) / np.maximum(right - mid, 1), 0.0)
    out = np.where((j >= mid) & (j < right), fall, rise)
    out = np.where((mid == left) & (j == mid), 1.0, out)
    return out.astype(DataType(ctx.attr("output_datatype")).numpy)


# -- random ------------------------------------------------------------------------------


def _rng(ctx: KernelContext) -> np.random.Generator:
    rng = ctx.cache.get("rng")
    if rng is None:
        seed = ctx.attr("seed")
        rng = ctx.cache["rng"] = np.random.default_rng(None if seed is None else int(seed))
    return rng


def _random_dtype(ctx: KernelContext, like: np.ndarray | None) -> np.dtype:
    dtype = ctx.attr("dtype")
    if dtype is None:
        if like is None:
            raise ValueError("random op: no dtype")
        return like.dtype
    return DataType(dtype).numpy


def _float_dtype(op: str, dtype: np.dtype) -> np.dtype:
    if dtype.kind != "f" and dtype != np.dtype(ml_dtypes.bfloat16):
        raise UnsupportedKernel(f"{op}: dtype {dtype} not supported")
    return dtype


def _bernoulli(ctx: KernelContext, p: np.ndarray) -> np.ndarray:
    dtype = _random_dtype(ctx, p)
    draws = _rng(ctx).random(p.shape) < p.astype(np.float64)
    return draws.astype(dtype)


def _uniform(ctx: KernelContext, like: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    dtype = _float_dtype("RandomUniform", _random_dtype(ctx, like))
    low, high = ctx.attr("low"), ctx.attr("high")
    return (_rng(ctx).random(shape) * (high - low) + low).astype(dtype)


def _normal(ctx: KernelContext, like: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    dtype = _float_dtype("RandomNormal", _random_dtype(ctx, like))
    draws = _rng(ctx).normal(ctx.attr("mean"), ctx.attr("scale"), shape)
    return draws.astype(dtype)


KERNELS.update(
    {
        "BitCast": _bitcast,
        "CenterCropPad": _center_crop_pad,
        "TensorScatter": _tensor_scatter,
        "Col2Im": _col2im,
        "MaxUnpool": _max_unpool,
        "CausalConvWithState": _causal_conv_with_state,
        "StringSplit": _string_split,
        "StringNormalizer": _string_normalizer,
        "Det": _det,
        "AffineGrid": _affine_grid,
        "RotaryEmbedding": _rotary_embedding,
        "NonMaxSuppression": _nms,
        "DFT": _dft,
        "STFT": _stft,
        "HannWindow": _window("hann"),
        "HammingWindow": _window("hamming"),
        "BlackmanWindow": _window("blackman"),
        "MelWeightMatrix": _mel_weight_matrix,
        "Bernoulli": _bernoulli,
        "RandomUniform": lambda ctx: _uniform(ctx, None, tuple(ctx.attr("shape"))),
        "RandomNormal": lambda ctx: _normal(ctx, None, tuple(ctx.attr("shape"))),
        "RandomUniformLike": lambda ctx, x: _uniform(ctx, x, x.shape),
        "RandomNormalLike": lambda ctx, x: _normal(ctx, x, x.shape),
    }
)
