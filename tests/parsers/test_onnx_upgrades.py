"""Old ONNX opset forms are upgraded to the latest form the IR holds.

Each case builds a model at an old opset, parses it, checks the IR node has the latest
form (attributes moved to constant inputs, legacy attributes dropped), and where
onnxruntime runs the old opset, checks the exported IR graph computes the same outputs.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from converter.onnx_export import export_onnx
from ir import Graph, Node
from parsers.errors import UnsupportedModelError
from parsers.onnx import parse_onnx

F = TensorProto.FLOAT


def _model(
    nodes: list[onnx.NodeProto],
    inputs: dict[str, tuple[int, list]],
    outputs: list[str],
    opset: int,
    inits: list[onnx.TensorProto] = (),  # type: ignore[assignment]
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(k, t, s) for k, (t, s) in inputs.items()],
        [onnx.ValueInfoProto(name=o) for o in outputs],
        initializer=list(inits),
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=7)


def _only(graph: Graph, op: str) -> Node:
    nodes = [n for n in graph.nodes if n.op == op]
    assert len(nodes) == 1, graph.nodes
    return nodes[0]


def _const_input(node: Node, index: int) -> list:
    v = node.input(index)
    assert v is not None and v.is_const, node
    return v.const.tolist()  # type: ignore[union-attr]


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _same_outputs(
    model: onnx.ModelProto, graph: Graph, feeds: dict[str, np.ndarray], check: bool = True
) -> None:
    exported = export_onnx(graph)
    if check:  # the checker refuses graph inputs of unknown rank
        onnx.checker.check_model(exported)
    for want, got in zip(_run(model, feeds), _run(exported, feeds), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


X4 = np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(np.float32)


def test_split_attr_becomes_input() -> None:
    m = _model(
        [helper.make_node("Split", ["x"], ["a", "b"], axis=1, split=[1, 2])],
        {"x": (F, [2, 3, 4, 5])},
        ["a", "b"],
        11,
    )
    g = parse_onnx(m)
    node = _only(g, "Split")
    assert _const_input(node, 1) == [1, 2] and "split" not in node.attrs
    assert node.attrs == {"axis": 1}
    _same_outputs(m, g, {"x": X4})


def test_split_without_sizes_gets_num_outputs() -> None:
    m = _model(
        [helper.make_node("Split", ["x"], ["a", "b", "c"], axis=1)],
        {"x": (F, [2, 3, 4, 5])},
        ["a", "b", "c"],
        13,
    )
    node = _only(parse_onnx(m), "Split")
    assert node.attrs["num_outputs"] == 3 and len(node.inputs) == 1


def test_slice_attrs_become_inputs() -> None:
    m = _model(
        [helper.make_node("Slice", ["x"], ["y"], starts=[1, 0], ends=[3, -1], axes=[1, 3])],
        {"x": (F, [2, 3, 4, 5])},
        ["y"],
        9,
    )
    g = parse_onnx(m)
    node = _only(g, "Slice")
    assert [_const_input(node, i) for i in (1, 2, 3)] == [[1, 0], [3, -1], [1, 3]]
    assert node.attrs == {}
    _same_outputs(m, g, {"x": X4})


@pytest.mark.parametrize("opset,name", [(2, "pads"), (1, "paddings")])
def test_pad_attrs_become_inputs(opset: int, name: str) -> None:
    pads = [0, 0, 1, 2, 0, 0, 2, 1]
    node_proto = helper.make_node("Pad", ["x"], ["y"], mode="constant", value=1.5, **{name: pads})
    m = _model([node_proto], {"x": (F, [2, 3, 4, 5])}, ["y"], opset)
    g = parse_onnx(m)
    node = _only(g, "Pad")
    assert _const_input(node, 1) == pads and _const_input(node, 2) == 1.5
    assert node.input(2).dtype.name == "FLOAT"  # type: ignore[union-attr]
    assert node.attrs == {}
    if opset == 2:
        _same_outputs(m, g, {"x": X4})


def test_clip_attrs_become_inputs() -> None:
    m = _model(
        [helper.make_node("Clip", ["x"], ["y"], min=-0.5)], {"x": (F, [2, 3, 4, 5])}, ["y"], 6
    )
    g = parse_onnx(m)
    node = _only(g, "Clip")
    assert len(node.inputs) == 2 and _const_input(node, 1) == -0.5
    _same_outputs(m, g, {"x": X4})


@pytest.mark.parametrize("op,opset", [("ReduceSum", 11), ("ReduceMean", 13), ("ReduceMax", 17)])
def test_reduce_axes_become_input(op: str, opset: int) -> None:
    m = _model(
        [helper.make_node(op, ["x"], ["y"], axes=[1, -1], keepdims=0)],
        {"x": (F, [2, 3, 4, 5])},
        ["y"],
        opset,
    )
    g = parse_onnx(m)
    node = _only(g, op)
    assert _const_input(node, 1) == [1, -1] and node.attrs == {"keepdims": 0}
    _same_outputs(m, g, {"x": X4})


def test_reduce_sum_13_is_already_latest() -> None:
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [2])
    m = _model(
        [helper.make_node("ReduceSum", ["x", "axes"], ["y"])],
        {"x": (F, [2, 3, 4, 5])},
        ["y"],
        13,
        [axes],
    )
    node = _only(parse_onnx(m), "ReduceSum")
    assert _const_input(node, 1) == [2]


@pytest.mark.parametrize("op,axes", [("Squeeze", [1]), ("Unsqueeze", [0, 3])])
def test_squeeze_axes_become_input(op: str, axes: list[int]) -> None:
    m = _model([helper.make_node(op, ["x"], ["y"], axes=axes)], {"x": (F, [2, 1, 4])}, ["y"], 11)
    g = parse_onnx(m)
    node = _only(g, op)
    assert _const_input(node, 1) == axes and node.attrs == {}
    _same_outputs(m, g, {"x": np.ones((2, 1, 4), np.float32)})


def test_topk_k_becomes_input() -> None:
    m = _model(
        [helper.make_node("TopK", ["x"], ["v", "i"], k=2, axis=1)],
        {"x": (F, [2, 3, 4, 5])},
        ["v", "i"],
        9,
    )
    g = parse_onnx(m)
    node = _only(g, "TopK")
    assert _const_input(node, 1) == [2] and node.attrs == {"axis": 1}
    _same_outputs(m, g, {"x": X4})


def test_upsample_becomes_resize() -> None:
    scales = helper.make_tensor("s", F, [4], [1, 1, 2, 3])
    m = _model(
        [helper.make_node("Upsample", ["x", "s"], ["y"], mode="nearest")],
        {"x": (F, [2, 3, 4, 5])},
        ["y"],
        9,
        [scales],
    )
    g = parse_onnx(m)
    node = _only(g, "Resize")
    assert node.input(1) is None and _const_input(node, 2) == [1, 1, 2, 3]
    assert node.attrs["coordinate_transformation_mode"] == "asymmetric"
    assert node.attrs["nearest_mode"] == "floor"
    _same_outputs(m, g, {"x": X4})


def test_upsample7_scales_attr() -> None:
    scales = [1.0, 1.0, 2.0, 2.0]
    m = _model(
        [helper.make_node("Upsample", ["x"], ["y"], mode="linear", scales=scales)],
        {"x": (F, [2, 3, 4, 5])},
        ["y"],
        7,
    )
    g = parse_onnx(m)
    node = _only(g, "Resize")
    assert _const_input(node, 2) == [1, 1, 2, 2] and node.attrs["mode"] == "linear"
    _same_outputs(m, g, {"x": X4})


def test_resize10_layout() -> None:
    scales = helper.make_tensor("s", F, [4], [1, 1, 2, 2])
    m = _model(
        [helper.make_node("Resize", ["x", "s"], ["y"], mode="nearest")],
        {"x": (F, [2, 3, 4, 5])},
        ["y"],
        10,
        [scales],
    )
    g = parse_onnx(m)
    node = _only(g, "Resize")
    assert len(node.inputs) == 3 and node.input(1) is None
    _same_outputs(m, g, {"x": X4})


def test_resize11_empty_roi_and_scales_dropped() -> None:
    roi = helper.make_tensor("roi", F, [0], [])
    scales = helper.make_tensor("scales", F, [0], [])
    sizes = helper.make_tensor("sizes", TensorProto.INT64, [4], [2, 3, 8, 7])
    node_proto = helper.make_node(
        "Resize",
        ["x", "roi", "scales", "sizes"],
        ["y"],
        mode="linear",
        coordinate_transformation_mode="align_corners",
    )
    m = _model([node_proto], {"x": (F, [2, 3, 4, 5])}, ["y"], 11, [roi, scales, sizes])
    g = parse_onnx(m)
    node = _only(g, "Resize")
    assert node.input(1) is None and node.input(2) is None
    assert _const_input(node, 3) == [2, 3, 8, 7]
    _same_outputs(m, g, {"x": X4})


def test_batchnorm_legacy_attrs_dropped() -> None:
    c = [helper.make_tensor(n, F, [3], [1.0, 2.0, 0.5]) for n in ("s", "b", "m", "v")]
    node_proto = helper.make_node(
        "BatchNormalization",
        ["x", "s", "b", "m", "v"],
        ["y"],
        epsilon=1e-3,
        spatial=1,
        is_test=1,
        consumed_inputs=[0, 0, 0, 1, 1],
    )
    m = _model([node_proto], {"x": (F, [2, 3, 4, 5])}, ["y"], 6, c)
    node = _only(parse_onnx(m), "BatchNormalization")
    assert set(node.attrs) == {"epsilon"}


def test_dropout_ratio_becomes_input() -> None:
    node_proto = helper.make_node("Dropout", ["x"], ["y"], ratio=0.3)
    m = _model([node_proto], {"x": (F, [2, 3, 4, 5])}, ["y"], 10)
    g = parse_onnx(m)
    node = _only(g, "Dropout")
    assert _const_input(node, 1) == pytest.approx(0.3)
    _same_outputs(m, g, {"x": X4})


def test_dropout6_is_test_dropped() -> None:
    m = _model([helper.make_node("Dropout", ["x"], ["y"], is_test=1)], {"x": (F, [2, 3])}, ["y"], 6)
    assert _only(parse_onnx(m), "Dropout").attrs == {}


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax", "Hardmax"])
@pytest.mark.parametrize("axis", [None, 0, 1, 2, 3, -1, -3])
def test_softmax_family_2d_coercion(op: str, axis: int | None) -> None:
    kwargs = {} if axis is None else {"axis": axis}
    m = _model([helper.make_node(op, ["x"], ["y"], **kwargs)], {"x": (F, [2, 3, 4, 5])}, ["y"], 11)
    g = parse_onnx(m)
    effective = 1 if axis is None else axis % 4
    if effective == 3:
        assert g.count_ops() == {op: 1} and _only(g, op).attr("axis") == -1
    else:
        assert g.count_ops() == {"Flatten": 1, op: 1, "Reshape": 1}
        assert _only(g, "Flatten").attr("axis") == (1 if axis is None else axis)
    assert g.outputs[0].name == "y"
    _same_outputs(m, g, {"x": X4})


def test_softmax_unknown_rank_uses_shape() -> None:
    m = _model([helper.make_node("Softmax", ["x"], ["y"])], {"x": (F, None)}, ["y"], 11)
    g = parse_onnx(m)
    assert g.count_ops() == {"Flatten": 1, "Reshape": 1, "Shape": 1, "Softmax": 1}
    _same_outputs(m, g, {"x": X4}, check=False)


def test_softmax13_untouched() -> None:
    m = _model(
        [helper.make_node("Softmax", ["x"], ["y"], axis=1)], {"x": (F, [2, 3, 4, 5])}, ["y"], 13
    )
    g = parse_onnx(m)
    assert g.count_ops() == {"Softmax": 1} and _only(g, "Softmax").attrs == {"axis": 1}


def test_cast_string_to() -> None:
    m = _model([helper.make_node("Cast", ["x"], ["y"], to="INT32")], {"x": (F, [2])}, ["y"], 5)
    assert _only(parse_onnx(m), "Cast").attrs["to"] == TensorProto.INT32


def test_gemm_broadcast_dropped() -> None:
    c = helper.make_tensor("c", F, [4], [1, 2, 3, 4])
    w = helper.make_tensor("w", F, [3, 4], np.arange(12, dtype=np.float32))
    m = _model(
        [helper.make_node("Gemm", ["x", "w", "c"], ["y"], broadcast=1, alpha=0.5)],
        {"x": (F, [2, 3])},
        ["y"],
        6,
        [c, w],
    )
    g = parse_onnx(m)
    assert _only(g, "Gemm").attrs == {"alpha": 0.5}  # onnxruntime has no Gemm-6 kernel


def test_legacy_broadcast_axis_aligns_b() -> None:
    b = helper.make_tensor("b", F, [3], [1, 2, 3])
    m = _model(
        [helper.make_node("Add", ["x", "b"], ["y"], broadcast=1, axis=1)],
        {"x": (F, [2, 3, 4, 5])},
        ["y"],
        6,
        [b],
    )
    g = parse_onnx(m)
    assert _only(g, "Add").attrs == {}
    unsq = _only(g, "Unsqueeze")
    assert _const_input(unsq, 1) == [1, 2]


def test_maxpool_old_form_and_consumed_inputs_everywhere() -> None:
    nodes = [
        helper.make_node("MaxPool", ["x"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Relu", ["p"], ["y"], consumed_inputs=[0]),
    ]
    m = _model(nodes, {"x": (F, [2, 3, 4, 6])}, ["y"], 1)
    g = parse_onnx(m)
    assert _only(g, "MaxPool").attrs == {"kernel_shape": [2, 2], "strides": [2, 2]}
    assert _only(g, "Relu").attrs == {}


def test_concat_old_default_axis() -> None:
    m = _model([helper.make_node("Concat", ["x", "x"], ["y"])], {"x": (F, [2, 3])}, ["y"], 1)
    assert _only(parse_onnx(m), "Concat").attrs == {"axis": 1}


def test_reshape_shape_attr_becomes_input() -> None:
    m = _model(
        [helper.make_node("Reshape", ["x"], ["y"], shape=[3, 2])], {"x": (F, [2, 3])}, ["y"], 4
    )
    assert _const_input(_only(parse_onnx(m), "Reshape"), 1) == [3, 2]


def test_scatter_becomes_scatter_elements() -> None:
    idx = helper.make_tensor("i", TensorProto.INT64, [1, 2], [1, 0])
    upd = helper.make_tensor("u", F, [1, 2], [5, 6])
    m = _model(
        [helper.make_node("Scatter", ["x", "i", "u"], ["y"], axis=1)],
        {"x": (F, [2, 3])},
        ["y"],
        9,
        [idx, upd],
    )
    g = parse_onnx(m)
    assert _only(g, "ScatterElements").attrs == {"axis": 1}
    _same_outputs(m, g, {"x": np.zeros((2, 3), np.float32)})


def test_undeclared_attribute_is_reported() -> None:
    m = _model([helper.make_node("Relu", ["x"], ["y"], bogus=3)], {"x": (F, [2])}, ["y"], 14)
    with pytest.raises(UnsupportedModelError, match="attribute 'bogus'"):
        parse_onnx(m)
