"""Elementwise ops: unary math, activations, binary arithmetic, comparisons.

Semantics: the ONNX operator spec (latest opset). Binary ops broadcast
multidirectionally (NumPy rules).
"""

from __future__ import annotations

from ir.ops.base import FLOAT, Trait, op
from ir.ops.infer import broadcast, broadcast_bool, same_as_input

E, U, C, A = Trait.ELEMENTWISE, Trait.UNARY, Trait.COMMUTATIVE, Trait.ACTIVATION


def _unary(name: str, *extra: Trait, attrs=None, doc: str = ""):
    return op(name, "X", "Y", attrs=attrs, traits={E, U, *extra}, infer=same_as_input, doc=doc)


def _binary(name: str, *extra: Trait, doc: str = ""):
    return op(name, "A B", "C", traits={E, *extra}, infer=broadcast, doc=doc)


OPS = (
    _unary("Identity", Trait.NO_OP_CANDIDATE),
    _unary("Relu", A, Trait.QUANTIZABLE),
    _unary("LeakyRelu", A, attrs={"alpha": FLOAT(0.01)}),
    _unary("Sigmoid", A),
    _unary("Tanh", A),
    _binary("Add", C, Trait.QUANTIZABLE),
    _binary("Sub"),
    _binary("Mul", C, Trait.QUANTIZABLE),
    _binary("Div"),
    op("Equal", "A B", "C", traits={E, C}, infer=broadcast_bool),
)
