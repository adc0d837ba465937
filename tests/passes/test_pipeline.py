"""default_pipeline / PIPELINES and the dump/verify instruments, end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pass_testing import Builder, op_types, random_feeds

from converter.executor.runtime import Runtime
from ir import DataType, Graph, IRError
from ir.verify import check_graph
from passes import (
    PIPELINES,
    FixedPoint,
    InferShapes,
    PassManager,
    RemoveDeadNodes,
    default_pipeline,
    dump_instrument,
    verify_instrument,
)
from passes.base import Pass


def _messy_graph() -> Graph:
    """Shape arithmetic, duplicates, no-ops and dead code around two real ops."""
    b = Builder(infer=False)
    x = b.input("x", (2, 3, 4))
    s = b.op("Shape", x)
    d0 = b.op("Gather", s, b.const(np.array(0, np.int64)), axis=0)
    u = b.op("Unsqueeze", d0, b.const(np.array([0], np.int64)))
    cat = b.op("Concat", u, b.const(np.array([3, 4], np.int64)), axis=0)
    r = b.op("Reshape", x, cat)  # reshape to its own shape: a no-op once folded
    w1 = b.const(np.full(4, 2.0, np.float32))
    w2 = b.const(np.full(4, 2.0, np.float32))
    m1, m2 = b.op("Mul", r, w1), b.op("Mul", r, w2)  # duplicates after constant dedupe
    z = b.op("Add", b.op("Add", m1, m2), b.const(np.zeros(4, np.float32)))
    b.op("Relu", z)  # dead
    y = b.op("Identity", b.op("Tanh", z))
    y.name = "y"
    return b.outputs(y)


def test_general_pipeline_cleans_and_keeps_numerics() -> None:
    g = _messy_graph()
    feeds = random_feeds(g)
    before = Runtime(g).run(feeds)
    pm = PassManager(default_pipeline(), instruments=[verify_instrument])
    assert pm.run(g)
    check_graph(g)
    assert op_types(g) == ["AddAct", "Mul"]  # Tanh(Add(..)) fused by FuseBinaryActivations
    assert [v.name for v in g.outputs] == ["y"]
    after = Runtime(g).run(feeds)
    np.testing.assert_allclose(after["y"], before["y"], rtol=1e-6)
    assert all(v.shape is not None for n in g.nodes for v in n.outputs)
    assert not PassManager(default_pipeline()).run(g)  # already at the fixed point
    names = {r["pass"] for r in pm.summary()}
    assert {"FoldConstants", "RemoveNoOps", "RemoveDeadNodes"} <= names


def test_pipeline_table() -> None:
    assert set(PIPELINES) == {"none", "basic", "full", "general"}
    general = PIPELINES["general"](None)
    assert isinstance(general[0], InferShapes) and isinstance(general[1], FixedPoint)
    g = _messy_graph()
    n_before = len(g)
    assert PassManager(PIPELINES["none"](None)).run(g)  # shapes were unknown
    assert len(g) == n_before


def test_dump_instrument_writes_after_modifying_passes(tmp_path: Path) -> None:
    written: list[Path] = []

    def exporter(graph: Graph, path: Path) -> None:
        check_graph(graph)
        path.write_text(",".join(op_types(graph)))
        written.append(path)

    g = _messy_graph()
    pm = PassManager(default_pipeline(), instruments=[dump_instrument(tmp_path / "d", exporter)])
    pm.run(g)
    modified = [i + 1 for i, r in enumerate(pm.records) if r.modified]
    assert [p.name for p in written] == [
        f"{seq:02d}_{pm.records[seq - 1].name}.onnx" for seq in modified
    ]
    assert all(p.parent == tmp_path / "d" for p in written)
    assert written[-1].read_text() == ",".join(op_types(g))


def test_verify_instrument_names_the_pass() -> None:
    class Breaker(Pass):
        name = "Breaker"

        def run(self, graph: Graph) -> bool:
            graph.nodes[0].attrs["bogus"] = 1
            return True

    b = Builder()
    x = b.input("x", (2,))
    g = b.outputs(b.op("Relu", x))
    with pytest.raises(IRError, match="after pass Breaker"):
        PassManager([RemoveDeadNodes(), Breaker()], instruments=[verify_instrument]).run(g)


def test_loop_body_reading_outer_values_survives_pipeline() -> None:
    """y = x + 3*(-c) via a Loop whose body reads the outer ``-c``; the body's dead node goes."""
    b = Builder()
    x = b.input("x", (3,))
    neg_c = b.op("Neg", b.input("c", (3,)))
    body = Builder("body")
    body.input("i", (), DataType.INT64)
    keep = body.input("keep", (), DataType.BOOL)
    acc = body.input("acc", (3,))
    body.op("Sigmoid", acc)  # dead
    nxt = body.op("Add", body.op("Identity", acc), neg_c)
    body.outputs(body.op("Identity", keep), nxt)  # keep: a body input, so its Identity stays
    y = b.op("Loop", b.const(np.array(3, np.int64)), None, x, body=body.graph)
    g = b.outputs(y)
    feeds = random_feeds(g)
    before = Runtime(g).run(feeds)
    PassManager(default_pipeline(), instruments=[verify_instrument]).run(g)
    after = Runtime(g).run(feeds)
    np.testing.assert_allclose(after[y.name], before[y.name], rtol=1e-6)
    np.testing.assert_allclose(after[y.name], feeds["x"] - 3 * feeds["c"], rtol=1e-6)
    assert op_types(g) == ["Add", "Identity", "Loop", "Neg"]
