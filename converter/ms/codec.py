"""Weight codecs of the ``.ms`` file: dequantization, bit packing and entropy coding.

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
* **entropy coding** (liteconv's layout in the ``FSE`` slot, magic ``LCZ1``;
  docs/format.md has the bytes). Each tensor gets the smallest of these forms,
  all aiming at the tensor's order-0 entropy bound:

  - *zstd, dense*: the codes as bytes in one zstd frame (:class:`_Layout`:
    ``8 // b`` codes per byte, or the ranks of the few codes that occur as
    base-``k`` digits, or those of the most frequent ones with an escape digit
    for the rest, which follow in a side stream, or from 9 bits two byte
    planes). zstd's Huffman literal coder gets within about 1-2% of the bound
    while its byte symbols carry a few bits each, and these forms decode at
    0.3-1 ns per code up to 8 bits (escaped ranks about 4 ns, 3.5 ns from 9
    bits), where bit-unpacking takes 7-8 ns.
  - *zstd, mask*: a bit mask of the codes that differ from the most frequent
    one, then those codes, one zstd block each: Huffman cannot spend less than
    a bit on a byte, so a dominant byte value would cost it dearly.
  - *rANS, direct or sparse* (``constriction``): the codes one by one under
    their counts, or the runs of the most frequent code (a geometric model,
    which costs exactly that code's share of the bound) plus the other codes.
    Within a few bytes of the bound even for tiny or very sparse tensors, but
    10-30 ns per rANS symbol to decode, so a tensor may use them only while
    they take at most :data:`ANS_FREE_SYMBOLS` symbols or one per
    :data:`ANS_CODES_PER_SYMBOL` codes (then they still decode faster than
    bit-unpacking).
  - *rANS, parametric* (:class:`_ParamModel`): the codes one by one under a
    fitted Pearson VII shape (about ten bytes) with explicit counts for the few
    codes it misses, instead of a count table, which on a small tensor with
    many distinct codes is most of the excess over the bound (an 800-code 8-bit
    depthwise kernel of PP-OCR's classifier: 94 bytes over a 498-byte bound
    with the table, 35 with the shape). Same rANS budget.
  - *range coded, slice classes* (:class:`_ClassModel`): the codes one by one
    under the counts of their slice's class (slices along one axis, grouped by
    k-means; one class: a count table of a byte a count), with constriction's
    range coder, whose last word is cut to the bytes the codes need. Per-channel
    scales make slices differ, so classes code below the order-0 bound (PP-OCR's
    classifier's 1x1 kernels: up to 17%), and one class adds about ``k + 2`` bytes
    for ``k`` codes where forms 2 and 4 add 11-12. Same budget.

  Payloads of the previous version (rANS, magic ``LCA1``) are still read
  (:func:`ans_decode`).
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass

import numpy as np

__all__ = [
    "ANS_MAGIC",
    "COMPRESS_TYPES",
    "LCZ_MAGIC",
    "bare_lcz",
    "RAW_MIN_GAIN",
    "ans_decode",
    "ans_encode",
    "decode_codes",
    "code_dtype",
    "dequantize",
    "encode_codes",
    "entropy_bound_bytes",
    "lcz_decode",
    "lcz_encode",
    "lcz_form_name",
    "pooled_ans",
    "lcz_size_estimate",
    "pack_bits",
    "unpack_bits",
]

LCZ_MAGIC = b"LCZ1"
ANS_MAGIC = b"LCA1"  # the previous version's layout: read, and written only by ans_encode
ANS_CHUNK = 1 << 20  # LCA1: symbols per independently decodable chunk
MIN_GAIN = 0.0
"""The entropy-coded form replaces bit packing when it is smaller at all: its zstd forms
decode faster than unpacking, and the rANS forms are only used where they need few symbols."""
ANS_FREE_SYMBOLS = 16384
"""A tensor may use rANS when that takes at most this many symbols (at most ~0.4 ms; zstd's
per-frame Huffman table costs mid-size tensors 1-3%: PP-OCR's 0.5 MB classifier at 4 bits
went from 1.042x to 1.021x the order-0 bound with its load time unchanged)..."""
ANS_CODES_PER_SYMBOL = 8
"""...or at most one rANS symbol per this many codes (a few ns per code, about what
bit-unpacking costs)."""
ANS_POOL_CODES_PER_SYMBOL = 4
""":func:`pooled_ans`: a zstd-coded tensor lends the pool one rANS symbol per this many codes
(rANS decodes at 20-30 ns a symbol, bit unpacking and zstd at 1-8 ns a code)."""
ANS_POOL_MIN_LOSS = 0.02
""":func:`pooled_ans` considers a zstd-coded tensor that another form would code in at least
this share of its bytes less."""
_ANS_GAIN_FLOOR_BYTES = 24  # about what a rANS form adds to the bound (header, model, flush)
_HEADER = struct.Struct("<4sIBBHIII")  # LCA1: magic, n, bits, table kind, reserved, chunk, ...

# LCZ1 form byte
_ZSTD_DENSE, _ZSTD_MASK, _ANS_DIRECT, _ANS_SPARSE, _ANS_PARAM, _RANGE_CLASSES = range(6)
_MAX_GAP_LOG = 12  # sparse rANS: gap alphabet at most 2**12 + 1 symbols
_ZSTD_PARAMS = {
    "strategy": "STRATEGY_FAST",
    "window_log": 17,
    "hash_log": 6,
    "chain_log": 6,
    "search_log": 1,
    "min_match": 7,
    "target_length": 0,
}
"""zstd settings: a tiny hash table and 7-byte minimum matches leave almost everything to
the Huffman literal coder. Quantized codes have no repeats worth a match, and on the
benchmark models' codes level 3 came out up to 10% larger than these settings and
level 19 0.1-0.5% larger at 30-40x the encoding time. ``target_length`` 0 keeps
Huffman literals on for the fast strategy."""


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


# -- entropy coding: shared pieces ------------------------------------------------------------
def entropy_bound_bytes(codes: np.ndarray) -> float:
    """Order-0 entropy of ``codes`` times their count, in bytes (the coding lower bound)."""
    flat = np.asarray(codes).reshape(-1)
    if flat.dtype.kind in "iu" and flat.dtype.itemsize <= 2 and flat.size:  # 8x np.unique's speed
        counts = np.bincount(flat.astype(np.int64) - int(flat.min()))
        counts = counts[counts > 0]
    else:
        _, counts = np.unique(flat, return_counts=True)
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


# -- LCZ1: byte layouts --------------------------------------------------------------------------
_PACKED, _RANKS, _PLANES, _ESCAPED = range(4)  # layout byte
_ESCAPE_BASES = (16, 6, 4)
"""Digit bases the escaped layout tries (2, 3 and 4 digits a byte): ``base - 1`` frequent
codes, the last digit the escape."""


def _symbol_set(symbols: np.ndarray) -> bytes:
    """Occurring unsigned codes: lowest, span (highest - lowest), bitmap over the span."""
    lo, span = int(symbols[0]), int(symbols[-1] - symbols[0])
    present = np.zeros(span + 1, np.uint8)
    present[symbols - lo] = 1
    return _varints(np.array([lo, span])) + np.packbits(present, bitorder="little").tobytes()


def _read_symbol_set(raw: np.ndarray, pos: int, bits: int) -> tuple[np.ndarray, int]:
    lo, pos = _read_varint(raw, pos)
    span, pos = _read_varint(raw, pos)
    if lo + span >= 1 << bits:
        raise ValueError(f"entropy-coded payload has symbols beyond {bits} bits")
    end = pos + (span + 8) // 8
    present = np.unpackbits(raw[pos:end], bitorder="little")[: span + 1]
    if present.size != span + 1 or present[0] == 0 or present[-1] == 0:
        raise ValueError("entropy-coded payload has a malformed symbol bitmap")
    return np.flatnonzero(present) + lo, end


def _rank_digits(alphabet: int) -> int:
    """How many base-``alphabet`` digits fit in a byte."""
    k = 1
    while alphabet ** (k + 1) <= 256:
        k += 1
    return k


@dataclass(frozen=True)
class _Layout:
    """How a run of unsigned codes becomes the bytes zstd compresses (docs/format.md).

    ``_PACKED`` (up to 8 bits): ``8 // bits`` codes per byte, the first in the low
    bits (for 1, 2 and 4 bits the bytes of :func:`pack_bits`). ``_RANKS`` (at most
    256 distinct codes, fewer than packing assumes): each code's rank among
    ``symbols``, as many base-``len(symbols)`` digits per byte as fit, the first the
    least significant. ``_PLANES`` (9 bits and more): ``d = u - center`` wrapped to
    ``[-2**(b-1), 2**(b-1))``, zigzagged (``2d``, ``-2d - 1``) to ``v``, then a plane of
    ``v``'s ``low`` low bits and a plane of the rest, one byte per code each. Huffman
    codes bytes, so each layout puts as much of a code's information in a byte
    symbol as fits without mixing unrelated parts.
    """

    kind: int
    symbols: np.ndarray | None = None
    low: int = 8
    center: int = 0
    frequent: np.ndarray | None = None  # _ESCAPED: ranks of the frequent symbols, ascending
    escapes: int = 0  # _ESCAPED: codes in the side stream

    def header(self) -> bytes:
        if self.kind == _RANKS:
            assert self.symbols is not None
            return bytes([_RANKS]) + _symbol_set(self.symbols)
        if self.kind == _ESCAPED:
            assert self.symbols is not None and self.frequent is not None
            return (bytes([_ESCAPED]) + _symbol_set(self.symbols) + bytes([self.frequent.size])
                    + self.frequent.astype(np.uint8).tobytes()
                    + _varints(np.array([self.escapes])))  # fmt: skip
        if self.kind == _PLANES:
            return bytes([_PLANES, self.low]) + _varints(np.array([self.center]))
        return bytes([_PACKED])

    def per_byte(self, bits: int) -> int:
        """Codes per byte (0: two planes, two bytes per code)."""
        if self.kind == _RANKS:
            assert self.symbols is not None
            return _rank_digits(self.symbols.size)
        if self.kind == _ESCAPED:
            assert self.frequent is not None
            return _rank_digits(self.frequent.size + 1)
        return 8 // bits if self.kind == _PACKED else 0

    def size(self, bits: int, count: int) -> int:
        k = self.per_byte(bits)
        return -(-count // k) + self.escapes if k else 2 * count

    def _digits(self) -> tuple[np.ndarray, np.ndarray]:
        """_ESCAPED: the digit of each symbol's rank (its place among the frequent ones,
        or the escape), and the rare symbols (ascending) the side stream indexes."""
        assert self.symbols is not None and self.frequent is not None
        m = self.frequent.size
        digit = np.full(self.symbols.size, m, np.int64)
        digit[self.frequent] = np.arange(m)
        return digit, self.symbols[digit == m]

    def streams(self, u: np.ndarray, bits: int) -> list[bytes]:
        k = self.per_byte(bits)
        if not k:
            v = _zigzag(u, bits, self.center)
            low = (v & ((1 << self.low) - 1)).astype(np.uint8)
            return [low.tobytes(), (v >> self.low).astype(np.uint8).tobytes()]
        digits = np.zeros(-(-u.size // k) * k, np.int64)
        side: list[bytes] = []
        if self.kind == _ESCAPED:
            assert self.symbols is not None and self.frequent is not None
            digit, rare = self._digits()
            ranks = np.searchsorted(self.symbols, u)
            digits[: u.size] = digit[ranks]
            base = self.frequent.size + 1
            escaped = u[digit[ranks] == base - 1]
            side = [np.searchsorted(rare, escaped).astype(np.uint8).tobytes()]
        elif self.kind == _RANKS:
            assert self.symbols is not None
            digits[: u.size] = np.searchsorted(self.symbols, u)
            base = self.symbols.size
        else:
            digits[: u.size] = u
            base = 1 << bits
        weights = base ** np.arange(k, dtype=np.int64)
        return [(digits.reshape(-1, k) @ weights).astype(np.uint8).tobytes(), *side]

    def codes(self, raw: np.ndarray, bits: int, count: int) -> np.ndarray:
        """The signed codes of :meth:`streams` (``raw`` has exactly :meth:`size` bytes)."""
        k = self.per_byte(bits)
        if not k:
            v = raw[:count].astype(np.int32) | (raw[count:].astype(np.int32) << self.low)
            if count and (int(v.max()) >> bits or int(raw[:count].max()) >> self.low):
                raise ValueError(f"entropy-coded codes exceed {bits} bits")
            d = (v >> 1) ^ -(v & 1)
            return (((d + self.center) & ((1 << bits) - 1)) - _offset(bits)).astype(np.int16)
        if self.kind == _PACKED and k == 1:
            return (raw - np.uint8(_offset(bits))).view(np.int8)
        if self.kind == _PACKED:
            return _ungroup_table(bits)[raw].view(np.int8)[:count]
        assert self.symbols is not None
        if self.kind == _ESCAPED:
            return self._escaped_codes(raw, bits, count, k)
        return self._rank_codes(raw, self.symbols, bits, count, k)

    @staticmethod
    def _rank_codes(
        raw: np.ndarray, symbols: np.ndarray, bits: int, count: int, k: int
    ) -> np.ndarray:
        """Bytes of ``k`` base-``len(symbols)`` digits -> the signed codes they rank."""
        signed = (symbols - _offset(bits)).astype(code_dtype(bits))
        rows = np.ascontiguousarray(signed[_digit_table(raw, symbols.size, k)])
        rows = rows.view(np.dtype((np.void, k * signed.itemsize)))
        return rows.reshape(-1)[raw].view(signed.dtype)[:count]

    def _escaped_codes(self, raw: np.ndarray, bits: int, count: int, k: int) -> np.ndarray:
        assert self.symbols is not None and self.frequent is not None
        digit, rare = self._digits()
        base = self.frequent.size + 1
        main = -(-count // k)
        table = _digit_table(raw[:main], base, k).astype(np.uint8)
        rows = np.ascontiguousarray(table).view(np.dtype((np.void, k)))
        digits = rows.reshape(-1)[raw[:main]].view(np.uint8)[:count]
        escaped = digits == base - 1
        side = raw[main:]
        if int(np.count_nonzero(escaped)) != side.size or (
            side.size and int(side.max()) >= rare.size
        ):
            raise ValueError("entropy-coded payload's escaped codes do not match its side stream")
        signed = (self.symbols - _offset(bits)).astype(code_dtype(bits))
        lut = np.append(signed[self.frequent], signed[0])  # the escape's entry is overwritten
        out = lut[digits]
        out[escaped] = signed[digit == base - 1][side]
        return out


def _digit_table(raw: np.ndarray, base: int, k: int) -> np.ndarray:
    """Byte value -> its ``k`` base-``base`` digits, least significant first (ValueError if
    ``raw`` holds a byte that ``k`` such digits cannot make)."""
    if raw.size and int(raw.max()) >= base**k:
        raise ValueError("entropy-coded payload has a byte beyond its rank digits")
    return (np.arange(base**k)[:, None] // base ** np.arange(k)) % base


def _zigzag(u: np.ndarray, bits: int, center: int) -> np.ndarray:
    """``u - center`` wrapped to ``[-2**(b-1), 2**(b-1))``, then 0, -1, 1, -2, ... -> 0, 1, 2, 3."""
    half = 1 << (bits - 1)
    d = ((u - center + half) & ((1 << bits) - 1)) - half
    return (d << 1) ^ (d >> 63)


def _entropy_bits(values: np.ndarray) -> float:
    """Order-0 entropy of non-negative integers times their count, in bits."""
    counts = np.bincount(values)
    counts = counts[counts > 0]
    return float((counts * np.log2(values.size / counts)).sum())


def _choose_layout(u: np.ndarray, bits: int, center: int) -> _Layout:
    """The layout for codes ``u``: ranks when few codes occur, else packing or planes
    (the plane split with the least entropy: it loses the information the two planes share)."""
    symbols = np.flatnonzero(np.bincount(u, minlength=1 << bits))
    packed = 8 // bits if bits <= 8 else 0
    table = (int(symbols[-1] - symbols[0]) + 8) // 8 if symbols.size else 0
    if 2 <= symbols.size <= 256 and _rank_digits(symbols.size) > packed:
        if table <= max(32, u.size // 8):
            return _Layout(_RANKS, symbols)
    if packed:
        return _Layout(_PACKED)
    if not u.size:
        return _Layout(_PLANES, low=8, center=center)
    v = _zigzag(u, bits, center)
    cost = {
        s: _entropy_bits(v & ((1 << s) - 1)) + _entropy_bits(v >> s) for s in range(bits - 8, 9)
    }
    return _Layout(_PLANES, low=min(cost, key=cost.get), center=center)


def _escaped_layout(s: _Stats, current: int) -> _Layout | None:
    """The escaped-ranks layout likely to code ``s`` smallest, if one puts more codes in
    a byte than ``current`` (the plain layout's) and escapes at most one code in 8.

    Huffman spends at least a bit on a byte, so 19 codes of which a few carry most
    (MiniLM's 5-bit word embeddings: 1.8 bits of entropy, one code a byte) lose 8%
    against the bound; two frequent codes a byte and the rare ones on the side do not.
    """
    n, a = s.u.size, s.symbols.size
    if not n or a <= 2:
        return None
    order = np.argsort(-s.counts, kind="stable")
    best, best_bits = None, float("inf")
    for base in _ESCAPE_BASES:
        k, m = _rank_digits(base), base - 1
        if k <= current or m >= a:
            continue
        frequent = np.sort(order[:m])
        escapes = n - int(s.counts[frequent].sum())
        if escapes * 8 > n:
            continue
        p = np.append(s.counts[frequent], escapes) / n
        p = p[p > 0]
        h = float(-(p * np.log2(p)).sum())  # bits per digit; a byte holds k of them
        rare = np.delete(s.counts, frequent)
        q = rare[rare > 0] / max(escapes, 1)
        est = n / k * max(k * h, 1.0) + escapes * max(float(-(q * np.log2(q)).sum()), 1.0)
        if est < best_bits:
            best_bits = est
            best = _Layout(_ESCAPED, s.symbols, frequent=frequent, escapes=escapes)
    return best


def _read_layout(raw: np.ndarray, pos: int, bits: int) -> tuple[_Layout, int]:
    kind = int(raw[pos]) if pos < raw.size else -1
    if kind == _PACKED and bits <= 8:
        return _Layout(_PACKED), pos + 1
    if kind == _RANKS:
        symbols, pos = _read_symbol_set(raw, pos + 1, bits)
        if not 2 <= symbols.size <= 256:
            raise ValueError("entropy-coded payload ranks a bad number of symbols")
        return _Layout(_RANKS, symbols), pos
    if kind == _ESCAPED and bits <= 8:
        symbols, pos = _read_symbol_set(raw, pos + 1, bits)
        m = int(raw[pos]) if pos < raw.size else 0
        frequent = raw[pos + 1 : pos + 1 + m].astype(np.int64)
        if not 1 <= m < symbols.size or frequent.size != m:
            raise ValueError("entropy-coded payload has a bad escaped layout")
        if np.any(np.diff(frequent) <= 0) or int(frequent[-1]) >= symbols.size:
            raise ValueError("entropy-coded payload has a bad escaped layout")
        escapes, pos = _read_varint(raw, pos + 1 + m)
        return _Layout(_ESCAPED, symbols, frequent=frequent, escapes=escapes), pos
    if kind == _PLANES and bits > 8 and pos + 1 < raw.size:
        low = int(raw[pos + 1])
        center, pos = _read_varint(raw, pos + 2)
        if not bits - 8 <= low <= 8 or center >> bits:
            raise ValueError("entropy-coded payload has a bad plane split or centre")
        return _Layout(_PLANES, low=low, center=center), pos
    raise ValueError(f"entropy-coded payload has unknown byte layout {kind} for {bits} bits")


@functools.lru_cache(maxsize=8)
def _ungroup_table(bits: int) -> np.ndarray:
    """Byte -> its ``8 // bits`` signed codes, as one unsigned integer per byte."""
    k = 8 // bits
    b = np.arange(256)
    codes = ((b[:, None] >> (np.arange(k) * bits)) & ((1 << bits) - 1)) - _offset(bits)
    word = {2: np.uint16, 4: np.uint32, 8: np.uint64}[k]
    return np.ascontiguousarray(codes.astype(np.int8)).view(word).reshape(-1)


# -- LCZ1: zstd frames ---------------------------------------------------------------------------
def _zstd_frame(streams: list[bytes]) -> bytes:
    """One zstd frame of the concatenated streams, each starting a new block (its own
    Huffman table); content size and checksum included."""
    import zstandard

    params = dict(_ZSTD_PARAMS, strategy=getattr(zstandard, _ZSTD_PARAMS["strategy"]))
    cctx = zstandard.ZstdCompressor(
        compression_params=zstandard.ZstdCompressionParameters(write_checksum=True, **params)
    )
    cobj = cctx.compressobj(size=sum(len(s) for s in streams))
    BLOCK = zstandard.COMPRESSOBJ_FLUSH_BLOCK  # noqa: N806
    parts = []
    for i, s in enumerate(streams):
        parts.append(cobj.compress(s))
        last = i == len(streams) - 1
        parts.append(cobj.flush(zstandard.COMPRESSOBJ_FLUSH_FINISH if last else BLOCK))
    return b"".join(parts)


def _unzstd(frame: np.ndarray, size: int) -> np.ndarray:
    """The ``size`` bytes of a zstd frame that fills ``frame`` exactly (ValueError else)."""
    import zstandard

    data = frame.tobytes()
    try:
        declared = zstandard.frame_content_size(data)
        if declared != size:
            raise ValueError(f"zstd frame holds {declared} bytes, expected {size}")
        dobj = zstandard.ZstdDecompressor().decompressobj()
        out = dobj.decompress(data)
    except zstandard.ZstdError as exc:
        raise ValueError(f"corrupt zstd frame: {exc}") from None
    if not dobj.eof or dobj.unused_data or len(out) != size:
        raise ValueError("zstd frame is truncated or followed by other bytes")
    return np.frombuffer(out, dtype=np.uint8)


# -- LCZ1: rANS --------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Stats:
    """What every form needs from a tensor's codes: the symbols that occur and the mode."""

    u: np.ndarray  # unsigned codes, int64 (empty when read from a table)
    symbols: np.ndarray  # occurring symbols, ascending
    counts: np.ndarray  # their counts
    mode: int  # index of the most frequent symbol in ``symbols``

    @property
    def others(self) -> int:
        """How many codes differ from the mode."""
        return int(self.counts.sum()) - int(self.counts[self.mode]) if self.counts.size else 0


def _stats(u: np.ndarray, bits: int) -> _Stats:
    counts = np.bincount(u, minlength=1 << bits)
    symbols = np.flatnonzero(counts)
    mode = int(np.argmax(counts[symbols])) if symbols.size else 0
    return _Stats(u, symbols, counts[symbols], mode)


def _table(s: _Stats) -> bytes:
    """The rANS forms' model: the occurring codes, the mode's rank, the other counts."""
    rest = np.delete(s.counts, s.mode)
    return _symbol_set(s.symbols) + _varints(np.array([s.mode])) + _varints(rest)


def _read_varint(raw: np.ndarray, pos: int) -> tuple[int, int]:
    """One LEB128 value at ``raw[pos]``; returns it and the position after it."""
    value = shift = 0
    for byte in raw[pos : pos + 10].tolist():
        value |= (byte & 0x7F) << shift
        pos += 1
        if byte < 0x80:
            return value, pos
        shift += 7
    raise ValueError("entropy-coded payload has a truncated or overlong varint")


def _read_table(raw: np.ndarray, pos: int, bits: int, n: int) -> tuple[_Stats, int]:
    """Inverse of :func:`_table` (``u`` left empty); validates against ``bits`` and ``n``."""
    symbols, end = _read_symbol_set(raw, pos, bits)
    mode, pos = _read_varint(raw, end)
    if mode >= symbols.size:
        raise ValueError("entropy-coded payload names a mode that does not occur")
    rest = np.zeros(symbols.size - 1, np.int64)
    for i in range(rest.size):  # few symbols: a loop beats the vectorized reader's setup
        rest[i], pos = _read_varint(raw, pos)
    if rest.size and (rest.min() < 1 or int(rest.sum()) >= n):
        raise ValueError("entropy-coded payload has inconsistent symbol counts")
    counts = np.insert(rest, mode, n - int(rest.sum()))
    return _Stats(np.zeros(0, np.int64), symbols, counts, mode), pos


def _categorical(counts: np.ndarray, *, normalize: bool = True):
    """constriction's ``Categorical(perfect=False)`` of ``counts``: divided by their sum first
    (the rANS forms), or as given (form 5: constriction normalizes them itself). The two
    quantize to different fixed-point models, so each form keeps its own."""
    import constriction  # its submodules are attributes, not importable modules

    weights = counts.astype(np.float64)
    return constriction.stream.model.Categorical(
        weights / float(counts.sum()) if normalize else weights, perfect=False
    )


def _gap_model(n: int, others: int, gap_log: int):  # constriction.stream.model.Categorical
    """Geometric model of the mode runs: ``P(r) = q (1-q)**r`` for ``r < G = 2**gap_log``,
    escape ``(1-q)**G``, with ``q = others / n``. Built from IEEE products only (cumprod),
    so encoder and decoder quantize bit-identical probabilities."""
    import constriction

    g = 1 << gap_log
    q = others / n
    tail = np.cumprod(np.full(g, 1.0 - q))
    p = np.empty(g + 1)
    p[0] = q
    p[1:g] = q * tail[: g - 1]
    p[g] = tail[g - 1]
    return constriction.stream.model.Categorical(p, perfect=False)


@dataclass(frozen=True)
class _AnsPlan:
    """A rANS form chosen for a tensor, with the symbols it would code."""

    form: int
    symbols: int  # rANS symbols to decode (the load-time cost)
    gap_log: int = 0
    gaps: np.ndarray | None = None  # sparse: run lengths as gap symbols (escape = 2**gap_log)
    values: np.ndarray | None = None  # sparse: ranks of the non-mode codes (None: one kind)


def _ans_plan(s: _Stats, budget: int) -> _AnsPlan | None:
    """The cheaper rANS form for ``s`` if it needs at most ``budget`` symbols, else None."""
    n, others = s.u.size, s.others
    if s.symbols.size == 1:
        return _AnsPlan(_ANS_DIRECT, 0)
    if min(n, others) > budget:  # sparse needs at least ``others`` symbols
        return None
    mode = int(s.symbols[s.mode])
    pos = np.flatnonzero(s.u != mode)
    runs = np.diff(pos, prepend=-1) - 1
    gap_log = int(np.clip(np.ceil(np.log2(2 * (n - others) / others + 2)), 1, _MAX_GAP_LOG))
    escapes = runs >> gap_log
    rest = s.symbols.size - 1
    cost = others + int(escapes.sum()) + (others if rest > 1 else 0)
    if cost >= n:
        return _AnsPlan(_ANS_DIRECT, n) if n <= budget else None
    if cost > budget:
        return None
    gaps = np.full(cost - (others if rest > 1 else 0), 1 << gap_log, np.int32)
    gaps[np.cumsum(escapes + 1) - 1] = runs & ((1 << gap_log) - 1)
    values = None
    if rest > 1:
        nonmode = np.delete(s.symbols, s.mode)
        values = np.searchsorted(nonmode, s.u[pos]).astype(np.int32)
    return _AnsPlan(_ANS_SPARSE, cost, gap_log, gaps, values)


def _ans_form(s: _Stats, plan: _AnsPlan) -> bytes:
    """LCZ1 rANS payload: form byte, table, [gap_log, gap symbol count], uint32 words."""
    import constriction

    coder = constriction.stream.stack.AnsCoder()
    head = bytes([plan.form]) + _table(s)
    if plan.form == _ANS_DIRECT and s.symbols.size > 1:
        ranks = np.searchsorted(s.symbols, s.u).astype(np.int32)
        coder.encode_reverse(ranks, _categorical(s.counts))
    elif plan.form == _ANS_SPARSE:
        assert plan.gaps is not None
        if plan.values is not None:
            coder.encode_reverse(plan.values, _categorical(np.delete(s.counts, s.mode)))
        coder.encode_reverse(plan.gaps, _gap_model(s.u.size, s.others, plan.gap_log))
        head += bytes([plan.gap_log]) + _varints(np.array([plan.gaps.size]))
    words = np.asarray(coder.get_compressed(), dtype="<u4")
    return LCZ_MAGIC + head + words.tobytes()


def _ans_words(raw: np.ndarray, pos: int) -> np.ndarray:
    if (raw.size - pos) % 4:
        raise ValueError("entropy-coded payload is not a whole number of rANS words")
    return np.frombuffer(raw[pos:].tobytes(), dtype="<u4").astype(np.uint32)


def _positions(gaps: np.ndarray, gap_log: int, others: int, n: int) -> np.ndarray:
    """Where the non-mode codes are, from the gap symbols (escape ``2**gap_log``: a run of
    that many mode codes; ``r`` below it: ``r`` mode codes, then a non-mode one)."""
    escape = gaps == 1 << gap_log
    ends = np.cumsum(np.where(escape, 1 << gap_log, gaps + 1))[~escape] - 1
    if ends.size != others or (gaps.size and escape[-1]) or (ends.size and ends[-1] >= n):
        raise ValueError("sparse entropy-coded payload does not decode to its counts")
    return ends


def _ans_decode_form(raw: np.ndarray, form: int, bits: int, n: int) -> np.ndarray:
    import constriction

    s, pos = _read_table(raw, 5, bits, n)
    signed = (s.symbols - _offset(bits)).astype(code_dtype(bits))
    mode = signed[s.mode]
    if form == _ANS_SPARSE:
        gap_log = int(raw[pos]) if pos < raw.size else 0
        if not 1 <= gap_log <= _MAX_GAP_LOG or s.symbols.size < 2:
            raise ValueError("sparse entropy-coded payload has a bad gap alphabet")
        count, pos = _read_varint(raw, pos + 1)
        coder = constriction.stream.stack.AnsCoder(_ans_words(raw, pos))
        gaps = coder.decode(_gap_model(n, s.others, gap_log), count).astype(np.int64)
        where = _positions(gaps, gap_log, s.others, n)
        nonmode = np.delete(signed, s.mode)
        out = np.full(n, mode, dtype=signed.dtype)
        if nonmode.size > 1:
            out[where] = nonmode[coder.decode(_categorical(np.delete(s.counts, s.mode)), s.others)]
        else:
            out[where] = nonmode[0]
        if not coder.is_empty():
            raise ValueError("sparse entropy-coded payload has more words than its codes need")
        return out
    words = _ans_words(raw, pos)
    if s.symbols.size == 1:
        if words.size:
            raise ValueError("entropy-coded payload of one symbol has coded words")
        return np.full(n, mode, dtype=signed.dtype)
    coder = constriction.stream.stack.AnsCoder(words)
    ranks = coder.decode(_categorical(s.counts), n)
    if not coder.is_empty():
        raise ValueError("entropy-coded payload has more words than its codes need")
    return signed[ranks]


# -- LCZ1: rANS under a parametric model (form 4) -----------------------------------------------
_LOC_UNIT = 64
"""Form 4 stores the shape's location in 1/64 of a code: rounding moves it by at most 1/128,
which costs a Gaussian of scale 1 about ``n * 1e-4`` bits."""
_MAX_SPIKES = 16
"""At most this many codes get explicit counts in form 4 (the writer's choice, not the format's);
a tensor that needs more is better served by the count table of form 2."""
_SEARCH_BINS = 1024
"""The shape search scores at most this many histogram bins (wider ranges are binned)."""
_POWERS = np.array([2, 4, 8, 16, 32, 64, 128, 255], np.float64)
"""The search's first grid of the shape's power (exponent ``power / 4``)."""


@dataclass(frozen=True)
class _ParamModel:
    """Form 4's model of the unsigned codes ``lo .. lo + span`` (docs/format.md).

    A Pearson type VII shape ``f(x) = (1 + ((x - loc) / scale)**2) ** (-power / 4)`` (power
    4: Cauchy; large powers: nearly Gaussian) over the positions ``x = u - lo``, except at
    ``spikes``, which get explicit counts (typically the range's ends, where per-channel
    scaling puts each channel's extreme code, and a mode the shape misses). About ten
    bytes describe it where the count table of forms 2 and 3 takes one or two bytes per
    occurring code: on small tensors with many codes that table is most of the excess
    over the order-0 bound.
    """

    lo: int
    span: int  # >= 1: both ends occur
    power: int  # 1..255
    scale: float  # a positive finite float16 value
    loc: int  # 0 .. span * _LOC_UNIT: the location is lo + loc / _LOC_UNIT
    spikes: np.ndarray  # positions (u - lo) with explicit counts, ascending
    counts: np.ndarray  # their counts, each >= 1

    def header(self) -> bytes:
        gaps = np.diff(self.spikes, prepend=-1) - 1
        pairs = np.stack([gaps, self.counts], axis=1).reshape(-1)
        return (
            _varints(np.array([self.lo, self.span]))
            + bytes([self.power])
            + np.array([self.scale], "<f2").tobytes()
            + _varints(np.array([self.loc, self.spikes.size]))
            + _varints(pairs)
        )

    def shape(self) -> np.ndarray:
        """``f`` at every position, from IEEE ``+ - * / sqrt`` only, in a fixed order, so
        that any decoder rebuilds it bit for bit (the recipe is in docs/format.md)."""
        x = np.arange(self.span + 1, dtype=np.float64)
        z = (x - self.loc / _LOC_UNIT) / self.scale
        u = np.sqrt(np.sqrt(z * z + 1.0))
        w = np.ones_like(u)  # u ** power, by squaring: bit i of power multiplies u ** 2**i
        with np.errstate(over="ignore"):  # inf: f = 0 far out in the tails
            for bit in range(8):
                if self.power >> bit & 1:
                    w = w * u
                u = u * u
        return 1.0 / w

    def weights(self, n: int) -> np.ndarray:
        """Categorical weights: ``f * R`` (``R``: codes not at a spike), spikes ``count * F``
        (``F``: the sequential sum of ``f`` off the spikes), so position ``x`` gets
        ``R/n * f(x)/F`` and a spike ``count/n`` once constriction normalizes them."""
        f = self.shape()
        f[self.spikes] = 0.0
        total = float(np.cumsum(f)[-1])  # left to right, as docs/format.md says
        weights = f * float(n - int(self.counts.sum()))
        weights[self.spikes] = self.counts * total if total > 0 else self.counts
        return weights

    def categorical(self, n: int):  # constriction.stream.model.Categorical
        """The rANS model: symbol ``x + 1`` for position ``x``; symbol 0 has weight 0 (the
        smallest probability, 2**-24), so a decoder that pops more codes than were pushed
        gets 0 (an empty coder decodes symbol 0 forever) instead of plausible codes."""
        import constriction

        weights = np.concatenate([[0.0], self.weights(n)])
        if not weights.max() > 0:
            raise ValueError("parametric entropy-coded payload's model has no probability")
        return constriction.stream.model.Categorical(weights, perfect=False)


def _pearson_bits(
    x: np.ndarray, h: np.ndarray, grid: np.ndarray, room: np.ndarray, loc, scale, power
) -> np.ndarray:
    """Bits to code counts ``h`` at positions ``x`` under the shape normalized over ``room``
    positions at each ``grid`` point, one value per candidate (``loc``, ``scale``, ``power``:
    arrays of one shape)."""
    m = np.asarray(power, np.float64)[:, None] / 4
    z = (x - loc[:, None]) / scale[:, None]
    data = (m * np.log1p(z * z)) @ h
    z = (grid - loc[:, None]) / scale[:, None]
    lf = -m * np.log1p(z * z)
    top = lf.max(axis=1)
    norm = top + np.log(np.exp(lf - top[:, None]) @ room)
    return (data + h.sum() * norm) / np.log(2)


def _search_bins(size: int, center: int) -> np.ndarray:
    """First positions of the bins the shape search scores: every position up to
    :data:`_SEARCH_BINS`; beyond, single positions in a window around ``center`` (a narrow
    peak stays sharp) and wide bins outside it (smooth tails, and outliers)."""
    if size <= _SEARCH_BINS:
        return np.arange(size)
    half = _SEARCH_BINS // 4
    a, b = max(0, center - half), min(size, center + half)
    width = -(-size // half)
    return np.concatenate([np.arange(0, a, width), np.arange(a, b), np.arange(b, size, width)])


def _fit_shape(
    hist: np.ndarray, free: np.ndarray, start: tuple[float, float, int] | None = None
) -> tuple[float, float, int]:
    """Location, scale and power of the shape that codes ``hist`` (zero off ``free``) in the
    fewest bits: a grid over power and scale around the median and a robust spread (outliers
    must not widen it), or ``start``, then finer local grids, scored on :func:`_search_bins`."""
    cum = np.cumsum(hist)
    total = int(cum[-1])
    if total == 0:
        return 0.0, 1.0, 4
    q1, median, q3 = np.searchsorted(cum, [total / 4, total / 2, 3 * total / 4])
    starts = _search_bins(hist.size, int(median))
    ends = np.append(starts[1:], hist.size)
    centers = (starts + ends - 1) / 2
    room = np.add.reduceat(free.astype(np.float64), starts)
    binned = np.add.reduceat(hist, starts).astype(np.float64)
    occ = np.flatnonzero(binned)
    x, h, keep = centers[occ], binned[occ], room > 0
    grid, room = centers[keep], room[keep]
    sd = (q3 - q1) / 1.35 + 0.5  # a Gaussian's quartiles are 1.35 sd apart
    if start is None:
        loc = float(median)
        m = _POWERS / 4
        base = sd * np.sqrt(np.maximum(2 * m - 3, 0.5))  # Pearson VII: var = scale**2 / (2m-3)
        scales = (base[:, None] * np.exp(np.linspace(-2, 2, 9))).reshape(-1)
        powers = np.repeat(_POWERS, 9)
        bits = _pearson_bits(x, h, grid, room, np.full(scales.size, loc), scales, powers)
        i = int(np.argmin(bits))
        scale, power = float(scales[i]), int(powers[i])
        step_loc, step_scale, spreads = sd / 4, 0.3, (0.25, 0.1, 0.0)
    else:
        loc, scale, power = start
        step_loc, step_scale, spreads = sd / 10, 0.12, (0.1, 0.0)
    for spread in spreads:
        locs = loc + step_loc * np.arange(-2, 3)
        log_scales = np.log(scale) + step_scale * np.arange(-2, 3)
        near = power * (1 + spread * np.arange(-1, 2)) if spread else power + np.arange(-1, 2)
        ps = np.unique(np.clip(np.round(near), 1, 255))
        la, sa, pa = (a.reshape(-1) for a in np.meshgrid(locs, np.exp(log_scales), ps))
        bits = _pearson_bits(x, h, grid, room, la, sa, pa)
        i = int(np.argmin(bits))
        loc, scale, power = float(la[i]), float(sa[i]), int(pa[i])
        step_loc, step_scale = step_loc / 2.5, step_scale / 2.5
    return loc, scale, power


def _spike_gains(
    hist: np.ndarray, free: np.ndarray, loc: float, scale: float, power: int
) -> np.ndarray:
    """Bits saved by giving each free occurring position an explicit count, less its entry:
    ``n`` times the binary KL divergence between its share and the shape's probability."""
    n = float(hist.sum())
    z = (np.arange(hist.size) - loc) / scale
    lf = -(power / 4) * np.log1p(z * z)
    f = np.where(free, np.exp(lf - lf[free].max()), 0.0)
    p = np.clip(hist[free].sum() / n * f / f.sum(), 1e-300, 1 - 1e-12)
    c = hist.astype(np.float64)
    q = c / n
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = np.where(c > 0, c * np.log2(q / p), 0.0)
        kl += np.where(c < n, (n - c) * np.log2((1 - q) / (1 - p)), 0.0)
    gain = kl - 8 * (2 + (c >= 128))  # entry: a gap and a count varint
    gain[~free | (c == 0)] = -np.inf
    return gain


def _param_model(s: _Stats) -> _ParamModel | None:
    """Form 4's model for ``s`` (None with fewer than two occurring codes): fit the shape,
    give the worst-fitting codes explicit counts, fit again (twice)."""
    if s.symbols.size < 2:
        return None
    lo, span = int(s.symbols[0]), int(s.symbols[-1] - s.symbols[0])
    hist = np.zeros(span + 1, np.int64)
    hist[s.symbols - lo] = s.counts
    free = np.ones(span + 1, bool)
    loc, scale, power = _fit_shape(hist, free)
    for _ in range(2):
        if not free.any():
            break
        gains = _spike_gains(hist, free, loc, scale, power)
        room = _MAX_SPIKES - int((~free).sum())
        pick = np.argsort(-gains)[:room]
        pick = pick[gains[pick] > 0]
        if not pick.size:
            break
        free[pick] = False
        loc, scale, power = _fit_shape(np.where(free, hist, 0), free, (loc, scale, power))
    spikes = np.flatnonzero(~free)
    half = np.float16(np.clip(scale, 2.0**-14, 65504.0))
    return _ParamModel(
        lo,
        span,
        power,
        float(half),
        int(round(np.clip(loc, 0, span) * _LOC_UNIT)),
        spikes,
        hist[spikes],
    )


def _param_form(s: _Stats) -> bytes | None:
    """LCZ1 form 4: form byte, model header, rANS words of ``u - lo + 1`` (None: no model)."""
    import constriction

    model = _param_model(s)
    if model is None:
        return None
    try:
        categorical = model.categorical(s.u.size)
    except ValueError:  # a shape that underflows everywhere; the fit does not produce one
        return None
    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse((s.u - (model.lo - 1)).astype(np.int32), categorical)
    words = np.asarray(coder.get_compressed(), dtype="<u4").tobytes()
    end = len(words)  # the last word's zero high bytes are left out (1.6 bytes on average)
    while end > len(words) - 3 and end and not words[end - 1]:
        end -= 1
    if not end or not words[end - 1]:  # a zero last word (constriction writes none)
        return None
    return LCZ_MAGIC + bytes([_ANS_PARAM]) + model.header() + words[:end]


def _read_param_model(raw: np.ndarray, bits: int, n: int) -> tuple[_ParamModel, int]:
    """Inverse of :meth:`_ParamModel.header` (at byte 5); validates against ``bits`` and ``n``."""
    lo, pos = _read_varint(raw, 5)
    span, pos = _read_varint(raw, pos)
    if span < 1 or lo + span >= 1 << bits:
        raise ValueError(f"parametric entropy-coded payload has a bad {bits}-bit code range")
    if pos + 3 > raw.size:
        raise ValueError("parametric entropy-coded payload is truncated")
    power = int(raw[pos])
    scale = float(np.frombuffer(raw[pos + 1 : pos + 3].tobytes(), "<f2")[0])
    loc, pos = _read_varint(raw, pos + 3)
    count, pos = _read_varint(raw, pos)
    if not power or not 0 < scale < np.inf or loc > span * _LOC_UNIT or count > span + 1:
        raise ValueError("parametric entropy-coded payload has a bad model")
    pairs = np.zeros(2 * count, np.int64)
    for i in range(pairs.size):
        pairs[i], pos = _read_varint(raw, pos)
    spikes = np.cumsum(pairs[0::2] + 1) - 1
    counts = pairs[1::2]
    if count and (spikes[-1] > span or counts.min() < 1 or int(counts.sum()) > n):
        raise ValueError("parametric entropy-coded payload has bad explicit counts")
    return _ParamModel(lo, span, power, scale, loc, spikes, counts), pos


def _param_decode(raw: np.ndarray, bits: int, n: int) -> np.ndarray:
    """The signed codes of a form 4 payload (ValueError if malformed)."""
    import constriction

    model, pos = _read_param_model(raw, bits, n)
    categorical = model.categorical(n)
    if pos >= raw.size or not raw[-1]:  # the writer leaves out the last word's zero bytes
        raise ValueError("parametric entropy-coded payload has no words or ends in a zero byte")
    words = np.concatenate([raw[pos:], np.zeros(-(raw.size - pos) % 4, np.uint8)])
    coder = constriction.stream.stack.AnsCoder(_ans_words(words, 0))
    x = coder.decode(categorical, n)
    if not coder.is_empty():
        raise ValueError("parametric entropy-coded payload has more words than its codes need")
    hist = np.bincount(x, minlength=model.span + 2)
    if hist[0] or not (hist[1] and hist[-1]):
        raise ValueError("parametric entropy-coded payload holds other codes than its range")
    if not np.array_equal(hist[model.spikes + 1], model.counts):
        raise ValueError("parametric entropy-coded payload does not decode to its counts")
    return (x + (model.lo - 1 - _offset(bits))).astype(code_dtype(bits))


# -- LCZ1: range coding under slice classes (form 5) ---------------------------------------------
_CLASS_TRIES = (2, 3, 4, 6, 8)
"""How many classes form 5 tries on each axis (the writer's choice; the format allows 64)."""
_MAX_SLICES = 4096
"""Form 5 considers an axis with at most this many slices."""
_KMEANS_ROUNDS = 12
_MAX_CLASS_SPAN = 256
"""Form 5 is tried on codes spanning fewer positions (each class stores a weight for each):
wider ranges are form 4's."""


def _varint_bytes(values: np.ndarray) -> np.ndarray:
    """LEB128 length of each value."""
    v = np.asarray(values, np.int64)
    return 1 + (v >= 1 << 7) + (v >= 1 << 14) + (v >= 1 << 21) + (v >= 1 << 28)


def _coarse_weights(counts: np.ndarray) -> tuple[np.ndarray, float]:
    """Class weights for ``counts`` (zero stays zero, others >= 1): the rounding of
    ``counts / d`` whose varints plus the bits the counts then cost is least. Returns the
    weights and that total in bytes. Counts of a few thousand codes need no more than a
    byte each: a count's sampling noise, about its square root, is what precision beyond
    that would pay for (the two-part code's ``(k - 1) / 2 * log2(n)`` bits)."""
    c = counts.astype(np.float64)
    top = float(c.max())
    steps = np.unique(np.concatenate([[1.0], np.exp(np.linspace(0.0, np.log(top), 48))]))
    w = np.where(c > 0, np.maximum(1.0, np.round(c / steps[:, None])), 0.0)
    head = _varint_bytes(w).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        bits = -(c * np.where(c > 0, np.log2(w / w.sum(axis=1, keepdims=True)), 0.0)).sum(1)
    total = head + bits / 8
    i = int(np.argmin(total))
    return w[i].astype(np.int64), float(total[i])


def _class_split(hist: np.ndarray, m: int) -> np.ndarray:
    """Labels grouping the rows of ``hist`` (slices x positions) into at most ``m`` classes
    whose pooled histograms code them in the fewest bits: k-means under cross-entropy,
    started from quantiles of each slice's share of the tensor's most frequent position."""
    rows = hist.sum(axis=1)
    share = hist[:, int(np.argmax(hist.sum(axis=0)))] / np.maximum(rows, 1)
    order = np.argsort(share, kind="stable")
    cum = np.cumsum(rows[order])
    labels = np.empty(hist.shape[0], np.int64)
    labels[order] = np.minimum((cum - 1) * m // max(int(cum[-1]), 1), m - 1)
    for _ in range(_KMEANS_ROUNDS):
        pooled = np.zeros((m, hist.shape[1]))
        np.add.at(pooled, labels, hist)
        logp = np.log2((pooled + 0.5) / (pooled.sum(axis=1, keepdims=True) + 0.5 * hist.shape[1]))
        new = np.argmin(-(hist @ logp.T), axis=1)
        if np.array_equal(new, labels):
            break
        labels = new
    return np.unique(labels, return_inverse=True)[1].reshape(-1)


@dataclass(frozen=True)
class _ClassModel:
    """Form 5's model (docs/format.md): positions ``x = u - lo`` (0 .. ``span``); code ``i``
    belongs to slice ``(i // inner) % slices`` and so to class ``labels[slice]``; each class
    codes its positions under its own ``weights`` row."""

    lo: int
    span: int
    weights: np.ndarray  # classes x (span + 1), int64
    inner: int = 1
    labels: np.ndarray | None = None  # per slice (None: one class)

    def header(self, bits: int) -> bytes:
        classes = self.weights.shape[0]
        head = _class_head(self.lo, self.span, classes, bits)
        if self.labels is not None:
            head += _varints(np.array([self.inner, self.labels.size]))
            head += _label_bits(self.labels, classes)
        return head + _varints(self.weights.reshape(-1))

    def classes(self, n: int) -> np.ndarray | None:
        """Each code's class (None: one class)."""
        if self.labels is None:
            return None
        return self.labels[(np.arange(n) // self.inner) % self.labels.size]


def _class_head(lo: int, span: int, classes: int, bits: int) -> bytes:
    """Form 5's first field: one varint of the code range and the class count."""
    return _varints(np.array([lo | span << bits | (classes - 1) << 2 * bits]))


def _label_width(classes: int) -> int:
    return max(1, int(classes - 1).bit_length())


def _label_bits(labels: np.ndarray, classes: int) -> bytes:
    """Labels as ``_label_width`` bits each, LSB-first (bit packing's order)."""
    width = _label_width(classes)
    planes = (labels[:, None] >> np.arange(width)) & 1
    return np.packbits(planes.reshape(-1).astype(np.uint8), bitorder="little").tobytes()


def _class_models(codes_shape: tuple[int, ...], x: np.ndarray, lo: int, span: int, bits: int):
    """Candidate form 5 models of positions ``x`` with their estimated sizes (bytes of header
    and coded bits): one class, and for each axis of 2 to :data:`_MAX_SLICES` slices the
    splits into :data:`_CLASS_TRIES` classes."""
    n, k = x.size, span + 1

    w, cost = _coarse_weights(np.bincount(x, minlength=k))
    yield len(_class_head(lo, span, 1, bits)) + cost, _ClassModel(lo, span, w[None, :])
    for axis, slices in enumerate(codes_shape):
        if not 2 <= slices <= min(_MAX_SLICES, n // 2):  # a slice of one code: a label each
            continue
        inner = int(np.prod(codes_shape[axis + 1 :], dtype=np.int64))
        slice_of = (np.arange(n) // inner) % slices
        hist = np.bincount(slice_of * k + x, minlength=slices * k).reshape(slices, k)
        fixed = len(_varints(np.array([inner, slices])))
        for m in _CLASS_TRIES:
            if m >= slices:
                break
            labels = _class_split(hist, m)
            used = int(labels.max()) + 1
            if used < 2:
                continue
            rows = [_coarse_weights(hist[labels == c].sum(axis=0)) for c in range(used)]
            head = len(_class_head(lo, span, used, bits)) + fixed
            total = head + -(-slices * _label_width(used) // 8) + sum(r[1] for r in rows)
            model = _ClassModel(lo, span, np.stack([r[0] for r in rows]), inner, labels)
            yield total, model


def _range_words(model: _ClassModel, x: np.ndarray) -> bytes | None:
    """The range coder's words for ``x`` under ``model`` (big-endian), cut to the shortest
    prefix that still decodes to ``x`` (the decoder reads zero bytes past the end), whose
    last byte is not zero: the coder's last word holds the interval the codes end in, and
    any value inside it will do, so one with fewer significant bytes usually does (about
    0.4 bytes over the codes' information on average; the words as written: 2-2.5)."""
    import constriction

    cls = model.classes(x.size)
    coder = constriction.stream.queue.RangeEncoder()
    for c, weights in enumerate(model.weights):
        part = x if cls is None else x[cls == c]
        coder.encode(part.astype(np.int32), _categorical(weights, normalize=False))
    full = np.asarray(coder.get_compressed(), np.uint32).astype(">u4").tobytes()
    for size in range(max(0, len(full) - 8), len(full) + 1):
        head = bytearray(full[:size])
        tries = [bytes(head)]
        if size and head[-1] < 255:
            head[-1] += 1
            tries.append(bytes(head))
        for body in tries:
            if body and body[-1] == 0:
                continue
            try:
                if np.array_equal(_range_read(model, np.frombuffer(body, np.uint8), x.size), x):
                    return body
            except ValueError:
                pass
    return None  # not seen: ``full`` itself decodes


def _range_read(model: _ClassModel, body: np.ndarray, n: int) -> np.ndarray:
    """Positions ``x`` of form 5's range-coded ``body`` (ValueError if malformed)."""
    import constriction

    padded = np.concatenate([body, np.zeros(-body.size % 4 + 8, np.uint8)])
    coder = constriction.stream.queue.RangeDecoder(padded.view(">u4").astype(np.uint32))
    cls = model.classes(n)
    x = np.empty(n, np.int64)
    for c, weights in enumerate(model.weights):
        where = slice(None) if cls is None else cls == c
        count = n if cls is None else int(np.count_nonzero(where))
        try:
            part = coder.decode(_categorical(weights, normalize=False), count)
        except AssertionError as err:  # constriction's check of the coder's state
            raise ValueError("range-coded payload is malformed") from err
        if count and not weights[part].all():
            raise ValueError("range-coded payload holds codes its class does not have")
        x[where] = part
    return x


def _class_form(codes: np.ndarray, s: _Stats, bits: int) -> bytes | None:
    """LCZ1 form 5 (None with fewer than two occurring codes or a span of
    :data:`_MAX_CLASS_SPAN` or more): the candidate model with the least estimated size,
    range coded."""
    best = _best_class_model(codes, s, bits)
    if best is None:
        return None
    body = _range_words(best[1], s.u - best[1].lo)
    if body is None:
        return None
    return LCZ_MAGIC + bytes([_RANGE_CLASSES]) + best[1].header(bits) + body


def _best_class_model(codes: np.ndarray, s: _Stats, bits: int) -> tuple[float, _ClassModel] | None:
    """Form 5's model for ``codes`` and about the bytes its payload takes after the magic
    (None where :func:`_class_form` is not tried)."""
    lo = int(s.symbols[0]) if s.symbols.size else 0
    span = int(s.symbols[-1]) - lo if s.symbols.size else 0
    if not 1 <= span < _MAX_CLASS_SPAN:
        return None
    shape = tuple(int(d) for d in codes.shape) or (s.u.size,)
    size, model = min(_class_models(shape, s.u - lo, lo, span, bits), key=lambda t: t[0])
    return size + 1.5, model  # the form byte, and about half a byte of the coder's end


def _read_class_model(raw: np.ndarray, bits: int, n: int) -> tuple[_ClassModel, int]:
    """Inverse of :meth:`_ClassModel.header` (at byte 5); validates against ``bits`` and ``n``."""
    packed, pos = _read_varint(raw, 5)
    mask = (1 << bits) - 1
    lo, span, classes = packed & mask, packed >> bits & mask, (packed >> 2 * bits) + 1
    if span < 1 or lo + span >= 1 << bits or classes > 64:  # noqa: PLR2004
        raise ValueError(f"range-coded payload has a bad {bits}-bit code range or classes")
    inner, labels = 1, None
    if classes > 1:
        inner, pos = _read_varint(raw, pos)
        slices, pos = _read_varint(raw, pos)
        if not inner or slices < 2 or n % (inner * slices):
            raise ValueError("range-coded payload's slices do not divide the tensor")
        width = _label_width(classes)
        end = pos + -(-slices * width // 8)
        if end > raw.size:
            raise ValueError("range-coded payload is truncated")
        planes = np.unpackbits(raw[pos:end], count=slices * width, bitorder="little")
        labels = (planes.reshape(slices, width).astype(np.int64) << np.arange(width)).sum(1)
        if labels.max() >= classes or np.unique(labels).size != classes:
            raise ValueError("range-coded payload's slice classes are malformed")
        pos = end
    flat, used = _read_varints(raw[pos:], classes * (span + 1))
    weights = flat.reshape(classes, span + 1)
    pos += used
    if not weights.any(axis=1).all():
        raise ValueError("range-coded payload has a class without codes")
    return _ClassModel(lo, span, weights, inner, labels), pos


def _class_decode(raw: np.ndarray, bits: int, n: int) -> np.ndarray:
    """The signed codes of a form 5 payload (ValueError if malformed)."""
    model, pos = _read_class_model(raw, bits, n)
    if pos < raw.size and not raw[-1]:
        raise ValueError("range-coded payload ends in a zero byte")
    x = _range_read(model, raw[pos:], n)
    return (x + (model.lo - _offset(bits))).astype(code_dtype(bits))


# -- LCZ1: choosing and reading a form --------------------------------------------------------
def _zstd_dense(s: _Stats, bits: int, layout: _Layout) -> bytes:
    head = bytes([_ZSTD_DENSE]) + layout.header()
    return LCZ_MAGIC + head + _zstd_frame(layout.streams(s.u, bits))


def _zstd_mask(s: _Stats, bits: int) -> bytes:
    mode = int(s.symbols[s.mode])
    differs = s.u != mode
    mask = np.packbits(differs, bitorder="little").tobytes()
    values = s.u[differs]
    layout = _choose_layout(values, bits, mode)
    head = bytes([_ZSTD_MASK]) + _varints(np.array([mode, s.others])) + layout.header()
    return LCZ_MAGIC + head + _zstd_frame([mask, *layout.streams(values, bits)])


def _forms(
    codes: np.ndarray, bits: int, max_ans_symbols: int, every: bool = False, zstd: bool = True
) -> list[bytes]:
    """The LCZ1 forms worth trying for ``codes``, cheapest to decode first; ``every``: also
    the mask form where no byte value is likely enough for it to pay (tests use that);
    ``zstd=False``: the rANS forms only."""
    s = _stats(_to_unsigned(codes, bits), bits)
    n = s.u.size
    forms = []
    if zstd:
        layout = _choose_layout(s.u, bits, int(s.symbols[s.mode]) if n else 0)
        forms.append(_zstd_dense(s, bits, layout))
        k = max(layout.per_byte(bits), 1)
        if n and (every or (s.counts[s.mode] / n) ** k >= 0.25):  # Huffman pays for
            forms.append(_zstd_mask(s, bits))  # a likely byte
        escaped = _escaped_layout(s, k) if bits <= 8 else None
        if escaped is not None:  # more codes a byte, the rare ones on the side
            forms.append(_zstd_dense(s, bits, escaped))
    plan = _ans_plan(s, max_ans_symbols) if n else None
    if plan is not None:
        forms.append(_ans_form(s, plan))
    if 0 < n <= max_ans_symbols:  # forms 4 and 5 take one rANS or range symbol per code
        for form in (_param_form(s), _class_form(codes, s, bits)):
            if form is not None:
                forms.append(form)
    return forms


def lcz_encode(codes: np.ndarray, bits: int, max_ans_symbols: int | None = None) -> np.ndarray:
    """The smallest LCZ1 form of ``codes`` (uint8 payload; docs/format.md).

    ``max_ans_symbols``: how many rANS symbols the rANS forms may take (default
    :data:`ANS_FREE_SYMBOLS` or one per :data:`ANS_CODES_PER_SYMBOL` codes; 0: zstd only).
    """
    if max_ans_symbols is None:
        max_ans_symbols = max(ANS_FREE_SYMBOLS, codes.size // ANS_CODES_PER_SYMBOL)
    best = min(_forms(codes, bits, max_ans_symbols), key=len)  # ties: the faster form
    return np.frombuffer(best, dtype=np.uint8)


def pooled_ans(coded: list[tuple[np.ndarray, int, np.ndarray]]) -> dict[int, np.ndarray]:
    """Payloads to replace: the model's rANS allowance pooled over its coded tensors.

    ``coded``: (codes, bits, LCZ1 payload) of each entropy-coded tensor of a model.
    :func:`lcz_encode` lets one tensor take rANS for at most one symbol per
    :data:`ANS_CODES_PER_SYMBOL` codes, which shuts out the forms that take a
    symbol per code on larger tensors. Yet zstd's Huffman stages lose up to 12% on
    codes of 1-2 bits of entropy each (PP-OCR det's 147456-code GPTQ tensors at 5
    bits: Huffman spends at least a bit on each non-mode code; form 4 comes within
    0.2%), and form 5's slice classes code 5-12% below the order-0 bound that zstd
    approaches on the 1x1 kernels of PP-OCR det. Pooled, the tensors coded with
    zstd lend one rANS symbol per :data:`ANS_POOL_CODES_PER_SYMBOL` codes, spent
    where a symbol-per-code form would save most per code (at least
    :data:`ANS_POOL_MIN_LOSS` of the payload), whole tensors at a time; tensors
    under :data:`ANS_FREE_SYMBOLS` keep their free allowance as before.
    Returns {index in ``coded``: new payload} for the tensors that got smaller.
    """
    budget = 0  # the shares of the tensors that take no rANS form
    candidates = []
    for k, (codes, bits, payload) in enumerate(coded):
        n = int(codes.size)
        form = int(payload[4]) if payload.size > 4 else -1
        if form in (_ZSTD_DENSE, _ZSTD_MASK):
            budget += n // ANS_POOL_CODES_PER_SYMBOL
            if n <= ANS_FREE_SYMBOLS:  # lcz_encode tried every form already
                continue
            saved = payload.size - entropy_bound_bytes(codes) - _ANS_GAIN_FLOOR_BYTES
            classes = _best_class_model(codes, _stats(_to_unsigned(codes, bits), bits), bits)
            if classes is not None:
                saved = max(saved, payload.size - len(LCZ_MAGIC) - classes[0])
            if saved > ANS_POOL_MIN_LOSS * payload.size:
                candidates.append((saved / n, k))
    out: dict[int, np.ndarray] = {}
    for _, k in sorted(candidates, reverse=True):
        codes, bits, payload = coded[k]
        if codes.size > budget:
            continue
        forms = _forms(codes, bits, int(codes.size), zstd=False)  # the zstd ones: ``payload``
        best = min(forms, key=len, default=None)
        if best is not None and len(best) < payload.size:
            out[k] = np.frombuffer(best, dtype=np.uint8)
            budget -= codes.size if best[4] in (_ANS_DIRECT, _ANS_PARAM, _RANGE_CLASSES) else 0
    return out


def lcz_size_estimate(codes: np.ndarray, bits: int) -> float:
    """About the bytes a file stores for ``codes`` (:func:`lcz_encode`'s payload,
    :func:`bare_lcz`), without coding them.

    The order-0 bound plus, where a rANS form is allowed (:data:`ANS_FREE_SYMBOLS`,
    :data:`ANS_CODES_PER_SYMBOL`), its header and table; elsewhere zstd's Huffman loss
    and frame (about 1% and 30 bytes). For the quantization pass's size budget.
    """
    counts = np.bincount(codes.reshape(-1).astype(np.int64) + _offset(bits))
    symbols = np.flatnonzero(counts)
    n = int(codes.size)
    if symbols.size <= 1:
        return 9.0 if n else 13.0
    present = counts[symbols]
    bound = float((present * np.log2(n / present)).sum() / 8)
    sparse = (n - int(present.max())) * (2 if symbols.size > 2 else 1)  # about its symbols
    if min(n, sparse) > max(ANS_FREE_SYMBOLS, n // ANS_CODES_PER_SYMBOL):
        return 1.01 * bound + 30
    rest = np.sort(present)[:-1]
    table = len(_symbol_set(symbols)) + 1 + len(_varints(rest))
    return bound + 1 + table + 4 + (3 if sparse < n else 0)


def lcz_decode(buf: np.ndarray | memoryview | bytes, bits: int, count: int) -> np.ndarray:
    """The signed codes of a payload written by :func:`lcz_encode` (ValueError if malformed)."""
    code_dtype(bits)
    raw = np.frombuffer(buf, dtype=np.uint8)
    if raw.size < 5 or raw[:4].tobytes() != LCZ_MAGIC:
        raise ValueError("entropy-coded payload does not start with LCZ1")
    form = int(raw[4])
    if form in (_ANS_DIRECT, _ANS_SPARSE, _ANS_PARAM, _RANGE_CLASSES):
        if count == 0:
            raise ValueError("rANS-coded payload for an empty tensor")
        if form == _RANGE_CLASSES:
            return _class_decode(raw, bits, count)
        if form == _ANS_PARAM:
            return _param_decode(raw, bits, count)
        return _ans_decode_form(raw, form, bits, count)
    if form == _ZSTD_DENSE:
        layout, pos = _read_layout(raw, 5, bits)
        return layout.codes(_unzstd(raw[pos:], layout.size(bits, count)), bits, count)
    if form == _ZSTD_MASK:
        mode, pos = _read_varint(raw, 5)
        others, pos = _read_varint(raw, pos)
        if mode >> bits or others > count:
            raise ValueError("masked entropy-coded payload has a bad header")
        layout, pos = _read_layout(raw, pos, bits)
        head = -(-count // 8)
        data = _unzstd(raw[pos:], head + layout.size(bits, others))
        differs = np.unpackbits(data[:head], count=count, bitorder="little").view(bool)
        if np.count_nonzero(differs) != others:
            raise ValueError("masked entropy-coded payload's mask does not match its count")
        out = np.full(count, mode - _offset(bits), dtype=code_dtype(bits))
        out[differs] = layout.codes(data[head:], bits, others)
        return out
    raise ValueError(f"entropy-coded payload has unknown form {form}")


# -- LCA1: the previous version's rANS layout ---------------------------------------------------
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
        model = _categorical(counts[symbols])
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
    model = _categorical(counts)
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


RAW_MIN_GAIN = 0.05
"""8/16-bit codes are entropy coded only when that saves at least this fraction of the raw bytes."""


def encode_codes(codes: np.ndarray, bits: int, entropy: bool) -> tuple[np.ndarray, str]:
    """The stored form of ``codes``: (uint8 payload, compress type name).

    8- and 16-bit codes are stored raw (``NONE``, int8/int16 little-endian), which
    loads with no decoding at all; with ``entropy`` the LCZ1 form replaces them
    when it saves at least :data:`RAW_MIN_GAIN` (trained 8-bit weights have 6-7
    bits of entropy; decoding costs about 0.4 ns per code). Other widths are
    bit-packed (``BITPACKING``); with ``entropy`` the LCZ1 form (``FSE``,
    :func:`lcz_encode`) replaces the packed one when it is smaller.
    """
    if bits in (8, 16):
        raw = np.ascontiguousarray(codes, dtype=code_dtype(bits).newbyteorder("<"))
        raw = raw.reshape(-1).view(np.uint8)
        if entropy and codes.size:
            coded = lcz_encode(codes, bits)
            if coded.size - len(LCZ_MAGIC) <= (1 - RAW_MIN_GAIN) * raw.size:
                return coded, "FSE"
        return raw, "NONE"
    payload = pack_bits(codes, bits)
    if entropy and codes.size:
        coded = lcz_encode(codes, bits)
        stored = coded.size - len(LCZ_MAGIC)  # the file leaves the magic out (bare_lcz)
        if stored < payload.size and stored <= (1 - MIN_GAIN) * payload.size:
            return coded, "FSE"
    return payload, "BITPACKING"


def bare_lcz(payload: np.ndarray) -> np.ndarray:
    """An LCZ1 payload as a file stores it: from the form byte on (docs/format.md).

    Every entropy-coded tensor of a file is LCZ1 (its metadata says so), so the
    4-byte magic would only repeat that: on PP-OCR's small classifier, 51 tensors
    of a few hundred codes, it was 0.7% of the coded bytes."""
    if payload[:4].tobytes() != LCZ_MAGIC:
        raise ValueError("not an LCZ1 payload")
    return payload[len(LCZ_MAGIC) :]


_FORM_NAMES = {
    _ZSTD_DENSE: "zstd",
    _ZSTD_MASK: "zstd mask",
    _ANS_DIRECT: "rANS",
    _ANS_SPARSE: "rANS runs",
    _ANS_PARAM: "rANS shape",
    _RANGE_CLASSES: "range",
}


def lcz_form_name(buf: np.ndarray | memoryview | bytes, bits: int, *, bare: bool = False) -> str:
    """A short name of an ``FSE`` payload's LCZ1 form, for ``inspect`` (form 5 with its
    number of classes: ``range 3 classes``); ``?`` where the payload is not LCZ1."""
    raw = np.frombuffer(buf, dtype=np.uint8)
    if not bare:
        if raw[:4].tobytes() != LCZ_MAGIC:
            return "?"
        raw = raw[4:]
    name = _FORM_NAMES.get(int(raw[0]), "?") if raw.size else "?"
    if raw.size and raw[0] == _RANGE_CLASSES:
        try:
            classes = (_read_varint(raw, 1)[0] >> 2 * bits) + 1
        except ValueError:
            return name
        name += f" {classes} classes" if classes > 1 else ""
    return name


def decode_codes(
    buf: np.ndarray | memoryview | bytes,
    kind: int,
    bits: int,
    count: int,
    dtype: np.dtype,
    *,
    bare: bool = False,
) -> np.ndarray:
    """Flat codes of a stored payload; ``dtype`` is the tensor's int8/int16 type for ``NONE``.

    ``bare``: ``FSE`` payloads are LCZ1 without their magic (:func:`bare_lcz`)."""
    if kind == COMPRESS_TYPES["NONE"]:
        raw = np.frombuffer(buf, dtype=np.uint8)
        if raw.size != count * dtype.itemsize:
            raise ValueError(f"{raw.size} bytes of codes, expected {count * dtype.itemsize}")
        return raw.view(dtype.newbyteorder("<")).astype(dtype)
    if kind == COMPRESS_TYPES["BITPACKING"]:
        return unpack_bits(buf, bits, count)
    if kind == COMPRESS_TYPES["FSE"]:
        if bare:
            magic = np.frombuffer(LCZ_MAGIC, np.uint8)
            return lcz_decode(np.concatenate([magic, np.frombuffer(buf, np.uint8)]), bits, count)
        head = bytes(np.frombuffer(buf, dtype=np.uint8)[:4])
        if head == LCZ_MAGIC:
            return lcz_decode(buf, bits, count)
        if head == ANS_MAGIC:
            return ans_decode(buf, bits, count)
        raise ValueError("FSE-coded weights in MindSpore Lite's own layout are not supported")
    raise ValueError(f"weightQuantCompressType {kind} is not supported")
