"""End to end: ONNX -> .ms -> executor, against reference outputs and onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

import converter
from benchmarks import models as M
from benchmarks.bench_light import light_models, run_light_model

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", light_models())
def test_light_model_matches_reference_output(name: str, tmp_path: Path):
    """Every light_* model shipped with onnx converts and matches its reference output."""
    r = run_light_model(name, tmp_path)
    assert r["cosine"] >= 0.9999, r
    assert r["allclose_rtol1e-3_atol1e-5"], r


ARCHITECTURES = {
    "resnet": (lambda: M.resnet(14, width=8, image=32, classes=10), "N:2"),
    "mobilenet_v2": (lambda: M.mobilenet_v2(0.25, image=32, classes=10, stages=4), None),
    "bert": (lambda: M.bert_encoder(M.BertConfig.tiny()), "input_ids:2,7;attention_mask:2,7"),
    "bert_fused_ln": (
        lambda: M.bert_encoder(M.BertConfig.tiny(), decomposed_layernorm=False),
        None,
    ),
    "lstm": (lambda: M.lstm_tagger(), "tokens:6,3"),
}


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_architecture_passes_verify(arch: str, tmp_path: Path):
    """CNN, BERT-style encoder, LSTM: convert --verify against onnxruntime passes."""
    build, shapes = ARCHITECTURES[arch]
    src = tmp_path / f"{arch}.onnx"
    onnx.save(build(), src)
    if shapes == "N:2":
        shapes = "input:2,3,32,32"
    result = converter.convert(
        src, fmk="ONNX", output=tmp_path / f"{arch}.ms", verify=True, input_shapes=shapes,
        report=tmp_path / "report.json",
    )  # fmt: skip
    assert result.verify is not None and result.verify.passed
    assert all(m.cosine >= 0.9999 for m in result.verify.outputs)
    assert (tmp_path / "report.json").exists()


def test_control_flow_model_passes_verify(tmp_path: Path):
    """A Loop with scan outputs and an If, reading outer values, matches onnxruntime."""
    src = tmp_path / "cf.onnx"
    onnx.save(M.control_flow_model(), src)
    feeds = {
        "x": np.array([0.5, -1.0, 2.0, 0.1], np.float32),
        "trip": np.array(5, np.int64),
    }
    result = converter.convert(
        src, fmk="ONNX", output=tmp_path / "cf.ms", verify=True, inputs=feeds
    )
    assert result.verify.passed
    ops = {n.op for n in converter.load(result.output).graph.all_nodes()}
    assert {"Loop", "If"} <= ops


def test_bert_dynamic_shapes_fold_once_pinned(tmp_path: Path):
    """Pinning input shapes lets the Shape->Gather->Concat->Reshape chains fold away."""
    src = tmp_path / "bert.onnx"
    onnx.save(M.bert_encoder(M.BertConfig.tiny()), src)
    dynamic = converter.convert(src, output=tmp_path / "dyn.ms")
    pinned = converter.convert(
        src, output=tmp_path / "pin.ms", input_shapes="input_ids:1,8;attention_mask:1,8"
    )
    count = lambda r, op: sum(1 for n in r.graph.all_nodes() if n.op == op)  # noqa: E731
    assert count(pinned, "Shape") == 0
    assert count(dynamic, "Shape") > 0
    assert pinned.nodes_after < dynamic.nodes_after
