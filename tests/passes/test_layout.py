"""NCHW <-> NHWC layout conversion: per-op conversion, the pipeline, whole CNNs end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from pass_testing import Builder, check_pass, op_types

import converter
from benchmarks import models as M
from converter.cli import convert_command
from ir import Graph, Trait, get_op
from passes.base import Pass
from passes.layout import ConvertLayout, layout_passes
from passes.manager import PassManager
from passes.transpose import nchw_to_nhwc, nhwc_to_nchw

RTOL = 1e-5
LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


class Layout(Pass):
    """:func:`layout_passes` as one pass."""

    name = "Layout"

    def __init__(self, target: str = "NHWC") -> None:
        super().__init__()
        self.target = target

    def run(self, graph: Graph) -> bool:
        pm = PassManager(layout_passes(self.target))
        pm.run(graph)
        return any(r.modified and r.name != "InferShapes" for r in pm.records)


def w(b: Builder, shape: tuple[int, ...], seed: int = 0):
    return b.const(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))


def spatial_formats(g: Graph) -> set[str]:
    return {n.attr("format") for n in g.all_nodes() if get_op(n.op).has(Trait.LAYOUT_SENSITIVE)}


def transposes(g: Graph) -> int:
    return sum(1 for n in g.all_nodes() if n.op == "Transpose")


# -- ConvertLayout, one op at a time --------------------------------------------------------------
@pytest.mark.parametrize(
    ("op", "extra", "attrs"),
    [
        ("Conv", [(4, 3, 3, 3)], {"pads": [1, 1, 1, 1], "strides": [2, 2]}),
        ("ConvTranspose", [(3, 2, 3, 3)], {"strides": [2, 2], "output_padding": [1, 0]}),
        ("ConvAct", [(4, 3, 3, 3), (4,)], {"activation": "Relu"}),
        ("MaxPool", [], {"kernel_shape": [2, 2], "ceil_mode": 1}),
        ("AveragePool", [], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
        ("GlobalAveragePool", [], {}),
        ("GlobalMaxPool", [], {}),
        ("BatchNormalization", [(3,), (3,), (3,), "var"], {}),
        ("InstanceNormalization", [(3,), (3,)], {}),
        ("LRN", [], {"size": 3}),
        ("SpaceToDepth", [], {"blocksize": 2}),
        ("DepthToSpace", [], {"blocksize": 1}),
    ],
)  # fmt: skip
def test_convert_op(op: str, extra: list, attrs: dict) -> None:
    b = Builder()
    x = b.input("x", (2, 3, 6, 8))
    ins = [x]
    for i, shape in enumerate(extra):
        ins.append(b.const(np.ones(3, np.float32) * 1.5) if shape == "var" else w(b, shape, i))
    g = b.outputs(b.op(op, *ins, **attrs))
    check_pass(g, ConvertLayout(), modified=True, ops=[op, "Transpose", "Transpose"], rtol=RTOL)
    node = next(n for n in g.nodes if n.op == op)
    assert node.attrs["format"] == "NHWC"
    t_in, t_out = node.inputs[0].producer, g.outputs[0].producer
    assert t_in.attrs["perm"] == nchw_to_nhwc(4) and t_out.attrs["perm"] == nhwc_to_nchw(4)
    if op.startswith("Conv"):
        assert node.inputs[1].const.shape == tuple(extra[0])  # weights stay OIHW / IOHW


def test_convert_1d_and_3d() -> None:
    b = Builder()
    x1, x3 = b.input("x1", (1, 3, 9)), b.input("x3", (1, 2, 4, 4, 4))
    y1 = b.op("Conv", x1, w(b, (4, 3, 3)), pads=[1, 1])
    y3 = b.op("MaxPool", x3, kernel_shape=[2, 2, 2])
    g = b.outputs(y1, y3)
    check_pass(g, ConvertLayout(), modified=True, rtol=RTOL)
    assert spatial_formats(g) == {"NHWC"} and transposes(g) == 4


@pytest.mark.parametrize("mode", ["scales", "sizes", "axes"])
def test_convert_resize_permutes_its_operands(mode: str) -> None:
    b = Builder()
    x = b.input("x", (1, 3, 4, 5))
    if mode == "scales":
        y = b.op("Resize", x, None, b.const(np.array([1, 1, 2, 1.5], np.float32)), mode="linear")
    elif mode == "sizes":
        y = b.op("Resize", x, None, None, b.const(np.array([1, 3, 7, 9], np.int64)))
    else:
        y = b.op("Resize", x, None, b.const(np.array([2, 3], np.float32)), axes=[2, 3])
    g = b.outputs(y)
    check_pass(g, ConvertLayout(), modified=True, ops=["Resize", "Transpose", "Transpose"])
    node = next(n for n in g.nodes if n.op == "Resize")
    assert node.attrs["format"] == "NHWC"
    if mode == "axes":
        assert node.attrs["axes"] == [1, 2]
    else:
        assert list(node.inputs[2 if mode == "scales" else 3].const[1:3]) != [3, 7]


def test_rank2_only_changes_format() -> None:
    b = Builder()
    x = b.input("x", (4, 3))
    g = b.outputs(b.op("BatchNormalization", x, *(w(b, (3,), i) for i in range(3)),
                       b.const(np.full(3, 2.0, np.float32))))  # fmt: skip
    check_pass(g, ConvertLayout(), modified=True, ops=["BatchNormalization"], rtol=RTOL)
    assert g.nodes[0].attrs["format"] == "NHWC"


def test_refusals() -> None:
    """Unknown rank, a used MaxPool Indices, non-constant Resize scales stay as they are."""
    b = Builder()
    x = b.input("x", None)
    z = b.input("z", (1, 2, 4, 4))
    scales = b.input("scales", (4,))
    y1 = b.op("Relu", x)
    y2 = b.op("Conv", y1, w(b, (2, 2, 1, 1)))
    pool, idx = b.op("MaxPool", z, kernel_shape=[2, 2], outputs=2)
    y3 = b.op("Resize", z, None, scales)
    g = b.outputs(y2, pool, idx, y3)
    assert ConvertLayout().run(g) is False
    assert spatial_formats(g) == {"NCHW"}


def test_already_in_target_is_untouched() -> None:
    b = Builder()
    x = b.input("x", (1, 6, 6, 3))
    g = b.outputs(b.op("Conv", x, w(b, (4, 3, 3, 3)), format="NHWC"))
    check_pass(g, ConvertLayout("NHWC"), modified=False)


def test_to_nchw() -> None:
    """A channels-last graph (as TFLite imports it) converted to NCHW."""
    b = Builder()
    x = b.input("x", (1, 6, 6, 3))
    y = b.op("Relu", b.op("Conv", x, w(b, (4, 3, 3, 3)), pads=[1] * 4, format="NHWC"))
    y = b.op("MaxPool", y, kernel_shape=[2, 2], format="NHWC")
    g = b.outputs(b.op("Conv", y, w(b, (2, 4, 1, 1), 1), format="NHWC"))
    check_pass(g, Layout("NCHW"), modified=True, rtol=RTOL)
    assert spatial_formats(g) == {"NCHW"} and transposes(g) == 2


# -- the layout pipeline on graphs with several branches -----------------------------------------
def inception_like(b: Builder) -> Graph:
    x = b.input("x", ("N", 3, 8, 8))
    c = b.op("Conv", x, w(b, (4, 3, 3, 3)), pads=[1] * 4)
    r = b.op("Relu", b.op("BatchNormalization", c, *(w(b, (4,), i) for i in range(3)),
                          b.const(np.full(4, 2.0, np.float32))))  # fmt: skip
    a = b.op("Conv", r, w(b, (4, 4, 1, 1), 1))
    p = b.op("MaxPool", r, kernel_shape=[3, 3], strides=[1, 1], pads=[1] * 4)
    cat = b.op("Concat", a, p, b.op("Sigmoid", r), axis=1)
    cat = b.op("Add", cat, w(b, (12, 1, 1), 2))
    up = b.op("Resize", cat, None, b.const(np.array([1, 1, 2, 2], np.float32)))
    pad = b.op("Pad", up, b.const(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)))
    s = b.op("Softmax", b.op("ReduceMean", pad, b.const(np.array([2], np.int64))), axis=1)
    gap = b.op("Flatten", b.op("GlobalAveragePool", pad))
    return b.outputs(s, gap, b.op("Slice", up, b.const(np.array([1], np.int64)),
                                  b.const(np.array([3], np.int64)),
                                  b.const(np.array([1], np.int64))))  # fmt: skip


def test_pipeline_leaves_boundary_transposes_only() -> None:
    g = inception_like(Builder())
    check_pass(g, Layout(), modified=True, rtol=RTOL)
    assert spatial_formats(g) == {"NHWC"}
    # one after the input, one before each of the 3 outputs (the GAP one is a Reshape)
    assert transposes(g) == 3, op_types(g)
    assert "Reshape" in op_types(g)


# -- end to end: converter.convert(..., output_format="NHWC", verify=True) -------------------
def _e2e(model: onnx.ModelProto | Path, tmp_path: Path) -> tuple[int, int, Graph]:
    src = model if isinstance(model, Path) else tmp_path / "m.onnx"
    if not isinstance(model, Path):
        onnx.save(model, src)
    plain = converter.convert(src, "ONNX", tmp_path / "nchw.ms", verify=True)
    res = converter.convert(src, "ONNX", tmp_path / "nhwc.ms", output_format="NHWC", verify=True)
    assert res.verify is not None and res.verify.passed
    assert all(m.cosine >= 0.9999 for m in res.verify.outputs)
    g = res.graph
    assert spatial_formats(g) == {"NHWC"}
    assert transposes(g) <= len(g.inputs) + len(g.outputs), op_types(g)
    assert any(p["pass"] == "ConvertLayout" for p in res.passes)
    return transposes(plain.graph), transposes(g), g


@pytest.mark.parametrize(
    "build",
    [lambda: M.resnet(50), lambda: M.mobilenet_v2(1.0, image=96)],
    ids=["resnet50", "mobilenet_v2"],
)
def test_cnn_to_nhwc_end_to_end(build, tmp_path: Path) -> None:
    before, after, g = _e2e(build(), tmp_path)
    assert before == 0 and after == 1


@pytest.mark.parametrize("name", ["light_resnet50", "light_inception_v1"])
def test_onnx_light_models_to_nhwc(name: str, tmp_path: Path) -> None:
    path = LIGHT / f"{name}.onnx"
    if not path.exists():
        pytest.skip(f"{path} is not shipped with this onnx")
    _e2e(path, tmp_path)


def test_cli_output_format(tmp_path: Path, capsys) -> None:
    src = tmp_path / "m.onnx"
    onnx.save(M.resnet(14, width=8, image=32, classes=10), src)
    args = [str(src), str(tmp_path / "m.ms"), "--outputFormat", "nhwc", "--verify"]
    with pytest.raises(SystemExit) as exc:
        convert_command(args)
    out, err = capsys.readouterr()
    assert exc.value.code == 0, err
    assert "layout NHWC" in err
    with pytest.raises(SystemExit) as exc:
        convert_command([str(src), str(tmp_path / "b.ms"), "--outputFormat", "NCWH"])
    assert exc.value.code == 2


# -- .ms weight layout helpers (MindSpore Lite stores NHWC conv weights KHWC) -------------------
def test_khwc_weight_selection_and_restore() -> None:
    from converter.ms.primitives import KHWC, KHWC_PERM, khwc_weights, restore_weight

    b = Builder()
    x = b.input("x", (1, 3, 8, 8))
    w1, w2, shared = w(b, (4, 3, 3, 3)), w(b, (4, 2, 3, 3), 1), w(b, (3, 3, 1, 1), 2)
    y = b.op("ConvTranspose", b.op("Conv", x, w1, pads=[1] * 4), w2, strides=[2, 2])
    z = b.op("Conv", x, shared)
    g = b.outputs(y, z, b.op("Add", shared, b.const(np.float32(1))))
    PassManager(layout_passes("NHWC")).run(g)
    assert khwc_weights(list(g.nodes)) == {id(w1), id(w2)}  # `shared` has a non-conv reader
    stored = np.ascontiguousarray(np.transpose(w2.const, KHWC_PERM))
    assert stored.shape == (4, 3, 3, 2)
    assert np.array_equal(restore_weight(stored, KHWC), w2.const)
    assert restore_weight(stored, 0) is stored
