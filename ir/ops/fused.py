"""Fused ops produced by the graph fusions (``passes/fusions``), plus ONNX Swish.

``ConvAct`` and ``MatMulAct`` (domain ``liteconv``) are an op of the
vocabulary followed by an activation, computed as one kernel:

- ``ConvAct(X, W, B?)`` = ``act(Conv(X, W, B))``, with every Conv attribute
  (``format`` included) meaning what it means on Conv;
- ``MatMulAct(A, B, bias?)`` = ``act(MatMul(A, B) + bias)``, ``bias`` a 1-D
  tensor over the last axis of the product (NumPy broadcasting).

``activation`` names an ONNX activation op; ``activation_params`` holds its
parameters, in this order (see :data:`ACTIVATION_PARAMS`):

======================  ==========================================================
``none``                identity (no params)
``Relu``                ``max(x, 0)``
``Clip``                ``[min, max]`` (``[0, 6]`` is Relu6; ``-inf``/``inf`` for open ends)
``LeakyRelu``           ``[alpha]``
``Sigmoid`` ``Tanh``    no params
``HardSigmoid``         ``[alpha, beta]``: ``clip(alpha * x + beta, 0, 1)``
``HardSwish``           ``x * clip(x / 6 + 0.5, 0, 1)``
``Gelu``                ``[approximate]``: 0 = exact (erf), 1 = tanh approximation
``Swish``               ``[alpha]``: ``x * sigmoid(alpha * x)``
======================  ==========================================================

``AddAct`` / ``SubAct`` / ``MulAct`` / ``DivAct`` (domain ``liteconv``) are the
ONNX binary op followed by an activation: ``act(A op B)`` with NumPy
broadcasting, the output in A's dtype (MindSpore Lite ``AddFusion`` /
``SubFusion`` / ``MulFusion`` / ``DivFusion`` with ``activation_type``); a
residual ``Relu(Add(a, b))`` is ``AddAct(a, b, activation="Relu")``.

``activation_params`` may be omitted (None) only for activations without
params. ``Swish`` is ONNX's (opset 24, domain ai.onnx): ``x * sigmoid(alpha * x)``.

``LSTMMerged`` / ``GRUMerged`` (domain ``liteconv``) are ONNX ``LSTM`` / ``GRU``
(same inputs, attributes and ``Y_h``/``Y_c``) whose ``Y`` has the direction axis
merged into the hidden axis, the layout PyTorch's ``nn.LSTM``/``nn.GRU`` return,
TFLite's ``BidirectionalSequenceLSTM`` with ``merge_outputs`` and cuDNN write:

- ``layout`` 0: ``Y[s, b, d * H + h] = LSTM.Y[s, d, b, h]``, shape ``[S, B, D*H]``;
- ``layout`` 1: ``Y[b, s, d * H + h] = LSTM.Y[b, s, d, h]``, shape ``[B, S, D*H]``.

(``D`` directions, ``H`` = ``hidden_size``.) A kernel writes each step's hidden
state straight into its slice of the merged output, instead of an ONNX
``Transpose(Y, [0, 2, 1, 3])`` + ``Reshape`` copying the whole sequence again.
"""

from __future__ import annotations

from ir.core import Node
from ir.dtypes import DataType
from ir.ops import nn
from ir.ops.base import FLOAT, FLOATS, STRING, OpDef, Trait, op
from ir.ops.infer import broadcast, broadcast_shapes, in_dtype, in_shape, same_as_input

__all__ = ["ACTIVATION_PARAMS", "BINARY_ACT", "OPS", "activation_params_ok"]

BINARY_ACT: dict[str, str] = {"AddAct": "Add", "SubAct": "Sub", "MulAct": "Mul", "DivAct": "Div"}
"""Fused binary op -> the ONNX binary op it applies before its activation."""

ACTIVATION_PARAMS: dict[str, tuple[str, ...]] = {
    "none": (),
    "Relu": (),
    "Clip": ("min", "max"),
    "LeakyRelu": ("alpha",),
    "Sigmoid": (),
    "Tanh": (),
    "HardSigmoid": ("alpha", "beta"),
    "HardSwish": (),
    "Gelu": ("approximate",),
    "Swish": ("alpha",),
}
"""Activation name -> the names of its ``activation_params`` entries, in order."""


def activation_params_ok(name: str, params: list[float] | None) -> bool:
    """Whether ``params`` is a valid parameter list for activation ``name``."""
    names = ACTIVATION_PARAMS.get(name)
    if names is None:
        return False
    if params is None:
        return not names
    return len(params) == len(names)


_ACT_ATTRS = {"activation": STRING("none"), "activation_params": FLOATS(None)}


def _nn_def(name: str) -> OpDef:
    return next(d for d in nn.OPS if d.name == name)


_CONV = _nn_def("Conv")
_MATMUL = _nn_def("MatMul")
_RNNS = {"LSTMMerged": _nn_def("LSTM"), "GRUMerged": _nn_def("GRU")}


def _infer_conv_act(node: Node) -> list:
    assert _CONV.infer is not None
    return _CONV.infer(node)


def _infer_matmul_act(node: Node) -> list:
    assert _MATMUL.infer is not None
    (dtype, shape), *_ = _MATMUL.infer(node)
    bias = node.input(2)
    if bias is not None and shape is not None:
        try:
            shape = broadcast_shapes(shape, in_shape(node, 2))
        except ValueError:
            shape = None
    return [(in_dtype(node) if dtype == DataType.UNDEFINED else dtype, shape)]


def _infer_merged_rnn(node: Node) -> list:
    """The RNN's outputs with Y [S, D, B, H] -> [S, B, D*H] ([B, S, D, H] -> [B, S, D*H])."""
    rnn = _RNNS[node.op]
    assert rnn.infer is not None
    (dtype, y), *rest = rnn.infer(node)
    if y is not None:
        a, b, dirs = (y[0], y[1], y[2]) if node.attr("layout") else (y[0], y[2], y[1])
        hidden = y[3]
        merged = dirs * hidden if isinstance(dirs, int) and isinstance(hidden, int) else None
        y = (a, b, merged)
    return [(dtype, y), *rest]


OPS: tuple[OpDef, ...] = (
    op("ConvAct", "X W B?", "Y", attrs={**_CONV.attrs, **_ACT_ATTRS},
       traits={Trait.LAYOUT_SENSITIVE}, infer=_infer_conv_act, domain="liteconv",
       doc="act(Conv(X, W, B)); Conv attributes as on Conv."),
    op("MatMulAct", "A B bias?", "Y", attrs=dict(_ACT_ATTRS), infer=_infer_matmul_act,
       domain="liteconv", doc="act(MatMul(A, B) + bias), bias 1-D over the last axis."),
    op("Swish", "X", "Y", attrs={"alpha": FLOAT(1.0)},
       traits={Trait.ELEMENTWISE, Trait.UNARY, Trait.ACTIVATION}, infer=same_as_input,
       doc="ONNX Swish (opset 24): x * sigmoid(alpha * x)."),
    *(op(name, "A B", "C", attrs=dict(_ACT_ATTRS), infer=broadcast, domain="liteconv",
         traits={Trait.ELEMENTWISE, *((Trait.COMMUTATIVE,) if base in ("Add", "Mul") else ())},
         doc=f"act(A {base} B), NumPy broadcasting; output in A's dtype.")
      for name, base in BINARY_ACT.items()),
    op("LSTMMerged", "X W R B? sequence_lens? initial_h? initial_c? P?", "Y? Y_h? Y_c?",
       attrs=dict(_RNNS["LSTMMerged"].attrs), infer=_infer_merged_rnn, domain="liteconv",
       doc="LSTM with Y [S, B, D*H] (layout 1: [B, S, D*H]): directions merged."),
    op("GRUMerged", "X W R B? sequence_lens? initial_h?", "Y? Y_h?",
       attrs=dict(_RNNS["GRUMerged"].attrs), infer=_infer_merged_rnn, domain="liteconv",
       doc="GRU with Y [S, B, D*H] (layout 1: [B, S, D*H]): directions merged."),
)  # fmt: skip
