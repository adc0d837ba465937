"""Runs an IR graph with NumPy kernels.

The graph is planned once. Every value gets a slot in a flat list; each step
holds its kernel, a prepared context, the slots it reads and writes and the
slots that die after it (the step after which nothing reads a value any
more; reads from inside control-flow bodies count as reads by the
control-flow node), so buffers are dropped as early as possible.

Buffer donation: when a step is the last reader of a value that some kernel
of the same graph produced (not a graph input, output or constant, not an
outer value seen from a body) and no other live object refers to that array
or to the memory it views (checked with reference counts at run time), the
runtime hands the array to the kernel as donated: ``ctx.donated`` lists
those input positions for this one call and the kernel may overwrite them
(e.g. compute an activation in place). Kernels that ignore ``ctx.donated``
behave as before.

Profiling: ``Runtime(graph, profile=True)`` accumulates the seconds spent in
each op's kernels (``runtime.profile``, op -> [seconds, calls]);
``runtime.profile_table()`` formats them.

Observation: ``Runtime(graph, observe=fn)`` calls ``fn(value, array)`` for each
graph input and each output a node of the main graph (not of a body) computes,
right after it is computed and before any later kernel runs. ``fn`` must
neither modify the array nor keep a reference to it (later kernels may be
donated its buffer); calibration uses it to stream statistics.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from operator import itemgetter
from typing import Any

import numpy as np

from converter.executor.kernels import KERNELS
from converter.executor.registry import KernelContext, ScratchPool, UnsupportedKernel
from ir import DataType, Graph, Node, Value

__all__ = ["ExecutionError", "Observer", "Runtime"]

logger = logging.getLogger(__name__)

_refcount = sys.getrefcount

Observer = Callable[[Value, np.ndarray], None]
"""``fn(value, array)``: sees every main-graph input and node output once per run."""


class ExecutionError(Exception):
    """A node failed while running; the message names the node and op."""


class _Step:
    __slots__ = ("ctx", "donate", "free", "get", "has_body", "kernel", "node", "op", "outs")

    def __init__(self, node: Node, kernel: Any, ctx: KernelContext, slot: dict[int, int]) -> None:
        self.node = node
        self.op = node.op
        self.kernel = kernel
        self.ctx = ctx
        ins = tuple(0 if v is None else slot[id(v)] for v in node.inputs)
        self.get = _getter(ins)
        self.outs = tuple(slot[id(v)] for v in node.outputs)
        self.free: tuple[int, ...] = ()
        self.donate: tuple[tuple[int, int], ...] = ()  # (input position, slot)
        self.has_body = bool(node.subgraphs())


def _getter(ins: tuple[int, ...]) -> Any:
    """A callable env -> tuple of the input arrays (slot 0 always holds None)."""
    if len(ins) == 1:
        i = ins[0]
        return lambda env: (env[i],)
    if not ins:
        return lambda env: ()
    return itemgetter(*ins)


class _Plan:
    """Slots, steps, constants and the values a body reads from enclosing graphs."""

    def __init__(self, graph: Graph, runtime: Runtime) -> None:
        self.graph = graph
        missing = sorted({n.op for n in graph.nodes if n.op not in KERNELS})
        if missing:
            raise UnsupportedKernel(f"no executor kernel for op(s): {', '.join(missing)}")
        slot: dict[int, int] = {}
        self.consts: list[tuple[int, np.ndarray]] = []
        produced: set[int] = set()

        def add(v: Value) -> int:
            if id(v) not in slot:
                slot[id(v)] = len(slot) + 1  # slot 0 is the omitted-input None
                if v.is_const:
                    self.consts.append((slot[id(v)], v.const))  # type: ignore[arg-type]
            return slot[id(v)]

        for v in graph.inputs:
            add(v)
        for node in graph.nodes:
            for v in _reads(node):
                add(v)
            for v in node.outputs:
                add(v)
                produced.add(id(v))
        for v in graph.outputs:
            add(v)
        self.size = len(slot) + 1
        self.slot = slot
        self.inputs = [slot[id(v)] for v in graph.inputs]
        self.outputs = [slot[id(v)] for v in graph.outputs]
        local = {id(v) for v in graph.inputs} | produced
        inner = {id(v) for g in graph.all_graphs() for v in _defined(g)}
        const_ids = {id(v) for node in graph.nodes for v in _reads(node) if v.is_const}
        const_ids |= {id(v) for v in graph.outputs if v.is_const}
        # values read here but defined in an enclosing graph: copied in on entry
        self.outer = [(vid, s) for vid, s in slot.items()
                      if vid not in local and vid not in inner and vid not in const_ids]
        self.steps = [
            _Step(node, KERNELS[node.op], KernelContext(node, runtime), slot)
            for node in graph.nodes
        ]
        self._plan_lifetimes(graph, local, produced, slot)

    def _plan_lifetimes(
        self, graph: Graph, local: set[int], produced: set[int], slot: dict[int, int]
    ) -> None:
        last: dict[int, int] = {}
        for i, node in enumerate(graph.nodes):
            for v in _reads(node):
                last[id(v)] = i
        keep = {id(v) for v in graph.outputs}
        free: list[list[int]] = [[] for _ in graph.nodes]
        for vid, i in last.items():
            if vid in local and vid not in keep:
                free[i].append(slot[vid])
        for i, node in enumerate(graph.nodes):  # outputs nobody reads
            for o in node.outputs:
                if id(o) not in last and id(o) not in keep:
                    free[i].append(slot[id(o)])
        for i, (step, node) in enumerate(zip(self.steps, graph.nodes, strict=True)):
            step.free = tuple(dict.fromkeys(free[i]))
            if step.has_body:
                continue  # bodies may read anything; control-flow kernels get no donations
            direct = [v for v in node.inputs if v is not None]
            step.donate = tuple(
                (pos, slot[id(v)])
                for pos, v in enumerate(node.inputs)
                if v is not None
                and id(v) in produced
                and id(v) not in keep
                and last.get(id(v)) == i
                and direct.count(v) == 1
            )


def _defined(graph: Graph) -> list[Value]:
    return [*graph.inputs, *(o for n in graph.nodes for o in n.outputs)]


def _reads(node: Node) -> list[Value]:
    out = [v for v in node.inputs if v is not None]
    for sub in node.subgraphs():
        for inner in sub.all_nodes():
            out.extend(v for v in inner.inputs if v is not None)
        out.extend(sub.outputs)
    return out


class _Scope(Mapping):
    """Value id -> array for a running graph (and, behind it, its enclosing graphs)."""

    __slots__ = ("env", "parent", "slot")

    def __init__(self, env: list[Any], slot: dict[int, int], parent: Mapping[int, Any]) -> None:
        self.env = env
        self.slot = slot
        self.parent = parent

    def __getitem__(self, vid: int) -> Any:
        s = self.slot.get(vid)
        if s is not None:
            value = self.env[s]
            if value is not None:
                return value
        return self.parent[vid]

    def __iter__(self) -> Iterator[int]:
        seen = {vid for vid, s in self.slot.items() if self.env[s] is not None}
        yield from seen
        yield from (vid for vid in self.parent if vid not in seen)

    def __len__(self) -> int:
        return sum(1 for _ in self)


class Runtime:
    """Executes a graph: ``Runtime(graph).run({"x": array}) -> {"y": array}``.

    With ``profile=True`` the seconds spent in kernels are summed per op in
    ``self.profile`` (op -> [seconds, calls]) across runs. ``observe`` (see the
    module docstring) sees the main graph's inputs and node outputs as they
    are computed.
    """

    def __init__(
        self, graph: Graph, profile: bool = False, observe: Observer | None = None
    ) -> None:
        self.graph = graph
        self.observe = observe
        self._plans: dict[int, _Plan] = {}
        self.current_scope: Mapping[int, Any] = {}
        self.profile: dict[str, list[float]] | None = {} if profile else None
        self.scratch = ScratchPool()  # kernels' work buffers, shared by all nodes
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
        if self.observe is not None:
            for v, a in zip(self.graph.inputs, args, strict=True):
                self.observe(v, a)
        results = self.run_graph(self.graph, args, {})
        return {v.name: r for v, r in zip(self.graph.outputs, results, strict=True)}

    def run_graph(
        self, graph: Graph, inputs: list[np.ndarray | None], scope: Mapping[int, Any]
    ) -> list[np.ndarray]:
        """Run ``graph`` with positional ``inputs``; ``scope`` resolves outer values."""
        plan = self._plan(graph)
        env: list[Any] = [None] * plan.size
        for s, c in plan.consts:
            env[s] = c
        for s, a in zip(plan.inputs, inputs, strict=False):
            env[s] = a
        for vid, s in plan.outer:
            try:
                env[s] = scope[vid]
            except KeyError:
                raise ExecutionError(f"graph {graph.name!r} reads an unknown outer value") from None
        self._execute(plan, env, scope)
        return [env[s] for s in plan.outputs]

    def _execute(self, plan: _Plan, env: list[Any], scope: Mapping[int, Any]) -> None:
        prof = self.profile
        observe = self.observe if plan.graph is self.graph else None
        for step in plan.steps:
            args = step.get(env)
            ctx = step.ctx
            if step.donate:
                ctx.donated = _donations(step.donate, args, env)
            if step.has_body:
                saved, self.current_scope = self.current_scope, _Scope(env, plan.slot, scope)
            t0 = time.perf_counter() if prof is not None else 0.0
            try:
                result = step.kernel(ctx, *args)
            except (UnsupportedKernel, ExecutionError):
                raise
            except Exception as exc:
                node = step.node
                raise ExecutionError(f"node {node.name!r} ({node.op}) failed: {exc}") from exc
            finally:
                if step.has_body:
                    self.current_scope = saved
                if step.donate:
                    ctx.donated = ()
            if prof is not None:
                entry = prof.setdefault(step.op, [0.0, 0])
                entry[0] += time.perf_counter() - t0
                entry[1] += 1
            args = None
            outs = step.outs
            if type(result) is np.ndarray:
                env[outs[0]] = result
            else:
                if not isinstance(result, (tuple, list)):
                    result = (result,)
                for s, r in zip(outs, result, strict=False):
                    env[s] = r if isinstance(r, np.ndarray) else np.asarray(r)
                r = None  # no stray reference may block a later donation
            result = None
            if observe is not None:
                for v, s in zip(step.node.outputs, outs, strict=True):
                    if env[s] is not None:
                        observe(v, env[s])
            for s in step.free:
                env[s] = None

    def profile_table(self) -> str:
        """The per-op profile as text, slowest op first."""
        if self.profile is None:
            return "profiling is off (Runtime(graph, profile=True))"
        total = sum(t for t, _ in self.profile.values()) or 1.0
        rows = sorted(self.profile.items(), key=lambda kv: -kv[1][0])
        lines = [f"{'op':<28}{'seconds':>10}{'calls':>8}{'share':>8}"]
        for op, (t, n) in rows:
            lines.append(f"{op:<28}{t:>10.4f}{int(n):>8}{t / total:>8.1%}")
        return "\n".join(lines)


def _donations(
    donate: tuple[tuple[int, int], ...], args: tuple[Any, ...], env: list[Any]
) -> tuple[int, ...]:
    """Input positions whose arrays nobody else can see once their slot is cleared.

    The slot of a value read for the last time here is cleared early; then the
    only references left are ``args`` and getrefcount's own argument. A view
    qualifies when the array it views is referenced by it alone.
    """
    out = []
    for pos, s in donate:
        env[s] = None
        a = args[pos]
        if type(a) is not np.ndarray or _refcount(a) != 3 or not a.flags.writeable:
            continue  # 3: args, the local name ``a``, getrefcount's argument
        base = a.base
        if base is not None and (type(base) is not np.ndarray or base.base is not None
                                 or _refcount(base) != 3):
            continue  # 3: ``a.base``, the local name ``base``, getrefcount's argument
        out.append(pos)
    return tuple(out)


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
