"""MatMul fusions: bias Add, then activation.

- ``MatMul(A, B) + c`` (either operand order), ``c`` a constant over the last
  axis of the product (shape ``[N]``, ``[1, ..., 1, N]`` or one element, of rank
  at most the product's) -> ``MatMulAct(A, B, bias)`` with ``bias`` the 1-D
  ``[N]`` vector (a one-element ``c`` is repeated N times);
- ``act(MatMulAct(A, B, bias))`` without activation, ``act`` an activation
  of :mod:`passes.fusions.activation` -> ``MatMulAct(..., activation=act)``.

``B`` need not be constant; it must be at least 2-D (so the product has the
``N`` axis) with a known last dimension.
"""

from __future__ import annotations

import numpy as np

from ir import Value
from passes.fusions.activation import FUSABLE, activation_allowed, activation_of
from passes.fusions.engine import Builder, Const, Match, MatchResult, Op, Rule, RuleSet, Var

__all__ = ["rules"]


def _add_pattern() -> Op:
    mm = Op("MatMul", Var("a"), Var("b"), name="mm")
    return Op("Add", mm, Const("c"), name="add", commute=True)


def _bias_vector(m: Match) -> np.ndarray | None:
    b, out, c = m["b"], m.node("mm").outputs[0], m["c"].const
    if b.rank is None or b.rank < 2 or out.rank is None:
        return None
    n = b.shape[-1]
    if not isinstance(n, int) or c.ndim > out.rank or c.dtype != b.dtype.numpy:
        return None
    if any(d != 1 for d in c.shape[:-1]) or c.size not in (1, n):
        return None
    return np.broadcast_to(c.reshape(-1), (n,)).copy()


def _check_add(m: Match) -> MatchResult:
    if not m["a"].dtype.is_float:
        return MatchResult.fail("MatMul is not on floats")
    if _bias_vector(m) is None:
        return MatchResult.fail(f"{m['c'].name!r} is not a bias over the last axis")
    return MatchResult.success()


def _fuse_add(b: Builder, m: Match) -> Value:
    bias = _bias_vector(m)
    assert bias is not None
    c = m["c"]
    bias_v = c if c.const.shape == bias.shape else b.const(bias, f"{c.name}_bias")
    return b.op("MatMulAct", m["a"], m["b"], bias_v)


def _act_pattern(act: str) -> Op:
    fused = Op("MatMulAct", Var("a"), Var("b"), Var("bias", optional=True), name="mm")
    if act == "Clip":
        return Op("Clip", fused, Var("lo", optional=True), Var("hi", optional=True), name="act")
    return Op(act, fused, name="act")


def _check_act(m: Match) -> MatchResult:
    if m.node("mm").attr("activation") != "none":
        return MatchResult.fail("the MatMulAct already has an activation")
    spec = activation_of(m.node("act"))
    if spec is None:
        return MatchResult.fail("activation parameters are not constant scalars")
    return activation_allowed(m, *spec)


def _fuse_act(b: Builder, m: Match) -> Value:
    spec = activation_of(m.node("act"))
    assert spec is not None
    name, params = spec
    attrs: dict = {"activation": name}
    if params is not None:
        attrs["activation_params"] = params
    return b.op("MatMulAct", m["a"], m["b"], m.get("bias"), **attrs)


rules = RuleSet(
    [
        Rule("MatMul+Add", _add_pattern(), _fuse_add, _check_add),
        *(Rule(f"MatMulAct+{act}", _act_pattern(act), _fuse_act, _check_act) for act in FUSABLE),
    ]
)
"""MatMul rules."""
