"""LayerNorm recognition: the decomposed form -> ai.onnx LayerNormalization.

The normalization core, over trailing axes ``[k, rank)`` (both ReduceMeans
with the same constant axes and keepdims=1; ``eps`` a scalar constant)::

    d = x - ReduceMean(x)
    y = d / Sqrt(ReduceMean(d ^ 2) + eps)        (d ^ 2 may be d * d)
    y = d * Reciprocal(Sqrt(ReduceMean(d ^ 2) + eps))

becomes ``LayerNormalization(x, ones, axis=k, epsilon=eps)`` (Scale = ones of
the normalized shape, which must be static). The affine tail then folds into
the LayerNormalization's constants, so every arrangement of the affine part
is covered by two rules:

- ``LayerNormalization(x, S, B) * g`` (g constant, broadcasting over the
  normalized dims only) -> ``LayerNormalization(x, S * g, B * g)``;
- ``LayerNormalization(x, S, B) + beta`` -> ``LayerNormalization(x, S, B + beta)``.

Only float32 / float16 / bfloat16 inputs: LayerNormalization computes in
float32 (stash_type 1), which would lose precision for float64.
"""

from __future__ import annotations

import numpy as np

from ir import DataType, Value
from passes.fusions.engine import (
    Builder,
    Const,
    Match,
    MatchResult,
    Op,
    Or,
    Rule,
    RuleSet,
    Var,
    scalar_value,
)

__all__ = ["rules"]

_DTYPES = (DataType.FLOAT, DataType.FLOAT16, DataType.BFLOAT16)


def _core() -> tuple[Op, Op]:
    x = Var("x")
    d = Op("Sub", x, Op("ReduceMean", x, Const("axes1"), name="mean1"), name="d")
    sq = Or(Op("Pow", d, Const("two", 2.0)), Op("Mul", d, d))
    var = Op("ReduceMean", sq, Const("axes2"), name="mean2")
    std = Op("Sqrt", Op("Add", var, Const("eps"), commute=True))
    return (
        Op("Div", d, std),
        Op("Mul", d, Op("Reciprocal", std), commute=True),
    )


def _axis(m: Match) -> int | None:
    """The first normalized axis, when both reductions cover the same trailing axes."""
    rank = m["x"].rank
    if rank is None:
        return None
    sets = []
    for name in ("axes1", "axes2"):
        axes = m[name].const.reshape(-1)
        if not np.issubdtype(axes.dtype, np.integer) or axes.size == 0:
            return None
        sets.append(sorted({int(a) % rank for a in axes if -rank <= int(a) < rank}))
        if len(sets[-1]) != axes.size:
            return None
    if sets[0] != sets[1] or sets[0] != list(range(rank - len(sets[0]), rank)):
        return None
    return sets[0][0]


def _check_core(m: Match) -> MatchResult:
    x = m["x"]
    if x.dtype not in _DTYPES:
        return MatchResult.fail(f"{x.name!r} is {x.dtype.name}, not float32/16")
    for name in ("mean1", "mean2"):
        if m.node(name).attr("keepdims") != 1:
            return MatchResult.fail("a ReduceMean drops its axes")
    axis = _axis(m)
    if axis is None:
        return MatchResult.fail("the reductions are not over the same trailing axes")
    if scalar_value(m["eps"]) is None:
        return MatchResult.fail("epsilon is not a scalar constant")
    if not all(isinstance(d, int) for d in x.shape[axis:]):  # type: ignore[index]
        return MatchResult.fail("the normalized dims are not static")
    return MatchResult.success()


def _to_layer_norm(b: Builder, m: Match) -> Value:
    axis = _axis(m)
    assert axis is not None
    x = m["x"]
    scale = b.const(np.ones(x.shape[axis:], x.dtype.numpy), f"{m.root.name}_scale")  # type: ignore[index]
    eps = float(np.float32(scalar_value(m["eps"])))
    return b.op("LayerNormalization", x, scale, axis=axis - x.rank, epsilon=eps)  # type: ignore[operator]


# -- affine absorption ----------------------------------------------------------------------
def _ln() -> Op:
    return Op("LayerNormalization", Var("x"), Const("s"), Var("bias", optional=True), name="ln")


def _norm_shape(m: Match) -> tuple[int, ...] | None:
    x, ln = m["x"], m.node("ln")
    if x.rank is None:
        return None
    axis = int(ln.attr("axis")) % x.rank
    shape = x.shape[axis:]  # type: ignore[index]
    return shape if all(isinstance(d, int) for d in shape) else None  # type: ignore[return-value]


def _over_norm_dims(m: Match, c: np.ndarray) -> np.ndarray | None:
    """``c`` broadcast to the normalized shape, None when it reaches other dims."""
    shape = _norm_shape(m)
    if shape is None or c.dtype != m["s"].const.dtype:
        return None
    extra = c.shape[: max(c.ndim - len(shape), 0)]
    if any(d != 1 for d in extra) or c.ndim > m["x"].rank:
        return None
    tail = c.reshape(c.shape[len(extra) :])
    try:
        return np.broadcast_to(tail.astype(np.float64), shape)
    except ValueError:
        return None


def _check_affine(m: Match) -> MatchResult:
    ln, bias = m.node("ln"), m.get("bias")
    if bias is not None and bias.const is None:
        return MatchResult.fail("LayerNormalization bias is not constant")
    if any(o.uses for o in ln.outputs[1:]):
        return MatchResult.fail("LayerNormalization Mean/InvStdDev are used")
    if _over_norm_dims(m, m["c"].const) is None:
        return MatchResult.fail(f"{m['c'].name!r} does not broadcast over the normalized dims")
    return MatchResult.success()


def _affine(m: Match) -> tuple[np.ndarray, np.ndarray]:
    shape = _norm_shape(m)
    assert shape is not None
    s = np.broadcast_to(m["s"].const.astype(np.float64), shape)
    bias = m.get("bias")
    b = np.zeros(shape) if bias is None else np.broadcast_to(bias.const.astype(np.float64), shape)
    return s, b


def _new_ln(b: Builder, m: Match, s: np.ndarray, bias: np.ndarray | None) -> Value:
    ln, dtype = m.node("ln"), m["s"].const.dtype
    s_v = b.const(s.astype(dtype), f"{ln.name}_scale")
    b_v = None if bias is None else b.const(bias.astype(dtype), f"{ln.name}_bias")
    return b.op("LayerNormalization", m["x"], s_v, b_v, **ln.attrs)


def _fold_mul(b: Builder, m: Match) -> Value:
    g = _over_norm_dims(m, m["c"].const)
    assert g is not None
    s, bias = _affine(m)
    return _new_ln(b, m, s * g, None if m.get("bias") is None else bias * g)


def _fold_add(b: Builder, m: Match) -> Value:
    beta = _over_norm_dims(m, m["c"].const)
    assert beta is not None
    s, bias = _affine(m)
    return _new_ln(b, m, s, bias + beta)


rules = RuleSet(
    [
        *(Rule("LayerNorm", p, _to_layer_norm, _check_core) for p in _core()),
        Rule("LayerNorm*Scale", Op("Mul", _ln(), Const("c"), commute=True), _fold_mul,
             _check_affine),
        Rule("LayerNorm+Bias", Op("Add", _ln(), Const("c"), commute=True), _fold_add,
             _check_affine),
    ]
)  # fmt: skip
"""LayerNorm recognition and affine absorption."""
