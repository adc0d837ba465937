"""``convert --fp16 on|auto`` end to end: .ms with float16 weights, verified against onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import converter
from benchmarks import models as M
from converter.errors import VerificationFailed
from converter.ms import read_ms
from converter.verify import Thresholds
from ir import DataType

ARCHITECTURES = {
    "resnet": (lambda: M.resnet(14, width=8, image=32, classes=10), "input:2,3,32,32"),
    "mobilenet_v2": (lambda: M.mobilenet_v2(0.25, image=32, classes=10, stages=4), None),
    "bert_tiny": (lambda: M.bert_encoder(M.BertConfig.tiny()), "input_ids:2,7;attention_mask:2,7"),
    "bert_small": (
        lambda: M.bert_encoder(
            M.BertConfig(
                vocab=100, hidden=64, layers=2, heads=4, intermediate=128, max_positions=64
            )
        ),
        "input_ids:2,7;attention_mask:2,7",
    ),  # fmt: skip
}
# bert_tiny's weights are 82 KB next to ~14 KB of graph structure, so its file can only
# shrink to ~59%; its weight bytes halve like the others.
MAX_SIZE_RATIO = {"resnet": 0.55, "mobilenet_v2": 0.55, "bert_tiny": 0.60, "bert_small": 0.55}


def _size(files: list[Path]) -> int:
    return sum(f.stat().st_size for f in files)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_fp16_on_verifies_and_halves_the_file(arch: str, tmp_path: Path):
    build, shapes = ARCHITECTURES[arch]
    src = tmp_path / f"{arch}.onnx"
    onnx.save(build(), src)
    r32 = converter.convert(src, output=tmp_path / "f32.ms", input_shapes=shapes)
    r16 = converter.convert(
        src, output=tmp_path / "f16.ms", input_shapes=shapes, fp16="on", verify=True,
        thresholds=Thresholds(cosine=0.999), report=tmp_path / "report.json",
    )  # fmt: skip
    assert r16.verify is not None and r16.verify.passed
    assert all(m.cosine >= 0.999 for m in r16.verify.outputs)
    assert all(m.dtype == "float32" for m in r16.verify.outputs)
    ratio = _size(r16.files) / _size(r32.files)
    assert ratio <= MAX_SIZE_RATIO[arch], ratio
    rep = r16.compression["fp16"]
    assert rep["weight_bytes_after"] <= 0.51 * rep["weight_bytes_before"]
    written = read_ms(r16.output)
    weights = {v.dtype for v in written.constants() if v.dtype.is_float}
    assert DataType.FLOAT16 in weights
    floats = sum(v.const.nbytes for v in written.constants() if v.dtype == DataType.FLOAT)
    assert floats <= 0.01 * rep["weight_bytes_before"]  # float32 leftovers: a few scalars
    assert '"fp16"' in (tmp_path / "report.json").read_text()


def _cancellation_model(path: Path) -> None:
    """y = (relu(x @ W1 + 3000) - 3000) @ W2: float16's spacing of 2 near 3000 hurts."""
    rng = np.random.default_rng(3)
    inits = [
        numpy_helper.from_array(rng.standard_normal((16, 32)).astype(np.float32), "w1"),
        numpy_helper.from_array(np.full(32, 3000, np.float32), "off"),
        numpy_helper.from_array(rng.standard_normal((32, 8)).astype(np.float32), "w2"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
        helper.make_node("Add", ["h", "off"], ["a"], name="add"),
        helper.make_node("Relu", ["a"], ["r"], name="relu"),
        helper.make_node("Sub", ["r", "off"], ["d"], name="sub"),
        helper.make_node("MatMul", ["d", "w2"], ["y"], name="mm2"),
    ]
    graph = helper.make_graph(
        nodes, "cancel", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 8])], inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def test_auto_meets_a_target_that_on_misses(tmp_path: Path):
    src = tmp_path / "cancel.onnx"
    _cancellation_model(src)
    th = Thresholds(cosine=0.9999)
    with pytest.raises(VerificationFailed):
        converter.convert(src, output=tmp_path / "on.ms", fp16="on", verify=True, thresholds=th)
    r = converter.convert(src, output=tmp_path / "auto.ms", fp16="auto", verify=True, thresholds=th)
    assert r.verify is not None and r.verify.passed
    rep = r.compression["fp16"]
    assert rep["auto"]["met"] and rep["auto"]["rounds"][0]["min_cosine"] < 0.9999
    assert rep["kept_fp32"] and all(k["reason"].startswith("auto: ") for k in rep["kept_fp32"])
    assert rep["fp16_nodes"] >= 1


def test_config_file_keeps_op_types_in_float32(tmp_path: Path):
    src = tmp_path / "bert.onnx"
    onnx.save(M.bert_encoder(M.BertConfig.tiny()), src)
    cfg = tmp_path / "fp16.cfg"
    cfg.write_text("[mixed_precision_param]\nkeep_fp32_op_type=Softmax,LayerNormalization\n")
    r = converter.convert(
        src, output=tmp_path / "b.ms", input_shapes="input_ids:2,7;attention_mask:2,7",
        config_file=cfg, fp16="on", verify=True, thresholds=Thresholds(cosine=0.999),
    )  # fmt: skip
    assert r.verify is not None and r.verify.passed
    kept = {k["op"] for k in r.compression["fp16"]["kept_fp32"]
            if k["reason"] == "listed in keep_fp32_op_type"}  # fmt: skip
    assert "LayerNormalization" in kept and kept <= {"Softmax", "LayerNormalization"}
    written = read_ms(r.output)
    for node in written.nodes:
        if node.op in kept:
            assert node.outputs[0].dtype == DataType.FLOAT, node
