"""Fast paths of the executor kernels against the plain formulations they replace.

``vector.clamp``, the chunked float32 erf/Gelu and the in-place Attention
softmax only change which loops NumPy runs, so they must match the plain
NumPy expressions bit for bit; the row-tap Conv sums its products in another
order, so it is checked against onnx.reference to float32 rounding, on the
geometries (odd sizes, asymmetric pads, strides, dilations, groups, batch,
1-D) that exercise its index arithmetic.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from onnx import helper
from onnx.reference import ReferenceEvaluator

import ir
from converter.executor.kernels import elementwise, fused, nn, reduce, vector

RNG = np.random.default_rng(7)


def bits(a: np.ndarray) -> np.ndarray:
    """The float32 bit patterns (so -0.0 != 0.0 and NaN payloads count)."""
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def specials(n: int) -> np.ndarray:
    """``n`` float32 values: normal ones plus -0.0, +-inf, NaN, erf's clip points."""
    x = (RNG.standard_normal(n) * 3).astype(np.float32)
    extra = [-0.0, 0.0, np.inf, -np.inf, np.nan, 4.0, -4.0, 6.0, 1e-30, -1e30]
    k = min(n, len(extra))
    x[:k] = extra[:k]
    return x


# ------------------------------------------------------------------------- clamp


@pytest.mark.parametrize("size", [12, 3 * 8192 + 5, 2 * 8192])
@pytest.mark.parametrize("bounds", [(0.0, None), (None, 6.0), (0.0, 6.0), (2.0, -1.0)])
def test_clamp_is_bitwise_plain_max_min(size: int, bounds: tuple) -> None:
    lo, hi = bounds
    x = specials(size)
    want = x.copy()
    if lo is not None:
        want = np.maximum(want, np.float32(lo))
    if hi is not None:
        want = np.minimum(want, np.float32(hi))
    got = vector.clamp(x.copy(), lo, hi)
    np.testing.assert_array_equal(bits(got), bits(want))


def test_clamp_non_contiguous_and_float64() -> None:
    x = specials(64 * 300).reshape(64, 300).T  # a transposed view: the scalar loop
    got = vector.clamp(x.copy(order="K"), 0.0, 6.0)
    np.testing.assert_array_equal(bits(got), bits(np.minimum(np.maximum(x, 0), 6)))
    y = specials(20000).astype(np.float64)
    np.testing.assert_array_equal(vector.clamp(y.copy(), -1.0, 1.0), np.clip(y, -1.0, 1.0))


@pytest.mark.parametrize("act", [("Relu", None), ("Clip", [0.0, 6.0]), ("Clip", [-1.5, 0.5])])
def test_fused_relu_clip_in_place_match_unfused_kernels(act: tuple) -> None:
    name, params = act
    x = specials(5 * (8192 + 3)).reshape(1, 5, -1)
    got = fused.apply_activation(x.copy(), name, params)
    if name == "Relu":
        want = np.maximum(x, 0)
    else:
        want = np.minimum(np.maximum(x, np.float32(params[0])), np.float32(params[1]))
    np.testing.assert_array_equal(bits(got), bits(want))


# ------------------------------------------------------------------------- erf / Gelu


def plain_erf(x: np.ndarray) -> np.ndarray:
    """The float32 rational erf over the whole array at once (the pre-chunking code)."""
    z = np.clip(x, np.float32(-4), np.float32(4))
    z2 = z * z
    p = z2 * elementwise._ERF_P[0] + elementwise._ERF_P[1]
    for a in elementwise._ERF_P[2:]:
        p = p * z2 + a
    q = z2 * elementwise._ERF_Q[0] + elementwise._ERF_Q[1]
    for b in elementwise._ERF_Q[2:]:
        q = q * z2 + b
    return z * p / q


@pytest.mark.parametrize("shape", [(3,), (2, vector.CHUNK + 17), (1, 128, 3 * 1024)])
def test_chunked_float32_erf_and_gelu_are_bitwise_whole_array(shape: tuple) -> None:
    x = specials(math.prod(shape)).reshape(shape)
    with np.errstate(all="ignore"):
        erf = plain_erf(x)
        gelu = 0.5 * x * (1 + plain_erf(x * (1 / math.sqrt(2))))
        got_erf = elementwise.KERNELS["Erf"](None, x)
        got_gelu = elementwise.KERNELS["Gelu"](_Ctx(approximate="none"), x)
    assert got_erf.shape == got_gelu.shape == shape
    np.testing.assert_array_equal(bits(got_erf), bits(erf))
    np.testing.assert_array_equal(bits(got_gelu), bits(gelu))


def test_gelu_on_a_strided_view() -> None:
    x = specials(4 * 9000).reshape(4, 9000)[:, ::3]
    got = elementwise.KERNELS["Gelu"](_Ctx(approximate="none"), x)
    with np.errstate(all="ignore"):
        want = 0.5 * x * (1 + plain_erf(x * (1 / math.sqrt(2))))
    np.testing.assert_array_equal(bits(got), bits(want))


# ------------------------------------------------------------------------- Attention


class _Ctx:
    """Just enough of KernelContext: attributes (with the op's defaults) and outputs."""

    def __init__(self, op: str | None = None, num_outputs: int = 1, **attrs: Any) -> None:
        defaults = {}
        if op is not None:
            defaults = {k: a.default for k, a in ir.get_op(op).attrs.items() if not a.required}
        self.attrs = {**defaults, **attrs}
        self.num_outputs = num_outputs
        self.cache: dict = {}
        self.donated: tuple[int, ...] = ()

    def attr(self, name: str) -> Any:
        return self.attrs[name]


def _mask(kind: str, sq: int, skv: int) -> np.ndarray | None:
    if kind == "none":
        return None
    if kind == "bool":  # the last query row sees no key at all
        m = RNG.random((1, 1, sq, skv)) > 0.3
        m[..., -1, :] = False
        return m
    return RNG.standard_normal((sq, skv)).astype(np.float32)


@pytest.mark.parametrize("mask", ["none", "bool", "float"])
@pytest.mark.parametrize("causal", [0, 1])
@pytest.mark.parametrize("rank", [3, 4])
def test_attention_fast_path_is_bitwise_general_path(
    mask: str, causal: int, rank: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    b, hq, hkv, sq, skv, d = 2, 4, 2, 5, 7, 8
    q = RNG.standard_normal((b, hq, sq, d)).astype(np.float32)
    k = RNG.standard_normal((b, hkv, skv, d)).astype(np.float32)
    v = RNG.standard_normal((b, hkv, skv, d)).astype(np.float32)
    attrs: dict[str, Any] = {"is_causal": causal}
    if rank == 3:
        q, k, v = (a.transpose(0, 2, 1, 3).reshape(b, a.shape[2], -1) for a in (q, k, v))
        attrs |= {"q_num_heads": hq, "kv_num_heads": hkv}
    m = _mask(mask, sq, skv)
    calls = []
    fast = reduce._attend
    monkeypatch.setattr(reduce, "_attend", lambda *a: calls.append(1) or fast(*a))
    (got,) = reduce.attention(_Ctx("Attention", 1, **attrs), q, k, v, m)
    assert calls, "the single-output call should take the fast path"
    general = reduce.attention(_Ctx("Attention", 4, **attrs), q, k, v, m)
    assert len(calls) == 1, "qk output must take the general path"
    np.testing.assert_array_equal(bits(got), bits(general[0]))
    if mask == "bool":  # a query row that sees no key gives zeros
        last = got[:, -1] if rank == 3 else got[:, :, -1]
        assert not last.any()


# ------------------------------------------------------------------------- row-tap Conv


def reference_conv(x: np.ndarray, w: np.ndarray, b: np.ndarray, attrs: dict) -> np.ndarray:
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], **attrs)
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info(n, 1, a.shape)
         for n, a in zip("xwb", (x, w, b), strict=True)],
        [helper.make_empty_tensor_value_info("y")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 22)])
    return ReferenceEvaluator(model).run(None, {"x": x, "w": w, "b": b})[0]


def conv_ctx(attrs: dict) -> _Ctx:
    base = {"strides": None, "dilations": None, "pads": None, "auto_pad": "NOTSET",
            "group": 1, "format": "NCHW"}  # fmt: skip
    return _Ctx(None, 1, **{**base, **attrs})


ROW_TAPS = [  # (x shape, weight shape, attrs): every case takes the row-tap path
    ((1, 5, 9, 7), (4, 5, 3, 3), dict(pads=[1, 1, 1, 1])),
    ((2, 3, 8, 11), (5, 3, 3, 2), dict(strides=[2, 1], pads=[1, 0, 2, 1])),
    ((1, 4, 13, 10), (6, 4, 3, 3), dict(strides=[3, 2], dilations=[2, 1], pads=[2, 1, 0, 3])),
    ((1, 4, 9, 9), (4, 2, 3, 3), dict(group=2, strides=[2, 2], pads=[1, 1, 1, 1])),
    ((2, 6, 7, 8), (6, 2, 2, 4), dict(group=3, dilations=[3, 2], pads=[0, 2, 1, 0])),
    ((1, 3, 10, 6), (2, 3, 5, 1), dict(strides=[2, 1], pads=[2, 0, 2, 0])),
    ((1, 2, 4, 5), (3, 2, 4, 4), dict(pads=[3, 3, 3, 3], strides=[3, 3])),
    ((2, 4, 17), (3, 4, 3), dict(strides=[2], pads=[1, 2])),
    ((1, 3, 12), (4, 3, 5), dict(dilations=[2], pads=[0, 4])),
]


@pytest.mark.parametrize(("xshape", "wshape", "attrs"), ROW_TAPS)
def test_row_tap_conv_matches_reference(xshape: tuple, wshape: tuple, attrs: dict) -> None:
    x = RNG.standard_normal(xshape).astype(np.float32)
    w = RNG.standard_normal(wshape).astype(np.float32)
    b = RNG.standard_normal(wshape[0]).astype(np.float32)
    ctx = conv_ctx(attrs)
    assert nn._conv_plan(ctx, x, w).rows is not None
    want = reference_conv(x, w, b, attrs)
    np.testing.assert_allclose(nn._conv(ctx, x, w, b), want, rtol=1e-5, atol=1e-5)
    x2 = RNG.standard_normal(xshape).astype(np.float32)  # the cached scratch is reused
    np.testing.assert_allclose(
        nn._conv(ctx, x2, w, b), reference_conv(x2, w, b, attrs), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize(
    ("xshape", "wshape", "attrs"),
    [
        ((1, 1, 9, 40), (8, 1, 3, 3), dict(pads=[1, 1, 1, 1])),  # few inputs: im2col
        ((1, 2, 5, 6, 4), (3, 2, 3, 3, 2), dict(pads=[1, 1, 0, 1, 1, 1])),  # 3-D
    ],
)
def test_conv_keeps_im2col_where_row_taps_do_not_pay(
    xshape: tuple, wshape: tuple, attrs: dict
) -> None:
    x = RNG.standard_normal(xshape).astype(np.float32)
    w = RNG.standard_normal(wshape).astype(np.float32)
    b = RNG.standard_normal(wshape[0]).astype(np.float32)
    ctx = conv_ctx(attrs)
    assert nn._conv_plan(ctx, x, w).rows is None
    want = reference_conv(x, w, b, attrs)
    np.testing.assert_allclose(nn._conv(ctx, x, w, b), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("xshape", "wshape", "attrs"),
    [
        ((1, 4, 9, 9), (4, 4, 3, 3), dict(pads=[1, 1, 1, 1])),  # row taps
        ((1, 1, 9, 40), (8, 1, 3, 3), dict(pads=[1, 1, 1, 1])),  # polyphase im2col
        ((1, 1, 5, 5), (8, 1, 3, 3), dict(pads=[1, 1, 1, 1], strides=[2, 2])),  # im2col
        ((1, 4, 8, 8), (6, 4, 1, 1), dict(strides=[2, 2])),  # strided 1x1
        ((2, 4, 9, 9), (4, 1, 3, 3), dict(group=4, pads=[1, 1, 1, 1])),  # depthwise
    ],
)
def test_conv_results_survive_the_next_call(xshape: tuple, wshape: tuple, attrs: dict) -> None:
    """Work buffers are reused across calls; a returned result must never be one."""
    w = RNG.standard_normal(wshape).astype(np.float32)
    b = RNG.standard_normal(wshape[0]).astype(np.float32)
    ctx = conv_ctx(attrs)
    x1, x2 = (RNG.standard_normal(xshape).astype(np.float32) for _ in range(2))
    y1 = nn._conv(ctx, x1, w, b)
    kept = y1.copy()
    y2 = nn._conv(ctx, x2, w, b)
    np.testing.assert_array_equal(y1, kept)
    np.testing.assert_allclose(y2, reference_conv(x2, w, b, attrs), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------- fused binary


@pytest.mark.parametrize(("op", "ufunc"), [("AddAct", np.add), ("DivAct", np.divide)])
@pytest.mark.parametrize("b_shape", [(3, 20000), (20000,)])
def test_binary_act_writes_into_a_donated_input(
    op: str, ufunc: Any, b_shape: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dead intermediate A is overwritten in place, with the unfused kernels' bits."""
    from converter.executor.runtime import Runtime
    from ir.dtypes import DataType

    seen: list[bool] = []
    real = fused._overwritable
    monkeypatch.setattr(fused, "_overwritable", lambda *a: seen.append(real(*a)) or seen[-1])
    graph = ir.Graph()
    x = ir.Value("x", DataType.FLOAT, (3, 20000))
    c = ir.Value("c", DataType.FLOAT, b_shape)
    graph.inputs = [x, c]
    neg = graph.append(ir.Node("Neg", [x], 1, {}))
    act = {"activation": "Clip", "activation_params": [-0.5, 0.75]}
    node = graph.append(ir.Node(op, [neg.outputs[0], c], 1, act))
    graph.outputs = list(node.outputs)
    xa = specials(3 * 20000).reshape(3, 20000)
    ca = specials(math.prod(b_shape)).reshape(b_shape) + np.float32(0.5)
    got = Runtime(graph).run({"x": xa, "c": ca})[node.outputs[0].name]
    assert seen == [True]
    with np.errstate(all="ignore"):
        want = np.minimum(np.maximum(ufunc(-xa, ca), np.float32(-0.5)), np.float32(0.75))
    np.testing.assert_array_equal(bits(got), bits(want))


def test_gelu_overwrites_a_donated_input_with_the_same_bits() -> None:
    from converter.executor.runtime import Runtime
    from ir.dtypes import DataType

    graph = ir.Graph()
    x = ir.Value("x", DataType.FLOAT, (2, vector.CHUNK + 5))
    graph.inputs = [x]
    neg = graph.append(ir.Node("Neg", [x], 1, {}))
    gelu = graph.append(ir.Node("Gelu", [neg.outputs[0]], 1, {}))
    graph.outputs = list(gelu.outputs)
    xa = specials(2 * (vector.CHUNK + 5)).reshape(2, -1)
    rt = Runtime(graph)
    assert rt._plan(graph).steps[1].donate, "the Neg result should be donated to Gelu"
    got = rt.run({"x": xa})[gelu.outputs[0].name]
    with np.errstate(all="ignore"):
        want = 0.5 * -xa * (1 + plain_erf(-xa * (1 / math.sqrt(2))))
    np.testing.assert_array_equal(bits(got), bits(want))


# ------------------------------------------------------------------------- scratch pool


def test_scratch_pool_reuses_per_key_and_thread_within_its_limit() -> None:
    import threading

    from converter.executor.registry import ScratchPool

    pool = ScratchPool(limit=3 * 4000)
    a = pool.get("a", (1000,), np.float32, 0)
    a[:10] = 5
    assert pool.get("a", (1000,), np.float32, 0) is a  # same key: the same buffer back
    d = pool.get("a", (500,), np.float64)  # another shape, dtype or fill: another buffer
    b = pool.get("b", (1000,), np.float32)
    assert pool.get("a", (1000,), np.float32, 0) is a
    pool.get("c", (1000,), np.float32)  # over the limit: d, least recently used, goes
    assert pool.get("a", (1000,), np.float32, 0) is a and a[0] == 5
    assert pool.get("b", (1000,), np.float32) is b
    assert pool.get("a", (500,), np.float64) is not d
    other: list[np.ndarray] = []
    t = threading.Thread(target=lambda: other.append(pool.get("a", (1000,), np.float32, 0)))
    t.start()
    t.join()
    assert other[0] is not a and not other[0].any()  # a thread of its own, filled fresh
