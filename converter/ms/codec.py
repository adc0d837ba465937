"""Weight codecs of the ``.ms`` file: dequantization, bit packing and ANS entropy coding.

A weight-quantized tensor is stored as its integer codes ``q`` (signed, in
``[-2**(b-1), 2**(b-1) - 1]`` for ``b = numBits``), never as floats:

* **dequantization** (``real = scale[c] * (q - zero_point[c])`` along the
  quantization axis, or ``real = scale[c] * clusters[q + 2**(b-1)]`` when a
  k-means codebook is stored in ``Tensor.quantClusters``), computed in float32
  and cast to the tensor's float type. The quantization pass and the reader
  both call :func:`dequantize`, so the weights a model is verified with are
  bit-identical to the ones it loads.
* **bit packing** (``BITPACKING``): each code as the unsigned ``q + 2**(b-1)``
  in ``b`` bits, least significant bit first, into a little-endian bit stream
  (element i occupies stream bits ``[i*b, (i+1)*b)``, stream bit k is bit
  ``k % 8`` of byte ``k // 8``); the last byte is zero-padded. This is the bit
  order of MindSpore Lite's weight decoder (``UnPackToInt``).
* **ANS coding** (liteconv's layout in the ``FSE`` slot, magic ``LCA1``): an
  order-0 model per tensor (frequency table of the symbols that occur),
  rANS-coded with ``constriction`` in chunks. The layout is in docs/format.md.
"""

from __future__ import annotations

import struct

import numpy as np

__all__ = [
    "ANS_MAGIC",
    "COMPRESS_TYPES",
    "ans_decode",
    "ans_encode",
    "decode_codes",
    "code_dtype",
    "dequantize",
    "encode_codes",
    "entropy_bound_bytes",
    "pack_bits",
    "unpack_bits",
]

ANS_MAGIC = b"LCA1"
ANS_CHUNK = 1 << 20  # symbols per independently decodable chunk
MIN_GAIN = 0.10
"""Entropy coding replaces bit-packed codes only when it saves at least this fraction:
decoding costs load time (about 25 ns per code), so a few percent are not worth it."""
_HEADER = struct.Struct("<4sIBBHIII")  # magic, n, bits, table kind, reserved, chunk, chunks, table


def code_dtype(bits: int) -> np.dtype:
    """The signed integer type holding ``bits``-bit codes (int8 up to 8 bits, else int16)."""
    if not 1 <= bits <= 16:
        raise ValueError(f"quantized weights have 1..16 bits, not {bits}")
    return np.dtype(np.int8 if bits <= 8 else np.int16)


def _offset(bits: int) -> int:
    return 1 << (bits - 1)


def _to_unsigned(codes: np.ndarray, bits: int) -> np.ndarray:
    u = codes.reshape(-1).astype(np.int64) + _offset(bits)
    if u.size and (u.min() < 0 or u.max() >= 1 << bits):
        raise ValueError(f"codes out of the {bits}-bit range")
    return u


def _to_signed(u: np.ndarray, bits: int) -> np.ndarray:
    return (u.astype(np.int32) - _offset(bits)).astype(code_dtype(bits))


# -- dequantization ----------------------------------------------------------------------
def _along(a: np.ndarray, axis: int | None, ndim: int) -> np.ndarray:
    """Per-channel parameters shaped to broadcast along ``axis`` of an ``ndim`` array."""
    a = np.asarray(a, dtype=np.float32).reshape(-1)
    if axis is None or a.size == 1:
        return a.reshape(()) if a.size == 1 else a
    shape = [1] * ndim
    shape[axis] = a.size
    return a.reshape(shape)


def dequantize(
    codes: np.ndarray,
    scale: np.ndarray,
    zero_point: np.ndarray,
    axis: int | None,
    bits: int,
    dtype: np.dtype,
    clusters: np.ndarray | None = None,
) -> np.ndarray:
    """Float weights of ``codes`` (see the module docstring); float32 math, then ``dtype``."""
    s = _along(scale, axis, codes.ndim)
    if clusters is not None:
        table = np.asarray(clusters, dtype=np.float32)
        real = table[codes.astype(np.int32) + _offset(bits)] * s
    else:
        zp = _along(zero_point, axis, codes.ndim)
        real = (codes.astype(np.float32) - zp) * s
    return real.astype(dtype, copy=False)


# -- bit packing -----------------------------------------------------------------------------
def pack_bits(codes: np.ndarray, bits: int) -> np.ndarray:
    """``codes`` as a ``bits``-wide LSB-first bit stream (uint8 array)."""
    u = _to_unsigned(codes, bits)
    if bits in (1, 2, 4, 8):
        per = 8 // bits
        pad = -u.size % per
        v = np.concatenate([u, np.zeros(pad, np.int64)]).reshape(-1, per)
        shifts = np.arange(per, dtype=np.int64) * bits
        return (v << shifts).sum(axis=1).astype(np.uint8)
    planes = ((u[:, None] >> np.arange(bits, dtype=np.int64)) & 1).astype(np.uint8)
    return np.packbits(planes.reshape(-1), bitorder="little")


def unpack_bits(buf: np.ndarray | memoryview | bytes, bits: int, count: int) -> np.ndarray:
    """The signed codes of a stream written by :func:`pack_bits`."""
    raw = np.frombuffer(buf, dtype=np.uint8)
    need = (count * bits + 7) // 8
    if raw.size != need:
        raise ValueError(f"{raw.size} bytes of packed data, expected {need} for {count} codes")
    if bits == 8:
        return _to_signed(raw, bits)
    data = np.concatenate([raw, np.zeros(3, np.uint8)])
    pos = np.arange(count, dtype=np.int64) * bits
    idx = pos >> 3
    word = data[idx].astype(np.uint32)
    word |= data[idx + 1].astype(np.uint32) << 8
    word |= data[idx + 2].astype(np.uint32) << 16
    u = (word >> (pos & 7).astype(np.uint32)) & np.uint32((1 << bits) - 1)
    return _to_signed(u, bits)


# -- entropy coding -------------------------------------------------------------------------
def entropy_bound_bytes(codes: np.ndarray) -> float:
    """Order-0 entropy of ``codes`` times their count, in bytes (the coding lower bound)."""
    _, counts = np.unique(codes, return_counts=True)
    if counts.size <= 1:
        return 0.0
    p = counts / counts.sum()
    return float(-(counts * np.log2(p)).sum() / 8)


def _varints(values: np.ndarray) -> bytes:
    """Unsigned LEB128 of each value, concatenated."""
    out = bytearray()
    for v in values.tolist():
        while True:
            byte = v & 0x7F
            v >>= 7
            out.append(byte | (0x80 if v else 0))
            if not v:
                break
    return bytes(out)


def _read_varints(raw: np.ndarray, count: int) -> tuple[np.ndarray, int]:
    """``count`` LEB128 values from the start of ``raw``; returns them and bytes used."""
    if count == 0:
        return np.zeros(0, dtype=np.int64), 0
    ends = np.flatnonzero((raw & 0x80) == 0)
    if ends.size < count:
        raise ValueError("frequency table is truncated")
    used = int(ends[count - 1]) + 1 if count else 0
    body = raw[:used].astype(np.uint64)
    group = np.zeros(used, dtype=np.int64)
    group[ends[: count - 1] + 1] = 1
    group = np.cumsum(group)
    starts = np.concatenate([[0], ends[: count - 1] + 1])
    shift = (np.arange(used) - starts[group]) * 7
    if used and shift.max() > 56:
        raise ValueError("frequency table entry is too long")
    values = np.zeros(count, dtype=np.uint64)
    np.add.at(values, group, (body & np.uint64(0x7F)) << shift.astype(np.uint64))
    return values.astype(np.int64), used


def _model(counts: np.ndarray):  # constriction.stream.model.Categorical
    import constriction  # its submodules are attributes, not importable modules

    probabilities = counts.astype(np.float64) / float(counts.sum())
    return constriction.stream.model.Categorical(probabilities, perfect=False)


def ans_encode(codes: np.ndarray, bits: int) -> np.ndarray:
    """``codes`` ANS-coded under their own order-0 model (uint8 payload, see docs/format.md)."""
    import constriction

    AnsCoder = constriction.stream.stack.AnsCoder  # noqa: N806

    u = _to_unsigned(codes, bits)
    n = u.size
    alphabet = 1 << bits
    counts = np.bincount(u, minlength=alphabet)
    present = counts > 0
    symbols = np.flatnonzero(present)
    bitmap = np.packbits(present.astype(np.uint8), bitorder="little").tobytes()
    table = bitmap + _varints(counts[symbols])
    table += b"\0" * (-len(table) % 4)
    chunks: list[np.ndarray] = []
    if symbols.size > 1:
        ranks = np.searchsorted(symbols, u).astype(np.int32)
        model = _model(counts[symbols])
        for start in range(0, n, ANS_CHUNK):
            coder = AnsCoder()
            coder.encode_reverse(ranks[start : start + ANS_CHUNK], model)
            chunks.append(np.asarray(coder.get_compressed(), dtype="<u4"))
    header = _HEADER.pack(ANS_MAGIC, n, bits, 0, 0, ANS_CHUNK, len(chunks), len(table))
    lengths = np.array([c.size for c in chunks], dtype="<u4").tobytes()
    parts = [header, table, lengths, *(c.tobytes() for c in chunks)]
    return np.frombuffer(b"".join(parts), dtype=np.uint8)


def ans_decode(buf: np.ndarray | memoryview | bytes, bits: int, count: int) -> np.ndarray:
    """The signed codes of a payload written by :func:`ans_encode` (ValueError if malformed)."""
    import constriction

    AnsCoder = constriction.stream.stack.AnsCoder  # noqa: N806

    raw = np.frombuffer(buf, dtype=np.uint8)
    if raw.size < _HEADER.size:
        raise ValueError("entropy-coded payload is shorter than its header")
    magic, n, nbits, kind, _, chunk, nchunks, table_len = _HEADER.unpack_from(
        bytes(raw[: _HEADER.size])
    )
    if magic != ANS_MAGIC or kind != 0:
        raise ValueError(f"entropy-coded payload has unknown magic {magic!r} or table kind")
    if n != count or nbits != bits or chunk == 0 or table_len % 4:
        raise ValueError(f"entropy-coded payload holds {n} {nbits}-bit codes, expected {count}")
    alphabet = 1 << bits
    pos = _HEADER.size
    bitmap_len = (alphabet + 7) // 8
    table = raw[pos : pos + table_len]
    present = np.unpackbits(table[:bitmap_len], bitorder="little")[:alphabet].astype(bool)
    symbols = np.flatnonzero(present)
    counts, _ = _read_varints(table[bitmap_len:], symbols.size)
    pos += table_len
    if symbols.size == 0:
        if n:
            raise ValueError("entropy-coded payload has an empty frequency table")
        return np.zeros(0, code_dtype(bits))
    if symbols.size == 1:
        return _to_signed(np.full(n, symbols[0], dtype=np.int64), bits)
    if nchunks != -(-n // chunk):
        raise ValueError("entropy-coded payload has the wrong number of chunks")
    lengths = raw[pos : pos + 4 * nchunks].view("<u4").astype(np.int64)
    pos += 4 * nchunks
    if pos + 4 * int(lengths.sum()) != raw.size:
        raise ValueError("entropy-coded payload length does not match its chunk table")
    words = raw[pos:].view("<u4")
    model = _model(counts)
    ranks = np.empty(n, dtype=np.int32)
    at = 0
    for i, length in enumerate(lengths.tolist()):
        m = min(chunk, n - i * chunk)
        compressed = np.ascontiguousarray(words[at : at + length], dtype=np.uint32)
        ranks[i * chunk : i * chunk + m] = AnsCoder(compressed).decode(model, m)
        at += length
    # rank -> signed code in one pass: an offset when the symbols are contiguous, else a table
    first = int(symbols[0]) - _offset(bits)
    if int(symbols[-1]) - int(symbols[0]) + 1 == symbols.size:
        ranks += first
        return ranks.astype(code_dtype(bits))
    return (symbols - _offset(bits)).astype(code_dtype(bits))[ranks]


# -- choosing a stored form ----------------------------------------------------------------
COMPRESS_TYPES = {"NONE": 0, "INDEXING": 1, "SPARSE": 2, "FSE": 3, "BITPACKING": 4}
"""Tensor.weightQuantCompressType values liteconv writes or reads (schema enum)."""


def encode_codes(codes: np.ndarray, bits: int, entropy: bool) -> tuple[np.ndarray, str]:
    """The stored form of ``codes``: (uint8 payload, compress type name).

    8- and 16-bit codes are stored raw (``NONE``, int8/int16 little-endian): they
    load with no decoding at all, and ANS decoding (about 25 ns per code) would
    make loading them several times slower. Other widths are bit-packed
    (``BITPACKING``); with ``entropy`` the ANS-coded form (``FSE``) replaces the
    packed one when it is at least :data:`MIN_GAIN` smaller.
    """
    if bits in (8, 16):
        raw = np.ascontiguousarray(codes, dtype=code_dtype(bits).newbyteorder("<"))
        return raw.reshape(-1).view(np.uint8), "NONE"
    payload = pack_bits(codes, bits)
    if entropy and codes.size:
        coded = ans_encode(codes, bits)
        if coded.size <= (1 - MIN_GAIN) * payload.size:
            return coded, "FSE"
    return payload, "BITPACKING"


def decode_codes(
    buf: np.ndarray | memoryview | bytes, kind: int, bits: int, count: int, dtype: np.dtype
) -> np.ndarray:
    """Flat codes of a stored payload; ``dtype`` is the tensor's int8/int16 type for ``NONE``."""
    if kind == COMPRESS_TYPES["NONE"]:
        raw = np.frombuffer(buf, dtype=np.uint8)
        if raw.size != count * dtype.itemsize:
            raise ValueError(f"{raw.size} bytes of codes, expected {count * dtype.itemsize}")
        return raw.view(dtype.newbyteorder("<")).astype(dtype)
    if kind == COMPRESS_TYPES["BITPACKING"]:
        return unpack_bits(buf, bits, count)
    if kind == COMPRESS_TYPES["FSE"]:
        head = bytes(np.frombuffer(buf, dtype=np.uint8)[:4])
        if head != ANS_MAGIC:
            raise ValueError("FSE-coded weights in MindSpore Lite's own layout are not supported")
        return ans_decode(buf, bits, count)
    raise ValueError(f"weightQuantCompressType {kind} is not supported")
