"""1-D k-means codebooks for weight quantization (``[weight_quant_param] kmeans=true``).

A k-means codebook places its ``2**b`` levels where the weights are, so a
heavy-tailed tensor keeps both its bulk and its outliers: silero-vad's
``encoder.3`` (kurtosis 17000, max |w| 55 over a median of 0.008) has 0.23
relative error on a per-tensor 5-bit grid and 0.024 with a 5-bit codebook.
Lloyd's iterations alone get little of that: they only move levels locally,
and from quantile starting levels all 32 sit in the bulk (0.092 there).

Squared-error k-means in one dimension can be solved exactly: the optimal
clusters are intervals of the sorted values, and the best split of the first
``j`` values into ``c`` intervals follows from the best splits into ``c - 1``
(dynamic programming, Wang & Song 2011, "Ckmeans.1d.dp"). :func:`codebook`
runs that program on a histogram of the values (at most :data:`ATOMS` bins:
uniform-width bins resolve the tails, equal-count bins the bulk, and each bin
is represented exactly by its count, sum and sum of squares), then refines
the levels with Lloyd's iterations on the values themselves. Where the
program would cost too much (more than :data:`DP_MAX_LEVELS` levels), Lloyd's
iterations start from levels spaced by the cube root of the density, the
point density of the optimal high-resolution quantizer (Panter & Dite). Every
candidate is scored by its actual squared error and the best one is kept.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ATOMS", "DP_MAX_LEVELS", "codebook", "lloyd"]

ATOMS = 1024
"""Histogram bins the dynamic program works on (cost: levels x ATOMS**2)."""
DP_MAX_LEVELS = 64
"""Up to this many levels (6 bits) the codebook comes from the dynamic program."""
_LLOYD_ITERS = 60


def _assign(x: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Index of the nearest of the sorted ``centers`` for each value."""
    return np.searchsorted((centers[1:] + centers[:-1]) / 2, x)


def lloyd(x: np.ndarray, centers: np.ndarray, iters: int = _LLOYD_ITERS) -> np.ndarray:
    """Lloyd's iterations from ``centers``; returns sorted levels (empty clusters stay put)."""
    centers = np.sort(np.asarray(centers, dtype=np.float64))
    for _ in range(iters):
        idx = _assign(x, centers)
        count = np.bincount(idx, minlength=centers.size)
        total = np.bincount(idx, weights=x, minlength=centers.size)
        new = np.sort(np.where(count > 0, total / np.maximum(count, 1), centers))
        if np.allclose(new, centers, rtol=0, atol=1e-12 * max(1.0, float(np.abs(x).max()))):
            break
        centers = new
    return centers


def _sq_error(x: np.ndarray, centers: np.ndarray) -> float:
    return float(np.square(x - centers[_assign(x, centers)]).sum())


def _atoms(x: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counts, sums and sums of squares of the non-empty bins, in value order.

    The bin edges are the union of ``bins // 2`` equal-width and ``bins // 2``
    equal-count edges.
    """
    lo, hi = float(x.min()), float(x.max())
    half = max(bins // 2, 1)
    edges = np.unique(
        np.concatenate([np.linspace(lo, hi, half + 1), np.quantile(x, np.linspace(0, 1, half + 1))])
    )
    idx = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, max(edges.size - 2, 0))
    w = np.bincount(idx, minlength=edges.size).astype(np.float64)
    s = np.bincount(idx, weights=x, minlength=edges.size)
    q = np.bincount(idx, weights=x * x, minlength=edges.size)
    keep = w > 0
    return w[keep], s[keep], q[keep]


def _dp_levels(x: np.ndarray, k: int, bins: int = ATOMS) -> np.ndarray:
    """Optimal ``k``-level codebook of the histogram of ``x`` (interval clusters of bins)."""
    w, s, q = _atoms(x, bins)
    m = w.size
    if m <= k:  # every bin its own level
        return s / w
    cw, cs, cq = (np.concatenate([[0.0], np.cumsum(a)]) for a in (w, s, q))
    a, b = np.meshgrid(np.arange(m + 1), np.arange(m + 1), indexing="ij")
    ww, ss = cw[b] - cw[a], cs[b] - cs[a]
    with np.errstate(divide="ignore", invalid="ignore"):
        cost = np.where(a < b, (cq[b] - cq[a]) - ss * ss / ww, np.inf)  # bins [a, b) as one cluster
    best = cost[0].copy()  # best[j]: bins [0, j) in c clusters
    back = []
    cols = np.arange(m + 1)
    for _ in range(1, k):
        total = best[:, None] + cost
        arg = np.argmin(total, axis=0)
        back.append(arg)
        best = total[arg, cols]
    bounds = [m]
    for arg in reversed(back):
        bounds.append(int(arg[bounds[-1]]))
    bounds = sorted(set(bounds) | {0})
    pairs = zip(bounds[:-1], bounds[1:], strict=True)
    return np.array([(cs[e] - cs[b_]) / (cw[e] - cw[b_]) for b_, e in pairs if cw[e] > cw[b_]])


def _cube_root_levels(x: np.ndarray, k: int, bins: int = 4096) -> np.ndarray:
    """``k`` levels at equal steps of the cumulative cube root of the density."""
    hist, edges = np.histogram(x, bins=bins)
    mass = np.concatenate([[0.0], np.cumsum(np.cbrt(hist.astype(np.float64)))])
    return np.interp((np.arange(k) + 0.5) / k, mass / mass[-1], edges)


def _split(x: np.ndarray, coarse: np.ndarray, k: int) -> np.ndarray:
    """``k`` levels: each cluster of ``coarse`` gets a share of them (by its size) placed
    at its own quantiles, so the split codebook is at least as good as ``coarse``."""
    idx = _assign(x, coarse)
    sizes = np.bincount(idx, minlength=coarse.size)
    share = np.maximum(1, np.floor(sizes / sizes.sum() * k)).astype(int)
    while share.sum() > k:  # rounding up the small clusters may overshoot
        share[np.argmax(share)] -= 1
    share[np.argmax(sizes)] += k - share.sum()
    levels = [
        np.quantile(x[idx == c], (np.arange(n) + 0.5) / n) if sizes[c] else np.full(n, coarse[c])
        for c, n in enumerate(share)
    ]
    return np.concatenate(levels)


def codebook(x: np.ndarray, k: int) -> np.ndarray:
    """At most ``k`` sorted float64 levels minimizing the squared error of ``x`` (see module doc).

    Fewer than ``k`` levels come back only when ``x`` has fewer distinct values.
    """
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    distinct = np.unique(x)
    if distinct.size <= k:
        return distinct
    starts = [np.quantile(x, (np.arange(k) + 0.5) / k), _cube_root_levels(x, k)]
    if k <= DP_MAX_LEVELS:
        starts.append(_dp_levels(x, k))
    else:  # the optimal coarse codebook, each level split at its cluster's quantiles
        coarse = _dp_levels(x, DP_MAX_LEVELS)
        starts.append(_split(x, coarse, k))
    found = [lloyd(x, c) for c in starts]
    return min(found, key=lambda c: _sq_error(x, c))
