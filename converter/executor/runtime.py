"""Runs an IR graph with NumPy kernels.

The graph is planned once: for each node its kernel, a prepared context and,
for each value, the step after which nothing reads it any more so that its
buffer is dropped right then (reads from inside control-flow bodies count as
reads by the control-flow node).
"""

from __future__ import annotations

import logging
from collections import ChainMap
from collections.abc import Mapping
from typing import Any

import numpy as np

from converter.executor.kernels import KERNELS
from converter.executor.registry import KernelContext, UnsupportedKernel
from ir import DataType, Graph, Node, Value

__all__ = ["ExecutionError", "Runtime"]

logger = logging.getLogger(__name__)


class ExecutionError(Exception):
    """A node failed while running; the message names the node and op."""


class _Step:
    __slots__ = ("ctx", "free", "inputs", "kernel", "node", "outputs")

    def __init__(self, node: Node, kernel: Any, ctx: KernelContext) -> None:
        self.node = node
        self.kernel = kernel
        self.ctx = ctx
        self.inputs = [None if v is None else id(v) for v in node.inputs]
        self.outputs = [id(v) for v in node.outputs]
        self.free: list[int] = []


class _Plan:
    def __init__(self, graph: Graph, runtime: Runtime) -> None:
        self.graph = graph
        self.steps: list[_Step] = []
        missing = sorted({n.op for n in graph.nodes if n.op not in KERNELS})
        if missing:
            raise UnsupportedKernel(f"no executor kernel for op(s): {', '.join(missing)}")
        for node in graph.nodes:
            self.steps.append(_Step(node, KERNELS[node.op], KernelContext(node, runtime)))
        self.consts: dict[int, np.ndarray] = {}
        last: dict[int, int] = {}
        for i, node in enumerate(graph.nodes):
            for v in _reads(node):
                last[id(v)] = i
                if v.is_const:
                    self.consts[id(v)] = v.const  # type: ignore[assignment]
        keep = {id(v) for v in graph.outputs}
        local = {id(v) for v in graph.inputs} | {id(o) for n in graph.nodes for o in n.outputs}
        for vid, step in last.items():
            if vid in local and vid not in keep:
                self.steps[step].free.append(vid)
        for i, node in enumerate(graph.nodes):  # outputs nobody reads
            for o in node.outputs:
                if id(o) not in last and id(o) not in keep:
                    self.steps[i].free.append(id(o))
        self.output_consts = {id(v): v.const for v in graph.outputs if v.is_const}


def _reads(node: Node) -> list[Value]:
    out = [v for v in node.inputs if v is not None]
    for sub in node.subgraphs():
        for inner in sub.all_nodes():
            out.extend(v for v in inner.inputs if v is not None)
        out.extend(sub.outputs)
    return out


class Runtime:
    """Executes a graph: ``Runtime(graph).run({"x": array}) -> {"y": array}``."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self._plans: dict[int, _Plan] = {}
        self.current_scope: Mapping[int, Any] = {}
        self._plan(graph)  # fail early on missing kernels, including in bodies
        for sub in list(graph.all_graphs())[1:]:
            self._plan(sub)

    def _plan(self, graph: Graph) -> _Plan:
        plan = self._plans.get(id(graph))
        if plan is None:
            plan = self._plans[id(graph)] = _Plan(graph, self)
        return plan

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the main graph; feeds and results are keyed by value name."""
        args = []
        for v in self.graph.inputs:
            if v.name not in feeds:
                raise ExecutionError(f"missing input {v.name!r}")
            args.append(_coerce_input(v, feeds[v.name]))
        unknown = set(feeds) - {v.name for v in self.graph.inputs}
        if unknown:
            raise ExecutionError(f"unknown input(s): {', '.join(sorted(unknown))}")
        results = self.run_graph(self.graph, args, {})
        return {v.name: r for v, r in zip(self.graph.outputs, results, strict=True)}

    def run_graph(
        self, graph: Graph, inputs: list[np.ndarray | None], scope: Mapping[int, Any]
    ) -> list[np.ndarray]:
        plan = self._plan(graph)
        local: dict[int, Any] = dict(plan.consts)
        for v, a in zip(graph.inputs, inputs, strict=False):
            local[id(v)] = a
        env: Mapping[int, Any] = ChainMap(local, scope) if scope else local  # type: ignore[arg-type]
        for step in plan.steps:
            args = [None if i is None else env[i] for i in step.inputs]
            saved, self.current_scope = self.current_scope, env
            try:
                result = step.kernel(step.ctx, *args)
            except UnsupportedKernel:
                raise
            except ExecutionError:
                raise
            except Exception as exc:
                node = step.node
                raise ExecutionError(f"node {node.name!r} ({node.op}) failed: {exc}") from exc
            finally:
                self.current_scope = saved
            if not isinstance(result, (tuple, list)):
                result = (result,)
            for vid, r in zip(step.outputs, result, strict=False):
                local[vid] = r if isinstance(r, np.ndarray) else np.asarray(r)
            for vid in step.free:
                local.pop(vid, None)
        out = []
        for v in graph.outputs:
            if id(v) in plan.output_consts:
                out.append(plan.output_consts[id(v)])
            else:
                out.append(env[id(v)])
        return out


def _coerce_input(value: Value, array: Any) -> np.ndarray:
    arr = np.asarray(array)
    if value.dtype not in (DataType.UNDEFINED, DataType.STRING):
        want = value.dtype.numpy
        if arr.dtype != want:
            raise ExecutionError(
                f"input {value.name!r} expects {value.dtype.name.lower()}, got {arr.dtype}"
            )
    if value.shape is not None:
        if arr.ndim != len(value.shape) or any(
            isinstance(d, int) and d != s for d, s in zip(value.shape, arr.shape, strict=True)
        ):
            raise ExecutionError(
                f"input {value.name!r} expects shape {_fmt(value.shape)}, got {list(arr.shape)}"
            )
    return arr


def _fmt(shape: tuple) -> str:
    return "[" + ",".join("?" if d is None else str(d) for d in shape) + "]"
