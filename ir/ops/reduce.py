"""Reductions: Reduce*, ArgMax/ArgMin, CumSum.

Semantics: the ONNX operator spec, latest opset (Reduce* in their opset-18+
form, where ``axes`` is an optional int64 INPUT):

- ``keepdims=1`` keeps reduced axes as size 1; ``keepdims=0`` drops them.
- ``axes`` absent or empty reduces every axis, unless ``noop_with_empty_axes=1``,
  in which case nothing is reduced but composite reductions still apply their
  elementwise steps (ReduceSumSquare squares, ReduceLogSum takes the log, ...).
- Reductions over an empty set yield the identity of the reduction: 0 (Sum,
  L1, L2, SumSquare), 1 (Prod), -inf or the dtype minimum (Max, LogSum,
  LogSumExp), +inf or the dtype maximum (Min), NaN (Mean on floats).
- ArgMax/ArgMin reduce one ``axis`` to int64 indices; ``select_last_index``
  picks the last of equal extremes.
- CumSum(x, axis) is the running sum along the scalar ``axis`` input;
  ``exclusive`` leaves out the current element, ``reverse`` sums from the end.
  CumProd is the running product, with the same attributes.
- Normalizations reducing over trailing axes: LpNormalization divides by the
  L1/L2 norm along ``axis`` (a zero norm gives 0); RMSNormalization divides by
  sqrt(mean(x^2) + epsilon) over the axes ``axis``..rank-1 and multiplies by
  ``scale`` (computed in float32 for narrower floats).
- Losses: NegativeLogLikelihoodLoss(input (N, C, d...), target (N, d...)) is
  -input[n, target[n, d], d] * weight[target[n, d]]; targets equal to
  ``ignore_index`` contribute 0 with weight 0. ``reduction`` "none" keeps the
  target's shape, "sum" sums, "mean" divides the sum by the sum of the applied
  weights. SoftmaxCrossEntropyLoss is the same on log_softmax(scores, axis=1),
  optionally returning that log-probability tensor.
- Attention (opset 23+): softmax(Q K^T * scale + bias) V per head, with the bias
  built from ``attn_mask`` (bool: False masks; float: added), ``is_causal``
  (bottom-right aligned after a past cache), the sliding window and
  ``nonpad_kv_seqlen``; grouped-query heads repeat K/V. 3-D inputs are
  (batch, seq, heads * head_size) with ``q_num_heads``/``kv_num_heads``. Rows
  masked entirely give 0. ``qk_matmul_output`` is selected by
  ``qk_matmul_output_mode`` as in the ONNX reference: 0/1 the (soft-capped)
  scores, 2 the scores plus bias, 3 the softmax.
"""

from __future__ import annotations

from ir.core import Node
from ir.dtypes import DataType
from ir.ops.base import FLOAT, INT, STRING, OpDef, Trait, op
from ir.ops.infer import (
    Result,
    in_dtype,
    in_shape,
    reduce_shape,
    reduce_shape_unknown_axes,
    same_as_input,
    static_ints,
)

_REDUCE_NAMES = (
    "ReduceSum ReduceMean ReduceMax ReduceMin ReduceProd ReduceL1 ReduceL2 "
    "ReduceLogSum ReduceLogSumExp ReduceSumSquare"
).split()


def infer_reduce(node: Node) -> Result:
    """Reduce* with an optional ``axes`` input: shape known when axes are constant."""
    shape = in_shape(node)
    keepdims = bool(node.attr("keepdims"))
    axes_value = node.input(1)
    if axes_value is not None and axes_value.const is None:
        return [(in_dtype(node), reduce_shape_unknown_axes(shape, keepdims))]
    axes = static_ints(node, 1) if axes_value is not None else []
    if not axes:
        if node.attr("noop_with_empty_axes"):
            return [(in_dtype(node), shape)]
        return [(in_dtype(node), reduce_shape(shape, None, keepdims))]
    return [(in_dtype(node), reduce_shape(shape, axes, keepdims))]


def infer_arg(node: Node) -> Result:
    """ArgMax/ArgMin: one axis reduced, int64 indices."""
    shape = reduce_shape(in_shape(node), [node.attr("axis")], bool(node.attr("keepdims")))
    return [(DataType.INT64, shape)]


def _reduce(name: str) -> OpDef:
    return op(
        name,
        "data axes?",
        "reduced",
        attrs={"keepdims": INT(1), "noop_with_empty_axes": INT(0)},
        traits={Trait.REDUCTION},
        infer=infer_reduce,
    )


def _arg(name: str) -> OpDef:
    return op(
        name,
        "data",
        "reduced",
        attrs={"axis": INT(0), "keepdims": INT(1), "select_last_index": INT(0)},
        infer=infer_arg,
    )


def infer_loss(node: Node) -> Result:
    """NLL / SoftmaxCrossEntropy: per-element loss (target shape) or a scalar."""
    dtype = in_dtype(node)
    shape = in_shape(node, 1) if node.attr("reduction") == "none" else ()
    return [(dtype, shape), (dtype, in_shape(node))][: len(node.outputs)]


def infer_attention(node: Node) -> Result:
    """Y has Q's layout with V's head size; the cache outputs are 4-D."""
    dtype = in_dtype(node)
    q, v = in_shape(node, 0), in_shape(node, 2)
    y = None
    if q is not None and v is not None and len(q) == len(v) == 4:
        y = (q[0], q[1], q[2], v[3])
    elif q is not None and len(q) == 3:
        y = (q[0], q[1], None)
    rank4 = (None, None, None, None)
    results = [(dtype, y), (in_dtype(node, 1), rank4), (in_dtype(node, 2), rank4), (dtype, rank4)]
    return results[: len(node.outputs)]


# ai.onnx Attention (com.microsoft's Attention is MsAttention in ir/ops/contrib.py).
ONNX_ATTENTION = op(
    "Attention",
    "Q K V attn_mask? past_key? past_value? nonpad_kv_seqlen?",
    "Y present_key? present_value? qk_matmul_output?",
    attrs={
        "is_causal": INT(0),
        "kv_num_heads": INT(None),
        "q_num_heads": INT(None),
        "qk_matmul_output_mode": INT(0),
        "scale": FLOAT(None),
        "softcap": FLOAT(0.0),
        "softmax_precision": INT(None),
        "left_window_size": INT(-1),
        "right_window_size": INT(-1),
    },
    infer=infer_attention,
)


OPS: tuple[OpDef, ...] = (
    ONNX_ATTENTION,
    *(_reduce(name) for name in _REDUCE_NAMES),
    _arg("ArgMax"),
    _arg("ArgMin"),
    op(
        "CumSum",
        "x axis",
        "y",
        attrs={"exclusive": INT(0), "reverse": INT(0)},
        infer=same_as_input,
    ),
    op(
        "CumProd",
        "x axis",
        "y",
        attrs={"exclusive": INT(0), "reverse": INT(0)},
        infer=same_as_input,
    ),
    op("LpNormalization", "input", "output", attrs={"axis": INT(-1), "p": INT(2)},
       infer=same_as_input),  # fmt: skip
    op(
        "RMSNormalization",
        "X scale",
        "Y",
        attrs={"axis": INT(-1), "epsilon": FLOAT(9.999999747378752e-06), "stash_type": INT(1)},
        infer=same_as_input,
    ),
    op(
        "NegativeLogLikelihoodLoss",
        "input target weight?",
        "loss",
        attrs={"ignore_index": INT(None), "reduction": STRING("mean")},
        infer=infer_loss,
    ),
    op(
        "SoftmaxCrossEntropyLoss",
        "scores labels weights?",
        "output log_prob?",
        attrs={"ignore_index": INT(None), "reduction": STRING("mean")},
        infer=infer_loss,
    ),
)
