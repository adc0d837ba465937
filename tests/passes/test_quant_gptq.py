"""GPTQ rounding: H collection per op layout, the column updates, the pass and the config key."""

from __future__ import annotations

import numpy as np
import pytest

from converter.config import load_config
from converter.errors import UsageError
from converter.executor.runtime import Runtime
from converter.ms.codec import dequantize
from ir import DataType, Graph, Node, Value
from passes.quant.gptq import (
    DAMP,
    _shrinkage,
    asymmetric_target,
    collect_hessians,
    gptq_quantize,
    quantize_sequentially,
    sequential_stages,
)
from passes.quant.weight import find_weights, quantize_tensor, quantize_weights

MIXED = {"init_scale": 0.02, "auto_tune": False, "use_cv_data": False, "max_iterations": 8}
COMMON = {"min_quant_weight_size": 0, "min_quant_weight_channel": 1, "enable_encode": True}


def _smooth(z: np.ndarray, mix: np.ndarray, axis: int) -> np.ndarray:
    """``z`` with channels mixed by ``mix`` (along ``axis``) and smoothed along the last axis."""
    x = np.moveaxis(np.tensordot(mix, np.moveaxis(z, axis, 0), axes=1), 0, axis)
    for i in range(1, x.shape[-1]):
        x[..., i] += 0.7 * x[..., i - 1]
    return x.astype(np.float32)


def _conv_graph(w: np.ndarray, attrs: dict, x_shape: tuple[int, ...]) -> Graph:
    g = Graph(name="c")
    x = Value("x", DataType.FLOAT, x_shape)
    g.inputs = [x]
    y = Value("y")
    g.append(Node("Conv", [x, Value("w", const=w)], [y], attrs, name="conv"))
    g.outputs = [y]
    return g


CONVS = [  # (attrs, input shape NCHW, weight shape)
    ({"pads": [1, 1, 1, 1]}, (2, 6, 7, 9), (8, 6, 3, 3)),
    ({"group": 2, "strides": [2, 1], "pads": [0, 1, 2, 0]}, (1, 8, 9, 8), (6, 4, 3, 2)),
    ({"group": 16, "dilations": [2, 2], "pads": [2, 2, 2, 2]}, (1, 16, 8, 8), (16, 1, 3, 3)),
    ({"group": 8, "strides": [2, 2], "auto_pad": "SAME_UPPER"}, (1, 8, 7, 7), (16, 1, 3, 3)),
    ({"strides": [3], "pads": [2, 1]}, (2, 5, 20), (7, 5, 4)),
    ({"format": "NHWC", "strides": [2, 2], "pads": [1, 0, 0, 1]}, (1, 4, 6, 7), (5, 4, 2, 3)),
]


@pytest.mark.parametrize(("attrs", "x_shape", "w_shape"), CONVS)
def test_conv_h_is_the_im2col_covariance(attrs, x_shape, w_shape):
    """For any W, sum(conv(x, W)^2) = rows * sum_g tr(W_g H_g W_g^T): H holds the patches."""
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal(w_shape).astype(np.float32)
    shape = x_shape
    if attrs.get("format") == "NHWC":
        shape = (x_shape[0], *x_shape[2:], x_shape[1])
    g = _conv_graph(w0, attrs, shape)
    feeds = [{"x": rng.standard_normal(shape).astype(np.float32)} for _ in range(2)]
    sites, _ = find_weights(g, min_channel=1)
    h = collect_hessians(g, sites, feeds, max_rows=1 << 20)[id(sites[0].value)]
    group = attrs.get("group", 1)
    assert h.cov.shape == (group, *[int(np.prod(w_shape[1:]))] * 2) and not h.transposed
    for seed in range(3):
        w = np.random.default_rng(seed + 1).standard_normal(w_shape).astype(np.float32)
        y = [Runtime(_conv_graph(w, attrs, shape)).run(f)["y"] for f in feeds]
        total = sum(float(np.square(a.astype(np.float64)).sum()) for a in y)
        wg = w.reshape(group, w_shape[0] // group, -1).astype(np.float64)
        quad = np.einsum("gri,gij,grj->", wg, h.cov, wg)
        assert total == pytest.approx(h.rows * quad, rel=1e-5)


def test_conv_rows_are_subsampled_to_the_limit():
    attrs, x_shape, w_shape = CONVS[0]
    g = _conv_graph(np.ones(w_shape, np.float32), attrs, x_shape)
    sites, _ = find_weights(g, min_channel=1)
    feeds = [{"x": np.ones(x_shape, np.float32)}] * 3
    h = collect_hessians(g, sites, feeds, max_rows=50)[id(sites[0].value)]
    assert h.rows == 150


def _matmul_graph(op: str, w: np.ndarray, attrs: dict, a_shape: tuple[int, ...]) -> Graph:
    g = Graph(name="m")
    a = Value("a", DataType.FLOAT, a_shape)
    g.inputs = [a]
    y = Value("y")
    g.append(Node(op, [a, Value("w", const=w)], [y], attrs, name="mm"))
    g.outputs = [y]
    return g


MATMULS = [  # op, attrs, A shape, W shape, transposed (W is [K, N])
    ("MatMul", {}, (2, 5, 12), (12, 7), True),
    ("MatMulAct", {"activation": "Relu"}, (9, 12), (12, 7), True),
    ("Gemm", {"transA": 1}, (12, 9), (12, 7), True),
    ("Gemm", {"transB": 1}, (9, 12), (7, 12), False),
]


@pytest.mark.parametrize(("op", "attrs", "a_shape", "w_shape", "transposed"), MATMULS)
def test_matmul_h_is_the_covariance_of_a_rows(op, attrs, a_shape, w_shape, transposed):
    rng = np.random.default_rng(1)
    g = _matmul_graph(op, rng.standard_normal(w_shape).astype(np.float32), attrs, a_shape)
    feeds = [{"a": rng.standard_normal(a_shape).astype(np.float32)} for _ in range(3)]
    sites, _ = find_weights(g, min_channel=1)
    h = collect_hessians(g, sites, feeds)[id(sites[0].value)]
    assert h.transposed == transposed
    rows = [f["a"].T if attrs.get("transA") else f["a"].reshape(-1, 12) for f in feeds]
    x = np.concatenate(rows).astype(np.float64)
    np.testing.assert_allclose(h.cov[0], x.T @ x / x.shape[0], rtol=1e-5, atol=1e-6)
    assert h.rows == x.shape[0]


def test_unsupported_and_batched_weights_get_no_h():
    rng = np.random.default_rng(2)
    g = Graph(name="u")
    x = Value("x", DataType.FLOAT, (1, 4, 5, 5))
    a = Value("a", DataType.FLOAT, (3, 2, 6))
    g.inputs = [x, a]
    wt = Value("wt", const=rng.standard_normal((4, 8, 3, 3)).astype(np.float32))
    wb = Value("wb", const=rng.standard_normal((3, 6, 4)).astype(np.float32))
    y1, y2 = Value("y1"), Value("y2")
    g.append(Node("ConvTranspose", [x, wt], [y1], name="deconv"))
    g.append(Node("MatMul", [a, wb], [y2], name="bmm"))
    g.outputs = [y1, y2]
    sites, _ = find_weights(g, min_channel=1)
    feeds = [{"x": rng.standard_normal((1, 4, 5, 5)).astype(np.float32),
              "a": rng.standard_normal((3, 2, 6)).astype(np.float32)}]  # fmt: skip
    assert len(sites) == 2 and collect_hessians(g, sites, feeds) == {}


# -- the rounding ------------------------------------------------------------------------------
def _layer(rng: np.random.Generator, k: int = 96, n: int = 48, rows: int = 1024):
    """W [K, N] and correlated calibration / held-out inputs [rows, K]."""
    mix = np.eye(k) + rng.standard_normal((k, k)) / np.sqrt(k) * 1.5
    scale = np.exp(rng.standard_normal(k))  # uneven channel energies, as after a norm
    x = (rng.standard_normal((rows, k)) @ mix * scale).astype(np.float32)
    held = (rng.standard_normal((rows, k)) @ mix * scale).astype(np.float32)
    w = (rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32)
    return w, x, held


def _out_err(held: np.ndarray, w: np.ndarray, dq: np.ndarray) -> float:
    ref = held.astype(np.float64) @ w
    return float(np.linalg.norm(held @ dq.astype(np.float64) - ref) / np.linalg.norm(ref))


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("per_channel", [True, False])
def test_gptq_lowers_held_out_error_codes_in_range_and_dequantize(bits, symmetric, per_channel):
    w, x, held = _layer(np.random.default_rng(bits))
    axis = 1 if per_channel else None
    h = x.T.astype(np.float64) @ x
    q = gptq_quantize(w, h, axis, bits, symmetric=symmetric, transposed=True)
    rtn = quantize_tensor(w, axis, bits, symmetric=symmetric)
    lo = -(1 << (bits - 1)) + (1 if symmetric and bits >= 2 else 0)
    assert q.codes.dtype == rtn.codes.dtype and q.codes.shape == w.shape
    assert lo <= q.codes.min() and q.codes.max() <= (1 << (bits - 1)) - 1
    assert q.scale.shape == rtn.scale.shape and q.axis == axis and q.clusters is None
    dq = dequantize(q.codes, q.scale, q.zero_point, axis, bits, np.float32)
    assert np.array_equal(dq, q.dequant) and dq.dtype == np.float32
    assert _out_err(held, w, q.dequant) < 0.85 * _out_err(held, w, rtn.dequant)


def test_without_correlations_or_clipping_it_is_round_to_nearest():
    """H = I spreads no error: the codes are quantize_tensor's, for every layout and grid."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((12, 4, 3, 3)).astype(np.float32)
    for symmetric in (True, False):
        for axis, groups in ((0, 1), (None, 1), (0, 2)):
            eye = np.broadcast_to(np.eye(36), (groups, 36, 36))
            q = gptq_quantize(w, eye, axis, 3, symmetric=symmetric, clip=False)
            r = quantize_tensor(w, axis, 3, symmetric=symmetric)
            assert np.array_equal(q.codes, r.codes) and np.array_equal(q.dequant, r.dequant)
            assert np.array_equal(q.scale, r.scale) and np.array_equal(q.zero_point, r.zero_point)
    wm = rng.standard_normal((20, 24)).astype(np.float32)
    q = gptq_quantize(wm, np.eye(20) * 3.0, 1, 4, transposed=True, clip=False)
    assert np.array_equal(q.codes, quantize_tensor(wm, 1, 4).codes)


def _reference_gptq(w_rows: np.ndarray, h: np.ndarray, scale: np.ndarray, bits: int) -> np.ndarray:
    """The OBS form of GPTQ (paper, eq. 2-3): explicit H^-1, downdated per column."""
    qmax = (1 << (bits - 1)) - 1
    w = w_rows.astype(np.float64).copy()
    hd = h + DAMP * np.mean(np.diag(h)) * np.eye(len(h))
    hinv = np.linalg.inv(hd)
    codes = np.zeros(w.shape, np.int64)
    for j in range(w.shape[1]):
        q = np.clip(np.round(w[:, j].astype(np.float32) / scale), -qmax, qmax).astype(np.float64)
        codes[:, j] = q
        err = (w[:, j] - q * scale) / hinv[j, j]
        w[:, j:] -= err[:, None] * hinv[j, j:][None, :]
        hinv = hinv - np.outer(hinv[:, j], hinv[j, :]) / hinv[j, j]
    return codes


def test_lazy_cholesky_blocks_match_the_obs_reference():
    w, x, _ = _layer(np.random.default_rng(4), k=40, n=16, rows=400)
    h = x.T.astype(np.float64) @ x
    want = _reference_gptq(w.T, h, quantize_tensor(w, 1, 4).scale, 4)
    for block in (1, 7, 128):
        q = gptq_quantize(w, h, 1, 4, transposed=True, act_order=False, clip=False, block=block)
        assert (q.codes.T != want).mean() < 0.01  # float ties aside, the same codes


def test_clipped_grid_is_never_worse_than_the_full_range_in_weight_error():
    rng = np.random.default_rng(5)
    w = rng.standard_t(3, (32, 64)).astype(np.float32)  # heavy tails: outliers set the range
    for symmetric in (True, False):
        q = gptq_quantize(w, np.eye(64), 0, 3, symmetric=symmetric)
        r = quantize_tensor(w, 0, 3, symmetric=symmetric)
        assert np.all(q.scale <= r.scale) and np.any(q.scale < r.scale)
        assert q.rel_error < r.rel_error
        dq = dequantize(q.codes, q.scale, q.zero_point, 0, 3, np.float32)
        assert np.array_equal(dq, q.dequant)


def test_singular_h_from_constant_and_dead_channels_stays_finite():
    rng = np.random.default_rng(6)
    w, x, held = _layer(rng, k=32, n=16, rows=256)
    x[:, 3] = 1.5  # constant: H is rank deficient together with a bias-like direction
    x[:, 7] = 0.0  # never excited: zero row and column of H
    x[:, 9] = x[:, 10]  # duplicated channel
    held[:, 3], held[:, 7], held[:, 9] = 1.5, 0.0, held[:, 10]
    h = x.T.astype(np.float64) @ x
    rtn = _out_err(held, w, quantize_tensor(w, 1, 4).dequant)
    q = gptq_quantize(w, h, 1, 4, transposed=True)
    assert np.all(np.isfinite(q.dequant)) and np.abs(q.codes).max() <= 7
    assert _out_err(held, w, q.dequant) < 0.9 * rtn
    bare = gptq_quantize(w, h, 1, 4, transposed=True, damp=0.0)  # tiny or failing pivots
    assert np.all(np.isfinite(bare.dequant)) and _out_err(held, w, bare.dequant) < 1.5 * rtn
    zero = gptq_quantize(w, np.zeros_like(h), 1, 4, transposed=True, clip=False)  # no data
    assert np.array_equal(zero.codes, quantize_tensor(w, 1, 4).codes)


def test_grouped_h_quantizes_each_group_with_its_own_covariance():
    """Depthwise: one 9x9 H per channel; the batched result equals one call per channel."""
    rng = np.random.default_rng(7)
    w = rng.standard_normal((6, 1, 3, 3)).astype(np.float32)
    p = rng.standard_normal((6, 50, 9))
    p[..., 1:] += 0.8 * p[..., :-1]
    h = np.einsum("grn,grm->gnm", p, p)
    q = gptq_quantize(w, h, 0, 3)
    for c in range(6):
        one = gptq_quantize(w[c : c + 1], h[c], 0, 3)
        assert np.array_equal(q.codes[c : c + 1], one.codes)
    with pytest.raises(ValueError, match="do not match"):
        gptq_quantize(w, h[:4], 0, 3)
    with pytest.raises(ValueError, match="output-channel axis"):
        gptq_quantize(w, h, 1, 3)


def test_shrinkage_damps_noisy_covariances_towards_round_to_nearest():
    """Few rows per column (silero-vad's STFT conv: 32 rows, 256 columns) must not be overfit."""
    rng = np.random.default_rng(8)
    k, n = 64, 32
    w = rng.standard_normal((k, n)).astype(np.float32)
    feeds = [{"a": rng.standard_normal((2, k)).astype(np.float32)} for _ in range(4)]
    g = _matmul_graph("MatMul", w, {}, (2, k))
    sites, _ = find_weights(g, min_channel=1)
    h = collect_hessians(g, sites, feeds)[id(sites[0].value)]
    assert h.rows == 8 and h.damp[0] > 1.0
    held = rng.standard_normal((2000, k)).astype(np.float32)  # the true H is I: RTN is optimal
    rtn = _out_err(held, w, quantize_tensor(w, 1, 3).dequant)
    noisy = gptq_quantize(w, h.cov, 1, 3, transposed=True, clip=False)
    shrunk = gptq_quantize(w, h.cov, 1, 3, transposed=True, clip=False, damp=h.damp)
    assert _out_err(held, w, noisy.dequant) > 1.2 * rtn  # overfit to 8 rows
    assert _out_err(held, w, shrunk.dequant) < 1.05 * rtn
    cov = np.eye(3)[None] * 2.0
    assert _shrinkage(cov, np.array([12.0]), 1)[0] == DAMP  # one feed: no noise estimate
    assert _shrinkage(cov, 3 * np.square(cov).sum(axis=(1, 2)), 3)[0] == DAMP  # feeds agree


# -- the pass ----------------------------------------------------------------------------------
def _chain(rng: np.random.Generator) -> Graph:
    """Conv 3x3 -> Relu -> depthwise 3x3 stride 2 -> Relu -> 1x1 -> Flatten -> MatMul."""
    g = Graph(name="chain")
    x = Value("x", DataType.FLOAT, (1, 8, 12, 12))
    g.inputs = [x]
    specs = [
        ("c1", (24, 8, 3, 3), {"pads": [1, 1, 1, 1]}),
        ("dw", (24, 1, 3, 3), {"group": 24, "strides": [2, 2], "pads": [1, 1, 1, 1]}),
        ("pw", (16, 24, 1, 1), {}),
    ]
    cur = x
    for name, shape, attrs in specs:
        fan = int(np.prod(shape[1:]))
        w = Value(name, const=(rng.standard_normal(shape) / np.sqrt(fan)).astype(np.float32))
        y, r = Value(f"{name}_y"), Value(f"{name}_r")
        g.append(Node("Conv", [cur, w], [y], attrs, name=f"{name}_conv"))
        g.append(Node("Relu", [y], [r], name=f"{name}_relu"))
        cur = r
    t, f = Value("t"), Value("f")
    g.append(Node("Transpose", [cur], [t], {"perm": [0, 2, 3, 1]}, name="nhwc"))
    shape = Value("shape", const=np.array([36, 16], np.int64))
    g.append(Node("Reshape", [t, shape], [f], name="rows"))
    wm = Value("fc", const=(rng.standard_normal((16, 32)) / 4).astype(np.float32))
    out = Value("out")
    g.append(Node("MatMul", [f, wm], [out], name="fc_mm"))
    g.outputs = [out]
    return g


def _images(seed: int, mix: np.ndarray) -> dict[str, np.ndarray]:
    z = np.random.default_rng(seed).standard_normal((1, 8, 12, 12))
    return {"x": _smooth(z, mix, 1)}


@pytest.mark.parametrize("sequential", [False, True])
@pytest.mark.parametrize("bits", [3, 4])
def test_pass_gptq_beats_nearest_on_held_out_inputs(bits, sequential):
    rng = np.random.default_rng(10)
    mix = np.eye(8) + rng.standard_normal((8, 8)) * 0.6
    tune = [_images(s, mix) for s in range(6)]
    held = [_images(s, mix) for s in (100, 101)]
    ref = [Runtime(_chain(np.random.default_rng(0))).run(f)["out"] for f in held]

    def error(rounding: str) -> tuple[float, dict]:
        g = _chain(np.random.default_rng(0))
        report = quantize_weights(
            g, common={**COMMON, "bit_num": bits}, mixed_bit=MIXED,
            weight={"rounding": rounding, "gptq_sequential": sequential}, tune_feeds=tune,
        )  # fmt: skip
        for v in g.values():
            if v.quant is not None:
                q, codes = v.quant, v.meta["quant_codes"]
                dq = dequantize(codes, q.scale, q.zero_point, q.axis, bits, np.float32)
                assert np.array_equal(dq, v.const) and np.abs(codes).max() < 1 << (bits - 1)
        got = [Runtime(g).run(f)["out"] for f in held]
        err = sum(np.linalg.norm(a - b) / np.linalg.norm(a) for a, b in zip(ref, got, strict=True))
        return float(err), report

    nearest, plain = error("nearest")
    gptq, report = error("gptq")
    stages = {"stages": 4} if sequential else {}
    assert "gptq" not in plain and report["gptq"] == {"layers": 4, "nearest": 0, **stages}
    assert gptq < 0.7 * nearest


def test_long_quantization_reports_progress():
    """Layer-by-layer GPTQ and auto_tune take minutes on real models: the CLI's ``say``
    gets a line per tenth of the stages, and one per allocation auto_tune measures."""
    rng = np.random.default_rng(10)
    mix = np.eye(8) + rng.standard_normal((8, 8)) * 0.6
    tune = [_images(s, mix) for s in range(6)]
    lines: list[str] = []
    quantize_weights(
        _chain(np.random.default_rng(0)), lines.append, common={**COMMON, "bit_num": 4},
        mixed_bit=MIXED, weight={"rounding": "gptq"}, tune_feeds=tune,
    )  # fmt: skip
    stages = [line for line in lines if "GPTQ layer by layer, stage" in line]
    assert [line.rsplit(" ", 1)[1] for line in stages] == ["1/4", "2/4", "3/4", "4/4"]
    lines.clear()
    report = quantize_weights(
        _chain(np.random.default_rng(0)), lines.append, common={**COMMON, "bit_num": 0},
        mixed_bit={**MIXED, "auto_tune": True, "target_cosine": 0.99},
        weight={"rounding": "gptq"}, tune_feeds=tune,
    )  # fmt: skip
    assert lines[0].startswith("weight quant: auto_tune probing 4 tensors on 4 inputs")
    trials = [line for line in lines if "auto_tune trial" in line]
    assert len(trials) == len(report["auto_tune"]["trials"]) > 0
    last = report["auto_tune"]["trials"][-1]
    assert f"cosine {last['cosine']:.5f} (target 0.99" in trials[-1]


def test_pass_notes_when_gptq_cannot_apply():
    rng = np.random.default_rng(11)
    mix = np.eye(8)
    common = {**COMMON, "bit_num": 4}
    weight = {"rounding": "gptq"}
    r = quantize_weights(_chain(rng), common=common, mixed_bit=MIXED, weight=weight)
    assert r["gptq"] == {"layers": 0, "nearest": 4}
    assert any("rounding=gptq needs calibration data" in n for n in r["notes"])
    tune = [_images(0, mix)]
    r = quantize_weights(
        _chain(rng), common=common, mixed_bit=MIXED, weight={**weight, "kmeans": True},
        tune_feeds=tune,
    )  # fmt: skip
    assert r["gptq"]["layers"] == 0 and any("k-means" in n for n in r["notes"])
    r = quantize_weights(
        _chain(rng), common={**common, "bit_num": 0}, mixed_bit=MIXED, weight=weight,
        tune_feeds=tune,
    )  # fmt: skip
    assert r["gptq"]["layers"] == 0 and any("fixed bit_num" in n for n in r["notes"])


def test_config_key_and_calibration_feeds(tmp_path):
    from converter.compress import compress_graph

    cfg = tmp_path / "q.cfg"
    for i in range(3):
        np.save(tmp_path / f"{i}.npy", _images(i, np.eye(8))["x"])
    body = (
        "[common_quant_param]\nquant_type=WEIGHT_QUANT\nbit_num=4\nmin_quant_weight_channel=1\n"
        f"[data_preprocess_param]\ncalibrate_path=x:{tmp_path}\ncalibrate_size=3\n"
        "[weight_quant_param]\nrounding="
    )
    cfg.write_text(body + "gptq\n")
    config = load_config(cfg)
    assert config.weight_quant_param.rounding == "gptq"
    assert config.weight_quant_param.gptq_sequential  # layer by layer unless switched off
    report = compress_graph(_chain(np.random.default_rng(0)), config, "off", lambda _m: None)
    assert report["weight_quant"]["gptq"] == {"layers": 4, "nearest": 0, "stages": 4}
    cfg.write_text(body + "gptq\ngptq_sequential=false\n")
    config = load_config(cfg)
    assert config.weight_quant_param.gptq_sequential is False
    report = compress_graph(_chain(np.random.default_rng(0)), config, "off", lambda _m: None)
    assert report["weight_quant"]["gptq"] == {"layers": 4, "nearest": 0}
    cfg.write_text(body + "gptq\ngptq_sequential=sometimes\n")
    with pytest.raises(UsageError, match="gptq_sequential=sometimes: expected true/false"):
        load_config(cfg)
    cfg.write_text(body + "fast\n")
    with pytest.raises(UsageError, match="rounding=fast"):
        load_config(cfg)


# -- layer by layer ------------------------------------------------------------------------------
def _deep(rng: np.random.Generator, depth: int = 6, k: int = 32) -> Graph:
    """x [1, 64, k] -> depth x (MatMul k x k -> Relu) -> MatMul k x 8: no residuals."""
    g = Graph(name="deep")
    x = Value("x", DataType.FLOAT, (1, 64, k))
    g.inputs = [x]
    cur = x
    for i in range(depth):
        w = (np.eye(k) + rng.standard_normal((k, k)) / np.sqrt(k)).astype(np.float32)
        y, r = Value(f"y{i}"), Value(f"r{i}")
        g.append(Node("MatMul", [cur, Value(f"w{i}", const=w)], [y], name=f"mm{i}"))
        g.append(Node("Relu", [y], [r], name=f"relu{i}"))
        cur = r
    out = Value("out")
    head = (rng.standard_normal((k, 8)) / np.sqrt(k)).astype(np.float32)
    g.append(Node("MatMul", [cur, Value("head", const=head)], [out], name="head_mm"))
    g.outputs = [out]
    return g


def _tokens(seed: int, k: int = 32) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    mix = np.random.default_rng(99).standard_normal((k, k)) * 0.5 + np.eye(k)
    return {"x": _smooth(rng.standard_normal((1, k, 64)), mix, 1).transpose(0, 2, 1).copy()}


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(-1).astype(np.float64), b.reshape(-1).astype(np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def _held_out_error(g: Graph, ref: list[np.ndarray], held: list[dict]) -> float:
    got = [Runtime(g).run(f)["out"] for f in held]
    pairs = zip(ref, got, strict=True)
    return float(sum(np.linalg.norm(a - b) / np.linalg.norm(a) for a, b in pairs))


@pytest.mark.parametrize("bits", [3, 4])
def test_sequential_gptq_beats_one_pass_on_a_deep_chain(bits):
    """Each layer, rounded on the quantized graph's inputs towards the float outputs,
    makes up for the layers before it: the error no longer compounds down the chain."""
    tune = [_tokens(s) for s in range(8)]
    held = [_tokens(s) for s in (100, 101, 102)]
    ref = [Runtime(_deep(np.random.default_rng(0))).run(f)["out"] for f in held]
    errors, reports = {}, {}
    for sequential in (False, True):
        g = _deep(np.random.default_rng(0))
        reports[sequential] = quantize_weights(
            g, common={**COMMON, "bit_num": bits}, mixed_bit=MIXED,
            weight={"rounding": "gptq", "gptq_sequential": sequential}, tune_feeds=tune,
        )  # fmt: skip
        errors[sequential] = _held_out_error(g, ref, held)
    assert reports[False]["gptq"] == {"layers": 7, "nearest": 0}
    assert reports[True]["gptq"] == {"layers": 7, "nearest": 0, "stages": 7}
    assert errors[True] < 0.75 * errors[False]  # 0.70 at 3 bits, 0.69 at 4


def _residual(rng: np.random.Generator) -> Graph:
    """conv a -> Relu -> r; conv b (r) -> y; r + y -> conv c (and a MatMul d beside it)."""
    g = Graph(name="res")
    x = Value("x", DataType.FLOAT, (1, 4, 6, 6))
    g.inputs = [x]

    def conv(name: str, inp: Value, cout: int, cin: int) -> Value:
        w = Value(name, const=(rng.standard_normal((cout, cin, 3, 3)) / 4).astype(np.float32))
        y = Value(f"{name}_y")
        g.append(Node("Conv", [inp, w], [y], {"pads": [1, 1, 1, 1]}, name=f"{name}_conv"))
        return y

    r = Value("r")
    g.append(Node("Relu", [conv("a", x, 8, 4)], [r], name="relu"))
    s = Value("s")
    g.append(Node("Add", [r, conv("b", r, 8, 8)], [s], name="add"))
    out = conv("c", s, 6, 8)
    t, f, m = Value("t"), Value("f"), Value("m")
    g.append(Node("Transpose", [r], [t], {"perm": [0, 2, 3, 1]}, name="nhwc"))
    g.append(Node("Reshape", [t, Value("sh", const=np.array([36, 8], np.int64))], [f], name="rows"))
    wd = Value("d", const=rng.standard_normal((8, 5)).astype(np.float32))
    g.append(Node("MatMul", [f, wd], [m], name="d_mm"))
    g.outputs = [out, m]
    return g


def _rows_of(rt: Runtime, name: str, feed: dict) -> np.ndarray:
    """Value ``name`` [N, C, H, W] seen by ``rt`` on ``feed``, as NHWC rows [N*H*W, C]."""
    got = {}
    rt.observe = lambda v, a: got.update({v.name: a}) if v.name == name else None
    rt.run(feed)
    a = got[name].astype(np.float64)
    return a.transpose(0, 2, 3, 1).reshape(-1, a.shape[1])


def test_stages_follow_the_longest_chain_of_weights():
    g = _residual(np.random.default_rng(0))
    sites, _ = find_weights(g, min_channel=1)
    names = [s.value.name for s in sites]
    stages = [[names[i] for i in st] for st in sequential_stages(g, sites)]
    assert stages == [["a"], ["b", "d"], ["c"]]  # b and d read r; c reads r + b's output
    chain = _chain(np.random.default_rng(0))
    assert len(sequential_stages(chain, find_weights(chain, min_channel=1)[0])) == 4


@pytest.mark.parametrize("asymmetric", [False, True])
def test_replayed_stages_see_what_a_fresh_run_of_the_quantized_graph_sees(asymmetric):
    """The replay keeps values between stages and recomputes what a stage made stale: its
    H equal a fresh run's, and the shift is mean((x_float - x) x^T) over the same rows."""
    rng = np.random.default_rng(1)
    feeds = [{"x": rng.standard_normal((1, 4, 6, 6)).astype(np.float32)} for _ in range(3)]
    g = _residual(np.random.default_rng(0))
    floats = Runtime(g)  # keeps the float weights
    sites, _ = find_weights(g, min_channel=1)
    w = [s.value.const for s in sites]
    seen = {}

    def round_site(i: int, h) -> object:
        fresh = collect_hessians(g, [sites[i]], feeds, max_rows=1 << 20)[id(sites[i].value)]
        np.testing.assert_allclose(h.cov, fresh.cov, rtol=1e-6, atol=1e-9)
        assert h.rows == fresh.rows and (h.shift is not None) == asymmetric
        seen[sites[i].value.name] = h
        return quantize_tensor(w[i], sites[i].axis, 2)

    quantize_sequentially(
        g, sites, feeds, round_site, [True] * 4, max_rows=1 << 20, asymmetric=asymmetric
    )
    assert sorted(seen) == ["a", "b", "c", "d"]
    assert all(np.array_equal(s.value.const, quantize_tensor(x, s.axis, 2).dequant)
               for s, x in zip(sites, w, strict=True))  # fmt: skip
    if asymmetric:
        assert not seen["a"].shift.any() and seen["c"].shift.any()
        want = np.zeros((8, 8))
        for f in feeds:  # d's input rows: the Relu output, NHWC, one row per position
            xf, xq = (_rows_of(rt, "r", f) for rt in (floats, Runtime(g)))
            want += (xf - xq).T @ xq / len(xq)
        np.testing.assert_allclose(seen["d"].shift[0], want / len(feeds), rtol=1e-3, atol=1e-4)


def test_asymmetric_target_fits_the_float_outputs_on_the_quantized_inputs():
    """W' = W + W (X - Xq) Xq^T (Xq Xq^T)^-1: W' Xq is the float output's best fit."""
    rng = np.random.default_rng(12)
    w, x, _ = _layer(rng, k=24, n=10, rows=2000)  # W [K, N]: rows are x [R, K]
    # upstream error that W can undo (a mix of the channels) and some it cannot (noise)
    mix = np.eye(24) + 0.1 * rng.standard_normal((24, 24))
    noise = 0.05 * np.abs(x).mean() * rng.standard_normal(x.shape)
    xq = (x @ mix + noise).astype(np.float32)
    h = _hessian_of(*_fed_matmul(w, xq))  # H of the quantized inputs
    h.shift = (x - xq).T.astype(np.float64) @ xq / len(x)
    target = asymmetric_target(w, h)
    assert target.shape == w.shape and target.dtype == w.dtype
    ref = x.astype(np.float64) @ w
    fit = float(np.linalg.norm(xq @ target.astype(np.float64) - ref))
    plain = float(np.linalg.norm(xq @ w.astype(np.float64) - ref))
    best = np.linalg.lstsq(xq.astype(np.float64), ref, rcond=None)[0]
    # the least-squares fit, but for the dampening (1% of mean diag H, as GPTQ's)
    assert fit < 0.1 * plain and fit < 1.25 * float(np.linalg.norm(xq @ best - ref))
    h.shift = None
    assert asymmetric_target(w, h) is w


def _fed_matmul(w: np.ndarray, rows: np.ndarray):
    """(graph, sites, feeds) of one MatMul whose input rows are ``rows``."""
    g = _matmul_graph("MatMul", w, {}, rows.shape)
    sites, _ = find_weights(g, min_channel=1)
    return g, sites, [{"a": rows}]


def _hessian_of(g, sites, feeds):
    return collect_hessians(g, sites, feeds, max_rows=1 << 20)[id(sites[0].value)]


def test_auto_tune_re_rounds_its_pick_layer_by_layer():
    """The search keeps one-pass H; its pick is re-rounded layer by layer, measured on the
    tuning inputs and kept when not worse; slack buys further, smaller allocations."""
    tune = [_tokens(s) for s in range(8)]
    held = [_tokens(s) for s in (100, 101)]
    ref = [Runtime(_deep(np.random.default_rng(0))).run(f)["out"] for f in held]
    mixed = {**MIXED, "auto_tune": True, "target_cosine": 0.99, "max_iterations": 8}
    reports = {}
    for sequential in (False, True):
        g = _deep(np.random.default_rng(0))
        reports[sequential] = quantize_weights(
            g, common={**COMMON, "bit_num": 0}, mixed_bit=mixed,
            weight={"rounding": "gptq", "gptq_sequential": sequential}, tune_feeds=tune,
        )  # fmt: skip
        for v in g.values():
            if v.quant is not None:
                q = v.quant
                dq = dequantize(v.meta["quant_codes"], q.scale, q.zero_point, q.axis,
                                q.num_bits, np.float32)  # fmt: skip
                assert np.array_equal(dq, v.const)
        got = [Runtime(g).run(f)["out"] for f in held]
        assert min(_cos(a, b) for a, b in zip(ref, got, strict=True)) > 0.98
    one, seq = reports[False]["auto_tune"], reports[True]["auto_tune"]
    assert "sequential" not in one and not any(t.get("sequential") for t in one["trials"])
    info = seq["sequential"]
    assert info["kept"] and info["cosine"] >= info["one_pass_cosine"]
    picked = seq["trials"][seq["chosen"]]
    assert seq["met"] and picked.get("sequential") and picked["cosine"] >= 0.99
    assert 0 < info["rounds"] <= 4
    assert reports[True]["stored_bytes"] < reports[False]["stored_bytes"]


def test_auto_tune_keeps_the_one_pass_pick_when_layer_by_layer_is_worse(monkeypatch):
    from passes.quant import weight

    def worse(self, chosen):  # every tensor at 2 bits: clearly less accurate
        return [quantize_tensor(w, None, 2) for w in self.w], 1

    monkeypatch.setattr(weight._Rounding, "resequence", worse)
    tune = [_tokens(s) for s in range(8)]
    mixed = {**MIXED, "auto_tune": True, "target_cosine": 0.99, "max_iterations": 8}
    report = quantize_weights(
        _deep(np.random.default_rng(0)), common={**COMMON, "bit_num": 0}, mixed_bit=mixed,
        weight={"rounding": "gptq"}, tune_feeds=tune,
    )["auto_tune"]  # fmt: skip
    info = report["sequential"]
    assert not info["kept"] and info["rounds"] == 0 and info["cosine"] < info["one_pass_cosine"]
    picked = report["trials"][report["chosen"]]
    assert report["met"] and not picked.get("sequential") and report["trials"][-1]["sequential"]
