"""Fusions on whole models: op counts after the default pipeline, verify against onnxruntime,
and the fused ops' MindSpore Lite primitives."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from pass_testing import Builder

import converter
from benchmarks import models as M
from converter.ms import read_ms, serialize, write_ms
from converter.ms.fbs import Decoder
from ir import Graph
from passes.fusions.activation import MAPPABLE


def _convert(model: onnx.ModelProto, tmp_path: Path) -> converter.ConvertResult:
    src = tmp_path / "m.onnx"
    onnx.save(model, src)
    result = converter.convert(src, fmk="ONNX", output=tmp_path / "m.ms", verify=True)
    assert result.verify is not None and result.verify.passed
    return result


def _after_conv(g: Graph, ops: set[str]) -> list[str]:
    """Nodes of ``ops`` reading a conv output (Add/Mul only with a constant operand)."""
    found = []
    for n in g.nodes:
        producers = [v.producer.op for v in n.inputs if v is not None and v.producer is not None]
        if n.op not in ops or not {"Conv", "ConvAct"} & set(producers):
            continue
        if n.op in ("Add", "Mul") and not any(v is not None and v.is_const for v in n.inputs):
            continue  # a residual Add of two tensors
        found.append(n.name)
    return found


@pytest.mark.parametrize(
    "build",
    [lambda: M.resnet(14, width=8, image=32, classes=10),
     lambda: M.mobilenet_v2(0.5, image=32, classes=10, stages=4)],
    ids=["resnet14", "mobilenet_v2"],
)  # fmt: skip
def test_cnn_has_no_bn_bias_add_or_activation_after_conv(build, tmp_path: Path) -> None:
    g = _convert(build(), tmp_path).graph
    ops = g.count_ops()
    assert "BatchNormalization" not in ops
    assert _after_conv(g, {"Relu", "Clip", "Add", "Mul", "BatchNormalization"}) == []
    assert ops.get("ConvAct", 0) > 0


def test_bert_layer_norms_and_gelus_are_recognized(tmp_path: Path) -> None:
    cfg = M.BertConfig.tiny()
    g = _convert(M.bert_encoder(cfg), tmp_path).graph
    ops = g.count_ops()
    assert ops["LayerNormalization"] == 1 + 2 * cfg.layers
    assert ops["Gelu"] == cfg.layers
    assert ops["MatMulAct"] == 4 * cfg.layers  # Q/K/V fused into one projection
    assert ops["Attention"] == cfg.layers
    for gone in ("ReduceMean", "Sqrt", "Erf", "Pow"):
        assert gone not in ops


def _primitives(data: bytes) -> list[str]:
    dec = Decoder(data)
    mg = dec.table(dec.root(), "MetaGraph")
    return [c["primitive"]["value"][0] for c in mg["nodes"]]


ACT_NODES = {
    "Relu": ("Relu", {}),
    "Relu6": ("Clip", {}),
    "Sigmoid": ("Sigmoid", {}),
    "Tanh": ("Tanh", {}),
    "HardSwish": ("HardSwish", {}),
}


@pytest.mark.parametrize("act", sorted(MAPPABLE))
def test_mappable_fused_ops_are_native_primitives(act: str, tmp_path: Path) -> None:
    """Every activation fused by default writes as Conv2DFusion / MatMulFusion and reads back."""
    from passes.fusions import Fusions

    b = Builder()
    x, a = b.input("x", (1, 4, 6, 6)), b.input("a", (2, 5))
    w = b.const(np.random.default_rng(0).standard_normal((4, 4, 3, 3)).astype(np.float32))
    y = b.op("Conv", x, w, b.const(np.ones(4, np.float32)), kernel_shape=[3, 3])
    z = b.op("Add", b.op("MatMul", a, b.const(np.ones((5, 3), np.float32))),
             b.const(np.ones(3, np.float32)))  # fmt: skip
    outs = []
    for v in (y, z):
        op, attrs = ACT_NODES[act]
        if act == "Relu6":
            lo, hi = b.const(np.array(0, np.float32)), b.const(np.array(6, np.float32))
            outs.append(b.op(op, v, lo, hi))
        else:
            outs.append(b.op(op, v, **attrs))
    g = b.outputs(*outs)
    assert Fusions().run(g)
    assert sorted(n.op for n in g.nodes) == ["ConvAct", "MatMulAct"]
    assert Counter(_primitives(serialize(g))) == {"Conv2DFusion": 1, "MatMulFusion": 1}
    write_ms(g, tmp_path / "f.ms")
    back = read_ms(tmp_path / "f.ms")
    assert [(n.op, n.attrs) for n in back.nodes] == [(n.op, n.attrs) for n in g.nodes]


def test_unmappable_activation_and_bias_free_matmul_act_are_custom() -> None:
    b = Builder()
    x = b.input("x", (1, 4, 6, 6))
    w = b.const(np.ones((4, 4, 3, 3), np.float32))
    y = b.op("ConvAct", x, w, kernel_shape=[3, 3], activation="LeakyRelu",
             activation_params=[0.1])  # fmt: skip
    a = b.input("a", (2, 5))
    z = b.op("MatMulAct", a, b.const(np.ones((5, 3), np.float32)))
    assert _primitives(serialize(b.outputs(y, z))) == ["Custom", "Custom"]
