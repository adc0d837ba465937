"""Attention recognition: the 4-D core and the head split/merge -> ai.onnx Attention."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from pass_testing import Builder, check_pass, op_types

import converter
from benchmarks import models as M
from ir import Graph, Value
from passes.base import Pass
from passes.dce import RemoveDeadNodes
from passes.fusions import RulePass, attention

TOL = {"rtol": 1e-4, "atol": 1e-5}
B, H, S, D = 2, 3, 5, 4
rng = np.random.default_rng(3)


def _fuse() -> RulePass:
    return RulePass(attention.rules)


class _FuseAndSweep(Pass):
    """The attention rules, then dead-node removal (computed Reshape targets)."""

    name = "FuseAndSweep"

    def run(self, graph: Graph) -> bool:
        changed = _fuse().run(graph)
        RemoveDeadNodes().run(graph)
        return changed


def _c(*shape: int) -> Value:
    return Value(f"c{rng.integers(1 << 30)}", const=rng.standard_normal(shape).astype(np.float32))


def _scalar(v: float) -> np.ndarray:
    return np.array(v, np.float32)


def _core(b: Builder, q: Value, kt: Value, v: Value, mask: Value | None, scale: str = "div",
          commuted: bool = False) -> Value:  # fmt: skip
    s = b.op("MatMul", q, kt)
    if scale == "div":
        s = b.op("Div", s, b.const(_scalar(np.sqrt(D))))
    elif scale == "mul":
        s = b.op("Mul", b.const(_scalar(0.3)), s)
    if mask is not None:
        s = b.op("Add", mask, s) if commuted else b.op("Add", s, mask)
    return b.op("MatMul", b.op("Softmax", s, axis=-1), v)


@pytest.mark.parametrize("scale", ["div", "mul", "none"])
@pytest.mark.parametrize("mask", ["none", "add", "add_commuted"])
def test_core_4d(scale: str, mask: str) -> None:
    b = Builder()
    q, k, v = (b.input(n, (B, H, S, D)) for n in "qkv")
    m = b.input("m", (B, 1, 1, S)) if mask != "none" else None
    kt = b.op("Transpose", k, perm=[0, 1, 3, 2])
    g = b.outputs(_core(b, q, kt, v, m, scale, commuted=mask == "add_commuted"))
    check_pass(g, _fuse(), modified=True, ops=["Attention"], **TOL)
    att = g.nodes[0]
    want = {"div": 1 / np.sqrt(D), "mul": 0.3, "none": 1.0}[scale]
    assert np.isclose(att.attrs["scale"], want)
    assert att.input(1) is k and (att.input(3) is m)


@pytest.mark.parametrize("kt_form", ["perm0231", "graph_input"])
def test_core_key_transpose_forms(kt_form: str) -> None:
    b = Builder()
    q, v = b.input("q", (B, H, S, D)), b.input("v", (B, H, S, D))
    if kt_form == "perm0231":  # K stored [B, S, H, D], transposed straight to K^T
        kt = b.op("Transpose", b.input("k", (B, S, H, D)), perm=[0, 2, 3, 1])
    else:
        kt = b.input("kt", (B, H, D, S))
    g = b.outputs(_core(b, q, kt, v, b.input("m", (B, 1, S, S))))
    check_pass(g, _fuse(), modified=True, ops=["Attention", "Transpose"], **TOL)


def test_core_float16() -> None:
    b = Builder()
    q, k, v = (b.op("Cast", b.input(n, (B, H, S, D)), to=10) for n in "qkv")
    s = b.op("Div", b.op("MatMul", q, b.op("Transpose", k, perm=[0, 1, 3, 2])),
             b.const(np.array(2.0, np.float16)))  # fmt: skip
    g = b.outputs(b.op("MatMul", b.op("Softmax", s, axis=-1), v))
    check_pass(g, _fuse(), modified=True, ops=["Attention", "Cast", "Cast", "Cast"],
               rtol=2e-3, atol=2e-3)  # fmt: skip


def _refused(g: Graph) -> None:
    check_pass(g, _fuse(), modified=False, ops=op_types(g), **TOL)


def test_core_refusals() -> None:
    def base(mask_shape=(B, 1, 1, S), axis=-1, scale_input=False, probs_out=False,
             v_shape=(B, H, S, D)) -> Graph:  # fmt: skip
        b = Builder()
        q, k = b.input("q", (B, H, S, D)), b.input("k", (B, H, S, D))
        v = b.input("v", v_shape)
        s = b.op("MatMul", q, b.op("Transpose", k, perm=[0, 1, 3, 2]))
        c = b.input("c", ()) if scale_input else b.const(_scalar(2.0))
        s = b.op("Add", b.op("Div", s, c), b.input("m", mask_shape))
        p = b.op("Softmax", s, axis=axis)
        y = b.op("MatMul", p, v)
        return b.outputs(y, p) if probs_out else b.outputs(y)

    _refused(base(mask_shape=(B, 1, 1, 1)))  # mask broadcast over the keys
    _refused(base(axis=2))  # softmax over queries
    _refused(base(scale_input=True))  # scale not constant
    _refused(base(probs_out=True))  # probabilities are a graph output
    _refused(base(v_shape=(1, H, S, D)))  # V broadcast over the batch


def test_shared_scores_are_refused() -> None:
    b = Builder()
    q, k, v = (b.input(n, (B, H, S, D)) for n in "qkv")
    s = b.op("MatMul", q, b.op("Transpose", k, perm=[0, 1, 3, 2]))
    y = b.op("MatMul", b.op("Softmax", s, axis=-1), v)
    _refused(b.outputs(y, b.op("Relu", s)))


# -- head split / merge -------------------------------------------------------------------
def _mha(b: Builder, x: Value, heads: int, d: int, mask: Value | None, dynamic: bool) -> Value:
    def target(src: Value, dims: list) -> Value:
        if not dynamic:
            return b.const(np.array(dims, np.int64))
        shape = b.op("Shape", src)
        lead = [b.op("Unsqueeze", b.op("Gather", shape, b.const(np.array(i, np.int64)), axis=0),
                     b.const(np.array([0], np.int64))) for i in (0, 1)]  # fmt: skip
        return b.op("Concat", *lead, *(b.const(np.array([n], np.int64)) for n in dims[2:]),
                    axis=0)  # fmt: skip

    def split(t: Value) -> Value:
        r = b.op("Reshape", t, target(t, [B, S, heads, d]))
        if dynamic:  # what the ONNX parser gets from onnx's symbolic shape inference
            r.shape = ("batch", "seq", heads, d)
        return b.op("Transpose", r, perm=[0, 2, 1, 3])

    hidden = heads * d
    q, k, v = (split(b.op("MatMul", x, _c(hidden, hidden))) for _ in range(3))
    kt = b.op("Transpose", k, perm=[0, 1, 3, 2])
    ctx = b.op("Transpose", _core(b, q, kt, v, mask), perm=[0, 2, 1, 3])
    shape = b.op("Shape", x) if dynamic else b.const(np.array([B, S, hidden], np.int64))
    y = b.op("Reshape", ctx, shape)
    if dynamic:
        y.shape = x.shape
    return y


@pytest.mark.parametrize("dynamic", [False, True])
def test_heads_absorbed(dynamic: bool) -> None:
    b = Builder()
    x = b.input("x", ("batch", "seq", 8) if dynamic else (B, S, 8))
    m = b.input("m", ("batch", 1, 1, "seq") if dynamic else (B, 1, 1, S))
    g = b.outputs(_mha(b, x, 2, 4, m, dynamic))
    check_pass(g, _FuseAndSweep(), modified=True, ops=["Attention", *["MatMul"] * 3], **TOL)
    att = next(n for n in g.nodes if n.op == "Attention")
    assert (att.attrs["q_num_heads"], att.attrs["kv_num_heads"]) == (2, 2)
    assert att.input(0).rank == 3 and att.input(3) is m


def test_heads_with_wrong_merge_are_kept_4d() -> None:
    b = Builder()
    x = b.input("x", (B, S, 8))
    y = _mha(b, x, 2, 4, None, dynamic=False)
    r = y.producer  # merge Reshape: [B, h, S, d] read in the wrong order
    r.inputs[0].producer.attrs["perm"] = [0, 1, 2, 3]
    r.inputs[0].shape = (B, 2, S, 4)
    g = b.outputs(y)
    check_pass(g, _fuse(), modified=True, **TOL)
    ops = op_types(g)
    assert ops.count("Attention") == 1 and ops.count("Reshape") == 4


def test_heads_with_a_shared_split_are_kept_4d() -> None:
    b = Builder()
    x = b.input("x", (B, S, 8))
    y = _mha(b, x, 2, 4, None, dynamic=False)
    att_q = next(n for n in b.graph.nodes if n.op == "Transpose").outputs[0]
    g = b.outputs(y, att_q)  # the split Q is also a graph output
    check_pass(g, _fuse(), modified=True, **TOL)
    assert op_types(g).count("Reshape") == 4


# -- end to end ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bert") / "bert.onnx"
    onnx.save(M.bert_encoder(M.BertConfig.tiny()), path)
    return path


def test_bert_default_pipeline(bert: Path, tmp_path: Path) -> None:
    cfg = M.BertConfig.tiny()
    result = converter.convert(bert, output=tmp_path / "b.ms", verify=True)
    assert result.verify is not None and result.verify.passed
    ops = result.graph.count_ops()
    assert ops["Attention"] == cfg.layers
    assert ops["LayerNormalization"] == 1 + 2 * cfg.layers
    assert ops["Gelu"] == cfg.layers
    assert ops["Split"] == cfg.layers  # one fused Q/K/V projection per layer
    assert ops["MatMulAct"] == 4 * cfg.layers
    for gone in ("Softmax", "Transpose", "Reshape", "MatMul", "Div", "Erf", "ReduceMean"):
        assert gone not in ops
    att = next(n for n in result.graph.nodes if n.op == "Attention")
    assert att.attrs["q_num_heads"] == cfg.heads and att.input(3) is not None
    assert result.nodes_after < result.nodes_before / 4
