"""conv.py's weight scaling: within one ulp of the float64 product rounded once."""

from __future__ import annotations

import numpy as np
import pytest

from ir import Node, Value
from passes.fusions.conv import _scale_weights

rng = np.random.default_rng(0)


def _unaligned(a: np.ndarray) -> np.ndarray:
    """``a`` as a read-only view at an odd address (how parsed ONNX weights arrive)."""
    buf = np.zeros(a.nbytes + 1, np.uint8)
    buf[1:] = np.frombuffer(a.tobytes(), np.uint8)
    out = np.frombuffer(memoryview(buf)[1:], a.dtype).reshape(a.shape)
    assert not out.flags.aligned
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64])
@pytest.mark.parametrize(("op", "group"), [("Conv", 1), ("ConvTranspose", 2)])
def test_scale_is_within_one_ulp_of_the_exact_product(dtype: type, op: str, group: int) -> None:
    w = rng.standard_normal((4, 6, 3, 3)).astype(dtype)
    out_channels = 4 if op == "Conv" else 6 * group
    scale = rng.random(out_channels) + 0.5
    x, wv = Value("x"), Value("w", const=w)
    conv = Node(op, [x, wv], 1, attrs={"group": group})
    got = _scale_weights(conv, _unaligned(w), scale)
    if op == "Conv":
        want = w.astype(np.float64) * scale.reshape(-1, 1, 1, 1)
    else:
        per = w.shape[0] // group
        idx = (np.arange(4)[:, None] // per) * 6 + np.arange(6)
        want = w.astype(np.float64) * scale[idx][:, :, None, None]
    assert got.dtype == dtype
    if dtype == np.float64:
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_array_max_ulp(got, want.astype(dtype), maxulp=1)
