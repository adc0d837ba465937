"""Weight-quantized tensors in the .ms: codes stored (raw, bit-packed, entropy coded), read back."""

from __future__ import annotations

import json
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
FORM_DENSE, FORM_MASK, FORM_DIRECT, FORM_SPARSE = range(4)  # LCZ1 byte 4 (docs/format.md)


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
        assert [f[4] for f in forms[:2]] == [FORM_DENSE, FORM_MASK] and len(forms) == 3
        seen.update(f[4] for f in forms)
        for payload in forms:
            assert payload[:4] == b"LCZ1" and _decodes_to(payload, bits, codes), payload[4]
        best = lcz_encode(codes, bits)
        assert best.size <= len(forms[0]) and _decodes_to(best, bits, codes)
    assert seen == {FORM_DENSE, FORM_MASK, FORM_SPARSE} | ({FORM_DIRECT} if bits > 1 else set())


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
    assert unlimited[4] == FORM_SPARSE and unlimited.size < coded.size
    sparse = _sparse(rng, 200_000, 6, 0.01)  # 2% of the codes as rANS symbols
    assert lcz_encode(sparse, 6)[4] == FORM_SPARSE
    assert lcz_encode(sparse, 6, max_ans_symbols=0)[4] in (FORM_DENSE, FORM_MASK)


@pytest.mark.parametrize("form", range(4))
def test_malformed_lcz_payloads_raise_value_error(form: int):
    rng = np.random.default_rng(form)
    codes = _sparse(rng, 5000, 5, 0.05) if form != FORM_DIRECT else _gaussian(rng, 500, 5, 3.0)
    payload = next(f for f in codec._forms(codes, 5, 1 << 40, every=True) if f[4] == form)
    assert _decodes_to(payload, 5, codes)
    broken = [
        payload[:-1],  # truncated
        payload + b"\0",  # trailing byte
        payload[:5],  # header only
        b"LCZ2" + payload[4:],  # unknown magic
        payload[:4] + b"\x09" + payload[5:],  # unknown form
    ]
    for bad in broken:
        with pytest.raises(ValueError):
            lcz_decode(bad, 5, codes.size)
    with pytest.raises(ValueError):
        lcz_decode(payload, 5, codes.size + 1)  # a count the payload does not hold
    if form in (FORM_DENSE, FORM_MASK):  # zstd's checksum catches a flipped bit
        bad = bytearray(payload)
        bad[len(bad) // 2] ^= 0x10
        with pytest.raises(ValueError):
            lcz_decode(bytes(bad), 5, codes.size)


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
    code, out, _ = _cli(["inspect", str(out_ms), "--tensors"], capsys)
    assert "FSE" in out and "quantized tensors" in out.splitlines()[-1]
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
