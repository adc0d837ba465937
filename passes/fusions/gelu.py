"""GELU recognition -> ai.onnx ``Gelu``.

Exact (``approximate="none"``)::

    x * 0.5 * (1 + erf(x / sqrt(2)))          (x * (1/sqrt(2)) also accepted)

tanh approximation (``approximate="tanh"``)::

    0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))   (x^3: Pow(x, 3) or x*x*x)

Each in the arrangements exporters write, with any operand order of the
commutative Add/Mul: ``(x * t) * 0.5``, ``x * (t * 0.5)``, ``(x * 0.5) * t``
and ``(x * t) / 2``, ``t`` being the ``1 + erf(..)`` / ``1 + tanh(..)`` factor.
Constants must be scalars within a relative 1e-5 of the ideal value; x must
be a float tensor.
"""

from __future__ import annotations

import math

from ir import Value
from passes.fusions.engine import (
    Builder,
    Const,
    Match,
    MatchResult,
    Op,
    Or,
    Pattern,
    Rule,
    RuleSet,
    Var,
)

__all__ = ["rules"]


def _erf_factor(x: Var) -> Op:
    arg = Or(
        Op("Div", x, Const("sqrt2", math.sqrt(2.0))),
        Op("Mul", x, Const("inv_sqrt2", 1 / math.sqrt(2.0)), commute=True),
    )
    return Op("Add", Op("Erf", arg), Const("one", 1.0), commute=True)


def _tanh_factor(x: Var) -> Op:
    cube = Or(
        Op("Pow", x, Const("three", 3.0)),
        Op("Mul", Op("Mul", x, x), x, commute=True),
    )
    inner = Op("Add", x, Op("Mul", cube, Const("c", 0.044715), commute=True), commute=True)
    scaled = Op("Mul", inner, Const("k", math.sqrt(2 / math.pi)), commute=True)
    return Op("Add", Op("Tanh", scaled), Const("one", 1.0), commute=True)


def _roots(x: Var, t: Pattern) -> list[Op]:
    half = Const("half", 0.5)
    return [
        Op("Mul", Op("Mul", x, t, commute=True), half, commute=True),
        Op("Mul", x, Op("Mul", t, half, commute=True), commute=True),
        Op("Mul", Op("Mul", x, half, commute=True), t, commute=True),
        Op("Div", Op("Mul", x, t, commute=True), Const("two", 2.0)),
    ]


def _check(m: Match) -> MatchResult:
    if not m["x"].dtype.is_float:
        return MatchResult.fail(f"{m['x'].name!r} is not a float tensor")
    return MatchResult.success()


def _to_gelu(approximate: str):
    def rewrite(b: Builder, m: Match) -> Value:
        attrs = {} if approximate == "none" else {"approximate": approximate}
        return b.op("Gelu", m["x"], **attrs)

    return rewrite


_X = Var("x")
rules = RuleSet(
    [
        *(Rule("GeluErf", p, _to_gelu("none"), _check) for p in _roots(_X, _erf_factor(_X))),
        *(Rule("GeluTanh", p, _to_gelu("tanh"), _check) for p in _roots(_X, _tanh_factor(_X))),
    ]
)
"""GELU recognition rules."""
