"""Per-layer comparison: every intermediate value of the `.ms` against the source model's.

``liteconv compare SOURCE MODEL.ms`` runs the source model in its reference runtime
(``converter.reference.<fmk>.run_all``: all intermediates, by name) and the `.ms` in the
executor (``Runtime(graph, observe=...)``: each node output as it is computed) on the
same inputs, and matches the values BY NAME:

- exact names first (front ends keep the source names; a fused node keeps the name of
  the value it ends with, e.g. a ConvAct the activation's output);
- a value the quantizer (``X_int8``) or the layout pass (``X_t``, in the other layout)
  derived from ``X`` stands for it when the graph has no value ``X``; int8/uint8/int16
  values with ``Value.quant`` are DEQUANTIZED with their quant params
  (``scale * (q - zero_point)``, per-axis honoured) before comparing. When the int8
  range starts at exactly 0 (a Relu folded into the producer's output clamp), the
  reference is clamped at 0 too (noted per row; a folded Clip's upper bound is not
  undone and shows as error);
- a shape that differs only by size-1 dims, or by NHWC vs NCHW, is reshaped/transposed
  (noted; an ``X_t`` value always is); any other shape difference is reported and the
  row left out of the verdict.

Per matched layer, in the topological order of the `.ms` graph: ``cosine`` (of the
flattened values), ``rel_error`` = ||got - ref||_2 / ||ref||_2 and ``max_abs``. A layer's
``input_cosine`` is the lowest cosine among its nearest matched producers (walking back
through unmatched values; graph inputs count as exact, constants are ignored).

The FIRST DIVERGING layer is the first whose cosine is below the threshold while its
input cosine is not: the error is born there. The largest single drop
(``input_cosine - cosine``) is reported as well: gradual int8 degradation shows there.
Graph outputs are checked against the threshold; any below it fails the comparison.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from converter.reference import NAMES as REFERENCE_NAMES
from converter.verify import make_inputs
from ir import Graph, Node, Value

__all__ = ["CompareReport", "LayerRow", "compare_model", "layer_metrics", "write_plot"]

_DERIVED = re.compile(r"^(?P<base>.+?)_(?P<tag>int8|t)(?:_\d+)?$")  # quantizer / layout names
_QUANT_DTYPES = (np.int8, np.uint8, np.int16, np.uint16)
# ops the fusions (passes/fusions) emit; a source model rarely holds them itself
_FUSED_OPS = frozenset({
    "ConvAct", "MatMulAct", "Swish", "LSTMMerged", "GRUMerged", "FusedMatMul", "FusedConv",
    "SkipLayerNormalization", "SkipSimplifiedLayerNormalization", "SimplifiedLayerNormalization",
    "BiasSoftmax", "MsAttention", "MsMultiHeadAttention", "Gelu", "FastGelu", "BiasGelu",
})  # fmt: skip
_INTEGER_OPS = ("QLinear", "QGemm", "QuantizeLinear", "MatMulIntegerToFloat", "DynamicQuantize")


@dataclass
class LayerRow:
    """One matched value: the `.ms` value ``name`` against the reference's ``ref_name``."""

    index: int  # position in the .ms graph's topological order
    name: str
    ref_name: str
    node: str
    op: str
    shape: list[int]
    ref_shape: list[int]
    dtype: str
    cosine: float
    rel_error: float
    max_abs: float
    input_cosine: float | None = None  # lowest cosine of the nearest matched producers
    inputs: list[str] = field(default_factory=list)  # those producers' value names
    output: bool = False
    note: str = ""

    @property
    def comparable(self) -> bool:
        return not math.isnan(self.cosine)

    @property
    def drop(self) -> float:
        """How much cosine this layer loses relative to its inputs."""
        base = 1.0 if self.input_cosine is None else self.input_cosine
        return base - self.cosine if self.comparable else 0.0


@dataclass
class CompareReport:
    source: str
    model: str
    reference: str
    threshold: float
    inputs: dict[str, dict[str, Any]]
    layers: list[LayerRow]
    values: int  # node outputs of the .ms main graph
    unmatched: list[str]  # "name (op)" of .ms values the reference has no value for
    reference_values: int
    first_diverging: LayerRow | None
    largest_drop: LayerRow | None
    failed_outputs: list[str]
    per_output_only: bool = False  # the reference gave graph outputs only

    @property
    def passed(self) -> bool:
        return not self.failed_outputs

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["matched"] = len(self.layers)
        d["passed"] = self.passed
        d["hint"] = self.hint()
        return d

    def to_json(self) -> str:
        """Strict JSON: NaN (not comparable) and infinities become null."""
        return json.dumps(_finite(self.to_dict()), indent=2, default=_json_default,
                          allow_nan=False)  # fmt: skip

    def lines(self, top: int | None = None) -> list[str]:
        """The per-layer table in topological order, then the verdict lines.

        ``top``: only the ``top`` layers with the largest cosine drop (still in order).
        """
        rows = self.layers
        if top is not None and top < len(rows):
            keep = {id(r) for r in sorted(rows, key=lambda r: -r.drop)[:top]}
            rows = [r for r in rows if id(r) in keep]
        first = self.first_diverging
        out = [f"{'#':>4} {'layer':<32} {'op':<18} {'cosine':>10} {'rel_err':>9} "
               f"{'max_abs':>9} {'in_cos':>10}  note"]  # fmt: skip
        for r in rows:
            mark = "<<" if first is not None and r is first else ""
            note = " ".join(x for x in (mark, "output" if r.output else "", r.note) if x)
            out.append(
                f"{r.index:>4} {r.name[:32]:<32} {r.op[:18]:<18} {_f(r.cosine, 10, 6)} "
                f"{_f(r.rel_error, 9, 3, 'g')} {_f(r.max_abs, 9, 3, 'g')} "
                f"{_f(r.input_cosine, 10, 6)}  {note}".rstrip()
            )
        out.extend(self.summary())
        return out

    def summary(self) -> list[str]:
        out = [f"matched {len(self.layers)} of {self.values} values of the .ms graph "
               f"({self.reference_values} reference values)"]  # fmt: skip
        if self.per_output_only:
            out.append(f"{self.reference} exposes graph outputs only: no per-layer values")
        if self.unmatched:
            shown = ", ".join(_short(u) for u in self.unmatched[:8])
            more = f", ... ({len(self.unmatched) - 8} more)" if len(self.unmatched) > 8 else ""
            out.append(f"unmatched: {shown}{more}")
        first = self.first_diverging
        if first is None:
            out.append(f"no layer below cosine {self.threshold}")
        else:
            ins = "n/a" if first.input_cosine is None else f"{first.input_cosine:.6f}"
            out.append(f"first diverging layer: {first.name} ({first.op}), cosine "
                       f"{first.cosine:.6f} (inputs {ins})")  # fmt: skip
        drop = self.largest_drop
        if drop is not None and drop is not first and drop.drop > 1e-7:
            out.append(f"largest drop: {drop.name} ({drop.op}), cosine {drop.cosine:.6f} "
                       f"(-{drop.drop:.3g})")  # fmt: skip
        hint = self.hint()
        if hint:
            out.append(f"hint: {hint}")
        return out

    def hint(self) -> str:
        """What to try about the first diverging layer."""
        r = self.first_diverging
        if r is None:
            return ""
        if r.dtype in ("int8", "uint8", "int16") or r.op.startswith(_INTEGER_OPS):
            keep = (f"keep it in float with skip_quant_node={_source_node(r.node, r.op)} in "
                    "[common_quant_param] of --configFile, or try another "
                    "activation_quant_method")  # fmt: skip
            if r.op == "QuantizeLinear":
                return f"the int8 range of this value is too coarse: {keep}"
            return f"{r.op} runs in integer arithmetic: {keep}"
        if r.op in _FUSED_OPS:
            return (f"{r.op} is a fusion: convert again with --optimize basic (or "
                    "--disable-pass with its family) to rule it out")  # fmt: skip
        if r.dtype == "float16":
            return "this layer computes in float16: convert with --fp16 auto or off"
        return (f"check the {r.op} kernel on this layer's inputs, and convert with "
                "--optimize basic / none to rule out a graph rewrite")  # fmt: skip


def _short(text: str, width: int = 60) -> str:
    return text if len(text) <= width else f"{text[: width // 2 - 2]}...{text[-(width // 2 - 1) :]}"


def _f(x: float | None, width: int, prec: int, kind: str = "f") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return f"{'-':>{width}}"
    return f"{x:>{width}.{prec}{kind}}"


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    raise TypeError(type(obj).__name__)


def _source_node(node: str, op: str) -> str:
    """The node name the quantizer started from (it names new nodes ``<node>_<op>``)."""
    suffix = f"_{op}"
    return node[: -len(suffix)] if node.endswith(suffix) and len(node) > len(suffix) else node


# -- metrics ----------------------------------------------------------------------------
def layer_metrics(got: np.ndarray, ref: np.ndarray) -> tuple[float, float, float, str]:
    """(cosine, relative L2 error, max |got - ref|, note) of two same-shape arrays."""
    g = np.asarray(got, np.float64).reshape(-1)
    r = np.asarray(ref, np.float64).reshape(-1)
    finite = np.isfinite(g) & np.isfinite(r)
    note = ""
    if not np.all(finite):
        same = np.array_equal(g[~finite], r[~finite], equal_nan=True)
        if not same:
            return 0.0, math.inf, math.inf, "NaN/Inf differ"
        g, r = g[finite], r[finite]
        note = "NaN/Inf match"
    if g.size == 0:
        return 1.0, 0.0, 0.0, note
    diff = g - r
    ng, nr, nd = (float(np.linalg.norm(a)) for a in (g, r, diff))
    if ng == 0.0 and nr == 0.0:
        cosine = 1.0
    elif ng == 0.0 or nr == 0.0:
        cosine = 0.0
    else:
        cosine = float(np.clip(np.dot(g, r) / (ng * nr), -1.0, 1.0))
    rel = nd / nr if nr > 0 else (0.0 if nd == 0 else math.inf)
    return cosine, rel, float(np.max(np.abs(diff))), note


def _dequantize(value: Value, arr: np.ndarray) -> tuple[np.ndarray, tuple[float, float] | None]:
    """Real values of an integer-coded tensor, and its representable range (lo, hi)."""
    q = value.quant
    if q is None or arr.dtype not in _QUANT_DTYPES:
        return arr, None
    scale = np.asarray(q.scale, np.float64).reshape(-1)
    zp = np.asarray(q.zero_point, np.float64).reshape(-1)
    if zp.size == 0:
        zp = np.zeros_like(scale)
    shape = [1] * arr.ndim
    if q.axis is not None and scale.size > 1 and arr.ndim:
        shape[q.axis % arr.ndim] = -1
    real = (arr.astype(np.float64) - zp.reshape(shape)) * scale.reshape(shape)
    info = np.iinfo(arr.dtype)
    if scale.size != 1:
        return real, None
    lo = float(scale[0] * (info.min - zp[0]))
    hi = float(scale[0] * (info.max - zp[0]))
    return real, (lo, hi)


def _align(got: np.ndarray, ref: np.ndarray, transposed: bool) -> tuple[np.ndarray | None, str]:
    """``got`` in ``ref``'s shape (squeezed dims, NHWC<->NCHW), or None.

    A ``transposed`` value (the layout pass's ``X_t``) is in the other layout even when
    its shape reads the same (C == H == W): of the layout permutations giving ``ref``'s
    shape, the one closest to ``ref`` is taken.
    """
    perms: list[tuple[tuple[int, ...], str]] = []
    if got.ndim == ref.ndim and got.ndim >= 3:
        perms = [((0, got.ndim - 1, *range(1, got.ndim - 1)), "NHWC vs NCHW"),
                 ((0, *range(2, got.ndim), 1), "NCHW vs NHWC")]  # fmt: skip
        perms = [(p, n) for p, n in perms if tuple(got.shape[a] for a in p) == ref.shape]
    if transposed and perms:
        best = max(perms, key=lambda pn: layer_metrics(got.transpose(pn[0]), ref)[0])
        return got.transpose(best[0]), best[1]
    if got.shape == ref.shape:
        return got, ""
    if got.size == ref.size and tuple(d for d in got.shape if d != 1) == tuple(
        d for d in ref.shape if d != 1
    ):
        return got.reshape(ref.shape), ""
    if perms:
        return got.transpose(perms[0][0]), perms[0][1]
    return None, f"shape {list(got.shape)} vs reference {list(ref.shape)}"


# -- matching ---------------------------------------------------------------------------
def _derived_from(name: str) -> tuple[str, set[str]]:
    """``X_int8`` / ``X_t`` (also stacked, ``_N``-uniquified) -> ("X", {"int8", "t"})."""
    tags: set[str] = set()
    while (m := _DERIVED.match(name)) is not None:
        name = m["base"]
        tags.add(m["tag"])
    return name, tags


def _match_names(graph: Graph, ref: Mapping[str, Any]) -> tuple[dict[int, str], set[int]]:
    """value id -> reference name for the main graph's node outputs; ids in another layout.

    Exact names first; a value the quantizer (``X_int8``) or the layout pass (``X_t``,
    NHWC/NCHW-transposed) derived from ``X`` stands for it when no .ms value is ``X``.
    """
    produced = [v for n in graph.nodes for v in n.outputs]
    names = {v.name for v in produced}
    out: dict[int, str] = {}
    transposed: set[int] = set()
    for v in produced:
        if v.name in ref:
            out[id(v)] = v.name
            continue
        base, tags = _derived_from(v.name)
        if tags and base in ref and base not in names:
            out[id(v)] = base
            if "t" in tags:
                transposed.add(id(v))
    return out, transposed


class _Collector:
    """The observer: compares each matched value as the executor computes it."""

    def __init__(
        self,
        graph: Graph,
        ref: Mapping[str, np.ndarray],
        names: dict[int, str],
        transposed: set[int],
    ) -> None:
        self.ref = ref
        self.names = names
        self.transposed = transposed
        self.order = {id(v): i for i, v in enumerate(v for n in graph.nodes for v in n.outputs)}
        self.rows: dict[int, LayerRow] = {}

    def __call__(self, value: Value, arr: np.ndarray) -> None:
        ref_name = self.names.get(id(value))
        if ref_name is None:
            return
        ref = np.asarray(self.ref[ref_name])
        real, rng = _dequantize(value, np.asarray(arr))
        node = value.producer
        row = LayerRow(
            index=self.order[id(value)], name=value.name, ref_name=ref_name,
            node=node.name if node else "", op=node.op if node else "",
            shape=list(np.shape(arr)), ref_shape=list(ref.shape),
            dtype=str(np.asarray(arr).dtype), cosine=math.nan, rel_error=math.nan,
            max_abs=math.nan,
        )  # fmt: skip
        if real.dtype.kind not in "biufc" or ref.dtype.kind not in "biufc":
            equal = real.shape == ref.shape and bool(np.all(real == ref))
            row.cosine, row.rel_error, row.max_abs = (1.0, 0.0, 0.0) if equal else (0.0, 1.0, 0.0)
            self.rows[id(value)] = row
            return
        aligned, note = _align(real, ref, id(value) in self.transposed)
        notes = [note] if note else []
        if aligned is not None:
            target = ref
            if rng is not None and rng[0] == 0.0 and np.any(ref < 0):
                target = np.maximum(ref, 0)
                notes.append("int8 range starts at 0: reference clamped at 0")
            row.cosine, row.rel_error, row.max_abs, extra = layer_metrics(aligned, target)
            notes.append(extra)
        row.note = "; ".join(n for n in notes if n)
        self.rows[id(value)] = row


def _upstream(graph: Graph, matched: dict[int, LayerRow]) -> Callable[[Node], list[Value]]:
    """The nearest matched (or graph input) values a node reads, through unmatched ones."""
    inputs = {id(v) for v in graph.inputs}
    memo: dict[int, list[Value]] = {}

    def of_value(v: Value) -> list[Value]:
        if v.is_const:
            return []
        if id(v) in matched or id(v) in inputs:
            return [v]
        if id(v) in memo:
            return memo[id(v)]
        memo[id(v)] = []  # cycle guard (there should be none)
        found = of_node(v.producer) if v.producer is not None else []
        memo[id(v)] = found
        return found

    def of_node(node: Node) -> list[Value]:
        seen: dict[int, Value] = {}
        for v in node.inputs:
            if v is not None:
                for u in of_value(v):
                    seen.setdefault(id(u), u)
        return list(seen.values())

    return of_node


# -- driver -----------------------------------------------------------------------------
def compare_model(
    graph: Graph,
    source: str | Path,
    fmk: str,
    model_path: str | Path,
    threshold: float = 0.999,
    feeds: Mapping[str, np.ndarray] | None = None,
    seed: int = 0,
    **reference_options: Any,
) -> CompareReport:
    """Run both models on the same inputs and compare every value matched by name."""
    from converter.executor.runtime import Runtime
    from converter.reference import run_reference_all

    inputs = make_inputs(graph.inputs, seed=seed, feeds=feeds)
    ref = dict(run_reference_all(source, fmk, inputs, **reference_options))
    for name, arr in inputs.items():
        ref.setdefault(name, arr)
    names, transposed = _match_names(graph, ref)
    collect = _Collector(graph, ref, names, transposed)
    Runtime(graph, observe=collect).run(inputs)
    rows = sorted(collect.rows.values(), key=lambda r: r.index)
    _link_inputs(graph, collect.rows)
    for v in graph.outputs:
        if id(v) in collect.rows:
            collect.rows[id(v)].output = True
    failed = _failed_outputs(graph, collect.rows, ref, inputs, threshold)
    produced = [v for n in graph.nodes for v in n.outputs]
    unmatched = [f"{v.name} ({v.producer.op})" for v in produced
                 if id(v) not in names and v.producer is not None]  # fmt: skip
    boundary = set(inputs) | {v.name for v in graph.outputs}
    return CompareReport(
        source=str(source),
        model=str(model_path),
        reference=REFERENCE_NAMES.get(fmk.upper(), fmk),
        threshold=threshold,
        inputs={k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in inputs.items()},
        layers=rows,
        values=len(produced),
        unmatched=unmatched,
        reference_values=len(ref),
        first_diverging=_first_diverging(rows, threshold),
        largest_drop=max((r for r in rows if r.comparable), key=lambda r: r.drop, default=None),
        failed_outputs=failed,
        per_output_only=not set(ref) - boundary and len(produced) > len(graph.outputs),
    )


def _failed_outputs(
    graph: Graph,
    rows: Mapping[int, LayerRow],
    ref: Mapping[str, np.ndarray],
    inputs: Mapping[str, np.ndarray],
    threshold: float,
) -> list[str]:
    """Graph outputs below the threshold, each with the reason when it is not the cosine."""
    failed = []
    for v in graph.outputs:
        row = rows.get(id(v))
        if row is None and v.producer is None and v.name in ref:  # an input or a constant
            got = inputs.get(v.name, v.const)
            if got is not None and np.shape(got) == np.shape(ref[v.name]):
                if layer_metrics(got, ref[v.name])[0] >= threshold:
                    continue
        if row is None:
            why = "no reference value" if v.name not in ref else "not computed"
            failed.append(f"{v.name} ({why})")
        elif not row.comparable:
            failed.append(f"{v.name} ({row.note})")
        elif row.cosine < threshold:
            failed.append(v.name)
    return failed


def _link_inputs(graph: Graph, rows: dict[int, LayerRow]) -> None:
    upstream = _upstream(graph, rows)
    for node in graph.nodes:
        mine = [rows[id(v)] for v in node.outputs if id(v) in rows]
        if not mine:
            continue
        ups = upstream(node)
        cos = [rows[id(u)].cosine if id(u) in rows else 1.0 for u in ups]
        cos = [c for c in cos if not math.isnan(c)]
        for row in mine:
            row.inputs = [u.name for u in ups]
            row.input_cosine = min(cos) if cos else None


def _first_diverging(rows: list[LayerRow], threshold: float) -> LayerRow | None:
    for r in rows:
        if not r.comparable or r.cosine >= threshold:
            continue
        if r.input_cosine is None or r.input_cosine >= threshold:
            return r
    return None


# -- plot ---------------------------------------------------------------------------------
def write_plot(report: CompareReport, path: str | Path) -> None:
    """Cosine and relative error per layer (topological order) as a PNG (matplotlib, Agg)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        from converter.errors import UsageError

        raise UsageError("--plot needs matplotlib: pip install liteconv[plot]") from None
    rows = [r for r in report.layers if r.comparable]
    x = list(range(len(rows)))
    fig = Figure(figsize=(max(8.0, min(40.0, 0.25 * len(rows))), 6.0), layout="constrained")
    FigureCanvasAgg(fig)
    ax, ax_err = fig.subplots(2, 1, sharex=True)
    ax.plot(x, [r.cosine for r in rows], marker=".", label="cosine")
    ax.axhline(report.threshold, color="tab:red", linestyle="--", linewidth=1,
               label=f"threshold {report.threshold}")  # fmt: skip
    ax.set_ylabel("cosine similarity")
    ax.set_title(f"{Path(report.model).name} vs {report.reference} ({Path(report.source).name})")
    rel = [r.rel_error if math.isfinite(r.rel_error) else np.nan for r in rows]
    ax_err.plot(x, [max(e, 1e-12) for e in rel], marker=".", color="tab:orange")
    ax_err.set_yscale("log")
    ax_err.set_ylabel("relative L2 error")
    ax_err.set_xlabel("layer (topological order)")
    first = report.first_diverging
    at = [i for i, r in enumerate(rows) if r is first]
    if first is not None and at:
        i = at[0]
        for a in (ax, ax_err):
            a.axvline(i, color="tab:red", alpha=0.4)
        ax.annotate(f"{first.name} ({first.op})", (i, first.cosine), fontsize=8,
                    xytext=(5, -12), textcoords="offset points")  # fmt: skip
    if len(rows) <= 60:
        ax_err.set_xticks(x, [r.name[:24] for r in rows], rotation=90, fontsize=6)
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(alpha=0.3)
    ax_err.grid(alpha=0.3)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100)
