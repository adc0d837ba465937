"""Full int8 quantization (``quant_type=FULL_QUANT``): calibrate, then integer ops.

Steps of :func:`quantize_full`:

1. Activations a QLinearConv / QGemm output clamp cannot express (anything but
   none, Relu and Clip) are split off ``ConvAct`` / ``MatMulAct`` into their own
   nodes (numerically the same graph).
2. Plan which nodes become integer ops (skip_quant_node and a qtable's ``F32`` ops stay
   float; a qtable's ``INT8 METHOD`` sets that op's output range method):

   =====================================  ===================================================
   Conv, ConvAct (const W)                QLinearConv: int8 per-channel symmetric weights,
                                          int32 bias ``round(B / (x_scale * w_scale))``
   Gemm, MatMul, MatMulAct (const 2-D B)  QGemm (2-D A, int32 bias, int8 or float output)
                                          or MatMulIntegerToFloat (N-D A: float output)
   MatMul of two activations              QLinearMatMul (int8 out) / MatMulIntegerToFloat
   Add, Mul                               com.microsoft QLinearAdd / QLinearMul
   GlobalAveragePool, Concat              QLinearGlobalAveragePool, QLinearConcat
   LeakyRelu, Sigmoid                     QLinearLeakyRelu, QLinearSigmoid (256-entry tables)
   Relu, Clip                             folded into the producer's output range, or an
                                          int8 Clip (exact: ``q = clip(q, q(lo), q(hi))``)
   Reshape, Transpose, MaxPool, ...       the same op on int8 data, parameters unchanged
   =====================================  ===================================================

   Conv / matmul nodes are always quantized (a QuantizeLinear is inserted in front of a
   float input); the cheaper ops only when every activation input is already int8,
   and data movement / Relu / Clip only when an integer op reads their result (a
   chain ending in a float op would only add conversions).
   A conv / matmul / QLinear* output whose only reader is a Relu or Clip is quantized with
   that activation's range, so the output clamp computes the activation. Outputs no
   integer op reads stay float where the op can produce float (QGemm,
   MatMulIntegerToFloat); elsewhere a DequantizeLinear feeds the float readers.
3. Calibrate (:mod:`passes.quant.calibrate`) the float graph; each tensor's int8
   range comes from ``activation_quant_method`` (:mod:`passes.quant.ranges`).
   Asymmetric activations: ``scale = (hi - lo) / 255``, ``zero_point = round(-128 -
   lo / scale)``; symmetric: ``scale = max|x| / 127``, ``zero_point = 0``.
4. Rewrite, then (``bias_correction``) correct each conv / matmul bias by the mean
   per-channel shift between the float layer and the layer with int8 weights, both fed
   the float calibration data: ``shift[o] = sum_i (Weff_f - Weff_q)[o, i] mu[i]``, with
   ``mu`` the per-channel means of the layer's input over the calibration data and
   ``Weff`` the weights summed over kernel taps, each tap weighted by the share of
   output positions where it reads inside the (unpadded) input. The int32 bias moves
   by ``round(shift / (x_scale * w_scale))`` (a float bias by ``shift``). Activation
   rounding is unbiased and left out; errors propagated from earlier layers are left
   to those layers' own corrections (correcting them here too would count them twice).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from converter.errors import UsageError
from ir import DataType, Graph, Node, QuantParams, Value
from ir.ops.fused import BINARY_ACT
from ir.ops.nn import resolve_pads
from passes.quant.calibrate import CalibrationData, Statistics, collect_statistics
from passes.quant.ranges import METHODS, affine_params, choose_range

__all__ = ["quantize_full"]

F32, I8, I32 = DataType.FLOAT, DataType.INT8, DataType.INT32
_CLAMPS = ("none", "Relu", "Clip")  # activations an int8 output clamp can express
_CONV_ATTRS = ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides", "format")
_PASSTHROUGH = frozenset({
    "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity", "MaxPool",
    "GlobalMaxPool", "Slice", "Split", "DepthToSpace", "SpaceToDepth", "Expand", "Tile",
    "Gather",
})  # fmt: skip
_REQUANT = frozenset({"conv", "gemm", "matmul", "binary", "gap", "concat", "lut"})
_UNFUSED = {  # activation name -> (op, attribute names of its activation_params)
    "LeakyRelu": ("LeakyRelu", ("alpha",)),
    "Sigmoid": ("Sigmoid", ()),
    "Tanh": ("Tanh", ()),
    "HardSigmoid": ("HardSigmoid", ("alpha", "beta")),
    "HardSwish": ("HardSwish", ()),
    "Gelu": ("Gelu", ("approximate",)),
    "Swish": ("Swish", ("alpha",)),
}


@dataclass
class Options:
    """What ``[common_quant_param]`` and ``[full_quant_param]`` ask for."""

    method: str = "MAX_MIN"
    symmetric: bool = False
    per_channel: bool = True
    bias_correction: bool = False
    skip: frozenset[str] = frozenset()
    methods: dict[str, str] = field(default_factory=dict)  # node name -> its output's method

    @classmethod
    def from_config(cls, common: Mapping[str, Any], full: Mapping[str, Any]) -> Options:
        bits = int(common.get("bit_num", 8))
        if bits != 8:
            raise UsageError(f"FULL_QUANT supports bit_num=8 only (got {bits})")
        method = str(full.get("activation_quant_method", "MAX_MIN")).upper()
        if method not in METHODS:
            raise UsageError(f"activation_quant_method={method}: use one of {', '.join(METHODS)}")
        return cls(
            method=method,
            symmetric=bool(full.get("symmetric", False)),
            per_channel=bool(full.get("per_channel", True)),
            bias_correction=bool(full.get("bias_correction", False)),
            skip=frozenset(common.get("skip_quant_node") or ()),
        )


def quantize_full(
    graph: Graph,
    say: Callable[[str], None],
    common: Mapping[str, Any],
    full: Mapping[str, Any],
    data: Mapping[str, Any],
    qtable: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Quantize ``graph`` in place to int8; returns a JSON-able report.

    ``qtable`` (``convert --qtable``, :mod:`passes.quant.sensitivity`): node name ->
    ``"F32"`` (kept in float, like skip_quant_node) or the activation_quant_method of
    that node's output range (and of a graph input it reads).
    """
    opts = Options.from_config(common, full)
    samples = CalibrationData(graph, data)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    unfused = unfuse_activations(graph, opts.skip)
    if qtable:
        opts = apply_qtable(graph, opts, qtable)
    kinds = plan(graph, opts.skip)
    axes = channel_axes(graph, kinds) if opts.bias_correction else {}
    histogram = any(m != "MAX_MIN" for m in (opts.method, *opts.methods.values()))
    stats = collect_statistics(graph, samples, histogram, axes, say)
    seconds["calibrate"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    rewriter = Rewriter(graph, kinds, stats, opts)
    rewriter.run()
    seconds["rewrite"] = time.perf_counter() - t0
    report: dict[str, Any] = {
        "method": opts.method,
        "symmetric": opts.symmetric,
        "per_channel": opts.per_channel,
        "samples": stats.samples,
        "unfused_activations": unfused,
        "skipped": sorted(opts.skip),
    }
    if qtable:
        report["qtable_methods"] = dict(sorted(Counter(opts.methods.values()).items()))
    if opts.bias_correction:
        t0 = time.perf_counter()
        report["bias_correction"] = correct_biases(graph, rewriter.layers, stats)
        seconds["bias_correction"] = time.perf_counter() - t0
    counts = Counter(n.op for n in graph.nodes)
    report["ops"] = dict(sorted(counts.items()))
    report["quantized_nodes"] = len(kinds)
    report["seconds"] = {k: round(v, 3) for k, v in seconds.items()}
    say(
        f"full quant ({opts.method}): {len(kinds)} nodes to int8 on {stats.samples} sample(s), "
        f"{counts.get('QuantizeLinear', 0)} QuantizeLinear / "
        f"{counts.get('DequantizeLinear', 0)} DequantizeLinear at float boundaries"
    )
    return report


# --------------------------------------------------------------------------- preparation


def apply_qtable(graph: Graph, opts: Options, qtable: Mapping[str, str]) -> Options:
    """``opts`` with the qtable's float ops skipped and its methods (names checked)."""
    names = {n.name for n in graph.nodes}
    unknown = sorted(n for n in qtable if n not in names)
    if unknown:
        more = f" (and {len(unknown) - 5} more)" if len(unknown) > 5 else ""
        raise UsageError(
            f"qtable names {len(unknown)} op(s) not in the graph: {', '.join(unknown[:5])}{more}; "
            "run sensitivity with the same --optimize/--outputFormat as convert"
        )
    bad = sorted({m for m in qtable.values() if m != "F32" and m not in METHODS})
    if bad:
        raise UsageError(f"qtable method(s) {', '.join(bad)}: use F32 or {', '.join(METHODS)}")
    floats = frozenset(n for n, m in qtable.items() if m == "F32")
    methods = {**opts.methods, **{n: m for n, m in qtable.items() if m != "F32"}}
    return replace(opts, skip=opts.skip | floats, methods=methods)


def _split_binary(graph: Graph, node: Node) -> None:
    """AddAct/SubAct/MulAct/DivAct -> the plain binary op (+ its activation node).

    The int8 rewriter quantizes plain Add/Mul (QLinearAdd/QLinearMul) and folds a
    following Relu/Clip into the output range, so the fused form must not hide them.
    """
    act = node.attrs.get("activation", "none")
    params = list(node.attrs.get("activation_params") or [])
    out = node.outputs[0]
    binary = BINARY_ACT[node.op]
    if act == "none":
        node.op = binary  # same inputs and output, no activation: just the plain op
        node.attrs = {}
        return
    mid = Value(graph.unique_name(f"{out.name}_preact"), out.dtype, out.shape)
    inputs = list(node.inputs)
    graph.insert_before(node, Node(binary, inputs, [mid], name=node.name))
    _detach(graph, node, out)
    if act == "Relu":
        tail = Node("Relu", [mid], [out], name=graph.unique_name(f"{node.name}_Relu"))
    elif act == "Clip":
        lo, hi = (params + [float("-inf"), float("inf")])[:2]
        bounds = [Value(graph.unique_name(f"{node.name}_{k}"), const=np.array(b, np.float32))
                  for k, b in (("min", lo), ("max", hi))]  # fmt: skip
        tail = Node("Clip", [mid, *bounds], [out], name=graph.unique_name(f"{node.name}_Clip"))
    else:
        op, names = _UNFUSED[act]
        attrs = dict(zip(names, params, strict=False))
        if op == "Gelu":
            attrs["approximate"] = "tanh" if attrs.get("approximate") else "none"
        tail = Node(op, [mid], [out], attrs, name=graph.unique_name(f"{node.name}_{op}"))
    mid_node = mid.producer
    assert mid_node is not None
    graph.insert_after(mid_node, tail)


def _detach(graph: Graph, node: Node, out: Value) -> Value:
    """Remove ``node``, freeing its output value ``out`` for a new producer."""
    graph.remove(node, safe=False)
    out.producer = None
    return out


def unfuse_activations(graph: Graph, skip: frozenset[str] = frozenset()) -> int:
    """Split activations other than Relu/Clip off ConvAct/MatMulAct, and every fused
    binary op (AddAct, ...) back into its binary op and activation; returns how many."""
    count = 0
    for node in list(graph.nodes):
        if node.op in BINARY_ACT and node.name not in skip:
            _split_binary(graph, node)
            count += 1
            continue
        act = node.attrs.get("activation", "none")
        if node.op not in ("ConvAct", "MatMulAct") or node.name in skip or act in _CLAMPS:
            continue
        if act not in _UNFUSED:
            continue
        op, names = _UNFUSED[act]
        params = node.attrs.get("activation_params") or []
        attrs = dict(zip(names, params, strict=False))
        if op == "Gelu":
            attrs["approximate"] = "tanh" if attrs.get("approximate") else "none"
        out = node.outputs[0]
        mid = Value(graph.unique_name(f"{out.name}_preact"), out.dtype, out.shape)
        bare = {k: v for k, v in node.attrs.items() if k != "activation_params"}
        bare["activation"] = "none"
        fused = Node(node.op, node.inputs, [mid], bare, name=node.name)
        graph.insert_before(node, fused)
        graph.remove(node, safe=False)
        out.producer = None
        graph.insert_after(fused, Node(op, [mid], [out], attrs,
                                       name=graph.unique_name(f"{node.name}_{op}")))
        count += 1
    return count


def _f32(v: Value | None) -> bool:
    return v is not None and v.dtype == F32


def _const2d(v: Value | None) -> bool:
    return v is not None and v.is_const and v.dtype == F32 and v.const.ndim == 2  # type: ignore[union-attr]


def _act(node: Node) -> str:
    return node.attrs.get("activation", "none") if node.op in ("ConvAct", "MatMulAct") else "none"


def _bias_ok(v: Value | None, n: int | None) -> bool:
    if v is None:
        return True
    if not (v.is_const and v.dtype == F32):
        return False
    size = v.const.size  # type: ignore[union-attr]
    return size == 1 or (size == n and max(v.const.shape, default=1) == n)  # type: ignore[union-attr]


def _classify(node: Node, avail: Callable[[Value | None], bool]) -> str | None:
    op, ins = node.op, node.inputs
    x = node.input(0)
    if op in ("Conv", "ConvAct"):
        w = node.input(1)
        ok = (_f32(x) and not x.is_const and w is not None and w.is_const  # type: ignore[union-attr]
              and w.dtype == F32 and w.const.ndim >= 3 and _act(node) in _CLAMPS  # type: ignore[union-attr]
              and _bias_ok(node.input(2), w.const.shape[0]))  # type: ignore[union-attr]
        return "conv" if ok else None
    if op in ("Gemm", "MatMul", "MatMulAct") and _f32(x) and not x.is_const:  # type: ignore[union-attr]
        w = node.input(1)
        if op == "Gemm":
            ok = node.attr("transA") == 0 and _const2d(w) and _bias_ok(
                node.input(2), w.const.shape[0 if node.attr("transB") else 1])  # type: ignore[union-attr]
            return "gemm" if ok else None
        if _const2d(w):
            ok = _act(node) in _CLAMPS and _bias_ok(node.input(2), w.const.shape[1])  # type: ignore[union-attr]
            ok = ok and (x.rank is None or x.rank >= 2)  # type: ignore[union-attr]
            return "gemm" if ok else None
        if op == "MatMul" and _f32(w) and not w.is_const:  # type: ignore[union-attr]
            ranks = (x.rank, w.rank)  # type: ignore[union-attr]
            return "matmul" if all(r is None or r >= 2 for r in ranks) else None
        return None
    data = [v for v in ins if v is not None]
    if op in ("Add", "Mul") and len(data) == 2 and all(_f32(v) for v in data):
        live = [v for v in data if not v.is_const]
        return "binary" if live and all(avail(v) for v in live) else None
    if not (_f32(x) and avail(x)):
        return None
    if op in _PASSTHROUGH:
        others = [v for v in ins[1:] if v is not None]
        if any(v.dtype == F32 for v in others) or (op == "MaxPool" and len(node.outputs) > 1):
            return None
        return "passthrough"
    if op == "Relu" or (op == "Clip" and all(v is None or v.is_const for v in ins[1:])):
        return "act"
    if op in ("LeakyRelu", "Sigmoid"):
        return "lut"
    if op == "GlobalAveragePool":
        return "gap"
    if op == "Concat" and all(_f32(v) and avail(v) for v in data):
        return "concat"
    return None


def plan(graph: Graph, skip: frozenset[str] = frozenset()) -> dict[int, str]:
    """id(node) -> how it is quantized (see the module docstring); absent: stays float."""
    kinds: dict[int, str] = {}

    def avail(v: Value | None) -> bool:
        return v is not None and v.producer is not None and id(v.producer) in kinds

    for node in graph.nodes:
        if node.name in skip:
            continue
        kind = _classify(node, avail)
        if kind is not None:
            kinds[id(node)] = kind
    outputs = {id(v) for v in graph.outputs}
    for node in reversed(graph.nodes):  # int8 data movement that only float ops read
        if kinds.get(id(node)) in ("passthrough", "act") and not any(
            id(r) in kinds for o in node.outputs for r in o.consumers()
        ) and not any(id(o) in outputs for o in node.outputs):
            del kinds[id(node)]
    return kinds


def tensor_methods(graph: Graph, methods: Mapping[str, str]) -> dict[str, str]:
    """Value name -> method, from per-node methods: a node's outputs, the output of a
    lone Relu / Clip reader (whose range the node's output may take), graph inputs it
    reads (the first such node wins)."""
    out: dict[str, str] = {}
    if not methods:
        return out
    inputs = {id(v) for v in graph.inputs}
    for node in graph.nodes:
        m = methods.get(node.name)
        if m is None:
            continue
        for v in node.inputs:
            if v is not None and id(v) in inputs:
                out.setdefault(v.name, m)
        for y in node.outputs:
            out[y.name] = m
            readers = y.consumers()
            if (len(readers) == 1 and readers[0].op in ("Relu", "Clip")
                    and readers[0].name not in methods):
                out[readers[0].outputs[0].name] = m
    return out


def channel_axes(graph: Graph, kinds: Mapping[int, str]) -> dict[str, int]:
    """Input value name -> channel axis, for the layers bias correction adjusts."""
    axes: dict[str, int] = {}
    for node in graph.nodes:
        kind = kinds.get(id(node))
        x = node.input(0)
        if kind == "conv" and x is not None:
            axes[x.name] = -1 if node.attr("format") == "NHWC" else 1
        elif kind == "gemm" and x is not None:
            axes[x.name] = -1
    return axes


# --------------------------------------------------------------------------- rewriting


@dataclass
class Layer:
    """A conv / matmul whose bias correction may adjust (see correct_biases)."""

    node: Node
    kind: str  # "conv" | "gemm"
    xq: Value  # the int8 input it reads
    x_scale: float
    x_zp: int
    x_name: str  # the float input's name (calibration statistics)
    w_float: np.ndarray  # conv: OIHW; gemm: [K, N]
    w_deq: np.ndarray
    bias_index: int
    bias_scale: np.ndarray | None  # per output channel (int32 bias); None: float bias
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass
class _QInfo:
    scale: np.float32
    zp: np.int8


class Rewriter:
    """Rewrites planned nodes into integer ops, in graph order (see the module docstring)."""

    def __init__(
        self, graph: Graph, kinds: Mapping[int, str], stats: Statistics, opts: Options
    ) -> None:
        self.graph = graph
        self.kinds = kinds
        self.stats = stats
        self.opts = opts
        self.qmap: dict[int, Value] = {}  # id(float value) -> its int8 version
        self.info: dict[int, _QInfo] = {}  # id(int8 value) -> its parameters
        self.replaced: list[tuple[Value, Value]] = []  # (float value, int8 value)
        self.folded: set[int] = set()  # id(float value) quantized with its reader's range
        self.layers: list[Layer] = []
        self.anchor: Node | None = None
        self.outputs = {id(v) for v in graph.outputs}
        self._params: dict[str, _QInfo] = {}
        self._pending: list[Node] = []
        self._names = {v.name for v in graph.values()} | {n.name for n in graph.nodes}
        self._tensor_methods = tensor_methods(graph, opts.methods)

    def name(self, base: str) -> str:
        """A fresh value / node name (graph.unique_name rescans the graph after each insert)."""
        cand, i = base, 0
        while cand in self._names:
            i += 1
            cand = f"{base}_{i}"
        self._names.add(cand)
        return cand

    # -- parameters ---------------------------------------------------------
    def params(self, name: str) -> _QInfo:
        hit = self._params.get(name)
        if hit is None:
            stats = self.stats.tensors.get(name)
            method = self._tensor_methods.get(name, self.opts.method)
            lo, hi = (0.0, 0.0) if stats is None else choose_range(
                stats, method, self.opts.symmetric)
            hit = self._params[name] = _QInfo(*affine_params(lo, hi, self.opts.symmetric))
        return hit

    def out_params(self, node: Node) -> _QInfo:
        """The output range: the reader's when a lone Relu/Clip reader is folded in."""
        out = node.outputs[0]
        readers = out.consumers()
        if (len(readers) == 1 and len(out.uses) == 1 and id(out) not in self.outputs
                and self.kinds.get(id(readers[0])) == "act"):
            self.folded.add(id(out))
            return self.params(readers[0].outputs[0].name)
        return self.params(out.name)

    # -- values -------------------------------------------------------------
    def const(self, base: str, array: np.ndarray, quant: QuantParams | None = None) -> Value:
        array = np.asarray(array)
        if not array.flags.c_contiguous:
            array = np.ascontiguousarray(array)
        v = Value(self.name(base), const=array)
        v.quant = quant
        return v

    def scalar(self, info: _QInfo, base: str) -> tuple[Value, Value]:
        return (self.const(f"{base}_scale", np.asarray(info.scale, np.float32)),
                self.const(f"{base}_zero_point", np.asarray(info.zp, np.int8)))

    def int8_value(self, like: Value, info: _QInfo) -> Value:
        v = Value(self.name(f"{like.name}_int8"), I8, like.shape)
        v.quant = QuantParams(np.asarray([info.scale], np.float32),
                              np.asarray([info.zp], np.int8), None, 8)
        self.info[id(v)] = info
        return v

    def emit(self, op: str, inputs: list[Value | None], outputs: list[Value],
             attrs: dict[str, Any] | None = None) -> Node:
        assert self.anchor is not None
        node = Node(op, inputs, outputs, attrs or {}, name=self.name(f"{self.anchor.name}_{op}"))
        self._pending.append(node)
        return node

    def quantized(self, v: Value) -> tuple[Value, _QInfo]:
        """The int8 version of ``v`` (a QuantizeLinear is inserted when there is none)."""
        if v.is_const:
            assert v.const is not None
            c = v.const.astype(np.float32)
            info = _QInfo(*affine_params(float(c.min(initial=0.0)), float(c.max(initial=0.0)),
                                         self.opts.symmetric))
            q = np.clip(np.rint(c / info.scale) + int(info.zp), -128, 127).astype(np.int8)
            qv = self.const(f"{v.name}_int8", q, QuantParams(
                np.asarray([info.scale], np.float32), np.asarray([info.zp], np.int8), None, 8))
            self.info[id(qv)] = info
            return qv, info
        hit = self.qmap.get(id(v))
        if hit is not None:
            return hit, self.info[id(hit)]
        info = self.params(v.name)
        qv = self.int8_value(v, info)
        s, z = self.scalar(info, v.name)
        self.emit("QuantizeLinear", [v, s, z], [qv])
        self.qmap[id(v)] = qv
        return qv, info

    def float_output(self, old: Value, new: Value) -> None:
        """``new`` (float) takes the place and the name of ``old``."""
        old.replace_all_uses_with(new, self.graph)
        new.name = old.name

    # -- driver -------------------------------------------------------------
    def run(self) -> None:
        for node in list(self.graph.nodes):
            kind = self.kinds.get(id(node))
            if kind is None:
                continue
            self.anchor = node
            getattr(self, f"_lower_{kind}")(node)
            self.graph.insert_before(node, self._pending)
            self._pending = []
            self.graph.remove(node, safe=False)
            for out in node.outputs:
                out.producer = None
        self.anchor = None
        self._dequantize_readers()
        self.graph.meta.pop("_names", None)

    def _dequantize_readers(self) -> None:
        """A DequantizeLinear for each replaced float value something still reads."""
        for old, q in self.replaced:
            if old.producer is not None or not (old.uses or id(old) in self.outputs):
                continue
            info = self.info[id(q)]
            s, z = self.scalar(info, old.name)
            dq = Node("DequantizeLinear", [q, s, z], [old],
                      name=self.name(f"{old.name}_dequantize"))
            assert q.producer is not None
            self.graph.insert_after(q.producer, dq)

    def _int8_result(self, old: Value, q: Value) -> None:
        self.qmap[id(old)] = q
        self.replaced.append((old, q))

    def _wants_int8(self, v: Value) -> bool:
        """Whether an integer op reads ``v`` (or it is folded into one's range)."""
        return any(id(r) in self.kinds for r in v.consumers())

    def _clamp(self, q: Value, info: _QInfo, lo: float, hi: float) -> Value:
        """``q`` clipped to the int8 codes of ``[lo, hi]`` (no node when already implied)."""
        s, zp = float(info.scale), int(info.zp)
        qlo = -128 if lo == -math.inf else int(np.clip(np.rint(lo / s) + zp, -128, 127))
        qhi = 127 if hi == math.inf else int(np.clip(np.rint(hi / s) + zp, -128, 127))
        if qlo <= -128 and qhi >= 127:
            return q
        out = self.int8_value(q, info)
        self.emit("Clip", [q, self.const("clip_lo", np.asarray(qlo, np.int8)),
                           self.const("clip_hi", np.asarray(qhi, np.int8))], [out])
        return out

    # -- lowerings ----------------------------------------------------------
    def _weights(self, w: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
        """Symmetric int8 weights (codes, scale per slice along ``axis`` or per tensor)."""
        if self.opts.per_channel:
            other = tuple(i for i in range(w.ndim) if i != axis)
            top = np.abs(w).max(axis=other)
        else:
            top = np.full(w.shape[axis], np.abs(w).max())
        scale = np.where(top > 0, top / 127.0, 1.0).astype(np.float32)
        shape = [1] * w.ndim
        shape[axis] = -1
        codes = np.clip(np.rint(w / scale.reshape(shape)), -127, 127).astype(np.int8)
        return codes, scale

    def _bias32(self, b: np.ndarray | None, n: int, scale: np.ndarray) -> np.ndarray:
        bias = np.zeros(n, np.float64) if b is None else np.broadcast_to(
            b.astype(np.float64).reshape(-1), (n,))
        q = np.rint(bias / scale.astype(np.float64))
        return np.clip(q, -(2**31), 2**31 - 1).astype(np.int32)

    def _act_bounds(self, node: Node) -> tuple[float, float] | None:
        act = _act(node) if node.op in ("ConvAct", "MatMulAct") else node.op
        if act == "Relu":
            return 0.0, math.inf
        if act == "Clip":
            if node.op == "Clip":
                lo, hi = node.input(1), node.input(2)
                return (-math.inf if lo is None else float(lo.const.reshape(())),  # type: ignore[union-attr]
                        math.inf if hi is None else float(hi.const.reshape(())))  # type: ignore[union-attr]
            p = node.attrs.get("activation_params") or [-math.inf, math.inf]
            return float(p[0]), float(p[1])
        return None

    def _lower_conv(self, node: Node) -> None:
        x, w, b = node.input(0), node.input(1), node.input(2)
        assert x is not None and w is not None and w.const is not None
        xq, xi = self.quantized(x)
        wf = w.const.astype(np.float32)
        codes, ws = self._weights(wf, 0)
        acc_scale = xi.scale * ws
        bias = self._bias32(None if b is None else b.const, wf.shape[0], acc_scale)
        out = node.outputs[0]
        yi = self.out_params(node)
        zeros = np.zeros(wf.shape[0], np.int8)
        wv = self.const(f"{w.name}_int8", codes, QuantParams(ws, zeros, 0, 8))
        bv = self.const(f"{out.name}_bias_int32", bias,
                        QuantParams(acc_scale.astype(np.float32), np.zeros_like(bias), 0, 32))
        xs, xz = self.scalar(xi, x.name)
        ys, yz = self.scalar(yi, out.name)
        attrs = {k: node.attrs[k] for k in _CONV_ATTRS if k in node.attrs}
        yq = self.int8_value(out, yi)
        qconv = self.emit("QLinearConv", [xq, xs, xz, wv, self.const(f"{w.name}_scale", ws),
                                          self.const(f"{w.name}_zero_point", zeros), ys, yz, bv],
                          [yq], attrs)
        bounds = self._act_bounds(node)
        if bounds is not None:
            yq = self._clamp(yq, yi, *bounds)
        self._int8_result(out, yq)
        self.layers.append(Layer(
            qconv, "conv", xq, float(xi.scale), int(xi.zp), x.name, wf,
            codes.astype(np.float32) * ws.reshape(-1, *([1] * (wf.ndim - 1))), 8, acc_scale,
            {k: node.attr(k) for k in _CONV_ATTRS}))

    def _gemm_operands(self, node: Node) -> tuple[np.ndarray, np.ndarray | None]:
        """Weights as [K, N] and the bias as [N] (Gemm's alpha / beta folded in)."""
        w = node.input(1)
        b = node.input(2)
        assert w is not None and w.const is not None
        wf = w.const.astype(np.float32)
        bias = None if b is None else b.const.astype(np.float32)  # type: ignore[union-attr]
        if node.op == "Gemm":
            if node.attr("transB"):
                wf = wf.T
            wf = wf * np.float32(node.attr("alpha"))
            if bias is not None:
                bias = bias * np.float32(node.attr("beta"))
        if bias is not None:
            bias = np.broadcast_to(bias.reshape(-1), (wf.shape[1],)).astype(np.float32)
        return np.ascontiguousarray(wf), bias

    def _lower_gemm(self, node: Node) -> None:
        x, out = node.input(0), node.outputs[0]
        assert x is not None
        wf, bias = self._gemm_operands(node)
        n = wf.shape[1]
        xq, xi = self.quantized(x)
        codes, ws = self._weights(wf, 1)
        zeros = np.zeros(n, np.int8)
        wname = node.input(1).name  # type: ignore[union-attr]
        wv = self.const(f"{wname}_int8", codes, QuantParams(ws, zeros, 1, 8))
        wsv, wzv = self.const(f"{wname}_scale", ws), self.const(f"{wname}_zero_point", zeros)
        xs, xz = self.scalar(xi, x.name)
        rank2 = node.op == "Gemm" or x.rank == 2
        bounds = self._act_bounds(node)
        w_deq = codes.astype(np.float32) * ws
        if rank2:
            acc_scale = xi.scale * ws
            b32 = self._bias32(bias, n, acc_scale)
            bv = self.const(f"{out.name}_bias_int32", b32,
                            QuantParams(acc_scale.astype(np.float32), np.zeros_like(b32), 0, 32))
            if self._wants_int8(out):
                yi = self.out_params(node)
                ys, yz = self.scalar(yi, out.name)
                yq = self.int8_value(out, yi)
                gemm = self.emit("QGemm", [xq, xs, xz, wv, wsv, wzv, bv, ys, yz], [yq])
                if bounds is not None:
                    yq = self._clamp(yq, yi, *bounds)
                self._int8_result(out, yq)
            else:
                gemm = self.emit("QGemm", [xq, xs, xz, wv, wsv, wzv, bv],
                                 [self._float_like(out)])
                self._float_act(gemm.outputs[0], out, bounds)
            self.layers.append(Layer(gemm, "gemm", xq, float(xi.scale), int(xi.zp), x.name, wf,
                                     w_deq, 6, acc_scale))
            return
        bv = None if bias is None else self.const(f"{out.name}_bias", bias)
        gemm = self.emit("MatMulIntegerToFloat", [xq, wv, xs, wsv, xz, wzv, bv],
                         [self._float_like(out)])
        self._float_act(gemm.outputs[0], out, bounds)
        self.layers.append(Layer(gemm, "gemm", xq, float(xi.scale), int(xi.zp), x.name, wf,
                                 w_deq, 6, None))

    def _float_like(self, v: Value) -> Value:
        return Value(self.name(f"{v.name}_float"), F32, v.shape)

    def _float_act(self, y: Value, out: Value, bounds: tuple[float, float] | None) -> None:
        """``out`` := act(y) as a float op (Relu / Clip of a float-output matmul)."""
        if bounds is not None:
            lo, hi = bounds
            z = self._float_like(out)
            ins = [y, None if lo == -math.inf else self.const("clip_lo", np.float32(lo)),
                   None if hi == math.inf else self.const("clip_hi", np.float32(hi))]
            self.emit("Clip", ins, [z])
            y = z
        self.float_output(out, y)

    def _lower_matmul(self, node: Node) -> None:
        a, b = node.input(0), node.input(1)
        out = node.outputs[0]
        assert a is not None and b is not None
        aq, ai = self.quantized(a)
        bq, bi = self.quantized(b)
        as_, az = self.scalar(ai, a.name)
        bs, bz = self.scalar(bi, b.name)
        if self._wants_int8(out):
            yi = self.out_params(node)
            ys, yz = self.scalar(yi, out.name)
            yq = self.int8_value(out, yi)
            self.emit("QLinearMatMul", [aq, as_, az, bq, bs, bz, ys, yz], [yq])
            self._int8_result(out, yq)
            return
        y = self._float_like(out)
        self.emit("MatMulIntegerToFloat", [aq, bq, as_, bs, az, bz], [y])
        self.float_output(out, y)

    def _lower_binary(self, node: Node) -> None:
        a, b = node.input(0), node.input(1)
        out = node.outputs[0]
        assert a is not None and b is not None
        aq, ai = self.quantized(a)
        bq, bi = self.quantized(b)
        yi = self.out_params(node)
        yq = self.int8_value(out, yi)
        self.emit(f"QLinear{node.op}", [aq, *self.scalar(ai, a.name), bq,
                                        *self.scalar(bi, b.name), *self.scalar(yi, out.name)],
                  [yq])
        self._int8_result(out, yq)

    def _lower_passthrough(self, node: Node) -> None:
        x = node.input(0)
        assert x is not None
        xq, xi = self.quantized(x)
        outs = [self.int8_value(o, xi) for o in node.outputs]
        self.emit(node.op, [xq, *node.inputs[1:]], outs, dict(node.attrs))
        for old, q in zip(node.outputs, outs, strict=True):
            self._int8_result(old, q)

    def _lower_act(self, node: Node) -> None:
        x = node.input(0)
        assert x is not None
        xq, xi = self.quantized(x)
        bounds = self._act_bounds(node)
        assert bounds is not None
        self._int8_result(node.outputs[0], self._clamp(xq, xi, *bounds))

    def _lower_lut(self, node: Node) -> None:
        x, out = node.input(0), node.outputs[0]
        assert x is not None
        xq, xi = self.quantized(x)
        yi = self.out_params(node)
        yq = self.int8_value(out, yi)
        attrs = {"alpha": node.attr("alpha")} if node.op == "LeakyRelu" else {}
        self.emit(f"QLinear{node.op}", [xq, *self.scalar(xi, x.name), *self.scalar(yi, out.name)],
                  [yq], attrs)
        self._int8_result(out, yq)

    def _lower_gap(self, node: Node) -> None:
        x, out = node.input(0), node.outputs[0]
        assert x is not None
        xq, xi = self.quantized(x)
        yi = self.out_params(node)
        yq = self.int8_value(out, yi)
        self.emit("QLinearGlobalAveragePool",
                  [xq, *self.scalar(xi, x.name), *self.scalar(yi, out.name)], [yq],
                  {"format": node.attr("format")})
        self._int8_result(out, yq)

    def _lower_concat(self, node: Node) -> None:
        out = node.outputs[0]
        yi = self.out_params(node)
        parts: list[Value | None] = []
        for v in node.inputs:
            assert v is not None
            q, info = self.quantized(v)
            parts += [q, *self.scalar(info, v.name)]
        yq = self.int8_value(out, yi)
        self.emit("QLinearConcat", [*self.scalar(yi, out.name), *parts], [yq],
                  {"axis": node.attr("axis")})
        self._int8_result(out, yq)


# --------------------------------------------------------------------------- bias correction


def _tap_coverage(layer: Layer, spatial: tuple[int, ...]) -> np.ndarray:
    """Share of output positions at which each kernel tap reads inside the input."""
    kernel = layer.w_float.shape[2:]
    a = layer.attrs
    begin, _, out = resolve_pads(spatial, kernel, a.get("strides"), a.get("dilations"),
                                 a.get("pads"), a.get("auto_pad") or "NOTSET")
    strides = a.get("strides") or [1] * len(kernel)
    dil = a.get("dilations") or [1] * len(kernel)
    cover = np.ones(kernel)
    for d, k in enumerate(kernel):
        pos = np.arange(out[d])[:, None] * strides[d] - begin[d] + np.arange(k)[None, :] * dil[d]
        share = ((pos >= 0) & (pos < spatial[d])).mean(axis=0)
        shape = [1] * len(kernel)
        shape[d] = k
        cover = cover * share.reshape(shape)
    return cover


def _mean_output(layer: Layer, w: np.ndarray, mu: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Per-output-channel mean of the layer (bias excluded) for input channel means ``mu``."""
    if layer.kind == "gemm":
        return mu.astype(np.float64) @ w.astype(np.float64)
    nhwc = layer.attrs.get("format") == "NHWC"
    spatial = tuple(shape[1:-1] if nhwc else shape[2:])
    weff = (w.astype(np.float64) * _tap_coverage(layer, spatial)).reshape(*w.shape[:2], -1)
    weff = weff.sum(axis=2)  # [O, C/group]
    out_ch, per_group = weff.shape
    groups = max(int(layer.attrs.get("group") or 1), 1)
    mu_g = mu.reshape(groups, per_group)[np.arange(out_ch) // (out_ch // groups)]
    return (weff * mu_g).sum(axis=1)


def correct_biases(graph: Graph, layers: list[Layer], stats: Statistics) -> dict[str, Any]:
    """Shift each layer's bias by its mean float-vs-int8 output difference (module doc)."""
    shifts = []
    for ly in layers:
        fm = stats.channels.get(ly.x_name)
        if ly.node.graph is not graph or fm is None or fm.mean is None:
            continue
        shift = (_mean_output(ly, ly.w_float, fm.mean, fm.shape)
                 - _mean_output(ly, ly.w_deq, fm.mean, fm.shape))
        _apply_shift(graph, ly, shift)
        shifts.append(float(np.abs(shift).mean()))
    return {"layers": len(shifts), "mean_abs_shift": float(np.mean(shifts)) if shifts else 0.0}


def _apply_shift(graph: Graph, layer: Layer, shift: np.ndarray) -> None:
    node, i = layer.node, layer.bias_index
    old = node.input(i)
    n = shift.shape[0]
    if layer.bias_scale is not None:
        base = np.zeros(n, np.int64) if old is None else old.const.astype(np.int64)  # type: ignore[union-attr]
        step = np.rint(shift / layer.bias_scale.astype(np.float64)).astype(np.int64)
        new = np.clip(base + step, -(2**31), 2**31 - 1).astype(np.int32)
    else:
        base = np.zeros(n, np.float32) if old is None else old.const.astype(np.float32)  # type: ignore[union-attr]
        new = (base + shift).astype(np.float32)
    name = old.name if old is not None else f"{node.name}_bias"
    v = Value(graph.unique_name(f"{name}_corrected"), const=new)
    v.quant = old.quant if old is not None else None
    node.set_input(i, v)
