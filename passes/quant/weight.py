"""Weight-only quantization (``quant_type=WEIGHT_QUANT``): 1-16 bit codes, no data needed.

What is quantized
-----------------
The constant float weights of Conv / ConvTranspose / ConvAct / FusedConv (input W),
MatMul / MatMulAct / Gemm / FusedMatMul (input B), MsAttention (packed QKV
weights), LSTM / GRU / RNN and their merged-output forms (inputs W and R) and
Gather tables (input data, rank >= 2), unless the tensor has fewer than
``min_quant_weight_size`` elements or fewer than ``min_quant_weight_channel``
channels, a consumer is named in ``skip_quant_node``, it already carries
quantization parameters, or it is not float. ``min_quant_weight_channel``
defaults to 16 (MindSpore Lite's), except under mixed-bit auto_tune (``bit_num=0``,
``auto_tune=true``), where it applies only when set: auto_tune measures each
tensor's cost and effect and takes one scale per tensor where per-channel
QuantParams would cost more than they save. Mixed-bit auto_tune also quantizes the
1-D float biases (:data:`BIAS_INPUTS`) of the nodes whose weights it quantizes,
one scale per tensor, in the same search (not with ``bias_correction``, which
rewrites them afterwards): on PP-OCR's direction classifier (0.53 MB) float biases
and few-channel weights took as many bytes as the quantized weights. Otherwise
biases and everything else stay float. The quantization axis (one scale per slice,
``per_channel=true``) is the output channel: axis 0 of Conv weights (OIHW), axis 1
of ConvTranspose (IOHW) and of LSTM/GRU/RNN weights ([dirs, gates*hidden, in]),
the last axis of MatMul B, Gemm B's N axis (0 when ``transB``), and the last (hidden) axis of Gather
tables (per row would store one QuantParam per vocabulary entry).

Codes, for ``b`` bits (``q`` signed, ``real = scale[c] * (q - zero_point[c])``)
-----------------------------------------------------------------------------
* symmetric (``symmetric=true``, default): ``scale = max|w| / (2**(b-1) - 1)``,
  ``zero_point = 0``, ``q`` in ``[-(2**(b-1) - 1), 2**(b-1) - 1]`` (narrow range);
* asymmetric: the range ``[min(w, 0), max(w, 0)]`` mapped onto
  ``[-2**(b-1), 2**(b-1) - 1]`` with an integer zero point (zero stays exact).
  1-bit weights always use this grid (a symmetric 1-bit grid has no levels);
* k-means (``kmeans=true``, ``b <= 8``): a codebook of ``2**b`` centroids
  (passes/quant/kmeans.py: the optimal 1-D codebook of a histogram, refined
  by Lloyd's iterations) over the weights divided by their per-channel
  ``max|w|`` (fitted on at most :data:`_KMEANS_SAMPLE` of them);
  ``real = scale[c] * clusters[q + 2**(b-1)]``, the codebook stored in
  ``Tensor.quantClusters``. Wider codes use the grid.

GPTQ rounding (``rounding=gptq``, a liteconv key of ``[weight_quant_param]``)
-----------------------------------------------------------------------------
With calibration data (``tune_feeds``, up to :data:`GPTQ_SAMPLES`) and a fixed
``bit_num`` or ``auto_tune``, Conv / ConvAct / FusedConv / MatMul / MatMulAct /
FusedMatMul / Gemm weights get their codes from GPTQ (passes/quant/gptq.py):
same code conventions, a grid clipped per channel, and each input column's
rounding error compensated by the columns not yet rounded, weighted by the
layer's input covariance ``H``. auto_tune then ranks each such tensor's options
by its output error ``tr(dW H dW^T)`` rather than weight error (GPTQ trades the
one for the other). A layer that saw fewer than 1/:data:`GPTQ_MIN_ROW_RATIO` input
rows per input column keeps round-to-nearest: GPTQ would fit the calibration
samples' noise. Other
weights, ``init_scale`` mixed bits and k-means keep round-to-nearest (the
report's ``notes`` say so; ``gptq`` counts the layers each way).

Layer by layer (``gptq_sequential=true``, the default): with a fixed ``bit_num``
each layer's ``H`` comes from the graph whose earlier layers are already
quantized, and its codes approximate the float layer's *outputs* on those
inputs (gptq.quantize_sequentially, gptq.asymmetric_target), so each layer
makes up for the error upstream instead of adding to it (at 4 bits PP-OCRv4
rec's held-out output cosine goes from 0.949 to 0.973). auto_tune needs every
option's codes before the bits are known, so its search keeps the one-pass
``H``; its pick is then re-rounded layer by layer, measured on the same tuning
inputs and kept only when not worse, and the slack that frees is spent on up
to :data:`TUNE_SEQUENTIAL_ROUNDS` smaller allocations, each re-rounded layer by
layer (the report's ``auto_tune.sequential``; trials marked ``sequential``).
``gptq_sequential=false``: every ``H`` from the float graph in one pass.

Mixed bit (``bit_num=0``)
-------------------------
Each weight gets the lowest ``b`` in 2..16 (searched by bisection; the error
falls as ``b`` grows) whose relative reconstruction error
``||w - dequant(q)|| / ||w||`` is at most the target ``init_scale``. For a
Gaussian-like tensor on the symmetric grid the error is about
``2.6 / (2**b - 2)``, so the default 0.02 gives 7 bits and 0.04-0.08 give 6-5 bits;
entropy coding (``enable_encode``) then stores roughly ``b - 1.5`` bits per weight.

auto_tune: bits by measured output sensitivity
----------------------------------------------
``auto_tune=true`` allocates bits to meet an output target instead of a weight
error: every float output (for an output made by Softmax or LogSoftmax, its
logits) must keep a cosine similarity of at least
``target_cosine`` (a liteconv key of ``[mixed_bit_weight_quant_param]``, default
:data:`AUTO_TUNE_COSINE`) against the float graph, run by the executor on the
calibration samples when the config names them (``[data_preprocess_param]``,
the first :data:`TUNE_SAMPLES`), else on two seeded random inputs
(``converter.verify.make_inputs``, seeds :data:`TUNE_SEEDS`). Random inputs
suit random-weight models; a trained model's sensitivity shows on its own data.

1. *Options.* Each tensor is quantized every way the search may pick: the
   uniform grid at :data:`TUNE_BITS` bits and k-means codebooks at
   :data:`TUNE_KMEANS_BITS` bits, each with one scale per channel and one per
   tensor (per channel only with ``per_channel=true``). Each option has its
   squared weight error and its stored size (:func:`stored_bytes`: the codes as
   the writer stores them, ANS-coded at their order-0 entropy where that wins,
   plus :data:`QUANT_PARAM_BYTES` per QuantParam and the codebook). Options that
   are both larger and less accurate than another are dropped.
2. *Sensitivity.* Tensor ``i`` alone is quantized at :data:`PROBE_BITS` bits and
   the graph run: ``s_i = (1 - worst output cosine) / ||w_i - dequant||^2``. For
   small independent errors ``1 - cosine`` adds up over tensors, so an
   allocation's output error is predicted as ``sum_i s_i * err_i``. This is
   where first, last and otherwise sensitive layers earn their extra bits.
3. *Allocation.* Each tensor takes the option minimizing
   ``bytes + lam * s_i * err``; ``lam`` is bisected so that the predicted error
   meets the budget (initially ``1 - target_cosine``) with the fewest bytes.
4. *Check.* The allocation runs on the tuning inputs; the budget is rescaled
   by ``allowed / measured`` (bisected geometrically once one budget met the
   target and one did not) and steps 3-4 repeat (at most ``max_iterations``,
   capped at :data:`TUNE_MAX_ROUNDS`) until the measured error lies within 10%
   below the allowed one. The smallest allocation that met the target wins
   (if none did, the most accurate one tried; the report says ``met: false``;
   ``chosen`` is the index of the winning trial).

With ``bit_num=N`` (1..16) and ``auto_tune=true`` the width stays ``N`` and the
search only picks, per tensor, one scale per channel or one per tensor: a
QuantParam costs :data:`QUANT_PARAM_BYTES` in the ``.ms``, so per-channel scales
on short rows (depthwise 3x3: 9 codes a row) can cost more than the codes.

IR representation
-----------------
The quantized Value keeps a FLOAT constant equal to the dequantized weights
(so passes and kernels run unchanged), ``Value.quant = QuantParams(scale,
zero_point, axis, num_bits)``, ``meta["quant_codes"]`` (int8/int16 codes),
``meta["quant_clusters"]`` (k-means codebook) and ``meta["quant_encode"]``
(``enable_encode``). The ``.ms`` writer stores the codes, packed and entropy
coded (converter/ms/codec.py, docs/format.md).
"""

from __future__ import annotations

import csv
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from converter.ms.codec import (
    RAW_MIN_GAIN,
    code_dtype,
    dequantize,
    entropy_bound_bytes,
    lcz_size_estimate,
)
from ir import DataType, Graph, Node, QuantParams, Value
from passes.quant import kmeans

__all__ = [
    "AUTO_TUNE_COSINE",
    "Quantized",
    "choose_bits",
    "entropy_bytes",
    "find_weights",
    "quantize_tensor",
    "quantize_weights",
    "stored_bytes",
    "tuned_outputs",
]

logger = logging.getLogger(__name__)

AUTO_TUNE_COSINE = 0.995
"""auto_tune's default output cosine target (``target_cosine`` in mixed_bit overrides it)."""
QUANT_PARAM_BYTES = 20
"""Bytes one QuantParam table costs in the ``.ms`` (scale, numBits, inited, vector slot)."""
PROBE_BITS = 3
TUNE_SEEDS = (0, 1)
TUNE_SAMPLES = 4
"""Calibration samples auto_tune runs on when the config gives a calibrate_path."""
GPTQ_MIN_ROW_RATIO = 8
"""GPTQ applies to a layer whose calibration rows times this reach its input columns."""
GPTQ_SAMPLES = 16
"""Calibration samples GPTQ (and bias correction) estimate input statistics from; auto_tune
measures output error on the first TUNE_SAMPLES of them."""
TUNE_BITS = (2, 3, 4, 5, 6, 7, 8, 16)
TUNE_KMEANS_BITS = (2, 3, 4)
TUNE_MAX_ROUNDS = 16
TUNE_SEQUENTIAL_ROUNDS = 6
"""Allocations auto_tune re-rounds layer by layer after its search, beyond the chosen one."""
CLIFF_FACTOR = 4.0
"""A trial whose measured output error exceeds its prediction this many times over marks
its newly lowered tensors as more sensitive than their probe showed."""
CLIFF_FLIP_FACTOR = 8.0
"""...by the measured over the predicted error, but by at most this much when the output
turned away from the reference (cosine below 0: PP-OCR cls's 2-class logits flipping
sign, where 0.9997 was predicted). Such an error says that the output flipped, not how
much the lowered tensors matter, and inflating by it (thousands) sent the rest of the
search to allocations far larger than needed (auto@0.995: 5.92x, now 8.94x; see
docs/results.md). A cliff that stays is met again and inflates again. Capping every cliff
instead slowed PP-OCR rec's search (auto@0.995 1.93 MB -> 2.05 MB)."""
_FLOATS = (DataType.FLOAT, DataType.FLOAT16, DataType.DOUBLE, DataType.BFLOAT16)
_KMEANS_MAX_BITS = 8
_KMEANS_SAMPLE = 1 << 16


def _last(node: Node, w: np.ndarray) -> int:
    return w.ndim - 1


def _gemm_b(node: Node, w: np.ndarray) -> int:
    return 0 if node.attr("transB") else 1


def _fused_matmul_b(node: Node, w: np.ndarray) -> int:
    return w.ndim - 2 if node.attr("transB") else w.ndim - 1


# op -> ((input index, axis of the output channel), ...)
WEIGHT_INPUTS: dict[str, tuple[tuple[int, Callable[[Node, np.ndarray], int]], ...]] = {
    "Conv": ((1, lambda n, w: 0),),
    "ConvAct": ((1, lambda n, w: 0),),
    "ConvTranspose": ((1, lambda n, w: 1),),
    "MatMul": ((1, _last),),
    "MatMulAct": ((1, _last),),
    "Gemm": ((1, _gemm_b),),
    "FusedConv": ((1, lambda n, w: 0),),
    "FusedMatMul": ((1, _fused_matmul_b),),
    "MsAttention": ((1, _last),),
    "LSTM": ((1, lambda n, w: 1), (2, lambda n, w: 1)),
    "LSTMMerged": ((1, lambda n, w: 1), (2, lambda n, w: 1)),
    "GRU": ((1, lambda n, w: 1), (2, lambda n, w: 1)),
    "GRUMerged": ((1, lambda n, w: 1), (2, lambda n, w: 1)),
    "RNN": ((1, lambda n, w: 1), (2, lambda n, w: 1)),
    "Gather": ((0, _last),),
}


@dataclass
class Quantized:
    """One quantized tensor: codes, the float weights they stand for, and parameters."""

    codes: np.ndarray
    dequant: np.ndarray
    scale: np.ndarray  # float32, one per channel (one entry when per tensor)
    zero_point: np.ndarray  # int32, same length
    axis: int | None
    bits: int
    clusters: np.ndarray | None
    rel_error: float


# -- one tensor ----------------------------------------------------------------------------
def _channels(w: np.ndarray, axis: int | None) -> np.ndarray:
    """``w`` as [channels, elements] (one row when per tensor), float32."""
    w32 = np.asarray(w, dtype=np.float32)
    if axis is None:
        return w32.reshape(1, -1)
    return np.moveaxis(w32, axis, 0).reshape(w32.shape[axis], -1)


def _back(rows: np.ndarray, shape: tuple[int, ...], axis: int | None) -> np.ndarray:
    if axis is None:
        return rows.reshape(shape)
    moved = (shape[axis], *shape[:axis], *shape[axis + 1 :])
    return np.moveaxis(rows.reshape(moved), 0, axis)


def _grid(rows: np.ndarray, bits: int, symmetric: bool) -> tuple[np.ndarray, ...]:
    """Per-row scale (float32), zero point (int32) and codes on the uniform grid."""
    if symmetric and bits >= 2:
        qmax = (1 << (bits - 1)) - 1
        qmin = -qmax
        scale = (np.abs(rows).max(axis=1) / qmax).astype(np.float32)
        scale[scale == 0] = 1.0
        zp = np.zeros(rows.shape[0], dtype=np.int32)
    else:
        qmin, qmax = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        lo = np.minimum(rows.min(axis=1), 0.0)
        hi = np.maximum(rows.max(axis=1), 0.0)
        scale = ((hi - lo) / (qmax - qmin)).astype(np.float32)
        scale[scale == 0] = 1.0
        zp = np.clip(np.round(qmin - lo / scale), qmin, qmax).astype(np.int32)
    q = np.round(rows / scale[:, None]) + zp[:, None]
    codes = np.clip(q, qmin, qmax).astype(code_dtype(bits))
    return scale, zp, codes


def _kmeans(rows: np.ndarray, bits: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Per-row scale max|w|, shared codebook (sorted float32) and codes."""
    scale = np.abs(rows).max(axis=1).astype(np.float32)
    scale[scale == 0] = 1.0
    x = (rows / scale[:, None]).reshape(-1)
    k = 1 << bits
    sample = x
    if x.size > _KMEANS_SAMPLE:
        sample = np.random.default_rng(seed).choice(x, _KMEANS_SAMPLE, replace=False)
    centers = kmeans.codebook(sample, k)
    if centers.size < k:  # fewer distinct values than levels: repeat the last one
        centers = np.pad(centers, (0, k - centers.size), mode="edge")
    centers = np.sort(centers).astype(np.float32)
    idx = np.searchsorted((centers[1:] + centers[:-1]) / 2, x)
    codes = (idx - (1 << (bits - 1))).astype(code_dtype(bits)).reshape(rows.shape)
    return scale, np.zeros(rows.shape[0], dtype=np.int32), codes, centers


def quantize_tensor(
    w: np.ndarray,
    axis: int | None,
    bits: int,
    *,
    symmetric: bool = True,
    kmeans: bool = False,
) -> Quantized:
    """Quantize ``w`` to ``bits``-bit codes per slice along ``axis`` (None: per tensor)."""
    if not 1 <= bits <= 16:
        raise ValueError(f"bit_num must be 1..16, not {bits}")
    rows = _channels(w, axis)
    clusters = None
    if kmeans and bits <= _KMEANS_MAX_BITS:
        scale, zp, codes, clusters = _kmeans(rows, bits)
    else:
        scale, zp, codes = _grid(rows, bits, symmetric)
    codes = _back(codes, w.shape, axis)
    dq = dequantize(codes, scale, zp, axis, bits, w.dtype, clusters)
    ref = np.asarray(w, dtype=np.float64)
    norm = float(np.linalg.norm(ref))
    err = float(np.linalg.norm(ref - dq.astype(np.float64)))
    rel = err / norm if norm > 0 else 0.0
    return Quantized(codes, dq, scale, zp, axis, bits, clusters, rel)


def choose_bits(
    w: np.ndarray,
    axis: int | None,
    target: float,
    *,
    symmetric: bool = True,
    kmeans: bool = False,
    low: int = 2,
    high: int = 16,
) -> Quantized:
    """The quantization with the fewest bits in [low, high] whose relative error <= target."""
    best: Quantized | None = None
    lo, hi = low, high
    while lo <= hi:
        mid = (lo + hi) // 2
        q = quantize_tensor(w, axis, mid, symmetric=symmetric, kmeans=kmeans)
        if q.rel_error <= target:
            best, hi = q, mid - 1
        else:
            lo = mid + 1
    if best is None:
        best = quantize_tensor(w, axis, high, symmetric=symmetric, kmeans=kmeans)
    return best


# -- which tensors ---------------------------------------------------------------------------
@dataclass
class WeightSite:
    value: Value
    axis: int  # output-channel axis
    op: str
    nodes: list[str]
    bias: bool = False  # a bias mixed-bit auto_tune quantizes (one scale per tensor)


def find_weights(
    graph: Graph,
    *,
    min_size: int = 0,
    min_channel: int = 16,
    skip_nodes: list[str] | tuple[str, ...] = (),
    biases: bool = False,
) -> tuple[list[WeightSite], dict[str, list[str]]]:
    """Quantizable weights (first consumer decides the axis) and skipped ones by reason.

    ``biases``: also the 1-D float bias (:data:`BIAS_INPUTS`) of every node whose
    weight is quantized, listed after the weights (mixed-bit auto_tune's sites).
    """
    sites: dict[int, WeightSite] = {}
    skipped: dict[str, list[str]] = {}
    blocked: set[int] = set()
    skip = set(skip_nodes)

    def drop(reason: str, v: Value) -> None:
        blocked.add(id(v))
        sites.pop(id(v), None)
        if v.name not in skipped.setdefault(reason, []):
            skipped[reason].append(v.name)

    for node in graph.all_nodes():
        for index, axis_of in WEIGHT_INPUTS.get(node.op, ()):
            v = node.inputs[index] if index < len(node.inputs) else None
            if v is None or v.const is None or id(v) in blocked:
                continue
            w = v.const
            if v.dtype not in _FLOATS or v.quant is not None or w.ndim < 2:
                continue
            if node.name in skip:
                drop("skip_quant_node", v)
                continue
            axis = axis_of(node, w)
            if w.size < min_size:
                drop("min_quant_weight_size", v)
            elif w.shape[axis] < min_channel:
                drop("min_quant_weight_channel", v)
            elif id(v) in sites:
                sites[id(v)].nodes.append(node.name)
            else:
                sites[id(v)] = WeightSite(v, axis, node.op, [node.name])
    weights = list(sites.values())
    if biases:
        for s in weights:
            for node in s.value.consumers():
                b = _bias_of(node)
                if b is None or id(b) in blocked or b.quant is not None or b.const.size < min_size:
                    continue
                if id(b) in sites:
                    if node.name not in sites[id(b)].nodes:
                        sites[id(b)].nodes.append(node.name)
                else:
                    sites[id(b)] = WeightSite(b, 0, node.op, [node.name], bias=True)
    return list(sites.values()), skipped


BIAS_INPUTS = {"Conv": 2, "ConvAct": 2, "ConvTranspose": 2, "FusedConv": 2, "MatMulAct": 2,
               "Gemm": 2}  # fmt: skip
"""Ops whose 1-D bias input mixed-bit auto_tune quantizes along with their weight."""


def _bias_of(node: Node) -> Value | None:
    """``node``'s constant 1-D float bias, if it has one."""
    i = BIAS_INPUTS.get(node.op)
    b = node.inputs[i] if i is not None and i < len(node.inputs) else None
    if b is None or b.const is None or b.const.ndim != 1 or b.dtype not in _FLOATS:
        return None
    return b


# -- stored size ---------------------------------------------------------------------------------
def entropy_bytes(codes: np.ndarray, bits: int) -> float:
    """Order-0 entropy of ``codes`` times their count, in bytes (``bits``-bit codes; the
    bound :func:`converter.ms.codec.entropy_bound_bytes` reports for the written file)."""
    code_dtype(bits)  # a width codes can have
    return entropy_bound_bytes(codes)


def stored_bytes(q: Quantized, encode: bool = True) -> float:
    """Bytes the ``.ms`` writer spends on ``q``: codes in their stored form, QuantParams, codebook.

    The codes follow ``converter.ms.codec.encode_codes``: 8/16 bits raw, other widths
    bit-packed, or entropy coded (``codec.lcz_size_estimate``) when that is smaller
    (for 8/16 bits, by at least ``codec.RAW_MIN_GAIN``).
    """
    n, b = q.codes.size, q.bits
    data = float(n * b + 7) // 8
    if encode and n:
        coded = lcz_size_estimate(q.codes, b)
        if b not in (8, 16) or coded <= (1 - RAW_MIN_GAIN) * data:
            data = min(data, coded)
    extra = 4 * q.clusters.size if q.clusters is not None else 0
    return data + QUANT_PARAM_BYTES * q.scale.size + extra


# -- the pass ---------------------------------------------------------------------------------
def quantize_weights(
    graph: Graph,
    say: Callable[[str], None] = lambda _msg: None,
    *,
    common: dict[str, Any],
    mixed_bit: dict[str, Any],
    weight: dict[str, Any],
    tune_feeds: list[dict[str, np.ndarray]] | None = None,
) -> dict[str, Any]:
    """Quantize the graph's weights in place (see the module docstring); returns the report.

    ``tune_feeds``: the inputs auto_tune measures output cosine on (seeded random
    inputs when None).
    """
    bits = int(common.get("bit_num", 8))
    if not 0 <= bits <= 16:
        raise ValueError(f"bit_num={bits}: must be 0 (mixed bit) or 1..16")
    # mixed-bit auto_tune measures what every tensor costs and does to the outputs, so
    # it needs no channel-count rule of thumb (unless one is set) and takes biases too
    mixed_auto = bits == 0 and bool(mixed_bit.get("auto_tune"))
    min_channel = common.get("min_quant_weight_channel")
    sites, skipped = find_weights(
        graph,
        min_size=int(common.get("min_quant_weight_size", 0)),
        min_channel=int((1 if mixed_auto else 16) if min_channel is None else min_channel),
        skip_nodes=list(common.get("skip_quant_node", [])),
        biases=mixed_auto and not weight.get("bias_correction"),
    )
    per_channel = bool(weight.get("per_channel", True))
    opts = {"symmetric": bool(weight.get("symmetric", True)), "kmeans": bool(weight.get("kmeans"))}
    encode = bool(common.get("enable_encode", True))
    notes = _notes(weight, mixed_bit, bool(tune_feeds), bits)
    originals = {id(s.value): s.value.const for s in sites}
    # auto_tune measures output error on the first TUNE_SAMPLES feeds; GPTQ fit on those
    # same samples looks better there than anywhere else (PP-OCR det tuned to 0.99 scored
    # 0.97 on other inputs), so with enough feeds H comes from the rest
    fit = tune_feeds
    if tune_feeds and mixed_bit.get("auto_tune") and len(tune_feeds) > TUNE_SAMPLES:
        fit = tune_feeds[TUNE_SAMPLES:]
    auto = bool(mixed_bit.get("auto_tune")) and bool(sites)
    sequential = _gptq_sequential(weight, mixed_bit, bits, fit)
    hessians: dict[int, Any] = {}
    if not (sequential and bits and not auto):  # fixed bits layer by layer need no one-pass H
        hessians = _gptq_hessians(graph, sites, weight, mixed_bit, bits, fit)
    gptq_report: dict[str, Any] = {"layers": len(hessians), "nearest": len(sites) - len(hessians)}

    def one(s: WeightSite, target: float) -> Quantized:
        w = originals[id(s.value)]
        h = hessians.get(id(s.value))
        if bits and h is not None:
            from passes.quant.gptq import gptq_quantize

            axis = s.axis if per_channel else None
            sym = opts["symmetric"]
            return gptq_quantize(
                w, h.cov, axis, bits, symmetric=sym, transposed=h.transposed, damp=h.damp
            )
        if bits:
            return quantize_tensor(w, s.axis if per_channel else None, bits, **opts)
        return choose_bits(w, s.axis if per_channel else None, target, **opts)

    target = float(mixed_bit.get("init_scale", 0.02))
    tune: dict[str, Any] | None = None
    if auto:
        rounding = _Rounding(sites, originals, hessians, opts["symmetric"])
        if sequential:
            rounding.sequential_on(graph, fit or [])
        results, tune = _auto_tune(
            graph,
            sites,
            [originals[id(s.value)] for s in sites],
            widths=_tune_widths(bits, opts["kmeans"]),
            per_channel=per_channel,
            encode=encode,
            target_cosine=float(mixed_bit.get("target_cosine", AUTO_TUNE_COSINE)),
            max_iterations=int(mixed_bit.get("max_iterations", 8)),
            feeds=tune_feeds,
            rounding=rounding,
            say=say,
        )
    elif sequential:
        axis_of = (lambda s: s.axis) if per_channel else (lambda s: None)
        results, gptq_report = _sequential_fixed(
            graph, sites, originals, fit or [], bits, axis_of, opts, say
        )
    else:
        results = [one(s, target) for s in sites]
    for s, q in zip(sites, results, strict=True):
        _apply(s.value, q, encode)
    corrected = None
    if weight.get("bias_correction") and tune_feeds:
        corrected = correct_biases(graph, sites, originals, tune_feeds)
        say(f"weight quant: bias correction on {corrected['layers']} layers")
    report = _report(sites, results, originals, skipped, bits, target, tune, notes, encode)
    if corrected is not None:
        report["bias_correction"] = corrected
    if weight.get("rounding") == "gptq":
        report["gptq"] = gptq_report
    if common.get("debug_info_save_path"):
        folder = common["debug_info_save_path"]
        report["debug_csv"] = str(_debug_csv(folder, sites, results, originals))
    how = f"{bits} bits" + (", auto_tune" if tune is not None else "")
    if bits == 0:
        how = "mixed, auto_tune" if tune is not None else f"mixed, init_scale={target:g}"
    say(f"weight quant: {len(sites)} tensors, {report['average_bits']:.2f} bits on average ({how})")
    return report


def _apply(v: Value, q: Quantized, encode: bool) -> None:
    v.const = q.dequant
    v.quant = QuantParams(scale=q.scale, zero_point=q.zero_point, axis=q.axis, num_bits=q.bits)
    v.meta["quant_codes"] = q.codes
    v.meta.pop("quant_clusters", None)
    if q.clusters is not None:
        v.meta["quant_clusters"] = q.clusters
    v.meta["quant_encode"] = encode


def _gptq_off(
    weight: dict[str, Any], mixed_bit: dict[str, Any], bits: int, tune_data: bool
) -> str | None:
    """Why ``rounding=gptq`` is not applied (None: it is, or it was not asked for)."""
    if weight.get("rounding") != "gptq":
        return None
    if not tune_data:
        return "needs calibration data ([data_preprocess_param])"
    if not bits and not mixed_bit.get("auto_tune"):
        return "applies to a fixed bit_num or auto_tune, not init_scale mixed bits"
    if weight.get("kmeans") and bits <= _KMEANS_MAX_BITS:
        return "does not apply to k-means codebooks"
    return None


def _gptq_sequential(
    weight: dict[str, Any],
    mixed_bit: dict[str, Any],
    bits: int,
    feeds: list[dict[str, np.ndarray]] | None,
) -> bool:
    """Whether GPTQ applies and takes its ``H`` layer by layer (``gptq_sequential``)."""
    if weight.get("rounding") != "gptq" or _gptq_off(weight, mixed_bit, bits, bool(feeds)):
        return False
    return bool(weight.get("gptq_sequential", True))


def _enough_rows(h: Any) -> bool:
    """GPTQ fits the rounding to the rows it saw; with far fewer rows than input columns
    it fits noise even with its shrinkage (a flattened FC layer seeing one row per sample
    went from cosine 0.99 on the calibration samples to 0.91 on others), so such layers
    round to nearest. MiniLM's FFN (256 token rows, 1536 columns) still gains."""
    return bool(h.rows * GPTQ_MIN_ROW_RATIO >= h.cov.shape[-1])


def _sequential_fixed(
    graph: Graph,
    sites: list[WeightSite],
    originals: dict[int, np.ndarray],
    feeds: list[dict[str, np.ndarray]],
    bits: int,
    axis_of: Callable[[WeightSite], int | None],
    opts: dict[str, Any],
    say: Callable[[str], None],
) -> tuple[list[Quantized], dict[str, Any]]:
    """``bits``-bit codes by GPTQ layer by layer (gptq.quantize_sequentially), else nearest.

    Returns the results and the report's ``gptq`` entry (layers each way, stages).
    """
    from passes.quant.gptq import Hessian, quantize_sequentially

    used = 0

    def round_site(i: int, h: Hessian | None) -> Quantized:
        nonlocal used
        w, axis = originals[id(sites[i].value)], axis_of(sites[i])
        if h is None or not _enough_rows(h):
            return quantize_tensor(w, axis, bits, **opts)
        used += 1
        return _gptq(w, h, axis, bits, bool(opts["symmetric"]))

    results, stages = quantize_sequentially(
        graph, sites, feeds, round_site, [True] * len(sites), say=say
    )
    return results, {"layers": used, "nearest": len(sites) - used, "stages": stages}


def _gptq(w: np.ndarray, h: Any, axis: int | None, bits: int, symmetric: bool) -> Quantized:
    """GPTQ codes for ``w`` under ``h`` (its asymmetric target when ``h`` has a shift)."""
    from passes.quant.gptq import asymmetric_target, gptq_quantize

    target = asymmetric_target(w, h)
    q = gptq_quantize(
        target, h.cov, axis, bits, symmetric=symmetric, transposed=h.transposed, damp=h.damp
    )
    if target is not w:  # rel_error against the float weights, not the target
        ref = np.asarray(w, np.float64)
        norm = float(np.linalg.norm(ref))
        err = float(np.linalg.norm(ref - q.dequant.astype(np.float64)))
        q = dataclasses.replace(q, rel_error=err / norm if norm > 0 else 0.0)
    return q


def _gptq_hessians(
    graph: Graph,
    sites: list[WeightSite],
    weight: dict[str, Any],
    mixed_bit: dict[str, Any],
    bits: int,
    feeds: list[dict[str, np.ndarray]] | None,
) -> dict[int, Any]:
    """Input covariances for ``rounding=gptq`` (passes/quant/gptq.py); {} where not used."""
    if weight.get("rounding") != "gptq" or _gptq_off(weight, mixed_bit, bits, bool(feeds)):
        return {}
    from passes.quant.gptq import collect_hessians

    assert feeds is not None
    hessians = collect_hessians(graph, sites, feeds)
    return {k: h for k, h in hessians.items() if _enough_rows(h)}


def _notes(
    weight: dict[str, Any], mixed_bit: dict[str, Any], tune_data: bool, bits: int = 8
) -> list[str]:
    notes = []
    if weight.get("bias_correction") and not tune_data:
        notes.append(
            "bias_correction needs calibration data ([data_preprocess_param]); not applied"
        )
    why = _gptq_off(weight, mixed_bit, bits, tune_data)
    if why:
        notes.append(f"rounding=gptq {why}; rounded to nearest")
    if weight.get("dequant_strategy", "ON_THE_FLY") != "ON_THE_FLY":
        notes.append("dequant_strategy: only ON_THE_FLY (dequantize at load) is implemented")
    if mixed_bit.get("use_cv_data"):
        notes.append("use_cv_data: auto_tune uses seeded random inputs, not CV data")
    return notes


def _report(
    sites: list[WeightSite],
    results: list[Quantized],
    originals: dict[int, np.ndarray],
    skipped: dict[str, list[str]],
    bits: int,
    target: float,
    tune: dict[str, Any] | None,
    notes: list[str],
    encode: bool,
) -> dict[str, Any]:
    layers = []
    float_bytes = code_bits = elements = 0
    stored = 0.0
    for s, q in zip(sites, results, strict=True):
        w = originals[id(s.value)]
        float_bytes += int(w.nbytes)
        code_bits += q.bits * w.size
        elements += w.size
        size = stored_bytes(q, encode)
        stored += size
        layers.append(
            {
                "tensor": s.value.name,
                "nodes": s.nodes,
                "op": s.op,
                "input": "bias" if s.bias else "weight",
                "shape": list(w.shape),
                "axis": q.axis,
                "bits": q.bits,
                "kmeans": q.clusters is not None,
                "rel_error": round(q.rel_error, 6),
                "stored_bytes": int(size),
            }
        )
    out: dict[str, Any] = {
        "bit_num": bits,
        "quantized": len(sites),
        "average_bits": code_bits / elements if elements else 0.0,
        "float_bytes": float_bytes,
        "code_bytes": (code_bits + 7) // 8,
        "stored_bytes": int(stored),
        "per_tensor": sum(1 for q in results if q.axis is None),
        "layers": layers,
        "skipped": skipped,
    }
    if bits == 0 and tune is None:
        out["init_scale"] = target
    if tune is not None:
        out["auto_tune"] = tune
    if notes:
        out["notes"] = notes
    return out


def _debug_csv(
    folder: str, sites: list[WeightSite], results: list[Quantized], originals: dict[int, Any]
) -> Path:
    """Per-tensor CSV (MindSpore Lite's debug_info_save_path): bits, error, cosine."""
    path = Path(folder) / "weight_quant.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["tensor", "nodes", "op", "shape", "axis", "bits", "rel_error", "cosine"])
        for s, q in zip(sites, results, strict=True):
            w = np.asarray(originals[id(s.value)], dtype=np.float64)
            cos = _cosine(w, q.dequant.astype(np.float64))
            shape = "x".join(map(str, w.shape))
            nodes = ";".join(s.nodes)
            out.writerow([s.value.name, nodes, s.op, shape, q.axis, q.bits, q.rel_error, cos])
    return path


# -- auto tune: sensitivity-weighted bit allocation ------------------------------------------------
def tuned_outputs(graph: Graph, feeds: list[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
    """What auto_tune compares: each float output, or its logits when a Softmax makes it.

    A saturated probability hides weight error until a class flips: PP-OCR's
    direction classifier kept output cosine 1.0 on its tuning samples at 2 bits and
    flipped on every other input.
    """
    from converter.executor.runtime import Runtime

    watched = [_measured_value(v) for v in graph.outputs]
    ids = {id(v) for v in watched}
    seen: dict[int, np.ndarray] = {}

    def observe(value: Value, array: np.ndarray) -> None:
        if id(value) in ids:
            seen[id(value)] = np.array(array, copy=True)

    rt = Runtime(graph, observe=observe)
    out = []
    for f in feeds:
        seen.clear()
        got = rt.run(f)
        arrays = [
            seen[id(w)] if id(w) in seen else np.asarray(got[v.name])
            for v, w in zip(graph.outputs, watched, strict=True)
        ]
        out.append([a.astype(np.float64) for a in arrays if np.issubdtype(a.dtype, np.floating)])
    return out


_LOGIT_OPS = ("Softmax", "LogSoftmax")
"""Not Sigmoid: a detector's probability map is mostly background at logits around -10,
which dominate the logits' cosine while the text regions that matter barely count
(PP-OCR det tuned on logits to 0.999 scored 0.992 on its probabilities)."""


def _measured_value(v: Value) -> Value:
    """``v``, or the input of the Softmax / LogSoftmax that produces it."""
    node = v.producer
    if node is not None and node.op in _LOGIT_OPS and node.inputs and node.inputs[0] is not None:
        return node.inputs[0]
    return v


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(-1), b.reshape(-1)
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return 1.0 if na == nb else 0.0
    return float(np.dot(a, b) / (na * nb))


@dataclass
class _Option:
    """One way to quantize a tensor: how, its stored bytes and squared weight error."""

    axis: int | None
    bits: int
    kmeans: bool
    bytes: float
    sq_error: float


def _tune_widths(bits: int, kmeans: bool) -> list[tuple[int, bool]]:
    """(bits, k-means) candidates: all of TUNE_BITS / TUNE_KMEANS_BITS for mixed bit,
    else ``bits`` alone (on the grid, or k-means with ``kmeans=true``)."""
    if bits:
        return [(bits, kmeans and bits <= _KMEANS_MAX_BITS)]
    return [(b, False) for b in TUNE_BITS] + [(b, True) for b in TUNE_KMEANS_BITS]


class _Rounding:
    """How auto_tune quantizes site ``i`` and measures the error it causes.

    With an input covariance ``H`` for the site (``rounding=gptq``), codes come
    from GPTQ and the error is the layer's output error ``tr(dW H dW^T)`` (GPTQ
    trades weight error for output error, so weight error would rank its
    options wrongly); otherwise round-to-nearest and the squared weight error.
    Sensitivities and options of one site always use the same measure.
    """

    def __init__(
        self,
        sites: list[WeightSite],
        originals: dict[int, np.ndarray],
        hessians: dict[int, Any],
        symmetric: bool,
    ) -> None:
        self.sites = sites
        self.w = [originals[id(s.value)] for s in sites]
        self.h = [hessians.get(id(s.value)) for s in sites]
        self.symmetric = symmetric
        self._cache: dict[tuple[int, int | None, int, bool], Quantized] = {}
        self._graph: Graph | None = None
        self._feeds: list[dict[str, np.ndarray]] = []

    def sequential_on(self, graph: Graph, feeds: list[dict[str, np.ndarray]]) -> None:
        """Let :meth:`resequence` re-round chosen options layer by layer on ``feeds``."""
        self._graph, self._feeds = graph, feeds

    @property
    def can_resequence(self) -> bool:
        return self._graph is not None and any(h is not None for h in self.h)

    def resequence(self, chosen: list[_Option]) -> tuple[list[Quantized], int]:
        """The chosen options with GPTQ's ``H`` taken layer by layer (gptq.quantize_sequentially).

        Sites that have a one-pass ``H`` and a GPTQ option (a grid below 16 bits) get
        their ``H`` from the graph quantized up to them; the rest keep :meth:`quantize`.
        The graph's constants are the float weights again on return.
        """
        from passes.quant.gptq import Hessian, quantize_sequentially

        assert self._graph is not None

        def gptq_option(i: int) -> bool:
            return self.h[i] is not None and not chosen[i].kmeans and chosen[i].bits < 16

        def round_site(i: int, h: Hessian | None) -> Quantized:
            o = chosen[i]
            if h is None or not gptq_option(i) or not _enough_rows(h):
                return self.quantize(i, o.axis, o.bits, o.kmeans)
            return _gptq(self.w[i], h, o.axis, o.bits, self.symmetric)

        wants = [gptq_option(i) for i in range(len(self.w))]
        try:
            return quantize_sequentially(self._graph, self.sites, self._feeds, round_site, wants)
        finally:
            for s, w in zip(self.sites, self.w, strict=True):
                s.value.const = w

    def quantize(self, i: int, axis: int | None, bits: int, kmeans: bool) -> Quantized:
        h = self.h[i]
        if h is None or kmeans or bits >= 16:
            return quantize_tensor(self.w[i], axis, bits, symmetric=self.symmetric, kmeans=kmeans)
        key = (i, axis, bits, kmeans)
        q = self._cache.get(key)
        if q is None:  # GPTQ takes seconds on a large model: keep its codes, not the floats
            from passes.quant.gptq import gptq_quantize

            q = gptq_quantize(
                self.w[i], h.cov, axis, bits, symmetric=self.symmetric,
                transposed=h.transposed, damp=h.damp,
            )  # fmt: skip
            self._cache[key] = dataclasses.replace(q, dequant=None)  # type: ignore[arg-type]
            return q
        dq = dequantize(q.codes, q.scale, q.zero_point, axis, bits, self.w[i].dtype)
        return dataclasses.replace(q, dequant=dq)

    def error(self, i: int, dequant: np.ndarray) -> float:
        d = np.asarray(self.w[i], np.float64) - np.asarray(dequant, np.float64)
        h = self.h[i]
        if h is None:
            return float(np.square(d).sum())
        rows = d.T if h.transposed else d.reshape(d.shape[0], -1)
        cov = h.cov if h.cov.ndim == 3 else h.cov[None]
        rows = rows.reshape(cov.shape[0], -1, cov.shape[-1])
        return float(np.einsum("grn,grn->", rows @ cov, rows))


def _options(
    i: int,
    axis: int,
    widths: list[tuple[int, bool]],
    per_channel: bool,
    encode: bool,
    rounding: _Rounding,
) -> list[_Option]:
    """The Pareto front (fewer bytes <-> less error) of the candidate quantizations of site i."""
    w = rounding.w[i]
    axes: list[int | None] = [axis, None] if per_channel and w.shape[axis] > 1 else [None]
    found = []
    for ax in axes:
        for b, km in widths:
            q = rounding.quantize(i, ax, b, km)
            err = rounding.error(i, q.dequant)
            found.append(_Option(ax, b, km, stored_bytes(q, encode), err))
    found.sort(key=lambda o: (o.bytes, o.sq_error))
    front: list[_Option] = []
    for o in found:
        if not front or o.sq_error < front[-1].sq_error:
            front.append(o)
    return front


def _allocate(
    options: list[list[_Option]], sensitivity: np.ndarray, budget: float
) -> tuple[list[int], float]:
    """Per tensor the option minimizing bytes + lam * predicted error, lam so the sum <= budget.

    Returns the chosen option indices and their predicted output error.
    """

    def pick(lam: float) -> tuple[list[int], float]:
        chosen, total = [], 0.0
        for opts, s in zip(options, sensitivity, strict=True):
            costs = [o.bytes + lam * s * o.sq_error for o in opts]
            k = int(np.argmin(costs))
            chosen.append(k)
            total += s * opts[k].sq_error
        return chosen, total

    lo, hi = -12.0, 24.0  # log10(lam): lam -> 0 takes the fewest bytes, lam -> inf the least error
    best = pick(10.0**hi)
    if best[1] > budget:
        return best
    for _ in range(48):
        mid = (lo + hi) / 2
        chosen, total = pick(10.0**mid)
        if total <= budget:
            hi, best = mid, (chosen, total)
        else:
            lo = mid
    return best


def _auto_tune(
    graph: Graph,
    sites: list[WeightSite],
    originals: list[np.ndarray],
    *,
    widths: list[tuple[int, bool]],
    per_channel: bool,
    encode: bool,
    target_cosine: float,
    max_iterations: int,
    feeds: list[dict[str, np.ndarray]] | None = None,
    rounding: _Rounding,
    say: Callable[[str], None] = lambda _msg: None,
) -> tuple[list[Quantized], dict[str, Any]]:
    """Bits (and grid, granularity) per tensor by measured output sensitivity (module docstring).

    ``say`` gets a line as the probing starts and one per measured allocation.
    """
    from converter.verify import make_inputs

    if feeds:
        feeds = feeds[:TUNE_SAMPLES]
    else:
        feeds = [make_inputs(graph.inputs, seed=s) for s in TUNE_SEEDS]
    reference = tuned_outputs(graph, feeds)
    say(
        f"weight quant: auto_tune probing {len(sites)} tensors on {len(feeds)} inputs "
        f"(target cosine {target_cosine:g})"
    )

    def output_error(dequant: dict[int, np.ndarray]) -> float:
        """1 - the worst output cosine with the given tensors replaced."""
        for i, w in dequant.items():
            sites[i].value.const = w
        try:
            got = tuned_outputs(graph, feeds)
        finally:
            for i in dequant:
                sites[i].value.const = originals[i]
        cosines = [
            _cosine(x, y) for a, b in zip(reference, got, strict=True)
            for x, y in zip(a, b, strict=True)
        ]  # fmt: skip
        return 1.0 - min(cosines, default=1.0)

    sensitivity = np.zeros(len(sites))
    for i, s in enumerate(sites):
        if len(widths) == 1:  # fixed width: probe the coarser choice, one scale per tensor
            probe = rounding.quantize(i, None, widths[0][0], False)
        else:
            axis = s.axis if per_channel and not s.bias else None
            probe = rounding.quantize(i, axis, PROBE_BITS, False)
        err = rounding.error(i, probe.dequant)
        sensitivity[i] = max(output_error({i: probe.dequant}), 1e-12) / max(err, 1e-30)
    options = [
        _options(i, s.axis, widths, per_channel and not s.bias, encode, rounding)
        for i, s in enumerate(sites)
    ]
    allowed = 1.0 - target_cosine
    search = _Search(options, sensitivity, allowed, say=say)

    def one_pass(chosen: list[int]) -> tuple[float, float, list[Quantized] | None]:
        results = _realize(options, chosen, rounding)
        err = output_error({i: q.dequant for i, q in enumerate(results)})
        return err, sum(options[i][k].bytes for i, k in enumerate(chosen)), None

    search.run(one_pass, allowed, max(2, min(max_iterations, TUNE_MAX_ROUNDS)))
    picked = search.pick()
    results = _realize(options, picked.chosen, rounding)
    chosen, met = picked.trial, picked.err <= allowed
    sequential = None
    if rounding.can_resequence:
        rounds = min(max_iterations, TUNE_SEQUENTIAL_ROUNDS)
        results, chosen, met, sequential = _sequential_search(
            search, picked, results, rounding, output_error, encode, rounds
        )
    tune = {
        "target_cosine": target_cosine,
        "seeds": list(TUNE_SEEDS),
        "sensitivity": {s.value.name: float(x) for s, x in zip(sites, sensitivity, strict=True)},
        "trials": search.trials,
        "chosen": chosen,
        "met": met,
    }
    if sequential is not None:
        tune["sequential"] = sequential
    return results, tune


@dataclass
class _Trial:
    """One measured allocation: option index per tensor, output error, bytes, trial number."""

    chosen: list[int]
    err: float
    size: float
    trial: int
    results: list[Quantized] | None = None  # kept where they are costly to remake


@dataclass
class _Search:
    """Steps 3-4 of auto_tune: allocations for a budget, measured, the budget corrected.

    ``run`` may be called again with another measure (auto_tune's sequential
    rounds); ``trials`` (the report's) and ``sensitivity`` carry over.
    """

    options: list[list[_Option]]
    sensitivity: np.ndarray
    allowed: float
    trials: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    found: list[_Trial] = dataclasses.field(default_factory=list)
    say: Callable[[str], None] = lambda _msg: None

    def record(self, row: dict[str, Any]) -> int:
        """Add a measured allocation to the report (and the progress output); its index."""
        self.trials.append(row)
        how = ", layer by layer" if row.get("sequential") else ""
        self.say(
            f"weight quant: auto_tune trial {len(self.trials)}: {row['stored_bytes'] / 1e6:.3f}"
            f" MB of weights, cosine {row['cosine']:.5f} (target {1.0 - self.allowed:g}{how})"
        )
        return len(self.trials) - 1

    def run(
        self,
        measure: Callable[[list[int]], tuple[float, float, list[Quantized] | None]],
        budget: float,
        rounds: int,
        *,
        scale: float = 1.0,
        adapt: bool = False,
        start: _Trial | None = None,
        start_predicted: float = 0.0,
        extra: dict[str, Any] | None = None,
    ) -> list[_Trial]:
        """Up to ``rounds`` measured allocations from ``budget``; returns them.

        ``measure(chosen)``: (output error, bytes, results or None); an allocation
        this run measured before is not measured again (nor counted in ``rounds``,
        up to ``4 * rounds`` steps in all). ``scale``: the
        measured error per unit of predicted one where the additive model is known
        to be pessimistic (the cliff rule compares against the scaled prediction);
        ``adapt``: the scale follows the best allocation so far. ``start``: an
        allocation measured at ``budget`` already (its predicted error
        ``start_predicted``), the first step of the search; ``extra``: fields
        added to each trial's report.
        """
        allowed = self.allowed
        passing = 0.0  # the largest budget whose allocation met the target
        failing = float("inf")  # the smallest budget whose allocation did not
        best: _Trial | None = None

        def after(t: _Trial, predicted: float) -> bool:
            """The budget corrected by what ``t`` measured; True: the search is done."""
            nonlocal budget, passing, failing, best, scale
            if t.err <= allowed:
                if best is None or t.size < best.size:
                    best = t
                    if adapt:
                        scale = t.err / max(predicted, 1e-12)
                if t.err > 0.9 * allowed:
                    return True
                passing = max(passing, budget)
            elif best is not None and t.err > CLIFF_FACTOR * max(scale * predicted, 1e-12):
                # A cliff the additive model can't see (PP-OCR rec: one tensor taken off 16
                # bits moved the output from 0.9999 to 0.965). Blame the tensors this trial
                # rounded coarser than the best passing one, and search again from there.
                factor = t.err / max(scale * predicted, 1e-12)
                if t.err > 1.0:  # the output turned away from the reference: see the constant
                    factor = min(factor, CLIFF_FLIP_FACTOR)
                for i, k in enumerate(t.chosen):
                    if self.options[i][k].sq_error > self.options[i][best.chosen[i]].sq_error:
                        self.sensitivity[i] *= factor
                failing = float("inf")
                budget = max(passing, budget)
                return False
            else:
                failing = min(failing, budget)
            if passing and failing < float("inf"):  # bracketed: bisect (geometrically)
                if failing / passing < 1.05:
                    return True
                budget = float(np.sqrt(passing * failing))
            else:  # the prediction is linear in the budget; correct it by what was measured
                budget *= float(np.clip(allowed / max(t.err, 1e-12), 0.25, 4.0))
            return False

        out: list[_Trial] = []
        measured = [start] if start is not None else []  # allocations this run measured
        if start is not None and after(start, start_predicted):
            return out
        count = 0  # measurements: an allocation met again costs none (nor a round)
        steps: set[tuple[tuple[int, ...], float]] = set()  # (allocation, budget) seen
        for _ in range(4 * rounds):
            if count >= rounds:
                break
            chosen, predicted = _allocate(self.options, self.sensitivity, budget)
            again = next((t for t in measured if t.chosen == chosen), None)
            if again is not None:  # known already: steer by it, report and count it once
                if (tuple(chosen), budget) in steps:
                    break  # the search went round in a circle
                steps.add((tuple(chosen), budget))
                if after(again, predicted):
                    break
                continue
            steps.add((tuple(chosen), budget))
            err, size, results = measure(chosen)
            count += 1
            row = self.record(
                {"budget": budget, "predicted": 1.0 - predicted, "cosine": round(1.0 - err, 6),
                 "stored_bytes": int(size), **(extra or {})}
            )  # fmt: skip
            trial = _Trial(chosen, err, size, row, results)
            measured.append(trial)
            out.append(trial)
            self.found.append(trial)
            if after(trial, predicted):
                break
        return out

    def pick(self, among: list[_Trial] | None = None) -> _Trial:
        """The smallest allocation that met the target, else the most accurate."""
        found = self.found if among is None else among
        met = [t for t in found if t.err <= self.allowed]
        return min(met, key=lambda t: t.size) if met else min(found, key=lambda t: t.err)


def _sequential_search(
    search: _Search,
    picked: _Trial,
    results: list[Quantized],
    rounding: _Rounding,
    output_error: Callable[[dict[int, np.ndarray]], float],
    encode: bool,
    rounds: int,
) -> tuple[list[Quantized], int, bool, dict[str, Any]]:
    """auto_tune's pick re-rounded by GPTQ layer by layer (``gptq_sequential``), and the
    slack that frees spent on smaller allocations. Returns (results, chosen trial, met,
    the report's ``sequential`` entry).

    The search ranks options by one-pass GPTQ (every option of every site needs
    its codes before the bits are known); layer by layer, each site's rounding
    also makes up for the error of the sites before it, so the same allocation
    usually comes out more accurate. The pick is re-rounded and measured on the
    same tuning inputs, and the sequential codes are kept only when their output
    error is not worse. Then the search goes on from the pick's budget for up to
    ``rounds`` allocations, each re-rounded layer by layer and measured (the
    cliff rule against the prediction scaled by the pick's measured / predicted
    error); the smallest that meets the target wins.
    """

    def layer_by_layer(chosen: list[int]) -> tuple[float, float, list[Quantized]]:
        seq, _ = rounding.resequence([search.options[i][k] for i, k in enumerate(chosen)])
        err = output_error({i: q.dequant for i, q in enumerate(seq)})
        return err, sum(stored_bytes(q, encode) for q in seq), seq

    budget = search.trials[picked.trial]["budget"]
    predicted = 1.0 - search.trials[picked.trial]["predicted"]
    err, size, seq = layer_by_layer(picked.chosen)
    row = search.record(
        {**search.trials[picked.trial], "cosine": round(1.0 - err, 6), "stored_bytes": int(size),
         "sequential": True}
    )  # fmt: skip
    first = _Trial(picked.chosen, err, size, row, seq)
    kept = err <= picked.err
    report: dict[str, Any] = {"one_pass_cosine": round(1.0 - picked.err, 6),
                              "cosine": round(1.0 - err, 6), "kept": kept}  # fmt: skip
    if not kept:
        report["rounds"] = 0
        return results, picked.trial, picked.err <= search.allowed, report
    more = search.run(layer_by_layer, budget, rounds, scale=min(1.0, err / max(predicted, 1e-12)),
                      adapt=True, start=first, start_predicted=predicted,
                      extra={"sequential": True})  # fmt: skip
    report["rounds"] = len(more)
    best = search.pick([first, *more])
    assert best.results is not None
    return best.results, best.trial, best.err <= search.allowed, report


def _realize(
    options: list[list[_Option]], chosen: list[int], rounding: _Rounding
) -> list[Quantized]:
    return [
        rounding.quantize(i, opts[k].axis, opts[k].bits, opts[k].kmeans)
        for i, (opts, k) in enumerate(zip(options, chosen, strict=True))
    ]


# -- bias correction -------------------------------------------------------------------------
_CORRECTED = ("Conv", "ConvAct", "MatMulAct")
"""Ops whose quantized weight's error bias correction folds into their bias input
(:data:`BIAS_INPUTS` says which input that is)."""


def correct_biases(
    graph: Graph,
    sites: list[WeightSite],
    originals: dict[int, np.ndarray],
    feeds: list[dict[str, np.ndarray]],
) -> dict[str, Any]:
    """Shift each conv / matmul bias by ``(W - Wq) E[x]``, its mean output error.

    Weight rounding errors are zero-mean per weight, but ``(W - Wq) @ E[x]`` is not
    zero when the layer's inputs have a nonzero mean (they do after ReLU or
    hardswish), and in a deep chain without residuals those shifts add up layer
    after layer. ``E[x]`` is measured per input channel on the float graph run on
    ``feeds``. Each layer corrects its own error only: correcting the upstream
    error a layer's quantized inputs carry as well would count it twice once the
    upstream layers are corrected themselves.
    """
    targets = []
    for s in sites:
        users = s.value.consumers()
        if len(users) != 1 or users[0].op not in _CORRECTED or users[0].graph is not graph:
            continue
        node = users[0]
        if node.inputs[1] is not s.value or node.inputs[0] is None:
            continue
        targets.append((node, s.value, originals[id(s.value)]))
    if not targets:
        return {"layers": 0, "mean_abs_shift": 0.0}
    quantized = {id(v): v.const for _, v, _ in targets}
    for _, v, w in targets:
        v.const = w
    try:
        mean_float = _input_means(graph, [n for n, _, _ in targets], feeds)
    finally:
        for _, v, _ in targets:
            v.const = quantized[id(v)]
    shifts = []
    for node, v, w in targets:
        mf = mean_float.get(id(node))
        if mf is None:
            continue
        shift = _mean_pre_activation(node, np.asarray(w, np.float64) - v.const, mf)
        i = BIAS_INPUTS[node.op]
        old = node.input(i)
        base = np.zeros(shift.shape[0], np.float32) if old is None else old.const
        if base is None or base.shape != shift.shape:
            continue
        new = Value(graph.unique_name(f"{old.name if old else node.name}_bias_corrected"),
                    const=(base.astype(np.float64) + shift).astype(np.float32))  # fmt: skip
        node.set_input(i, new)
        shifts.append(float(np.abs(shift).mean()))
    return {"layers": len(shifts), "mean_abs_shift": float(np.mean(shifts)) if shifts else 0.0}


def _input_means(
    graph: Graph, nodes: list[Node], feeds: list[dict[str, np.ndarray]]
) -> dict[int, np.ndarray]:
    """Per-node mean of input 0 over samples and all but its channel axis."""
    from converter.executor.runtime import Runtime

    want: dict[int, list[Node]] = {}
    for n in nodes:
        want.setdefault(id(n.inputs[0]), []).append(n)
    sums: dict[int, np.ndarray] = {}

    def observe(value: Value, array: np.ndarray) -> None:
        for n in want.get(id(value), ()):
            a = np.asarray(array, np.float64)
            if a.ndim < 2:
                continue
            channel = -1 if n.op == "MatMulAct" or n.attrs.get("format") == "NHWC" else 1
            m = np.moveaxis(a, channel, 0).reshape(a.shape[channel], -1).mean(axis=1)
            sums[id(n)] = sums.get(id(n), 0) + m

    rt = Runtime(graph, observe=observe)
    for f in feeds:
        rt.run(f)
    return {k: v / len(feeds) for k, v in sums.items()}


def _mean_pre_activation(node: Node, w: np.ndarray, mean_in: np.ndarray) -> np.ndarray:
    """W applied to a constant input equal to ``mean_in`` (borders of padded convs aside)."""
    w = np.asarray(w, np.float64)
    if node.op == "MatMulAct":
        return mean_in @ w.reshape(w.shape[0], -1)
    group = int(node.attrs.get("group", 1) or 1)
    cout, cin_g = w.shape[0], w.shape[1]
    taps = w.reshape(cout, cin_g, -1).sum(axis=2)  # [Cout, Cin/g]
    per_group = mean_in.reshape(group, cin_g)
    return (taps * per_group[np.arange(cout) // (cout // group)]).sum(axis=1)
