"""Int8 sensitivity per op (``liteconv sensitivity``) and qtables (``convert --qtable``).

What is measured (TPU-MLIR's ``run_sensitive_layer``, made fast):

1. The float graph gets the activations :func:`passes.quant.full.quantize_full` would
   split off (``unfuse_activations``) and its plan; the *candidates* are the planned
   nodes that compute new int8 values (conv, gemm, matmul, binary, gap, concat, lut).
   Data movement and Relu / Clip on int8 data add no error of their own and follow
   their producers.
2. Calibration runs once, with histograms, over the ``[data_preprocess_param]``
   samples; every method's range (MAX_MIN, KL, PERCENTILE, MSE) comes from those same
   statistics (:func:`passes.quant.ranges.choose_range`).
3. The float graph runs once per inference sample and keeps every intermediate
   (memory: inference samples x the float activations of one sample; MobileNetV2 at
   224x224 is 28 MB per sample, 0.85 GB for 30).
4. For candidate X and method m, X *alone* is quantized (everything else float), as
   TPU-MLIR does and as the rewriter would write X with every other op skipped, but by
   fake quantization in float: X's constant operands become their int8 values
   (per-channel symmetric weights, per-tensor affine for other constants, as the
   rewriter stores them); the activations X reads and X's int8 output are rounded to
   their int8 grid, ``(clip(rint(x / s) + z, -128, 127) - z) * s``. m sets the range of
   X's output (that of a lone Relu / Clip reader when the rewriter folds it) and of a
   graph input X reads; other inputs use the config's method (their producer's range).
   Gemm / matmul outputs that no integer op reads stay float, as in the rewriter; int32
   bias rounding is left out. Then only the nodes downstream of X run again, from the
   cached float values:
   ``loss = mean over samples and outputs of (1 - cosine(float, X-quantized))``.
   Inputs count because keeping X in float only removes a tensor's quantization when
   its producer and its readers are all float: every op touching a bad tensor ranks
   high. Methods giving identical int8 parameters run once. Screening (``screen``
   samples, default 8): every method runs on the first ``screen`` inference samples,
   only the best one on the rest (``screen=0``: every method on every sample).
   :meth:`Analysis.int8_alone_loss` measures the same loss with the real int8 graph.
5. Ops are ranked by their best method's loss. The whole network is then quantized
   for real (the rewriter, int8 kernels) with each op's best method, and with the
   candidates of the float list left out (``skip_quant_node``):

   * ``full``: ops join the float list one at a time in rank order (cosine after each)
     until ``target_cos`` holds or ``max_float_layers`` ops are float;
   * ``greedy``: bisection over the length k of the rank-ordered float list (assumes
     the cosine grows with k): about log2(candidates) evaluations.

Candidates are evaluated in parallel by forked worker processes (``jobs``), each with
one BLAS thread; workers share the cached activations copy-on-write.

The qtable (text, TPU-MLIR's ``op_name quantize_mode`` with a third column)::

    # liteconv qtable
    conv_12 F32          # keep in float32 (added to skip_quant_node)
    conv_3 INT8 KL       # quantize; its output range uses activation_quant_method=KL

Blank lines and ``#`` comments are ignored; mode ``FLOAT`` is read as ``F32``; a name
must be a node of the graph after optimization (run ``sensitivity`` with the same
``--optimize`` / ``--outputFormat`` options as ``convert``). The calibration table is
TPU-MLIR's layout plus the method: ``tensor_name threshold min max method``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import time
from collections import ChainMap
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from converter.errors import UsageError
from ir import Graph, Node, Value
from passes.quant import full as F
from passes.quant.calibrate import CalibrationData, Statistics, collect_statistics
from passes.quant.ranges import affine_params, choose_range

__all__ = [
    "METHODS",
    "Analysis",
    "analyze",
    "read_qtable",
    "run_sensitivity",
    "search",
    "write_calibration_table",
    "write_qtable",
]

METHODS = ("MAX_MIN", "KL", "PERCENTILE", "MSE")
MODES = ("full", "greedy")
_NEW_VALUES = frozenset({"conv", "gemm", "matmul", "binary", "gap", "concat", "lut"})
_QTABLE_MODES = {"F32": "F32", "FLOAT": "F32", "FP32": "F32", "INT8": "INT8"}

Feeds = dict[str, np.ndarray]
Params = tuple[float, int]  # (scale, zero point)


# --------------------------------------------------------------------------- qtable files


def write_qtable(path: Path, floats: Sequence[str], methods: Mapping[str, str],
                 header: Sequence[str] = ()) -> None:
    """The float list (``F32``) then every other op with its method (``INT8 METHOD``)."""
    lines = ["# liteconv qtable: op_name quantize_mode [activation_quant_method]",
             *(f"# {h}" for h in header)]
    lines += [f"{name} F32" for name in floats]
    lines += [f"{name} INT8 {m}" for name, m in methods.items() if name not in set(floats)]
    _write(path, "\n".join(lines) + "\n")


def read_qtable(path: str | os.PathLike) -> dict[str, str]:
    """Node name -> ``"F32"`` or an activation_quant_method; UsageError on a bad line."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"qtable not found: {p}")
    out: dict[str, str] = {}
    for no, raw in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        mode = _QTABLE_MODES.get(parts[1].upper()) if len(parts) in (2, 3) else None
        if mode is None or (mode == "F32" and len(parts) == 3):
            raise UsageError(
                f"{p}:{no}: expected 'op_name F32' or 'op_name INT8 [METHOD]', got {raw.strip()!r}"
            )
        if mode == "F32":
            out[parts[0]] = "F32"
            continue
        method = parts[2].upper() if len(parts) == 3 else ""
        if method and method not in F.METHODS:
            raise UsageError(f"{p}:{no}: method {parts[2]!r}: use one of {', '.join(F.METHODS)}")
        if method:
            out[parts[0]] = method
    return out


def write_calibration_table(path: Path, rows: Iterable[tuple[str, float, float, str]],
                            samples: int) -> None:
    """TPU-MLIR's calibration table layout, plus the method of each range."""
    lines = ["# liteconv calibration table", f"# sample number: {samples}",
             "# op_name threshold min max method"]
    for name, lo, hi, method in rows:
        lines.append(f"{name} {max(abs(lo), abs(hi)):.7g} {lo:.7g} {hi:.7g} {method}")
    _write(path, "\n".join(lines) + "\n")


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# --------------------------------------------------------------------------- execution


def _reads(node: Node) -> list[Value]:
    """Values a node reads, its bodies' reads of enclosing values included."""
    out = [v for v in node.inputs if v is not None]
    for sub in node.subgraphs():
        for inner in sub.all_nodes():
            out.extend(v for v in inner.inputs if v is not None)
        out.extend(sub.outputs)
    return out


class _Executor:
    """Runs single nodes of a graph with the executor's kernels (no buffer donation)."""

    def __init__(self, graph: Graph) -> None:
        from converter.executor.kernels import KERNELS
        from converter.executor.registry import KernelContext
        from converter.executor.runtime import Runtime

        self.runtime = Runtime(graph)  # fails early on a missing kernel
        self.graph = graph
        self.nodes = graph.nodes
        self.kernels = [KERNELS[n.op] for n in self.nodes]
        self.ctxs = [KernelContext(n, self.runtime) for n in self.nodes]
        self.context = KernelContext

    def call(self, i: int, env: Mapping[int, np.ndarray], ctx: Any = None,
             replace: Mapping[int, np.ndarray] | None = None) -> list[np.ndarray]:
        """Outputs of node ``i`` reading ``env`` (``replace``: input position -> array)."""
        node = self.nodes[i]
        args = [None if v is None else (v.const if v.is_const else env[id(v)])
                for v in node.inputs]
        for pos, arr in (replace or {}).items():
            args[pos] = arr
        if node.subgraphs():
            self.runtime.current_scope = env
        result = self.kernels[i](ctx or self.ctxs[i], *args)
        if isinstance(result, np.ndarray):
            return [result]
        return [r if isinstance(r, np.ndarray) else np.asarray(r) for r in result]

    def forward(self, feeds: Feeds) -> dict[int, np.ndarray]:
        """Every main-graph value of one run (graph inputs included), by id."""
        env: dict[int, np.ndarray] = {}
        for v in self.graph.inputs:
            env[id(v)] = np.asarray(feeds[v.name])
        for i, node in enumerate(self.nodes):
            for v, r in zip(node.outputs, self.call(i, env), strict=False):
                env[id(v)] = r
        return env


def clone_graph(graph: Graph, values: dict[int, Value] | None = None) -> Graph:
    """A copy of ``graph`` (new nodes and values, same names; constants shared, read-only).

    Bodies are cloned too, reading the copies of the enclosing values (``values``:
    id of an original value -> its copy). Iterative over nodes, unlike deepcopy.
    """
    vmap = {} if values is None else values

    def val(v: Value | None) -> Value | None:
        if v is None:
            return None
        new = vmap.get(id(v))
        if new is None:
            new = vmap[id(v)] = Value(v.name, v.dtype, v.shape, const=v.const)
            new.quant, new.meta = v.quant, dict(v.meta)
        return new

    g = Graph(name=graph.name, meta=dict(graph.meta), opset=dict(graph.opset))
    g.inputs = [val(v) for v in graph.inputs]  # type: ignore[misc]
    for node in graph.nodes:
        attrs = {k: clone_graph(a, vmap) if isinstance(a, Graph) else a
                 for k, a in node.attrs.items()}
        new = Node(node.op, [val(v) for v in node.inputs],
                   [val(o) for o in node.outputs], attrs, name=node.name)  # type: ignore[misc]
        new.meta = dict(node.meta)
        g.append(new)
    g.outputs = [val(v) for v in graph.outputs]  # type: ignore[misc]
    return g


def _fake_quant(x: np.ndarray, p: Params) -> np.ndarray:
    scale, zp = np.float32(p[0]), np.float32(p[1])
    q = np.clip(np.rint(x / scale) + zp, -128, 127)
    return ((q - zp) * scale).astype(x.dtype, copy=False)


def _weights_fq(w: np.ndarray, axis: int, per_channel: bool) -> np.ndarray:
    """Symmetric int8 weights dequantized (as ``full.Rewriter._weights`` stores them)."""
    w = w.astype(np.float32)
    if per_channel:
        top = np.abs(w).max(axis=tuple(i for i in range(w.ndim) if i != axis))
    else:
        top = np.full(w.shape[axis], np.abs(w).max())
    scale = np.where(top > 0, top / 127.0, 1.0).astype(np.float32)
    shape = [1] * w.ndim
    shape[axis] = -1
    scale = scale.reshape(shape)
    return np.clip(np.rint(w / scale), -127, 127).astype(np.float32) * scale


def _const_fq(c: np.ndarray, symmetric: bool) -> np.ndarray:
    """A constant operand of Add / Mul as its per-tensor affine int8 value."""
    c = c.astype(np.float32)
    s, z = affine_params(float(c.min(initial=0.0)), float(c.max(initial=0.0)), symmetric)
    return _fake_quant(c, (float(s), int(z)))


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return 1.0 if na == nb else 0.0
    return float(np.clip(a @ b / (na * nb), -1.0, 1.0))


def _limit_blas() -> Any:
    """One BLAS thread (batch-1 kernels; the cores go to the worker processes).

    Returns the limiter (``restore_original_limits()`` undoes it), None without
    threadpoolctl.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - optional
        return None
    return threadpool_limits(1)


@contextlib.contextmanager
def _one_blas_thread() -> Iterator[None]:
    limiter = _limit_blas()
    try:
        yield
    finally:
        if limiter is not None:
            limiter.restore_original_limits()


# --------------------------------------------------------------------------- analysis


@dataclass
class Candidate:
    """A node whose int8 version computes new values (what one loss measures)."""

    position: int  # index in graph.nodes
    node: Node
    kind: str
    range_name: str | None  # the tensor whose range quantizes the output; None: stays float
    consts: dict[int, np.ndarray]  # input position -> its int8 value, dequantized
    graph_inputs: dict[int, str]  # input position -> graph input name (method-dependent)
    act_inputs: dict[int, str]  # input position -> activation it reads (config method)
    suffix: tuple[int, ...]  # node positions that depend on the output
    cost: int = 0  # elements the suffix computes (scheduling)


@dataclass
class OpResult:
    name: str
    op: str
    kind: str
    losses: dict[str, float]
    best: str

    @property
    def loss(self) -> float:
        return self.losses[self.best]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "op": self.op, "kind": self.kind, "best_method": self.best,
                "loss": self.loss, "losses": self.losses}


@dataclass
class Analysis:
    """The float graph with its statistics, cached activations and per-op losses."""

    graph: Graph  # float, activations unfused as quantize_full does
    opts: F.Options
    kinds: dict[int, str]
    stats: Statistics
    samples: list[Feeds]  # inference samples
    cache: list[dict[int, np.ndarray]]
    refs: list[list[np.ndarray]]  # float outputs per sample
    candidates: list[Candidate]
    params: dict[str, dict[str, Params]]  # tensor -> method -> int8 parameters
    ranges: dict[str, dict[str, tuple[float, float]]]
    methods: tuple[str, ...] = METHODS
    jobs: int = 1
    screen: int = 0  # samples every method runs on (0: all; see op_losses)
    results: list[OpResult] = field(default_factory=list)  # ranked, worst first
    seconds: dict[str, float] = field(default_factory=dict)
    executor: _Executor | None = None

    # -- per-op losses --------------------------------------------------------------
    def op_losses(self, index: int) -> tuple[dict[str, float], str]:
        """Loss of each method with candidate ``index`` alone quantized (module doc, 4),
        and the best method. With screening, every method runs on the first ``screen``
        samples and only the best one on the rest; the other methods' losses are then
        those of the screening samples."""
        cand = self.candidates[index]
        groups: dict[tuple, list[str]] = {}
        for m in self.methods:
            key = (None if cand.range_name is None else self.params[cand.range_name][m],
                   tuple(self.params[n][m] for n in cand.graph_inputs.values()))
            groups.setdefault(key, []).append(m)
        n = len(self.cache)
        cut = self.screen if 0 < self.screen < n and len(groups) > 1 else n
        sums = {key: self._loss_sum(cand, *key, range(cut)) for key in groups}
        best = min(sums, key=lambda k: (sums[k], self.methods.index(groups[k][0])))
        out: dict[str, float] = {}
        for key, methods in groups.items():
            out.update(dict.fromkeys(methods, sums[key] / max(cut, 1)))
        if cut < n:
            total = sums[best] + self._loss_sum(cand, *best, range(cut, n))
            out.update(dict.fromkeys(groups[best], total / n))
        return out, groups[best][0]

    def _loss_sum(self, cand: Candidate, out_p: Params | None, in_p: tuple[Params, ...],
                  which: range) -> float:
        """Sum over samples ``which`` of the loss with ``cand`` quantized."""
        ex = self.executor
        assert ex is not None
        ctx = ex.context(cand.node, ex.runtime)  # its own cache: the weights differ
        outputs = self.graph.outputs
        total = 0.0
        for k in which:
            env, ref = self.cache[k], self.refs[k]
            replace = dict(cand.consts)
            for (pos, _), p in zip(cand.graph_inputs.items(), in_p, strict=True):
                replace[pos] = _fake_quant(env[id(cand.node.inputs[pos])], p)
            for pos, name in cand.act_inputs.items():
                p = self.params[name][self.opts.method]
                replace[pos] = _fake_quant(env[id(cand.node.inputs[pos])], p)
            ys = ex.call(cand.position, env, ctx, replace)
            if out_p is not None:
                ys[0] = _fake_quant(ys[0], out_p)
            overlay: dict[int, np.ndarray] = {}
            for v, y in zip(cand.node.outputs, ys, strict=False):
                overlay[id(v)] = y
            view = ChainMap(overlay, env)
            for j in cand.suffix:
                for v, r in zip(ex.nodes[j].outputs, ex.call(j, view), strict=False):
                    overlay[id(v)] = r
            got = [view[id(v)] if not v.is_const else v.const for v in outputs]
            total += float(np.mean([1.0 - _cosine(r, g) for r, g in zip(ref, got, strict=True)]))
        return total

    # -- whole network ----------------------------------------------------------------
    def best_methods(self) -> dict[str, str]:
        return {r.name: r.best for r in self.results}

    def int8_cosine(self, floats: Iterable[str], methods: Mapping[str, str] | None) -> float:
        """Mean output cosine of the real int8 network (rewriter + int8 kernels)."""
        from converter.executor.runtime import Runtime

        g = clone_graph(self.graph)
        opts = dataclasses.replace(self.opts, skip=self.opts.skip | frozenset(floats),
                                   methods=dict(methods or {}))
        kinds = F.plan(g, opts.skip)
        rw = F.Rewriter(g, kinds, self.stats, opts)
        rw.run()
        if opts.bias_correction:
            F.correct_biases(g, rw.layers, self.stats)
        runtime = Runtime(g)

        def one(k: int) -> float:
            res = runtime.run(self.samples[k])
            return float(np.mean([_cosine(r, res[v.name]) for r, v in
                                  zip(self.refs[k], self.graph.outputs, strict=True)]))

        cos = _parallel_map(one, range(len(self.samples)), self.jobs)
        return float(np.mean(cos)) if cos else 1.0

    def int8_alone_loss(self, index: int, method: str | None = None) -> float | None:
        """The loss with candidate ``index`` alone quantized for real: the rewriter and the
        int8 kernels, every other candidate skipped (checks the fake quantization). None
        for ops the rewriter quantizes only behind int8 producers (binary, gap, ...)."""
        cand = self.candidates[index]
        if cand.kind not in ("conv", "gemm", "matmul"):
            return None
        others = [c.node.name for c in self.candidates if c is not cand]
        return 1.0 - self.int8_cosine(others, {cand.node.name: method or self.opts.method})

    def calibration_rows(self, methods: Mapping[str, str]) -> list[tuple[str, float, float, str]]:
        """(tensor, lo, hi, method) for every tensor a candidate quantizes."""
        rows: dict[str, tuple[str, float, float, str]] = {}
        for cand in self.candidates:
            m = methods.get(cand.node.name, self.opts.method)
            names = [*cand.graph_inputs.values(),
                     *([cand.range_name] if cand.range_name else [])]
            for n in names:
                if n not in rows:
                    lo, hi = self.ranges[n][m]
                    rows[n] = (n, lo, hi, m)
        return list(rows.values())


_TASK: Callable[[Any], Any] | None = None  # what forked workers run (set before forking)


def _run_task(pair: tuple[int, Any]) -> tuple[int, Any]:
    assert _TASK is not None
    k, item = pair
    return k, _TASK(item)


def _parallel_map(fn: Callable[[Any], Any], items: Iterable[Any], jobs: int,
                  progress: str | None = None, total: int | None = None) -> list[Any]:
    """``[fn(item) ...]`` in item order, over ``jobs`` forked processes when possible."""
    global _TASK
    items = list(items)
    bar = tqdm(total=total or len(items), desc=progress, unit="op", disable=None,
               leave=False) if progress else None
    results: dict[int, Any] = {}
    forkable = "fork" in multiprocessing.get_all_start_methods()
    try:
        if jobs > 1 and forkable and len(items) > 1:
            _TASK = fn
            ctx = multiprocessing.get_context("fork")
            with ctx.Pool(min(jobs, len(items)), initializer=_limit_blas) as pool:
                for k, value in pool.imap_unordered(_run_task, enumerate(items)):
                    results[k] = value
                    if bar is not None:
                        bar.update(1)
        else:
            for k, item in enumerate(items):
                results[k] = fn(item)
                if bar is not None:
                    bar.update(1)
    finally:
        _TASK = None
        if bar is not None:
            bar.close()
    return [results[k] for k in range(len(items))]


def _candidates(graph: Graph, kinds: Mapping[int, str]) -> list[Candidate]:
    pos = {id(n): i for i, n in enumerate(graph.nodes)}
    inputs = {id(v): v.name for v in graph.inputs}
    outputs = {id(v) for v in graph.outputs}
    out: list[Candidate] = []
    for node in graph.nodes:
        kind = kinds.get(id(node))
        if kind not in _NEW_VALUES:
            continue
        y = node.outputs[0]
        readers = y.consumers()
        range_name: str | None = y.name
        if (len(readers) == 1 and len(y.uses) == 1 and id(y) not in outputs
                and kinds.get(id(readers[0])) == "act"):
            range_name = readers[0].outputs[0].name
        if kind in ("gemm", "matmul") and not any(id(r) in kinds for r in readers):
            range_name = None  # QGemm / MatMulIntegerToFloat write float
        out.append(Candidate(
            position=pos[id(node)], node=node, kind=kind, range_name=range_name, consts={},
            graph_inputs={i: inputs[id(v)] for i, v in enumerate(node.inputs)
                          if v is not None and id(v) in inputs},
            act_inputs={i: v.name for i, v in enumerate(node.inputs)
                        if v is not None and not v.is_const and id(v) not in inputs},
            suffix=_suffix(graph, pos[id(node)])))
    return out


def _suffix(graph: Graph, start: int) -> tuple[int, ...]:
    nodes = graph.nodes
    dirty = {id(v) for v in nodes[start].outputs}
    out = []
    for j in range(start + 1, len(nodes)):
        if any(id(v) in dirty for v in _reads(nodes[j])):
            out.append(j)
            dirty.update(id(v) for v in nodes[j].outputs)
    return tuple(out)


def _quantized_consts(cand: Candidate, opts: F.Options) -> dict[int, np.ndarray]:
    node = cand.node
    w = node.input(1)
    if cand.kind == "conv" and w is not None and w.const is not None:
        return {1: _weights_fq(w.const, 0, opts.per_channel)}
    if cand.kind == "gemm" and w is not None and w.const is not None:
        axis = 0 if node.op == "Gemm" and node.attr("transB") else 1
        return {1: _weights_fq(w.const, axis, opts.per_channel)}
    if cand.kind == "binary":
        return {i: _const_fq(v.const, opts.symmetric) for i, v in enumerate(node.inputs)
                if v is not None and v.const is not None}
    return {}


def _method_params(stats: Statistics, names: Iterable[str], methods: Sequence[str],
                   symmetric: bool) -> tuple[dict, dict]:
    params: dict[str, dict[str, Params]] = {}
    ranges: dict[str, dict[str, tuple[float, float]]] = {}
    for name in names:
        if name in params:
            continue
        st = stats.tensors.get(name)
        params[name], ranges[name] = {}, {}
        for m in methods:
            lo, hi = (0.0, 0.0) if st is None else choose_range(st, m, symmetric)
            s, z = affine_params(lo, hi, symmetric)
            params[name][m] = (float(s), int(z))
            ranges[name][m] = (float(min(lo, 0.0)), float(max(hi, 0.0)))
    return params, ranges


def analyze(
    graph: Graph,
    calibration: CalibrationData | list[Feeds],
    inference: list[Feeds],
    common: Mapping[str, Any],
    full: Mapping[str, Any],
    say: Callable[[str], None] = lambda _m: None,
    jobs: int = 0,
    methods: Sequence[str] = METHODS,
    screen: int = 8,
) -> Analysis:
    """Per-op, per-method losses of ``graph`` (float; changed in place by unfusing)."""
    with _one_blas_thread():
        return _analyze(graph, calibration, inference, common, full, say, jobs, methods,
                        screen)


def _analyze(
    graph: Graph,
    calibration: CalibrationData | list[Feeds],
    inference: list[Feeds],
    common: Mapping[str, Any],
    full: Mapping[str, Any],
    say: Callable[[str], None],
    jobs: int,
    methods: Sequence[str],
    screen: int,
) -> Analysis:
    seconds: dict[str, float] = {}
    opts = F.Options.from_config(common, full)
    jobs = jobs or os.cpu_count() or 1
    F.unfuse_activations(graph, opts.skip)
    kinds = F.plan(graph, opts.skip)
    cands = _candidates(graph, kinds)
    if not cands:
        raise UsageError("nothing to quantize: the graph has no op FULL_QUANT would quantize")
    t0 = time.perf_counter()
    axes = F.channel_axes(graph, kinds) if opts.bias_correction else {}
    stats = collect_statistics(graph, calibration, True, axes, say)
    seconds["calibrate"] = time.perf_counter() - t0
    names = [n for c in cands for n in
             [*c.graph_inputs.values(), *([c.range_name] if c.range_name else [])]]
    params, ranges = _method_params(stats, names, methods, opts.symmetric)
    inner = [n for c in cands for n in c.act_inputs.values() if n not in params]
    more, _ = _method_params(stats, inner, [opts.method], opts.symmetric)
    for n, p in more.items():
        params.setdefault(n, {}).update(p)
    for c in cands:
        c.consts = _quantized_consts(c, opts)
    t0 = time.perf_counter()
    ex = _Executor(graph)
    cache = [ex.forward(s) for s in inference]
    refs = [[env[id(v)] if not v.is_const else v.const for v in graph.outputs]
            for env in cache]
    seconds["float_cache"] = time.perf_counter() - t0
    if cache:
        nodes = graph.nodes
        sizes = {id(v): a.size for v, a in
                 ((v, cache[0][id(v)]) for n in nodes for v in n.outputs)}
        for c in cands:
            c.cost = sum(sizes.get(id(v), 0) for j in c.suffix for v in nodes[j].outputs)
        mib = sum(a.nbytes for a in cache[0].values()) * len(cache) / 2**20
        say(f"cached float activations of {len(cache)} sample(s): {mib:.0f} MiB")
    an = Analysis(graph, opts, kinds, stats, inference, cache, refs, cands, params, ranges,
                  tuple(methods), jobs, screen, executor=ex)
    t0 = time.perf_counter()
    say(f"measuring {len(cands)} op(s) x {len(methods)} method(s) on {len(cache)} sample(s), "
        f"{jobs} process(es)")
    order = sorted(range(len(cands)), key=lambda k: -cands[k].cost)
    losses = _parallel_map(an.op_losses, order, jobs, progress="sensitivity")
    by_index = dict(zip(order, losses, strict=True))
    results = []
    for k, c in enumerate(cands):
        ls, best = by_index[k]
        results.append(OpResult(c.node.name, c.node.op, c.kind, ls, best))
    an.results = sorted(results, key=lambda r: -r.loss)
    seconds["per_op"] = time.perf_counter() - t0
    an.seconds = seconds
    return an


# --------------------------------------------------------------------------- search


@dataclass
class SearchResult:
    mode: str
    floats: list[str]
    cosine: float
    target_met: bool | None
    steps: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def search(
    an: Analysis,
    mode: str = "full",
    target_cos: float | None = None,
    max_float_layers: int | None = None,
    say: Callable[[str], None] = lambda _m: None,
) -> SearchResult:
    """The float list: rank-ordered ops kept in float (module doc, 5)."""
    if mode not in MODES:
        raise UsageError(f"--mode {mode}: use full or greedy")
    ranked = [r.name for r in an.results]
    limit = len(ranked) if max_float_layers is None else min(max_float_layers, len(ranked))
    methods = an.best_methods()
    evaluated: dict[int, float] = {}
    steps: list[dict[str, Any]] = []

    def cos(k: int) -> float:
        if k not in evaluated:
            evaluated[k] = an.int8_cosine(ranked[:k], methods)
            step = {"float_ops": k, "added": ranked[k - 1] if k else None,
                    "cosine": evaluated[k]}
            steps.append(step)
            added = f" (+ {step['added']})" if k else " (all int8)"
            say(f"  {k:3d} float op(s){added}: cosine {evaluated[k]:.6f}")
        return evaluated[k]

    def ok(k: int) -> bool:
        return target_cos is not None and cos(k) >= target_cos

    cos(0)
    k = 0
    if target_cos is None and max_float_layers is None:
        pass
    elif mode == "full":  # one op more at a time, the cosine after each
        while k < limit and not ok(k):
            k += 1
            cos(k)
    elif target_cos is None:
        k = limit
    else:
        k = _bisect(ok, limit)
    met = None if target_cos is None else cos(k) >= target_cos
    return SearchResult(mode, ranked[:k], cos(k), met, sorted(steps, key=lambda s: s["float_ops"]))


def _bisect(ok: Callable[[int], bool], limit: int) -> int:
    """Smallest k in [0, limit] with ok(k), assuming ok is monotone; limit when none."""
    if ok(0):
        return 0
    if not ok(limit):
        return limit
    lo, hi = 0, limit
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi


# --------------------------------------------------------------------------- driver


def inference_samples(
    graph: Graph,
    calibration: Iterable[Feeds],
    data: Mapping[str, Any],
    spec: str | None,
    size: int,
    seed: int = 0,
) -> list[Feeds]:
    """``--inference-data``: None -> the first ``size`` calibration samples; ``random`` ->
    seeded random inputs; a folder (single-input model) or ``name:folder,...``."""
    if size < 1:
        raise UsageError(f"--inference-size must be at least 1, got {size}")
    if spec is None:
        return list(_take(calibration, size))
    if spec.lower() == "random":
        from converter.verify import make_inputs

        return [make_inputs(graph.inputs, seed=seed + k) for k in range(size)]
    if ":" not in spec or Path(spec).is_dir():
        if len(graph.inputs) != 1:
            raise UsageError("--inference-data: the model has several inputs; "
                             "use name:/folder,name2:/folder2")
        spec = f"{graph.inputs[0].name}:{spec}"
    for item in spec.split(","):
        folder = item.partition(":")[2]
        if folder and not Path(folder).is_dir():
            raise UsageError(f"--inference-data folder not found: {folder}")
    own = {**dict(data), "calibrate_path": spec, "calibrate_size": size}
    return list(CalibrationData(graph, own))


def _take(samples: Iterable[Feeds], n: int) -> Iterator[Feeds]:
    for k, s in enumerate(samples):
        if k >= n:
            return
        yield s


def run_sensitivity(
    graph: Graph,
    common: Mapping[str, Any],
    full: Mapping[str, Any],
    data: Mapping[str, Any],
    qtable: str | os.PathLike,
    *,
    inference_data: str | None = None,
    inference_size: int = 30,
    seed: int = 0,
    mode: str = "full",
    target_cos: float | None = None,
    max_float_layers: int | None = None,
    calibration_table: str | os.PathLike | None = None,
    jobs: int = 0,
    screen: int = 8,
    say: Callable[[str], None] = lambda _m: None,
) -> dict[str, Any]:
    """Analyze, search, write the qtable and calibration table; returns the report."""
    if str(common.get("quant_type", "")) != "FULL_QUANT":
        raise UsageError("sensitivity needs quant_type=FULL_QUANT in [common_quant_param]")
    if target_cos is not None and not 0.0 < target_cos <= 1.0:
        raise UsageError(f"--target-cos must be in (0, 1], got {target_cos}")
    if max_float_layers is not None and max_float_layers < 0:
        raise UsageError(f"--max-float-layers must be >= 0, got {max_float_layers}")
    if mode not in MODES:
        raise UsageError(f"--mode {mode}: use full or greedy")
    with _one_blas_thread():
        return _run(graph, common, full, data, Path(qtable), inference_data, inference_size,
                    seed, mode, target_cos, max_float_layers, calibration_table, jobs, screen,
                    say)


def _run(
    graph: Graph, common: Mapping[str, Any], full: Mapping[str, Any],
    data: Mapping[str, Any], qpath: Path, inference_data: str | None, inference_size: int,
    seed: int, mode: str, target_cos: float | None, max_float_layers: int | None,
    calibration_table: str | os.PathLike | None, jobs: int, screen: int,
    say: Callable[[str], None],
) -> dict[str, Any]:  # fmt: skip
    t_all = time.perf_counter()
    calib = CalibrationData(graph, data)
    infer = inference_samples(graph, calib, data, inference_data, inference_size, seed)
    if screen < 0:
        raise UsageError(f"--screen must be >= 0, got {screen}")
    an = analyze(graph, calib, infer, common, full, say, jobs, screen=screen)
    t0 = time.perf_counter()
    plain = an.int8_cosine((), None)
    say(f"int8 with activation_quant_method={an.opts.method} everywhere: cosine {plain:.6f}")
    found = search(an, mode, target_cos, max_float_layers, say)
    an.seconds["search"] = time.perf_counter() - t0
    methods = an.best_methods()
    write_qtable(qpath, found.floats, methods, header=[
        f"{len(found.floats)} op(s) in float, int8 output cosine {found.cosine:.6f} on "
        f"{len(infer)} sample(s)"])
    cpath = Path(calibration_table) if calibration_table else qpath.with_suffix(".cali")
    write_calibration_table(cpath, an.calibration_rows(methods), an.stats.samples)
    an.seconds["total"] = time.perf_counter() - t_all
    return {
        "qtable": str(qpath),
        "calibration_table": str(cpath),
        "samples": {"calibration": an.stats.samples, "inference": len(infer)},
        "methods": list(an.methods),
        "config_method": an.opts.method,
        "int8_cosine": {"config_method": plain,
                        "best_methods": next(s["cosine"] for s in found.steps
                                             if s["float_ops"] == 0)},
        "search": {**found.to_dict(), "target_cos": target_cos,
                   "max_float_layers": max_float_layers},
        "ops": [r.to_dict() for r in an.results],
        "jobs": an.jobs,
        "screen_samples": min(screen, len(infer)) if screen else len(infer),
        "seconds": {k: round(v, 3) for k, v in an.seconds.items()},
    }


def summary_lines(report: Mapping[str, Any], top: int = 10) -> list[str]:
    """The ranking's head and the search result, for the terminal."""
    lines = [f"{'rank':>4}  {'op':<32}{'kind':<9}{'best':<11}{'loss':>11}"]
    for k, r in enumerate(report["ops"][:top], 1):
        lines.append(f"{k:>4}  {r['name'][:31]:<32}{r['kind']:<9}{r['best_method']:<11}"
                     f"{r['loss']:>11.3e}")
    s = report["search"]
    cos = report["int8_cosine"]
    lines.append(f"int8 cosine: {cos['config_method']:.6f} ({report['config_method']}), "
                 f"{cos['best_methods']:.6f} (best method per op)")
    met = "" if s["target_met"] is None else ("; target met" if s["target_met"]
                                              else "; target NOT met")
    lines.append(f"{len(s['floats'])} op(s) kept in float -> cosine {s['cosine']:.6f}{met}")
    lines.append(f"qtable: {report['qtable']}  calibration table: "
                 f"{report['calibration_table']}  ({report['seconds']['total']:.1f}s)")
    return lines
