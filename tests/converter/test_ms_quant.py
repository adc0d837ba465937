"""Weight-quantized tensors in the .ms: codes stored (raw, bit-packed, entropy coded), read back."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from converter.cli import main
from converter.executor.runtime import Runtime
from converter.ms import MsFormatError, codec, read_ms, write_ms
from converter.ms.codec import (
    ans_decode,
    ans_encode,
    code_dtype,
    decode_codes,
    encode_codes,
    entropy_bound_bytes,
    lcz_decode,
    lcz_encode,
    pack_bits,
    unpack_bits,
)
from converter.ms.fbs import Decoder
from ir import DataType, Graph, Node, QuantParams, Value
from passes.quant.weight import quantize_tensor, quantize_weights

MIXED = {"init_scale": 0.02, "auto_tune": False, "use_cv_data": False, "max_iterations": 8}


def _graph(w: np.ndarray, axis: int | None, bits: int, *, encode: bool, **opts) -> Graph:
    """x @ W with W quantized to ``bits`` (codes kept as the pass keeps them)."""
    g = Graph(name="q")
    x = Value("x", DataType.FLOAT, (2, w.shape[0]))
    wv = Value("W", const=w)
    q = quantize_tensor(w, axis, bits, **opts)
    wv.const = q.dequant
    wv.quant = QuantParams(q.scale, q.zero_point, axis, bits)
    wv.meta.update(quant_codes=q.codes, quant_encode=encode)
    if q.clusters is not None:
        wv.meta["quant_clusters"] = q.clusters
    y = Value("y")
    g.inputs = [x]
    g.append(Node("MatMul", [x, wv], [y], name="mm"))
    g.outputs = [y]
    return g


def _tensor_table(path: Path, name: str) -> dict:
    dec = Decoder(path.read_bytes())
    mg = dec.table(dec.root(), "MetaGraph")
    return next(t for t in mg["allTensors"] if t["name"] == name)


def _weights(path: Path) -> Value:
    return next(v for v in read_ms(path).values() if v.name == "W")


@pytest.mark.parametrize("bits", range(1, 17))
@pytest.mark.parametrize("encode", [False, True])
def test_codes_round_trip_exactly_at_every_width(tmp_path: Path, bits: int, encode: bool):
    w = np.random.default_rng(bits).standard_normal((64, 48)).astype(np.float32)
    g = _graph(w, 1, bits, encode=encode, symmetric=bits % 2 == 0)
    write_ms(g, tmp_path / "m.ms")
    back = _weights(tmp_path / "m.ms")
    src = g.nodes[0].inputs[1]
    assert back.dtype == DataType.FLOAT and back.quant.num_bits == bits and back.quant.axis == 1
    assert np.array_equal(back.meta["quant_codes"], src.meta["quant_codes"])
    assert back.meta["quant_codes"].dtype == src.meta["quant_codes"].dtype
    assert np.array_equal(back.const, src.const)  # bit-identical dequantized floats
    assert np.array_equal(back.quant.zero_point, src.quant.zero_point)
    t = _tensor_table(tmp_path / "m.ms", "W")
    assert t["dataType"] == (32 if bits <= 8 else 33)  # kNumberTypeInt8 / Int16
    assert len(t["quantParams"]) == 48 and t["quantParams"][0]["numBits"] == bits
    if bits in (8, 16):  # raw codes load without decoding: never entropy coded
        assert t["weightQuantCompressType"] == 0
    else:
        assert t["weightQuantCompressType"] in ((4, 3) if encode else (4,))  # BITPACKING / FSE
    if not encode:
        assert t["data"].length == (w.size * bits + 7) // 8
    assert back.meta["ms_stored_bytes"] == t["data"].length
    # and a second write of what was read stores the same codes
    write_ms(read_ms(tmp_path / "m.ms"), tmp_path / "again.ms")
    assert np.array_equal(
        _weights(tmp_path / "again.ms").meta["quant_codes"], src.meta["quant_codes"]
    )


def test_kmeans_codebook_is_stored_in_quant_clusters(tmp_path: Path):
    w = np.random.default_rng(0).standard_normal((32, 40)).astype(np.float32)
    g = _graph(w, 1, 3, encode=True, kmeans=True)
    write_ms(g, tmp_path / "k.ms")
    t = _tensor_table(tmp_path / "k.ms", "W")
    clusters = g.nodes[0].inputs[1].meta["quant_clusters"]
    assert np.array_equal(np.asarray(t["quantClusters"], np.float32), clusters)
    back = _weights(tmp_path / "k.ms")
    assert np.array_equal(back.const, g.nodes[0].inputs[1].const)
    assert np.array_equal(back.meta["quant_clusters"], clusters)


def test_bit_packing_is_lsb_first_offset_binary():
    codes = np.array([-4, 3, 0, -1, 1], np.int8)  # 3 bits: unsigned 0, 7, 4, 3, 5
    packed = pack_bits(codes, 3)
    stream = 0 | 7 << 3 | 4 << 6 | 3 << 9 | 5 << 12
    assert packed.tobytes() == stream.to_bytes(2, "little")
    assert np.array_equal(unpack_bits(packed, 3, 5), codes)
    assert pack_bits(np.array([-8, 7], np.int8), 4).tobytes() == bytes([0xF0])


# -- entropy coding (LCZ1; LCA1 still read) -------------------------------------------------------
FORM_DENSE, FORM_MASK, FORM_DIRECT, FORM_SPARSE, FORM_PARAM, FORM_CLASSES = range(6)  # byte 4


def _gaussian(rng: np.random.Generator, n: int, bits: int, sigma: float) -> np.ndarray:
    """Rounded normal codes clipped to the ``bits`` range (sigma in codes)."""
    half = 1 << (bits - 1)
    return np.clip(np.round(rng.standard_normal(n) * sigma), -half, half - 1).astype(
        code_dtype(bits)
    )


def _sparse(rng: np.random.Generator, n: int, bits: int, p: float) -> np.ndarray:
    """Mostly zeros; a fraction ``p`` are the two extreme codes or +1."""
    half = 1 << (bits - 1)
    others = rng.choice([-half, half - 1, 1 % half], n)
    return np.where(rng.random(n) < p, others, 0).astype(code_dtype(bits))


def _decodes_to(payload: bytes | np.ndarray, bits: int, codes: np.ndarray) -> bool:
    back = lcz_decode(payload, bits, codes.size)
    return back.dtype == code_dtype(bits) and np.array_equal(back, codes.reshape(-1))


@pytest.mark.parametrize("bits", range(1, 17))
def test_every_lcz_form_round_trips_at_every_width(bits: int):
    rng = np.random.default_rng(bits)
    half = 1 << (bits - 1)
    dtype = code_dtype(bits)
    uniform = rng.integers(-half, half, 2000).astype(dtype)  # rANS code by code (from 2 bits)
    sparse = _sparse(rng, 20_000, bits, 0.02)  # rANS of the gaps between non-zero codes
    edges = rng.choice([-half, half - 1], 777).astype(dtype)
    gaussian = _gaussian(rng, 3000, bits, max(half / 3, 0.6))
    seen = set()
    for codes in (uniform, sparse, edges, gaussian):
        forms = codec._forms(codes, bits, max_ans_symbols=1 << 40, every=True)
        escaped = [f for f in forms[2:] if f[4] == FORM_DENSE]  # the escaped layout, if any
        assert all(f[5] == 3 for f in escaped) and len(escaped) <= 1
        forms = [f for f in forms if f not in escaped]
        assert [f[4] for f in forms[:2]] == [FORM_DENSE, FORM_MASK] and forms[3][4] == FORM_PARAM
        span = int(codes.max()) - int(codes.min())
        assert [f[4] for f in forms[4:]] == ([FORM_CLASSES] if 1 <= span < 256 else [])
        seen.update(f[4] for f in forms)
        for payload in forms:
            assert payload[:4] == b"LCZ1" and _decodes_to(payload, bits, codes), payload[4]
        best = lcz_encode(codes, bits)
        assert best.size <= len(forms[0]) and _decodes_to(best, bits, codes)
    expected = {FORM_DENSE, FORM_MASK, FORM_SPARSE, FORM_PARAM}
    expected |= {FORM_CLASSES} if bits <= 8 else set()  # 9 bits up: these span 256 codes or more
    assert seen == expected | ({FORM_DIRECT} if bits > 1 else set())


@pytest.mark.parametrize("bits", [1, 3, 8, 9, 16])
def test_empty_and_single_symbol_tensors(bits: int):
    half = 1 << (bits - 1)
    empty = np.zeros(0, code_dtype(bits))
    assert _decodes_to(lcz_encode(empty, bits), bits, empty)
    for value in (-half, half - 1):
        for n in (1, 5000):
            const = np.full(n, value, code_dtype(bits))
            payload = lcz_encode(const, bits)  # magic, form, table; no coded words
            assert (
                payload[4] == FORM_DIRECT
                and payload.size <= 12
                and _decodes_to(payload, bits, const)
            )
    payload, kind = encode_codes(np.zeros(1000, np.int8), 4, entropy=True)
    assert kind == "FSE" and payload.size < 12
    tiny = np.array([1, -2, 3], np.int8)
    payload, kind = encode_codes(tiny, 4, entropy=True)
    assert kind == "BITPACKING" and payload.size == 2


@pytest.mark.parametrize(
    ("bits", "codes"),
    [
        (4, lambda rng: _gaussian(rng, 300_000, 4, 2.0)),
        (6, lambda rng: _gaussian(rng, 300_000, 6, 6.0)),
        (3, lambda rng: _gaussian(rng, 200_000, 3, 0.7)),  # skewed: 60% one code
        (12, lambda rng: _gaussian(rng, 200_000, 12, 200.0)),
        (2, lambda rng: _sparse(rng, 150_000, 2, 0.02)),
        (2, lambda rng: _sparse(rng, 3000, 2, 0.05)),  # small and sparse
        (5, lambda rng: _sparse(rng, 100_000, 5, 0.3)),
        (7, lambda rng: _gaussian(rng, 1500, 7, 4.0)),  # small, many symbols
    ],
)
def test_entropy_coded_size_is_within_3_percent_of_the_bound(bits: int, codes):
    codes = codes(np.random.default_rng(bits))
    bound = entropy_bound_bytes(codes)
    payload, kind = encode_codes(codes, bits, entropy=True)
    assert kind == "FSE" and bound < payload.size <= 1.03 * bound + 24, (payload.size, bound)
    assert np.array_equal(decode_codes(payload, 3, bits, codes.size, code_dtype(bits)), codes)


def test_ans_is_used_only_where_it_needs_few_symbols():
    """rANS decodes at 10-30 ns a symbol: a large tensor with many non-zero codes gets zstd
    (within a few percent of the bound) even where rANS would be smaller."""
    rng = np.random.default_rng(7)
    codes = _sparse(rng, 200_000, 6, 0.3)
    coded = lcz_encode(codes, 6)
    assert coded[4] in (FORM_DENSE, FORM_MASK) and coded.size <= 1.03 * entropy_bound_bytes(codes)
    unlimited = lcz_encode(codes, 6, max_ans_symbols=1 << 40)
    assert unlimited[4] in (FORM_SPARSE, FORM_PARAM) and unlimited.size < coded.size
    sparse = _sparse(rng, 200_000, 6, 0.01)  # 2% of the codes as rANS symbols
    assert lcz_encode(sparse, 6)[4] == FORM_SPARSE
    assert lcz_encode(sparse, 6, max_ans_symbols=0)[4] in (FORM_DENSE, FORM_MASK)


def _t_codes(rng: np.random.Generator, n: int, bits: int) -> np.ndarray:
    """Heavy-tailed codes of ~1.1 bits of entropy over ~25 values (GPTQ's at 5 bits): zstd's
    layout ranks them a byte each, Huffman spends a bit on each non-zero one, about 11% lost."""
    half = 1 << (bits - 1)
    codes = np.clip(np.round(rng.standard_t(4, n) * 0.35), -half, half - 1).astype(np.int8)
    codes[:8] = np.arange(half - 8, half)  # over 17 distinct codes besides 0: a byte each
    return codes


def test_pooled_ans_spends_the_models_allowance_where_zstd_loses_most():
    rng = np.random.default_rng(3)
    lossy = _t_codes(rng, 150_000, 5)
    dense = [_gaussian(rng, 150_000, 4, 3.0) for _ in range(3)]  # zstd within ~1%: lenders
    items = [(c, b, lcz_encode(c, b)) for c, b in [(lossy, 5), *((d, 4) for d in dense)]]
    assert items[0][2][4] in (FORM_DENSE, FORM_MASK)
    assert items[0][2].size > 1.08 * entropy_bound_bytes(lossy)
    new = codec.pooled_ans(items)
    assert list(new) == [0]  # only the lossy tensor, and it fits the pool (600K / 4 codes)
    assert new[0][4] in (FORM_DIRECT, FORM_PARAM) and _decodes_to(new[0], 5, lossy)
    assert new[0].size < 1.01 * entropy_bound_bytes(lossy) + 40
    # alone, it lends 150K / 4 symbols: too few for a 150K-symbol form
    assert codec.pooled_ans(items[:1]) == {}


def test_writer_pools_rans_and_the_file_round_trips(tmp_path: Path):
    rng = np.random.default_rng(4)
    tensors = {"lossy": (_t_codes(rng, 150_000, 5), 5)}
    tensors |= {f"d{i}": (_gaussian(rng, 150_000, 4, 3.0), 4) for i in range(3)}
    g = Graph(name="pool")
    x = Value("x", DataType.FLOAT, (1, 1500))
    g.inputs = [x]
    for name, (codes, bits) in tensors.items():
        w = Value(name, const=codes.reshape(1500, 100).astype(np.float32) * np.float32(0.01))
        w.quant = QuantParams(np.array([0.01], np.float32), np.array([0], np.int32), None, bits)
        w.meta["quant_codes"] = codes.reshape(1500, 100)
        y = Value(f"{name}_y")
        g.append(Node("MatMul", [x, w], [y], name=f"mm_{name}"))
        g.outputs.append(y)
    path = tmp_path / "m.ms"
    write_ms(g, path)
    back = {v.name: v for v in read_ms(path).values()}
    lossy = back["lossy"]
    assert lossy.meta["ms_compression"] == "FSE"
    assert np.array_equal(lossy.meta["quant_codes"].reshape(-1), tensors["lossy"][0])
    assert lossy.meta["ms_stored_bytes"] < 1.01 * entropy_bound_bytes(tensors["lossy"][0]) + 40
    feed = {"x": rng.standard_normal((1, 1500)).astype(np.float32)}
    got = Runtime(read_ms(path)).run(feed)
    want = feed["x"] @ (tensors["lossy"][0].reshape(1500, 100).astype(np.float32) * 0.01)
    np.testing.assert_allclose(got["lossy_y"], want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("form", range(6))
def test_malformed_lcz_payloads_raise_value_error(form: int):
    rng = np.random.default_rng(form)
    dense = form in (FORM_DIRECT, FORM_PARAM, FORM_CLASSES)
    codes = _gaussian(rng, 500, 5, 3.0) if dense else _sparse(rng, 5000, 5, 0.05)
    payload = next(f for f in codec._forms(codes, 5, 1 << 40, every=True) if f[4] == form)
    assert _decodes_to(payload, 5, codes)
    broken = [
        payload + b"\0",  # trailing byte
        payload[:5],  # header only
        b"LCZ2" + payload[4:],  # unknown magic
        payload[:4] + b"\x09" + payload[5:],  # unknown form
    ]
    for bad in broken:
        with pytest.raises(ValueError):
            lcz_decode(bad, 5, codes.size)
    if form == FORM_CLASSES:  # a range coder reads zeros past the end, and has no check
        assert not _decodes_or_raises(payload[:-1], 5, codes)
        return
    with pytest.raises(ValueError):
        lcz_decode(payload[:-1], 5, codes.size)  # truncated
    with pytest.raises(ValueError):
        lcz_decode(payload, 5, codes.size + 1)  # a count the payload does not hold
    if form in (FORM_DENSE, FORM_MASK):  # zstd's checksum catches a flipped bit
        bad = bytearray(payload)
        bad[len(bad) // 2] ^= 0x10
        with pytest.raises(ValueError):
            lcz_decode(bytes(bad), 5, codes.size)


def _decodes_or_raises(payload: bytes, bits: int, codes: np.ndarray) -> bool:
    """Whether ``payload`` decodes to ``codes`` (False where it raises ValueError)."""
    try:
        return _decodes_to(payload, bits, codes)
    except ValueError:
        return False


def _laplace(rng: np.random.Generator, n: int, bits: int, scale: float) -> np.ndarray:
    half = 1 << (bits - 1)
    return np.clip(np.round(rng.laplace(0, scale, n)), -half, half - 1).astype(code_dtype(bits))


def _param_payload(codes: np.ndarray, bits: int) -> bytes:
    forms = codec._forms(codes, bits, max_ans_symbols=1 << 40)
    return next(f for f in forms if f[4] == FORM_PARAM)


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 8, 9, 12, 16])
def test_parametric_form_round_trips(bits: int):
    """Form 4 (rANS under a fitted shape) decodes exactly for every size and distribution."""
    rng = np.random.default_rng(100 + bits)
    half = 1 << (bits - 1)
    dtype = code_dtype(bits)
    for n in (2, 7, 3000):
        spread = max(half / 6, 0.7)
        near_constant = np.where(rng.random(n) < 0.98, 1, rng.integers(-half, half, n))
        near_constant[:2] = [1, -half]  # two codes occur even when n is 2
        cases = {
            "gaussian": _gaussian(rng, n, bits, spread),
            "laplace": _laplace(rng, n, bits, spread),
            "uniform": rng.integers(-half, half, n).astype(dtype),
            "near constant": near_constant.astype(dtype),
            "edges": rng.choice([-half, half - 1], n).astype(dtype),
        }
        for name, codes in cases.items():
            if np.unique(codes).size < 2:
                continue
            payload = _param_payload(codes, bits)
            assert _decodes_to(payload, bits, codes), (name, n)
    one = np.array([half - 1], dtype)  # one code: no range to model, form 2 without words
    assert all(f[4] != FORM_PARAM for f in codec._forms(one, bits, 1 << 40, every=True))
    assert _decodes_to(lcz_encode(one, bits), bits, one)


def _per_channel_codes(rng: np.random.Generator, shape: tuple[int, int], bits: int) -> np.ndarray:
    """Symmetric per-channel codes of Gaussian weights: each channel's extreme is +-max."""
    w = rng.standard_normal(shape)
    hi = (1 << (bits - 1)) - 1
    return np.round(w / np.abs(w).max(axis=1, keepdims=True) * hi).astype(code_dtype(bits))


@pytest.mark.parametrize(("bits", "shape", "gain"), [(8, (32, 25), 40), (5, (88, 25), 12)])
def test_parametric_form_beats_the_count_table_on_small_tensors(bits, shape, gain):
    """A small tensor with many distinct codes: the count table is most of the excess over
    the bound; the shape model (with explicit counts at the per-channel extremes) is not."""
    codes = _per_channel_codes(np.random.default_rng(bits), shape, bits)
    bound = entropy_bound_bytes(codes)
    table = next(f for f in codec._forms(codes, bits, 1 << 40) if f[4] == FORM_DIRECT)
    best = lcz_encode(codes, bits)
    assert best[4] == FORM_PARAM and best.size + gain <= len(table), (best.size, len(table))
    assert best.size <= bound + 0.06 * bound + 10 and _decodes_to(best, bits, codes)
    model, _ = codec._read_param_model(best, bits, codes.size)
    hist = np.bincount(codes.reshape(-1).astype(np.int64) + (1 << (bits - 1)) - model.lo)
    assert model.spikes.size >= 2 and {0, model.span} <= set(model.spikes.tolist())
    assert np.array_equal(model.counts, hist[model.spikes])
    assert lcz_encode(codes, bits, max_ans_symbols=codes.size - 1)[4] == FORM_DENSE  # budget


def _spec_weights(model, n: int) -> list[float]:
    """docs/format.md's recipe for form 4's weights in plain Python floats (IEEE double,
    correctly rounded sqrt), as a decoder in another language would compute them."""
    f = []
    for x in range(model.span + 1):
        z = (x - model.loc / 64) / model.scale
        u = math.sqrt(math.sqrt(z * z + 1.0))
        w = 1.0
        for bit in range(8):
            if model.power >> bit & 1:
                w = w * u
            u = u * u  # Python floats overflow to inf, as IEEE does
        f.append(1.0 / w)
    explicit = dict(zip(model.spikes.tolist(), model.counts.tolist(), strict=True))
    total = 0.0
    for x, v in enumerate(f):
        if x not in explicit:
            total += v
    rest = float(n - sum(explicit.values()))
    return [0.0] + [  # symbol 0: no code (what an empty coder decodes)
        float(explicit[x] * total if total > 0 else explicit[x]) if x in explicit else v * rest
        for x, v in enumerate(f)
    ]


def test_parametric_model_weights_follow_the_documented_recipe_bit_for_bit():
    """A decoder elsewhere must rebuild form 4's Categorical exactly: the weights equal the
    recipe computed in plain Python floats, and a payload of this version still decodes."""
    models = [  # lo, span, power, scale (a float16 value), loc (1/64), spikes, counts
        (3, 9, 7, 0.7998046875, 301, [0, 7], [2, 1]),
        (0, 255, 255, 47.125, 8131, [0, 1, 255], [9, 1, 30]),
        (100, 3000, 1, 0.0001, 64, [], []),  # far tails overflow to f = 0
        (5, 40, 200, 0.5, 0, [], []),
        (0, 3, 4, 2.0, 100, [0, 1, 2, 3], [1, 2, 3, 4]),  # every position explicit: F = 0
    ]
    for lo, span, power, scale, loc, spikes, counts in models:
        model = codec._ParamModel(
            lo,
            span,
            power,
            float(np.float16(scale)),
            loc,
            np.array(spikes, np.int64),
            np.array(counts, np.int64),
        )
        weights = np.concatenate([[0.0], model.weights(5000)])
        assert weights.tolist() == _spec_weights(model, 5000), (span, power)
    golden = bytes.fromhex("4c435a3104040903ca368c020026d6f17e096e8a80f17ae003")
    codes = [0, 1, -1, 0, 0, 2, -3, 0, 1, 0, 0, -1, 3, 0, 0, 0, -4, 1, 0, 0, 2, -2, 1, 0, -1]
    codes = np.array(codes + [0, 0, 1, 0, 5], np.int8)
    assert _decodes_to(golden, 4, codes)


def test_malformed_parametric_payloads_raise_value_error():
    rng = np.random.default_rng(3)
    codes = _per_channel_codes(rng, (64, 50), 6)
    payload = _param_payload(codes, 6)
    assert _decodes_to(payload, 6, codes)
    model, end = codec._read_param_model(np.frombuffer(payload, np.uint8), 6, codes.size)
    assert model.spikes.size  # the counts below are forged
    words = payload[end:]

    def forged(**change) -> bytes:
        fields = {f: getattr(model, f) for f in model.__dataclass_fields__} | change
        return b"LCZ1\x04" + codec._ParamModel(**fields).header() + words

    assert forged() == payload
    bad = [
        forged(power=0),
        forged(scale=0.0),
        forged(scale=-1.0),
        forged(scale=float("inf")),
        forged(scale=float("nan")),
        forged(span=0),
        forged(span=64 - model.lo),  # beyond 6 bits
        forged(loc=model.span * 64 + 1),
        forged(spikes=np.array([model.span + 1]), counts=np.array([1])),
        forged(counts=model.counts + codes.size),  # more than n codes
        forged(counts=model.counts * 0),
        forged(counts=model.counts + 1),  # the codes do not have these counts
        payload[:-4],  # a word short
        payload[:12],
    ]
    for b in bad:
        with pytest.raises(ValueError):
            lcz_decode(b, 6, codes.size)
    with pytest.raises(ValueError):
        lcz_decode(payload, 5, codes.size)  # codes beyond 5 bits
    raw = np.frombuffer(payload, np.uint8)
    for _ in range(300):  # any flipped bit: ValueError or codes of the right shape
        flipped = raw.copy()
        flipped[rng.integers(5, raw.size)] ^= np.uint8(1 << rng.integers(0, 8))
        try:
            back = lcz_decode(flipped, 6, codes.size)
        except ValueError:
            continue
        assert back.shape == codes.reshape(-1).shape and back.dtype == np.int8


def test_old_forms_decode_and_are_written_as_before():
    """Payloads of forms 0-3 as the version before form 4 wrote them (same bytes now)."""
    codes = np.zeros(300, np.int8)
    codes[[5, 77, 78, 200]] = [1, -2, 1, 3]
    old = {  # codec._forms(codes, 3, 1 << 40, every=True) before form 4 existed
        FORM_DENSE: "4c435a31000102052d28b52ffd244b850000385559556155575503100035be31320408c9066e",
        FORM_SPARSE: "4c435a310302052d010102010804661611b9f7244501",
    }
    for form, hexed in old.items():
        assert _decodes_to(bytes.fromhex(hexed), 3, codes), form
    written = {f[4]: f.hex() for f in codec._forms(codes, 3, 1 << 40, every=True)}
    assert written[FORM_SPARSE] == old[FORM_SPARSE]
    direct = "4c435a31020409ff020401010103050201013ee1ef2d291a764b91ba3b02"
    small = np.array([0, 1, -1, 0, 0, 2, -3, 0, 1, 0, 0, -1, 3, 0, 0, 0, -4, 1, 0, 0], np.int8)
    small = np.concatenate([small, np.array([2, -2, 1, 0, -1, 0, 0, 1, 0, 5], np.int8)])
    assert _decodes_to(bytes.fromhex(direct), 4, small)
    assert {f[4]: f.hex() for f in codec._forms(small, 4, 1 << 40)}[FORM_DIRECT] == direct


def test_lca1_payloads_of_the_previous_version_still_decode():
    codes = np.array([0, 1, -1, 0, 0, 2, -3, 0, 1, 0, 0, -1, 3, 0, 0, 0, -4, 1, 0, 0], np.int8)
    old = bytes.fromhex(  # ans_encode(codes, 3) as the previous version wrote it
        "4c4341311400000003000000000010000100000008000000fb0101020b03010102000000be9d816ff8af6164"
    )
    assert ans_encode(codes, 3).tobytes() == old
    assert np.array_equal(decode_codes(old, 3, 3, codes.size, np.dtype(np.int8)), codes)
    rng = np.random.default_rng(0)
    for bits, codes in ((4, _gaussian(rng, 50_000, 4, 2.0)), (12, _gaussian(rng, 9000, 12, 99.0))):
        coded = ans_encode(codes, bits)
        back = decode_codes(coded, 3, bits, codes.size, code_dtype(bits))
        assert np.array_equal(back, codes) and np.array_equal(
            ans_decode(coded, bits, codes.size), codes
        )
    with pytest.raises(ValueError):
        decode_codes(b"FSE?" + old[4:], 3, 3, codes.size, np.dtype(np.int8))


def test_corrupt_entropy_payload_is_a_format_error(tmp_path: Path):
    w = np.random.default_rng(1).standard_normal((256, 64)).astype(np.float32)
    write_ms(_graph(w, 1, 4, encode=True), tmp_path / "m.ms")
    t = _tensor_table(tmp_path / "m.ms", "W")
    assert t["weightQuantCompressType"] == 3
    data = bytearray((tmp_path / "m.ms").read_bytes())
    data[t["data"].offset + t["data"].length // 2] ^= 0x10  # zstd's checksum sees it
    (tmp_path / "bad.ms").write_bytes(bytes(data))
    with pytest.raises(MsFormatError, match="'W'"):
        read_ms(tmp_path / "bad.ms")


def test_stale_codes_are_dropped_and_floats_written(tmp_path: Path, caplog):
    w = np.random.default_rng(2).standard_normal((32, 32)).astype(np.float32)
    g = _graph(w, 1, 4, encode=True)
    wv = g.nodes[0].inputs[1]
    wv.const = wv.const * 2  # a pass changed the floats after quantization
    write_ms(g, tmp_path / "m.ms")
    t = _tensor_table(tmp_path / "m.ms", "W")
    assert t["dataType"] == 43 and t["weightQuantCompressType"] == 0
    assert np.array_equal(_weights(tmp_path / "m.ms").const, wv.const)
    assert "writing floats" in caplog.text


def test_external_data_holds_the_coded_payload(tmp_path: Path):
    w = np.random.default_rng(3).standard_normal((128, 64)).astype(np.float32)
    g = _graph(w, 1, 5, encode=True)
    files = write_ms(g, tmp_path / "m.ms", external_threshold=1024)
    assert len(files) == 2
    back = _weights(tmp_path / "m.ms")
    assert np.array_equal(back.const, g.nodes[0].inputs[1].const)
    assert files[1].stat().st_size <= w.size * 5 / 8


def test_quantized_model_runs_and_netron_opens_it(tmp_path: Path):
    from test_ms_netron import netron_available, netron_decode

    w = np.random.default_rng(4).standard_normal((64, 32)).astype(np.float32)
    g = _graph(w, 1, 4, encode=True)
    write_ms(g, tmp_path / "m.ms")
    x = np.random.default_rng(5).standard_normal((2, 64)).astype(np.float32)
    back = read_ms(tmp_path / "m.ms")
    assert np.array_equal(Runtime(back).run({"x": x})["y"], Runtime(g).run({"x": x})["y"])
    dec = Decoder((tmp_path / "m.ms").read_bytes())
    node = dec.table(dec.root(), "MetaGraph")["nodes"][0]
    assert node["quantType"] == 4  # QUANT_WEIGHT
    if netron_available():
        info = netron_decode(tmp_path / "m.ms")
        tensor = next(t for t in info["tensors"] if t["name"] == "W")
        assert tensor["dataType"] == 32 and tensor["dims"] == [64, 32]


# -- end to end: convert --configFile (MindSpore spelling), inspect ------------------------------
@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory) -> Path:
    import onnx

    from benchmarks.models import resnet

    path = tmp_path_factory.mktemp("q") / "resnet.onnx"
    onnx.save(resnet(depth=14, width=16, image=32, classes=10), path)
    return path


def _cli(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def test_convert_with_mindspore_config_then_inspect(onnx_model: Path, tmp_path: Path, capsys):
    cfg = tmp_path / "quant.cfg"
    cfg.write_text(
        "[common_quant_param]\nquant_type=WEIGHT_QUANT\nbit_num=0\nmin_quant_weight_size=0\n"
        "min_quant_weight_channel=16\nenable_encode=true\n"
        "[mixed_bit_weight_quant_param]\ninit_scale=0.02\nauto_tune=false\n"
    )
    out_ms = tmp_path / "q.ms"
    code, out, err = _cli(
        ["convert", "--fmk=ONNX", f"--modelFile={onnx_model}", f"--outputFile={tmp_path / 'q'}",
         f"--configFile={cfg}", "--verify", "--cosineDistanceThreshold=0.999",
         "--report", str(tmp_path / "r.json")],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["passed"] and report["outputs"][0]["cosine"] >= 0.999
    wq = report["conversion"]["compression"]["weight_quant"]
    assert wq["quantized"] > 5 and 5 <= wq["average_bits"] <= 8
    code, out, err = _cli(["inspect", str(out_ms), "--json", "--tensors"], capsys)
    assert code == 0, err
    info = json.loads(out)
    totals = info["weight_totals"]
    assert totals["quantized"] == wq["quantized"]
    assert totals["stored_bytes"] * 4 < totals["raw_bytes"]
    coded = [c for c in info["constants"] if c["bits"] is not None]
    assert all(c["stored_bytes"] < c["raw_bytes"] / 4 for c in coded)
    assert {c["compression"] for c in coded} <= {"NONE", "BITPACKING", "FSE"}
    forms = {c["coding"] for c in coded if c["compression"] == "FSE"}  # the LCZ1 form
    assert forms and all(f.split()[0] in {"zstd", "rANS", "range"} for f in forms), forms
    assert all("coding" not in c for c in coded if c["compression"] != "FSE")
    code, out, _ = _cli(["inspect", str(out_ms), "--tensors"], capsys)
    assert "FSE (" in out and "quantized tensors" in out.splitlines()[-1]
    code, out, _ = _cli(["inspect", str(out_ms)], capsys)
    assert "compression" not in out and "quantized tensors" in out


def test_quantize_weights_8_bit_file_size(onnx_model: Path, tmp_path: Path):
    import converter

    plain = converter.convert(onnx_model, output=tmp_path / "f.ms")
    g = plain.graph
    quantize_weights(
        g,
        common={"bit_num": 8, "min_quant_weight_channel": 16, "enable_encode": False},
        mixed_bit=MIXED,
        weight={},
    )
    write_ms(g, tmp_path / "q8.ms")
    ratio = (tmp_path / "f.ms").stat().st_size / (tmp_path / "q8.ms").stat().st_size
    assert ratio > 3.0


@pytest.mark.parametrize("bits", [8, 16])
def test_8_and_16_bit_codes_are_entropy_coded_only_when_it_pays(bits):
    from converter.ms.codec import COMPRESS_TYPES, RAW_MIN_GAIN, decode_codes, encode_codes

    rng = np.random.default_rng(0)
    hi = 2 ** (bits - 1) - 1
    dtype = np.int8 if bits == 8 else np.int16
    trained = np.clip(np.round(rng.standard_normal(50_000) * hi / 8), -hi, hi).astype(dtype)
    payload, kind = encode_codes(trained, bits, entropy=True)
    assert kind == "FSE" and payload.size <= (1 - RAW_MIN_GAIN) * trained.nbytes
    back = decode_codes(payload, COMPRESS_TYPES["FSE"], bits, trained.size, np.dtype(dtype))
    assert np.array_equal(back, trained)
    noise = rng.integers(-hi - 1, hi + 1, 50_000).astype(dtype)  # incompressible: stays raw
    assert encode_codes(noise, bits, entropy=True)[1] == "NONE"
    assert encode_codes(trained, bits, entropy=False)[1] == "NONE"


def test_files_store_lcz1_without_its_magic_and_older_files_still_read(tmp_path: Path, monkeypatch):
    from converter.ms import writer

    w = np.random.default_rng(2).standard_normal((256, 64)).astype(np.float32)
    write_ms(_graph(w, 1, 4, encode=True), tmp_path / "new.ms")
    t = _tensor_table(tmp_path / "new.ms", "W")
    data = (tmp_path / "new.ms").read_bytes()
    stored = data[t["data"].offset : t["data"].offset + t["data"].length]
    codes = _weights(tmp_path / "new.ms").meta["quant_codes"]
    assert t["weightQuantCompressType"] == 3 and not stored.startswith(b"LCZ1")
    assert b"LCZ1" + stored == lcz_encode(codes, 4).tobytes()  # the same payload, 4 B less
    # a file written before: the magic kept, no lcz_magic key
    monkeypatch.setattr(writer._Writer, "_bare_lcz", lambda self: None)
    write_ms(_graph(w, 1, 4, encode=True), tmp_path / "old.ms")
    assert _tensor_table(tmp_path / "old.ms", "W")["data"].length == len(stored) + 4
    old = _weights(tmp_path / "old.ms")
    assert np.array_equal(old.meta["quant_codes"], codes)
    assert np.array_equal(old.const, _weights(tmp_path / "new.ms").const)


def _skewed(rng: np.random.Generator, n: int, bits: int, symbols: int, tail: float) -> np.ndarray:
    """``symbols`` codes around 0: a few carry most of the mass, the rest share ``tail``."""
    half = 1 << (bits - 1)
    values = np.arange(symbols) - symbols // 2
    p = np.exp(-np.abs(values) * 1.3)
    p /= p.sum()
    p = np.where(np.abs(values) > 3, tail / np.sum(np.abs(values) > 3), p * (1 - tail))
    p /= p.sum()
    return np.clip(rng.choice(values, n, p=p), -half, half - 1).astype(code_dtype(bits))


def _spec_varint(payload: bytes, pos: int) -> tuple[int, int]:
    """docs/format.md's varint (unsigned LEB128) at ``pos``, by hand: value, next position."""
    value = shift = 0
    while True:
        byte = payload[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if byte < 0x80:
            return value, pos


def _spec_escaped(payload: bytes, bits: int, n: int) -> np.ndarray:
    """docs/format.md's escaped-ranks layout decoded by hand (form 0, layout byte 3)."""
    import zstandard

    def varint(pos):
        return _spec_varint(payload, pos)

    assert payload[:4] == b"LCZ1" and payload[4] == FORM_DENSE and payload[5] == 3
    lo, pos = varint(6)
    span, pos = varint(pos)
    bitmap = payload[pos : pos + (span + 8) // 8]
    pos += (span + 8) // 8
    symbols = [lo + i for i in range(span + 1) if bitmap[i // 8] >> (i % 8) & 1]
    m = payload[pos]
    frequent = [symbols[r] for r in payload[pos + 1 : pos + 1 + m]]
    rare = [x for x in symbols if x not in frequent]
    escapes, pos = varint(pos + 1 + m)
    base, k = m + 1, 1
    while base ** (k + 1) <= 256:
        k += 1
    data = zstandard.ZstdDecompressor().decompress(payload[pos:])
    main = -(-n // k)
    assert len(data) == main + escapes
    side = iter(data[main:])
    out = []
    for byte in data[:main]:
        for j in range(k):
            digit = byte // base**j % base
            out.append(rare[next(side)] if digit == m else frequent[digit])
    return np.array(out[:n]) - (1 << (bits - 1))


@pytest.mark.parametrize(
    ("bits", "symbols", "n"), [(5, 19, 40_001), (6, 40, 9_999), (8, 30, 30_001)]
)
def test_escaped_ranks_put_two_or_more_codes_in_a_byte(bits: int, symbols: int, n: int):
    codes = _skewed(np.random.default_rng(bits), n, bits, symbols, tail=0.02)
    forms = codec._forms(codes, bits, 0)  # zstd forms only
    escaped = [f for f in forms if f[4] == FORM_DENSE and f[5] == 3]
    assert len(escaped) == 1 and _decodes_to(escaped[0], bits, codes)
    assert np.array_equal(_spec_escaped(escaped[0], bits, n), codes)
    plain = next(f for f in forms if f[4] == FORM_DENSE and f[5] != 3)
    assert len(escaped[0]) < 0.96 * len(plain)  # one code a byte loses against two or more
    assert len(escaped[0]) <= 1.05 * entropy_bound_bytes(codes) + 40
    assert len(lcz_encode(codes, bits, 0)) == min(len(f) for f in forms)
    bad = bytearray(escaped[0])
    bad[-20] ^= 0x40  # zstd's checksum or the side-stream check catches it
    with pytest.raises(ValueError):
        lcz_decode(bytes(bad), bits, n)


def _spec_classes(payload: bytes, bits: int, n: int) -> tuple[np.ndarray, int]:
    """docs/format.md's form 5 decoded by hand: the header field by field, then constriction's
    range decoder once per class. Returns the codes and the number of classes."""
    import constriction

    def varint(pos):
        return _spec_varint(payload, pos)

    assert payload[:4] == b"LCZ1" and payload[4] == FORM_CLASSES
    packed, pos = varint(5)
    lo, span = packed % (1 << bits), (packed >> bits) % (1 << bits)
    classes = (packed >> 2 * bits) + 1
    labels = [0]
    inner = 1
    if classes > 1:
        inner, pos = varint(pos)
        slices, pos = varint(pos)
        width = (classes - 1).bit_length()
        stream = int.from_bytes(payload[pos : pos + -(-slices * width // 8)], "little")
        labels = [stream >> (j * width) & ((1 << width) - 1) for j in range(slices)]
        pos += -(-slices * width // 8)
    weights = []
    for _ in range(classes):
        row = []
        for _ in range(span + 1):
            w, pos = varint(pos)
            row.append(w)
        weights.append(row)
    body = payload[pos:] + b"\0" * (-(len(payload) - pos) % 4 + 8)
    decoder = constriction.stream.queue.RangeDecoder(np.frombuffer(body, ">u4").astype(np.uint32))
    owner = [labels[(i // inner) % len(labels)] for i in range(n)]
    out = np.zeros(n, np.int64)
    for c, row in enumerate(weights):
        model = constriction.stream.model.Categorical(np.array(row, np.float64), perfect=False)
        where = [i for i in range(n) if owner[i] == c]
        out[where] = decoder.decode(model, len(where))
    return out + lo - (1 << (bits - 1)), classes


def _channel_codes(rng: np.random.Generator, shape: tuple[int, ...], bits: int, axis: int):
    """Gaussian codes whose spread differs from slice to slice along ``axis`` (per-channel
    scales leave some input channels nearly all zero codes)."""
    half = 1 << (bits - 1)
    spread = np.exp(rng.uniform(-2.5, 1.0, shape[axis]))
    spread = spread.reshape([-1 if a == axis else 1 for a in range(len(shape))])
    codes = np.round(rng.standard_normal(shape) * spread)
    return np.clip(codes, -half, half - 1).astype(code_dtype(bits))


@pytest.mark.parametrize(
    ("shape", "bits", "axis"), [((64, 50, 1, 1), 2, 1), ((48, 1, 5, 5), 4, 0), ((300, 40), 3, 1)]
)
def test_class_form_codes_below_the_order0_bound_where_slices_differ(shape, bits, axis):
    """Form 5 sorts slices into classes with their own counts: where channels differ it codes
    below the tensor's order-0 bound, and docs/format.md's description decodes it."""
    codes = _channel_codes(np.random.default_rng(sum(shape)), shape, bits, axis)
    payload = lcz_encode(codes, bits)
    assert payload[4] == FORM_CLASSES and payload.size - 4 < 0.97 * entropy_bound_bytes(codes)
    assert _decodes_to(payload, bits, codes)
    by_hand, classes = _spec_classes(payload.tobytes(), bits, codes.size)
    assert classes > 1 and np.array_equal(by_hand, codes.reshape(-1))


@pytest.mark.parametrize(("n", "bits", "p"), [(200, 2, 0.1), (3000, 2, 0.04), (800, 3, 0.2)])
def test_class_form_adds_a_few_bytes_to_the_bound_of_a_small_tensor(n: int, bits: int, p: float):
    """The small 2- and 3-bit tensors of mixed-bit models: form byte, code range and one
    byte a count, and the range coder's last word cut to the bytes it needs."""
    rng = np.random.default_rng(n)
    codes = rng.choice([-1, 0, 1], n, p=[p, 1 - 2 * p, p]).astype(np.int8)
    payload = lcz_encode(codes, bits)
    assert payload[4] == FORM_CLASSES and payload.size - 4 <= entropy_bound_bytes(codes) + 6.5
    by_hand, classes = _spec_classes(payload.tobytes(), bits, n)
    assert classes == 1 and np.array_equal(by_hand, codes) and payload[-1] != 0


def test_malformed_class_payloads_raise_value_error():
    rng = np.random.default_rng(5)
    codes = _channel_codes(rng, (40, 30), 3, 1)
    payload = lcz_encode(codes, 3).tobytes()
    assert payload[4] == FORM_CLASSES and _decodes_to(payload, 3, codes)
    packed, pos = codec._read_varint(np.frombuffer(payload, np.uint8), 5)
    lo, span, classes = packed & 7, packed >> 3 & 7, (packed >> 6) + 1
    assert classes > 1

    def head(lo: int, span: int, classes: int) -> bytes:
        return payload[:5] + codec._varints(np.array([lo | span << 3 | (classes - 1) << 6]))

    inner, at = codec._read_varint(np.frombuffer(payload, np.uint8), pos)
    bad = [
        head(7, span, classes) + payload[pos:],  # codes beyond 3 bits
        head(lo, 0, classes) + payload[pos:],  # span 0
        head(lo, span, 65) + payload[pos:],  # too many classes
        payload[:pos] + codec._varints(np.array([7])) + payload[at:],  # 7 does not divide
        payload[: pos + 3],  # truncated labels
    ]
    for b in bad:
        with pytest.raises(ValueError):
            lcz_decode(b, 3, codes.size)
    with pytest.raises(ValueError):
        lcz_decode(payload, 3, codes.size + 7)  # slices that do not divide the count
    for _ in range(200):  # any flipped bit: ValueError or codes of the right shape
        flipped = bytearray(payload)
        flipped[rng.integers(5, len(payload))] ^= 1 << int(rng.integers(0, 8))
        try:
            back = lcz_decode(bytes(flipped), 3, codes.size)
        except ValueError:
            continue
        assert back.shape == (codes.size,) and back.dtype == np.int8


def test_pooled_allowance_goes_to_slice_classes_where_they_beat_zstd():
    """A large kernel whose input channels differ: zstd codes it near its order-0 bound, the
    pooled allowance lets form 5 code it below."""
    rng = np.random.default_rng(11)
    kernel = _channel_codes(rng, (384, 384), 4, 1)
    dense = [_gaussian(rng, 150_000, 4, 3.0) for _ in range(3)]
    items = [(c, 4, lcz_encode(c, 4)) for c in (kernel, *dense)]
    assert items[0][2][4] in (FORM_DENSE, FORM_MASK)
    new = codec.pooled_ans(items)
    assert list(new) == [0] and new[0][4] == FORM_CLASSES and _decodes_to(new[0], 4, kernel)
    assert new[0].size < 0.95 * entropy_bound_bytes(kernel) < items[0][2].size
