"""Int8 sensitivity: per-op losses (fake quant vs real int8), search, qtables, CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from converter.errors import UsageError
from converter.executor.runtime import Runtime
from ir import DataType, Graph, Node, Value
from parsers.onnx import parse_onnx
from passes.quant import full as F
from passes.quant import sensitivity as S

F32 = DataType.FLOAT
FULL = {"quant_type": "FULL_QUANT"}


def _const(name: str, shape: tuple[int, ...], scale: float = 0.3) -> Value:
    rng = np.random.default_rng(sum(map(ord, name)))  # the same weights in every graph
    return Value(name, const=(rng.standard_normal(shape) * scale).astype(np.float32))


def _add(g: Graph, op: str, inputs: list, name: str, **attrs: Any) -> Value:
    out = g.append(Node(op, inputs, 1, attrs, name=name)).outputs[0]
    out.dtype = F32
    return out


def _cnn(outlier: float = 1.0) -> Graph:
    """conv1+Relu -> conv2 (channel 0 x outlier) -> Add(residual) -> Relu -> GAP -> fc."""
    g = Graph()
    x = Value("x", F32, (1, 3, 8, 8))
    g.inputs = [x]
    a = _add(g, "ConvAct", [x, _const("w1", (8, 3, 3, 3)), _const("b1", (8,))], "conv1",
             pads=[1] * 4, activation="Relu")
    w2 = _const("w2", (8, 8, 3, 3))
    w2.const[0] *= outlier  # type: ignore[index]
    c = _add(g, "Conv", [a, w2, _const("b2", (8,))], "conv2", pads=[1] * 4)
    r = _add(g, "Relu", [_add(g, "Add", [c, a], "add")], "relu")
    w3 = _const("w3", (8, 8, 1, 1))
    w3.const[:, 0] /= outlier  # type: ignore[index]
    d = _add(g, "Conv", [r, w3], "conv3")
    f = _add(g, "Flatten", [_add(g, "GlobalAveragePool", [d], "gap")], "flatten")
    y = _add(g, "Gemm", [f, _const("w4", (5, 8)), _const("b4", (5,))], "fc", transB=1)
    y.name = "y"
    g.outputs = [y]
    return g


def _samples(n: int, seed: int = 1) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(n)]


def _analysis(outlier: float = 1.0, **kw: Any) -> S.Analysis:
    cal = _samples(12)
    return S.analyze(_cnn(outlier), cal, cal[:6], FULL, {}, jobs=kw.pop("jobs", 1), **kw)


# --------------------------------------------------------------------------- losses


def test_candidates_are_the_ops_computing_new_int8_values():
    an = _analysis()
    kinds = {c.node.name: c.kind for c in an.candidates}
    assert kinds == {"conv1": "conv", "conv2": "conv", "add": "binary", "conv3": "conv",
                     "gap": "gap", "fc": "gemm"}
    by = {c.node.name: c for c in an.candidates}
    assert by["conv1"].graph_inputs == {0: "x"}
    assert by["conv2"].range_name == "conv2_out0"  # read by Add: no folded Relu
    assert by["add"].range_name == "relu_out0"  # the lone Relu reader's range
    assert by["fc"].range_name is None  # QGemm writes float logits
    assert len(an.results) == 6 and set(an.results[0].losses) == set(S.METHODS)
    assert [r.loss for r in an.results] == sorted((r.loss for r in an.results), reverse=True)


def test_fake_quant_matches_int8_alone():
    an = _analysis(screen=0)
    for k, cand in enumerate(an.candidates):
        real = an.int8_alone_loss(k, "MAX_MIN")
        if cand.kind in ("binary", "gap"):
            assert real is None
            continue
        fake = next(r for r in an.results if r.name == cand.node.name).losses["MAX_MIN"]
        assert real is not None and fake == pytest.approx(real, rel=0.25, abs=1e-7)


def test_unquantized_candidate_reproduces_float():
    an = _analysis()
    cand = an.candidates[0]
    plain = S.Candidate(cand.position, cand.node, cand.kind, None, {}, {}, {}, cand.suffix)
    assert an._loss_sum(plain, None, (), range(len(an.cache))) == pytest.approx(0, abs=1e-12)
    assert cand.suffix == tuple(range(1, len(an.graph.nodes)))


def test_screening_keeps_the_best_method_on_all_samples():
    exact = {r.name: r for r in _analysis(screen=0).results}
    fast = {r.name: r for r in _analysis(screen=2).results}
    for name, r in fast.items():
        assert r.loss == pytest.approx(exact[name].losses[r.best], rel=1e-9)


def test_parallel_workers_give_the_same_losses():
    one = {r.name: r.losses for r in _analysis(jobs=1).results}
    two = {r.name: r.losses for r in _analysis(jobs=2).results}
    assert one.keys() == two.keys()
    for name in one:
        assert one[name] == pytest.approx(two[name], rel=1e-12)


# --------------------------------------------------------------------------- search


def test_outlier_layer_ranks_first_and_float_list_recovers_the_cosine():
    an = _analysis(outlier=300.0)
    assert {r.name for r in an.results[:2]} & {"conv2", "add", "conv3"}
    plain = an.int8_cosine((), None)
    full = S.search(an, "full", target_cos=0.999)
    assert full.target_met and full.cosine >= 0.999 > plain
    assert [s["float_ops"] for s in full.steps] == list(range(len(full.floats) + 1))
    greedy = S.search(an, "greedy", target_cos=0.999)
    assert greedy.target_met and len(greedy.floats) <= len(full.floats) + 1
    capped = S.search(an, "full", max_float_layers=1)
    assert len(capped.floats) == 1 and capped.target_met is None
    with pytest.raises(UsageError, match="--mode"):
        S.search(an, "bisect")


def test_bisect_finds_the_first_passing_length():
    assert S._bisect(lambda k: k >= 5, 9) == 5
    assert S._bisect(lambda k: True, 9) == 0
    assert S._bisect(lambda k: False, 9) == 9


def test_clone_graph_runs_like_the_original():
    from benchmarks.models import control_flow_model

    g = parse_onnx(control_flow_model())
    copy = S.clone_graph(g)
    feeds = {"x": np.arange(4, dtype=np.float32), "trip": np.asarray(3, np.int64)}
    want, got = Runtime(g).run(feeds), Runtime(copy).run(feeds)
    for k in want:
        np.testing.assert_array_equal(want[k], got[k])
    assert not {id(v) for v in g.values()} & {id(v) for v in copy.values()}


# --------------------------------------------------------------------------- qtable / full


def test_qtable_round_trip_and_errors(tmp_path):
    path = tmp_path / "q.qtable"
    S.write_qtable(path, ["conv2"], {"conv2": "KL", "conv1": "MSE"}, header=["x"])
    assert S.read_qtable(path) == {"conv2": "F32", "conv1": "MSE"}
    (tmp_path / "bad").write_text("conv1 INT4\n")
    with pytest.raises(UsageError, match=r"bad:1"):
        S.read_qtable(tmp_path / "bad")
    (tmp_path / "bad2").write_text("# c\n\nconv1 INT8 FOO\n")
    with pytest.raises(UsageError, match=r"bad2:3: method"):
        S.read_qtable(tmp_path / "bad2")
    with pytest.raises(UsageError, match="not found"):
        S.read_qtable(tmp_path / "missing")


def test_quantize_full_applies_the_qtable(tmp_path):
    for i, s in enumerate(_samples(6)):
        np.save(tmp_path / f"{i}.npy", s["x"])
    data = {"calibrate_path": f"x:{tmp_path}", "calibrate_size": 6}
    plain, tuned = _cnn(), _cnn()
    F.quantize_full(plain, print, {}, {}, data)
    report = F.quantize_full(tuned, print, {}, {}, data,
                             qtable={"conv3": "F32", "conv2": "KL"})
    assert "conv3" in report["skipped"] and report["qtable_methods"] == {"KL": 1}
    ops = {n.op for n in tuned.nodes}
    assert "Conv" in ops and "QLinearConv" in ops  # conv3 stays float

    def scale(g: Graph, name: str) -> float:
        v = next(v for v in g.values() if v.name == name and v.dtype == DataType.INT8)
        return float(v.quant.scale[0])  # type: ignore[union-attr]

    assert scale(tuned, "conv2_out0_int8") < scale(plain, "conv2_out0_int8")
    with pytest.raises(UsageError, match="not in the graph"):
        F.quantize_full(_cnn(), print, {}, {}, data, qtable={"nope": "F32"})


# --------------------------------------------------------------------------- CLI


def _onnx_model(path: Path, outlier: float = 300.0) -> None:
    rng = np.random.default_rng(3)
    w1 = (rng.standard_normal((16, 8)) * 0.5).astype(np.float32)
    w1[:, :2] *= outlier
    w2 = (rng.standard_normal((8, 4)) * 0.5).astype(np.float32)
    w2[:2] /= outlier
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("MatMul", ["r", "w2"], ["y"], name="fc2")]
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def _cli(args: list[str]) -> int:
    from converter.cli import main

    try:
        main(args)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_cli_sensitivity_then_convert_with_the_qtable(tmp_path, capsys):
    import converter

    src = tmp_path / "mlp.onnx"
    _onnx_model(src)
    cal = tmp_path / "cal"
    cal.mkdir()
    rng = np.random.default_rng(4)
    for i in range(20):
        np.save(cal / f"{i:02d}.npy", np.abs(rng.standard_normal((1, 16))).astype(np.float32))
    cfg = tmp_path / "q.ini"
    cfg.write_text("[common_quant_param]\nquant_type=FULL_QUANT\n"
                   f"[data_preprocess_param]\ncalibrate_path=x:{cal}\ncalibrate_size=20\n")
    qt, rep = tmp_path / "out.qtable", tmp_path / "r.json"
    code = _cli(["sensitivity", str(src), "--configFile", str(cfg), "--inference-size", "8",
                 "--target-cos", "0.9999", "--qtable", str(qt), "--json", str(rep),
                 "--jobs", "1"])
    assert code == 0 and "SENSITIVITY RESULT SUCCESS:0" in capsys.readouterr().out
    report = json.loads(rep.read_text())
    assert report["search"]["target_met"] and report["search"]["floats"]
    assert (tmp_path / "out.cali").read_text().startswith("# liteconv calibration table")
    assert _cli(["convert", str(src), str(tmp_path / "m.ms"), "--configFile", str(cfg),
                 "--qtable", str(qt), "-q"]) == 0
    model = converter.load(tmp_path / "m.ms")
    feeds = [{"x": np.load(p)} for p in sorted(cal.iterdir())[:8]]
    floats = Runtime(parse_onnx(src))
    cos = np.mean([S._cosine(floats.run(f)["y"], model.run(f)["y"]) for f in feeds])
    assert cos == pytest.approx(report["search"]["cosine"], abs=1e-6)


def test_cli_errors_are_one_line(tmp_path, capsys):
    src = tmp_path / "mlp.onnx"
    _onnx_model(src)
    cfg = tmp_path / "w.ini"
    cfg.write_text("[common_quant_param]\nquant_type=WEIGHT_QUANT\n")
    code = _cli(["sensitivity", str(src), "--configFile", str(cfg), "--qtable",
                 str(tmp_path / "q")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "FULL_QUANT" in err and len(err.splitlines()) == 1
    (tmp_path / "q").write_text("fc1 F32\n")
    code = _cli(["convert", str(src), str(tmp_path / "m.ms"), "--qtable", str(tmp_path / "q")])
    assert code == 2 and "--qtable needs" in capsys.readouterr().err
    full = tmp_path / "f.ini"
    full.write_text(f"[common_quant_param]\nquant_type=FULL_QUANT\n[data_preprocess_param]\n"
                    f"calibrate_path=x:{tmp_path / 'none'}\n")
    code = _cli(["sensitivity", str(src), "--configFile", str(full), "--qtable",
                 str(tmp_path / "q"), "--target-cos", "2"])
    assert code == 2 and "--target-cos" in capsys.readouterr().err


def test_inference_samples_sources(tmp_path):
    g = _cnn()
    folder = tmp_path / "inf"
    folder.mkdir()
    for i, s in enumerate(_samples(5, seed=7)):
        np.save(folder / f"{i}.npy", s["x"])
    calib = _samples(4)
    first = S.inference_samples(g, calib, {}, None, 3)
    assert len(first) == 3 and first[0]["x"] is calib[0]["x"]
    rand = S.inference_samples(g, calib, {}, "random", 2, seed=5)
    assert rand[0]["x"].shape == (1, 3, 8, 8) and not np.array_equal(rand[0]["x"], rand[1]["x"])
    own = S.inference_samples(g, calib, {}, str(folder), 4)
    assert len(own) == 4 and np.array_equal(own[0]["x"], _samples(1, seed=7)[0]["x"])
    with pytest.raises(UsageError, match="at least 1"):
        S.inference_samples(g, calib, {}, None, 0)
