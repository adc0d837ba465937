"""Weight-only quantization: codes per bit width, grids, k-means, mixed bits, the pass."""

from __future__ import annotations

import numpy as np
import pytest

from converter.executor.runtime import Runtime
from converter.ms.codec import dequantize, entropy_bound_bytes
from ir import DataType, Graph, Node, Value
from passes.quant.weight import (
    CLIFF_FLIP_FACTOR,
    QUANT_PARAM_BYTES,
    _allocate,
    _Option,
    _Search,
    _Trial,
    choose_bits,
    entropy_bytes,
    find_weights,
    quantize_tensor,
    quantize_weights,
    stored_bytes,
)

MIXED = {"init_scale": 0.02, "auto_tune": False, "use_cv_data": False, "max_iterations": 8}


def _w(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _cos(a, b):
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.mark.parametrize("bits", range(1, 17))
@pytest.mark.parametrize("symmetric", [True, False])
def test_every_bit_width_codes_in_range_and_dequantize(bits, symmetric):
    w = _w((8, 3, 3, 3)) * np.linspace(0.1, 2, 8, dtype=np.float32)[:, None, None, None]
    q = quantize_tensor(w, 0, bits, symmetric=symmetric)
    assert q.codes.dtype == (np.int8 if bits <= 8 else np.int16)
    assert q.codes.min() >= -(1 << (bits - 1)) and q.codes.max() <= (1 << (bits - 1)) - 1
    assert q.scale.shape == (8,) and q.zero_point.shape == (8,)
    dq = dequantize(q.codes, q.scale, q.zero_point, 0, bits, np.float32)
    assert np.array_equal(dq, q.dequant) and q.dequant.dtype == np.float32
    if bits >= 2:
        # each weight lies within half a step of its level (no clipping on a range grid)
        step = q.scale[:, None, None, None]
        assert np.all(np.abs(w - dq) <= step / 2 + 1e-6)
    if bits >= 8:
        assert q.rel_error < 0.02


def test_error_falls_with_bits_and_symmetric_zero_point():
    w = _w((16, 64))
    errors = [quantize_tensor(w, 0, b).rel_error for b in range(2, 17)]
    assert all(a > b for a, b in zip(errors, errors[1:], strict=False))
    assert errors[-1] < 1e-4
    sym = quantize_tensor(w, 0, 4, symmetric=True)
    assert np.all(sym.zero_point == 0) and sym.codes.min() >= -7  # narrow range


def test_asymmetric_fits_one_sided_weights_better():
    w = np.abs(_w((16, 256))) + 0.5  # all positive
    sym = quantize_tensor(w, 0, 4, symmetric=True)
    asym = quantize_tensor(w, 0, 4, symmetric=False)
    assert asym.rel_error < sym.rel_error
    assert np.all(asym.zero_point == -8)  # range [0, max]: zero sits at the lowest code
    zeros = quantize_tensor(np.zeros((16, 4), np.float32), 0, 4, symmetric=False)
    assert np.all(zeros.dequant == 0)


def test_per_tensor_has_one_scale():
    q = quantize_tensor(_w((16, 32)), None, 8)
    assert q.axis is None and q.scale.shape == (1,)


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_kmeans_codebook_beats_uniform_grid(bits):
    w = _w((32, 128), seed=3)
    km = quantize_tensor(w, 0, bits, kmeans=True)
    grid = quantize_tensor(w, 0, bits)
    assert km.clusters is not None and km.clusters.shape == (1 << bits,)
    assert np.all(np.diff(km.clusters) >= 0)
    assert np.array_equal(
        km.dequant, dequantize(km.codes, km.scale, km.zero_point, 0, bits, np.float32, km.clusters)
    )
    assert km.rel_error < grid.rel_error


def test_kmeans_above_8_bits_uses_the_grid():
    q = quantize_tensor(_w((16, 64)), 0, 10, kmeans=True)
    assert q.clusters is None and q.bits == 10


def test_choose_bits_takes_the_lowest_width_meeting_the_target():
    w = _w((32, 512))
    for target in (0.2, 0.05, 0.02, 0.005):
        q = choose_bits(w, 0, target)
        assert q.rel_error <= target
        if q.bits > 2:
            assert quantize_tensor(w, 0, q.bits - 1).rel_error > target
    assert choose_bits(w, 0, 0.02).bits == 7  # the documented ~2.6/(2**b-2) rule
    assert choose_bits(w, 0, 1e-9).bits == 16  # unreachable target: the widest


# -- the pass on graphs ---------------------------------------------------------------------
def _model(seed: int = 0) -> Graph:
    """Conv(32x3x3x3) -> Relu -> Reshape -> MatMul(2048x64) -> Gemm(transB, 16x64); + Gather."""
    rng = np.random.default_rng(seed)
    g = Graph(name="m")
    x = Value("x", DataType.FLOAT, (1, 3, 8, 8))
    ids = Value("ids", DataType.INT64, (1, 4))
    g.inputs = [x, ids]
    wc = Value("wc", const=(rng.standard_normal((32, 3, 3, 3)) * 0.3).astype(np.float32))
    small = Value("small", const=rng.standard_normal((4, 32, 1, 1)).astype(np.float32))
    y = Value("y")
    g.append(Node("Conv", [x, wc], [y], {"pads": [1, 1, 1, 1]}, name="conv"))
    r = Value("r")
    g.append(Node("Relu", [y], [r], name="relu"))
    y2 = Value("y2")
    g.append(Node("Conv", [r, small], [y2], name="conv_small"))
    f = Value("f")
    shape = Value("shape", const=np.array([1, -1], np.int64))
    g.append(Node("Reshape", [y2, shape], [f], name="flat"))
    wm = Value("wm", const=(rng.standard_normal((256, 64)) * 0.05).astype(np.float32))
    m = Value("m")
    g.append(Node("MatMul", [f, wm], [m], name="mm"))
    wg = Value("wg", const=(rng.standard_normal((16, 64)) * 0.1).astype(np.float32))
    out = Value("out")
    g.append(Node("Gemm", [m, wg], [out], {"transB": 1}, name="fc"))
    table = Value("table", const=rng.standard_normal((50, 16)).astype(np.float32))
    emb = Value("emb")
    g.append(Node("Gather", [table, ids], [emb], {"axis": 0}, name="embed"))
    g.outputs = [out, emb]
    return g


def _common(**kw):
    base = {
        "quant_type": "WEIGHT_QUANT",
        "bit_num": 8,
        "min_quant_weight_size": 0,
        "min_quant_weight_channel": 16,
        "skip_quant_node": [],
        "debug_info_save_path": "",
        "enable_encode": True,
    }
    return {**base, **kw}


def _run(g, feeds):
    return Runtime(g).run(feeds)


FEEDS = {
    "x": np.random.default_rng(9).standard_normal((1, 3, 8, 8)).astype(np.float32),
    "ids": np.array([[1, 7, 3, 49]], np.int64),
}


def test_find_weights_axes_and_skips():
    g = _model()
    sites, skipped = find_weights(g, min_channel=16, skip_nodes=["mm"])
    axes = {s.value.name: s.axis for s in sites}
    assert axes == {"wc": 0, "wg": 0, "table": 1}
    assert skipped == {"min_quant_weight_channel": ["small"], "skip_quant_node": ["wm"]}
    sites, skipped = find_weights(g, min_size=1000, min_channel=4)
    assert {s.value.name for s in sites} == {"wm", "wg"}
    assert set(skipped["min_quant_weight_size"]) == {"wc", "small", "table"}


def test_lstm_weights_are_quantized_along_gates():
    g = Graph(name="l")
    x = Value("x", DataType.FLOAT, (5, 1, 8))
    g.inputs = [x]
    w = Value("W", const=_w((1, 64, 8)))
    r = Value("R", const=_w((1, 64, 16)))
    y = Value("y")
    g.append(Node("LSTM", [x, w, r], [y], {"hidden_size": 16}, name="lstm"))
    g.outputs = [y]
    sites, _ = find_weights(g)
    assert {(s.value.name, s.axis) for s in sites} == {("W", 1), ("R", 1)}


def test_8_bit_keeps_outputs_and_ir_semantics():
    g = _model()
    ref = _run(g, FEEDS)
    report = quantize_weights(g, common=_common(), mixed_bit=MIXED, weight={"per_channel": True})
    got = _run(g, FEEDS)
    for name in ref:
        assert _cos(ref[name], got[name]) >= 0.999
    assert report["quantized"] == 4 and report["average_bits"] == 8
    assert report["skipped"] == {"min_quant_weight_channel": ["small"]}
    assert report["float_bytes"] == 4 * report["code_bytes"]
    for v in g.values():
        if v.quant is not None:
            assert v.dtype == DataType.FLOAT and v.meta["quant_codes"].dtype == np.int8
            q = v.quant
            dq = dequantize(v.meta["quant_codes"], q.scale, q.zero_point, q.axis, 8, np.float32)
            assert np.array_equal(dq, v.const)


def test_mixed_bits_report_per_layer_bits_and_error():
    g = _model()
    report = quantize_weights(
        g, common=_common(bit_num=0), mixed_bit={**MIXED, "init_scale": 0.05}, weight={}
    )
    bits = {layer["tensor"]: layer["bits"] for layer in report["layers"]}
    assert set(bits) == {"wc", "wm", "wg", "table"}
    assert all(2 <= b <= 8 for b in bits.values())
    assert all(layer["rel_error"] <= 0.05 for layer in report["layers"])
    assert report["init_scale"] == 0.05 and 4 < report["average_bits"] < 8


def test_auto_tune_allocates_bits_by_output_sensitivity():
    g = _model()
    ref = _run(g, FEEDS)
    mixed = {**MIXED, "auto_tune": True, "target_cosine": 0.99}
    report = quantize_weights(g, common=_common(bit_num=0), mixed_bit=mixed, weight={})
    tune = report["auto_tune"]
    assert tune["target_cosine"] == 0.99 and tune["met"] and tune["trials"]
    assert set(tune["sensitivity"]) == {"wc", "wm", "wg", "table"}
    assert any(t["cosine"] >= 0.99 for t in tune["trials"])
    assert report["average_bits"] < 6
    got = _run(g, FEEDS)  # other inputs than the tuning ones
    assert _cos(ref["out"], got["out"]) > 0.98
    g8 = _model()
    q8 = quantize_weights(g8, common=_common(bit_num=8), mixed_bit=MIXED, weight={})
    assert report["stored_bytes"] < q8["stored_bytes"] / 1.5
    # a tighter target spends more bytes
    tight = quantize_weights(
        _model(), common=_common(bit_num=0), mixed_bit={**mixed, "target_cosine": 0.9999},
        weight={},
    )  # fmt: skip
    assert tight["stored_bytes"] > report["stored_bytes"]


def test_auto_tune_with_a_fixed_width_only_chooses_the_granularity():
    mixed = {**MIXED, "auto_tune": True, "target_cosine": 0.999}
    report = quantize_weights(_model(), common=_common(bit_num=8), mixed_bit=mixed, weight={})
    assert {layer["bits"] for layer in report["layers"]} == {8}
    assert report["auto_tune"]["met"]
    plain = quantize_weights(_model(), common=_common(bit_num=8), mixed_bit=MIXED, weight={})
    assert report["stored_bytes"] <= plain["stored_bytes"]


def test_allocation_meets_the_budget_and_spends_less_when_it_grows():
    rng = np.random.default_rng(0)
    bits = np.arange(2, 9)
    options = [
        [_Option(0, int(b), False, 100.0 * b, float(4.0**-b * rng.uniform(0.5, 2))) for b in bits]
        for _ in range(6)
    ]
    sens = rng.uniform(0.1, 10, 6)
    sizes = []
    for budget in (1e-3, 1e-2, 1e-1, 1.0):
        chosen, predicted = _allocate(options, sens, budget)
        assert predicted <= budget
        sizes.append(sum(options[i][k].bytes for i, k in enumerate(chosen)))
    assert sizes == sorted(sizes, reverse=True) and sizes[0] > sizes[-1]
    assert _allocate(options, sens, 1e-30)[0] == [6] * 6  # unreachable: the most accurate
    assert _allocate(options, sens, 1e30)[0] == [0] * 6  # anything goes: the fewest bytes


@pytest.mark.parametrize(("cliff_error", "capped"), [(1.9, True), (0.9, False)])
def test_a_flipped_output_inflates_sensitivities_by_a_bounded_factor(cliff_error, capped):
    """The cliff rule: a trial far over its prediction makes the tensors it lowered more
    sensitive by measured / predicted error, but an output that turned away from the
    reference (cosine < 0, error > 1) by at most CLIFF_FLIP_FACTOR."""
    options = [[_Option(0, b, False, 10.0 * b, 4.0**-b) for b in (8, 2)] for _ in range(2)]
    search = _Search(options, np.array([1e-3, 1e-2]), allowed=1e-3)
    passing = _Trial([0, 0], 1e-6, 160.0, 0)  # both at 8 bits met the target

    def measure(chosen):
        assert chosen == [1, 0]  # the budget lets the less sensitive tensor go to 2 bits
        return cliff_error, 100.0, None

    search.run(measure, 1e-4, rounds=1, start=passing)
    predicted = 1.0 - search.trials[0]["predicted"]
    factor = min(cliff_error / predicted, CLIFF_FLIP_FACTOR) if capped else cliff_error / predicted
    assert cliff_error / predicted > 1000  # far beyond the cap
    assert search.sensitivity == pytest.approx([1e-3 * factor, 1e-2])


def test_stored_bytes_predicts_the_written_tensor(tmp_path):
    from converter.ms import read_ms, write_ms

    g = _model()
    report = quantize_weights(g, common=_common(bit_num=4), mixed_bit=MIXED, weight={})
    write_ms(g, tmp_path / "m.ms")
    written = {v.name: v for v in read_ms(tmp_path / "m.ms").values()}
    for layer in report["layers"]:
        v = written[layer["tensor"]]
        params = QUANT_PARAM_BYTES * np.asarray(v.quant.scale).size
        data = layer["stored_bytes"] - params
        assert abs(data - v.meta["ms_stored_bytes"]) <= max(16, 0.02 * data), layer
    w = _w((64, 4096))
    q = quantize_tensor(w, 0, 4)
    assert entropy_bytes(q.codes, 4) == pytest.approx(entropy_bound_bytes(q.codes))
    assert stored_bytes(q) < stored_bytes(q, encode=False)  # ANS beats packing here


def test_kmeans_and_per_tensor_through_the_pass(tmp_path):
    g = _model()
    report = quantize_weights(
        g,
        common=_common(bit_num=3, debug_info_save_path=str(tmp_path)),
        mixed_bit=MIXED,
        weight={"per_channel": False, "kmeans": True},
    )
    assert all(layer["kmeans"] and layer["axis"] is None for layer in report["layers"])
    wm = next(v for v in g.values() if v.name == "wm")
    assert wm.meta["quant_clusters"].shape == (8,)
    rows = (tmp_path / "weight_quant.csv").read_text().splitlines()
    assert rows[0].startswith("tensor,") and len(rows) == 5


def test_skip_quant_node_and_float16_weights():
    g = _model()
    for v in g.values():
        if v.const is not None and v.dtype == DataType.FLOAT:
            v.const = v.const.astype(np.float16)
            v.dtype = DataType.FLOAT16
    quantize_weights(g, common=_common(bit_num=6, skip_quant_node=["fc"]), mixed_bit=MIXED,
                     weight={})  # fmt: skip
    by_name = {v.name: v for v in g.values()}
    assert by_name["wg"].quant is None
    assert by_name["wm"].quant.num_bits == 6 and by_name["wm"].const.dtype == np.float16


def test_bad_bit_num_is_refused():
    with pytest.raises(ValueError, match="bit_num"):
        quantize_weights(_model(), common=_common(bit_num=17), mixed_bit=MIXED, weight={})


def _depthwise_chain(layers: int = 6, channels: int = 16, seed: int = 1) -> Graph:
    """Depthwise 3x3 conv + bias + ReLU, repeated: post-ReLU inputs have a positive mean."""
    rng = np.random.default_rng(seed)
    g = Graph(name="dw")
    x = Value("x", DataType.FLOAT, (1, channels, 12, 12))
    g.inputs = [x]
    for i in range(layers):
        kernel = (rng.standard_normal((channels, 1, 3, 3)) * 0.4).astype(np.float32)
        w = Value(f"w{i}", const=kernel)
        b = Value(f"b{i}", const=(0.1 * rng.standard_normal(channels)).astype(np.float32))
        y, r = Value(f"y{i}"), Value(f"r{i}")
        g.append(Node("Conv", [x, w, b], [y], {"pads": [1] * 4, "group": channels}, name=f"c{i}"))
        g.append(Node("Relu", [y], [r], name=f"relu{i}"))
        x = r
    g.outputs = [x]
    return g


def test_bias_correction_removes_the_mean_shift_of_quantized_weights():
    rng = np.random.default_rng(3)
    feeds = [{"x": rng.random((1, 16, 12, 12)).astype(np.float32)} for _ in range(3)]
    ref = _depthwise_chain()
    want = [_run(ref, f)["r5"] for f in feeds]
    results = {}
    for correct in (False, True):
        g = _depthwise_chain()
        report = quantize_weights(
            g, common=_common(bit_num=3), mixed_bit=MIXED,
            weight={"per_channel": True, "bias_correction": correct}, tune_feeds=feeds[:2],
        )  # fmt: skip
        assert ("bias_correction" in report) == correct
        got = [_run(g, f)["r5"] for f in feeds]
        pairs = list(zip(got, want, strict=True))
        bias = np.mean([np.abs((a - b).mean(axis=(0, 2, 3))).mean() for a, b in pairs])
        results[correct] = (bias, min(_cos(a, b) for a, b in zip(got, want, strict=True)))
    assert report["bias_correction"]["layers"] == 6
    assert results[True][0] < 0.5 * results[False][0]  # the per-channel mean error
    assert results[True][1] > results[False][1]  # and the output cosine (sample 3 is unseen)


def test_bias_correction_without_data_is_a_note():
    g = _depthwise_chain()
    report = quantize_weights(
        g, common=_common(), mixed_bit=MIXED, weight={"bias_correction": True}
    )
    assert "bias_correction" not in report
    assert any("bias_correction needs calibration data" in n for n in report["notes"])


def test_auto_tune_compares_logits_of_softmax_outputs():
    from passes.quant.weight import tuned_outputs

    g = Graph(name="cls")
    x = Value("x", DataType.FLOAT, (1, 4))
    g.inputs = [x]
    w = Value("w", const=(np.eye(4, 2) * 50).astype(np.float32))
    logits, probs = Value("logits"), Value("probs")
    g.append(Node("MatMul", [x, w], [logits], name="fc"))
    g.append(Node("Softmax", [logits], [probs], {"axis": -1}, name="sm"))
    g.outputs = [probs]
    feeds = [{"x": np.array([[1.0, -1.0, 0.0, 0.0]], np.float32)}]
    (out,) = tuned_outputs(g, feeds)
    np.testing.assert_allclose(out[0], [[50.0, -50.0]])  # not the saturated [1, 0]


def _correlated_feeds(n: int, seed: int) -> list[dict[str, np.ndarray]]:
    """Inputs whose channels are correlated (what GPTQ exploits): a shared component."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        base = rng.standard_normal((1, 1, 8, 8))
        x = base + 0.3 * rng.standard_normal((1, 3, 8, 8))
        out.append({"x": x.astype(np.float32), "ids": np.array([[1, 7, 3, 49]], np.int64)})
    return out


def test_auto_tune_with_gptq_rounding_reaches_the_target_in_fewer_bytes():
    tune, held_out = _correlated_feeds(4, 0), _correlated_feeds(3, 1)
    mixed = {**MIXED, "auto_tune": True, "target_cosine": 0.995}
    reports, cosines = {}, {}
    for rounding in ("nearest", "gptq"):
        g = _model()
        ref = [_run(g, f)["out"] for f in held_out]
        reports[rounding] = quantize_weights(
            g, common=_common(bit_num=0), mixed_bit=mixed, weight={"rounding": rounding},
            tune_feeds=tune,
        )  # fmt: skip
        outs = [_run(g, f)["out"] for f in held_out]
        cosines[rounding] = min(_cos(r, o) for r, o in zip(ref, outs, strict=True))
    gptq = reports["gptq"]
    assert gptq["auto_tune"]["met"] and not any("gptq" in n for n in gptq.get("notes", []))
    # the conv sees 64 rows per sample for its 27 columns; the flattened FC layers see one
    # row per sample for 256 / 64 columns: GPTQ would fit noise there, they round to nearest
    assert gptq["gptq"] == {"layers": 1, "nearest": 3}
    assert gptq["stored_bytes"] <= reports["nearest"]["stored_bytes"]
    assert cosines["gptq"] > 0.99


def test_mixed_bit_auto_tune_takes_biases_and_few_channel_weights(tmp_path):
    """bit_num=0 auto_tune: with min_quant_weight_channel unset, the 8-channel depthwise
    weights and every conv's bias are sites too (biases one scale per tensor); the file
    stores their codes and reads back the same floats. Fixed widths keep biases float."""
    from converter.ms import read_ms, write_ms

    common = {k: v for k, v in _common(bit_num=0).items() if k != "min_quant_weight_channel"}
    mixed = {**MIXED, "auto_tune": True, "target_cosine": 0.99}
    g = _depthwise_chain(channels=8)
    feeds = {"x": np.random.default_rng(5).standard_normal((1, 8, 12, 12)).astype(np.float32)}
    ref = _run(g, feeds)
    report = quantize_weights(g, common=common, mixed_bit=mixed, weight={})
    kinds = {layer["tensor"]: layer["input"] for layer in report["layers"]}
    assert kinds == {**{f"w{i}": "weight" for i in range(6)}, **{f"b{i}": "bias" for i in range(6)}}
    assert all(layer["axis"] is None for layer in report["layers"] if layer["input"] == "bias")
    assert report["auto_tune"]["met"] and not report["skipped"]
    assert _cos(ref["r5"], _run(g, feeds)["r5"]) > 0.98
    write_ms(g, tmp_path / "m.ms")
    back = {v.name: v for v in read_ms(tmp_path / "m.ms").values()}
    mine = {v.name: v for v in g.values()}
    for i in range(6):
        b = back[f"b{i}"]
        assert b.quant is not None and b.meta["quant_codes"].ndim == 1
        assert np.array_equal(b.const, mine[f"b{i}"].const)
    # an explicit min_quant_weight_channel applies; bias correction keeps biases float
    explicit = {**common, "min_quant_weight_channel": 16}
    kept = quantize_weights(_depthwise_chain(6, 8), common=explicit, mixed_bit=mixed, weight={})
    assert kept["quantized"] == 0 and len(kept["skipped"]["min_quant_weight_channel"]) == 6
    corrected = quantize_weights(
        _depthwise_chain(channels=8), common=common, mixed_bit=mixed,
        weight={"bias_correction": True}, tune_feeds=[feeds],
    )  # fmt: skip
    assert {layer["input"] for layer in corrected["layers"]} == {"weight"}
    fixed_8 = {**common, "bit_num": 8}
    fixed = quantize_weights(_depthwise_chain(6, 8), common=fixed_8, mixed_bit=MIXED, weight={})
    assert fixed["quantized"] == 0 and len(fixed["skipped"]["min_quant_weight_channel"]) == 6
