"""passes/unfused.py: the standalone BN / activation / bias Add / Transpose nodes and why."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from pass_testing import Builder

import converter
from benchmarks import models as M
from ir import Graph, Value
from passes.base import PassContext
from passes.fusions import Fusions
from passes.manager import PassManager
from passes.pipeline import build_pipeline
from passes.unfused import find_unfused, summary_line, unfused_report

rng = np.random.default_rng(0)


def _conv(b: Builder, x: Value, cin: int, cout: int) -> Value:
    w = b.const((0.3 * rng.standard_normal((cout, cin, 3, 3))).astype(np.float32))
    return b.op("Conv", x, w, kernel_shape=[3, 3], pads=[1, 1, 1, 1])


def _bn(b: Builder, y: Value, c: int) -> Value:
    params = [np.ones(c), np.zeros(c), np.zeros(c), np.ones(c)]
    return b.op("BatchNormalization", y, *(b.const(p.astype(np.float32)) for p in params))


def _cnn() -> Graph:
    """Conv-BN-Relu (fuses), a residual Add + Relu, BN after a Concat, Transposes at both ends."""
    b = Builder()
    x = b.input("x", (1, 4, 6, 6))
    t_in = b.op("Transpose", x, perm=[0, 1, 3, 2])  # at graph input
    y = b.op("Relu", _bn(b, _conv(b, t_in, 4, 4), 4))  # fuses into ConvAct
    res = b.op("Relu", b.op("Add", y, t_in))  # residual: AddAct (stays with it disabled)
    cat = b.op("Concat", res, y, axis=1)
    bn = _bn(b, cat, 8)  # BN after a Concat: stays
    lrelu = b.op("LeakyRelu", _conv(b, bn, 8, 4), alpha=0.1)  # not mappable: stays
    out = b.op("Transpose", lrelu, perm=[0, 2, 3, 1])  # graph output
    return b.outputs(out)


def _run(g: Graph, disable: tuple[str, ...] = ()) -> dict:
    pm = PassManager(build_pipeline("full", PassContext(), disable))
    pm.run(g)
    return unfused_report(g, pm.passes)


def _by_op(report: dict) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for entry in report["nodes"]:
        out.setdefault(entry["op"], []).append(entry)
    return out


def test_report_lists_each_remaining_node_with_its_reason() -> None:
    report = _run(_cnn())
    assert report["counts"] == {"BatchNormalization": 1, "activation": 1, "bias Add": 0,
                                "Transpose": 2}  # fmt: skip
    by = _by_op(report)
    assert "Relu" not in by  # the residual Add + Relu became AddAct
    assert by["BatchNormalization"][0]["reason"] == "BN input is a Concat, not a conv"
    (leaky,) = by["LeakyRelu"]
    assert leaky["reason"].startswith("Conv+LeakyRelu: LeakyRelu has no MindSpore Lite fused")
    why = "LeakyRelu has no MindSpore Lite fused form"
    assert leaky["refused"] == [{"rule": "Conv+LeakyRelu", "reason": why}]
    cats = sorted(e["category"] for e in by["Transpose"])
    assert cats == ["graph input", "graph output"]
    line = summary_line(report)
    assert line.startswith("unfused: ") and "residual Add" not in line
    assert "0 bias Add" in line and "1 BatchNormalization (after Concat)" in line


def test_residual_relu_without_the_binary_pass() -> None:
    report = _run(_cnn(), disable=("FuseBinaryActivations",))
    (relu,) = _by_op(report)["Relu"]
    assert relu["category"] == "residual Add"
    assert "follows an Add of two tensors" in relu["reason"]
    assert "1 Relu (residual Add)" in summary_line(report)


def test_conv_output_read_twice_is_reported_with_the_engine_reason() -> None:
    b = Builder()
    x = b.input("x", (1, 4, 5, 5))
    c = _conv(b, x, 4, 4)
    g = b.outputs(b.op("Relu", c), b.op("Sigmoid", c))
    p = Fusions()
    p(g)
    found = find_unfused(g, p.rejections)
    assert {u.op for u in found} == {"Relu", "Sigmoid"}
    assert all(u.category == "output read elsewhere" for u in found)
    assert all("is also read by" in u.reason for u in found)


def test_bias_add_and_fusions_off() -> None:
    b = Builder()
    x = b.input("x", (2, 3))
    g = b.outputs(b.op("Add", b.op("Exp", x), b.const(np.ones(3, np.float32))))
    (entry,) = find_unfused(g, {}, fusions_ran=True)
    assert (entry.kind, entry.category) == ("bias Add", "after Exp")
    (entry,) = find_unfused(g, {}, fusions_ran=False)
    assert entry.category == "fusions off"


def test_nothing_left_in_a_plain_cnn_and_convert_report(tmp_path: Path) -> None:
    src = tmp_path / "cnn.onnx"
    onnx.save(M.resnet(14, width=8, image=32, classes=10), src)
    lines: list[str] = []
    result = converter.convert(src, output=tmp_path / "m.ms", report=tmp_path / "r.json",
                               progress=lines.append)  # fmt: skip
    unfused = json.loads((tmp_path / "r.json").read_text())["conversion"]["unfused"]
    assert unfused == result.unfused
    assert unfused["counts"]["BatchNormalization"] == 0
    assert unfused["counts"]["Transpose"] == 0
    assert unfused["counts"]["activation"] == 0  # residual Relus are AddAct
    assert unfused["nodes"] == []
    assert any(line.startswith("unfused: ") for line in lines)
