"""Netron opens what the .ms writer produces.

``netron_decode(path)`` runs Node.js on ``ms_netron_decode.mjs``, which reads
the file with the netron package's own ``flatbuffers.js``/``mslite-schema.js``
and opens it through ``mslite.js`` as the Netron app does; it returns a JSON
summary (nodes with primitive type names and fields, tensors, subgraphs).
Other tests may call it on any .ms they write.
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import ir
from converter.ms import write_ms

_SCRIPT = Path(__file__).with_name("ms_netron_decode.mjs")


@functools.cache
def _netron_lib() -> Path | None:
    """A temp folder with netron's reader files copied as ES modules (.mjs)."""
    try:
        import netron
    except ImportError:
        return None
    src = Path(netron.__file__).parent
    lib = Path(tempfile.mkdtemp(prefix="netron-mslite-"))
    for name in ("flatbuffers", "mslite-schema", "mslite"):
        shutil.copy(src / f"{name}.js", lib / f"{name}.mjs")
    return lib


def netron_available() -> bool:
    return shutil.which("node") is not None and _netron_lib() is not None


def netron_decode(path: str | Path) -> dict[str, Any]:
    """Summary of the .ms at ``path`` as Netron's reader decodes it (raises on failure)."""
    return netron_decode_many([path])[0]


def netron_decode_many(paths: list[str | Path]) -> list[dict[str, Any]]:
    """netron_decode for several files with one Node.js process."""
    lib = _netron_lib()
    if lib is None or shutil.which("node") is None:
        pytest.skip("node or the netron package is not installed")
    proc = subprocess.run(
        ["node", str(_SCRIPT), str(lib), *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if proc.returncode != 0:
        raise AssertionError(f"Netron could not open {paths}:\n{proc.stderr}")
    result = json.loads(proc.stdout)
    return result if len(paths) > 1 else [result]


# -- graphs ---------------------------------------------------------------------------
def _conv_net() -> ir.Graph:
    x = ir.Value("x", ir.DataType.FLOAT, ("N", 3, 8, 8))
    w = ir.Value("w", const=np.ones((4, 3, 3, 3), np.float32))
    b = ir.Value("b", const=np.zeros(4, np.float32))
    g = ir.Graph(name="convnet", inputs=[x])
    if ir.has_op("Conv"):
        conv = g.append(
            ir.Node(
                "Conv",
                [x, w, b],
                attrs={"kernel_shape": [3, 3], "strides": [2, 1], "pads": [1, 0, 2, 1]},
                name="conv",
            )
        )
        y = conv.outputs[0]
    else:
        y = g.append(ir.Node("Mul", [x, ir.Value("s", const=np.float32(2.0))])).outputs[0]
    r = g.append(ir.Node("Relu", [y], name="relu"))
    g.outputs = [r.outputs[0]]
    return g


def _custom_and_quant() -> ir.Graph:
    x = ir.Value("x", ir.DataType.INT8, (2, 3))
    x.quant = ir.QuantParams(np.array([0.5, 0.25], np.float32), np.array([1, -2], np.int8), 0)
    w = ir.Value("w", const=np.arange(-3, 3, dtype=np.int8).reshape(2, 3))
    w.quant = ir.QuantParams(np.array(0.125, np.float32), np.array(0, np.int8))
    g = ir.Graph(inputs=[x])
    eq = g.append(ir.Node("Equal", [x, w], name="eq"))
    ident = g.append(ir.Node("Identity", [eq.outputs[0]], name="ident"))  # no primitive: Custom
    g.outputs = [ident.outputs[0]]
    return g


def _with_subgraph() -> ir.Graph:
    cond = ir.Value("cond", ir.DataType.BOOL, ())
    x = ir.Value("x", ir.DataType.FLOAT, (2,))
    then = ir.Graph(name="then")
    t = then.append(ir.Node("Relu", [x], name="then_relu"))
    then.outputs = [t.outputs[0]]
    els = ir.Graph(name="else")
    e = els.append(ir.Node("Tanh", [x], name="else_tanh"))
    els.outputs = [e.outputs[0]]
    g = ir.Graph(inputs=[cond, x])
    node = g.append(
        ir.Node("If", [cond], attrs={"then_branch": then, "else_branch": els}, name="if")
    )
    g.outputs = [node.outputs[0]]
    return g


needs_netron = pytest.mark.skipif(not netron_available(), reason="needs node and netron")


@needs_netron
def test_conv_net_fields(tmp_path: Path) -> None:
    path = tmp_path / "conv.ms"
    write_ms(_conv_net(), path)
    info = netron_decode(path)
    assert info["identifier"] == "MSL2"
    assert info["name"] == "convnet"
    assert info["version"].startswith("liteconv")
    types = [n["type"] for n in info["nodes"]]
    assert types[-1] == "Activation"
    assert info["nodes"][-1]["attributes"]["activation_type"] == 1  # RELU
    if ir.has_op("Conv"):
        conv = info["nodes"][0]
        assert conv["type"] == "Conv2DFusion"
        assert conv["attributes"]["kernel_size"] == [3, 3]
        assert conv["attributes"]["stride"] == [2, 1]
        assert conv["attributes"]["pad_list"] == [1, 2, 0, 1]  # top, bottom, left, right
        assert conv["attributes"]["out_channel"] == 4
    tensors = {t["name"]: t for t in info["tensors"]}
    assert tensors["x"]["dims"] == [-1, 3, 8, 8]
    assert tensors["x"]["dataType"] == 43
    assert tensors["w"]["dataLength"] == 4 * 3 * 3 * 3 * 4
    assert info["netronGraphs"][0]["inputs"] == ["float32[-1,3,8,8]"]


@needs_netron
def test_custom_op_and_quant_params(tmp_path: Path) -> None:
    path = tmp_path / "custom.ms"
    write_ms(_custom_and_quant(), path)
    info = netron_decode(path)
    types = {n["name"]: n["type"] for n in info["nodes"]}
    assert types == {"eq": "Equal", "ident": "Custom"}
    ident = next(n for n in info["nodes"] if n["name"] == "ident")
    assert ident["attributes"]["type"] == "Identity"
    tensors = {t["name"]: t for t in info["tensors"]}
    assert tensors["x"]["quantParams"] == [
        {"scale": 0.5, "zeroPoint": 1, "numBits": 8},
        {"scale": 0.25, "zeroPoint": -2, "numBits": 8},
    ]
    assert tensors["w"]["dataType"] == 32  # int8
    assert info["netronGraphs"][0]["nodes"] == ["Equal", "Custom"]


@needs_netron
def test_subgraphs_listed(tmp_path: Path) -> None:
    path = tmp_path / "if.ms"
    write_ms(_with_subgraph(), path)
    info = netron_decode(path)
    assert [s["name"] for s in info["subgraphs"]] == ["main", "then", "else"]
    names = [n["name"] for n in info["nodes"]]
    then = info["subgraphs"][1]
    assert [names[i] for i in then["nodeIndices"]] == ["then_relu"]
    if_node = info["nodes"][info["subgraphs"][0]["nodeIndices"][0]]
    assert if_node["attributes"]["type"] == "If"
    assert [a["name"] for a in if_node["attributes"]["attr"]] == ["then_branch", "else_branch"]
    graphs = [g["nodes"] for g in info["netronGraphs"]]
    assert graphs == [["Custom"], ["Activation"], ["Activation"]]


@needs_netron
def test_external_data_and_dtypes(tmp_path: Path) -> None:
    import ml_dtypes

    g = ir.Graph()
    consts = {
        "big": np.arange(64, dtype=np.float32),
        "half": np.arange(4, dtype=np.float16),
        "bf": np.arange(4, dtype=np.float32).astype(ml_dtypes.bfloat16),
        "i4": np.array([-8, 7, 1], dtype=ml_dtypes.int4),
    }
    for name, arr in consts.items():
        v = ir.Value(name, const=arr)
        n = g.append(ir.Node("Identity", [v], name=f"id_{name}"))
        g.outputs.append(n.outputs[0])
    path = tmp_path / "ext.ms"
    write_ms(g, path, external_threshold=128)
    info = netron_decode(path)
    tensors = {t["name"]: t for t in info["tensors"]}
    assert tensors["big"]["externalData"] == [
        {
            "location": "ext.ms.weights",
            "offset": 0,
            "length": 256,
            "checkSum": tensors["big"]["externalData"][0]["checkSum"],
        }
    ]
    assert tensors["big"]["dataLength"] == 0
    assert [tensors[k]["dataType"] for k in ("half", "bf", "i4")] == [42, 45, 50]
    assert tensors["i4"]["dataLength"] == 2  # packed two per byte


@needs_netron
def test_netron_opens_every_mapped_sample(tmp_path: Path) -> None:
    from test_ms_roundtrip import MAPPED, _sample

    from converter.ms.primitives import PRIMITIVES

    paths = []
    for op in MAPPED:
        paths.append(tmp_path / f"{op}.ms")
        write_ms(_sample(op), paths[-1])
    for op, info in zip(MAPPED, netron_decode_many(paths), strict=True):
        assert [n["type"] for n in info["nodes"]] == [PRIMITIVES[op].primitive], op


def test_schema_data_matches_installed_netron() -> None:
    """converter/ms/schema_data.py is what gen_schema extracts from netron's schema."""
    netron = pytest.importorskip("netron")
    from converter.ms import schema_data
    from converter.ms.gen_schema import parse

    js = (Path(netron.__file__).parent / "mslite-schema.js").read_text(encoding="utf-8")
    data = parse(js)
    assert data["union"] == schema_data.PRIMITIVE_UNION
    assert data["enums"] == schema_data.ENUMS
    for table in (
        "MetaGraph",
        "SubGraph",
        "CNode",
        "Tensor",
        "QuantParam",
        "ExternalData",
        "Custom",
        "Attribute",
        "Conv2DFusion",
    ):
        assert data["tables"][table] == schema_data.TABLES[table]
    assert data["tables"] == schema_data.TABLES
