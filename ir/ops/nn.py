"""Neural-network ops: convolution, pooling, normalization, matmul, softmax, RNNs, Resize.

Semantics: the ONNX operator spec (latest opset, onnx 1.23). Ops with a
spatial meaning also carry ``format`` ("NCHW" default, or "NHWC" = channels
last) and the LAYOUT_SENSITIVE trait. ``format`` describes the data tensors
(X, Y) only: weights keep their ONNX layout (Conv W is [M, C/group, *kernel],
ConvTranspose W is [C, M/group, *kernel]) in both formats.

Window arithmetic (shared with the executor, so that kernels and shape
inference agree) lives in :func:`resolve_pads`, :func:`pool_out_size` and
:func:`conv_transpose_geometry`:

* explicit pads: ``out = floor((in + pb + pe - ek) / s) + 1`` (``ceil`` with
  ``ceil_mode``; the last window must start inside ``in + pb``), where
  ``ek = (k - 1) * d + 1``;
* SAME_UPPER / SAME_LOWER: ``out = ceil(in / s)``, total pad
  ``max(0, (out - 1) * s + ek - in)``, the odd unit at the end (UPPER) or the
  beginning (LOWER);
* VALID: no padding.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from ir.core import Dim, Node, Shape
from ir.dtypes import DataType
from ir.ops.base import FLOAT, FLOATS, INT, INTS, REQUIRED, STRING, STRINGS, OpDef, Trait, op
from ir.ops.infer import (
    broadcast_shapes,
    in_dtype,
    in_shape,
    normalize_axis,
    same_as_input,
    static_ints,
)

__all__ = [
    "CONV_ATTRS",
    "OPS",
    "conv_shape",
    "conv_transpose_geometry",
    "pool_out_size",
    "resize_output_shape",
    "resolve_pads",
]

Result = list[tuple[DataType, Shape | None]]
LS, Q = Trait.LAYOUT_SENSITIVE, Trait.QUANTIZABLE
FORMAT = STRING("NCHW")

# --------------------------------------------------------------------------- window arithmetic


def _ints(value: Sequence[int] | None, n: int, fill: int) -> list[int]:
    return [fill] * n if value is None or len(value) == 0 else [int(v) for v in value]


def resolve_pads(
    in_sizes: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int] | None,
    dilations: Sequence[int] | None,
    pads: Sequence[int] | None,
    auto_pad: str,
    ceil_mode: int = 0,
) -> tuple[list[int], list[int], list[int]]:
    """(begin pads, end pads, output sizes) of a conv/pool window over ``in_sizes``.

    With ``ceil_mode`` the end pads grow so that the last (partial) window fits;
    the extra part is *not* counted by ``count_include_pad`` (see
    :func:`pool_out_size`, which returns the declared pads separately).
    """
    n = len(in_sizes)
    s, d = _ints(strides, n, 1), _ints(dilations, n, 1)
    p = _ints(pads, 2 * n, 0)
    begin, end, out = [], [], []
    for i in range(n):
        ek = (kernel[i] - 1) * d[i] + 1
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            o = -(-in_sizes[i] // s[i])
            total = max(0, (o - 1) * s[i] + ek - in_sizes[i])
            small = total // 2
            pb, pe = (small, total - small) if auto_pad == "SAME_UPPER" else (total - small, small)
        elif auto_pad == "VALID":
            pb, pe = 0, 0
            o = (in_sizes[i] - ek) // s[i] + 1
        else:
            pb, pe = p[i], p[n + i]
            o = pool_out_size(in_sizes[i], ek, s[i], pb, pe, ceil_mode)
        begin.append(pb)
        end.append(pe)
        out.append(max(o, 0))
    return begin, end, out


def pool_out_size(size: int, ek: int, stride: int, pb: int, pe: int, ceil_mode: int) -> int:
    """Output length of one axis for explicit pads (effective kernel ``ek``)."""
    span = size + pb + pe - ek
    if not ceil_mode:
        return span // stride + 1
    out = -(-span // stride) + 1
    if (out - 1) * stride >= size + pb:  # the last window must start inside the input
        out -= 1
    return out


def conv_transpose_geometry(
    in_sizes: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int] | None,
    dilations: Sequence[int] | None,
    pads: Sequence[int] | None,
    output_padding: Sequence[int] | None,
    output_shape: Sequence[int] | None,
    auto_pad: str,
) -> tuple[list[int], list[int]]:
    """(begin pads, output sizes) of a ConvTranspose, per the ONNX spec."""
    n = len(in_sizes)
    s, d = _ints(strides, n, 1), _ints(dilations, n, 1)
    op_ = _ints(output_padding, n, 0)
    p = _ints(pads, 2 * n, 0)
    if output_shape is not None and len(output_shape) > 0:
        target = [int(v) for v in output_shape][-n:]
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        target = [in_sizes[i] * s[i] for i in range(n)]
    else:
        target = None
    begin, out = [], []
    for i in range(n):
        full = s[i] * (in_sizes[i] - 1) + op_[i] + (kernel[i] - 1) * d[i] + 1
        if target is None:
            pb = 0 if auto_pad == "VALID" else p[i]
            pe = 0 if auto_pad == "VALID" else p[n + i]
            begin.append(pb)
            out.append(full - pb - pe)
            continue
        total = max(full - target[i], 0)
        if auto_pad == "SAME_UPPER":
            begin.append(total // 2)
        else:
            begin.append(total - total // 2)
        out.append(target[i])
    return begin, out


# --------------------------------------------------------------------------- layout helpers


def _split_layout(shape: Shape, fmt: str) -> tuple[Dim, Dim, Shape]:
    """(batch, channels, spatial dims) of a data shape in ``fmt``."""
    if fmt == "NHWC":
        return shape[0], shape[-1], tuple(shape[1:-1])
    return shape[0], shape[1], tuple(shape[2:])


def _join_layout(n: Dim, c: Dim, spatial: Sequence[Dim], fmt: str) -> Shape:
    if fmt == "NHWC":
        return (n, *spatial, c)
    return (n, c, *spatial)


def _all_int(dims: Sequence[Dim]) -> bool:
    return all(isinstance(d, int) for d in dims)


# --------------------------------------------------------------------------- infer fns


def conv_shape(node: Node, x_index: int = 0, w_index: int = 1) -> Shape | None:
    """Output shape of a conv reading data input ``x_index`` and weight ``w_index``.

    Shared by Conv and the quantized/fused convolutions (QLinearConv, ConvInteger,
    FusedConv), which carry Conv's attributes (:data:`CONV_ATTRS`).
    """
    xs, ws = in_shape(node, x_index), in_shape(node, w_index)
    if xs is None or len(xs) < 2:
        return None
    fmt = node.attr("format")
    n, _, spatial = _split_layout(xs, fmt)
    m = ws[0] if ws is not None and len(ws) > 0 else None
    kernel = node.attr("kernel_shape") or (ws[2:] if ws is not None else None)
    if kernel is None or not _all_int(kernel) or not _all_int(spatial):
        return _join_layout(n, m, (None,) * len(spatial), fmt)
    *_, out = resolve_pads(
        spatial, kernel, node.attr("strides"), node.attr("dilations"),
        node.attr("pads"), node.attr("auto_pad"),
    )
    return _join_layout(n, m, out, fmt)


def _infer_conv(node: Node) -> Result:
    return [(in_dtype(node), conv_shape(node))]


def _infer_conv_transpose(node: Node) -> Result:
    dt, xs, ws = in_dtype(node), in_shape(node), in_shape(node, 1)
    if xs is None:
        return [(dt, None)]
    fmt = node.attr("format")
    n, _, spatial = _split_layout(xs, fmt)
    m = ws[1] * node.attr("group") if ws is not None and isinstance(ws[1], int) else None
    kernel = node.attr("kernel_shape") or (ws[2:] if ws is not None else None)
    if kernel is None or not _all_int(kernel) or not _all_int(spatial):
        out_shape = node.attr("output_shape")
        dims = tuple(out_shape[-len(spatial):]) if out_shape else (None,) * len(spatial)
        return [(dt, _join_layout(n, m, dims, fmt))]
    _, out = conv_transpose_geometry(
        spatial, kernel, node.attr("strides"), node.attr("dilations"), node.attr("pads"),
        node.attr("output_padding"), node.attr("output_shape"), node.attr("auto_pad"),
    )
    return [(dt, _join_layout(n, m, out, fmt))]


def _pool_shape(node: Node) -> Shape | None:
    xs = in_shape(node)
    if xs is None:
        return None
    fmt = node.attr("format")
    n, c, spatial = _split_layout(xs, fmt)
    if not _all_int(spatial):
        return _join_layout(n, c, (None,) * len(spatial), fmt)
    *_, out = resolve_pads(
        spatial, node.attr("kernel_shape"), node.attr("strides"), node.attr("dilations"),
        node.attr("pads"), node.attr("auto_pad"), node.attr("ceil_mode"),
    )
    return _join_layout(n, c, out, fmt)


def _infer_pool(node: Node) -> Result:
    return [(in_dtype(node), _pool_shape(node))]


def _infer_max_pool(node: Node) -> Result:
    shape = _pool_shape(node)
    return [(in_dtype(node), shape), (DataType.INT64, shape)][: len(node.outputs)]


def _infer_global_pool(node: Node) -> Result:
    xs = in_shape(node)
    if xs is None:
        return [(in_dtype(node), None)]
    n, c, spatial = _split_layout(xs, node.attr("format"))
    return [(in_dtype(node), _join_layout(n, c, (1,) * len(spatial), node.attr("format")))]


def _infer_batch_norm(node: Node) -> Result:
    out = [(in_dtype(node), in_shape(node))]
    for _i in range(1, len(node.outputs)):
        out.append((in_dtype(node, 3), in_shape(node, 3)))
    return out


def _stash_dtype(node: Node) -> DataType:
    return DataType.FLOAT if node.attr("stash_type") == 1 else in_dtype(node)


def _infer_layer_norm(node: Node) -> Result:
    xs = in_shape(node)
    stats: Shape | None = None
    if xs is not None:
        axis = normalize_axis(node.attr("axis"), len(xs))
        stats = tuple(xs[:axis]) + (1,) * (len(xs) - axis)
    out = [(in_dtype(node), xs)]
    out += [(_stash_dtype(node), stats)] * (len(node.outputs) - 1)
    return out


def _infer_gemm(node: Node) -> Result:
    a, b = in_shape(node), in_shape(node, 1)
    m = None if a is None else a[1 if node.attr("transA") else 0]
    n = None if b is None else b[0 if node.attr("transB") else 1]
    return [(in_dtype(node), (m, n))]


def matmul_shape(a: Shape | None, b: Shape | None) -> Shape | None:
    """numpy.matmul result shape of symbolic shapes (1-D operands promoted then squeezed)."""
    if a is None or b is None:
        return None
    if len(a) == 0 or len(b) == 0:
        raise ValueError("MatMul operands must have rank >= 1")
    a2 = (1, *a) if len(a) == 1 else tuple(a)
    b2 = (*b, 1) if len(b) == 1 else tuple(b)
    batch = broadcast_shapes(a2[:-2], b2[:-2])
    out = (*(batch or ()), a2[-2], b2[-1])
    if len(a) == 1:
        out = out[:-2] + out[-1:]
    if len(b) == 1:
        out = out[:-1]
    return out


def _infer_matmul(node: Node) -> Result:
    return [(in_dtype(node), matmul_shape(in_shape(node), in_shape(node, 1)))]


def _infer_dropout(node: Node) -> Result:
    out = [(in_dtype(node), in_shape(node))]
    if len(node.outputs) > 1:
        out.append((DataType.BOOL, in_shape(node)))
    return out


def _infer_rnn(node: Node) -> Result:
    xs, ws = in_shape(node), in_shape(node, 1)
    dirs = 2 if node.attr("direction") == "bidirectional" else 1
    hidden = node.attr("hidden_size")
    if hidden is None and ws is not None and isinstance(ws[1], int):
        hidden = ws[1] // {"LSTM": 4, "GRU": 3, "RNN": 1}[node.op]
    layout = node.attr("layout")
    if xs is None:
        seq = batch = None
    else:
        seq, batch = (xs[1], xs[0]) if layout else (xs[0], xs[1])
    y = (batch, seq, dirs, hidden) if layout else (seq, dirs, batch, hidden)
    yh = (batch, dirs, hidden) if layout else (dirs, batch, hidden)
    shapes = [y, yh, yh]
    return [(in_dtype(node), shapes[i]) for i in range(len(node.outputs))]


def resize_output_shape(
    in_sizes: Sequence[int],
    scales: Sequence[float] | None,
    sizes: Sequence[int] | None,
    axes: Sequence[int] | None,
    policy: str,
) -> tuple[list[int], list[float]]:
    """(output sizes, per-axis scales) of a Resize, per the ONNX spec."""
    r = len(in_sizes)
    ax = list(range(r)) if not axes else [normalize_axis(a, r) for a in axes]
    out = list(in_sizes)
    sc = [1.0] * r
    if sizes is not None and len(sizes) > 0:
        for a, s in zip(ax, sizes, strict=True):
            out[a] = int(s)
            sc[a] = int(s) / in_sizes[a] if in_sizes[a] else 1.0
        if policy != "stretch":
            pick = min if policy == "not_larger" else max
            common = pick(sc[a] for a in ax)
            for a in ax:
                sc[a] = common
                out[a] = int(common * in_sizes[a] + 0.5)
        return out, sc
    if scales is None or len(scales) == 0:
        raise ValueError("Resize needs one of scales or sizes")
    for a, s in zip(ax, scales, strict=True):
        sc[a] = float(s)
        out[a] = int(math.floor(in_sizes[a] * float(s)))
    return out, sc


def _infer_resize(node: Node) -> Result:
    dt, xs = in_dtype(node), in_shape(node)
    if xs is None:
        return [(dt, None)]
    sizes = static_ints(node, 3)
    scales_v = node.input(2)
    scales = None if scales_v is None or scales_v.const is None else list(scales_v.const.ravel())
    if (sizes is None and not scales) or not _all_int(xs):
        axes = node.attr("axes")
        touched = set(range(len(xs))) if not axes else {a % len(xs) for a in axes}
        return [(dt, tuple(None if i in touched else d for i, d in enumerate(xs)))]
    out, _ = resize_output_shape(
        xs, scales, sizes, node.attr("axes"), node.attr("keep_aspect_ratio_policy")
    )
    return [(dt, tuple(out))]


_EINSUM_TERM = re.compile(r"^[A-Za-z.]*$")


def _infer_einsum(node: Node) -> Result:
    dt = in_dtype(node)
    eq = node.attr("equation").replace(" ", "")
    shapes = [v.shape if v is not None else None for v in node.inputs]
    lhs, _, rhs = eq.partition("->")
    terms = lhs.split(",")
    if any(s is None for s in shapes) or len(terms) != len(shapes):
        return [(dt, None)]
    dims: dict[str, Dim] = {}
    ell: list[Shape] = []
    for term, shape in zip(terms, shapes, strict=True):
        if not _EINSUM_TERM.match(term):
            return [(dt, None)]
        letters = term.replace("...", "")
        n_ell = len(shape) - len(letters)
        head, _, tail = term.partition("...")
        if "..." in term:
            ell.append(tuple(shape[len(head): len(head) + n_ell]))
            named = list(zip(head, shape[: len(head)], strict=True))
            named += list(zip(tail, shape[len(head) + n_ell:], strict=True))
        else:
            named = list(zip(term, shape, strict=True))
        for ch, d in named:
            if ch not in dims or dims[ch] in (1, None):
                dims[ch] = d
    ell_shape = broadcast_shapes(*ell) if ell else ()
    if "->" not in eq:
        counts = {c: lhs.count(c) for c in set(lhs.replace(",", "").replace(".", ""))}
        rhs = ("..." if ell else "") + "".join(sorted(c for c, k in counts.items() if k == 1))
    out: list[Dim] = []
    head, _, tail = rhs.partition("...")
    out += [dims.get(c) for c in head]
    if "..." in rhs:
        out += list(ell_shape or ())
    out += [dims.get(c) for c in tail]
    return [(dt, tuple(out))]


def _infer_grid_sample(node: Node) -> Result:
    xs, gs = in_shape(node), in_shape(node, 1)
    if xs is None or gs is None:
        return [(in_dtype(node), None)]
    return [(in_dtype(node), (xs[0], xs[1], *gs[1:-1]))]


# --------------------------------------------------------------------------- declarations

CONV_ATTRS = {
    "auto_pad": STRING("NOTSET"),
    "dilations": INTS(None),
    "group": INT(1),
    "kernel_shape": INTS(None),
    "pads": INTS(None),
    "strides": INTS(None),
    "format": FORMAT,
}
_POOL_ATTRS = {
    "auto_pad": STRING("NOTSET"),
    "ceil_mode": INT(0),
    "dilations": INTS(None),
    "kernel_shape": INTS(REQUIRED),
    "pads": INTS(None),
    "strides": INTS(None),
    "format": FORMAT,
}
_RNN_ATTRS = {
    "activation_alpha": FLOATS(None),
    "activation_beta": FLOATS(None),
    "activations": STRINGS(None),
    "clip": FLOAT(None),
    "direction": STRING("forward"),
    "hidden_size": INT(None),
    "layout": INT(0),
}


def _softmax_like(name: str, doc: str) -> OpDef:
    return op(name, "input", "output", attrs={"axis": INT(-1)}, infer=same_as_input, doc=doc)


OPS = (
    op("Conv", "X W B?", "Y", attrs=CONV_ATTRS, traits={LS, Q}, infer=_infer_conv,
       doc="N-D convolution (cross-correlation) with groups, dilations and padding."),
    op("ConvTranspose", "X W B?", "Y",
       attrs={**CONV_ATTRS, "output_padding": INTS(None), "output_shape": INTS(None)},
       traits={LS, Q}, infer=_infer_conv_transpose, doc="Transposed (fractionally strided) conv."),
    op("MaxPool", "X", "Y Indices?",
       attrs={**_POOL_ATTRS, "storage_order": INT(0)}, traits={LS}, infer=_infer_max_pool,
       doc="Max over windows; Indices flatten (n, c, spatial) row-major (col-major spatial "
           "with storage_order=1)."),
    op("AveragePool", "X", "Y", attrs={**_POOL_ATTRS, "count_include_pad": INT(0)},
       traits={LS}, infer=_infer_pool, doc="Mean over windows."),
    op("LpPool", "X", "Y", attrs={**_POOL_ATTRS, "p": INT(2)}, traits={LS}, infer=_infer_pool,
       doc="(sum |x|^p)^(1/p) over windows."),
    op("GlobalAveragePool", "X", "Y", attrs={"format": FORMAT}, traits={LS},
       infer=_infer_global_pool),
    op("GlobalMaxPool", "X", "Y", attrs={"format": FORMAT}, traits={LS},
       infer=_infer_global_pool),
    op("GlobalLpPool", "X", "Y", attrs={"p": INT(2), "format": FORMAT}, traits={LS},
       infer=_infer_global_pool),
    op("BatchNormalization", "X scale B input_mean input_var", "Y running_mean? running_var?",
       attrs={"epsilon": FLOAT(1e-5), "momentum": FLOAT(0.9), "training_mode": INT(0),
              "format": FORMAT},
       traits={LS}, infer=_infer_batch_norm,
       doc="Y = (X - mean) / sqrt(var + epsilon) * scale + B, per channel."),
    op("InstanceNormalization", "input scale B", "output",
       attrs={"epsilon": FLOAT(1e-5), "format": FORMAT}, traits={LS}, infer=same_as_input,
       doc="Normalizes each (n, c) over its spatial dims, then scale/B per channel."),
    op("LayerNormalization", "X Scale B?", "Y Mean? InvStdDev?",
       attrs={"axis": INT(-1), "epsilon": FLOAT(1e-5), "stash_type": INT(1)},
       infer=_infer_layer_norm,
       doc="Normalizes over dims [axis, rank); Scale/B broadcast to those dims."),
    op("GroupNormalization", "X scale bias", "Y",
       attrs={"epsilon": FLOAT(1e-5), "num_groups": INT(REQUIRED), "stash_type": INT(1),
              "format": FORMAT},
       traits={LS}, infer=same_as_input,
       doc="Opset-21 form: stats per (n, group); scale/bias per channel."),
    op("LRN", "X", "Y",
       attrs={"alpha": FLOAT(1e-4), "beta": FLOAT(0.75), "bias": FLOAT(1.0),
              "size": INT(REQUIRED), "format": FORMAT},
       traits={LS}, infer=same_as_input,
       doc="Y = X / (bias + alpha / size * sum of squares over a channel window) ^ beta."),
    op("MeanVarianceNormalization", "X", "Y", attrs={"axes": INTS([0, 2, 3])},
       infer=same_as_input, doc="(X - mean) / (sqrt(var) + 1e-9) over axes."),
    op("Gemm", "A B C?", "Y",
       attrs={"alpha": FLOAT(1.0), "beta": FLOAT(1.0), "transA": INT(0), "transB": INT(0)},
       traits={Q}, infer=_infer_gemm, doc="Y = alpha * A' @ B' + beta * C."),
    op("MatMul", "A B", "Y", traits={Q}, infer=_infer_matmul, doc="numpy.matmul semantics."),
    _softmax_like("Softmax", "exp(x) / sum(exp(x)) along axis."),
    _softmax_like("LogSoftmax", "log of Softmax along axis."),
    _softmax_like("Hardmax", "1 at the first maximum along axis, else 0."),
    op("Dropout", "data ratio? training_mode?", "output mask?", attrs={"seed": INT(None)},
       traits={Trait.NO_OP_CANDIDATE}, infer=_infer_dropout,
       doc="Identity (mask all true) unless training_mode is true."),
    op("LSTM", "X W R B? sequence_lens? initial_h? initial_c? P?", "Y? Y_h? Y_c?",
       attrs={**_RNN_ATTRS, "input_forget": INT(0)}, infer=_infer_rnn,
       doc="Gates iofc; default activations Sigmoid, Tanh, Tanh."),
    op("GRU", "X W R B? sequence_lens? initial_h?", "Y? Y_h?",
       attrs={**_RNN_ATTRS, "linear_before_reset": INT(0)}, infer=_infer_rnn,
       doc="Gates zrh; default activations Sigmoid, Tanh."),
    op("RNN", "X W R B? sequence_lens? initial_h?", "Y? Y_h?",
       attrs={**_RNN_ATTRS, "activations": STRINGS(["Tanh", "Tanh"])}, infer=_infer_rnn,
       doc="Ht = f(Xt W^T + Ht-1 R^T + Wb + Rb)."),
    op("Resize", "X roi? scales? sizes?", "Y",
       attrs={"antialias": INT(0), "axes": INTS(None),
              "coordinate_transformation_mode": STRING("half_pixel"),
              "cubic_coeff_a": FLOAT(-0.75), "exclude_outside": INT(0),
              "extrapolation_value": FLOAT(0.0), "keep_aspect_ratio_policy": STRING("stretch"),
              "mode": STRING("nearest"), "nearest_mode": STRING("round_prefer_floor"),
              "format": FORMAT},
       traits={LS}, infer=_infer_resize,
       doc="Opset-19 Resize; scales/sizes index the tensor as stored (format only names it)."),
    op("Einsum", "Inputs*", "Output", attrs={"equation": STRING(REQUIRED)},
       infer=_infer_einsum, doc="numpy.einsum semantics."),
    op("GridSample", "X grid", "Y",
       attrs={"align_corners": INT(0), "mode": STRING("linear"),
              "padding_mode": STRING("zeros")},
       infer=_infer_grid_sample, doc="Samples X (NCHW) at normalized grid locations."),
)
