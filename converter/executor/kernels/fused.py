"""Kernels of the fused ops (``ir/ops/fused.py``) and of ONNX Swish.

``ConvAct`` runs the nn Conv kernel, ``MatMulAct`` the nn MatMul kernel
plus the bias; both then apply their activation to the fresh result, in place
where NumPy can (Relu, Clip, LeakyRelu), else through the elementwise kernel of
the activation op, so the numbers are those of the unfused graph. Outputs keep
the dtype of the first input.

``AddAct`` / ``SubAct`` / ``MulAct`` / ``DivAct`` run the elementwise kernel of
their binary op, then the activation on the fresh result.

``LSTMMerged`` / ``GRUMerged`` run the nn LSTM / GRU kernel and merge the
direction axis of ``Y`` into the hidden axis (one copy, as a runtime writing
the steps into the merged buffer would produce); ``Y_h``/``Y_c`` are unchanged.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from converter.executor.kernels import elementwise, nn, vector
from converter.executor.registry import Kernel, KernelContext, UnsupportedKernel
from ir.ops.fused import BINARY_ACT, activation_params_ok

__all__ = ["KERNELS", "apply_activation"]

Array = np.ndarray


class _ActContext:
    """The ``ctx.attr`` an elementwise activation kernel needs."""

    __slots__ = ("attrs",)

    def __init__(self, attrs: dict[str, Any]) -> None:
        self.attrs = attrs

    def attr(self, name: str) -> Any:
        return self.attrs[name]


def _act_attrs(name: str, params: list[float]) -> dict[str, Any]:
    if name in ("LeakyRelu", "Swish"):
        return {"alpha": params[0]}
    if name == "HardSigmoid":
        return {"alpha": params[0], "beta": params[1]}
    if name == "Gelu":
        return {"approximate": "tanh" if params[0] else "none"}
    return {}


def apply_activation(y: Array, name: str, params: list[float] | None) -> Array:
    """``name``(``y``) with ``params``; may overwrite ``y`` (a fresh kernel result)."""
    if not activation_params_ok(name, params):
        raise UnsupportedKernel(f"fused activation {name!r} with params {params!r}")
    p = list(params or [])
    in_place = y.dtype in (np.float32, np.float64) and y.flags.writeable
    if name == "none":
        return y
    if name == "Relu" and in_place:
        return vector.clamp(y, 0.0, None)
    if name == "Clip" and in_place:
        return vector.clamp(y, p[0], p[1])
    if name == "Clip":
        lo, hi = np.asarray(p[0], y.dtype), np.asarray(p[1], y.dtype)
        return elementwise.KERNELS["Clip"](_ActContext({}), y, lo, hi)
    if name == "Swish":
        return _swish(y, p[0])
    return elementwise.KERNELS[name](_ActContext(_act_attrs(name, p)), y)


def _swish(x: Array, alpha: float) -> Array:
    elementwise.require("Swish", x, elementwise.is_float)
    w = elementwise.working(x)
    with np.errstate(all="ignore"):
        z = w * w.dtype.type(alpha) if alpha != 1.0 else w
        e = np.exp(-np.abs(z))
        sig = np.where(z >= 0, 1 / (1 + e), e / (1 + e))
        return (w * sig).astype(x.dtype, copy=False)


def _activation(ctx: KernelContext) -> tuple[str, list[float] | None]:
    return ctx.attr("activation"), ctx.attr("activation_params")


def _fresh(y: Array, *inputs: Array | None) -> Array:
    """``y`` itself unless it may alias an input (then a copy)."""
    if any(a is not None and np.may_share_memory(y, a) for a in inputs):
        return y.copy()
    return y


def _conv_act(ctx: KernelContext, x: Array, w: Array, b: Array | None = None) -> Array:
    y = _fresh(np.asarray(nn.KERNELS["Conv"](ctx, x, w, b)), x, w, b)
    return apply_activation(y, *_activation(ctx))


def _matmul_act(ctx: KernelContext, a: Array, b: Array, bias: Array | None = None) -> Array:
    y = _fresh(np.asarray(nn.KERNELS["MatMul"](ctx, a, b)), a, b)
    if bias is not None:
        if y.dtype in (np.float32, np.float64) and y.shape == np.broadcast_shapes(
            y.shape, bias.shape
        ):
            np.add(y, bias.astype(y.dtype, copy=False), out=y)
        else:
            y = elementwise.KERNELS["Add"](ctx, y, bias)
    return apply_activation(y, *_activation(ctx))


_UFUNCS = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}


def _binary_act(op: str) -> Kernel:
    ufunc = _UFUNCS[op]

    def kernel(ctx: KernelContext, a: Array, b: Array) -> Array:
        if _overwritable(ctx, a, b):  # the unfused kernel's ufunc, into A's buffer
            with np.errstate(all="ignore"):
                y = ufunc(a, b, out=a)
        else:
            y = _fresh(np.asarray(elementwise.KERNELS[op](ctx, a, b)), a, b)
        return apply_activation(y, *_activation(ctx))

    return kernel


def _overwritable(ctx: KernelContext, a: Array, b: Array) -> bool:
    """A was donated and can hold the float result as is (same dtype, full shape)."""
    return (
        ctx.reusable(0)
        and a.dtype in (np.float32, np.float64)
        and b.dtype == a.dtype
        and a.flags.writeable
        and a.shape == np.broadcast_shapes(a.shape, b.shape)
        and not np.may_share_memory(a, b)
    )


class _RnnContext:
    """The context of a merged RNN node as the plain LSTM/GRU kernel reads it."""

    __slots__ = ("attrs", "cache", "node", "num_outputs")

    def __init__(self, ctx: KernelContext, op: str) -> None:
        self.attrs = ctx.attrs
        self.cache = ctx.cache
        self.num_outputs = max(ctx.num_outputs, 1)
        self.node = _RnnNode(op, ctx.node.inputs, ctx.node.outputs)

    def attr(self, name: str) -> Any:
        return self.attrs[name]


class _RnnNode:
    __slots__ = ("inputs", "op", "outputs")

    def __init__(self, op: str, inputs: Any, outputs: Any) -> None:
        self.op, self.inputs, self.outputs = op, inputs, outputs


def _merged_rnn(op: str) -> Kernel:
    def kernel(ctx: KernelContext, *inputs: Array | None) -> tuple[Array, ...]:
        outs = nn.KERNELS[op](_RnnContext(ctx, op), *inputs)
        outs = (outs,) if isinstance(outs, np.ndarray) else tuple(outs)
        y = outs[0]
        if ctx.attr("layout"):  # [B, S, D, H] -> [B, S, D*H]: a view
            merged = y.reshape(*y.shape[:2], -1)
        else:  # [S, D, B, H] -> [S, B, D*H]
            merged = np.ascontiguousarray(y.transpose(0, 2, 1, 3)).reshape(
                y.shape[0], y.shape[2], -1)  # fmt: skip
        return (merged, *outs[1:])[: ctx.num_outputs]

    return kernel


def _swish_kernel(ctx: KernelContext, x: Array) -> Array:
    return _swish(x, float(ctx.attr("alpha")))


KERNELS: dict[str, Kernel] = {
    "ConvAct": _conv_act,
    "MatMulAct": _matmul_act,
    "Swish": _swish_kernel,
    **{name: _binary_act(base) for name, base in BINARY_ACT.items()},
    "LSTMMerged": _merged_rnn("LSTM"),
    "GRUMerged": _merged_rnn("GRU"),
}
