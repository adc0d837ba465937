"""Binary arithmetic + activation -> AddAct / SubAct / MulAct / DivAct.

``act(A op B)``, ``op`` one of Add, Sub, Mul, Div on float tensors (any
broadcast, either operand constant or not; a two-input ``Sum``, the residual
Add of old exporters, is an Add) and ``act`` an activation of
:mod:`passes.fusions.activation`, becomes ``<op>Act(A, B, activation=act)``
(``ir/ops/fused.py``): one kernel instead of two, and in ``.ms`` a MindSpore
Lite ``AddFusion`` / ``SubFusion`` / ``MulFusion`` / ``DivFusion`` carrying the
activation in ``activation_type``. The residual ``Relu(Add(conv, shortcut))``
of every ResNet block is the main case.

Which activations: ``ctx.options["fuse_activations"]`` as for ConvAct
(``"mappable"``: Relu, Relu6, Sigmoid, Tanh, HardSwish; ``"all"``: every one).

The rules run in their own pass, :class:`FuseBinaryActivations`, after the
other fusions and the late passes: a binary op feeding an activation is part
of the patterns they recognize (GELU's ``Tanh(k * inner)``, HardSwish's
``Clip(x + 3, 0, 6)``, SwishAlpha's ``Sigmoid(alpha * x)``, the gates of
unrolled GRU/LSTM cells ``Sigmoid(xz + hz)``), and a bias Add belongs in the
preceding conv or matmul first.
"""

from __future__ import annotations

from ir import Value
from passes.base import PassContext
from passes.fusions.activation import FUSABLE, activation_allowed, activation_of
from passes.fusions.engine import Builder, Match, MatchResult, Op, Rule, RulePass, RuleSet, Var

__all__ = ["BINARY", "FuseBinaryActivations", "rules"]

BINARY = {"Add": "AddAct", "Sub": "SubAct", "Mul": "MulAct", "Div": "DivAct", "Sum": "AddAct"}
"""Binary op -> the fused op it becomes with an activation."""


def _pattern(op: str, act: str) -> Op:
    binary = Op(op, Var("a"), Var("b"), name="bin")
    if act == "Clip":
        return Op("Clip", binary, Var("lo", optional=True), Var("hi", optional=True), name="act")
    return Op(act, binary, name="act")


def _check(m: Match) -> MatchResult:
    a, b = m["a"], m["b"]
    if not (a.dtype.is_float and b.dtype == a.dtype):
        return MatchResult.fail(f"{m.node('bin').op} is not on two tensors of one float dtype")
    spec = activation_of(m.node("act"))
    if spec is None:
        return MatchResult.fail("activation parameters are not constant scalars")
    return activation_allowed(m, *spec)


def _fuse(b: Builder, m: Match) -> Value:
    spec = activation_of(m.node("act"))
    assert spec is not None
    name, params = spec
    attrs: dict = {"activation": name}
    if params is not None:
        attrs["activation_params"] = params
    return b.op(BINARY[m.node("bin").op], m["a"], m["b"], **attrs)


rules = RuleSet(
    [Rule(f"{op}+{act}", _pattern(op, act), _fuse, _check) for op in BINARY for act in FUSABLE]
)
"""Binary + activation rules."""


class FuseBinaryActivations(RulePass):
    """The binary + activation rules, as a late pass (see the module docstring)."""

    name = "FuseBinaryActivations"

    def __init__(self, ctx: PassContext | None = None) -> None:
        super().__init__(rules, ctx)
