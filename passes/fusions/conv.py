"""Convolution fusions: BatchNormalization, per-channel Add/Sub/Mul/Div, activations.

For a Conv (depthwise and grouped included) or ConvTranspose with constant
weights ``W`` and optional constant bias ``b`` (0 when omitted), per output
channel ``o``:

- inference ``BatchNormalization(y, scale, B, mean, var, epsilon)``:
  ``a = scale / sqrt(var + epsilon)``, ``W'[o] = W[o] * a[o]``,
  ``b'[o] = (b[o] - mean[o]) * a[o] + B[o]``;
- ``y + c`` / ``y - c`` with ``c`` a constant per channel (or scalar):
  ``b' = b + c`` / ``b - c``;
- ``y * c`` / ``y / c``: ``W'[o] = W[o] * c[o]``, ``b' = b * c`` (``1/c`` for Div).

Numerics: the per-channel arithmetic (``a``, biases, ``1/c``) is done in float64
and stored in the weights' dtype. Scaling W itself is one multiplication per
weight, with no accumulation: it is done in float32 for float16/float32 weights
(the factor rounded to float32 first), so each fused weight is within one ulp
of the float64 product rounded once, as in other converters' BN folding; float64
weights are scaled in float64. (A float64 pass over every weight of a large CNN
cost more than the rest of the fusions together.)
"Output channel ``o``" of W is axis 0 for Conv; for
ConvTranspose (W is ``[C, M/group, *k]``) it is ``g * M/group + j`` for W
entry ``[c, j]`` with ``g = c // (C/group)``. The channel axis of the data is 1
(``format`` NCHW) or the last one (NHWC); BatchNormalization must have the
conv's format.

``act(Conv(x, W, b))`` for an activation of :mod:`passes.fusions.activation`
becomes ``ConvAct(x, W, b, activation=..., activation_params=...)``; W need
not be constant there.
"""

from __future__ import annotations

import numpy as np

from ir import Node, Value
from passes.fusions.activation import FUSABLE, activation_allowed, activation_of
from passes.fusions.engine import Builder, Const, Match, MatchResult, Op, Rule, RuleSet, Var

__all__ = ["rules"]

CONVS = ("Conv", "ConvTranspose")


def _conv(op: str) -> Op:
    return Op(op, Var("x"), Var("w"), Var("b", optional=True), name="conv")


def _out_channels(conv: Node, w: np.ndarray) -> int:
    return int(w.shape[0]) if conv.op == "Conv" else int(w.shape[1]) * int(conv.attr("group"))


def _channel_axis(conv: Node, rank: int) -> int:
    return rank - 1 if conv.attr("format") == "NHWC" else 1


def _check_weights(m: Match) -> MatchResult:
    w, b = m["w"], m.get("b")
    if w.const is None:
        return MatchResult.fail(f"weight {w.name!r} is not a constant")
    if w.const.ndim < 3 or not w.dtype.is_float:
        return MatchResult.fail(f"weight {w.name!r} is not a float conv kernel")
    if b is not None and b.const is None:
        return MatchResult.fail(f"bias {b.name!r} is not a constant")
    return MatchResult.success()


def _per_channel(m: Match, c: np.ndarray) -> np.ndarray | None:
    """``c`` as a vector over the conv's output channels, None when it is not per channel."""
    conv, w = m.node("conv"), m["w"].const
    rank, channels = w.ndim, _out_channels(conv, w)
    if c.ndim > rank or c.dtype != w.dtype:
        return None
    shape = (1,) * (rank - c.ndim) + tuple(c.shape)
    axis = _channel_axis(conv, rank)
    if any(d != 1 for i, d in enumerate(shape) if i != axis) or shape[axis] not in (1, channels):
        return None
    return np.broadcast_to(c.reshape(-1).astype(np.float64), (channels,))


def _scale_weights(conv: Node, w: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """W with output channel ``o`` multiplied by ``scale[o]`` (float64), in W's dtype.

    float64 weights are scaled in float64, others in float32 (within one ulp of
    the exactly rounded product; see the module docstring).
    """
    extra = (1,) * (w.ndim - 2)
    if conv.op == "Conv":
        factor = scale.reshape(-1, 1, *extra)
    else:
        group = int(conv.attr("group"))
        cin, per_group = w.shape[0], w.shape[1]
        index = (np.arange(cin)[:, None] // (cin // group)) * per_group + np.arange(per_group)
        factor = scale[index].reshape(cin, per_group, *extra)
    work = np.float64 if w.dtype == np.float64 else np.float32
    out = np.array(w, dtype=work)  # one aligned copy (parsed weights may sit at odd addresses)
    np.multiply(out, factor.astype(work), out=out)
    return out.astype(w.dtype, copy=False)


def _bias(m: Match) -> np.ndarray:
    b = m.get("b")
    channels = _out_channels(m.node("conv"), m["w"].const)
    return np.zeros(channels) if b is None else b.const.astype(np.float64).reshape(-1)


def _new_conv(b: Builder, m: Match, w: np.ndarray, bias: np.ndarray) -> Value:
    """The conv with weights ``w`` (the matched weight Value when unchanged) and ``bias``."""
    conv, w0 = m.node("conv"), m["w"]
    new_w = w0 if w is w0.const else b.const(w.astype(w0.const.dtype, copy=False),
                                             f"{w0.name}_fused")  # fmt: skip
    new_b = b.const(bias.astype(w0.const.dtype), f"{conv.name}_bias_fused")
    return b.op(conv.op, m["x"], new_w, new_b, **conv.attrs)


# -- BatchNormalization ---------------------------------------------------------------------
def _bn_pattern(op: str) -> Op:
    params = (Const("scale"), Const("B"), Const("mean"), Const("var"))
    return Op("BatchNormalization", _conv(op), *params, name="bn")


def _check_bn(m: Match) -> MatchResult:
    ok = _check_weights(m)
    if not ok:
        return ok
    bn, conv = m.node("bn"), m.node("conv")
    if bn.attr("training_mode"):
        return MatchResult.fail("BatchNormalization in training mode")
    if bn.attr("format") != conv.attr("format"):
        return MatchResult.fail("BatchNormalization and conv formats differ")
    channels = _out_channels(conv, m["w"].const)
    for name in ("scale", "B", "mean", "var"):
        if m[name].const.size != channels:
            return MatchResult.fail(f"BatchNormalization {name} has not {channels} channels")
    return MatchResult.success()


def _fold_bn(b: Builder, m: Match) -> Value:
    def p(name: str) -> np.ndarray:
        return m[name].const.astype(np.float64).reshape(-1)

    a = p("scale") / np.sqrt(p("var") + float(m.node("bn").attr("epsilon")))
    w = _scale_weights(m.node("conv"), m["w"].const, a)
    return _new_conv(b, m, w, (_bias(m) - p("mean")) * a + p("B"))


# -- per-channel arithmetic -----------------------------------------------------------------
def _arith_pattern(op: str, arith: str) -> Op:
    return Op(arith, _conv(op), Const("c"), name="arith", commute=arith in ("Add", "Mul"))


def _check_arith(m: Match) -> MatchResult:
    ok = _check_weights(m)
    if not ok:
        return ok
    arith, c = m.node("arith"), m["c"]
    if arith.op in ("Sub", "Div") and arith.input(0) is c:
        return MatchResult.fail(f"the constant is the left operand of {arith.op}")
    if _per_channel(m, c.const) is None:
        return MatchResult.fail(f"{c.name!r} {c.const.shape} is not per output channel")
    if arith.op == "Div" and not np.all(c.const != 0):
        return MatchResult.fail(f"{c.name!r} has zeros")
    return MatchResult.success()


def _fold_arith(b: Builder, m: Match) -> Value:
    op = m.node("arith").op
    c = _per_channel(m, m["c"].const)
    assert c is not None
    if op in ("Add", "Sub"):
        return _new_conv(b, m, m["w"].const, _bias(m) + (c if op == "Add" else -c))
    scale = c if op == "Mul" else 1.0 / c
    return _new_conv(b, m, _scale_weights(m.node("conv"), m["w"].const, scale), _bias(m) * scale)


# -- activation ---------------------------------------------------------------------------
def _act_pattern(act: str) -> Op:
    conv = _conv("Conv")
    if act == "Clip":
        return Op("Clip", conv, Var("lo", optional=True), Var("hi", optional=True), name="act")
    return Op(act, conv, name="act")


def _check_act(m: Match) -> MatchResult:
    spec = activation_of(m.node("act"))
    if spec is None:
        return MatchResult.fail("activation parameters are not constant scalars")
    if not m["x"].dtype.is_float:
        return MatchResult.fail("conv input is not float")
    return activation_allowed(m, *spec)


def _fuse_act(b: Builder, m: Match) -> Value:
    spec = activation_of(m.node("act"))
    assert spec is not None
    name, params = spec
    conv = m.node("conv")
    attrs = dict(conv.attrs, activation=name)
    if params is not None:
        attrs["activation_params"] = params
    return b.op("ConvAct", m["x"], m["w"], m.get("b"), **attrs)


rules = RuleSet(
    [
        *(Rule(f"{op}+BatchNormalization", _bn_pattern(op), _fold_bn, _check_bn) for op in CONVS),
        *(
            Rule(f"{op}+{arith}", _arith_pattern(op, arith), _fold_arith, _check_arith)
            for op in CONVS
            for arith in ("Add", "Sub", "Mul", "Div")
        ),
        *(Rule(f"Conv+{act}", _act_pattern(act), _fuse_act, _check_act) for act in FUSABLE),
    ]
)
"""Conv family rules, in the order they are tried at one anchor."""
