"""Calibration data loading, streamed statistics and the range methods."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from converter.errors import UsageError
from ir import DataType, Graph, Node, Value
from passes.quant.calibrate import CalibrationData, collect_statistics
from passes.quant.ranges import Histogram, TensorStats, affine_params, choose_range, kl_threshold

F32 = DataType.FLOAT


def _graph(shape: tuple = ("N", 2, 4)) -> Graph:
    g = Graph()
    x = Value("x", F32, shape)
    g.inputs = [x]
    a = g.append(Node("Relu", [x], 1, name="relu")).outputs[0]
    b = g.append(Node("Neg", [a], 1, name="neg")).outputs[0]
    a.dtype = b.dtype = F32
    g.outputs = [b]
    return g


def test_histogram_growth_is_exact_rebinning():
    rng = np.random.default_rng(0)
    parts = [rng.standard_normal(500).astype(np.float32) * s for s in (0.1, 1.0, 7.0)]
    grown = Histogram()
    for p in parts:
        grown.add(p, float(p.min()), float(p.max()))
    direct = Histogram()
    direct.limit = grown.limit
    for p in parts:
        direct.add(p, float(p.min()), float(p.max()))
    np.testing.assert_array_equal(grown.counts, direct.counts)
    assert grown.counts.sum() == 1500


def _stats(x: np.ndarray) -> TensorStats:
    st = TensorStats(histogram=True)
    for chunk in np.array_split(x, 4):
        st.add(chunk)
    return st


def test_range_methods():
    rng = np.random.default_rng(0)
    x = np.append(rng.standard_normal(40000), [60.0]).astype(np.float32)
    st = _stats(x)
    assert choose_range(st, "MAX_MIN", False) == (float(x.min()), 60.0)
    for method in ("PERCENTILE", "REMOVAL_OUTLIER", "KL"):
        lo, hi = choose_range(st, method, False)
        assert x.min() <= lo < -2.0 and 2.0 < hi < 20.0, (method, lo, hi)
        slo, shi = choose_range(st, method, True)
        assert slo == pytest.approx(-shi, rel=0.05) or slo == pytest.approx(x.min())
    relu = _stats(np.maximum(x, 0))
    assert choose_range(relu, "KL", False)[0] == 0.0
    heavy = rng.laplace(size=40000).astype(np.float32)  # MSE trades clipping for resolution
    lo, hi = choose_range(_stats(heavy), "MSE", False)
    assert heavy.min() <= lo < -2.0 and 2.0 < hi <= heavy.max()
    assert (lo, hi) != (heavy.min(), heavy.max())
    assert _error(heavy, lo, hi) < _error(heavy, float(heavy.min()), float(heavy.max()))


def _error(x: np.ndarray, lo: float, hi: float) -> float:
    s, zp = affine_params(lo, hi, False)
    q = np.clip(np.rint(x / s) + zp, -128, 127)
    return float(np.sum(((q - zp) * s - x) ** 2))


def test_kl_keeps_everything_for_a_uniform_distribution():
    assert kl_threshold(np.ones(2048), 128) >= 1900


def test_affine_params():
    s, zp = affine_params(-1.0, 3.0, symmetric=False)
    assert s == pytest.approx(4 / 255) and (-128 - zp) * s == pytest.approx(-1.0, abs=float(s))
    s, zp = affine_params(0.0, 2.55, symmetric=False)
    assert zp == -128  # zero exactly representable: Relu outputs clamp at code -128
    s, zp = affine_params(-0.5, 2.0, symmetric=True)
    assert zp == 0 and s == pytest.approx(2.0 / 127)
    assert affine_params(0.0, 0.0, False) == (1.0, 0)


def test_collect_statistics_sees_every_float_tensor():
    g = _graph()
    rng = np.random.default_rng(0)
    samples = [{"x": rng.standard_normal((1, 2, 4)).astype(np.float32)} for _ in range(5)]
    stats = collect_statistics(g, samples, histogram=True, channel_axes={"x": 1})
    everything = np.concatenate([s["x"] for s in samples])
    relu = g.nodes[0].outputs[0].name
    assert stats.samples == 5
    assert stats.tensors["x"].min == pytest.approx(everything.min())
    assert stats.tensors[relu].max == pytest.approx(everything.max())
    assert stats.tensors[relu].min == 0.0
    np.testing.assert_allclose(stats.channels["x"].mean, everything.mean(axis=(0, 2)), rtol=1e-5)


def _data(folder: Path, **extra) -> dict:
    return {"calibrate_path": f"x:{folder}", "calibrate_size": 100, "input_type": "BIN",
            **extra}


def test_npy_npz_and_bin_samples(tmp_path):
    g = _graph((1, 2, 4))
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((2, 4)).astype(np.float64) for _ in range(3)]
    np.save(tmp_path / "a.npy", arrays[0])  # one rank short: gets a batch axis
    np.savez(tmp_path / "b.npz", x=arrays[1][None], other=np.zeros(3))
    arrays[2].astype(np.float32).tofile(tmp_path / "c.bin")
    data = CalibrationData(g, _data(tmp_path))
    got = [s["x"] for s in data]
    assert len(data) == 3
    for a, b in zip(got, arrays, strict=True):
        assert a.dtype == np.float32 and a.shape == (1, 2, 4)
        np.testing.assert_allclose(a[0], b, rtol=1e-6)
    assert len(CalibrationData(g, _data(tmp_path, calibrate_size=2))) == 2


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"calibrate_path": ""}, "needs calibration data"),
        ({"calibrate_path": "y:/tmp"}, "the model's inputs are x"),
        ({"calibrate_path": "x:/no/such/folder"}, "not found"),
        ({"calibrate_path": "x"}, "not input_name:/folder"),
    ],
)
def test_bad_calibration_settings_are_usage_errors(data, message):
    with pytest.raises(UsageError, match=message):
        CalibrationData(_graph(), data)


def test_bin_file_of_the_wrong_size_and_dynamic_shapes(tmp_path):
    np.zeros(3, np.float32).tofile(tmp_path / "a.bin")
    with pytest.raises(UsageError, match="needs 8"):
        list(CalibrationData(_graph((1, 2, 4)), _data(tmp_path)))
    with pytest.raises(UsageError, match="static shape"):
        list(CalibrationData(_graph(("N", 2, "S")), _data(tmp_path)))


def test_images_need_input_type_image(tmp_path):
    (tmp_path / "a.png").write_bytes(b"\x89PNG")
    with pytest.raises(UsageError, match="input_type=IMAGE"):
        list(CalibrationData(_graph(), _data(tmp_path)))
    try:
        import PIL  # noqa: F401
    except ImportError:
        with pytest.raises(UsageError, match="needs Pillow"):
            list(CalibrationData(_graph(), _data(tmp_path, input_type="IMAGE")))


def test_image_samples_resize_crop_normalize_and_layout(tmp_path):
    """input_type=IMAGE: RGB/BGR, resize, center crop, mean/std, NCHW or NHWC by the input."""
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    settings = _data(
        tmp_path, input_type="IMAGE", resize_width=12, resize_height=10, center_crop_width=8,
        center_crop_height=6, normalize_mean=[10.0, 20.0, 30.0], normalize_std=[2.0, 4.0, 8.0],
    )  # fmt: skip
    expect = (pixels[2:8, 2:10].astype(np.float32) - [10, 20, 30]) / [2, 4, 8]
    (nchw,) = [s["x"] for s in CalibrationData(_graph((1, 3, 6, 8)), settings)]
    assert nchw.shape == (1, 3, 6, 8)
    np.testing.assert_allclose(nchw[0], expect.transpose(2, 0, 1), rtol=1e-6)
    (nhwc,) = [s["x"] for s in CalibrationData(_graph((1, 6, 8, 3)), settings)]
    np.testing.assert_allclose(nhwc[0], expect, rtol=1e-6)
    bgr = {**settings, "image_to_format": "BGR"}
    (b,) = [s["x"] for s in CalibrationData(_graph((1, 6, 8, 3)), bgr)]
    np.testing.assert_allclose(b[0], ((pixels[2:8, 2:10, ::-1] - [10, 20, 30]) / [2, 4, 8]),
                               rtol=1e-6)  # fmt: skip
