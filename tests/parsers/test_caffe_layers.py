"""Caffe layers one at a time against the NumPy Caffe reference (no caffe2onnx)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from converter.executor.runtime import Runtime
from converter.reference.caffe import NumpyNet
from parsers.caffe import parse_caffe
from parsers.caffe.layers import caffe_pool_size
from parsers.caffe.proto import caffe_message, read_prototxt


def _run_both(tmp_path: Path, body: str, shape: tuple[int, ...]) -> tuple[dict, dict]:
    proto = tmp_path / "net.prototxt"
    dims = " ".join(f"dim: {d}" for d in shape)
    proto.write_text(
        f'layer {{ name: "x" type: "Input" top: "x" input_param {{ shape {{ {dims} }} }} }}\n'
        + body
    )
    model = tmp_path / "net.caffemodel"
    model.write_bytes(caffe_message("NetParameter")().SerializeToString())
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    got = Runtime(parse_caffe(proto, model)).run({"x": x})
    want = NumpyNet(read_prototxt(proto), {}).forward({"x": x})
    return got, want


@pytest.mark.parametrize("size", [1, 2, 5, 13])
@pytest.mark.parametrize("kernel,stride,pad", [(2, 2, 0), (3, 2, 0), (3, 2, 1), (2, 2, 1),
                                                (3, 3, 1), (2, 3, 0), (3, 1, 1)])  # fmt: skip
@pytest.mark.parametrize("pool", ["MAX", "AVE"])
@pytest.mark.parametrize("mode", ["CEIL", "FLOOR"])
def test_pooling_matches_caffe(tmp_path, size, kernel, stride, pad, pool, mode):
    if size + 2 * pad < kernel:
        pytest.skip("window larger than the padded input")
    for n in (size, size + 1):
        if (caffe_pool_size(n, kernel, stride, pad, mode == "CEIL", pad > 0) - 1) * stride >= n:
            pytest.skip("Caffe pools an empty window here (undefined output)")
    body = (
        f'layer {{ name: "p" type: "Pooling" bottom: "x" top: "y" pooling_param {{ pool: {pool} '
        f"kernel_h: {kernel} kernel_w: {kernel} stride: {stride} pad: {pad} "
        f"round_mode: {mode} }} }}\n"
    )
    got, want = _run_both(tmp_path, body, (1, 2, size, size + 1))
    assert got["y"].shape == want["y"].shape
    np.testing.assert_allclose(got["y"], want["y"], rtol=1e-5, atol=1e-6)


def test_pool_size_rule():
    assert caffe_pool_size(14, 3, 2, 0, ceil=True, padded=False) == 7
    assert caffe_pool_size(14, 3, 2, 0, ceil=False, padded=False) == 6
    # the last window would start at 8 >= 7 + 1 (inside the right pad only): dropped
    assert caffe_pool_size(7, 2, 2, 1, ceil=True, padded=True) == 4


@pytest.mark.parametrize("body", [
    'layer { name: "l" type: "LRN" bottom: "x" top: "y" lrn_param { local_size: 5 alpha: 0.3 '
    'beta: 0.6 k: 1.5 } }',
    'layer { name: "l" type: "LRN" bottom: "x" top: "y" lrn_param { local_size: 3 alpha: 0.3 '
    'norm_region: WITHIN_CHANNEL } }',
    'layer { name: "i" type: "Interp" bottom: "x" top: "y" interp_param { shrink_factor: 2 } }',
    'layer { name: "i" type: "Interp" bottom: "x" top: "y" interp_param { zoom_factor: 3 '
    'shrink_factor: 2 } }',
    'layer { name: "u" type: "Upsample" bottom: "x" top: "y" upsample_param { scale: 3 } }',
    'layer { name: "r" type: "Reshape" bottom: "x" top: "y" reshape_param { shape { dim: 0 '
    'dim: -1 dim: 3 } } }',
    'layer { name: "p" type: "Permute" bottom: "x" top: "y" permute_param { order: 0 order: 3 } }',
    'layer { name: "s" type: "Slice" bottom: "x" top: "y" top: "z" slice_param { axis: -1 } }',
    'layer { name: "f" type: "Flatten" bottom: "x" top: "y" flatten_param { axis: 2 } }',
    'layer { name: "e" type: "Power" bottom: "x" top: "y" power_param { power: 2 shift: 0.5 } }',
    'layer { name: "t" type: "Threshold" bottom: "x" top: "y" threshold_param { threshold: 0.2 } }',
    'layer { name: "s" type: "Swish" bottom: "x" top: "y" swish_param { beta: 1.5 } }',
    'layer { name: "c" type: "Clip" bottom: "x" top: "y" clip_param { min: -0.5 max: 0.7 } }',
    'layer { name: "s" type: "Softmax" bottom: "x" top: "y" softmax_param { axis: -1 } }',
])  # fmt: skip
def test_layer_matches_caffe(tmp_path, body):
    got, want = _run_both(tmp_path, body + "\n", (2, 3, 6, 8))
    assert got.keys() == want.keys()
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-5)


def test_pool_grid_is_exhaustive_for_small_sizes():
    """Output sizes agree with a brute force of Caffe's rule on a grid."""
    for n, k, s, p in itertools.product(range(1, 9), range(1, 4), range(1, 4), range(0, 2)):
        if n + 2 * p < k or p >= k:
            continue
        out = -(-(n + 2 * p - k) // s) + 1
        if p and (out - 1) * s >= n + p:
            out -= 1
        assert caffe_pool_size(n, k, s, p, True, p > 0) == out
