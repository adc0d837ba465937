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

``ctx.scratch(key, shape, dtype)`` lends a work buffer shared by all nodes of
the runtime on the calling thread (``ScratchPool``): a kernel uses it within
one call and never returns it or a view of it. Reusing buffers spares the
page faults of a fresh multi-megabyte temporary per call, which cost as much
as the arithmetic in conv and attention kernels.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ir import Graph, Node

__all__ = ["Kernel", "KernelContext", "ScratchPool", "UnsupportedKernel"]


class UnsupportedKernel(Exception):
    """A kernel cannot run this case (op, dtype or attribute value)."""


class ScratchPool:
    """Work buffers lent to kernels, per thread, least recently used dropped first.

    A buffer is identified by the caller's ``key`` plus shape, dtype and
    fill; with ``fill`` it is created filled (later borrowers rely on the
    parts nobody writes keeping that value, so a key must stand for one
    write pattern). Each thread keeps at most ``limit`` bytes; the most
    recent buffer is always kept.
    """

    def __init__(self, limit: int = 128 << 20) -> None:
        self.limit = limit
        self._local = threading.local()

    def get(
        self, key: Hashable, shape: tuple[int, ...], dtype: Any, fill: Any = None
    ) -> np.ndarray:
        dt = np.dtype(dtype)
        bufs: OrderedDict | None = getattr(self._local, "bufs", None)
        if bufs is None:
            bufs = self._local.bufs = OrderedDict()
            self._local.size = 0
        full = (key, tuple(shape), dt.str, None if fill is None else repr(fill))
        buf = bufs.get(full)
        if buf is not None:
            bufs.move_to_end(full)
            return buf
        buf = np.empty(shape, dt) if fill is None else np.full(shape, fill, dt)
        bufs[full] = buf
        self._local.size += buf.nbytes
        while self._local.size > self.limit and len(bufs) > 1:
            _, old = bufs.popitem(last=False)
            self._local.size -= old.nbytes
        return buf


class KernelContext:
    __slots__ = ("_own_scratch", "_runtime", "attrs", "cache", "donated", "node",
                 "num_outputs")  # fmt: skip

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
        self._own_scratch: ScratchPool | None = None

    def attr(self, name: str) -> Any:
        return self.attrs[name]

    def scratch(
        self, key: Hashable, shape: tuple[int, ...], dtype: Any, fill: Any = None
    ) -> np.ndarray:
        """A work buffer for this call (see ``ScratchPool``); the runtime's pool if any."""
        pool = getattr(self._runtime, "scratch", None)
        if pool is None:
            pool = self._own_scratch
            if pool is None:
                pool = self._own_scratch = ScratchPool()
        return pool.get(key, shape, dtype, fill)

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
