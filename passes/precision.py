"""Float16 and mixed precision: ``convert --fp16 on|auto`` and ``[mixed_precision_param]``.

Semantics of the converted graph
--------------------------------
Every float32 tensor of the main graph that a *float16 node* produces or reads
becomes float16: float32 weights are stored as float16 constants (the ``.ms``
gets ``kNumberTypeFloat16`` tensors, about half the bytes) and activations flow
as float16. Nodes *kept in float32* read and write float32; a ``Cast`` is
inserted wherever a value crosses between the two (one Cast per value and
direction, placed right after the value's producer). Graph inputs and outputs
keep float32 and their names: a Cast after each float input, and a Cast
producing each float output under its original name, so users feed and read
float32. Values that were not float32 (ints, bools, float64, a model's own
float16) are never touched.

What stays float32 (each with its reason in the report)
--------------------------------------------------------
1. Listed by the user: ``keep_fp32_node`` (node names) and ``keep_fp32_op_type``
   (IR op names); unknown names are a usage error.
2. Structural: control flow (If/Loop/Scan, and their bodies as a whole: an outer
   float16 value a body reads is cast back to float32 for it), recurrent ops
   (LSTM/GRU/RNN: rounding error compounds over time steps), quantization ops
   (their scales stay float32), Range (float16 limits can change the output
   length), geometry/numerics ops (Det, DFT, STFT, NonMaxSuppression, losses),
   and any op whose type inference does not turn float16 inputs into float16
   outputs (an output dtype fixed by an attribute: RandomNormal, EyeLike with
   ``dtype``, windows...). ``Cast(to=float)`` becomes ``Cast(to=float16)`` and
   ``ConstantOfShape``'s float value becomes float16 instead.
3. The default overflow keep-list :data:`DEFAULT_KEEP_FP32_OPS`: reductions that
   sum many elements (ReduceSum, ReduceSumSquare, ReduceL1, ReduceL2,
   ReduceLogSum, ReduceLogSumExp, ReduceProd over more than
   :data:`SMALL_REDUCTION` elements or an unknown count; CumSum, CumProd) and
   ops whose output grows faster than their input (Exp; Pow unless the exponent
   is a constant with magnitude <= 1). A float16 device accumulates such ops in
   float16, where partial sums and powers leave the 65504 range first.
4. Weights float16 cannot hold: a constant with max |w| > 65504, or whose
   float16 copy has a relative L2 error above 1e-3 (the tensor's weight sits
   in the subnormal range; tiny entries that flush to zero but carry no weight
   don't count). Their consumers stay float32 and the report names them.
   The weights of nodes kept in float32 for any other reason (an LSTM, a
   reduction) are still *stored* in float16 when float16 holds them, behind a
   Cast to float32: the node computes in float32 on weights rounded once, as
   MNN's ``--fp16`` does for every op.
5. Calibration range guard: the float32 graph runs once on seeded random inputs
   (``converter.verify.make_inputs``, seed 0); a value whose magnitude reaches
   half of 65504 (headroom for data the seed did not show) or whose nonzero
   values all lie below float16's normal range (6.1e-5) keeps its producer and
   all its consumers in float32, so it never passes through float16. Skipped,
   with a note in the report, when the graph cannot run on random inputs.

``auto`` then measures: the converted graph runs on the same calibration inputs
next to the float32 graph, every intermediate is compared by name, and each
float16 node is scored by the relative L2 error it *adds* (its output's error
minus its inputs' worst); outputs that turn inf/NaN where float32 is finite
rank first. The worst 1, 2, 4, 8... nodes (doubling each round) join the
float32 set until every float output's cosine similarity against float32
reaches ``target_cosine``; the report lists the rounds and why each was kept.

The executor's kernels take float16 and return float16; most compute in
float32 internally and round once per op, which is what a float16 device with
float32 accumulation computes.
"""

from __future__ import annotations

import copy
import difflib
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from converter.errors import UsageError
from ir import DataType, Graph, Node, Trait, Value, all_ops, get_op, has_op

__all__ = ["DEFAULT_KEEP_FP32_OPS", "SMALL_REDUCTION", "apply_fp16"]

FP16_MAX = 65504.0
FP16_TINY = 2.0**-14  # smallest normal float16
_SAFE_MAX = FP16_MAX / 2  # calibration headroom
_STORE_FP16_MIN_BYTES = 1024  # a Cast per smaller weight would cost more than it saves
_WEIGHT_REL_ERROR = 1e-3
SMALL_REDUCTION = 16
"""Sum-like reductions over at most this many elements run in float16."""

_SUM_REDUCTIONS = (
    "ReduceSum", "ReduceSumSquare", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp",
    "ReduceProd",
)  # fmt: skip
DEFAULT_KEEP_FP32_OPS: dict[str, str] = {
    **{op: "sum-like reduction over many elements overflows float16" for op in _SUM_REDUCTIONS},
    "CumSum": "running sum overflows float16",
    "CumProd": "running product overflows float16",
    "Exp": "exp leaves float16's range for inputs above 11",
    "Pow": "powers leave float16's range",
}
"""Op types kept in float32 by default (see the module docstring, rule 3)."""

_STRUCTURAL: dict[str, str] = {
    **{op: "recurrent state compounds float16 rounding"
       for op in ("LSTM", "GRU", "RNN", "DynamicQuantizeLSTM")},
    **{op: "quantization parameters stay float32"
       for op in ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QGemm",
                  "MatMulIntegerToFloat", "MatMulNBits", "DynamicQuantizeMatMul",
                  "QLinearAdd", "QLinearConcat", "QLinearConv", "QLinearGlobalAveragePool",
                  "QLinearLeakyRelu", "QLinearMatMul", "QLinearMul", "QLinearSigmoid")},
    "Range": "float16 limits can change the output length",
    **{op: "numerically sensitive op"
       for op in ("Det", "DFT", "STFT", "NonMaxSuppression", "SoftmaxCrossEntropyLoss",
                  "NegativeLogLikelihoodLoss", "MelWeightMatrix")},
}  # fmt: skip
_HALF_WEIGHT_REASONS = frozenset(
    {*DEFAULT_KEEP_FP32_OPS.values(), _STRUCTURAL["LSTM"]}
)
"""Keep reasons about the computation, not the weights: such nodes read float16-stored
weights through a Cast (rule 4). Auto-kept and user-listed nodes keep float32 weights."""
_AGNOSTIC = frozenset({"Shape", "Size"})  # read only the shape: take either precision
_PINNED_FP32_INPUTS: dict[str, frozenset[int]] = {"Resize": frozenset({2})}  # scales: float
_F32 = DataType.FLOAT
_F16 = DataType.FLOAT16


# -- entry point ------------------------------------------------------------------------
def apply_fp16(
    graph: Graph,
    mode: str,
    say: Callable[[str], None],
    keep_fp32_node: Sequence[str] = (),
    keep_fp32_op_type: Sequence[str] = (),
    target_cosine: float = 0.9999,
) -> dict[str, Any]:
    """Convert ``graph`` in place to float16 (``mode`` "on") or mixed precision ("auto").

    Returns a JSON-able report: what stayed float32 and why, weight bytes, casts,
    and the calibration cosine of every float output against float32.
    """
    if mode not in ("on", "auto"):
        raise UsageError(f"--fp16={mode}: use on or auto")
    _check_names(graph, keep_fp32_node, keep_fp32_op_type)
    keep, weights_kept = _static_keep(graph, set(keep_fp32_node), set(keep_fp32_op_type))
    report: dict[str, Any] = {"mode": mode, "default_keep_op_types": sorted(DEFAULT_KEEP_FP32_OPS)}
    feeds, reference, skipped = _calibrate(graph)
    if reference is not None:
        for i, reason in _range_keep(graph, reference).items():
            keep.setdefault(i, reason)
        report["calibration"] = {"seed": 0, "inputs": {k: list(v.shape) for k, v in feeds.items()}}
    else:
        report["calibration"] = {"skipped": skipped}
        say(f"fp16: calibration run skipped ({skipped})")
    if mode == "auto":
        if reference is None:
            say("fp16 auto: no calibration run, converting as --fp16 on")
        else:
            report["auto"] = _auto(graph, keep, feeds, reference, target_cosine, say)
    nodes = list(graph.nodes)
    stats, _ = _convert(graph, keep)
    report.update(stats)
    report["kept_fp32"] = [
        {"node": nodes[i].name, "op": nodes[i].op, "reason": reason}
        for i, reason in sorted(keep.items())
    ]
    report["weights_kept_fp32"] = weights_kept
    if reference is not None:
        try:
            cos = _output_cosines(graph, feeds, reference)
        except Exception as exc:  # reported; --verify shows the same failure
            report["calibration"]["error"] = f"{type(exc).__name__}: {exc}"
            say(f"fp16: the float16 graph does not run in the executor: {exc}")
        else:
            report["calibration"]["cosine"] = cos
            worst = min(cos.values(), default=1.0)
            say(f"fp16: calibration cosine vs float32 (min over outputs) {worst:.6f}")
    say(
        f"fp16 ({mode}): {stats['fp16_nodes']} nodes float16, {stats['fp32_nodes']} kept "
        f"float32, {stats['casts']} casts; weights {_mib(stats['weight_bytes_before'])} -> "
        f"{_mib(stats['weight_bytes_after'])}"
    )
    for w in weights_kept:
        say(f"fp16: weight {w['weight']} stays float32: {w['reason']}")
    return report


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


# -- deciding what stays float32 ----------------------------------------------------------
def _check_names(graph: Graph, nodes: Iterable[str], ops: Iterable[str]) -> None:
    known = all_ops()
    bad_ops = [o for o in ops if o not in known]
    if bad_ops:
        hint = difflib.get_close_matches(bad_ops[0], list(known), n=3)
        raise UsageError(
            f"keep_fp32_op_type: unknown op type(s) {', '.join(bad_ops)}"
            + (f" (did you mean {', '.join(hint)}?)" if hint else "")
        )
    names = {n.name for n in graph.nodes}
    missing = [n for n in nodes if n not in names]
    if missing:
        hint = difflib.get_close_matches(missing[0], list(names), n=3)
        raise UsageError(
            f"keep_fp32_node: no node named {', '.join(missing)} in the optimized graph"
            + (f" (did you mean {', '.join(hint)}?)" if hint else "")
        )


def _touches_fp32(node: Node) -> bool:
    return any(v is not None and v.dtype == _F32 for v in (*node.inputs, *node.outputs))


def _static_keep(
    graph: Graph, names: set[str], op_types: set[str]
) -> tuple[dict[int, str], list[dict[str, Any]]]:
    """Node index -> reason for everything rules 1-4 keep in float32; kept weights."""
    keep: dict[int, str] = {}
    weights: dict[int, dict[str, Any]] = {}
    for i, node in enumerate(graph.nodes):
        if not (_touches_fp32(node) or node.subgraphs()):
            continue
        reason = _node_rule(node, names, op_types)
        if reason is None:
            for w in _fp32_consts(node):
                why = _weight_problem(w.const)  # type: ignore[arg-type]
                if why is not None:
                    weights.setdefault(id(w), {"weight": w.name, "reason": why})
                    reason = f"weight {w.name!r}: {why}"
                    break
        if reason is not None:
            keep[i] = reason
    return keep, list(weights.values())


def _node_rule(node: Node, names: set[str], op_types: set[str]) -> str | None:
    if node.name in names:
        return "listed in keep_fp32_node"
    if node.op in op_types:
        return "listed in keep_fp32_op_type"
    if node.subgraphs() or (has_op(node.op) and get_op(node.op).has(Trait.CONTROL_FLOW)):
        return "control flow (bodies stay float32)"
    if node.op in _STRUCTURAL:
        return _STRUCTURAL[node.op]
    if node.op in _SUM_REDUCTIONS:
        count = _reduced_count(node)
        if count is None or count > SMALL_REDUCTION:
            what = "an unknown number of" if count is None else str(count)
            return f"default keep-list: reduces {what} elements"
        return None
    if node.op == "Pow":
        e = node.input(1)
        if e is not None and e.is_const and np.all(np.abs(e.const) <= 1):  # type: ignore[arg-type]
            return None
    if node.op in DEFAULT_KEEP_FP32_OPS:
        return f"default keep-list: {DEFAULT_KEEP_FP32_OPS[node.op]}"
    if not _fp16_types_ok(node):
        return "its output type does not follow float16 inputs"
    return None


def _reduced_count(node: Node) -> int | None:
    x, y = node.input(0), node.outputs[0]
    if x is None or not x.is_static or not y.is_static:
        return None
    return int(x.numel() or 0) // max(int(y.numel() or 0), 1)


def _fp32_consts(node: Node) -> list[Value]:
    pinned = _PINNED_FP32_INPUTS.get(node.op, frozenset())
    return [
        v for i, v in enumerate(node.inputs)
        if v is not None and v.is_const and v.dtype == _F32 and i not in pinned
    ]  # fmt: skip


def _weight_problem(w: np.ndarray) -> str | None:
    """Why float16 cannot hold ``w`` (None when it can)."""
    if w.size == 0:
        return None
    a = np.abs(w)
    amax = float(a.max())
    if not math.isfinite(amax):
        return None  # inf/NaN weights stay what they are in either precision
    if amax > FP16_MAX:
        return f"max |w| = {amax:.4g} exceeds float16's range (65504)"
    nonzero = a > 0
    n = int(nonzero.sum())
    if n == 0 or not np.any(nonzero & (a < FP16_TINY)):
        return None  # all values normal in float16: rounding error below 2**-11
    half = w.astype(np.float16)
    w64 = w.astype(np.float64)
    rel = float(np.linalg.norm(half.astype(np.float64) - w64) / np.linalg.norm(w64))
    if rel <= _WEIGHT_REL_ERROR:
        # Values that flush to zero but carry no weight (a trained conv with a quarter of
        # its entries below 6e-8, as PP-OCRv4's neck has) are no reason to keep float32.
        return None
    flushed = int((nonzero & (half == 0)).sum())
    if flushed:
        return (
            f"float16 copy has relative error {rel:.2e}: {flushed} of {n} nonzero values "
            "flush to zero in float16"
        )
    return f"float16 copy has relative error {rel:.2e} (values below float16's normal range)"


def _store_half(v: Value) -> bool:
    """A float32 weight of a float32 node that can be stored as float16 (see rule 4)."""
    w = v.const
    return (
        v.is_const and w is not None and w.nbytes >= _STORE_FP16_MIN_BYTES
        and _weight_problem(w) is None
    )  # fmt: skip


def _fp16_types_ok(node: Node) -> bool:
    """Whether the op's type inference maps float16 inputs to float16 outputs."""
    if node.op in ("Cast", "ConstantOfShape"):
        return True  # rewritten by _convert
    if not has_op(node.op):
        return False
    infer = get_op(node.op).infer
    if infer is None:
        return True
    pinned = _PINNED_FP32_INPUTS.get(node.op, frozenset())
    ins: list[Value | None] = []
    for i, v in enumerate(node.inputs):
        if v is None:
            ins.append(None)
        elif v.dtype == _F32 and i not in pinned:
            small = v.is_const and v.const.size <= 64  # type: ignore[union-attr]
            with np.errstate(over="ignore"):
                const = v.const.astype(np.float16) if small else None  # type: ignore[union-attr]
            ins.append(Value(v.name, _F16, v.shape, const=const))
        else:
            ins.append(Value(v.name, v.dtype, v.shape, const=v.const))
    trial = Node(node.op, ins, len(node.outputs), attrs=node.attrs, name=node.name)
    try:
        results = infer(trial)
    except Exception:  # an inference that refuses float16 keeps the op float32
        return False
    for out, (dtype, _) in zip(node.outputs, results, strict=False):
        want = _F16 if out.dtype == _F32 else out.dtype
        if DataType(dtype) not in (want, DataType.UNDEFINED):
            return False
    return True


# -- calibration -----------------------------------------------------------------------
def _calibrate(
    graph: Graph,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None, str]:
    """Seeded inputs and every float32 value of the float32 graph (None + why on failure)."""
    from converter.verify import make_inputs

    try:
        feeds = make_inputs(graph.inputs, seed=0)
        return feeds, _run_all(graph, feeds), ""
    except Exception as exc:  # any failure only disables the data-driven checks
        return {}, None, f"{type(exc).__name__}: {exc}"


def _run_all(graph: Graph, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run ``graph`` exposing every float value the main graph computes; name -> array."""
    from converter.executor.runtime import Runtime

    extra = [o for n in graph.nodes for o in n.outputs if o.dtype in (_F32, _F16)]
    saved = graph.outputs
    graph.outputs = [*saved, *(v for v in extra if all(v is not s for s in saved))]
    try:
        results = Runtime(graph).run(feeds)
    finally:
        graph.outputs = saved
    return results


def _range_keep(graph: Graph, reference: Mapping[str, np.ndarray]) -> dict[int, str]:
    """Rule 5: producers and consumers of values float16 cannot carry."""
    index = {id(n): i for i, n in enumerate(graph.nodes)}
    keep: dict[int, str] = {}
    for node in graph.nodes:
        for v in node.outputs:
            arr = reference.get(v.name)
            if v.dtype != _F32 or arr is None or arr.size == 0:
                continue
            why = _range_problem(arr)
            if why is None:
                continue
            reason = f"value {v.name!r} {why} on calibration data"
            for n in (node, *v.consumers()):
                if id(n) in index:
                    keep.setdefault(index[id(n)], reason)
    return keep


def _range_problem(arr: np.ndarray) -> str | None:
    a = np.abs(arr[np.isfinite(arr)])
    if a.size == 0:
        return None
    amax = float(a.max())
    if amax >= _SAFE_MAX:
        return f"reaches |v| = {amax:.4g} (float16 max 65504, kept below half of it)"
    if 0 < amax < FP16_TINY:
        return f"lies entirely below float16's normal range (max |v| = {amax:.3g})"
    return None


# -- auto ----------------------------------------------------------------------------------
@dataclass
class _Measure:
    cosine: dict[str, float]
    scores: list[tuple[float, int, str]] = field(default_factory=list)  # (score, index, why)

    @property
    def worst(self) -> float:
        return min(self.cosine.values(), default=1.0)


def _auto(
    graph: Graph,
    keep: dict[int, str],
    feeds: Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray],
    target: float,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """Grow ``keep`` until the calibration cosine reaches ``target``; the rounds' log."""
    rounds: list[dict[str, Any]] = []
    group = 1
    while True:
        trial = _clone(graph)
        _, fp16_index = _convert(trial, keep)
        try:
            m = _measure(trial, fp16_index, feeds, reference)
        except Exception as exc:  # the executor cannot run this candidate: stop searching
            say(f"fp16 auto: stopped, the float16 graph does not run: {exc}")
            rounds.append({"kept_fp32": len(keep), "error": f"{type(exc).__name__}: {exc}"})
            break
        rounds.append({"kept_fp32": len(keep), "min_cosine": m.worst})
        say(f"fp16 auto: round {len(rounds)}: {len(keep)} nodes float32, min cosine {m.worst:.6f}")
        candidates = [s for s in m.scores if s[1] not in keep]
        if m.worst >= target or not candidates:
            break
        for _, i, why in sorted(candidates, key=lambda s: -s[0])[:group]:
            keep[i] = f"auto: {why}"
        group *= 2
    return {
        "target_cosine": target,
        "met": rounds[-1].get("min_cosine", -1.0) >= target,
        "rounds": rounds,
    }


def _clone(graph: Graph) -> Graph:
    """A deep copy sharing the constant arrays (conversion never writes into them)."""
    memo: dict[int, Any] = {}
    for g in graph.all_graphs():
        for v in g.values():
            if v.const is not None:
                memo[id(v.const)] = v.const
        for n in g.nodes:
            for a in n.attrs.values():
                if isinstance(a, np.ndarray):
                    memo[id(a)] = a
    return copy.deepcopy(graph, memo)


def _measure(
    trial: Graph,
    fp16_index: Mapping[int, int],
    feeds: Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray],
) -> _Measure:
    """Output cosines of the converted ``trial`` and a score per float16 node.

    ``fp16_index`` maps id(node) of the trial's float16 nodes to their index
    in the original graph.
    """
    got = _run_all(trial, feeds)
    outs = {v.name for v in trial.outputs}
    cosine = {k: _cosine(got[k], reference[k]) for k in outs if _is_float(reference.get(k))}
    err: dict[str, tuple[float, bool]] = {}
    for name, arr in got.items():
        ref = reference.get(name)
        if ref is not None and arr.shape == ref.shape:
            err[name] = _rel_error(arr, ref)
    for node in trial.nodes:  # an inserted Cast carries its input's error
        src = node.input(0)
        if node.op == "Cast" and src is not None and src.name in err:
            err.setdefault(node.outputs[0].name, err[src.name])
    scores = []
    for node in trial.nodes:
        index = fp16_index.get(id(node))
        if index is None:
            continue
        outs_err = [err[o.name] for o in node.outputs if o.name in err]
        if not outs_err:
            continue
        ins_err = [err[v.name] for v in node.inputs if v is not None and v.name in err]
        e_out = max(e for e, _ in outs_err)
        e_in = max((e for e, _ in ins_err), default=0.0)
        bad_out = any(b for _, b in outs_err) and not any(b for _, b in ins_err)
        if bad_out:
            scores.append((math.inf, index, "float16 output turns inf/NaN"))
        elif e_out - e_in > 0:
            why = f"adds relative error {e_out - e_in:.2e} (output {e_out:.2e})"
            scores.append((e_out - e_in, index, why))
    return _Measure(cosine, scores)


def _is_float(a: np.ndarray | None) -> bool:
    return a is not None and a.dtype.kind == "f"


def _rel_error(got: np.ndarray, ref: np.ndarray) -> tuple[float, bool]:
    """(relative L2 error over finite elements, got has inf/NaN where ref is finite)."""
    g = got.astype(np.float64)
    r = ref.astype(np.float64)
    bad = bool(np.any(~np.isfinite(g) & np.isfinite(r)))
    ok = np.isfinite(g) & np.isfinite(r)
    denom = float(np.linalg.norm(r[ok]))
    num = float(np.linalg.norm(g[ok] - r[ok]))
    return (num / denom if denom > 0 else num), bad


def _cosine(got: np.ndarray, ref: np.ndarray) -> float:
    g = np.asarray(got, np.float64).reshape(-1)
    r = np.asarray(ref, np.float64).reshape(-1)
    if g.shape != r.shape or np.any(~np.isfinite(g) & np.isfinite(r)):
        return -1.0
    ok = np.isfinite(g) & np.isfinite(r)
    g, r = g[ok], r[ok]
    ng, nr = float(np.linalg.norm(g)), float(np.linalg.norm(r))
    if ng == 0.0 and nr == 0.0:
        return 1.0
    if ng == 0.0 or nr == 0.0:
        return 0.0
    return float(np.dot(g, r) / (ng * nr))


def _output_cosines(
    graph: Graph, feeds: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]
) -> dict[str, float]:
    from converter.executor.runtime import Runtime

    got = Runtime(graph).run(feeds)
    return {k: _cosine(v, reference[k]) for k, v in got.items() if _is_float(reference.get(k))}


# -- rewriting ---------------------------------------------------------------------------
class _Rewriter:
    """Casts and float16 constants, each made once per value."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.casts: dict[tuple[int, DataType], Value] = {}
        self.consts: dict[int, Value] = {}
        self.count = 0

    def cast(self, v: Value, to: DataType) -> Value:
        key = (id(v), to)
        if key not in self.casts:
            suffix = "fp16" if to == _F16 else "fp32"
            out = Value(self.graph.unique_name(f"{v.name}_{suffix}"), to, v.shape)
            self.insert_cast(v, out)
        return self.casts[key]

    def insert_cast(self, v: Value, out: Value) -> None:
        """Cast ``v`` into ``out`` (whose dtype says to what), right after v's producer."""
        name = self.graph.unique_name(f"{out.name}_cast")
        node = Node("Cast", [v], [out], attrs={"to": int(out.dtype)}, name=name)
        self.casts[(id(v), out.dtype)] = out
        producer = v.producer
        if producer is not None and producer.graph is self.graph:
            self.graph.insert_after(producer, node)
        elif len(self.graph):
            self.graph.insert_before(self.graph.nodes[0], node)
        else:
            self.graph.append(node)
        self.count += 1

    def half(self, v: Value) -> Value:
        if id(v) not in self.consts:
            arr = v.const.astype(np.float16)  # type: ignore[union-attr]
            self.consts[id(v)] = Value(self.graph.unique_name(f"{v.name}_fp16"), const=arr)
        return self.consts[id(v)]


def _convert(graph: Graph, keep: Mapping[int, str]) -> tuple[dict[str, Any], dict[int, int]]:
    """Rewrite ``graph`` in place: every non-kept float32 node computes in float16.

    Returns the statistics and id(node) -> node index for the float16 nodes.
    """
    nodes = list(graph.nodes)
    before = _weight_bytes(graph)
    orig = {id(v) for v in graph.values() if v.dtype == _F32}
    mode: dict[int, str] = {}
    fp16_index: dict[int, int] = {}
    for i, node in enumerate(nodes):
        if node.op in _AGNOSTIC or not (_touches_fp32(node) or node.subgraphs()):
            continue
        mode[id(node)] = "fp32" if i in keep else "fp16"
        if i not in keep:
            fp16_index[id(node)] = i
    converted: set[int] = set()
    for node in nodes:
        if mode.get(id(node)) != "fp16":
            continue
        for o in node.outputs:
            if o.dtype == _F32:
                o.dtype = _F16
                converted.add(id(o))
        _retype_attrs(node)
    rw = _Rewriter(graph)
    stored_half: set[int] = set()
    _fix_outputs(graph, converted, rw)
    for index, node in enumerate(nodes):
        m = mode.get(id(node))
        if m is None:
            continue
        half_weights = keep.get(index) in _HALF_WEIGHT_REASONS
        pinned = _PINNED_FP32_INPUTS.get(node.op, frozenset())
        for i, v in enumerate(node.inputs):
            if v is None or id(v) not in orig:
                continue
            want = _F16 if m == "fp16" and i not in pinned else _F32
            if v.dtype == want:
                if half_weights and i not in pinned and _store_half(v):
                    node.set_input(i, rw.cast(rw.half(v), _F32))
                    stored_half.add(id(v))
                continue
            node.set_input(i, rw.half(v) if v.is_const else rw.cast(v, want))
        for sub in node.subgraphs():
            _fix_body_reads(sub, converted, rw)
    after = _weight_bytes(graph)
    stats = {
        "fp16_nodes": sum(1 for m in mode.values() if m == "fp16"),
        "fp32_nodes": sum(1 for m in mode.values() if m == "fp32"),
        "casts": rw.count,
        "fp16_weights_of_fp32_nodes": len(stored_half),
        "weight_bytes_before": before["total"],
        "weight_bytes_after": after["total"],
        "weight_bytes_by_dtype": after["by_dtype"],
    }
    return stats, fp16_index


def _retype_attrs(node: Node) -> None:
    if node.op == "Cast" and node.attrs.get("to") == int(_F32):
        node.attrs["to"] = int(_F16)
    elif node.op == "ConstantOfShape":
        value = node.attrs.get("value")
        if isinstance(value, np.ndarray) and value.dtype == np.float32:
            node.attrs["value"] = value.astype(np.float16)


def _fix_body_reads(body: Graph, converted: set[int], rw: _Rewriter) -> None:
    """Bodies stay float32: outer values now float16 are cast back for them."""
    for g in body.all_graphs():
        for inner in g.nodes:
            for i, v in enumerate(inner.inputs):
                if v is not None and id(v) in converted:
                    inner.set_input(i, rw.cast(v, _F32))
        g.outputs = [rw.cast(v, _F32) if id(v) in converted else v for v in g.outputs]


def _fix_outputs(graph: Graph, converted: set[int], rw: _Rewriter) -> None:
    """Float outputs keep float32 and their names: the float16 value is renamed."""
    outputs = []
    for v in graph.outputs:
        if id(v) not in converted:
            outputs.append(v)
            continue
        key = (id(v), _F32)
        if key not in rw.casts:
            name = v.name
            v.name = graph.unique_name(f"{name}_fp16")
            rw.insert_cast(v, Value(name, _F32, v.shape))
        outputs.append(rw.casts[key])
    graph.outputs = outputs


def _weight_bytes(graph: Graph) -> dict[str, Any]:
    seen: dict[int, Value] = {}
    for g in graph.all_graphs():
        for v in g.values():
            if v.const is not None:
                seen.setdefault(id(v), v)
    by_dtype: dict[str, int] = {}
    for v in seen.values():
        key = v.dtype.name.lower()
        by_dtype[key] = by_dtype.get(key, 0) + int(v.const.nbytes)  # type: ignore[union-attr]
    return {"total": sum(by_dtype.values()), "by_dtype": dict(sorted(by_dtype.items()))}
