"""Freeze-aware optimization: trainable weights are never baked into new constants."""

from __future__ import annotations

import numpy as np
import pytest
from pass_testing import Builder, op_types, random_feeds

from converter.executor.runtime import Runtime
from ir import Graph, Value
from passes.base import PassContext
from passes.cse import EliminateCommonSubexpressions
from passes.fold import FoldConstants
from passes.freeze import FreezeError, is_trainable, mark_trainable, weights_of
from passes.fusions import Fusions
from passes.manager import PassManager
from passes.pipeline import full_pipeline, rule_stats

rng = np.random.default_rng(0)


def _f32(*shape: int, scale: float = 1.0) -> np.ndarray:
    return (scale * rng.standard_normal(shape)).astype(np.float32)


def _conv_bn(b: Builder, x: Value, cin: int, cout: int, tag: str) -> Value:
    w = b.const(_f32(cout, cin, 3, 3, scale=0.3), name=f"{tag}_w")
    bias = b.const(_f32(cout), name=f"{tag}_b")
    y = b.op("Conv", x, w, bias, kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    y.producer.name = f"{tag}_conv"
    params = [_f32(cout) + 1, _f32(cout), _f32(cout), np.abs(_f32(cout)) + 0.5]
    bn = b.op("BatchNormalization", y, *(b.const(p) for p in params), epsilon=1e-3)
    bn.producer.name = f"{tag}_bn"
    return bn


def _two_blocks() -> Graph:
    """conv1+BN -> Relu -> conv2+BN."""
    b = Builder()
    x = b.input("x", (1, 3, 6, 6))
    y = b.op("Relu", _conv_bn(b, x, 3, 4, "c1"))
    y.producer.name = "relu1"
    return b.outputs(_conv_bn(b, y, 4, 5, "c2"))


def _optimize(g: Graph) -> PassManager:
    feeds = random_feeds(g)
    before = Runtime(g).run(feeds)
    pm = PassManager(full_pipeline(PassContext()))
    pm.run(g)
    after = Runtime(g).run(feeds)
    for name, want in before.items():
        np.testing.assert_allclose(after[name], want, rtol=1e-4, atol=1e-5)
    return pm


def _consts(g: Graph) -> dict[str, Value]:
    return {v.name: v for n in g.all_nodes() for v in n.inputs if v is not None and v.is_const}


def test_frozen_conv_bn_folds() -> None:
    g = _two_blocks()
    _optimize(g)
    assert op_types(g) == ["Conv", "ConvAct"]


def test_trainable_conv_bn_stays_two_nodes_with_weight_untouched() -> None:
    g = _two_blocks()
    w = _consts(g)["c2_w"]
    w_array, w_copy = w.const, w.const.copy()
    report = mark_trainable(g, ["c2_conv"])
    assert set(report.trainable) == {"c2_w", "c2_b"}
    pm = _optimize(g)
    assert op_types(g) == ["BatchNormalization", "Conv", "ConvAct"]  # block 1 still fused
    conv2 = next(n for n in g.nodes if n.op == "Conv")
    assert conv2.input(1) is w and w.const is w_array and is_trainable(w)
    np.testing.assert_array_equal(w.const, w_copy)
    stats = rule_stats(pm.passes)["Conv+BatchNormalization"]
    assert stats["trainable"] >= 1 and stats["fired"] == 1


def test_trainable_conv_still_fuses_activation_without_new_constants() -> None:
    b = Builder()
    x = b.input("x", (1, 3, 6, 6))
    w, bias = b.const(_f32(4, 3, 3, 3), name="w"), b.const(_f32(4), name="b")
    y = b.op("Conv", x, w, bias, kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    g = b.outputs(b.op("Relu", y))
    mark_trainable(g, ["w", "b"])
    _optimize(g)
    assert op_types(g) == ["ConvAct"]
    assert g.nodes[0].input(1) is w and g.nodes[0].input(2) is bias and is_trainable(w)


def test_freeze_until_marks_later_weights() -> None:
    g = _two_blocks()
    report = mark_trainable(g, freeze_until="relu1")
    assert report.frozen_nodes == 3 and report.trainable_nodes == 2
    consts = _consts(g)
    assert is_trainable(consts["c2_w"]) and not is_trainable(consts["c1_w"])
    _optimize(g)
    assert op_types(g) == ["BatchNormalization", "Conv", "ConvAct"]


def test_freeze_until_last_node_freezes_everything() -> None:
    g = _two_blocks()
    report = mark_trainable(g, freeze_until="c2_bn")
    assert report.trainable == [] and report.trainable_nodes == 0


def test_unknown_names_are_refused_with_the_valid_ones() -> None:
    g = _two_blocks()
    with pytest.raises(FreezeError, match="nope.*constants: .*c1_w"):
        mark_trainable(g, ["nope"])
    with pytest.raises(FreezeError, match="not a node name"):
        mark_trainable(g, freeze_until="nope")


def test_weights_exclude_scalars_and_integers() -> None:
    b = Builder()
    x = b.input("x", (2, 4))
    eps = b.const(np.array(1e-5, np.float32))
    shape = b.const(np.array([4, 2], np.int64))
    w = b.const(_f32(4))
    y = b.op("Reshape", b.op("Add", b.op("Mul", x, w), eps), shape)
    b.outputs(y)
    assert weights_of(w.uses[0][0]) == [w]
    assert weights_of(eps.uses[0][0]) == []
    assert weights_of(shape.uses[0][0]) == []


def test_fold_skips_trainable_inputs_but_folds_shapes() -> None:
    b = Builder()
    x = b.input("x", (2, 4))
    w = b.const(_f32(4, 4), name="w")
    wt = b.op("Transpose", w, perm=[1, 0])
    shape = b.op("Shape", w)
    y = b.op("Reshape", b.op("MatMul", x, wt), shape)
    g = b.outputs(y)
    w.meta["trainable"] = True
    assert FoldConstants()(g).modified  # the Shape folds
    assert op_types(g) == ["MatMul", "Reshape", "Transpose"]
    w.meta["trainable"] = False
    assert FoldConstants()(g).modified and op_types(g) == ["MatMul", "Reshape"]


def test_cse_keeps_equal_trainable_constants_apart() -> None:
    b = Builder()
    x = b.input("x", (2, 4))
    b1 = b.const(np.zeros(4, np.float32), name="b1")
    b2 = b.const(np.zeros(4, np.float32), name="b2")
    y = b.op("Add", b.op("Add", x, b1), b2)
    g = b.outputs(y)
    b1.meta["trainable"] = b2.meta["trainable"] = True
    assert not EliminateCommonSubexpressions()(g).modified
    assert b1.uses and b2.uses
    b1.meta["trainable"] = b2.meta["trainable"] = False
    assert EliminateCommonSubexpressions()(g).modified and not b2.uses


def test_matmul_bias_reused_as_is_still_fuses() -> None:
    """MatMul + [N] bias reuses the bias Value (no new constant): fine when trainable."""
    b = Builder()
    x = b.input("x", (2, 4))
    w, c = b.const(_f32(4, 3), name="w"), b.const(_f32(3), name="c")
    g = b.outputs(b.op("Add", b.op("MatMul", x, w), c))
    mark_trainable(g, ["w", "c"])
    p = Fusions()
    assert p(g).modified and op_types(g) == ["MatMulAct"]
    assert g.nodes[0].input(2) is c and g.nodes[0].input(1) is w
