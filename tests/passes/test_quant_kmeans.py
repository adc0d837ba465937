"""1-D k-means codebooks (passes/quant/kmeans.py)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from passes.quant.kmeans import _assign, _dp_levels, codebook, lloyd


def _error(x: np.ndarray, levels: np.ndarray) -> float:
    return float(np.square(x - levels[_assign(x, np.sort(levels))]).sum())


def _brute_force(x: np.ndarray, k: int) -> float:
    """Least squared error over every split of the sorted values into k intervals."""
    xs = np.sort(x)
    best = np.inf
    for cuts in itertools.combinations(range(1, xs.size), k - 1):
        parts = np.split(xs, cuts)
        best = min(best, sum(float(np.square(p - p.mean()).sum()) for p in parts))
    return best


@pytest.mark.parametrize("seed", range(4))
def test_dynamic_program_is_optimal(seed: int) -> None:
    x = np.random.default_rng(seed).standard_t(2, 11)
    for k in (2, 3, 4):
        levels = _dp_levels(x, k, bins=64)  # 11 values: every value its own bin
        assert levels.size == k
        assert _error(x, levels) == pytest.approx(_brute_force(x, k), rel=1e-9, abs=1e-12)


def test_heavy_tails_keep_their_outliers() -> None:
    """A bulk and a few outliers: Lloyd from quantiles loses the outliers, codebook() doesn't."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 0.01, 20000), rng.normal(0, 30, 20)])
    k = 32
    quantile_start = lloyd(x, np.quantile(x, (np.arange(k) + 0.5) / k))
    levels = codebook(x, k)
    assert levels.size == k and np.all(np.diff(levels) > 0)
    assert _error(x, levels) < 0.2 * _error(x, quantile_start)


@pytest.mark.parametrize("k", [4, 16, 64, 256])
def test_codebook_never_worse_than_its_lloyd_starts(k: int) -> None:
    x = np.random.default_rng(k).laplace(0, 1, 5000)
    levels = codebook(x, k)
    assert levels.size == k
    for start in (np.quantile(x, (np.arange(k) + 0.5) / k),):
        assert _error(x, levels) <= _error(x, lloyd(x, start)) * (1 + 1e-9)


def test_few_distinct_values_are_their_own_levels() -> None:
    x = np.array([1.0, 1.0, -2.0, 3.0, 3.0])
    np.testing.assert_array_equal(codebook(x, 8), [-2.0, 1.0, 3.0])
