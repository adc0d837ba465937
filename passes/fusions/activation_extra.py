"""Softplus and Mish recognition -> ai.onnx ``Softplus`` / ``Mish``.

- ``Log(Exp(x) + 1)`` (either Add operand order) -> ``Softplus(x)``
  (``log(1 + exp(x))``; the fused op does not overflow to inf for large x
  as the decomposed form does);
- ``x * Tanh(Softplus(x))`` and ``x * Tanh(Log(Exp(x) + 1))`` -> ``Mish(x)``.

x must be a float tensor; the ``1`` a scalar constant within a relative 1e-5.
"""

from __future__ import annotations

from ir import Value
from passes.fusions.engine import Builder, Const, Match, MatchResult, Op, Or, Rule, RuleSet, Var

__all__ = ["rules"]


def _softplus_chain(x: Var) -> Op:
    return Op("Log", Op("Add", Op("Exp", x), Const("one", 1.0), commute=True))


def _mish() -> Op:
    x = Var("x")
    soft = Or(Op("Softplus", x), _softplus_chain(x))
    return Op("Mul", x, Op("Tanh", soft), commute=True)


def _check(m: Match) -> MatchResult:
    if not m["x"].dtype.is_float:
        return MatchResult.fail(f"{m['x'].name!r} is not a float tensor")
    return MatchResult.success()


def _to(op: str):
    def rewrite(b: Builder, m: Match) -> Value:
        return b.op(op, m["x"])

    return rewrite


rules = RuleSet(
    [
        Rule("Softplus", _softplus_chain(Var("x")), _to("Softplus"), _check),
        Rule("Mish", _mish(), _to("Mish"), _check),
    ]
)
"""Softplus and Mish recognition."""
