"""Lowering com.microsoft nodes: the CONTRIB table and declared contrib ops."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from converter.executor.runtime import Runtime
from ir import Graph
from ir.verify import check_graph
from parsers.errors import UnsupportedModelError
from parsers.onnx import parse_onnx
from parsers.onnx.contrib import CONTRIB

F = TensorProto.FLOAT
MS = "com.microsoft"


def _model(
    op: str, inputs: list[str], n_out: int = 1, shape: tuple = (2, 8),
    inits: dict[str, np.ndarray] | None = None, **attrs: Any,
) -> onnx.ModelProto:
    inits = inits or {}
    feeds = [i for i in inputs if i and i not in inits]
    outs = [f"y{i}" for i in range(n_out)]
    graph = helper.make_graph(
        [helper.make_node(op, inputs, outs, domain=MS, name="n", **attrs)], "g",
        [helper.make_tensor_value_info(i, F, list(shape)) for i in feeds],
        [helper.make_empty_tensor_value_info(o) for o in outs],
        initializer=[numpy_helper.from_array(a, k) for k, a in inits.items()],
    )
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)]
    )


def _ops(graph: Graph) -> list[str]:
    return [n.op for n in graph.nodes]


def _parse(model: onnx.ModelProto) -> Graph:
    graph = parse_onnx(model)
    check_graph(graph)
    return graph


def test_table_keys_are_com_microsoft() -> None:
    assert CONTRIB and all(domain == MS for domain, _ in CONTRIB)


def test_gelu_family_lowers_to_gelu() -> None:
    g = _parse(_model("Gelu", ["x"]))
    assert _ops(g) == ["Gelu"] and g.nodes[0].attr("approximate") == "none"
    bias = {"b": np.ones(8, np.float32)}
    g = _parse(_model("FastGelu", ["x", "b"], inits=bias))
    assert _ops(g) == ["Add", "Gelu"] and g.nodes[1].attr("approximate") == "tanh"
    g = _parse(_model("BiasGelu", ["x", "b"], inits=bias))
    assert _ops(g) == ["Add", "Gelu"] and g.nodes[1].attr("approximate") == "none"


def test_quick_gelu_and_bias_add_decompose() -> None:
    g = _parse(_model("QuickGelu", ["x"], alpha=1.5))
    assert _ops(g) == ["Mul", "Sigmoid", "Mul"]
    assert float(g.nodes[0].inputs[1].const) == 1.5  # type: ignore[union-attr]
    x = np.linspace(-3, 3, 16, dtype=np.float32).reshape(2, 8)
    (y,) = Runtime(g).run({"x": x}).values()
    np.testing.assert_allclose(y, x / (1 + np.exp(-1.5 * x)), rtol=1e-6)
    g = _parse(_model("BiasAdd", ["x", "b", "s"], inits={"b": np.ones(8, np.float32)}))
    assert _ops(g) == ["Add", "Add"]


def test_fused_gemm_lowers_to_gemm_and_activation() -> None:
    inits = {"b": np.ones((3, 8), np.float32)}
    g = _parse(_model("FusedGemm", ["x", "b"], inits=inits, transB=1, activation="LeakyRelu",
                      activation_alpha=0.3))
    assert _ops(g) == ["Gemm", "LeakyRelu"]
    assert g.nodes[0].attr("transB") == 1
    assert g.nodes[1].attr("alpha") == pytest.approx(0.3)


def test_fused_gemm_unknown_activation_is_a_problem() -> None:
    inits = {"b": np.ones((3, 8), np.float32)}
    with pytest.raises(UnsupportedModelError, match="activation"):
        parse_onnx(_model("FusedGemm", ["x", "b"], inits=inits, transB=1, activation="Foo"))


def test_channels_last_becomes_format() -> None:
    s, z = np.array(0.1, np.float32), np.array(0, np.uint8)
    inits = {"xs": s, "xz": z, "ys": s, "yz": z}
    m = _model("QLinearGlobalAveragePool", ["x", "xs", "xz", "ys", "yz"], shape=(1, 4, 4, 3),
               inits=inits, channels_last=1)
    m.graph.input[0].type.tensor_type.elem_type = TensorProto.UINT8
    g = _parse(m)
    assert _ops(g) == ["QLinearGlobalAveragePool"]
    assert g.nodes[0].attr("format") == "NHWC"
    assert "channels_last" not in g.nodes[0].attrs
    assert g.outputs[0].shape == (1, 1, 1, 3)


def test_ms_quantize_linear_lowers_to_default_domain() -> None:
    inits = {"s": np.array(0.1, np.float32), "z": np.array(3, np.int8)}
    g = _parse(_model("QuantizeLinear", ["x", "s", "z"], inits=inits))
    assert _ops(g) == ["QuantizeLinear"]
    assert g.outputs[0].dtype.name == "INT8"


def test_declared_contrib_op_lowers_as_is() -> None:
    m = _model("FusedMatMul", ["a", "b"], shape=(3, 3), alpha=2.0, transB=1)
    g = _parse(m)
    assert _ops(g) == ["FusedMatMul"]
    assert g.nodes[0].attrs == {"alpha": 2.0, "transB": 1}
    assert g.outputs[0].shape == (3, 3)


def test_simplified_layer_norm_in_either_domain() -> None:
    inits = {"s": np.ones(8, np.float32)}
    g = _parse(_model("SimplifiedLayerNormalization", ["x", "s"], inits=inits, epsilon=1e-6))
    assert _ops(g) == ["SimplifiedLayerNormalization"]
    m = _model("SimplifiedLayerNormalization", ["x", "s"], inits=inits)
    m.graph.node[0].domain = ""
    assert _ops(_parse(m)) == ["SimplifiedLayerNormalization"]


def test_unknown_contrib_op_is_reported() -> None:
    with pytest.raises(UnsupportedModelError, match="com.microsoft::NoSuchOp"):
        parse_onnx(_model("NoSuchOp", ["x"]))
