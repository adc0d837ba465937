"""Activation statistics streamed during calibration, and the ranges chosen from them.

:class:`TensorStats` keeps, per float tensor, the running minimum and maximum and
(when a histogram method is asked for) a signed histogram of ``2 * BINS`` equal
bins over ``[-R, R]``: ``BINS`` bins per sign. ``R`` starts at the first non-zero
sample's largest magnitude and grows by powers of two when a later sample exceeds
it; growing merges runs of ``2**k`` old bins into one new bin, which is exact
(old bin edges always fall on new ones). No activation tensor is ever stored.

:func:`choose_range` turns the statistics into a clipping range ``(lo, hi)``:

* ``MAX_MIN``: the observed ``[min, max]``.
* ``PERCENTILE`` and ``REMOVAL_OUTLIER`` (MindSpore's name): the 0.01 % and
  99.99 % quantiles of the histogram (symmetric: the 99.99 % quantile of ``|x|``).
* ``KL`` (TensorRT's entropy calibration): over the histogram of ``|x|``, the
  threshold ``T`` (a bin edge, at least ``levels`` bins) minimising the KL divergence
  between the clipped distribution (outliers added to the last bin) and the same
  distribution merged into ``levels`` quantization levels (128 for signed data,
  256 for one-signed data quantized asymmetrically); the range is then
  ``[max(min, -T), min(max, T)]``.
* ``MSE``: the range minimising the squared error of quantizing the histogram's bin
  centres: ``alpha * max |x|`` (symmetric), else ``alpha * [min, max]`` then each end
  refined on its own, ``alpha`` searched on a grid of 100 values in ``(0, 1]``.

:class:`ChannelMean` keeps per-channel running means (bias correction).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "BINS",
    "METHODS",
    "ChannelMean",
    "Histogram",
    "TensorStats",
    "affine_params",
    "choose_range",
]

BINS = 2048
"""Histogram bins per sign (the signed histogram has 2 * BINS)."""
PERCENT = 99.99
METHODS = ("MAX_MIN", "KL", "PERCENTILE", "MSE", "REMOVAL_OUTLIER")

Array = np.ndarray


def _finite_extrema(x: Array) -> tuple[float, float] | None:
    """(min, max) of the finite entries of ``x``; None when there are none."""
    if x.size == 0:
        return None
    lo, hi = float(x.min()), float(x.max())
    if math.isfinite(lo) and math.isfinite(hi):
        return lo, hi
    finite = x[np.isfinite(x)]
    if finite.size == 0:
        return None
    return float(finite.min()), float(finite.max())


class Histogram:
    """Signed histogram over ``[-limit, limit]`` that grows by exact re-binning."""

    def __init__(self, bins: int = BINS) -> None:
        self.bins = bins
        self.limit = 0.0
        self.counts = np.zeros(2 * bins, np.float64)
        self._zeros = 0.0  # samples seen while every value so far was 0

    @property
    def width(self) -> float:
        return self.limit / self.bins

    def add(self, x: Array, lo: float, hi: float) -> None:
        """Count the finite entries of ``x`` whose extrema are ``lo`` and ``hi``."""
        top = max(abs(lo), abs(hi))
        if top == 0.0:
            if self.limit == 0.0:
                self._zeros += x.size
            else:
                self.counts[self.bins] += x.size
            return
        if self.limit == 0.0:
            self.limit = top
            self.counts[self.bins] += self._zeros
        elif top > self.limit:
            self._grow(top)
        flat = x.reshape(-1)
        if not (math.isfinite(float(flat.min())) and math.isfinite(float(flat.max()))):
            flat = flat[np.isfinite(flat)]
        idx = ((flat.astype(np.float32) + np.float32(self.limit))
               * np.float32(self.bins / self.limit)).astype(np.int64)
        np.clip(idx, 0, 2 * self.bins - 1, out=idx)
        self.counts += np.bincount(idx, minlength=2 * self.bins)

    def _grow(self, top: float) -> None:
        factor = 2 ** math.ceil(math.log2(top / self.limit))
        while self.limit * factor < top:  # guard against log2 rounding
            factor *= 2
        j = np.arange(2 * self.bins)
        new = ((factor - 1) * self.bins + j) // factor
        self.counts = np.bincount(new, weights=self.counts, minlength=2 * self.bins)
        self.limit *= factor

    def magnitudes(self) -> Array:
        """Histogram of ``|x|``: BINS bins over ``[0, limit]``."""
        b = self.bins
        return self.counts[b:] + self.counts[:b][::-1]

    def centers(self) -> Array:
        return (np.arange(2 * self.bins) + 0.5) * self.width - self.limit


class ChannelMean:
    """Running per-channel mean of a tensor along ``axis`` (and its last seen shape)."""

    def __init__(self, axis: int) -> None:
        self.axis = axis
        self.sums: Array | None = None
        self.count = 0
        self.shape: tuple[int, ...] = ()

    def add(self, x: Array) -> None:
        if x.ndim == 0:
            return
        axis = self.axis % x.ndim
        other = tuple(i for i in range(x.ndim) if i != axis)
        s = x.sum(axis=other, dtype=np.float64)
        if self.sums is None or self.sums.shape != s.shape:
            self.sums = np.zeros_like(s)
            self.count = 0
        self.sums += s
        self.count += x.size // max(x.shape[axis], 1)
        self.shape = tuple(x.shape)

    @property
    def mean(self) -> Array | None:
        return None if self.sums is None or self.count == 0 else self.sums / self.count


class TensorStats:
    """Running min / max (and optionally a histogram) of one float tensor."""

    def __init__(self, histogram: bool) -> None:
        self.min = math.inf
        self.max = -math.inf
        self.hist = Histogram() if histogram else None
        self.samples = 0

    def add(self, x: Array) -> None:
        ext = _finite_extrema(x)
        self.samples += 1
        if ext is None:
            return
        lo, hi = ext
        self.min, self.max = min(self.min, lo), max(self.max, hi)
        if self.hist is not None:
            self.hist.add(x, lo, hi)

    @property
    def seen(self) -> bool:
        return self.min <= self.max


def choose_range(stats: TensorStats, method: str, symmetric: bool) -> tuple[float, float]:
    """The clipping range ``(lo, hi)`` of a tensor under ``method``."""
    if not stats.seen:
        return 0.0, 0.0
    lo, hi = stats.min, stats.max
    h = stats.hist
    if method == "MAX_MIN" or h is None or h.limit == 0.0:
        return lo, hi
    if method in ("PERCENTILE", "REMOVAL_OUTLIER"):
        return _percentile_range(h, lo, hi, symmetric)
    if method == "KL":
        levels = 256 if (lo >= 0 or hi <= 0) and not symmetric else 128
        t = kl_threshold(h.magnitudes(), levels) * h.width
        return max(lo, -t), min(hi, t)
    if method == "MSE":
        return _mse_range(h, lo, hi, symmetric)
    raise ValueError(f"unknown activation_quant_method {method!r}")


def _percentile_range(h: Histogram, lo: float, hi: float, symmetric: bool) -> tuple[float, float]:
    q = PERCENT / 100.0
    if symmetric:
        mags = h.magnitudes()
        cdf = np.cumsum(mags) / max(mags.sum(), 1.0)
        t = (int(np.searchsorted(cdf, q)) + 1) * h.width
        return max(lo, -t), min(hi, t)
    cdf = np.cumsum(h.counts) / max(h.counts.sum(), 1.0)
    low = int(np.searchsorted(cdf, 1.0 - q, side="right")) * h.width - h.limit
    high = (int(np.searchsorted(cdf, q)) + 1) * h.width - h.limit
    return max(lo, min(low, 0.0)), min(hi, max(high, 0.0))


def kl_threshold(mags: Array, levels: int = 128) -> int:
    """TensorRT's entropy calibration: the number of ``mags`` bins to keep."""
    used = int(np.flatnonzero(mags)[-1]) + 1 if mags.any() else 0
    if used <= levels:
        return max(used, 1)
    step = max(1, (used - levels) // 128)
    coarse = list(range(levels, used + 1, step))
    if coarse[-1] != used:
        coarse.append(used)
    best = min(coarse, key=lambda i: _kl_divergence(mags, i, levels))
    fine = range(max(levels, best - step + 1), min(used, best + step - 1) + 1)
    return min(fine, key=lambda i: _kl_divergence(mags, i, levels))


def _kl_divergence(mags: Array, i: int, levels: int) -> float:
    """KL(p || q) of the first ``i`` bins (p: outliers folded in; q: ``levels`` levels).

    Bin 0 (which holds the exact zeros, e.g. after a Relu) is kept as it is in q:
    zero is exactly representable, so its spike must not be smeared over its level.
    """
    p = mags[:i].copy()
    p[-1] += mags[i:].sum()
    starts = (np.arange(levels) * i) // levels
    kept = mags[:i].copy()
    spike = kept[0]
    kept[0] = 0.0
    nonzero = p > 0
    nonzero[0] = False
    sums = np.add.reduceat(kept, starts)
    nz = np.add.reduceat(nonzero.astype(np.float64), starts)
    per = np.divide(sums, nz, out=np.zeros_like(sums), where=nz > 0)
    group = np.repeat(np.arange(levels), np.diff(np.append(starts, i)))
    q = np.where(nonzero, per[group], 0.0)
    q[0] = spike
    ps, qs = p.sum(), q.sum()
    if ps == 0 or qs == 0:
        return math.inf
    p, q = p / ps, q / qs
    mask = p > 0
    if np.any(q[mask] == 0):
        q = q + 1e-12  # TensorRT smooths zero bins of q the same way
        q = q / q.sum()
    return float(np.sum(p[mask] * np.log(p[mask] / q[mask])))


def _mse_range(h: Histogram, lo: float, hi: float, symmetric: bool) -> tuple[float, float]:
    alphas = np.linspace(0.01, 1.0, 100)
    keep = h.counts > 0
    centers, counts = h.centers()[keep], h.counts[keep]

    def best(los: Array, his: Array) -> int:
        errs = [_quant_error(centers, counts, float(a), float(b), symmetric)
                for a, b in zip(los, his, strict=True)]
        return int(np.argmin(errs))

    if symmetric:
        t = max(-lo, hi)
        k = best(-alphas * t, alphas * t)
        return max(lo, float(-alphas[k] * t)), min(hi, float(alphas[k] * t))
    lo0, hi0 = min(lo, 0.0), max(hi, 0.0)
    k = best(alphas * lo0, alphas * hi0)
    a, b = alphas[k] * lo0, alphas[k] * hi0
    for _ in range(2):  # then each end on its own
        b = alphas[best(np.full_like(alphas, a), alphas * hi0)] * hi0
        a = alphas[best(alphas * lo0, np.full_like(alphas, b))] * lo0
    return max(lo, float(a)), min(hi, float(b))


def _quant_error(centers: Array, counts: Array, lo: float, hi: float, symmetric: bool) -> float:
    scale, zp = affine_params(lo, hi, symmetric)
    q = np.clip(np.rint(centers / scale) + zp, -128, 127)
    return float(np.sum(counts * ((q - zp) * scale - centers) ** 2))


def affine_params(lo: float, hi: float, symmetric: bool) -> tuple[np.float32, np.int8]:
    """int8 (scale, zero point) of the range ``[lo, hi]`` widened to include 0.

    Asymmetric: ``scale = (hi - lo) / 255``, ``zero_point = round(-128 - lo / scale)``;
    symmetric: ``scale = max(|lo|, |hi|) / 127``, ``zero_point = 0``.
    """
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if symmetric:
        top = max(-lo, hi)
        return np.float32(top / 127.0 if top > 0 else 1.0), np.int8(0)
    if hi - lo <= 0:
        return np.float32(1.0), np.int8(0)
    scale = np.float32((hi - lo) / 255.0)
    zp = int(np.clip(np.rint(-128.0 - lo / float(scale)), -128, 127))
    return scale, np.int8(zp)
