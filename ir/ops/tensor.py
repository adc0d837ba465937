"""Tensor-manipulation ops: reshaping, indexing, gathering/scattering, padding, casts.

Semantics are those of the ONNX operator spec, latest opset (onnx 1.23, opset 28):
names, attributes, defaults and input order match ONNX exactly. Inputs that older
opsets had as attributes are inputs here (Squeeze/Unsqueeze ``axes``, Split ``split``,
Slice ``starts/ends/axes/steps``, Pad ``pads/constant_value/axes``, TopK ``K``);
parsers upgrade the older forms.

liteconv additions: DepthToSpace and SpaceToDepth carry ``format`` ("NCHW" or
"NHWC"); with NHWC the channel axis is last and the spatial axes are 1 and 2.

Further ONNX ops declared here (same rules):

- BitCast reinterprets the bits as ``to`` (same element width); CenterCropPad
  center-crops or zero-pads ``axes`` to ``shape``; TensorScatter writes ``update``
  into a KV cache along ``axis`` at per-batch ``write_indices`` (``circular``
  wraps); Col2Im folds sliding blocks back into an image (overlaps add);
  MaxUnpool scatters values to the flat output positions MaxPool's Indices name;
  CausalConvWithState is a depthwise causal 1-D convolution over
  concat(past_state, input) returning the last k-1 steps as the new state
  (``activation`` "silu"/"swish" applies x * sigmoid(x)).
- Strings: StringSplit (``Y`` padded with "" to the longest split, ``Z`` counts),
  StringNormalizer (drops ``stopwords`` elements, then changes case; all
  dropped gives [""] or [[""]]).
- Linear algebra and geometry: Det over the last two axes; AffineGrid (2-D and
  3-D, ``align_corners``); RotaryEmbedding (3-D/4-D input, optional
  ``position_ids`` indexing the caches, ``interleaved``); NonMaxSuppression
  (greedy per batch and class, boxes suppressed when IoU > threshold, scores
  kept when > score_threshold; output rows [batch, class, box]).
- Signal: DFT (opset 20 form: ``dft_length`` and ``axis`` inputs; last axis
  holds 1 real or 2 real/imag values), STFT, Hann/Hamming/Blackman windows
  (``periodic``), MelWeightMatrix (the ONNX reference's triangular filters).
- Random (trait RANDOM; a ``seed`` makes runs repeatable): Bernoulli,
  RandomUniform, RandomNormal and their ``*Like`` forms.

Shape inference is exact whenever the inputs allow it: constant shape-like inputs
(``Value.const``) are read, integer dims are computed, symbolic dims are kept when
the op passes them through unchanged and become None otherwise.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

from ir.core import Dim, Node, Shape
from ir.dtypes import DataType
from ir.ops.base import FLOAT, INT, INTS, REQUIRED, STRING, STRINGS, TENSOR, Trait, op
from ir.ops.infer import (
    Result,
    broadcast_shapes,
    in_dtype,
    in_shape,
    same_as_input,
    static_ints,
)

__all__ = ["OPS"]

NOP, SHAPE, LAYOUT = Trait.NO_OP_CANDIDATE, Trait.SHAPE_ONLY, Trait.LAYOUT_SENSITIVE
RANDOM = Trait.RANDOM
I64 = DataType.INT64

_ZERO_F32 = np.zeros(1, dtype=np.float32)
_ZERO_F32.flags.writeable = False


# -- private helpers -----------------------------------------------------------


def _axis(axis: int, rank: int) -> int | None:
    """``axis`` mapped into [0, rank), or None when out of range."""
    if -rank <= axis < rank:
        return axis + rank if axis < 0 else axis
    return None


def _axes(axes: Sequence[int], rank: int) -> list[int] | None:
    """Distinct axes mapped into [0, rank), or None when one is out of range or repeated."""
    out = [_axis(a, rank) for a in axes]
    if None in out or len(set(out)) != len(out):
        return None
    return out  # type: ignore[return-value]


def _prod(dims: Sequence[Dim]) -> Dim:
    """Product of dims: an int when all are ints, a lone symbol times ones stays."""
    if any(d == 0 for d in dims):
        return 0
    rest = [d for d in dims if d != 1]
    if all(isinstance(d, int) for d in rest):
        return math.prod(rest)  # type: ignore[arg-type]
    if len(rest) == 1 and isinstance(rest[0], str):
        return rest[0]
    return None


def _mul(d: Dim, k: int) -> Dim:
    if k == 1:
        return d
    return d * k if isinstance(d, int) else None


def _div(d: Dim, k: int) -> Dim:
    if k == 1:
        return d
    return d // k if isinstance(d, int) else None


def _merge(a: Dim, b: Dim) -> Dim:
    """Two dims known to be equal: keep the most informative one."""
    if isinstance(a, int):
        return a
    if isinstance(b, int):
        return b
    return a if a is not None else b


def _const_rank1(node: Node, index: int) -> int | None:
    """Length of a 1-D input whose length is statically known (shape-like inputs)."""
    shape = in_shape(node, index)
    if shape is not None and len(shape) == 1 and isinstance(shape[0], int):
        return shape[0]
    return None


def _clamp_slice(start: int, end: int, step: int, dim: int) -> int:
    """Number of elements an ONNX Slice keeps on one axis (clamping as ONNX does)."""
    return len(range(*slice(start, end, step).indices(dim)))


def _factor(dims: Sequence[Dim]) -> tuple[int, Counter[str]] | None:
    """A product of dims as (integer part, symbol multiset); None when a dim is unknown."""
    num, syms = 1, Counter[str]()
    for d in dims:
        if d is None:
            return None
        if isinstance(d, str):
            syms[d] += 1
        else:
            num *= d
    return num, syms


def _quotient(total: Sequence[Dim], known: Sequence[Dim]) -> Dim:
    """prod(total) / prod(known) when it is an int or a single symbol, else None."""
    a, b = _factor(total), _factor(known)
    if a is None or b is None or b[1] - a[1]:
        return None
    if a[0] == 0 and not a[1]:
        return 0
    if b[0] == 0 or a[0] % b[0]:
        return None
    num, syms = a[0] // b[0], a[1] - b[1]
    if not syms:
        return num
    if num == 1 and sum(syms.values()) == 1:
        return next(iter(syms))
    return None


# -- inference functions -------------------------------------------------------


def _infer_reshape(node: Node) -> Result:
    dtype, shape = in_dtype(node), in_shape(node)
    target = static_ints(node, 1)
    if target is None:
        n = _const_rank1(node, 1)
        return [(dtype, None if n is None else (None,) * n)]
    allowzero = node.attr("allowzero")
    out: list[Dim] = []
    for i, t in enumerate(target):
        if t == 0 and not allowzero:
            out.append(shape[i] if shape is not None and i < len(shape) else None)
        else:
            out.append(None if t == -1 else t)
    if -1 in target and shape is not None:
        known = [d for d, t in zip(out, target, strict=True) if t != -1]
        out[target.index(-1)] = _quotient(shape, known)
    return [(dtype, tuple(out))]


def _infer_flatten(node: Node) -> Result:
    dtype, shape = in_dtype(node), in_shape(node)
    if shape is None:
        return [(dtype, (None, None))]
    axis = node.attr("axis")
    axis = axis + len(shape) if axis < 0 else axis
    return [(dtype, (_prod(shape[:axis]), _prod(shape[axis:])))]


def _infer_transpose(node: Node) -> Result:
    dtype, shape = in_dtype(node), in_shape(node)
    if shape is None:
        return [(dtype, None)]
    perm = node.attr("perm")
    if perm is None:
        perm = range(len(shape) - 1, -1, -1)
    if sorted(perm) != list(range(len(shape))):
        return [(dtype, None)]
    return [(dtype, tuple(shape[p] for p in perm))]


def _infer_squeeze(node: Node) -> Result:
    dtype, shape = in_dtype(node), in_shape(node)
    if shape is None:
        return [(dtype, None)]
    axes = static_ints(node, 1)
    if axes is None:
        if node.input(1) is not None:
            return [(dtype, None)]
        if not all(isinstance(d, int) for d in shape):
            return [(dtype, None)]  # a symbolic dim might be 1
        return [(dtype, tuple(d for d in shape if d != 1))]
    drop = _axes(axes, len(shape))
    if drop is None:
        return [(dtype, None)]
    return [(dtype, tuple(d for i, d in enumerate(shape) if i not in drop))]


def _infer_unsqueeze(node: Node) -> Result:
    dtype, shape = in_dtype(node), in_shape(node)
    axes = static_ints(node, 1)
    if shape is None:
        return [(dtype, None)]
    if axes is None:
        n = _const_rank1(node, 1)
        return [(dtype, None if n is None else (None,) * (len(shape) + n))]
    rank = len(shape) + len(axes)
    ones = _axes(axes, rank)
    if ones is None:
        return [(dtype, None)]
    rest = iter(shape)
    return [(dtype, tuple(1 if i in ones else next(rest) for i in range(rank)))]


def _infer_concat(node: Node) -> Result:
    shapes = [v.shape for v in node.inputs if v is not None]
    dtype = in_dtype(node)
    known = [s for s in shapes if s is not None]
    if not known:
        return [(dtype, None)]
    rank = len(known[0])
    axis = _axis(node.attr("axis"), rank)
    if axis is None or any(len(s) != rank for s in known):
        return [(dtype, None)]
    out: list[Dim] = []
    for i in range(rank):
        if i == axis:
            dims = [s[i] for s in shapes] if len(known) == len(shapes) else [None]
            out.append(sum(dims) if all(isinstance(d, int) for d in dims) else None)  # type: ignore[arg-type]
        else:
            d: Dim = None
            for s in known:
                d = _merge(d, s[i])
            out.append(d)
    return [(dtype, tuple(out))]


def split_sizes(dim: int, n: int) -> list[int]:
    """Chunk sizes of Split with ``num_outputs=n``: ceil(dim/n) each, last smaller."""
    chunk = -(-dim // n)
    sizes = [chunk] * (n - 1)
    return [*sizes, dim - chunk * (n - 1)]


def _infer_split(node: Node) -> Result:
    dtype, shape = in_dtype(node), in_shape(node)
    n = len(node.outputs)
    if shape is None:
        return [(dtype, None)] * n
    axis = _axis(node.attr("axis"), len(shape))
    if axis is None:
        return [(dtype, None)] * n
    dim = shape[axis]
    sizes: list[Dim] | None = static_ints(node, 1)
    if sizes is None and node.input(1) is not None:
        sizes = [None] * n
    if sizes is None:
        if isinstance(dim, int):
            num = node.attr("num_outputs")
            sizes = list(split_sizes(dim, num if num else n))
            if num is None and dim % n:
                sizes = [None] * n
        else:
            sizes = [None] * n
    return [(dtype, (*shape[:axis], s, *shape[axis + 1 :])) for s in sizes[:n]]


def _infer_slice(node: Node) -> Result:
    dtype, shape = in_dtype(node), in_shape(node)
    if shape is None:
        return [(dtype, None)]
    rank = len(shape)
    starts, ends = static_ints(node, 1), static_ints(node, 2)
    axes = static_ints(node, 3)
    if axes is not None:
        axes = _axes(axes, rank)
    if node.input(3) is not None and axes is None:
        return [(dtype, (None,) * rank)]  # which axes are sliced is unknown
    steps = static_ints(node, 4)
    out = list(shape)
    n = len(starts) if starts is not None else (len(axes) if axes is not None else rank)
    axes = list(range(min(n, rank))) if axes is None else axes
    exact = starts is not None and ends is not None
    exact = exact and (node.input(4) is None or steps is not None)
    lengths = {len(v) for v in (starts, ends, steps) if v is not None}
    if lengths - {len(axes)}:
        return [(dtype, (None,) * rank)]
    for i, a in enumerate(axes):
        d = shape[a]
        step = 1 if steps is None else steps[i]
        if exact and isinstance(d, int) and step:
            out[a] = _clamp_slice(starts[i], ends[i], step, d)  # type: ignore[index]
        else:
            out[a] = None
    return [(dtype, tuple(out))]


def _infer_gather(node: Node) -> Result:
    dtype, shape, ishape = in_dtype(node), in_shape(node), in_shape(node, 1)
    if shape is None or ishape is None:
        return [(dtype, None)]
    axis = _axis(node.attr("axis"), len(shape))
    if axis is None:
        return [(dtype, None)]
    return [(dtype, (*shape[:axis], *ishape, *shape[axis + 1 :]))]


def _infer_gather_elements(node: Node) -> Result:
    return [(in_dtype(node), in_shape(node, 1))]


def _infer_gather_nd(node: Node) -> Result:
    dtype, shape, ishape = in_dtype(node), in_shape(node), in_shape(node, 1)
    if shape is None or ishape is None or not ishape or not isinstance(ishape[-1], int):
        return [(dtype, None)]
    b = node.attr("batch_dims")
    k = ishape[-1]
    return [(dtype, (*ishape[:-1], *shape[b + k :]))]


def _infer_expand(node: Node) -> Result:
    dtype, shape = in_dtype(node), in_shape(node)
    target = static_ints(node, 1)
    if target is not None:
        try:
            return [(dtype, broadcast_shapes(shape, tuple(target)))]
        except ValueError:
            return [(dtype, None)]
    n = _const_rank1(node, 1)
    if n is None or shape is None:
        return [(dtype, None)]
    rank = max(n, len(shape))
    return [(dtype, (None,) * rank)]


def _infer_tile(node: Node) -> Result:
    dtype, shape = in_dtype(node), in_shape(node)
    reps = static_ints(node, 1)
    if shape is None:
        return [(dtype, None)]
    if reps is None or len(reps) != len(shape):
        return [(dtype, (None,) * len(shape))]
    return [(dtype, tuple(_mul(d, r) for d, r in zip(shape, reps, strict=True)))]


def _infer_pad(node: Node) -> Result:
    dtype, shape = in_dtype(node), in_shape(node)
    if shape is None:
        return [(dtype, None)]
    pads = static_ints(node, 1)
    rank = len(shape)
    axes = list(range(rank)) if node.input(3) is None else static_ints(node, 3)
    axes = None if axes is None else _axes(axes, rank)
    if pads is None or axes is None or len(pads) != 2 * len(axes):
        return [(dtype, (None,) * rank)]
    out = list(shape)
    n = len(axes)
    for i, a in enumerate(axes):
        extra = pads[i] + pads[n + i]
        out[a] = out[a] + extra if isinstance(out[a], int) else (out[a] if extra == 0 else None)
    return [(dtype, tuple(out))]


def shape_range(rank: int, start: int, end: int | None) -> tuple[int, int]:
    """The [start, end) of Shape's output after ONNX clamping."""
    end = rank if end is None else end
    start = min(max(start + rank if start < 0 else start, 0), rank)
    end = min(max(end + rank if end < 0 else end, 0), rank)
    return start, max(end, start)


def _infer_shape(node: Node) -> Result:
    shape = in_shape(node)
    if shape is None:
        return [(I64, (None,))]
    start, end = shape_range(len(shape), node.attr("start"), node.attr("end"))
    return [(I64, (end - start,))]


def _infer_cast(node: Node) -> Result:
    return [(DataType(node.attr("to")), in_shape(node))]


def _infer_cast_like(node: Node) -> Result:
    return [(in_dtype(node, 1), in_shape(node))]


def _infer_constant_of_shape(node: Node) -> Result:
    value = node.attr("value")
    dtype = DataType.FLOAT if value is None else DataType.from_numpy(value.dtype)
    target = static_ints(node, 0)
    if target is not None:
        return [(dtype, tuple(target))]
    n = _const_rank1(node, 0)
    return [(dtype, None if n is None else (None,) * n)]


def range_length(start: float, limit: float, delta: float) -> int:
    """Number of elements of Range: max(ceil((limit - start) / delta), 0)."""
    return max(math.ceil((limit - start) / delta), 0)


def _infer_range(node: Node) -> Result:
    dtype = in_dtype(node)
    vals = [node.input(i) for i in range(3)]
    if all(v is not None and v.const is not None for v in vals):
        start, limit, delta = (v.const.reshape(-1)[0].item() for v in vals)  # type: ignore[union-attr]
        if delta:
            return [(dtype, (range_length(start, limit, delta),))]
    return [(dtype, (None,))]


def _infer_one_hot(node: Node) -> Result:
    dtype, shape = in_dtype(node, 2), in_shape(node)
    if shape is None:
        return [(dtype, None)]
    depth = node.input(1)
    d: Dim = None
    if depth is not None and depth.const is not None:
        d = int(depth.const.reshape(-1)[0])
    rank = len(shape) + 1
    axis = node.attr("axis")
    axis = axis + rank if axis < 0 else axis
    return [(dtype, (*shape[:axis], d, *shape[axis:]))]


def _infer_nonzero(node: Node) -> Result:
    shape = in_shape(node)
    return [(I64, (None if shape is None else len(shape), None))]


def _infer_topk(node: Node) -> Result:
    dtype, shape = in_dtype(node), in_shape(node)
    if shape is None:
        return [(dtype, None), (I64, None)]
    axis = _axis(node.attr("axis"), len(shape))
    k = static_ints(node, 1)
    if axis is None:
        return [(dtype, None), (I64, None)]
    out = (*shape[:axis], None if k is None else k[0], *shape[axis + 1 :])
    return [(dtype, out), (I64, out)]


def spatial_axes(fmt: str) -> tuple[int, int, int]:
    """(channel, height, width) axes of a 4-D tensor in ``fmt`` (NCHW or NHWC)."""
    return (3, 1, 2) if fmt == "NHWC" else (1, 2, 3)


def _infer_depth_to_space(node: Node) -> Result:
    return _infer_block(node, inverse=False)


def _infer_space_to_depth(node: Node) -> Result:
    return _infer_block(node, inverse=True)


def _infer_block(node: Node, inverse: bool) -> Result:
    dtype, shape = in_dtype(node), in_shape(node)
    if shape is None or len(shape) != 4:
        return [(dtype, None if shape is None else (None,) * len(shape))]
    b = node.attr("blocksize")
    c, h, w = spatial_axes(node.attr("format"))
    out = list(shape)
    if inverse:
        out[c], out[h], out[w] = _mul(shape[c], b * b), _div(shape[h], b), _div(shape[w], b)
    else:
        out[c], out[h], out[w] = _div(shape[c], b * b), _mul(shape[h], b), _mul(shape[w], b)
    return [(dtype, tuple(out))]


def _infer_eye_like(node: Node) -> Result:
    dtype = node.attr("dtype")
    return [(in_dtype(node) if dtype is None else DataType(dtype), in_shape(node))]


def _infer_compress(node: Node) -> Result:
    dtype, shape = in_dtype(node), in_shape(node)
    axis = node.attr("axis")
    cond = node.input(1)
    count: Dim = None
    if cond is not None and cond.const is not None:
        flags = cond.const.reshape(-1).astype(bool)
        if axis is not None and shape is not None:
            a = _axis(axis, len(shape))
            if a is not None and isinstance(shape[a], int):
                flags = flags[: shape[a]]
        count = int(flags.sum())
    if axis is None:
        return [(dtype, (count,))]
    if shape is None:
        return [(dtype, None)]
    a = _axis(axis, len(shape))
    if a is None:
        return [(dtype, None)]
    return [(dtype, (*shape[:a], count, *shape[a + 1 :]))]


def _infer_unique(node: Node) -> Result:
    dtype, shape = in_dtype(node), in_shape(node)
    axis = node.attr("axis")
    y: Shape | None
    if axis is None:
        y = (None,)
        n = None if shape is None else _prod(shape)
    elif shape is None or _axis(axis, len(shape)) is None:
        y, n = None, None
    else:
        a = _axis(axis, len(shape))
        y = (*shape[:a], None, *shape[a + 1 :])  # type: ignore[misc]
        n = shape[a]  # type: ignore[index]
    full = [(dtype, y), (I64, (None,)), (I64, (n,)), (I64, (None,))]
    return full[: len(node.outputs)]


def _infer_bitcast(node: Node) -> Result:
    return [(DataType(node.attr("to")), in_shape(node))]


def _infer_center_crop_pad(node: Node) -> Result:
    dtype, shape = in_dtype(node), in_shape(node)
    target = static_ints(node, 1)
    if shape is None:
        return [(dtype, None)]
    rank = len(shape)
    axes = node.attr("axes")
    axes = list(range(rank)) if axes is None else _axes(axes, rank)
    if target is None or axes is None or len(target) != len(axes):
        return [(dtype, (None,) * rank)]
    out = list(shape)
    for a, t in zip(axes, target, strict=True):
        out[a] = t
    return [(dtype, tuple(out))]


def _infer_string_split(node: Node) -> Result:
    shape = in_shape(node)
    return [
        (DataType.STRING, None if shape is None else (*shape, None)),
        (I64, shape),
    ]


def _infer_string_normalizer(node: Node) -> Result:
    shape = in_shape(node)
    return [(DataType.STRING, None if shape is None else (*shape[:-1], None))]


def _infer_det(node: Node) -> Result:
    shape = in_shape(node)
    return [(in_dtype(node), None if shape is None else tuple(shape[:-2]))]


def _infer_window(node: Node) -> Result:
    size = static_ints(node, 0)
    return [(DataType(node.attr("output_datatype")), (None if size is None else size[0],))]


def _infer_mel(node: Node) -> Result:
    bins, dft = static_ints(node, 0), static_ints(node, 1)
    rows = None if dft is None else dft[0] // 2 + 1
    return [(DataType(node.attr("output_datatype")), (rows, None if bins is None else bins[0]))]


def _infer_dft(node: Node) -> Result:
    dtype, shape = in_dtype(node), in_shape(node)
    if shape is None or len(shape) < 2:
        return [(dtype, None)]
    out: list[Dim] = list(shape)
    out[-1] = 1 if node.attr("inverse") and node.attr("onesided") else 2
    axis = static_ints(node, 2)
    length = static_ints(node, 1)
    if node.input(2) is not None and axis is None:
        return [(dtype, (*[None] * (len(shape) - 1), out[-1]))]
    a = _axis(-2 if axis is None else axis[0], len(shape))
    if a is None:
        return [(dtype, None)]
    n = length[0] if length is not None else (None if node.input(1) is not None else shape[a])
    if node.attr("inverse") and node.attr("onesided"):
        n = None if length is None and node.input(1) is None else n
        out[a] = n if length is not None else None
    elif node.attr("onesided"):
        out[a] = n // 2 + 1 if isinstance(n, int) else None
    else:
        out[a] = n
    return [(dtype, tuple(out))]


def _infer_stft(node: Node) -> Result:
    dtype, shape = in_dtype(node), in_shape(node)
    batch = shape[0] if shape else None
    return [(dtype, (batch, None, None, 2))]


def _infer_nms(node: Node) -> Result:
    return [(I64, (None, 3))]


def _infer_affine_grid(node: Node) -> Result:
    size = static_ints(node, 1)
    if size is None:
        n = _const_rank1(node, 1)
        return [(in_dtype(node), None if n is None else (None,) * (n - 1) + (n - 2,))]
    return [(in_dtype(node), (size[0], *size[2:], len(size) - 2))]


def _infer_col2im(node: Node) -> Result:
    dtype, shape = in_dtype(node), in_shape(node)
    image, block = static_ints(node, 1), static_ints(node, 2)
    if shape is None or image is None:
        return [(dtype, None)]
    c: Dim = None
    if block is not None and isinstance(shape[1], int):
        c = shape[1] // math.prod(block)
    return [(dtype, (shape[0], c, *image))]


def _infer_max_unpool(node: Node) -> Result:
    dtype, shape = in_dtype(node), in_shape(node)
    target = static_ints(node, 2)
    if target is not None:
        return [(dtype, tuple(target))]
    if shape is None or node.input(2) is not None:
        return [(dtype, None if shape is None else (None,) * len(shape))]
    kernel = node.attr("kernel_shape")
    nd = len(kernel)
    if len(shape) != nd + 2:
        return [(dtype, (None,) * len(shape))]
    strides = node.attr("strides") or [1] * nd
    pads = node.attr("pads") or [0] * (2 * nd)
    out: list[Dim] = list(shape[:2])
    for i, d in enumerate(shape[2:]):
        grow = kernel[i] - pads[i] - pads[nd + i]
        out.append((d - 1) * strides[i] + grow if isinstance(d, int) else None)
    return [(dtype, tuple(out))]


def _infer_causal_conv(node: Node) -> Result:
    dtype, shape, w = in_dtype(node), in_shape(node), in_shape(node, 1)
    k = w[2] if w is not None and len(w) == 3 and isinstance(w[2], int) else None
    if shape is None or len(shape) != 3:
        return [(dtype, shape), (dtype, None)]
    state = (shape[0], shape[1], None if k is None else k - 1)
    return [(dtype, shape), (dtype, state)]


def _infer_random(node: Node) -> Result:
    return [(DataType(node.attr("dtype")), tuple(node.attr("shape")))]


def _infer_random_like(node: Node) -> Result:
    dtype = node.attr("dtype")
    return [(in_dtype(node) if dtype is None else DataType(dtype), in_shape(node))]


# -- declarations --------------------------------------------------------------

OPS = (
    op(
        "Reshape",
        "data shape",
        "reshaped",
        attrs={"allowzero": INT(0)},
        traits={NOP},
        infer=_infer_reshape,
    ),
    op("Flatten", "input", "output", attrs={"axis": INT(1)}, infer=_infer_flatten),
    op(
        "Transpose",
        "data",
        "transposed",
        attrs={"perm": INTS(None)},
        traits={NOP},
        infer=_infer_transpose,
        doc="perm defaults to the reversed axes.",
    ),
    op("Squeeze", "data axes?", "squeezed", traits={NOP}, infer=_infer_squeeze),
    op("Unsqueeze", "data axes", "expanded", traits={NOP}, infer=_infer_unsqueeze),
    op(
        "Concat",
        "inputs*",
        "concat_result",
        attrs={"axis": INT(REQUIRED)},
        traits={NOP},
        infer=_infer_concat,
    ),
    op(
        "Split",
        "input split?",
        "outputs*",
        attrs={"axis": INT(0), "num_outputs": INT(None)},
        infer=_infer_split,
        doc="With num_outputs, chunks are ceil(dim/n) and the last one is smaller.",
    ),
    op(
        "Slice",
        "data starts ends axes? steps?",
        "output",
        traits={NOP},
        infer=_infer_slice,
    ),
    op("Gather", "data indices", "output", attrs={"axis": INT(0)}, infer=_infer_gather),
    op(
        "GatherElements",
        "data indices",
        "output",
        attrs={"axis": INT(0)},
        infer=_infer_gather_elements,
    ),
    op(
        "GatherND",
        "data indices",
        "output",
        attrs={"batch_dims": INT(0)},
        infer=_infer_gather_nd,
    ),
    op(
        "ScatterElements",
        "data indices updates",
        "output",
        attrs={"axis": INT(0), "reduction": STRING("none")},
        infer=same_as_input,
        doc="reduction: none | add | mul | max | min.",
    ),
    op(
        "ScatterND",
        "data indices updates",
        "output",
        attrs={"reduction": STRING("none")},
        infer=same_as_input,
        doc="reduction: none | add | mul | max | min.",
    ),
    op("Expand", "input shape", "output", traits={NOP}, infer=_infer_expand),
    op("Tile", "input repeats", "output", traits={NOP}, infer=_infer_tile),
    op(
        "Pad",
        "data pads constant_value? axes?",
        "output",
        attrs={"mode": STRING("constant")},
        traits={NOP},
        infer=_infer_pad,
        doc="mode: constant | reflect | edge | wrap; negative pads crop.",
    ),
    op(
        "Shape",
        "data",
        "shape",
        attrs={"start": INT(0), "end": INT(None)},
        traits={SHAPE},
        infer=_infer_shape,
    ),
    op("Size", "data", "size", traits={SHAPE}, infer=lambda node: [(I64, ())]),
    op(
        "Cast",
        "input",
        "output",
        attrs={"to": INT(REQUIRED), "saturate": INT(1), "round_mode": STRING("up")},
        traits={NOP},
        infer=_infer_cast,
        doc="to: an ir.DataType value. Float to integer truncates toward zero.",
    ),
    op(
        "CastLike",
        "input target_type",
        "output",
        attrs={"saturate": INT(1), "round_mode": STRING("up")},
        infer=_infer_cast_like,
    ),
    op(
        "ConstantOfShape",
        "input",
        "output",
        attrs={"value": TENSOR(_ZERO_F32)},
        infer=_infer_constant_of_shape,
        doc="value: a one-element tensor (default float32 0).",
    ),
    op(
        "Range",
        "start limit delta",
        "output",
        attrs={"stash_type": INT(1)},
        infer=_infer_range,
        doc="stash_type: accumulation type (FLOAT or DOUBLE) for float16/bfloat16.",
    ),
    op(
        "OneHot",
        "indices depth values",
        "output",
        attrs={"axis": INT(-1)},
        infer=_infer_one_hot,
    ),
    op("NonZero", "X", "Y", infer=_infer_nonzero),
    op(
        "TopK",
        "X K",
        "Values Indices",
        attrs={"axis": INT(-1), "largest": INT(1), "sorted": INT(1)},
        infer=_infer_topk,
    ),
    op("Trilu", "input k?", "output", attrs={"upper": INT(1)}, infer=same_as_input),
    op(
        "DepthToSpace",
        "input",
        "output",
        attrs={"blocksize": INT(REQUIRED), "mode": STRING("DCR"), "format": STRING("NCHW")},
        traits={LAYOUT},
        infer=_infer_depth_to_space,
    ),
    op(
        "SpaceToDepth",
        "input",
        "output",
        attrs={"blocksize": INT(REQUIRED), "mode": STRING("DCR"), "format": STRING("NCHW")},
        traits={LAYOUT},
        infer=_infer_space_to_depth,
    ),
    op(
        "EyeLike",
        "input",
        "output",
        attrs={"dtype": INT(None), "k": INT(0)},
        infer=_infer_eye_like,
    ),
    op(
        "Compress",
        "input condition",
        "output",
        attrs={"axis": INT(None)},
        infer=_infer_compress,
    ),
    op(
        "ReverseSequence",
        "input sequence_lens",
        "Y",
        attrs={"batch_axis": INT(1), "time_axis": INT(0)},
        infer=same_as_input,
    ),
    op(
        "Unique",
        "X",
        "Y indices? inverse_indices? counts?",
        attrs={"axis": INT(None), "sorted": INT(1)},
        infer=_infer_unique,
    ),
    op("BitCast", "input", "output", attrs={"to": INT(REQUIRED)}, infer=_infer_bitcast),
    op(
        "MaxUnpool",
        "X I output_shape?",
        "output",
        attrs={"kernel_shape": INTS(REQUIRED), "pads": INTS(None), "strides": INTS(None)},
        infer=_infer_max_unpool,
    ),
    op(
        "CausalConvWithState",
        "input weight bias? past_state?",
        "output present_state",
        attrs={"activation": STRING("none")},
        infer=_infer_causal_conv,
    ),
    op(
        "CenterCropPad",
        "input_data shape",
        "output_data",
        attrs={"axes": INTS(None)},
        infer=_infer_center_crop_pad,
    ),
    op(
        "TensorScatter",
        "past_cache update write_indices?",
        "present_cache",
        attrs={"axis": INT(-2), "mode": STRING("linear")},
        infer=same_as_input,
    ),
    op(
        "Col2Im",
        "input image_shape block_shape",
        "output",
        attrs={"dilations": INTS(None), "pads": INTS(None), "strides": INTS(None)},
        infer=_infer_col2im,
    ),
    op(
        "StringSplit",
        "X",
        "Y Z",
        attrs={"delimiter": STRING(None), "maxsplit": INT(None)},
        infer=_infer_string_split,
    ),
    op(
        "StringNormalizer",
        "X",
        "Y",
        attrs={
            "case_change_action": STRING("NONE"),
            "is_case_sensitive": INT(0),
            "locale": STRING(None),
            "stopwords": STRINGS(None),
        },
        infer=_infer_string_normalizer,
    ),
    op("Det", "X", "Y", infer=_infer_det),
    op("AffineGrid", "theta size", "grid", attrs={"align_corners": INT(0)},
       infer=_infer_affine_grid),  # fmt: skip
    op(
        "RotaryEmbedding",
        "X cos_cache sin_cache position_ids?",
        "Y",
        attrs={"interleaved": INT(0), "num_heads": INT(None), "rotary_embedding_dim": INT(0)},
        infer=same_as_input,
    ),
    op(
        "NonMaxSuppression",
        "boxes scores max_output_boxes_per_class? iou_threshold? score_threshold?",
        "selected_indices",
        attrs={"center_point_box": INT(0)},
        infer=_infer_nms,
    ),
    op(
        "DFT",
        "input dft_length? axis?",
        "output",
        attrs={"inverse": INT(0), "onesided": INT(0)},
        infer=_infer_dft,
    ),
    op(
        "STFT",
        "signal frame_step window? frame_length?",
        "output",
        attrs={"onesided": INT(1)},
        infer=_infer_stft,
    ),
    *(
        op(name, "size", "output", attrs={"output_datatype": INT(1), "periodic": INT(1)},
           infer=_infer_window)  # fmt: skip
        for name in ("HannWindow", "HammingWindow", "BlackmanWindow")
    ),
    op(
        "MelWeightMatrix",
        "num_mel_bins dft_length sample_rate lower_edge_hertz upper_edge_hertz",
        "output",
        attrs={"output_datatype": INT(1)},
        infer=_infer_mel,
    ),
    op(
        "Bernoulli",
        "input",
        "output",
        attrs={"dtype": INT(None), "seed": FLOAT(None)},
        traits={RANDOM},
        infer=_infer_random_like,
    ),
    op(
        "RandomUniform",
        (),
        "output",
        attrs={"shape": INTS(REQUIRED), "dtype": INT(1), "high": FLOAT(1.0), "low": FLOAT(0.0),
               "seed": FLOAT(None)},
        traits={RANDOM},
        infer=_infer_random,
    ),  # fmt: skip
    op(
        "RandomNormal",
        (),
        "output",
        attrs={"shape": INTS(REQUIRED), "dtype": INT(1), "mean": FLOAT(0.0),
               "scale": FLOAT(1.0), "seed": FLOAT(None)},
        traits={RANDOM},
        infer=_infer_random,
    ),  # fmt: skip
    op(
        "RandomUniformLike",
        "input",
        "output",
        attrs={"dtype": INT(None), "high": FLOAT(1.0), "low": FLOAT(0.0), "seed": FLOAT(None)},
        traits={RANDOM},
        infer=_infer_random_like,
    ),
    op(
        "RandomNormalLike",
        "input",
        "output",
        attrs={"dtype": INT(None), "mean": FLOAT(0.0), "scale": FLOAT(1.0), "seed": FLOAT(None)},
        traits={RANDOM},
        infer=_infer_random_like,
    ),
)
