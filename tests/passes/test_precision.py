"""passes.precision.apply_fp16: casting structure, keep lists, range guards, auto."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from converter.errors import UsageError
from converter.executor.runtime import Runtime
from ir import DataType, Graph, Node, Value
from ir.verify import check_graph
from passes.precision import apply_fp16
from tests.passes.pass_testing import Builder

F32 = DataType.FLOAT
F16 = DataType.FLOAT16
RNG = np.random.default_rng(0)


def _w(*shape: int, scale: float = 0.3) -> np.ndarray:
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def _convert(graph: Graph, mode: str = "on", **kw: Any) -> tuple[dict[str, Any], list[str]]:
    """apply_fp16 with the before/after numerics the caller checks; returns report, log."""
    log: list[str] = []
    report = apply_fp16(graph, mode, log.append, **kw)
    check_graph(graph)
    return report, log


def _run(graph: Graph, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return Runtime(graph).run(feeds)


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64).ravel()
    b = b.astype(np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _ops(graph: Graph) -> dict[str, int]:
    return graph.count_ops()


def _node(graph: Graph, name: str) -> Node:
    return next(n for n in graph.nodes if n.name == name)


def _conv_net() -> Graph:
    b = Builder()
    x = b.input("x", (1, 3, 8, 8))
    h = b.op("Conv", x, b.const(_w(4, 3, 3, 3), "w1"), b.const(_w(4), "b1"), pads=[1, 1, 1, 1])
    h = b.op("Relu", h)
    h = b.op("Conv", h, b.const(_w(4, 4, 1, 1), "w2"))
    return b.outputs(b.op("Sigmoid", h))


def test_on_casts_at_the_boundary_and_halves_weights():
    """Inputs/outputs keep float32 and names; weights and activations become float16."""
    g = _conv_net()
    feeds = {"x": RNG.standard_normal((1, 3, 8, 8)).astype(np.float32)}
    ref = _run(g, feeds)
    out_name = g.outputs[0].name
    report, log = _convert(g)
    assert [v.name for v in g.outputs] == [out_name] and g.outputs[0].dtype == F32
    assert g.inputs[0].dtype == F32
    assert _ops(g) == {"Cast": 2, "Conv": 2, "Relu": 1, "Sigmoid": 1}
    assert g.nodes[0].op == "Cast" and g.nodes[0].attr("to") == int(F16)
    assert g.nodes[-1].op == "Cast" and g.nodes[-1].attr("to") == int(F32)
    for n in g.nodes[1:-1]:
        assert all(v.dtype == F16 for v in (*n.inputs, *n.outputs) if v is not None), n
    assert {v.const.dtype for v in g.constants()} == {np.dtype(np.float16)}
    assert report["weight_bytes_after"] * 2 == report["weight_bytes_before"]
    assert report["fp16_nodes"] == 4 and report["fp32_nodes"] == 0 and report["casts"] == 2
    assert report["kept_fp32"] == [] and report["weights_kept_fp32"] == []
    got = _run(g, feeds)[out_name]
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, ref[out_name], atol=2e-3)
    assert report["calibration"]["cosine"][out_name] > 0.9999
    assert any("4 nodes float16" in line for line in log)


def test_keep_by_node_name_and_op_type_gets_casts_around():
    g = _conv_net()
    relu = next(n for n in g.nodes if n.op == "Relu")
    feeds = {"x": RNG.standard_normal((1, 3, 8, 8)).astype(np.float32)}
    ref = _run(g, feeds)
    report, _ = _convert(g, keep_fp32_node=[relu.name], keep_fp32_op_type=["Sigmoid"])
    assert relu.inputs[0].dtype == F32 and relu.outputs[0].dtype == F32
    assert relu.inputs[0].producer.op == "Cast"  # fp16 conv output cast up
    (after,) = [n for n, _ in relu.outputs[0].uses]
    assert after.op == "Cast" and after.attr("to") == int(F16)  # cast down for the next conv
    sig = next(n for n in g.nodes if n.op == "Sigmoid")
    assert sig.outputs[0] is g.outputs[0] and sig.outputs[0].dtype == F32
    reasons = {k["op"]: k["reason"] for k in report["kept_fp32"]}
    assert reasons == {"Relu": "listed in keep_fp32_node", "Sigmoid": "listed in keep_fp32_op_type"}
    assert report["fp32_nodes"] == 2 and report["casts"] == 4
    name = g.outputs[0].name
    np.testing.assert_allclose(_run(g, feeds)[name], ref[name], atol=2e-3)


def test_unknown_keep_names_and_modes_are_usage_errors():
    with pytest.raises(UsageError, match="unknown op type"):
        apply_fp16(_conv_net(), "on", print, keep_fp32_op_type=["Relux"])
    with pytest.raises(UsageError, match="no node named"):
        apply_fp16(_conv_net(), "on", print, keep_fp32_node=["nope"])
    with pytest.raises(UsageError, match="use on or auto"):
        apply_fp16(_conv_net(), "off", print)


def test_weights_out_of_float16_range_stay_float32_and_are_reported():
    b = Builder()
    x = b.input("x", (2, 4))
    big = b.op("Mul", x, b.const(np.array([1e5, 2.0, 3.0, 4.0], np.float32), "big"))
    tiny = b.op("Mul", big, b.const(np.full(4, 1e-9, np.float32), "tiny"))
    y = b.op("Add", tiny, b.const(_w(4), "bias"))  # reads ~1e-4 values: float32 too
    g = b.outputs(b.op("MatMul", b.op("Relu", y), b.const(_w(4, 4), "ok")))
    feeds = {"x": RNG.standard_normal((2, 4)).astype(np.float32)}
    ref = _run(g, feeds)
    report, log = _convert(g)
    kept = {w["weight"]: w["reason"] for w in report["weights_kept_fp32"]}
    assert set(kept) == {"big", "tiny"}
    assert "exceeds float16's range" in kept["big"] and "flush to zero" in kept["tiny"]
    assert any("weight big stays float32" in line for line in log)
    consts = {v.name: v.const.dtype for v in g.constants()}
    assert consts["big"] == np.float32 and consts["tiny"] == np.float32
    assert consts["ok_fp16"] == np.float16
    kept = {k["op"] for k in report["kept_fp32"]}
    assert kept == {"Mul", "Add"} and report["fp16_nodes"] == 2
    got = _run(g, feeds)[g.outputs[0].name]
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, ref[g.outputs[0].name], rtol=2e-3, atol=1e-5)


def test_big_reduce_sum_stays_finite():
    """A sum of 70000 elements (~7e4) would be inf in float16: it and its reader stay float32."""
    b = Builder()
    x = b.input("x", (1, 70000))
    s = b.op("ReduceSum", b.op("Add", x, b.const(np.float32(1.0), "one")),
             b.const(np.array([1]), "axes"))  # fmt: skip
    g = b.outputs(b.op("Sqrt", b.op("Relu", s)))
    feeds = {"x": RNG.standard_normal((1, 70000)).astype(np.float32)}
    ref = _run(g, feeds)
    report, _ = _convert(g)
    reasons = {k["op"]: k["reason"] for k in report["kept_fp32"]}
    assert reasons["ReduceSum"].startswith("value") or "default keep-list" in reasons["ReduceSum"]
    assert "calibration data" in reasons["Relu"]  # reads the 7e4 value
    got = _run(g, feeds)[g.outputs[0].name]
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, ref[g.outputs[0].name], rtol=1e-3)


def test_activation_of_1e5_magnitude_stays_finite():
    """MatMul output ~1e5 then LayerNorm: float16 would give inf then NaN."""
    b = Builder()
    x = b.input("x", (4, 16))
    h = b.op("MatMul", x, b.const(_w(16, 8, scale=3e4), "w"))
    y = b.op("LayerNormalization", h, b.const(np.ones(8, np.float32), "g"),
             b.const(np.zeros(8, np.float32), "bb"), axis=-1)  # fmt: skip
    g = b.outputs(b.op("MatMul", y, b.const(_w(8, 8), "w2")))
    feeds = {"x": RNG.standard_normal((4, 16)).astype(np.float32)}
    ref = _run(g, feeds)
    report, _ = _convert(g)
    kept = {k["op"] for k in report["kept_fp32"]}
    assert {"MatMul", "LayerNormalization"} <= kept
    assert report["fp16_nodes"] == 1  # the last MatMul
    got = _run(g, feeds)[g.outputs[0].name]
    assert np.all(np.isfinite(got))
    assert _cos(got, ref[g.outputs[0].name]) > 0.9999


def test_default_keep_list_and_small_reductions():
    b = Builder()
    x = b.input("x", (2, 8))
    e = b.op("Exp", x)
    small = b.op("ReduceSum", e, b.const(np.array([1]), "axes"))  # 8 elements: float16
    p2 = b.op("Pow", x, b.const(np.float32(2.0), "two"))
    p_half = b.op("Pow", b.op("Abs", x), b.const(np.float32(0.5), "half"))
    g = b.outputs(small, p2, p_half)
    report, _ = _convert(g)
    kept = {k["node"]: k["reason"] for k in report["kept_fp32"]}
    assert kept[e.producer.name].startswith("default keep-list")
    assert kept[p2.producer.name].startswith("default keep-list")
    assert small.producer.name not in kept and p_half.producer.name not in kept
    assert "ReduceSum" in report["default_keep_op_types"]


def test_cast_to_float_and_constant_of_shape_follow_float16():
    b = Builder()
    x = b.input("x", (2, 3))
    i = b.input("i", (2, 3), DataType.INT64)
    f = b.op("Cast", i, to=int(F32))
    z = b.op("ConstantOfShape", b.const(np.array([2, 3]), "shp"),
             value=np.array([0.5], np.float32))  # fmt: skip
    g = b.outputs(b.op("Add", b.op("Mul", x, f), z))
    feeds = {"x": RNG.standard_normal((2, 3)).astype(np.float32),
             "i": np.arange(6).reshape(2, 3)}  # fmt: skip
    ref = _run(g, feeds)
    report, _ = _convert(g)
    assert f.producer.attr("to") == int(F16) and f.dtype == F16
    assert z.producer.attr("value").dtype == np.float16 and z.dtype == F16
    assert report["kept_fp32"] == []
    name = g.outputs[0].name
    np.testing.assert_allclose(_run(g, feeds)[name], ref[name], rtol=1e-3)


def test_attribute_typed_outputs_and_recurrent_ops_stay_float32():
    b = Builder()
    x = b.input("x", (3, 2, 4))  # seq, batch, input
    w = b.const(_w(1, 9, 4), "W")
    r = b.const(_w(1, 9, 3), "R")
    y, _ = b.op("GRU", x, w, r, outputs=2, hidden_size=3)
    m = b.input("m", (3, 3))
    eye = b.op("EyeLike", b.const(np.zeros((3, 3), np.int64), "z"), dtype=int(F32))
    g = b.outputs(y, b.op("Add", m, eye))
    feeds = {"x": _w(3, 2, 4), "m": _w(3, 3)}
    ref = _run(g, feeds)
    report, _ = _convert(g)
    kept = {k["op"]: k["reason"] for k in report["kept_fp32"]}
    assert set(kept) == {"GRU", "EyeLike"}
    assert "recurrent" in kept["GRU"]
    assert "does not follow float16" in kept["EyeLike"]
    assert y.dtype == F32 and eye.dtype == F32
    got = _run(g, feeds)
    np.testing.assert_allclose(got[g.outputs[1].name], ref[g.outputs[1].name], atol=1e-3)


def test_resize_scales_and_shape_reads_are_not_cast():
    b = Builder()
    x = b.input("x", (1, 2, 4, 4))
    h = b.op("Relu", x)
    r = b.op("Resize", h, None, b.const(np.array([1, 1, 2, 2], np.float32), "scales"))
    shp = b.op("Shape", h)
    g = b.outputs(r, shp)
    feeds = {"x": RNG.standard_normal((1, 2, 4, 4)).astype(np.float32)}
    ref = _run(g, feeds)
    r_name = r.name
    _convert(g)
    resize = next(n for n in g.nodes if n.op == "Resize")
    assert resize.inputs[0].dtype == F16 and resize.inputs[2].const.dtype == np.float32
    shape_node = next(n for n in g.nodes if n.op == "Shape")
    assert shape_node.inputs[0] is h and h.dtype == F16  # no Cast in front of Shape
    assert _ops(g)["Cast"] == 2  # input and the Resize output
    got = _run(g, feeds)
    np.testing.assert_allclose(got[r_name], ref[r_name], atol=2e-3)
    np.testing.assert_array_equal(got[shp.name], ref[shp.name])


def test_shared_constant_serves_both_precisions():
    b = Builder()
    x = b.input("x", (2, 4))
    w = b.const(_w(4, 4), "w")
    a = b.op("MatMul", x, w)
    k = b.op("MatMul", b.op("Relu", x), w)
    g = b.outputs(b.op("Add", a, k))
    feeds = {"x": RNG.standard_normal((2, 4)).astype(np.float32)}
    ref = _run(g, feeds)
    _convert(g, keep_fp32_node=[k.producer.name])
    assert a.producer.inputs[1].const.dtype == np.float16
    assert k.producer.inputs[1] is w and w.const.dtype == np.float32
    name = g.outputs[0].name
    np.testing.assert_allclose(_run(g, feeds)[name], ref[name], atol=3e-3)


def test_control_flow_bodies_read_outer_values_as_float32():
    g = Graph()
    c = Value("c", DataType.BOOL, ())
    x = Value("x", F32, (3,))
    g.inputs = [c, x]
    relu = g.append(Node("Relu", [x], [Value("r", F32, (3,))], name="relu"))
    r = relu.outputs[0]
    then = Graph(name="then")
    t = then.append(Node("Neg", [r], [Value("t", F32, (3,))], name="t"))
    then.outputs = [t.outputs[0]]
    els = Graph(name="else")
    els.outputs = [r]  # an outer value as a body output
    iff = g.append(Node("If", [c], [Value("y", F32, (3,))],
                        {"then_branch": then, "else_branch": els}, name="if"))  # fmt: skip
    g.outputs = [iff.outputs[0], r]
    xs = np.array([-1.0, 0.5, 2.0], np.float32)
    report, _ = _convert(g)
    assert r.dtype == F16
    assert t.inputs[0].dtype == F32 and t.inputs[0].producer.op == "Cast"
    assert els.outputs[0].dtype == F32
    assert {k["node"] for k in report["kept_fp32"]} == {"if"}
    assert [v.name for v in g.outputs] == ["y", "r"]
    for cond, want in ((True, -np.maximum(xs, 0)), (False, np.maximum(xs, 0))):
        got = _run(g, {"c": np.array(cond), "x": xs})
        np.testing.assert_allclose(got["y"], want, rtol=1e-3)
        assert got["y"].dtype == np.float32 and got["r"].dtype == np.float32


def test_uncalibratable_graph_is_converted_and_says_so():
    b = Builder()
    s = b.input("s", (2,), DataType.STRING)
    x = b.input("x", (2,))
    g = b.outputs(b.op("Relu", x), b.op("Identity", s))
    report, log = _convert(g, mode="auto")
    assert "skipped" in report["calibration"]
    assert any("calibration run skipped" in line for line in log)
    assert report["fp16_nodes"] == 1


def _cancellation() -> Graph:
    """(x@W1 + 3000) - 3000: float16's spacing of 2 at 3000 wrecks the difference."""
    rng = np.random.default_rng(1)
    b = Builder()
    x = b.input("x", (8, 16))
    h = b.op("MatMul", x, b.const(rng.standard_normal((16, 16)).astype(np.float32), "w1"))
    a = b.op("Relu", b.op("Add", h, b.const(np.full(16, 3000, np.float32), "off")))
    d = b.op("Sub", a, b.const(np.full(16, 3000, np.float32), "off2"))
    return b.outputs(b.op("MatMul", d, b.const(rng.standard_normal((16, 4)).astype(np.float32))))


def test_auto_keeps_worst_ops_until_the_target_holds():
    on_graph = _cancellation()
    on_report, _ = _convert(on_graph, "on")
    (on_cos,) = on_report["calibration"]["cosine"].values()
    assert on_cos < 0.9999
    g = _cancellation()
    report, log = _convert(g, "auto", target_cosine=0.9999)
    (cos,) = report["calibration"]["cosine"].values()
    assert cos >= 0.9999
    assert report["auto"]["met"] and len(report["auto"]["rounds"]) >= 2
    assert report["auto"]["rounds"][0]["min_cosine"] == pytest.approx(on_cos)
    reasons = [k["reason"] for k in report["kept_fp32"]]
    assert reasons and all(r.startswith("auto: ") for r in reasons)
    assert "Sub" in {k["op"] for k in report["kept_fp32"]}
    assert report["fp16_nodes"] >= 1  # not everything went back to float32
    assert any("fp16 auto: round" in line for line in log)


def test_auto_is_on_when_on_already_meets_the_target():
    g = _conv_net()
    report, _ = _convert(g, "auto", target_cosine=0.999)
    assert report["auto"]["rounds"] == [
        {"kept_fp32": 0, "min_cosine": report["auto"]["rounds"][0]["min_cosine"]}
    ]
    assert report["kept_fp32"] == [] and report["fp16_nodes"] == 4


def test_subnormal_weights_with_large_relative_error_stay_float32():
    b = Builder()
    x = b.input("x", (2, 4))
    g = b.outputs(b.op("Mul", x, b.const(np.full(4, 3e-6, np.float32), "sub")))
    report, _ = _convert(g)
    (w,) = report["weights_kept_fp32"]
    assert w["weight"] == "sub" and "relative error" in w["reason"]


def test_lstm_kept_float32_reads_float16_stored_weights():
    b = Builder()
    x = b.input("x", (5, 1, 8))  # [seq, batch, input]
    w = b.const(_w(1, 4 * 32, 8), "lstm_w")
    r = b.const(_w(1, 4 * 32, 32, scale=0.1), "lstm_r")
    y, _h, _c = b.op("LSTM", x, w, r, outputs=3, hidden_size=32)
    g = b.outputs(b.op("MatMul", b.op("Squeeze", y, b.const(np.array([1], np.int64))),
                       b.const(_w(32, 4), "head")))  # fmt: skip
    feeds = {"x": RNG.standard_normal((5, 1, 8)).astype(np.float32)}
    ref = _run(g, feeds)
    report, _ = _convert(g)
    assert {k["op"] for k in report["kept_fp32"]} == {"LSTM"}
    assert report["fp16_weights_of_fp32_nodes"] == 2
    lstm = next(n for n in g.nodes if n.op == "LSTM")
    for v in lstm.inputs[1:3]:  # float32 for the node, through a Cast of a float16 constant
        assert v.dtype == DataType.FLOAT and v.producer.op == "Cast"
        assert v.producer.inputs[0].const.dtype == np.float16
    assert report["weight_bytes_after"] < report["weight_bytes_before"] / 1.9
    got = _run(g, feeds)[g.outputs[0].name]
    assert _cos(got, ref[g.outputs[0].name]) > 0.99999
