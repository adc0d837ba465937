"""Verification metrics and thresholds."""

from __future__ import annotations

import numpy as np
import pytest

from converter.errors import UsageError
from converter.verify import Thresholds, compare_outputs, make_inputs, output_metrics
from ir import DataType, Value


def test_identical_outputs_pass():
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    m = output_metrics("y", x, x.copy(), Thresholds())
    assert m.passed and m.cosine == pytest.approx(1.0) and m.max_abs == 0 and m.mean_bias == 0


def test_cosine_threshold_fails_and_says_why():
    ref = np.ones(100, np.float32)
    got = ref + np.linspace(-0.5, 0.5, 100).astype(np.float32)
    m = output_metrics("y", got, ref, Thresholds(cosine=0.9999))
    assert not m.passed and "cosine" in m.failures[0]
    assert m.max_abs == pytest.approx(0.5, rel=1e-5)


def test_mean_bias_is_signed_and_accuracy_threshold_gates():
    ref = np.full(10, 2.0, np.float32)
    got = ref + 0.02
    m = output_metrics("y", got, ref, Thresholds(cosine=None, accuracy_pct=0.5))
    assert m.mean_bias == pytest.approx(0.02, rel=1e-4)
    assert m.mean_error_pct == pytest.approx(1.0, rel=1e-3)  # 0.02 / 2.0 = 1 %
    assert not m.passed and "mean bias" in m.failures[0]


def test_nan_in_output_only_fails():
    ref = np.zeros(4, np.float32)
    got = ref.copy()
    got[1] = np.nan
    m = output_metrics("y", got, ref, Thresholds())
    assert m.nan_inf and not m.passed


def test_shape_mismatch_and_missing_output_fail():
    m = output_metrics("y", np.zeros((2, 3)), np.zeros((3, 2)), Thresholds())
    assert not m.passed and "shape" in m.failures[0]
    (missing,) = compare_outputs({}, {"y": np.zeros(1)}, ["y"], Thresholds())
    assert not missing.passed and "missing" in missing.failures[0]


def test_atol_rtol_elementwise():
    ref = np.array([1.0, 100.0], np.float32)
    got = np.array([1.05, 100.05], np.float32)
    assert output_metrics("y", got, ref, Thresholds(cosine=None, atol=0.1)).passed
    assert not output_metrics("y", got, ref, Thresholds(cosine=None, atol=0.01)).passed


def test_make_inputs_respects_dtypes_shapes_and_seed():
    ins = [
        Value("ids", DataType.INT64, ("batch", 8)),
        Value("x", DataType.FLOAT16, (2, 3)),
        Value("m", DataType.BOOL, (4,)),
    ]
    a = make_inputs(ins, seed=3)
    b = make_inputs(ins, seed=3)
    assert a["ids"].shape == (1, 8) and a["ids"].dtype == np.int64
    assert a["x"].dtype == np.float16 and a["m"].dtype == np.bool_
    assert all(np.array_equal(a[k], b[k]) for k in a)
    with pytest.raises(UsageError, match="unknown name"):
        make_inputs(ins, feeds={"nope": np.zeros(1)})


def test_cosine_waived_only_on_outputs_that_are_about_zero():
    # A sigmoid map far in its tail: the reference runtime rounds it differently.
    ref = np.full(100, 1e-7, np.float32)
    ref[::2] = 3e-7
    got = ref + np.float32(1e-7) * (np.arange(100) % 3 == 0)
    m = output_metrics("p", got, ref, Thresholds())
    assert m.cosine < 0.9999 and m.passed and "not checked" in m.note
    # Same relative error on unit-scale values: a real mismatch.
    big = output_metrics("p", got * 1e6, ref * 1e6, Thresholds())
    assert not big.passed and not big.note
    # About zero but off by more than 1e-6: still a failure.
    off = output_metrics("p", ref + np.float32(5e-6) * (np.arange(100) % 2), ref, Thresholds())
    assert not off.passed
    # The waiver can be switched off.
    assert not output_metrics("p", got, ref, Thresholds(near_zero=None)).passed
