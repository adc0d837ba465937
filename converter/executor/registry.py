"""The kernel contract.

A kernel is ``fn(ctx, *inputs) -> array | tuple[array, ...]`` registered under
an IR op name. ``inputs`` are NumPy arrays (None for omitted optional
inputs); ``ctx`` gives attributes with their declared defaults
(``ctx.attr("axis")``), the node, the number of outputs, and ``ctx.run_graph``
for control-flow bodies. Kernels never mutate their inputs.

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
    __slots__ = ("_runtime", "attrs", "cache", "node", "num_outputs")

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

    def attr(self, name: str) -> Any:
        return self.attrs[name]

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
