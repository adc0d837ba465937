"""Conv family fusions: BN / per-channel Add, Sub, Mul, Div folding and Conv + activation."""

from __future__ import annotations

import numpy as np
import pytest
from pass_testing import Builder, check_pass, op_types

from ir import Graph, Value
from passes.base import PassContext
from passes.fusions import Fusions

TOL = {"rtol": 1e-4, "atol": 1e-5}
ALL = PassContext(options={"fuse_activations": "all"})
rng = np.random.default_rng(0)


def _f32(*shape: int, scale: float = 1.0) -> np.ndarray:
    return (scale * rng.standard_normal(shape)).astype(np.float32)


def _conv(b: Builder, x: Value, cin: int, cout: int, group: int = 1, op: str = "Conv",
          fmt: str = "NCHW", bias: bool = True, **attrs) -> Value:  # fmt: skip
    shape = (cout, cin // group, 3, 3) if op == "Conv" else (cin, cout // group, 3, 3)
    w = b.const(_f32(*shape, scale=0.3))
    bias_v = b.const(_f32(cout)) if bias else None
    if fmt != "NCHW":
        attrs["format"] = fmt
    return b.op(op, x, w, bias_v, kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=group, **attrs)


def _bn(b: Builder, y: Value, c: int, fmt: str = "NCHW", **attrs) -> Value:
    params = [_f32(c) + 1, _f32(c), _f32(c), np.abs(_f32(c)) + 0.5]
    if fmt != "NCHW":
        attrs["format"] = fmt
    return b.op("BatchNormalization", y, *(b.const(p) for p in params), epsilon=1e-3, **attrs)


CASES = [  # (op, cin, cout, group, format, bias)
    ("Conv", 4, 6, 1, "NCHW", True),
    ("Conv", 4, 6, 1, "NCHW", False),
    ("Conv", 6, 6, 6, "NCHW", True),  # depthwise
    ("Conv", 4, 6, 2, "NHWC", True),
    ("ConvTranspose", 4, 6, 1, "NCHW", True),
    ("ConvTranspose", 4, 6, 2, "NCHW", False),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-g{c[3]}-{c[4]}-b{int(c[5])}")
def test_conv_batchnorm_folds(case: tuple) -> None:
    op, cin, cout, group, fmt, bias = case
    b = Builder()
    shape = (2, cin, 5, 5) if fmt == "NCHW" else (2, 5, 5, cin)
    x = b.input("x", shape)
    y = _bn(b, _conv(b, x, cin, cout, group, op, fmt, bias), cout, fmt)
    g = b.outputs(y)
    check_pass(g, Fusions(), modified=True, ops=[op], **TOL)
    conv = g.nodes[0]
    assert conv.outputs[0].name == y.name and conv.attrs["group"] == group
    assert conv.input(1).is_const and conv.input(2).is_const


@pytest.mark.parametrize("arith", ["Add", "Sub", "Mul", "Div"])
@pytest.mark.parametrize("op", ["Conv", "ConvTranspose"])
def test_per_channel_arithmetic_folds(arith: str, op: str) -> None:
    b = Builder()
    x = b.input("x", (1, 4, 5, 5))
    c = b.const(np.abs(_f32(6, 1, 1)) + 0.5)
    y = b.op(arith, _conv(b, x, 4, 6, op=op), c)
    check_pass(b.outputs(y), Fusions(), modified=True, ops=[op], **TOL)


def test_commuted_add_and_scalar_mul_fold() -> None:
    b = Builder()
    x = b.input("x", (1, 4, 5, 5))
    y = b.op("Add", b.const(_f32(1, 6, 1, 1)), _conv(b, x, 4, 6, bias=False))
    y = b.op("Mul", b.const(np.array(1.5, np.float32)), y)
    check_pass(b.outputs(y), Fusions(), modified=True, ops=["Conv"], **TOL)


def _refused(g: Graph, ctx: PassContext | None = None) -> None:
    ops = op_types(g)
    check_pass(g, Fusions(ctx), modified=False, ops=ops, **TOL)


def test_refuses_conv_output_read_twice() -> None:
    b = Builder()
    x = b.input("x", (1, 4, 5, 5))
    y = _conv(b, x, 4, 6)
    _refused(b.outputs(_bn(b, y, 6), b.op("Relu", y)))


def test_refuses_conv_output_that_is_a_graph_output() -> None:
    b = Builder()
    x = b.input("x", (1, 4, 5, 5))
    y = _conv(b, x, 4, 6)
    _refused(b.outputs(_bn(b, y, 6), y))


def test_refuses_non_constant_weights_and_params() -> None:
    b = Builder()
    x, w = b.input("x", (1, 4, 5, 5)), b.input("w", (6, 4, 3, 3))
    y = b.op("Conv", x, w, kernel_shape=[3, 3])
    _refused(b.outputs(_bn(b, y, 6)))
    b = Builder()
    x, s = b.input("x", (1, 4, 5, 5)), b.input("s", (6,))
    y = _conv(b, x, 4, 6)
    c = [b.const(_f32(6)), b.const(_f32(6)), b.const(np.ones(6, np.float32))]
    _refused(b.outputs(b.op("BatchNormalization", y, s, *c)))


def test_refuses_bn_not_after_conv_and_training_mode() -> None:
    b = Builder()
    x = b.input("x", (1, 6, 5, 5))
    _refused(b.outputs(_bn(b, b.op("Relu", x), 6)))
    b = Builder()
    x = b.input("x", (1, 4, 5, 5))
    params = [b.const(_f32(6)) for _ in range(3)] + [b.const(np.ones(6, np.float32))]
    y = b.op("BatchNormalization", _conv(b, x, 4, 6), *params, training_mode=1, outputs=3)
    g = b.outputs(y[0])
    before = op_types(g)
    assert not Fusions().run(g) and op_types(g) == before


def test_refuses_bn_format_mismatch() -> None:
    b = Builder()
    x = b.input("x", (1, 4, 5, 5))
    y = _bn(b, _conv(b, x, 4, 6), 6, "NHWC")
    g = b.outputs(y)
    assert not Fusions().run(g)


@pytest.mark.parametrize(
    "shape", [(6, 5, 5), (1, 6, 1, 5), (2, 6, 1, 1), (1, 1, 6, 1, 1), (5,)],
    ids=str,
)  # fmt: skip
def test_refuses_constants_that_are_not_per_channel(shape: tuple) -> None:
    b = Builder()
    x = b.input("x", (2, 4, 5, 5))
    y = b.op("Add", _conv(b, x, 4, 6), b.const(_f32(*shape)))
    _refused(b.outputs(y))


def test_refuses_constant_on_the_left_of_sub() -> None:
    b = Builder()
    x = b.input("x", (1, 4, 5, 5))
    y = b.op("Sub", b.const(_f32(6, 1, 1)), _conv(b, x, 4, 6))
    _refused(b.outputs(y))


# -- activations -----------------------------------------------------------------------------
def _act(b: Builder, name: str, y: Value) -> Value:
    if name == "Relu6":
        return b.op("Clip", y, b.const(np.array(0, np.float32)), b.const(np.array(6, np.float32)))
    if name == "ClipLow":
        return b.op("Clip", y, b.const(np.array(-0.5, np.float32)))
    attrs = {
        "LeakyRelu": {"alpha": 0.2},
        "HardSigmoid": {"alpha": 0.3, "beta": 0.4},
        "GeluTanh": {"approximate": "tanh"},
        "Swish": {"alpha": 1.5},
    }.get(name, {})
    return b.op("Gelu" if name == "GeluTanh" else name, y, **attrs)


ACTS = ["Relu", "Relu6", "ClipLow", "LeakyRelu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish",
        "Gelu", "GeluTanh", "Swish"]  # fmt: skip
MAPPABLE = {"Relu", "Relu6", "Sigmoid", "Tanh", "HardSwish"}


@pytest.mark.parametrize("act", ACTS)
def test_conv_activation_fuses(act: str) -> None:
    b = Builder()
    x = b.input("x", (2, 4, 5, 5))
    g = b.outputs(_act(b, act, _conv(b, x, 4, 6, group=2)))
    check_pass(g, Fusions(ALL), modified=True, ops=["ConvAct"], **TOL)
    node = g.nodes[0]
    assert node.attrs["group"] == 2 and node.attrs["kernel_shape"] == [3, 3]
    expected = {"Relu6": "Clip", "ClipLow": "Clip", "GeluTanh": "Gelu"}.get(act, act)
    assert node.attrs["activation"] == expected


@pytest.mark.parametrize("act", ACTS)
def test_default_fuses_only_mappable_activations(act: str) -> None:
    b = Builder()
    x = b.input("x", (1, 4, 5, 5))
    g = b.outputs(_act(b, act, _conv(b, x, 4, 6)))
    fused = Fusions().run(g)
    assert fused is (act in MAPPABLE)


def test_bn_then_relu_become_one_conv_act() -> None:
    b = Builder()
    x = b.input("x", (1, 6, 5, 5))
    y = b.op("Relu", _bn(b, _conv(b, x, 6, 6, group=6), 6))
    check_pass(b.outputs(y), Fusions(), modified=True, ops=["ConvAct"], **TOL)


def test_activation_not_fused_when_conv_output_is_shared() -> None:
    b = Builder()
    x = b.input("x", (1, 4, 5, 5))
    y = _conv(b, x, 4, 6)
    _refused(b.outputs(b.op("Relu", y), b.op("Sigmoid", y)))


def test_activation_with_variable_clip_bound_is_refused() -> None:
    b = Builder()
    x, hi = b.input("x", (1, 4, 5, 5)), b.input("hi", ())
    _refused(b.outputs(b.op("Clip", _conv(b, x, 4, 6), None, hi)), ALL)
