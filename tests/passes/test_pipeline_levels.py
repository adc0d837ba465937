"""--optimize none/basic/full (general), --disable-pass, rule statistics, CLI and report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from pass_testing import Builder, op_types, random_feeds

from benchmarks import models as M
from converter.cli import convert_command
from converter.executor.runtime import Runtime
from converter.pipeline import convert
from ir import Graph
from passes.base import PassContext
from passes.fusions import Fusions
from passes.manager import FixedPoint, PassManager
from passes.pipeline import (
    FUSION_FAMILIES,
    PipelineError,
    build_pipeline,
    disable_names,
    rule_stats,
)


def _graph() -> Graph:
    """Shape arithmetic folding to a no-op Reshape, a duplicate, conv+BN+Relu."""
    b = Builder(infer=False)
    x = b.input("x", (1, 3, 5, 5))
    s = b.op("Shape", x)
    r = b.op("Reshape", x, s)
    rng = np.random.default_rng(0)
    w = b.const(rng.standard_normal((4, 3, 3, 3)).astype(np.float32))
    y = b.op("Conv", r, w, kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    bn = [np.ones(4, np.float32) * 1.5, np.zeros(4, np.float32) + 0.1,
          np.zeros(4, np.float32), np.ones(4, np.float32)]  # fmt: skip
    y = b.op("BatchNormalization", y, *(b.const(p) for p in bn))
    z = b.op("Add", b.op("Relu", y), b.op("Relu", y))
    return b.outputs(z)


def _run(level: str, disable: tuple[str, ...] = ()) -> tuple[Graph, PassManager]:
    g = _graph()
    feeds = random_feeds(g)
    want = Runtime(g).run(feeds)
    pm = PassManager(build_pipeline(level, PassContext(), disable))
    pm.run(g)
    got = Runtime(g).run(feeds)
    for name, arr in want.items():
        np.testing.assert_allclose(got[name], arr, rtol=1e-5, atol=1e-5)
    return g, pm


def test_none_rewrites_nothing() -> None:
    g, pm = _run("none")
    assert op_types(g) == ["Add", "BatchNormalization", "Conv", "Relu", "Relu", "Reshape", "Shape"]
    assert all(v.shape is not None for n in g.nodes for v in n.outputs)
    assert [r.name for r in pm.records] == ["InferShapes"]


def test_basic_cleans_but_does_not_fuse() -> None:
    g, pm = _run("basic")
    assert op_types(g) == ["Add", "BatchNormalization", "Conv", "Relu"]
    assert not any(isinstance(p, Fusions) for p in pm.passes)


@pytest.mark.parametrize("level", ["full", "general"])
def test_full_fuses(level: str) -> None:
    g, pm = _run(level)
    assert op_types(g) == ["Add", "ConvAct"]
    stats = rule_stats(pm.passes)
    assert stats["Conv+BatchNormalization"]["fired"] == 1
    assert stats["Conv+Relu"]["fired"] == 1
    assert all(set(s) == {"matched", "rejected", "trainable", "fired"} for s in stats.values())


def test_disable_family_and_pass() -> None:
    g, _ = _run("full", ("conv",))
    assert op_types(g) == ["Add", "BatchNormalization", "Conv", "Relu"]
    g, pm = _run("full", ("FoldConstants", "eliminatecommonsubexpressions"))
    assert "FoldConstants" not in {r.name for r in pm.records}
    assert op_types(g) == ["Add", "Conv", "Relu", "Relu", "Reshape", "Shape"]  # no CSE, no fold
    g, pm = _run("full", ("Fusions",))
    assert not any(isinstance(p, Fusions) for p in pm.passes)


def test_unknown_names_list_the_valid_ones() -> None:
    with pytest.raises(PipelineError, match="bogus.*valid: .*FoldConstants.*conv"):
        build_pipeline("full", None, ["bogus"])
    with pytest.raises(PipelineError, match="choose one of none, basic, full, general"):
        build_pipeline("max")


def test_families_are_visible_and_named() -> None:
    names = disable_names()
    families = [n for n, _ in FUSION_FAMILIES]
    assert families.index("gelu") < families.index("conv") < families.index("matmul")
    assert {"InferShapes", "FoldConstants", "RemoveNoOps", "Fusions", "conv"} <= set(names)
    full = build_pipeline("full")
    assert isinstance(full[1], FixedPoint) and isinstance(full[2], Fusions)


# -- through convert() and the CLI ---------------------------------------------------------------
@pytest.fixture(scope="module")
def small_cnn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("levels") / "mbv2.onnx"
    onnx.save(M.mobilenet_v2(0.35, image=32, classes=10, stages=2), path)
    return path


def test_convert_levels_and_report(small_cnn: Path, tmp_path: Path) -> None:
    counts = {}
    for level in ("none", "basic", "full"):
        r = convert(small_cnn, output=tmp_path / level, optimize=level, verify=True,
                    report=tmp_path / f"{level}.json")  # fmt: skip
        counts[level] = r.nodes_after
    assert counts["none"] >= counts["basic"] > counts["full"]
    data = json.loads((tmp_path / "full.json").read_text())
    fusions = next(p for p in data["conversion"]["passes"] if p["pass"] == "Fusions")
    assert fusions["rules"]["Conv+BatchNormalization"]["fired"] > 0
    assert fusions["fired"] == sum(r["fired"] for r in fusions["rules"].values())


def test_convert_trainable_keeps_bn(small_cnn: Path, tmp_path: Path) -> None:
    frozen = convert(small_cnn, output=tmp_path / "a", optimize="full")
    last_conv = [n.name for n in onnx.load(small_cnn).graph.node if n.op_type == "Conv"][-1]
    r = convert(small_cnn, output=tmp_path / "b", trainable=last_conv, verify=True,
                report=tmp_path / "r.json")  # fmt: skip
    ops = op_types(r.graph)
    assert ops.count("BatchNormalization") == 1 and "BatchNormalization" not in op_types(
        frozen.graph
    )
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["conversion"]["trainable"]["trainable_weights"] == 1


def _cli(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        convert_command(args)
    return int(exc.value.code or 0), capsys.readouterr().err


def test_cli_flags(small_cnn: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = str(tmp_path / "m.ms")
    code, _ = _cli([str(small_cnn), out, "--optimize", "basic", "-q"], capsys)
    assert code == 0
    code, err = _cli([str(small_cnn), out, "--disable-pass", "conv,nope"], capsys)
    assert code == 2 and "nope" in err and "FoldConstants" in err
    code, err = _cli([str(small_cnn), out, "--freeze-until", "missing"], capsys)
    assert code == 2 and "missing" in err
    first = onnx.load(small_cnn).graph.node[0].name
    code, _ = _cli([str(small_cnn), out, "--freeze-until", first, "--disable-pass", "gelu",
                    "--verify", "-q"], capsys)  # fmt: skip
    assert code == 0


def test_basic_folds_static_dims_picked_from_a_partly_dynamic_shape() -> None:
    b = Builder()
    x = b.input("x", ("N", 6, 4))
    s = b.op("Shape", x)
    n = b.op("Gather", s, b.const(np.array([0], np.int64)), axis=0)  # dynamic: stays
    t = b.op("Gather", s, b.const(np.array([1], np.int64)), axis=0)  # static 6: folds
    tail = b.op("Slice", s, b.const(np.array([-1], np.int64)), b.const(np.array([3], np.int64)))
    dims = b.op("Concat", n, b.op("Mul", t, tail), axis=0)  # [N, 24]
    g = b.outputs(b.op("Reshape", x, dims))
    g.outputs[0].name = "y"
    feeds = {"x": np.random.default_rng(0).standard_normal((2, 6, 4)).astype(np.float32)}
    want = Runtime(g).run(feeds)["y"]
    PassManager(build_pipeline("basic")).run(g)
    assert op_types(g) == ["Concat", "Gather", "Reshape", "Shape"]
    np.testing.assert_array_equal(Runtime(g).run(feeds)["y"], want)
