"""Lowerings for ops of non-default ONNX domains (com.microsoft, ...).

Each entry of :data:`CONTRIB` is keyed by (domain, op type) and receives the
node and the builder, exactly like :data:`parsers.onnx.upgrades.UPGRADES`; it
emits IR nodes and returns True, or returns False to let the generic path
decide (an op declared in the IR with that domain lowers as-is; anything else
is reported as unsupported).

com.microsoft ops equal to default-domain ops lower to those (semantics from
onnxruntime's ContribOperators.md):

* Gelu -> Gelu; FastGelu(X, bias?) -> [Add] + Gelu(approximate="tanh") (onnxruntime's
  0.797885 / 0.035677 constants are sqrt(2/pi) and 0.044715 * sqrt(2/pi));
  BiasGelu(A, B) -> Add + Gelu; QuickGelu(X, alpha) -> X * Sigmoid(alpha * X);
  BiasAdd(X, bias, skip) -> (X + bias) + skip.
* FusedGemm -> Gemm + its activation; LayerNormalization -> LayerNormalization.
* QuantizeLinear / DequantizeLinear (axis optional) -> the default-domain ops.
* QLinearConv, QLinearGlobalAveragePool: ``channels_last=1`` becomes ``format="NHWC"``.
* SimplifiedLayerNormalization (onnxruntime registers it in the default domain) is also
  accepted under com.microsoft.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from parsers.onnx.upgrades import Builder, OnnxNode, Upgrade

__all__ = ["CONTRIB"]

MS = "com.microsoft"


def _emit(n: OnnxNode, b: Builder, op: str, inputs: list, attrs: dict[str, Any]) -> bool:
    """Emit the node's replacement as one IR node writing the node's outputs."""
    b.emit(op, inputs, attrs, outputs=n.outputs, hint=n.name)
    return True


def _rename(op: str, keep: tuple[str, ...] = ()) -> Upgrade:
    """Same inputs and outputs under a default-domain op name, keeping ``keep`` attrs."""

    def run(n: OnnxNode, b: Builder) -> bool:
        attrs = {k: v for k, v in n.attrs.items() if k in keep}
        return _emit(n, b, op, list(n.inputs), attrs)

    return run


def _keep_attrs(op: str) -> Upgrade:
    """Same inputs, outputs and attributes under another IR op name (of this domain).

    Renames the node and declines, so the generic path types the attributes
    against that op's declaration and emits it.
    """

    def run(n: OnnxNode, b: Builder) -> bool:
        n.op = op
        return False

    return run


def _scalar_like(n: OnnxNode, b: Builder, value: float, what: str) -> Any:
    x = n.inputs[0]
    dtype = np.float32
    if x is not None and x.dtype.is_float:
        dtype = x.dtype.numpy
    return b.const(np.asarray(value, dtype=dtype), f"{n.name}_{what}")


def _gelu(approximate: str) -> Upgrade:
    """Gelu / FastGelu / BiasGelu: optional bias (input 1) added first."""

    def run(n: OnnxNode, b: Builder) -> bool:
        x = n.inputs[0]
        bias = n.input(1)
        if bias is not None:
            x = b.emit("Add", [x, bias], {}, hint=f"{n.name}_bias")[0]
        attrs = {} if approximate == "none" else {"approximate": approximate}
        return _emit(n, b, "Gelu", [x], attrs)

    return run


def _quick_gelu(n: OnnxNode, b: Builder) -> bool:
    alpha = float(n.attrs.get("alpha", 1.702))
    x = n.inputs[0]
    scaled = b.emit("Mul", [x, _scalar_like(n, b, alpha, "alpha")], {}, hint=f"{n.name}_a")[0]
    gate = b.emit("Sigmoid", [scaled], {}, hint=f"{n.name}_sigmoid")[0]
    return _emit(n, b, "Mul", [x, gate], {})


def _bias_add(n: OnnxNode, b: Builder) -> bool:
    x, bias, skip = n.inputs[:3]
    biased = b.emit("Add", [x, bias], {}, hint=f"{n.name}_bias")[0]
    return _emit(n, b, "Add", [biased, skip], {})


_GEMM_ACTIVATIONS = {
    "Relu": (), "Tanh": (), "Sigmoid": (), "LeakyRelu": ("alpha",),
    "HardSigmoid": ("alpha", "beta"), "Elu": ("alpha",), "Selu": ("alpha", "gamma"),
    "ThresholdedRelu": ("alpha",), "Softsign": (), "Softplus": (),
}


def _fused_gemm(n: OnnxNode, b: Builder) -> bool:
    act = n.attrs.get("activation") or ""
    if act and act not in _GEMM_ACTIVATIONS:
        b.problem(f"node {n.name!r} (FusedGemm): activation {act!r} is not supported")
        return True
    gemm = {k: n.attrs[k] for k in ("alpha", "beta", "transA", "transB") if k in n.attrs}
    if not act:
        return _emit(n, b, "Gemm", list(n.inputs), gemm)
    y = b.emit("Gemm", list(n.inputs), gemm, hint=f"{n.name}_gemm")[0]
    attrs = {}
    for name in _GEMM_ACTIVATIONS[act]:
        if f"activation_{name}" in n.attrs:
            attrs[name] = float(n.attrs[f"activation_{name}"])
    return _emit(n, b, act, [y], attrs)


def _q_dq(op: str) -> Upgrade:
    def run(n: OnnxNode, b: Builder) -> bool:
        attrs = {"axis": int(n.attrs["axis"])} if "axis" in n.attrs else {}
        return _emit(n, b, op, list(n.inputs), attrs)

    return run


def _channels_last(op: str) -> Upgrade:
    """Ops whose ``channels_last`` attribute is the IR's ``format``."""

    def run(n: OnnxNode, b: Builder) -> bool:
        attrs = dict(n.attrs)
        if attrs.pop("channels_last", 0):
            attrs["format"] = "NHWC"
        return _emit(n, b, op, list(n.inputs), attrs)

    return run


CONTRIB: dict[tuple[str, str], Upgrade] = {
    (MS, "Gelu"): _gelu("none"),
    (MS, "BiasGelu"): _gelu("none"),
    (MS, "FastGelu"): _gelu("tanh"),
    (MS, "QuickGelu"): _quick_gelu,
    (MS, "BiasAdd"): _bias_add,
    (MS, "FusedGemm"): _fused_gemm,
    (MS, "LayerNormalization"): _rename(
        "LayerNormalization", ("axis", "epsilon", "stash_type")
    ),
    (MS, "SimplifiedLayerNormalization"): _rename(
        "SimplifiedLayerNormalization", ("axis", "epsilon", "stash_type")
    ),
    (MS, "QuantizeLinear"): _q_dq("QuantizeLinear"),
    (MS, "DequantizeLinear"): _q_dq("DequantizeLinear"),
    (MS, "QLinearConv"): _channels_last("QLinearConv"),
    (MS, "QLinearGlobalAveragePool"): _channels_last("QLinearGlobalAveragePool"),
    # ai.onnx has an Attention op of its own: the contrib ones get distinct IR names
    (MS, "Attention"): _keep_attrs("MsAttention"),
    (MS, "MultiHeadAttention"): _keep_attrs("MsMultiHeadAttention"),
}
