"""GPTQ: data-aware rounding of weight codes (``[weight_quant_param] rounding=gptq``).

Round-to-nearest minimizes each weight's own error; what matters is the layer's
output error ``||(W - Wq) X||^2`` on the inputs ``X`` it sees. GPTQ (Frantar et
al., 2022, "GPTQ: Accurate Post-Training Quantization for Generative
Pre-trained Transformers") minimizes that, one output row at a time, with
``H = X X^T`` (the covariance of the layer's inputs over the columns of W):

* the grid is fixed first, by ``weight._grid`` (per-channel or per-tensor
  scale and zero point) over each channel's range clipped to the ratio that
  rounds the float weights best (:func:`clipped_grid`; ``clip=False``: the full
  range, round-to-nearest's grid). Codes, ``scale``, ``zero_point`` and the
  dequantized weights follow the conventions of
  :func:`passes.quant.weight.quantize_tensor`, and the ``.ms`` reader
  reproduces ``dequant`` bit for bit;
* the input columns are quantized one at a time (largest ``H_ii`` first, "act
  order"); each column's rounding error is spread over the columns not yet
  quantized, weighted by the upper Cholesky factor ``U`` of ``H^-1``:
  ``W[:, j:] -= (w_j - q_j) / U_jj * U[j, j:]``. This is the optimal update
  of the remaining weights (Optimal Brain Surgeon) given the correlations
  of the inputs; the updates inside a block of :data:`BLOCK` columns are
  applied eagerly, those to later columns once per block (lazy batch updates);
* ``H`` is dampened by ``DAMP * mean(diag H)`` on its diagonal (a layer whose
  inputs are linearly dependent, e.g. a constant channel, has a singular
  ``H``), or more where the calibration feeds disagree about ``H``
  (:func:`_shrinkage`: few rows for many columns would otherwise be overfit);
  columns never excited (``H_ii = 0``) keep their round-to-nearest code.

Where ``H`` comes from (:func:`collect_hessians`)
-------------------------------------------------
The float graph runs on the calibration feeds; an observer turns input 0 of
each consumer of a weight into sample rows ``x`` (one per output element) and
accumulates ``sum x x^T`` in float64:

* MatMul / MatMulAct / FusedMatMul: the last axis of A (FusedMatMul's ``transA``
  swaps the last two first); Gemm: the rows of ``A`` (columns with ``transA``).
  The weight's input dimension is axis 0 of ``B`` ([K, N]), or axis 1 with
  ``transB`` ([N, K]);
* Conv / ConvAct / FusedConv: im2col patches (pads, strides, dilations, NHWC
  data) per group, columns ordered as ``W.reshape(M, Cin/g * prod(kernel))``;
  a grouped conv gets one ``H`` per group (depthwise: one ``k x k`` per
  channel), all processed as one batch;
* at most ``max_rows`` rows per node and sample (a seeded random subset of the
  output positions / tokens beyond that).

One pass or layer by layer (:func:`quantize_sequentially`)
---------------------------------------------------------
:func:`collect_hessians` alone takes every ``H`` from the float graph in one
pass (per :data:`MAX_H_BYTES` of them): each layer is rounded as if its inputs
were exact. Layer by layer, each layer's ``H`` comes from the inputs the
already quantized layers produce, in *stages*: a site's stage is one more than
the highest stage of any site upstream of its input (the longest chain of
sites that feeds it, :func:`sequential_stages`), so no site's input depends on
a site of its own stage and a stage is observed in one go. A chain of N layers
takes N stages, a transformer block four (QKV, output projection, FFN up, FFN
down). The graph is replayed node by node per feed, its values kept from stage
to stage (:class:`_Replay`): what a stage needs was computed after the sites
it depends on were quantized, so a stage runs only the nodes between the
previous stage's inputs and its own, and the whole pass costs about one
forward run per feed (two with the float reference below) plus the
observer's work, which is the same as in one pass.

The paper's GPTQ on the quantized inputs ``Xq`` only fits ``W Xq``; the error
the inputs already carry stays. Layer by layer here fits the float layer's
output ``W X`` instead (the asymmetric objective of GPTAQ, Li et al. 2025): a
replay of the float graph pairs each sampled row of ``Xq`` with its float
``X``, and GPTQ rounds ``W' = W + W (X - Xq) Xq^T (Xq Xq^T)^-1``
(:func:`asymmetric_target`), the weights that map ``Xq`` closest to ``W X``.
Each layer then makes up for the layers before it, and the error no longer
compounds down a deep chain (PP-OCRv4 rec at 4 bits: held-out output cosine
0.949 one pass, 0.973 layer by layer on ``W X``; ``python -m
benchmarks.bench_compress --models ppocr_rec --settings 4``, and the same with
``gptq_sequential=false``).

Other weights (ConvTranspose, RNN, attention, Gather tables, batched MatMul B,
weights used inside control-flow bodies) have no ``H`` and are rounded to
nearest by the caller.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from converter.ms.codec import code_dtype, dequantize
from ir import Graph, Node, Value
from ir.ops.nn import resolve_pads
from passes.quant.weight import Quantized, WeightSite, _channels, _grid

__all__ = [
    "BLOCK",
    "DAMP",
    "Hessian",
    "clipped_grid",
    "collect_hessians",
    "asymmetric_target",
    "gptq_quantize",
    "quantize_sequentially",
    "sequential_stages",
]

logger = logging.getLogger(__name__)

DAMP = 0.01
"""Dampening added to diag(H), relative to its mean (the GPTQ paper's default)."""
BLOCK = 128
"""Columns per lazy batch update."""
CLIP_RATIOS = tuple(1.0 - 0.02 * i for i in range(26))
"""Range shrink ratios :func:`clipped_grid` tries (1 down to 0.5)."""
MAX_ROWS = 2048
"""Sample rows per node and calibration input (more are subsampled)."""
MAX_H_BYTES = 1 << 30
"""Float64 H bytes (two per site) accumulated in one pass over the feeds (more: more passes)."""
Observer = Callable[[Value, np.ndarray], None]
Source = Callable[[int, dict[str, np.ndarray], set[int], Observer], None]
"""``source(k, feed, wanted, observe)``: show ``observe`` the values (by id) in ``wanted``
computed on feed number ``k`` (others may be shown too)."""
_CONVS = ("Conv", "ConvAct", "FusedConv")
_MATMULS = ("MatMul", "MatMulAct", "FusedMatMul")


def _code_range(bits: int, symmetric: bool) -> tuple[int, int]:
    """The code range ``weight._grid`` uses (narrow symmetric from 2 bits, else full)."""
    if symmetric and bits >= 2:
        qmax = (1 << (bits - 1)) - 1
        return -qmax, qmax
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


# -- the rounding ----------------------------------------------------------------------------
def gptq_quantize(
    w: np.ndarray,
    x_cov: np.ndarray,
    axis: int | None,
    bits: int,
    *,
    symmetric: bool = True,
    transposed: bool = False,
    damp: float | np.ndarray = DAMP,
    act_order: bool = True,
    clip: bool = True,
    block: int = BLOCK,
) -> Quantized:
    """``w`` quantized like ``quantize_tensor(w, axis, bits)``, codes chosen by GPTQ.

    ``x_cov``: ``[n, n]`` or ``[G, n, n]``, the (unnormalized is fine) covariance of
    the layer's inputs over the weight's input dimension, one per group. The
    weight's rows are ``w.reshape(w.shape[0], -1)`` (Conv OIHW, Gemm B with
    ``transB``), or ``w.T`` with ``transposed`` (MatMul B, [K, N]); ``G`` groups
    split the rows evenly (group ``g`` owns rows ``g*R/G .. (g+1)*R/G``). ``axis``
    (the per-channel axis) must be the rows' axis or None (one scale). ``clip``:
    the grid of the clipped range that rounds ``w`` best (:func:`clipped_grid`)
    instead of the full range's.
    """
    if not 1 <= bits <= 16:
        raise ValueError(f"bit_num must be 1..16, not {bits}")
    w = np.asarray(w)
    out_axis = 1 if transposed else 0
    if transposed and w.ndim != 2:
        raise ValueError(f"transposed weights must be 2-D, not {w.shape}")
    if axis is not None and axis % w.ndim != out_axis:
        raise ValueError(f"axis {axis}: GPTQ needs the output-channel axis {out_axis} or None")
    cov = np.asarray(x_cov, dtype=np.float64)
    if cov.ndim == 2:
        cov = cov[None]
    rows = np.asarray(w.T if transposed else w.reshape(w.shape[0], -1), dtype=np.float64)
    groups, n = cov.shape[0], cov.shape[-1]
    if rows.shape[0] % groups or rows.shape[1] != n or cov.shape != (groups, n, n):
        raise ValueError(f"weight rows {rows.shape} do not match H {cov.shape}")
    chan = _channels(w, axis)
    scale, zp = clipped_grid(chan, bits, symmetric) if clip else _grid(chan, bits, symmetric)[:2]
    # one scale per row, or the one scale (per tensor) for every row
    s = np.broadcast_to(scale.reshape(-1, 1), (rows.shape[0], 1)).reshape(groups, -1, 1)
    z = np.broadcast_to(zp.reshape(-1, 1), (rows.shape[0], 1)).reshape(groups, -1, 1)
    codes = _gptq_rows(
        rows.reshape(groups, -1, n), cov, s, z, _code_range(bits, symmetric), damp, act_order, block
    ).reshape(rows.shape)
    codes = codes.T if transposed else codes.reshape(w.shape)
    codes = np.ascontiguousarray(codes).astype(code_dtype(bits))
    dq = dequantize(codes, scale, zp, axis, bits, w.dtype)
    ref = w.astype(np.float64)
    norm = float(np.linalg.norm(ref))
    rel = float(np.linalg.norm(ref - dq.astype(np.float64))) / norm if norm > 0 else 0.0
    return Quantized(codes, dq, scale, zp, axis, bits, None, rel)


def clipped_grid(rows: np.ndarray, bits: int, symmetric: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per-row (scale, zero point) of ``weight._grid`` over a clipped range, clip by row.

    The range ``[min(w, 0), max(w, 0)]`` of each row is shrunk by each ratio in
    :data:`CLIP_RATIOS`; each row keeps the grid whose round-to-nearest codes
    reconstruct it with the least squared error. A few outliers then no longer
    set the step for the whole row: at 3-4 bits that step, not the rounding,
    dominates the error (the outliers are clipped instead). Ratio 1 is the plain
    grid, so the result is never worse than it in squared weight error.
    """
    rows = np.asarray(rows, dtype=np.float32)
    lo_code, hi_code = _code_range(bits, symmetric)
    lo = np.minimum(rows.min(axis=1), 0.0)[:, None]
    hi = np.maximum(rows.max(axis=1), 0.0)[:, None]
    best = np.full(rows.shape[0], np.inf)
    scale = np.ones(rows.shape[0], np.float32)
    zp = np.zeros(rows.shape[0], np.int32)
    for r in CLIP_RATIOS:
        s, z, _ = _grid(np.clip(rows, r * lo, r * hi), bits, symmetric)
        q = np.clip(np.round(rows / s[:, None]) + z[:, None], lo_code, hi_code)
        err = np.square(rows - (q - z[:, None]) * s[:, None]).sum(axis=1)
        better = err < best
        best[better], scale[better], zp[better] = err[better], s[better], z[better]
    return scale, zp


def _gptq_rows(
    w: np.ndarray,
    h: np.ndarray,
    scale: np.ndarray,
    zp: np.ndarray,
    code_range: tuple[int, int],
    damp: float | np.ndarray,
    act_order: bool,
    block: int,
) -> np.ndarray:
    """Codes [G, R, n] of rows ``w`` [G, R, n] under input covariances ``h`` [G, n, n].

    ``scale``, ``zp``: [G, R or 1, 1]. All groups are processed together, column
    by column (a depthwise conv is C groups of k*k columns: k*k steps).
    """
    g, r, n = w.shape
    w = w.copy()
    h = h.copy()
    diag = np.einsum("gii->gi", h)  # a writable view of the diagonals
    dead = diag <= 0
    if dead.any():  # never excited: no error goes there (zero row of H), any scale will do
        live = np.where(dead, 0.0, diag).sum(axis=1) / np.maximum((~dead).sum(axis=1), 1)
        diag[dead] = np.broadcast_to(np.where(live > 0, live, 1.0)[:, None], diag.shape)[dead]
    if act_order:
        perm = np.argsort(-diag, axis=1, kind="stable")
        w = np.take_along_axis(w, perm[:, None, :], axis=2)
        h = np.take_along_axis(np.take_along_axis(h, perm[:, :, None], 1), perm[:, None, :], 2)
    u = _inverse_cholesky(h, damp)
    s32 = scale.astype(np.float32)
    lo, hi = code_range
    q = np.empty((g, r, n), dtype=np.float32)
    for i1 in range(0, n, block):
        i2 = min(i1 + block, n)
        w1 = w[:, :, i1:i2]  # a view: the block's updates land in w
        err = np.empty_like(w1)
        u1 = u[:, i1:i2, i1:i2]
        for j in range(i2 - i1):
            col = w1[:, :, j : j + 1]
            # float32 division, as weight._grid: with no update the codes are RTN's
            qj = np.clip(np.round(col.astype(np.float32) / s32) + zp, lo, hi)
            q[:, :, i1 + j : i1 + j + 1] = qj
            e = (col - (qj - zp) * scale) / u1[:, None, j, j : j + 1]
            w1[:, :, j:] -= e * u1[:, None, j, j:]
            err[:, :, j : j + 1] = e
        if i2 < n:
            w[:, :, i2:] -= np.matmul(err, u[:, i1:i2, i2:])
    if act_order:
        q = np.take_along_axis(q, np.argsort(perm, axis=1)[:, None, :], axis=2)
    return q.astype(np.int32)


def _inverse_cholesky(h: np.ndarray, damp: float | np.ndarray) -> np.ndarray:
    """Upper Cholesky factor of ``(H + damp * mean(diag H) I)^-1``, per group.

    A singular or badly conditioned H (constant inputs, fewer samples than
    columns) fails the factorization in floating point; the dampening then
    grows tenfold per retry (from at least :data:`DAMP`). As the dampening
    grows GPTQ tends to round to nearest, so the last resort is the identity
    (exactly round to nearest).
    """
    n = h.shape[-1]
    eye = np.eye(n)
    mean = np.einsum("gii->g", h)[:, None, None] / n
    lam = np.broadcast_to(np.asarray(damp, dtype=np.float64), (h.shape[0],))[:, None, None]
    for k in range(6):
        try:
            hd = h + (lam * 10.0**k if k == 0 else np.maximum(lam, DAMP) * 10.0**k) * mean * eye
            # H = R R^T with R upper (the lower factor of H with rows and columns
            # reversed, reversed back); then H^-1 = R^-T R^-1, so U = R^-1
            r = np.linalg.cholesky(hd[:, ::-1, ::-1])[:, ::-1, ::-1]
            u = np.linalg.inv(r)
            if np.all(np.isfinite(u)):
                return u
        except np.linalg.LinAlgError:
            pass
        logger.debug("GPTQ: H not positive definite at damp x%g, retrying", 10.0**k)
    return np.broadcast_to(eye, h.shape).copy()


# -- where H comes from --------------------------------------------------------------------------
@dataclass
class Hessian:
    """The input covariance of one weight: ``cov`` [G, n, n] (mean of x x^T) and layout."""

    cov: np.ndarray
    transposed: bool
    rows: int
    damp: np.ndarray  # [G], dampening relative to mean diag, see _shrinkage
    shift: np.ndarray | None = None  # [G, n, n] mean of (x_float - x) x^T, see asymmetric_target


@dataclass(frozen=True)
class _Tap:
    """How one consumer of a weight turns its input-0 array into sample rows [R, G, n]."""

    node: Node
    groups: int
    columns: int
    transposed: bool

    def samples(self, x: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray | None:
        if self.node.op in _CONVS:
            return _patches(self.node, x, self.groups, self.columns, limit, rng)
        if self.node.op == "Gemm" and self.node.attr("transA"):
            x = x.T
        elif self.node.op == "FusedMatMul" and self.node.attr("transA"):
            x = np.swapaxes(x, -1, -2)
        if x.ndim < 1 or x.shape[-1] != self.columns:
            return None
        flat = x.reshape(-1, self.columns)
        if flat.shape[0] > limit:
            flat = flat[np.sort(rng.choice(flat.shape[0], limit, replace=False))]
        return flat.reshape(-1, 1, self.columns)


def _tap(node: Node, w: np.ndarray) -> _Tap | None:
    """The sampling of ``node``'s input for its weight ``w``, or None (no GPTQ there)."""
    if node.op in _CONVS:
        if node.inputs[1] is None or node.inputs[1].const is not w or w.ndim < 3:
            return None
        group = int(node.attr("group") or 1)
        if w.shape[0] % group:
            return None
        return _Tap(node, group, int(math.prod(w.shape[1:])), False)
    if node.op not in (*_MATMULS, "Gemm") or w.ndim != 2 or node.inputs[1] is None:
        return None
    if node.inputs[1].const is not w:
        return None
    if node.op == "FusedMatMul" and (node.attr("transBatchA") or node.attr("transBatchB")):
        return None
    trans_b = node.op in ("Gemm", "FusedMatMul") and bool(node.attr("transB"))
    return _Tap(node, 1, int(w.shape[1] if trans_b else w.shape[0]), not trans_b)


def _patches(
    node: Node, x: np.ndarray, groups: int, columns: int, limit: int, rng: np.random.Generator
) -> np.ndarray | None:
    """im2col rows [R, G, Cin/g * prod(kernel)] at up to ``limit`` output positions."""
    if node.attr("format") == "NHWC":
        x = np.moveaxis(x, -1, 1)
    w = node.inputs[1].const
    kernel = list(w.shape[2:])
    nd = len(kernel)
    if x.ndim != nd + 2 or x.shape[1] != w.shape[1] * groups:
        return None
    strides = list(node.attr("strides") or [1] * nd)
    dil = list(node.attr("dilations") or [1] * nd)
    begin, end, out = resolve_pads(
        x.shape[2:], kernel, strides, dil, node.attr("pads"), node.attr("auto_pad")
    )
    if min(begin + end) < 0 or min(out) <= 0:
        return None
    xp = np.pad(x.astype(np.float32, copy=False), [(0, 0), (0, 0), *zip(begin, end, strict=True)])
    total = x.shape[0] * math.prod(out)
    pick = np.arange(total)
    if total > limit:
        pick = np.sort(rng.choice(total, limit, replace=False))
    where = np.unravel_index(pick, (x.shape[0], *out))
    cols = np.empty((pick.size, x.shape[1], math.prod(kernel)), dtype=np.float32)
    for t, tap in enumerate(np.ndindex(*kernel)):
        at = [where[1 + d] * strides[d] + tap[d] * dil[d] for d in range(nd)]
        cols[:, :, t] = xp[(where[0], slice(None), *at)]
    return cols.reshape(pick.size, groups, columns)


def _site_taps(graph: Graph, site: WeightSite) -> list[_Tap] | None:
    """One tap per consumer, all alike (a shared weight sums their H), or None."""
    w = site.value.const
    taps = []
    for node in site.value.consumers():
        t = _tap(node, w) if node.graph is graph else None
        if t is None or node.inputs[0] is None or node.inputs[0].const is not None:
            return None
        taps.append(t)
    if not taps or len({(t.groups, t.columns, t.transposed) for t in taps}) != 1:
        return None
    return taps


def collect_hessians(
    graph: Graph,
    sites: list[WeightSite],
    feeds: list[dict[str, np.ndarray]],
    *,
    max_rows: int = MAX_ROWS,
    max_bytes: int = MAX_H_BYTES,
    seed: int = 0,
    source: Source | None = None,
    reference: Source | None = None,
) -> dict[int, Hessian]:
    """``H`` per site (keyed by ``id(site.value)``) from the graph run on ``feeds``.

    Sites GPTQ cannot handle (see the module docstring) or whose inputs were never
    observed are left out. Sites are taken in passes of at most ``max_bytes`` of H.
    ``source`` shows the observer the inputs (default: a :class:`Runtime` of the
    graph as it is, stopped once it has shown them all). ``reference``: a source of
    the float graph's inputs; each ``H`` then also gets its ``shift``, the mean of
    ``(x_float - x) x^T`` over the same sampled rows (:func:`asymmetric_target`).
    """
    planned: list[tuple[WeightSite, list[_Tap], int]] = []
    for s in sites:
        taps = _site_taps(graph, s)
        if taps is None:
            continue
        size = 2 * taps[0].groups * taps[0].columns ** 2 * 8  # this feed's sum, the mean
        if size <= max_bytes:
            planned.append((s, taps, size))
    out: dict[int, Hessian] = {}
    chunk: list[tuple[WeightSite, list[_Tap]]] = []
    used = 0
    for s, taps, size in planned:
        if chunk and used + size > max_bytes:
            out.update(_collect(graph, chunk, feeds, max_rows, seed, source, reference))
            chunk, used = [], 0
        chunk.append((s, taps))
        used += size
    if chunk:
        out.update(_collect(graph, chunk, feeds, max_rows, seed, source, reference))
    return out


class _Observed(Exception):  # noqa: N818 -- a signal, not an error
    """Raised by the observer once every tapped value of a run has been seen."""


def _collect(
    graph: Graph,
    chunk: list[tuple[WeightSite, list[_Tap]]],
    feeds: list[dict[str, np.ndarray]],
    max_rows: int,
    seed: int,
    source: Source | None = None,
    reference: Source | None = None,
) -> dict[int, Hessian]:
    rng = np.random.default_rng(seed)
    want: dict[int, list[tuple[int, int, _Tap]]] = {}  # value -> (tap number, site key, tap)
    feed: dict[int, np.ndarray] = {}  # this feed's sum of x x^T
    cross: dict[int, np.ndarray] = {}  # this feed's sum of (x_float - x) x^T (with reference)
    rows: dict[int, int] = {}
    means: dict[int, np.ndarray] = {}  # sum over feeds of the feed's mean x x^T
    shifts: dict[int, np.ndarray] = {}  # sum over feeds of the feed's mean (x_float - x) x^T
    squares: dict[int, np.ndarray] = {}  # sum over feeds of its squared norm, per group
    used: dict[int, int] = {}  # feeds that reached the site, rows over all of them
    counts: dict[int, int] = {}
    number = 0
    for s, taps in chunk:
        key = id(s.value)
        t = taps[0]
        feed[key] = np.zeros((t.groups, t.columns, t.columns))
        means[key] = np.zeros_like(feed[key])
        if reference is not None:
            cross[key] = np.zeros_like(feed[key])
            shifts[key] = np.zeros_like(feed[key])
        squares[key] = np.zeros(t.groups)
        rows[key] = used[key] = counts[key] = 0
        for t in taps:
            want.setdefault(id(t.node.inputs[0]), []).append((number, key, t))
            number += 1

    float_rows: dict[int, np.ndarray] = {}  # tap number -> this feed's float sample rows
    feed_no = [0]

    def sampler(number: int) -> np.random.Generator:
        # paired runs must pick the same rows: one generator per feed and tap
        if reference is None:
            return rng
        return np.random.default_rng((seed, feed_no[0], number))

    def observe_float(value: Value, array: np.ndarray) -> None:
        for number, _key, tap in want.get(id(value), ()):
            if np.issubdtype(array.dtype, np.floating):
                x = tap.samples(np.asarray(array), max_rows, sampler(number))
                if x is not None:
                    float_rows[number] = x

    def observe(value: Value, array: np.ndarray) -> None:
        for number, key, tap in want.get(id(value), ()):
            if not np.issubdtype(array.dtype, np.floating):
                continue
            x = tap.samples(np.asarray(array), max_rows, sampler(number))
            if x is None or x.shape[0] == 0:
                continue
            xg = np.ascontiguousarray(x.transpose(1, 0, 2), dtype=np.float32)  # [G, R, n]
            feed[key] += np.matmul(xg.transpose(0, 2, 1), xg)
            rows[key] += x.shape[0]
            if reference is not None:
                xf = float_rows.pop(number, None)
                if xf is None or xf.shape != x.shape:
                    raise ValueError(f"float and quantized inputs of {tap.node.name} differ")
                d = np.ascontiguousarray((xf - x).transpose(1, 0, 2), dtype=np.float32)
                cross[key] += np.matmul(d.transpose(0, 2, 1), xg)

    run = source or _runtime_source(graph)
    for i, f in enumerate(feeds):
        feed_no[0] = i
        if reference is not None:
            float_rows.clear()
            reference(i, f, set(want), observe_float)
        run(i, f, set(want), observe)
        for key, total in feed.items():
            if rows[key]:
                m = total / rows[key]
                means[key] += m
                squares[key] += np.square(m).sum(axis=(1, 2))
                if reference is not None:
                    shifts[key] += cross[key] / rows[key]
                    cross[key][...] = 0
                used[key] += 1
                counts[key] += rows[key]
                total[...] = 0
                rows[key] = 0
    out = {}
    for s, taps in chunk:
        key = id(s.value)
        if used[key]:
            cov = means[key] / used[key]
            damp = _shrinkage(cov, squares[key], used[key])
            shift = shifts[key] / used[key] if reference is not None else None
            out[key] = Hessian(cov, taps[0].transposed, counts[key], damp, shift)
    return out


def _runtime_source(graph: Graph) -> Source:
    """The graph run by the executor, stopped once every wanted value has been shown."""
    from converter.executor.runtime import Runtime

    rt = Runtime(graph)

    def run(_k: int, feed: dict[str, np.ndarray], wanted: set[int], observe: Observer) -> None:
        pending = set(wanted)

        def watch(value: Value, array: np.ndarray) -> None:
            if id(value) in pending:
                observe(value, array)
                pending.discard(id(value))
                if not pending:
                    raise _Observed

        rt.observe = watch
        try:
            rt.run(feed)
        except _Observed:  # the rest of the graph has nothing to show
            pass
        finally:
            rt.observe = None

    return run


def _shrinkage(cov: np.ndarray, squares: np.ndarray, feeds: int) -> np.ndarray:
    """Per-group dampening (relative to mean diag H) that shrinks ``cov`` by its noise.

    ``cov`` is the mean of ``feeds`` per-feed covariances ``S_f``; its estimation
    noise ``E||cov - H||^2`` is ``sum_f ||S_f - cov||^2 / (F (F - 1))`` (feeds are
    the independent draws: the rows of one feed are not). Shrinking towards
    ``mu I`` by ``a = noise / ||cov - mu I||^2`` (Ledoit-Wolf) is dampening by
    ``a / (1 - a)``; few or disagreeing feeds (a rank-deficient ``cov``) thus move
    GPTQ towards round-to-nearest instead of fitting directions no feed explored.
    """
    if feeds < 2:
        return np.full(cov.shape[0], DAMP)
    n = cov.shape[-1]
    norm2 = np.square(cov).sum(axis=(1, 2))
    noise = np.maximum(squares - feeds * norm2, 0.0) / (feeds * (feeds - 1))
    mu = np.einsum("gii->g", cov) / n
    spread = np.maximum(norm2 - n * mu**2, 1e-300)
    a = np.clip(noise / spread, 0.0, 0.99)
    return np.maximum(DAMP, a / (1 - a))


# -- layer by layer --------------------------------------------------------------------------
def sequential_stages(graph: Graph, sites: list[WeightSite]) -> list[list[int]]:
    """Indices into ``sites`` grouped by stage: a site's stage is 1 + the highest stage
    of the sites upstream of its consumers' inputs (0: none upstream).

    The stage is the length of the longest chain of ``sites`` that feeds the site, so
    a site never depends on one of its own stage or a later one. Other weights do
    not count (the caller quantizes them before the first stage). A weight shared
    by several nodes takes the stage its first consumer gives it (a consumer fed by
    the weight's own output sees it quantized, in a later run, only in that it was
    not quantized yet: harmless, and rare).
    """
    index = {id(s.value): i for i, s in enumerate(sites)}
    stage: dict[int, int] = {}
    depth: dict[int, int] = {}  # value id -> highest stage upstream of it (absent: none)
    for node in graph.nodes:
        data = max((depth.get(id(v), -1) for v in _reads(node) if id(v) not in index),
                   default=-1)  # fmt: skip
        out = data
        for v in node.inputs:
            if v is not None and id(v) in index:
                i = stage.setdefault(index[id(v)], data + 1)
                out = max(out, i)
        for o in node.outputs:
            depth[id(o)] = out
    groups: dict[int, list[int]] = {}
    for i, k in sorted(stage.items()):
        groups.setdefault(k, []).append(i)
    return [groups[k] for k in sorted(groups)]


def _reads(node: Node) -> list[Value]:
    """``node``'s inputs and the outer values its bodies read (what its outputs depend on)."""
    out = [v for v in node.inputs if v is not None]
    for sub in node.subgraphs():
        out.extend(v for inner in sub.all_nodes() for v in inner.inputs if v is not None)
    return out


def quantize_sequentially(
    graph: Graph,
    sites: list[WeightSite],
    feeds: list[dict[str, np.ndarray]],
    round_site: Callable[[int, Hessian | None], Quantized],
    wants_h: list[bool],
    *,
    max_rows: int = MAX_ROWS,
    max_bytes: int = MAX_H_BYTES,
    seed: int = 0,
    asymmetric: bool = True,
    say: Callable[[str], None] | None = None,
) -> tuple[list[Quantized], int]:
    """Each site quantized by ``round_site(i, H)``, ``H`` from the graph quantized so far.

    Sites without ``wants_h`` (or that GPTQ cannot handle) are rounded first, with
    ``H=None``. The others follow stage by stage (:func:`sequential_stages`); a
    stage's ``H`` come from :func:`collect_hessians` on ``feeds`` with every earlier
    site holding its dequantized weights (``None`` where no input was observed).
    The graph is replayed node by node (:class:`_Replay`): a stage recomputes only
    what the previous one changed, up to its own inputs. ``asymmetric``: each ``H``
    also gets the float graph's inputs' ``shift`` (:func:`asymmetric_target`).
    ``round_site`` must quantize the site's float weights (the caller's copy):
    when it is called, ``sites[i].value.const`` is still the float tensor. On
    return every site's constant is its dequantized weights, and the second
    result is the number of stages. ``say`` gets a progress line about every
    tenth of the stages.
    """
    results: list[Quantized | None] = [None] * len(sites)
    floats = {id(s.value): s.value.const for s in sites}
    staged = []
    for i, s in enumerate(sites):
        if wants_h[i] and _site_taps(graph, s) is not None:
            staged.append(i)
            continue
        results[i] = q = round_site(i, None)
        s.value.const = q.dequant
    order = sequential_stages(graph, [sites[i] for i in staged])
    stages = [[staged[j] for j in st] for st in order]
    inputs = [{id(t.node.inputs[0]) for i in st for t in _site_taps(graph, sites[i]) or ()}
              for st in stages]  # fmt: skip
    replay = _Replay(graph, feeds, inputs)
    reference = _Replay(graph, feeds, inputs, weights=floats) if asymmetric else None
    for k, stage in enumerate(stages):
        if say is not None and (k + 1) * 10 // len(stages) != k * 10 // len(stages):
            say(f"weight quant: GPTQ layer by layer, stage {k + 1}/{len(stages)}")
        members = [sites[i] for i in stage]
        found = collect_hessians(
            graph, members, feeds, max_rows=max_rows, max_bytes=max_bytes, seed=seed,
            source=replay.source, reference=reference.source if reference else None,
        )  # fmt: skip
        for i, s in zip(stage, members, strict=True):
            results[i] = q = round_site(i, found.get(id(s.value)))
            s.value.const = q.dequant
        replay.next_stage()
        if reference is not None:
            reference.next_stage()
    logger.debug("GPTQ: %d sites in %d sequential stages", len(staged), len(stages))
    done = [q for q in results if q is not None]
    assert len(done) == len(sites)
    return done, len(stages)


class _Replay:
    """The graph run node by node on each feed, its values kept from stage to stage.

    Stage ``k`` needs the values in ``inputs[k]``; only the nodes upstream of
    them whose outputs are missing run. Those values depend on the sites of
    earlier stages only, which no longer change, so nothing computed ever goes
    stale. After a stage, a value is dropped once no later stage can need it
    (every reader upstream of a later stage's inputs has run): what stays is
    about the frontier between the quantized part of the graph and the rest,
    per feed. ``weights``: arrays (by value id) read instead of those constants
    (the float weights, for a replay of the float graph).
    """

    def __init__(
        self,
        graph: Graph,
        feeds: list[dict[str, np.ndarray]],
        inputs: list[set[int]],
        weights: dict[int, np.ndarray] | None = None,
    ) -> None:
        from passes.quant.sensitivity import _Executor

        self.ex = _Executor(graph)
        self.graph = graph
        self.nodes = graph.nodes
        self.weights = weights or {}
        self.inputs = inputs
        self.stage = 0
        self.envs: list[dict[int, np.ndarray]] = [
            {id(v): np.asarray(f[v.name]) for v in graph.inputs} for f in feeds
        ]
        self.producer: dict[int, int] = {}
        self.readers: dict[int, list[int]] = {}
        for i, node in enumerate(self.nodes):
            for o in node.outputs:
                self.producer[id(o)] = i
            for v in _reads(node):
                self.readers.setdefault(id(v), []).append(i)
        self.upstream = [self._upstream(vs) for vs in inputs]

    def _upstream(self, values: set[int]) -> set[int]:
        """Indices of the nodes upstream of ``values``."""
        seen: set[int] = set()
        todo = [self.producer[v] for v in values if v in self.producer]
        while todo:
            i = todo.pop()
            if i not in seen:
                seen.add(i)
                todo.extend(self.producer[id(v)] for v in _reads(self.nodes[i])
                            if id(v) in self.producer)  # fmt: skip
        return seen

    def source(
        self, k: int, feed: dict[str, np.ndarray], wanted: set[int], observe: Observer
    ) -> None:
        """:data:`Source` over feed ``k``: runs what ``wanted`` needs and is missing."""
        env = self.envs[k]
        for i in self._missing(env, wanted):
            node = self.nodes[i]
            swap = {p: self.weights[id(v)] for p, v in enumerate(node.inputs)
                    if v is not None and id(v) in self.weights}  # fmt: skip
            for o, r in zip(node.outputs, self.ex.call(i, env, replace=swap), strict=False):
                env[id(o)] = r
        shown = [v for v in self.graph.inputs if id(v) in wanted]
        for i in sorted({self.producer[v] for v in wanted if v in self.producer}):
            shown.extend(o for o in self.nodes[i].outputs if id(o) in wanted)
        for v in shown:  # in graph order, as a run shows them
            if id(v) in env:
                observe(v, env[id(v)])

    def _missing(self, env: dict[int, np.ndarray], wanted: set[int]) -> list[int]:
        """The nodes to run, in graph order, for ``env`` to hold ``wanted``."""
        run: set[int] = set()
        todo = [self.producer[v] for v in wanted if v not in env and v in self.producer]
        while todo:
            i = todo.pop()
            if i not in run:
                run.add(i)
                todo.extend(self.producer[id(v)] for v in _reads(self.nodes[i])
                            if id(v) not in env and id(v) in self.producer)  # fmt: skip
        return sorted(run)

    def next_stage(self) -> None:
        """Drop the values no later stage needs."""
        self.stage += 1
        later = set().union(*self.upstream[self.stage :])
        wanted = set().union(*self.inputs[self.stage :])
        for env in self.envs:
            pending = {j for j in later if not all(id(o) in env for o in self.nodes[j].outputs)}
            for vid in [v for v in env if v in self.producer and v not in wanted]:
                if not any(j in pending for j in self.readers.get(vid, ())):
                    del env[vid]


def asymmetric_target(w: np.ndarray, h: Hessian) -> np.ndarray:
    """The weights whose GPTQ rounding on quantized inputs best reproduces the float output.

    With ``X`` the float layer's inputs and ``Xq`` the quantized graph's (same
    rows), ``||W X - Q Xq||^2 = ||W X - W' Xq||^2 + ||(W' - Q) Xq||^2`` for the
    least-squares ``W' = W + W (X - Xq) Xq^T (Xq Xq^T)^-1`` (its residual is
    orthogonal to ``Xq``): GPTQ on ``W'`` with ``H = Xq Xq^T`` minimizes the
    asymmetric objective exactly (GPTAQ, Li et al. 2025, applies the same
    correction column by column). ``Xq Xq^T`` is dampened as GPTQ dampens it.
    """
    if h.shift is None:
        return w
    cov = h.cov if h.cov.ndim == 3 else h.cov[None]
    g, n = cov.shape[0], cov.shape[-1]
    w64 = np.asarray(w, np.float64)
    rows = (w64.T if h.transposed else w64.reshape(w64.shape[0], -1)).reshape(g, -1, n)
    mean = np.einsum("gii->g", cov) / n
    lam = np.maximum(np.broadcast_to(h.damp, (g,)), DAMP) * np.where(mean > 0, mean, 1.0)
    hd = cov + lam[:, None, None] * np.eye(n)
    # rows' = rows + rows D Hd^-1: solve Hd^T Y^T = (rows D)^T (Hd is symmetric)
    moved = np.linalg.solve(hd, np.matmul(rows, h.shift).transpose(0, 2, 1)).transpose(0, 2, 1)
    out = (rows + moved).reshape(-1, n)
    out = out.T if h.transposed else out.reshape(w64.shape)
    return np.ascontiguousarray(out).astype(np.asarray(w).dtype)
