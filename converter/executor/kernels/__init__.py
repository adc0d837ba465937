"""Executor kernels keyed by IR op name, gathered from explicit per-family tables."""

from __future__ import annotations

from converter.executor.kernels import (
    contrib,
    control,
    elementwise,
    fused,
    nn,
    quant,
    reduce,
    tensor,
)
from converter.executor.registry import Kernel

__all__ = ["KERNELS"]

_MODULES = (elementwise, tensor, reduce, nn, control, quant, contrib, fused)


def _build() -> dict[str, Kernel]:
    table: dict[str, Kernel] = {}
    for module in _MODULES:
        for name, fn in module.KERNELS.items():
            if name in table:
                raise RuntimeError(f"kernel {name} defined twice ({module.__name__})")
            table[name] = fn
    return table


KERNELS = _build()
