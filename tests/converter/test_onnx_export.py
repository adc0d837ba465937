"""IR -> ONNX export used for graph dumps: checker-valid, runnable, faithful."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from converter import onnx_export
from converter.onnx_export import export_onnx, save_onnx
from ir import DataType, Graph, Node, Value, has_op
from parsers.onnx import parse_onnx

X = np.arange(6, dtype=np.float32).reshape(2, 3) - 2.5


def _run(model: onnx.ModelProto | str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    data = model if isinstance(model, str) else model.SerializeToString()
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, feeds)


def _simple_graph() -> Graph:
    """y = relu(x + w) * 2, z = leaky(x)."""
    g = Graph(name="simple")
    x = Value("x", DataType.FLOAT, ("n", 3))
    g.inputs.append(x)
    w = Value("w", const=np.array([1.0, -1.0, 0.5], np.float32))
    two = Value("two", const=np.array(2.0, np.float32))
    s = g.append(Node("Add", [x, w], [Value("s", DataType.FLOAT, ("n", 3))], name="add"))
    r = g.append(Node("Relu", [s.outputs[0]], 1, name="relu"))
    y = g.append(Node("Mul", [r.outputs[0], two], [Value("y", DataType.FLOAT, ("n", 3))]))
    z = g.append(Node("LeakyRelu", [x], [Value("z")], {"alpha": 0.2}, name="leaky"))
    g.outputs = [y.outputs[0], z.outputs[0]]
    return g


def test_export_is_valid_and_computes_the_graph() -> None:
    model = export_onnx(_simple_graph())
    onnx.checker.check_model(model, full_check=True)
    y, z = _run(model, {"x": X})
    np.testing.assert_allclose(y, np.maximum(X + [1.0, -1.0, 0.5], 0) * 2)
    np.testing.assert_allclose(z, np.where(X > 0, X, 0.2 * X), rtol=1e-6)
    assert {t.name for t in model.graph.initializer} == {"w", "two"}
    assert model.opset_import[0].version == onnx.defs.onnx_opset_version()


def test_value_info_and_symbolic_dims() -> None:
    model = export_onnx(_simple_graph())
    infos = {vi.name: vi for vi in model.graph.value_info}
    assert "s" in infos
    dims = infos["s"].type.tensor_type.shape.dim
    assert dims[0].dim_param == "n" and dims[1].dim_value == 3
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "n"


def test_default_attributes_omitted() -> None:
    g = Graph()
    x = Value("x", DataType.FLOAT, (2, 3))
    g.inputs.append(x)
    node = g.append(Node("LeakyRelu", [x], [Value("y")], {"alpha": 0.01, "extra": None}))
    g.outputs = [node.outputs[0]]
    node.attrs.pop("extra")
    model = export_onnx(g)
    assert list(model.graph.node[0].attribute) == []


@pytest.mark.skipif(not has_op("Conv"), reason="Conv not declared yet")
def test_nhwc_op_goes_to_custom_domain() -> None:
    g = Graph()
    x = Value("x", DataType.FLOAT, (1, 4, 4, 2))
    w = Value("w", const=np.ones((3, 2, 1, 1), np.float32))
    g.inputs.append(x)
    conv = g.append(Node("Conv", [x, w], [Value("y")], {"format": "NHWC"}))
    g.outputs = [conv.outputs[0]]
    model = export_onnx(g)
    onnx.checker.check_model(model)
    node = model.graph.node[0]
    assert node.domain == "liteconv" and node.attribute[0].s == b"NHWC"
    assert any(o.domain == "liteconv" for o in model.opset_import)


def test_unknown_op_goes_to_custom_domain() -> None:
    g = Graph()
    x = Value("x", DataType.FLOAT, (2,))
    g.inputs.append(x)
    y = Value("y", DataType.FLOAT, (2,))
    node = g.append(Node("MadeUpFused", [x], [y], {"k": 3, "mode": "fast"}))
    g.outputs = [node.outputs[0]]
    model = export_onnx(g)
    onnx.checker.check_model(model)
    assert model.graph.node[0].domain == "liteconv"
    assert {a.name for a in model.graph.node[0].attribute} == {"k", "mode"}


def test_duplicate_names_and_outputs() -> None:
    g = Graph()
    x = Value("x", DataType.FLOAT, (2, 3))
    g.inputs.append(x)
    a1 = g.append(Node("Relu", [x], [Value("a", DataType.FLOAT, (2, 3))]))
    a2 = g.append(Node("Neg", [a1.outputs[0]], [Value("a", DataType.FLOAT, (2, 3))]))
    g.outputs = [a2.outputs[0], a2.outputs[0], x]
    model = export_onnx(g)
    onnx.checker.check_model(model)
    outs = [o.name for o in model.graph.output]
    assert len(set(outs)) == 3 and outs[2] == "x"
    got = _run(model, {"x": X})
    np.testing.assert_allclose(got[0], -np.maximum(X, 0))
    np.testing.assert_allclose(got[1], got[0])
    np.testing.assert_allclose(got[2], X)


@pytest.mark.skipif(not has_op("If"), reason="If not declared")
def test_subgraph_outputs_outer_values_and_constants() -> None:
    g = Graph()
    x = Value("x", DataType.FLOAT, (2, 3))
    c = Value("c", DataType.BOOL, ())
    g.inputs += [x, c]
    then_g = Graph(name="then")
    then_g.outputs = [x]  # an outer value as a branch output
    else_g = Graph(name="else")
    else_g.outputs = [Value("k", const=np.full((2, 3), 7.0, np.float32))]
    node = g.append(
        Node(
            "If",
            [c],
            [Value("y", DataType.FLOAT, (2, 3))],
            {"then_branch": then_g, "else_branch": else_g},
        )
    )
    g.outputs = [node.outputs[0]]
    model = export_onnx(g)
    onnx.checker.check_model(model)
    np.testing.assert_allclose(_run(model, {"x": X, "c": np.array(True)})[0], X)
    np.testing.assert_allclose(_run(model, {"x": X, "c": np.array(False)})[0], 7.0)


def test_save_small_model_inline(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    save_onnx(_simple_graph(), path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
    np.testing.assert_allclose(
        _run(str(path), {"x": X})[0], _run(export_onnx(_simple_graph()), {"x": X})[0]
    )


def test_save_large_model_uses_external_data(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(onnx_export, "EXTERNAL_DATA_THRESHOLD", 100)
    g = Graph()
    x = Value("x", DataType.FLOAT, (1, 512))
    w = Value("w", const=np.random.default_rng(0).standard_normal((512, 512)).astype(np.float32))
    b = Value("b", const=np.arange(512, dtype=np.float32))
    g.inputs.append(x)
    mm = g.append(Node("MatMul" if has_op("MatMul") else "Mul", [x, w], [Value("m")]))
    out = g.append(Node("Add", [mm.outputs[0], b], [Value("y")]))
    g.outputs = [out.outputs[0]]
    path = tmp_path / "big.onnx"
    save_onnx(g, path)
    assert (tmp_path / "big.onnx.data").stat().st_size >= 512 * 512 * 4
    assert path.stat().st_size < 100_000
    feeds = {"x": np.ones((1, 512), np.float32)}
    want = _run(export_onnx(g), feeds)[0]
    np.testing.assert_allclose(_run(str(path), feeds)[0], want, rtol=1e-5)
    reparsed = parse_onnx(path)
    wv = next(v for v in reparsed.constants() if v.name == "w")
    np.testing.assert_array_equal(wv.const, w.const)
