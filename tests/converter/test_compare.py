"""liteconv compare: per-layer comparison of a .ms with its source model, matched by name."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from converter.cli import main
from converter.compare import compare_model, layer_metrics
from converter.ms import read_ms, write_ms
from converter.pipeline import convert

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _cnn(path: Path) -> Path:
    """conv1-relu1 -> conv2-relu2 -> conv3 (+ r1 skip) -> GAP -> Flatten -> Gemm: named values."""
    rng = np.random.default_rng(0)

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32)

    inits = {"w1": w(8, 3, 3, 3), "w2": w(8, 8, 3, 3), "w3": w(8, 8, 3, 3), "fc": w(10, 8),
             "b1": w(8), "b2": w(8), "b3": w(8), "fcb": w(10)}  # fmt: skip
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1] * 4, name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1] * 4, name="conv2"),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Conv", ["r2", "w3", "b3"], ["c3"], pads=[1] * 4, name="conv3"),
        helper.make_node("Add", ["c3", "r1"], ["sum"], name="add"),
        helper.make_node("GlobalAveragePool", ["sum"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "fc", "fcb"], ["logits"], transB=1, name="fc"),
    ]
    graph = helper.make_graph(
        nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def cnn(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("compare")
    src = _cnn(root / "cnn.onnx")
    clean = root / "clean.ms"
    convert(src, fmk="ONNX", output=clean)
    graph = read_ms(clean)
    conv2 = next(n for n in graph.nodes if "r2" in [v.name for v in n.outputs])
    weight = conv2.inputs[1]
    assert weight is not None and weight.const is not None
    noise = np.random.default_rng(5).standard_normal(weight.const.shape).astype(np.float32)
    weight.const = (weight.const + 0.5 * noise).astype(np.float32)
    broken = root / "broken.ms"
    write_ms(graph, broken)
    return {"root": root, "src": src, "clean": clean, "broken": broken}


def _compare(cnn: dict[str, Path], which: str, **kw):
    path = cnn[which]
    return compare_model(read_ms(path), cnn["src"], "ONNX", path, **kw)


def test_clean_conversion_matches_every_layer(cnn):
    rep = _compare(cnn, "clean")
    names = [r.name for r in rep.layers]
    # fused Conv+Relu keep the Relu's output name; every value of the .ms is matched
    assert {"r1", "r2", "c3", "sum", "gap", "flat", "logits"} <= set(names)
    assert len(rep.layers) == rep.values and not rep.unmatched
    assert all(r.cosine > 0.99999 and r.rel_error < 1e-5 for r in rep.layers)
    assert rep.first_diverging is None and rep.passed
    assert [r.index for r in rep.layers] == sorted(r.index for r in rep.layers)
    r2 = next(r for r in rep.layers if r.name == "r2")
    assert r2.inputs == ["r1"] and r2.op == "ConvAct"


def test_nhwc_layout_values_are_matched_and_transposed(cnn):
    ms = cnn["root"] / "nhwc.ms"
    convert(cnn["src"], fmk="ONNX", output=ms, output_format="NHWC")
    rep = compare_model(read_ms(ms), cnn["src"], "ONNX", ms)
    moved = {r.ref_name: r for r in rep.layers if r.name.endswith("_t")}
    # r1 / r2 are 1x8x8x8: same shape in both layouts, still compared transposed
    assert {"r1", "r2"} <= set(moved) and moved["r2"].note == "NHWC vs NCHW"
    assert all(r.cosine > 0.99999 for r in rep.layers) and rep.first_diverging is None


def test_corrupted_layer_is_the_first_diverging(cnn):
    rep = _compare(cnn, "broken")
    first = rep.first_diverging
    assert first is not None and first.name == "r2" and first.op == "ConvAct"
    assert first.cosine < 0.99 and first.input_cosine is not None and first.input_cosine > 0.9999
    by_name = {r.name: r for r in rep.layers}
    assert by_name["r1"].cosine > 0.99999  # before the corruption: untouched
    assert by_name["c3"].cosine < 0.999  # after it: inherited, not reported as first
    assert not rep.passed and rep.failed_outputs == ["logits"]
    lines = "\n".join(rep.lines())
    assert "first diverging layer: r2 (ConvAct)" in lines
    assert "--optimize basic" in rep.hint()


def test_cli_writes_json_and_png_and_fails_on_outputs(cnn, capsys):
    root = cnn["root"]
    args = ["compare", str(cnn["src"]), str(cnn["broken"]), "--json", str(root / "b.json"),
            "--plot", str(root / "b.png")]  # fmt: skip
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 1
    out, err = capsys.readouterr()
    assert "first diverging layer: r2 (ConvAct)" in out
    assert "logits" in err and len(err.strip().splitlines()) == 1
    data = json.loads((root / "b.json").read_text())
    assert data["first_diverging"]["name"] == "r2" and data["matched"] == len(data["layers"])
    assert {"name", "op", "cosine", "rel_error", "input_cosine"} <= set(data["layers"][0])
    png = (root / "b.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 2000


def test_cli_clean_passes_and_top_limits_rows(cnn, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["compare", str(cnn["src"]), str(cnn["clean"]), "--top", "2"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    rows = [ln for ln in out.splitlines() if ln[:4].strip().isdigit()]
    assert len(rows) == 2
    assert "no layer below cosine 0.999" in out


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--threshold", "1.5"], "--threshold"), (["--top", "0"], "--top")],
)
def test_cli_bad_arguments_exit_2(cnn, capsys, extra, message):
    with pytest.raises(SystemExit) as exc:
        main(["compare", str(cnn["src"]), str(cnn["clean"]), *extra])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_missing_model_exit_2(cnn, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["compare", str(tmp_path / "nope.onnx"), str(cnn["clean"])])
    assert exc.value.code == 2
    assert "not found" in capsys.readouterr().err


def test_int8_values_are_dequantized_and_matched(cnn):
    root = cnn["root"]
    calib = root / "calib"
    calib.mkdir(exist_ok=True)
    rng = np.random.default_rng(2)
    for i in range(4):
        np.save(calib / f"{i}.npy", rng.standard_normal((1, 3, 8, 8)).astype(np.float32))
    cfg = root / "q.ini"
    cfg.write_text("[common_quant_param]\nquant_type=FULL_QUANT\n[data_preprocess_param]\n"
                   f"calibrate_path=x:{calib}\ncalibrate_size=4\n")  # fmt: skip
    ms = root / "int8.ms"
    convert(cnn["src"], fmk="ONNX", output=ms, config_file=cfg)
    rep = compare_model(read_ms(ms), cnn["src"], "ONNX", ms, threshold=0.99)
    int8 = [r for r in rep.layers if r.dtype == "int8"]
    assert len(int8) >= 3
    assert {r.ref_name for r in int8} >= {"x", "r1", "r2"}  # X_int8 stands for X
    assert all(r.name == f"{r.ref_name}_int8" for r in int8)
    # dequantized: within int8 rounding of the float model, nowhere near random
    assert all(r.cosine > 0.99 for r in rep.layers), [(r.name, r.cosine) for r in rep.layers]
    strict = compare_model(read_ms(ms), cnn["src"], "ONNX", ms, threshold=0.999999)
    first = strict.first_diverging
    assert first is not None and first.dtype == "int8"
    # the hint names the node skip_quant_node accepts: with it, that value stays float
    skip = re.search(r"skip_quant_node=(\S+)", strict.hint())
    assert skip is not None
    text = cfg.read_text().replace("FULL_QUANT\n", f"FULL_QUANT\nskip_quant_node={skip[1]}\n")
    cfg.write_text(text)
    convert(cnn["src"], fmk="ONNX", output=ms, config_file=cfg)
    graph = read_ms(ms)
    assert skip[1] in {n.name for n in graph.nodes}  # the node kept its float op
    again = compare_model(graph, cnn["src"], "ONNX", ms, threshold=0.999999)
    assert not [r for r in again.layers if r.ref_name == first.ref_name and r.dtype == "int8"]


def test_layer_metrics():
    ref = np.array([1.0, -2.0, 3.0], np.float32)
    assert layer_metrics(ref, ref)[:3] == (1.0, 0.0, 0.0)
    cos, rel, max_abs, _ = layer_metrics(-ref, ref)
    assert cos == pytest.approx(-1.0) and rel == pytest.approx(2.0) and max_abs == 6.0
    assert layer_metrics(np.zeros(3), np.zeros(3))[0] == 1.0
    assert layer_metrics(np.array([np.nan, 1.0]), np.array([0.0, 1.0]))[3] == "NaN/Inf differ"


def test_tflite_per_layer_via_litert(tmp_path_factory):
    pytest.importorskip("tensorflow")
    pytest.importorskip("ai_edge_litert")
    from tests.parsers.tflite_util import build_cached

    root = tmp_path_factory.mktemp("compare_tflite")
    src = build_cached(root, "resnet", "float32", size=16, width=8, blocks=1)
    ms = root / "resnet.ms"
    convert(src, fmk="TFLITE", output=ms)
    rep = compare_model(read_ms(ms), src, "TFLITE", ms)
    assert rep.reference == "LiteRT"
    assert len(rep.layers) >= 5 and not rep.per_output_only
    assert all(r.cosine > 0.9999 for r in rep.layers)
    assert rep.first_diverging is None and rep.passed


def test_caffe_in_place_blobs_named_like_the_front_end(tmp_path):
    from benchmarks.models_caffe import write_net
    from converter.reference.caffe import run_all
    from parsers.caffe import parse_caffe

    proto, model = write_net("resnet", tmp_path, seed=3)
    parsed = {v.name for v in parse_caffe(proto, model).values() if v.producer is not None}
    rng = np.random.default_rng(0)
    ms = tmp_path / "resnet.ms"
    result = convert(proto, fmk="CAFFE", weight_file=model, output=ms)
    feeds = {v.name: rng.standard_normal(v.shape).astype(np.float32) for v in result.graph.inputs}
    values = run_all(proto, feeds, weight_file=model)
    # conv1 -> BatchNorm -> Scale -> ReLU in place: each value under the front end's name
    assert {"conv1/conv1", "conv1/conv1/bn", "conv1"} <= parsed & set(values)
    assert np.all(values["conv1"] >= 0) and np.any(values["conv1/conv1/bn"] < 0)
    rep = compare_model(read_ms(ms), proto, "CAFFE", ms, weight_file=model)
    assert len(rep.layers) >= 10 and all(r.cosine > 0.9999 for r in rep.layers)


def test_tf_frozen_graph_per_layer(tmp_path):
    pytest.importorskip("tensorflow")
    from benchmarks import models_tf

    pb = models_tf.save_frozen_pb(models_tf.resnet(), tmp_path / "resnet.pb")
    ms = tmp_path / "resnet.ms"
    convert(pb, fmk="TF", output=ms)
    rep = compare_model(read_ms(ms), pb, "TF", ms)
    assert len(rep.layers) >= 10 and not rep.per_output_only
    assert all(r.cosine > 0.9999 for r in rep.layers) and rep.passed
