"""Write -> read round trips of the .ms format: ops, attributes, constants, dtypes, shapes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest

import ir
from converter.executor.runtime import Runtime
from converter.ms import MsFormatError, read_ms, serialize, write_ms
from converter.ms.fbs import Decoder
from converter.ms.primitives import PRIMITIVES, same_attrs
from ir.ops import AttrType

F = ir.DataType.FLOAT


# -- helpers ----------------------------------------------------------------------------
def roundtrip(graph: ir.Graph, tmp_path: Path, **kw: Any) -> ir.Graph:
    path = tmp_path / "model.ms"
    write_ms(graph, path, **kw)
    return read_ms(path)


def primitive_types(data: bytes) -> list[str]:
    """Primitive union member of every CNode, in file order."""
    dec = Decoder(data)
    mg = dec.table(dec.root(), "MetaGraph")
    return [c["primitive"]["value"][0] for c in mg["nodes"]]


def assert_same_graph(a: ir.Graph, b: ir.Graph) -> None:
    assert a.name == b.name
    assert [v.name for v in a.inputs] == [v.name for v in b.inputs]
    assert [v.name for v in a.outputs] == [v.name for v in b.outputs]
    assert len(a.nodes) == len(b.nodes)
    for na, nb in zip(a.nodes, b.nodes, strict=True):
        assert (na.op, na.name) == (nb.op, nb.name)
        assert [None if v is None else v.name for v in na.inputs] == [
            None if v is None else v.name for v in nb.inputs
        ]
        assert [v.name for v in na.outputs] == [v.name for v in nb.outputs]
        if ir.has_op(na.op):
            plain = {
                k: v
                for k, v in na.attrs.items()
                if not isinstance(v, (ir.Graph, list))
                or not v
                or not isinstance(v[0] if isinstance(v, list) else v, ir.Graph)
            }
            plain_b = {k: nb.attrs[k] for k in nb.attrs if k in plain or k not in na.attrs}
            assert same_attrs(na.op, plain, plain_b), (na, na.attrs, nb.attrs)
        for key, value in na.attrs.items():
            if isinstance(value, ir.Graph):
                assert_same_graph(value, nb.attrs[key])
        for va, vb in zip(na.inputs, nb.inputs, strict=True):
            if va is not None:
                assert_same_value(va, vb)  # type: ignore[arg-type]
        for va, vb in zip(na.outputs, nb.outputs, strict=True):
            assert_same_value(va, vb)


def assert_same_value(a: ir.Value, b: ir.Value) -> None:
    assert (a.name, a.dtype, a.shape) == (b.name, b.dtype, b.shape)
    assert a.is_const == b.is_const
    if a.is_const:
        assert a.const.dtype == b.const.dtype and a.const.shape == b.const.shape
        if a.const.dtype == object:
            assert a.const.tolist() == b.const.tolist()
        else:
            assert a.const.tobytes() == b.const.tobytes()


def single_node(
    op: str,
    attrs: dict[str, Any] | None = None,
    inputs: list[Any] | None = None,
    n_out: int | None = None,
) -> ir.Graph:
    """A graph holding one ``op`` node; ``inputs`` items: shape tuple (graph input),
    ndarray (constant) or None (omitted)."""
    opdef = ir.get_op(op)
    if inputs is None:
        inputs = [(1, 3, 8, 8)] * max(opdef.min_inputs, 1 if opdef.max_inputs != 0 else 0)
    g = ir.Graph(name=f"g_{op}")
    values: list[ir.Value | None] = []
    for i, spec in enumerate(inputs):
        if spec is None:
            values.append(None)
        elif isinstance(spec, np.ndarray):
            values.append(ir.Value(f"c{i}", const=spec))
        else:
            v = ir.Value(f"in{i}", F, tuple(spec))
            g.inputs.append(v)
            values.append(v)
    if n_out is None:
        n_out = max(1, sum(1 for o in opdef.outputs if not o.endswith(("?", "*"))))
    node = g.append(ir.Node(op, values, n_out, attrs=attrs, name="node"))
    g.outputs = list(node.outputs)
    return g


def _fill(spec: ir.Attr, name: str) -> Any:
    body = ir.Graph(name=f"body_{name}")
    x = ir.Value(f"{name}_x", F, (2,))
    body.inputs = [x]
    body.outputs = [body.append(ir.Node("Identity", [x], name=f"{name}_id")).outputs[0]]
    return {
        AttrType.INT: 1,
        AttrType.FLOAT: 0.5,
        AttrType.STRING: "ij->ij",
        AttrType.INTS: [1],
        AttrType.FLOATS: [0.5],
        AttrType.STRINGS: ["a"],
        AttrType.TENSOR: np.array([1.5], np.float32),
        AttrType.GRAPH: body,
        AttrType.GRAPHS: [body],
    }[spec.type]


# -- every op of the vocabulary ---------------------------------------------------------
@pytest.mark.parametrize("op", sorted(ir.all_ops()))
def test_every_op_roundtrips(op: str, tmp_path: Path) -> None:
    opdef = ir.get_op(op)
    attrs = {k: _fill(a, k) for k, a in opdef.attrs.items() if a.required}
    g = single_node(op, attrs)
    back = roundtrip(g, tmp_path)
    assert_same_graph(g, back)


# -- primitive mappings -----------------------------------------------------------------
def c(*shape: int, dtype: Any = np.float32) -> np.ndarray:
    return np.arange(int(np.prod(shape)), dtype=dtype).reshape(shape)


SAMPLES: dict[str, tuple[dict[str, Any], list[Any] | None, int | None]] = {
    "Conv": (
        {
            "kernel_shape": [3, 3],
            "pads": [1, 0, 2, 1],
            "strides": [2, 1],
            "group": 1,
            "dilations": [1, 2],
        },
        [(1, 3, 8, 8), c(4, 3, 3, 3), c(4)],
        None,
    ),
    "ConvTranspose": (
        {"kernel_shape": [3, 3], "strides": [2, 2], "output_padding": [1, 1], "pads": [1, 1, 1, 1]},
        [(1, 3, 4, 4), c(3, 2, 3, 3)],
        None,
    ),
    "MaxPool": (
        {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [0, 1, 1, 0], "ceil_mode": 1},
        None,
        1,
    ),
    "AveragePool": (
        {"kernel_shape": [2, 2], "auto_pad": "SAME_UPPER", "format": "NHWC"},
        None,
        None,
    ),
    "GlobalAveragePool": ({"format": "NHWC"}, None, None),
    "LRN": ({"size": 5, "alpha": 2e-4, "beta": 0.5, "bias": 2.0}, None, None),
    "HardSigmoid": ({"alpha": 1 / 6}, None, None),
    "LeakyRelu": ({"alpha": 0.2}, None, None),
    "Elu": ({"alpha": 0.5}, None, None),
    "Gelu": ({"approximate": "tanh"}, None, None),
    "ThresholdedRelu": ({"alpha": 2.0}, None, None),
    "DepthToSpace": ({"blocksize": 2, "mode": "CRD"}, None, None),
    "SpaceToDepth": ({"blocksize": 2}, None, None),
    "Gemm": ({"transB": 1}, [(2, 3), c(4, 3), c(4)], None),
    "LSTM": (
        {"hidden_size": 4, "direction": "bidirectional"},
        [(5, 1, 3), c(2, 16, 3), c(2, 16, 4), c(2, 32)],
        3,
    ),
    "Split": ({"axis": 1}, [(1, 4), np.array([1, 3], np.int64)], 2),
    "Min": ({}, [(2,), (2,)], None),
    "Max": ({}, [(2,), (2,)], None),
    "Sum": ({}, [(2,), (2,), (2,)], None),
    "TopK": ({"axis": 1, "largest": 0, "sorted": 1}, [(2, 5), np.array([2], np.int64)], 2),
    "ArgMax": ({"axis": 2, "keepdims": 0}, None, None),
    "ArgMin": ({"axis": -1}, None, None),
    "Pad": ({"mode": "reflect"}, [(1, 3), np.array([0, 1, 0, 2], np.int64)], None),
    "Concat": ({"axis": 1}, [(1, 2), (1, 3)], None),
    "Softmax": ({"axis": 1}, None, None),
    "Flatten": ({"axis": 2}, None, None),
    "ReduceSum": ({"keepdims": 0}, [(2, 3), np.array([1], np.int64)], None),
    "ReduceMean": ({"keepdims": 1}, None, None),
    "BatchNormalization": (
        {"epsilon": 1e-3, "momentum": 0.8},
        [(1, 3, 2, 2), c(3), c(3), c(3), c(3)],
        None,
    ),
    "LayerNormalization": ({"axis": -2, "epsilon": 1e-6}, [(2, 3, 4), c(3, 4)], 1),
    "InstanceNormalization": ({"epsilon": 1e-3}, [(1, 3, 2, 2), c(3), c(3)], None),
    "Resize": (
        {"mode": "linear", "coordinate_transformation_mode": "align_corners"},
        [(1, 3, 4, 4), None, np.array([1, 1, 2, 2], np.float32)],
        None,
    ),
    "ConstantOfShape": ({"value": np.array([3], np.int32)}, [(2,)], None),
    "CumSum": ({"exclusive": 1, "reverse": 1}, [(4,), np.array(0, np.int64)], None),
    "OneHot": ({"axis": 0}, [(3,), np.array(4, np.int64), np.array([0, 1], np.float32)], None),
    "Mod": ({"fmod": 0}, [(2,), (2,)], None),
    "Swish": ({"alpha": 2.0}, None, None),
    "ConvAct": (
        {
            "kernel_shape": [3, 3],
            "pads": [1, 0, 1, 0],
            "group": 2,
            "activation": "Clip",
            "activation_params": [0.0, 6.0],
        },
        [(1, 4, 8, 8), c(6, 2, 3, 3), c(6)],
        None,
    ),
    "MatMulAct": ({"activation": "Sigmoid"}, [(2, 3), c(3, 4), c(4)], None),
    "Where": ({}, [(2,), (2,), (2,)], None),
    "AddAct": ({"activation": "Relu"}, [(2, 3), (2, 3)], None),
    "SubAct": ({"activation": "Clip", "activation_params": [0.0, 6.0]}, [(2, 3), c(3)], None),
    "MulAct": ({"activation": "Sigmoid"}, [(2, 3), (1, 3)], None),
    "DivAct": ({"activation": "Tanh"}, [(2, 3), (2, 3)], None),
}


def _sample(op: str) -> ir.Graph:
    attrs, inputs, n_out = SAMPLES.get(op, ({}, None, None))
    return single_node(op, attrs, inputs, n_out)


MAPPED = sorted(op for op in PRIMITIVES if ir.has_op(op))


@pytest.mark.parametrize("op", MAPPED)
def test_mapping_is_used_and_lossless(op: str, tmp_path: Path) -> None:
    g = _sample(op)
    assert primitive_types(serialize(g)) == [PRIMITIVES[op].primitive]
    assert_same_graph(g, roundtrip(g, tmp_path))


CUSTOM_CASES = [
    ("Conv", {"auto_pad": "SAME_LOWER", "kernel_shape": [3, 3]}, [(1, 3, 8, 8), c(4, 3, 3, 3)], 1),
    ("Conv", {"kernel_shape": [3]}, [(1, 3, 8), c(4, 3, 3)], 1),
    ("MaxPool", {"kernel_shape": [2, 2], "dilations": [2, 2]}, None, 1),
    ("Reshape", {"allowzero": 1}, [(2, 3), np.array([3, 2], np.int64)], 1),
    ("HardSigmoid", {}, None, 1),
    ("Gemm", {"alpha": 2.0}, [(2, 3), c(3, 4)], 1),
    ("Resize", {"coordinate_transformation_mode": "pytorch_half_pixel"}, None, 1),
    ("LRN", {"size": 4}, None, 1),
    ("ReduceSum", {"noop_with_empty_axes": 1}, None, 1),
    ("Shape", {"start": 1}, None, 1),
    ("BatchNormalization", {"format": "NHWC"}, [(1, 2, 2, 3), c(3), c(3), c(3), c(3)], 1),
    ("Identity", {}, None, 1),
    ("AddAct", {"activation": "LeakyRelu", "activation_params": [0.1]}, [(2, 3), (2, 3)], 1),
]


@pytest.mark.parametrize("case", CUSTOM_CASES, ids=lambda case: case[0])
def test_unmappable_nodes_become_custom(case: tuple[Any, ...], tmp_path: Path) -> None:
    op, attrs, inputs, n_out = case
    if not ir.has_op(op):
        pytest.skip(f"{op} not declared yet")
    g = single_node(op, attrs, inputs, n_out)
    assert primitive_types(serialize(g)) == ["Custom"]
    assert_same_graph(g, roundtrip(g, tmp_path))


def test_float_attributes_restore_at_float32(tmp_path: Path) -> None:
    g = single_node("LeakyRelu", {"alpha": 0.2})
    back = roundtrip(g, tmp_path)
    assert back.nodes[0].attrs["alpha"] == float(np.float32(0.2))
    default = roundtrip(single_node("LeakyRelu"), tmp_path)
    assert default.nodes[0].attrs == {}  # defaults come back as defaults, exactly


def test_custom_attribute_kinds(tmp_path: Path) -> None:
    body = ir.Graph(name="body")
    x = ir.Value("bx", F, (2,))
    body.inputs = [x]
    body.outputs = [body.append(ir.Node("Relu", [x], name="inner")).outputs[0]]
    attrs = {
        "i": -(2**40),
        "f": 0.1,
        "s": "héllo",
        "ints": [1, -2, 3],
        "floats": [0.1, 2.5],
        "strings": ["a", "", "ç"],
        "none": None,
        "t4": np.array([[-8, 7, 3]], dtype=ml_dtypes.int4),
        "tstr": np.array(["x", "yz"], dtype=object),
        "tbf": np.array([1.5, -2], dtype=ml_dtypes.bfloat16),
        "g": body,
        "gs": [body],
    }
    v = ir.Value("v", F, (2,))
    g = ir.Graph(inputs=[v])
    g.outputs = [g.append(ir.Node("NotAnIrOp", [v], attrs=attrs, name="n")).outputs[0]]
    back = roundtrip(g, tmp_path).nodes[0]
    assert back.op == "NotAnIrOp"
    for key in ("i", "f", "s", "ints", "floats", "strings", "none"):
        assert back.attrs[key] == attrs[key]
    for key in ("t4", "tbf"):
        assert back.attrs[key].dtype == attrs[key].dtype
        assert back.attrs[key].tobytes() == attrs[key].tobytes()
    assert back.attrs["tstr"].tolist() == ["x", "yz"]
    assert back.attrs["g"] is back.attrs["gs"][0]
    assert [n.op for n in back.attrs["g"].nodes] == ["Relu"]


# -- tensors ------------------------------------------------------------------------------
DTYPE_SAMPLES = {
    "float32": np.array([[1.5, -0.0], [np.inf, np.nan]], np.float32),
    "float16": np.array([1, 2.5, 65504], np.float16),
    "bfloat16": np.array([1, -3.25], ml_dtypes.bfloat16),
    "float64": np.array([np.pi], np.float64),
    "int4": np.array([-8, -1, 0, 7, 5], ml_dtypes.int4),
    "uint4": np.array([[0, 15, 9]], ml_dtypes.uint4),
    "int8": np.array([-128, 127], np.int8),
    "uint8": np.array([255], np.uint8),
    "int16": np.array([-3], np.int16),
    "uint16": np.array([65535], np.uint16),
    "int32": np.array([2**31 - 1], np.int32),
    "uint32": np.array([2**32 - 1], np.uint32),
    "int64": np.array([-(2**63)], np.int64),
    "uint64": np.array([2**64 - 1], np.uint64),
    "bool": np.array([True, False, True]),
    "complex64": np.array([1 + 2j], np.complex64),
    "float8e4m3fn": np.array([1.0, -448], ml_dtypes.float8_e4m3fn),
    "float8e5m2": np.array([0.5], ml_dtypes.float8_e5m2),
    "string": np.array([["a", "bc"], ["", "déf"]], dtype=object),
    "scalar": np.array(3.0, np.float32),
    "empty": np.zeros((0, 3), np.float32),
}


@pytest.mark.parametrize("name", sorted(DTYPE_SAMPLES))
def test_constants_are_bit_exact(name: str, tmp_path: Path) -> None:
    arr = DTYPE_SAMPLES[name]
    v = ir.Value(f"k_{name}", const=arr)
    g = ir.Graph()
    g.outputs = [g.append(ir.Node("Identity", [v], name="id")).outputs[0]]
    back = roundtrip(g, tmp_path).nodes[0].inputs[0]
    assert back is not None and back.is_const
    assert_same_value(v, back)


def test_inline_constants_are_zero_copy_and_aligned(tmp_path: Path) -> None:
    g = ir.Graph()
    sizes = (3, 17, 100, 1024, 5000)  # the last two reach 4 KiB: 64-byte aligned
    for i, n in enumerate(sizes):
        v = ir.Value(f"w{i}", const=np.arange(n, dtype=np.float32))
        g.outputs.append(g.append(ir.Node("Identity", [v], name=f"id{i}")).outputs[0])
    for i, n in enumerate((3, 5)):  # smaller ones only to their element size
        v = ir.Value(f"d{i}", const=np.arange(n, dtype=np.float64))
        g.outputs.append(g.append(ir.Node("Identity", [v], name=f"idd{i}")).outputs[0])
    back = roundtrip(g, tmp_path)
    for node in back.nodes:
        arr = node.inputs[0].const
        assert not arr.flags.writeable and not arr.flags.owndata and arr.flags.aligned
        assert arr.ctypes.data % (64 if arr.nbytes >= 4096 else arr.itemsize) == 0


def test_shapes_symbolic_unknown_and_scalar(tmp_path: Path) -> None:
    a = ir.Value("a", F, ("batch", None, 4))
    b = ir.Value("b", ir.DataType.FLOAT16, None)
    s = ir.Value("s", ir.DataType.INT64, ())
    u = ir.Value("u", ir.DataType.UINT4, (3,))
    g = ir.Graph(inputs=[a, b, s, u])
    for v in (a, b, s, u):
        g.outputs.append(g.append(ir.Node("Identity", [v], name=f"id_{v.name}")).outputs[0])
    back = roundtrip(g, tmp_path)
    assert [(v.dtype, v.shape) for v in back.inputs] == [
        (F, ("batch", None, 4)),
        (ir.DataType.FLOAT16, None),
        (ir.DataType.INT64, ()),
        (ir.DataType.UINT4, (3,)),
    ]


def test_quant_params(tmp_path: Path) -> None:
    x = ir.Value("x", ir.DataType.INT8, (2, 3))
    x.quant = ir.QuantParams(
        np.array([0.5, 0.25], np.float32),
        np.array([1, -2], np.int8),
        axis=0,
        num_bits=4,
        min=np.array([-1.0, -2.0], np.float32),
        max=np.array([1.0, 2.0], np.float32),
    )
    w = ir.Value("w", const=np.ones((2, 3), np.uint8))
    w.quant = ir.QuantParams(np.array(0.1, np.float64), np.array(128, np.uint8))
    g = ir.Graph(inputs=[x])
    g.outputs = [g.append(ir.Node("Add", [x, w], name="add")).outputs[0]]
    back = roundtrip(g, tmp_path).nodes[0]
    for orig, new in zip(
        (x.quant, w.quant), (back.inputs[0].quant, back.inputs[1].quant), strict=True
    ):
        assert new is not None
        assert (new.axis, new.num_bits) == (orig.axis, orig.num_bits)
        for key in ("scale", "zero_point", "min", "max"):
            a, b = getattr(orig, key), getattr(new, key)
            if a is None:
                assert b is None
            else:
                assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)


def test_usual_quant_params_keep_only_the_axis_in_metadata(tmp_path: Path) -> None:
    """float32 scales and int32 zero points, one per channel: the metadata says only the axis."""
    w = ir.Value("w", const=np.ones((3, 2), np.float32))
    w.quant = ir.QuantParams(
        np.array([0.5, 0.25, 0.125], np.float32), np.zeros(3, np.int32), axis=0, num_bits=8
    )
    g = ir.Graph()
    g.outputs = [g.append(ir.Node("Identity", [w], name="id")).outputs[0]]
    meta = json.loads(_meta_bytes(serialize(g)))
    assert list(meta["quant"].values()) == [{"axis": 0}]
    back = roundtrip(g, tmp_path).nodes[0].inputs[0].quant
    assert back is not None and back.axis == 0
    assert back.scale.dtype == np.float32 and back.zero_point.dtype == np.int32
    np.testing.assert_array_equal(back.scale, w.quant.scale)


def _meta_bytes(data: bytes) -> bytes:
    dec = Decoder(data)
    meta = dec.table(dec.root(), "MetaGraph")["allTensors"][-1]
    assert meta["name"] == "liteconv.meta"
    return data[meta["data"].offset : meta["data"].offset + meta["data"].length]


def _conv_chain(n: int) -> ir.Graph:
    rng = np.random.default_rng(0)
    x = ir.Value("x", F, (1, 4, 8, 8))
    g = ir.Graph(inputs=[x])
    attrs = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [1, 1]}
    for i in range(n):
        w = ir.Value(f"w{i}", const=rng.standard_normal((4, 4, 3, 3)).astype(np.float32))
        x = g.append(ir.Node("Conv", [x, w], 1, dict(attrs), name=f"conv{i}")).outputs[0]
    g.outputs = [x]
    return g


def test_repeated_attributes_and_dims_are_stored_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Identical strings and small vectors (kernel sizes, strides, dims) are shared."""
    from converter.ms import fbs

    g = _conv_chain(12)
    shared = len(serialize(g))
    monkeypatch.setattr(fbs, "SHARE_BYTES", -1)
    unshared = len(serialize(g))
    monkeypatch.undo()
    assert unshared - shared > 12 * 100  # each conv repeats ~10 attribute and dims vectors
    back = roundtrip(g, tmp_path)
    feeds = {"x": np.random.default_rng(1).standard_normal((1, 4, 8, 8)).astype(np.float32)}
    want, got = Runtime(g).run(feeds), Runtime(back).run(feeds)
    np.testing.assert_array_equal(want[g.outputs[0].name], got[back.outputs[0].name])


def test_omitted_optional_inputs(tmp_path: Path) -> None:
    g = single_node("Clip", {}, [(3,), None, np.array(1.0, np.float32)])
    back = roundtrip(g, tmp_path)
    assert back.nodes[0].inputs[1] is None
    assert_same_graph(g, back)


# -- subgraphs and execution ----------------------------------------------------------------
def _if_graph() -> ir.Graph:
    cond = ir.Value("cond", ir.DataType.BOOL, ())
    x = ir.Value("x", F, (3,))
    k = ir.Value("k", const=np.array([1, 2, 3], np.float32))
    then = ir.Graph(name="then")
    t = then.append(ir.Node("Add", [x, k], name="then_add"))  # reads outer values
    then.outputs = [then.append(ir.Node("Relu", [t.outputs[0]], name="then_relu")).outputs[0]]
    els = ir.Graph(name="else")
    els.outputs = [els.append(ir.Node("Sigmoid", [x], name="else_sig")).outputs[0]]
    g = ir.Graph(inputs=[cond, x])
    g.outputs = [
        g.append(
            ir.Node("If", [cond], 1, {"then_branch": then, "else_branch": els}, name="if")
        ).outputs[0]
    ]
    return g


def _loop_graph() -> ir.Graph:
    i = ir.Value("i", ir.DataType.INT64, ())
    cin = ir.Value("cin", ir.DataType.BOOL, ())
    acc = ir.Value("acc", F, (2,))
    step = ir.Value("step", const=np.array([0.5, 1.0], np.float32))
    body = ir.Graph(name="body", inputs=[i, cin, acc])
    add = body.append(ir.Node("Add", [acc, step], name="body_add"))
    keep = body.append(ir.Node("Identity", [cin], name="body_cond"))
    body.outputs = [keep.outputs[0], add.outputs[0]]
    n = ir.Value("n", ir.DataType.INT64, ())
    x = ir.Value("x0", F, (2,))
    g = ir.Graph(inputs=[n, x])
    g.outputs = [g.append(ir.Node("Loop", [n, None, x], 1, {"body": body}, name="loop")).outputs[0]]
    return g


def test_if_subgraphs_run_the_same(tmp_path: Path) -> None:
    g = _if_graph()
    back = roundtrip(g, tmp_path)
    assert_same_graph(g, back)
    x = np.array([-5, 0.5, 2], np.float32)
    for cond in (True, False):
        feeds = {"cond": np.array(cond), "x": x}
        want, got = Runtime(g).run(feeds), Runtime(back).run(feeds)
        np.testing.assert_array_equal(want[g.outputs[0].name], got[back.outputs[0].name])


def test_loop_subgraph_runs_the_same(tmp_path: Path) -> None:
    g = _loop_graph()
    back = roundtrip(g, tmp_path)
    assert_same_graph(g, back)
    feeds = {"n": np.array(3, np.int64), "x0": np.zeros(2, np.float32)}
    want, got = Runtime(g).run(feeds), Runtime(back).run(feeds)
    np.testing.assert_array_equal(want[g.outputs[0].name], got[back.outputs[0].name])


def test_conv_net_runs_the_same(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = ir.Value("x", F, ("N", 3, 8, 8))
    w = ir.Value("w", const=rng.standard_normal((4, 3, 3, 3)).astype(np.float32))
    b = ir.Value("b", const=rng.standard_normal(4).astype(np.float32))
    g = ir.Graph(name="net", inputs=[x])
    conv = g.append(
        ir.Node(
            "Conv",
            [x, w, b],
            1,
            {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [2, 2]},
            name="conv",
        )
    )
    act = g.append(ir.Node("LeakyRelu", [conv.outputs[0]], 1, {"alpha": 0.1}, name="act"))
    pool = g.append(ir.Node("GlobalAveragePool", [act.outputs[0]], name="gap"))
    g.outputs = [pool.outputs[0]]
    back = roundtrip(g, tmp_path)
    assert primitive_types(serialize(g)) == ["Conv2DFusion", "Activation", "AvgPoolFusion"]
    feeds = {"x": rng.standard_normal((2, 3, 8, 8)).astype(np.float32)}
    want, got = Runtime(g).run(feeds), Runtime(back).run(feeds)
    np.testing.assert_array_equal(want[g.outputs[0].name], got[back.outputs[0].name])


# -- external data --------------------------------------------------------------------------
def _weights_graph(sizes: tuple[int, ...]) -> ir.Graph:
    g = ir.Graph()
    for i, n in enumerate(sizes):
        v = ir.Value(f"w{i}", const=np.arange(n, dtype=np.float32))
        g.outputs.append(g.append(ir.Node("Identity", [v], name=f"id{i}")).outputs[0])
    return g


def test_external_threshold(tmp_path: Path) -> None:
    g = _weights_graph((10, 1000, 5000))
    back = roundtrip(g, tmp_path, external_threshold=4000)
    weights = tmp_path / "model.ms.weights"
    assert weights.stat().st_size >= 4000 + 20000
    assert_same_graph(g, back)
    for node in back.nodes[1:]:
        arr = node.inputs[0].const
        assert not arr.flags.writeable and arr.ctypes.data % 64 == 0


def test_inline_limit_moves_largest_out(tmp_path: Path) -> None:
    g = _weights_graph((100, 3000, 2000))
    back = roundtrip(g, tmp_path, inline_limit=10000)  # 20400 bytes: the 12000 one moves out
    assert_same_graph(g, back)
    assert (tmp_path / "model.ms.weights").stat().st_size == 12000
    # rewriting without external data removes the stale side file
    write_ms(_weights_graph((4,)), tmp_path / "model.ms")
    assert not (tmp_path / "model.ms.weights").exists()


def test_missing_external_file_is_a_format_error(tmp_path: Path) -> None:
    write_ms(_weights_graph((1000,)), tmp_path / "model.ms", external_threshold=1)
    os.remove(tmp_path / "model.ms.weights")
    with pytest.raises(MsFormatError, match="external data"):
        read_ms(tmp_path / "model.ms")


# -- robustness ------------------------------------------------------------------------------
def test_not_a_model(tmp_path: Path) -> None:
    bad = tmp_path / "bad.ms"
    bad.write_bytes(b"this is not a flatbuffer at all")
    with pytest.raises(MsFormatError, match="MSL2"):
        read_ms(bad)
    bad.write_bytes(b"")
    with pytest.raises(MsFormatError, match="empty"):
        read_ms(bad)
    with pytest.raises(MsFormatError, match="cannot open"):
        read_ms(tmp_path / "missing.ms")


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9, 0.99])
def test_truncated_model(keep: float, tmp_path: Path) -> None:
    data = serialize(_if_graph())
    bad = tmp_path / "cut.ms"
    bad.write_bytes(data[: max(8, int(len(data) * keep))])
    with pytest.raises(MsFormatError):
        read_ms(bad)


def test_corrupt_bytes_raise_format_error(tmp_path: Path) -> None:
    data = bytearray(serialize(_if_graph()))
    rng = np.random.default_rng(1)
    bad = tmp_path / "corrupt.ms"
    for _ in range(30):
        mutated = bytearray(data)
        for pos in rng.integers(8, len(data), 8):
            mutated[pos] = int(rng.integers(0, 256))
        bad.write_bytes(bytes(mutated))
        try:
            read_ms(bad)
        except MsFormatError:
            pass


def test_failed_write_leaves_no_file(tmp_path: Path) -> None:
    v = ir.Value("v", F, (2,))
    g = ir.Graph(inputs=[v])
    g.outputs = [g.append(ir.Node("Weird", [v], attrs={"x": object()}, name="n")).outputs[0]]
    with pytest.raises(TypeError):
        write_ms(g, tmp_path / "model.ms")
    assert list(tmp_path.iterdir()) == []


def test_large_constants_stream_without_a_second_copy(tmp_path):
    """Blobs over fbs.DEFER_BYTES are streamed from the constant, even if the builder grows."""
    import converter.ms.writer as writer_mod
    from converter.ms import read_ms, serialize, write_ms
    from ir import DataType, Graph, Node, Value

    g = Graph()
    x = Value("x", DataType.FLOAT, (4, 256))
    g.inputs = [x]
    w = np.random.default_rng(0).standard_normal((256, 512)).astype(np.float32)
    n = g.append(Node("MatMul", [x, Value("w", const=w)], name="mm"))
    g.outputs = [n.outputs[0]]
    real = writer_mod._lazy_builder
    try:  # force the builder to start tiny so it has to grow past the deferred blob
        writer_mod._lazy_builder = lambda size: real(64)
        write_ms(g, tmp_path / "m.ms")
        data = serialize(g)
    finally:
        writer_mod._lazy_builder = real
    back = read_ms(tmp_path / "m.ms")
    (wv,) = [v for v in back.constants() if v.name == "w"]
    np.testing.assert_array_equal(wv.const, w)
    assert data == (tmp_path / "m.ms").read_bytes()
