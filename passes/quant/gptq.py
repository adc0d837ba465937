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

All ``H`` come from the float graph in one pass (per :data:`MAX_H_BYTES` of
them), not layer by layer through the already quantized layers as in the
paper: one run per feed instead of one per layer.

Other weights (ConvTranspose, RNN, attention, Gather tables, batched MatMul B,
weights used inside control-flow bodies) have no ``H`` and are rounded to
nearest by the caller.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from converter.ms.codec import code_dtype, dequantize
from ir import Graph, Node, Value
from ir.ops.nn import resolve_pads
from passes.quant.weight import Quantized, WeightSite, _channels, _grid

__all__ = ["BLOCK", "DAMP", "Hessian", "clipped_grid", "collect_hessians", "gptq_quantize"]

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
) -> dict[int, Hessian]:
    """``H`` per site (keyed by ``id(site.value)``) from the float graph run on ``feeds``.

    Sites GPTQ cannot handle (see the module docstring) or whose inputs were never
    observed are left out. Sites are taken in passes of at most ``max_bytes`` of H.
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
            out.update(_collect(graph, chunk, feeds, max_rows, seed))
            chunk, used = [], 0
        chunk.append((s, taps))
        used += size
    if chunk:
        out.update(_collect(graph, chunk, feeds, max_rows, seed))
    return out


def _collect(
    graph: Graph,
    chunk: list[tuple[WeightSite, list[_Tap]]],
    feeds: list[dict[str, np.ndarray]],
    max_rows: int,
    seed: int,
) -> dict[int, Hessian]:
    from converter.executor.runtime import Runtime

    rng = np.random.default_rng(seed)
    want: dict[int, list[tuple[int, _Tap]]] = {}
    feed: dict[int, np.ndarray] = {}  # this feed's sum of x x^T
    rows: dict[int, int] = {}
    means: dict[int, np.ndarray] = {}  # sum over feeds of the feed's mean x x^T
    squares: dict[int, np.ndarray] = {}  # sum over feeds of its squared norm, per group
    used: dict[int, int] = {}  # feeds that reached the site, rows over all of them
    counts: dict[int, int] = {}
    for s, taps in chunk:
        key = id(s.value)
        t = taps[0]
        feed[key] = np.zeros((t.groups, t.columns, t.columns))
        means[key] = np.zeros_like(feed[key])
        squares[key] = np.zeros(t.groups)
        rows[key] = used[key] = counts[key] = 0
        for t in taps:
            want.setdefault(id(t.node.inputs[0]), []).append((key, t))

    def observe(value: Value, array: np.ndarray) -> None:
        for key, tap in want.get(id(value), ()):
            if not np.issubdtype(array.dtype, np.floating):
                continue
            x = tap.samples(np.asarray(array), max_rows, rng)
            if x is None or x.shape[0] == 0:
                continue
            xg = np.ascontiguousarray(x.transpose(1, 0, 2), dtype=np.float32)  # [G, R, n]
            feed[key] += np.matmul(xg.transpose(0, 2, 1), xg)
            rows[key] += x.shape[0]

    rt = Runtime(graph, observe=observe)
    for f in feeds:
        rt.run(f)
        for key, total in feed.items():
            if rows[key]:
                m = total / rows[key]
                means[key] += m
                squares[key] += np.square(m).sum(axis=(1, 2))
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
            out[key] = Hessian(cov, taps[0].transposed, counts[key], damp)
    return out


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
