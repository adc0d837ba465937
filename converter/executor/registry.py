"""The kernel contract.

A kernel is ``fn(ctx, *inputs) -> array | tuple[array, ...]`` registered under
an IR op name. ``inputs`` are NumPy arrays (None for omitted optional
inputs); ``ctx`` gives attributes with their declared defaults
(``ctx.attr("axis")``), the node, the number of outputs, and ``ctx.run_graph``
for control-flow bodies. Kernels never mutate their inputs, except those the
runtime donated for this call: ``ctx.donated`` lists input positions whose
arrays nothing else will read (see ``converter/executor/runtime.py``), so a
kernel may overwrite them or return them as its result (``ctx.reusable(i)``).
A kernel that forwards its ``ctx`` to another kernel with different inputs
must not let that kernel rely on ``ctx.donated``.

``ctx.cache`` is a per-node dict a kernel may use to keep work that depends
only on attributes or constant inputs (a reshaped weight, say) across runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ir import Graph, Node

__all__ = ["Kernel", "KernelContext", "UnsupportedKernel"]


class UnsupportedKernel(Exception):
    """A kernel cannot run this case (op, dtype or attribute value)."""


class KernelContext:
    __slots__ = ("_runtime", "attrs", "cache", "donated", "node", "num_outputs")

    def __init__(self, node: Node, runtime: Any) -> None:
        self.node = node
        self.num_outputs = len(node.outputs)
        self.cache: dict[str, Any] = {}
        self._runtime = runtime
        from ir import get_op

        opdef = get_op(node.op)
        attrs = {k: a.default for k, a in opdef.attrs.items() if not a.required}
        attrs.update(node.attrs)
        self.attrs: Mapping[str, Any] = attrs
        self.donated: tuple[int, ...] = ()

    def attr(self, name: str) -> Any:
        return self.attrs[name]

    def reusable(self, i: int) -> bool:
        """Whether input ``i`` was donated: the kernel may overwrite it in this call."""
        return i in self.donated

    def run_graph(
        self, graph: Graph, inputs: list[np.ndarray | None], scope: Mapping[int, Any]
    ) -> list[np.ndarray]:
        """Run a body graph with positional inputs; ``scope`` resolves outer values."""
        return self._runtime.run_graph(graph, inputs, scope)

    @property
    def scope(self) -> Mapping[int, Any]:
        """The environment of the graph running this node (for bodies' outer reads)."""
        return self._runtime.current_scope


Kernel = Callable[..., "np.ndarray | tuple[np.ndarray, ...] | list[np.ndarray]"]
