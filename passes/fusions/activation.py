"""Activations: which nodes are fusable activations, and Swish / HardSwish recognition.

:func:`activation_of` reads an activation node as the ``(activation,
activation_params)`` pair of the fused ops (``ir/ops/fused.py``). Which
activations the conv/matmul fusions absorb is ``ctx.options["fuse_activations"]``:

- ``"mappable"`` (default): those a MindSpore Lite ``Conv2DFusion`` /
  ``MatMulFusion`` carries in its ``activation_type`` exactly (Relu, Relu6 =
  Clip(0, 6), Sigmoid, Tanh, HardSwish), so the fused node stays a native
  MindSpore Lite primitive instead of becoming ``Custom``;
- ``"all"``: every activation of :data:`FUSABLE` (LeakyRelu, Gelu, any Clip,
  HardSigmoid, Swish too), fastest in the bundled executor.

Recognition rules (numerically the same functions):

- ``x * Sigmoid(x)`` -> ``Swish(x)``; ``x * Sigmoid(alpha * x)`` -> ``Swish(x, alpha)``;
- ``x * HardSigmoid(x)`` with alpha = 1/6, beta = 0.5 -> ``HardSwish(x)``;
- ``x * Clip(x + 3, 0, 6) / 6`` in its common arrangements
  (``(x * r) / 6``, ``(x * r) * (1/6)``, ``x * (r / 6)``, ``x * (r * (1/6))``) -> ``HardSwish(x)``.
"""

from __future__ import annotations

import numpy as np

from ir import Node
from passes.fusions.engine import (
    Builder,
    Const,
    Match,
    MatchResult,
    Op,
    Rule,
    RuleSet,
    Var,
    scalar_value,
)

__all__ = ["FUSABLE", "MAPPABLE", "activation_allowed", "activation_of", "rules"]

FUSABLE = (
    "Relu",
    "Clip",
    "LeakyRelu",
    "Sigmoid",
    "Tanh",
    "HardSigmoid",
    "HardSwish",
    "Gelu",
    "Swish",
)
"""Ops the conv/matmul fusions can absorb (each is one ``activation`` of the fused ops)."""

MAPPABLE = frozenset({"Relu", "Relu6", "Sigmoid", "Tanh", "HardSwish"})
"""Activations MindSpore Lite's fused conv/matmul tables express exactly."""

_FLOAT_PARAMS = {"LeakyRelu": ("alpha",), "HardSigmoid": ("alpha", "beta"), "Swish": ("alpha",)}


def activation_of(node: Node) -> tuple[str, list[float] | None] | None:
    """``(activation, activation_params)`` of a fusable activation node, else None."""
    if node.op not in FUSABLE or len(node.outputs) != 1:
        return None
    if node.op == "Clip":
        bounds = []
        for i, fill in ((1, -np.inf), (2, np.inf)):
            v = node.input(i)
            value = fill if v is None else scalar_value(v)
            if value is None:
                return None
            bounds.append(float(value))
        return "Clip", bounds
    if node.op == "Gelu":
        mode = node.attr("approximate")
        return ("Gelu", [1.0 if mode == "tanh" else 0.0]) if mode in ("none", "tanh") else None
    names = _FLOAT_PARAMS.get(node.op)
    return node.op, (None if names is None else [float(node.attr(n)) for n in names])


def _kind(name: str, params: list[float] | None) -> str:
    if name == "Clip" and params == [0.0, 6.0]:
        return "Relu6"
    return name


def activation_allowed(match: Match, name: str, params: list[float] | None) -> MatchResult:
    """Whether the pass options let the fusions absorb this activation."""
    mode = match.ctx.options.get("fuse_activations", "mappable")
    if mode == "all" or _kind(name, params) in MAPPABLE:
        return MatchResult.success()
    if mode not in ("all", "mappable"):
        return MatchResult.fail(f"fuse_activations={mode!r} is not 'mappable' or 'all'")
    return MatchResult.fail(f"{_kind(name, params)} has no MindSpore Lite fused form")


# -- Swish / HardSwish recognition ----------------------------------------------------------
def _swish_pattern() -> Op:
    return Op("Mul", Var("x"), Op("Sigmoid", Var("x"), name="sig"), commute=True)


def _swish_alpha_pattern() -> Op:
    scaled = Op("Mul", Var("x"), Const("alpha"), commute=True)
    return Op("Mul", Var("x"), Op("Sigmoid", scaled), commute=True)


def _check_swish_alpha(m: Match) -> MatchResult:
    if scalar_value(m["alpha"]) is None:
        return MatchResult.fail("the sigmoid's scale is not a scalar constant")
    return MatchResult.success()


def _hard_sigmoid_pattern() -> Op:
    return Op("Mul", Var("x"), Op("HardSigmoid", Var("x"), name="hs"), commute=True)


def _check_hard_sigmoid(m: Match) -> MatchResult:
    hs = m.node("hs")
    alpha, beta = float(hs.attr("alpha")), float(hs.attr("beta"))
    if not (np.isclose(alpha, 1 / 6, rtol=1e-6) and beta == 0.5):
        return MatchResult.fail(f"HardSigmoid(alpha={alpha}, beta={beta}) is not 1/6, 0.5")
    return MatchResult.success()


def _relu6_shift() -> Op:
    shifted = Op("Add", Var("x"), Const("three", 3.0), commute=True)
    return Op("Clip", shifted, Const("lo", 0.0), Const("hi", 6.0))


def _hard_swish_patterns() -> list[Op]:
    x, r6 = Var("x"), _relu6_shift()
    x_r6 = Op("Mul", x, r6, commute=True)
    return [
        Op("Div", x_r6, Const("six", 6.0)),
        Op("Mul", x_r6, Const("sixth", 1 / 6), commute=True),
        Op("Mul", x, Op("Div", r6, Const("six", 6.0)), commute=True),
        Op("Mul", x, Op("Mul", r6, Const("sixth", 1 / 6), commute=True), commute=True),
    ]


def _check_float_x(m: Match) -> MatchResult:
    if not m["x"].dtype.is_float:
        return MatchResult.fail(f"{m['x'].name!r} is not a float tensor")
    return MatchResult.success()


def _to_swish(b: Builder, m: Match):
    alpha = scalar_value(m.get("alpha")) if m.get("alpha") is not None else 1.0
    attrs = {} if alpha == 1.0 else {"alpha": float(np.float32(alpha))}
    return b.op("Swish", m["x"], **attrs)


def _to_hard_swish(b: Builder, m: Match):
    return b.op("HardSwish", m["x"])


rules = RuleSet(
    [
        Rule("Swish", _swish_pattern(), _to_swish),
        Rule("SwishAlpha", _swish_alpha_pattern(), _to_swish, _check_swish_alpha),
        Rule(
            "HardSwishFromHardSigmoid", _hard_sigmoid_pattern(), _to_hard_swish, _check_hard_sigmoid
        ),  # fmt: skip
        *(
            Rule("HardSwishFromRelu6", p, _to_hard_swish, _check_float_x)
            for p in _hard_swish_patterns()
        ),
    ]
)
"""Swish and HardSwish recognition."""
