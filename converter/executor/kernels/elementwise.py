"""Elementwise kernels (unary math, activations, binary arithmetic, comparisons)."""

from __future__ import annotations

import numpy as np

from converter.executor.registry import KernelContext


def _identity(ctx: KernelContext, x: np.ndarray) -> np.ndarray:
    return x


def _relu(ctx: KernelContext, x: np.ndarray) -> np.ndarray:
    return np.maximum(x, x.dtype.type(0))


def _leaky_relu(ctx: KernelContext, x: np.ndarray) -> np.ndarray:
    return np.where(x >= 0, x, x * x.dtype.type(ctx.attr("alpha")))


def _sigmoid(ctx: KernelContext, x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return (1.0 / (1.0 + np.exp(-x))).astype(x.dtype, copy=False)


def _tanh(ctx: KernelContext, x: np.ndarray) -> np.ndarray:
    return np.tanh(x)


def _div(ctx: KernelContext, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if np.issubdtype(a.dtype, np.integer):
        return np.trunc(np.true_divide(a, b)).astype(a.dtype)  # ONNX: truncate toward zero
    return np.divide(a, b)


KERNELS = {
    "Identity": _identity,
    "Relu": _relu,
    "LeakyRelu": _leaky_relu,
    "Sigmoid": _sigmoid,
    "Tanh": _tanh,
    "Add": lambda ctx, a, b: np.add(a, b),
    "Sub": lambda ctx, a, b: np.subtract(a, b),
    "Mul": lambda ctx, a, b: np.multiply(a, b),
    "Div": _div,
    "Equal": lambda ctx, a, b: np.equal(a, b),
}
