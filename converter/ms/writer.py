"""Writes an IR graph as a MindSpore Lite ``.ms`` file (FlatBuffers, identifier MSL2).

Layout (details in docs/format.md): ``MetaGraph.allTensors`` and ``nodes`` are
global lists; ``subGraph[0]`` is the main graph and every If/Loop/Scan body is
one more SubGraph entry (bodies' nodes may read outer tensors directly).
Nodes use a mapped primitive where the mapping is lossless
(:mod:`converter.ms.primitives`), else ``Custom``. Constant payloads of 4 KiB
and more are 64-byte aligned, smaller ones aligned to their element size, so
the reader maps them zero-copy. What MSL2 has no field for
(symbolic dims, IR types without a TypeId, omitted optional inputs, quant
axis, opset) goes to a JSON metadata tensor named ``liteconv.meta`` appended
last to ``allTensors`` and referenced by no subgraph.

Weight-quantized constants (``Value.meta["quant_codes"]``, set by
``passes.quant.weight``) are stored as their integer codes: int8/int16
``dataType``, ``quantParams`` per channel, ``quantClusters`` for k-means
codebooks, the codes raw (8/16 bits), bit-packed or ANS-coded
(``weightQuantCompressType``, :mod:`converter.ms.codec`), and their consumers'
``CNode.quantType`` = QUANT_WEIGHT. The float type they dequantize to is kept in
the metadata tensor. Codes that no longer reproduce the constant (a pass
changed it after quantization) are dropped and the floats written instead.

Large models: constants at or above ``external_threshold`` bytes, and the
largest ones while inline data would exceed ``inline_limit`` (FlatBuffers
offsets are 32-bit), are streamed to ``<file>.weights`` next to the model and
referenced through ``Tensor.externalData``. Files are written to a temporary
name in the target folder and renamed into place.
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import struct
import tempfile
import zlib
from pathlib import Path
from typing import Any

import flatbuffers
import numpy as np

from converter.ms import attrs as attr_codec
from converter.ms.codec import (
    COMPRESS_TYPES,
    bare_lcz,
    code_dtype,
    dequantize,
    encode_codes,
    pooled_ans,
)
from converter.ms.dtypes import encode_payload, has_typeid, typeid
from converter.ms.fbs import FILE_IDENTIFIER, Blob, Decoder, build_table
from converter.ms.primitives import (
    KHWC,
    KHWC_PERM,
    applicable,
    decode_primitive,
    khwc_weights,
    same_attrs,
)
from ir import DataType, Graph, Node, Trait, Value, get_op, has_op

__all__ = ["INLINE_LIMIT", "META_NAME", "serialize", "write_ms"]

INLINE_LIMIT = 3 << 29  # 1.5 GiB of inline tensor data at most
META_NAME = "liteconv.meta"
META_VERSION = 1
ALIGN = 64
SMALL_TENSOR_BYTES = 4096  # smaller constants align to their element size only
VERSION = "liteconv 0.1.0"
FMK_TYPES = {"tf": 0, "caffe": 1, "onnx": 2, "ms": 3, "tflite": 4, "pytorch": 5}
NODE_VALUE, NODE_PARAMETER, NODE_CNODE = 0, 1, 2  # schema NodeType
QUANT_WEIGHT = 4  # schema QuantType
_CHUNK = 1 << 26
_WEIGHT_FLOATS = (DataType.FLOAT, DataType.FLOAT16, DataType.DOUBLE, DataType.BFLOAT16)

logger = logging.getLogger(__name__)


class _Plan:
    """Global numbering of subgraphs, tensors and nodes."""

    def __init__(self, graph: Graph) -> None:
        unique = {id(g): g for g in graph.all_graphs()}  # one body may sit in two attributes
        self.graphs = list(unique.values())
        self.graph_index = {id(g): i for i, g in enumerate(self.graphs)}
        self.values: list[Value] = []
        self.value_index: dict[int, int] = {}
        self.nodes: list[Node] = []
        self.omitted: int | None = None
        for g in self.graphs:
            for v in g.values():
                self._add(v)
            for n in g.nodes:
                self.nodes.append(n)
                if any(v is None for v in n.inputs) and self.omitted is None:
                    self.omitted = len(self.values)
                    self.values.append(Value(""))
        self.node_index = {id(n): i for i, n in enumerate(self.nodes)}

    def _add(self, v: Value) -> None:
        if id(v) not in self.value_index:
            self.value_index[id(v)] = len(self.values)
            self.values.append(v)

    def index(self, v: Value | None) -> int:
        return self.omitted if v is None else self.value_index[id(v)]  # type: ignore[return-value]

    def subgraph_index(self, g: Graph) -> int:
        return self.graph_index[id(g)]


def _as_bytes(payload: np.ndarray | bytes) -> memoryview:
    if isinstance(payload, bytes):
        return memoryview(payload)
    return memoryview(np.ascontiguousarray(payload).reshape(-1).view(np.uint8))


# -- primitives -------------------------------------------------------------------
def _primitive(node: Node, plan: _Plan) -> tuple[str, dict[str, Any]]:
    mapping = applicable(node)
    if mapping is not None:
        fields = mapping.encode(node)
        if fields is not None and _lossless(node, mapping.primitive, fields):
            return mapping.primitive, fields
    attr_list = [
        {"name": name, "data": Blob(attr_codec.encode_attr(v, plan.subgraph_index), align=1)}
        for name, v in node.attrs.items()
    ]
    return "Custom", {"type": node.op, "attr": attr_list}


def _lossless(node: Node, primitive: str, fields: dict[str, Any]) -> bool:
    """Write the table, read it back, decode: same op and same attributes?"""
    b = flatbuffers.Builder(256)
    b.Finish(build_table(b, primitive, fields))
    buf = b.Output()
    decoded = Decoder(buf).table(struct.unpack_from("<I", buf, 0)[0], primitive)
    result = decode_primitive(primitive, decoded, len(node.inputs))
    if result is None or result[0] != node.op:
        return False
    return same_attrs(node.op, node.attrs, result[1])


# -- tensors ------------------------------------------------------------------------
def _dims(v: Value) -> list[int]:
    if v.shape is None:
        return []
    out = []
    for d in v.shape:
        if isinstance(d, (int, np.integer)) and not isinstance(d, bool):
            if not -1 <= int(d) < 2**31:
                raise ValueError(f"tensor {v.name!r}: dimension {d} does not fit in int32")
            out.append(int(d))
        else:
            out.append(-1)
    return out


def _nhwc_values(plan: _Plan) -> set[int]:
    out: set[int] = set()
    for n in plan.nodes:
        if has_op(n.op) and get_op(n.op).has(Trait.LAYOUT_SENSITIVE) and n.attr("format") == "NHWC":
            for v in (n.input(0), n.outputs[0] if n.outputs else None):
                if v is not None:
                    out.add(id(v))
    return out


def _quant_params(v: Value) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    q = v.quant
    assert q is not None
    scale = np.asarray(q.scale).reshape(-1)
    zp = np.broadcast_to(np.asarray(q.zero_point), np.asarray(q.scale).shape).reshape(-1)
    params = []
    for i in range(scale.size):
        p: dict[str, Any] = {
            "scale": float(scale[i]),
            "zeroPoint": int(zp[i]),
            "numBits": int(q.num_bits),
            "inited": True,
        }
        if q.min is not None:
            p["min"] = float(np.asarray(q.min).reshape(-1)[i])
        if q.max is not None:
            p["max"] = float(np.asarray(q.max).reshape(-1)[i])
        params.append(p)
    # the metadata keeps what quantParams cannot say, and only where it differs from the
    # usual (float32 scales, int32 zero points, one per channel, no min/max): the reader
    # fills in those defaults (docs/format.md)
    info: dict[str, Any] = {} if q.axis is None else {"axis": q.axis}
    usual = {"scale": ["FLOAT", [len(params)]], "zero_point": ["INT32", [len(params)]]}
    arrays = {"scale": q.scale, "zero_point": q.zero_point, "min": q.min, "max": q.max}
    for key, arr in arrays.items():
        spec = None if arr is None else _arr_info(arr)
        if spec != usual.get(key):
            info[key] = spec
    return params, info


def _arr_info(a: Any) -> list[Any]:
    arr = np.asarray(a)
    return [DataType.from_numpy(arr.dtype).name, list(arr.shape)]


class _Coded:
    """The stored form of a weight-quantized constant."""

    __slots__ = ("bits", "clusters", "kind", "payload")

    def __init__(self, payload: np.ndarray, kind: str, bits: int, clusters: Any) -> None:
        self.payload, self.kind, self.bits, self.clusters = payload, kind, bits, clusters


def _weight_codes(v: Value) -> _Coded | None:
    """The codes of a weight-quantized constant, if they still reproduce its floats."""
    codes, q = v.meta.get("quant_codes"), v.quant
    if codes is None or q is None or v.const is None or v.dtype not in _WEIGHT_FLOATS:
        return None
    clusters = v.meta.get("quant_clusters")
    try:
        codes = np.asarray(codes)
        if codes.shape != v.const.shape or codes.dtype != code_dtype(q.num_bits):
            raise ValueError("codes do not match the constant's shape or the bit width")
        floats = dequantize(
            codes, q.scale, q.zero_point, q.axis, q.num_bits, v.const.dtype, clusters
        )
        if not np.array_equal(floats, v.const):
            raise ValueError("dequantized codes differ from the constant")
    except (ValueError, IndexError, TypeError) as exc:
        logger.warning("tensor %r: writing floats, not its quantized codes (%s)", v.name, exc)
        return None
    payload, kind = encode_codes(codes, q.num_bits, bool(v.meta.get("quant_encode", True)))
    return _Coded(payload, kind, q.num_bits, clusters)


class _Writer:
    def __init__(self, graph: Graph, fmk: str | None) -> None:
        self.graph = graph
        self.plan = _Plan(graph)
        self.fmk = fmk or str(graph.meta.get("framework", "onnx"))
        self.meta: dict[str, Any] = {"liteconv": META_VERSION, "opset": dict(graph.opset)}
        self.coded: dict[int, _Coded] = {}
        for i, v in enumerate(self.plan.values):
            coded = _weight_codes(v) if v.const is not None else None
            if coded is not None:
                self.coded[i] = coded
        self._pool_ans()
        self._bare_lcz()
        khwc = khwc_weights(self.plan.nodes)  # NHWC conv weights are stored KHWC
        self.khwc = {
            i for i, v in enumerate(self.plan.values) if id(v) in khwc and i not in self.coded
        }

    def _pool_ans(self) -> None:
        """Re-code the tensors that gain most from rANS within the model's allowance
        (codec.pooled_ans)."""
        fse = [i for i, c in self.coded.items() if c.kind == "FSE"]
        items = [
            (np.asarray(self.plan.values[i].meta["quant_codes"]), self.coded[i].bits,
             self.coded[i].payload)
            for i in fse
        ]  # fmt: skip
        for k, payload in pooled_ans(items).items():
            self.coded[fse[k]].payload = payload

    def _bare_lcz(self) -> None:
        """Store the entropy-coded payloads from their form byte on (codec.bare_lcz); the
        metadata's ``lcz_magic: false`` tells readers (files before it hold the magic)."""
        fse = [c for c in self.coded.values() if c.kind == "FSE"]
        for c in fse:
            c.payload = bare_lcz(c.payload)
        if fse:
            self.meta["lcz_magic"] = False

    def payload(self, i: int) -> np.ndarray | bytes:
        """The bytes stored for constant ``i`` (its codes when weight-quantized)."""
        coded = self.coded.get(i)
        if coded is not None:
            return coded.payload
        const = self.plan.values[i].const
        return encode_payload(np.transpose(const, KHWC_PERM) if i in self.khwc else const)

    def alignment(self, i: int) -> int:
        """Where constant ``i``'s data starts: 64-byte boundaries for tensors of 4 KiB and
        more (zero-copy, SIMD-friendly views), its element size for smaller ones (a small
        model has hundreds of them; 64-byte padding cost PP-OCR's 0.5 MB classifier 2%)."""
        payload = self.payload(i)
        nbytes = _as_bytes(payload).nbytes
        if nbytes >= SMALL_TENSOR_BYTES:
            return ALIGN
        return int(payload.dtype.itemsize) if isinstance(payload, np.ndarray) else 1

    # which constants leave the flatbuffer
    def choose_external(self, threshold: int | None, limit: int) -> list[int]:
        sizes = {
            i: _as_bytes(self.payload(i)).nbytes
            for i, v in enumerate(self.plan.values)
            if v.const is not None and v.dtype != DataType.STRING
        }
        chosen = {i for i, n in sizes.items() if threshold is not None and n >= threshold}
        inline = sum(n for i, n in sizes.items() if i not in chosen)
        for i in sorted(sizes, key=lambda k: -sizes[k]):
            if inline <= limit:
                break
            if i not in chosen:
                chosen.add(i)
                inline -= sizes[i]
        return sorted(chosen)

    def stream_weights(self, indices: list[int], path: Path) -> dict[int, dict[str, Any]]:
        """Write external payloads to ``path`` (atomically); returns ExternalData per tensor."""
        refs: dict[int, dict[str, Any]] = {}
        with _atomic(path) as f:
            offset = 0
            for i in indices:
                pad = -offset % ALIGN
                f.write(b"\0" * pad)
                offset += pad
                data = _as_bytes(self.payload(i))
                crc = 0
                for start in range(0, data.nbytes, _CHUNK):
                    chunk = data[start : start + _CHUNK]
                    f.write(chunk)
                    crc = zlib.crc32(chunk, crc)
                refs[i] = {
                    "checkSum": f"crc32:{crc:08x}",
                    "location": path.name,
                    "offset": offset,
                    "length": data.nbytes,
                }
                offset += data.nbytes
        return refs

    def tensor(
        self,
        i: int,
        v: Value,
        external: dict[int, dict[str, Any]],
        nhwc: set[int],
        kinds: dict[int, int],
    ) -> dict[str, Any]:
        t: dict[str, Any] = {
            "nodeType": kinds.get(i, NODE_PARAMETER),
            "dataType": typeid(v.dtype),
            "dims": [_dims(v)[a] for a in KHWC_PERM] if i in self.khwc else _dims(v),
            "format": KHWC if i in self.khwc else 1 if id(v) in nhwc else 0,
            "name": v.name,
        }
        key = str(i)
        if v.shape is None:
            self.meta.setdefault("unknown_rank", []).append(i)
        elif any(not isinstance(d, (int, np.integer)) for d in v.shape):
            self.meta.setdefault("shapes", {})[key] = [
                d if d is None or isinstance(d, str) else int(d) for d in v.shape
            ]
        if not has_typeid(v.dtype):
            self.meta.setdefault("dtypes", {})[key] = v.dtype.name
        if v.const is not None:
            if i in external:
                t["externalData"] = [external[i]]
            else:
                t["data"] = Blob(_as_bytes(self.payload(i)), self.alignment(i))
        if v.quant is not None:
            t["quantParams"], self.meta.setdefault("quant", {})[key] = _quant_params(v)
        coded = self.coded.get(i)
        if coded is not None:
            t["dataType"] = typeid(DataType.from_numpy(code_dtype(coded.bits)))
            t["weightQuantCompressType"] = COMPRESS_TYPES[coded.kind]
            if coded.clusters is not None:
                t["quantClusters"] = np.asarray(coded.clusters, dtype=np.float32)
            self.meta.setdefault("weight_quant", {})[key] = v.dtype.name
        return t

    def node_kinds(self) -> dict[int, int]:
        kinds: dict[int, int] = {}
        for i, v in enumerate(self.plan.values):
            if v.const is not None:
                kinds[i] = NODE_VALUE
            elif v.producer is not None:
                kinds[i] = NODE_CNODE
        if self.plan.omitted is not None:
            kinds[self.plan.omitted] = NODE_VALUE
        return kinds

    def build(self, external: dict[int, dict[str, Any]]) -> flatbuffers.Builder:
        plan = self.plan
        if plan.omitted is not None:
            self.meta["omitted"] = plan.omitted
        nhwc, kinds = _nhwc_values(plan), self.node_kinds()
        tensors = [self.tensor(i, v, external, nhwc, kinds) for i, v in enumerate(plan.values)]
        meta = json.dumps(self.meta, sort_keys=True).encode("utf-8")
        tensors.append(
            {
                "nodeType": NODE_VALUE,
                "dataType": 37,
                "dims": [len(meta)],
                "data": Blob(meta, 8),
                "name": META_NAME,
            }
        )
        nodes = []
        for n in plan.nodes:
            primitive, fields = _primitive(n, plan)
            inputs = [plan.index(v) for v in n.inputs]
            nodes.append(
                {
                    "name": n.name,
                    "nodeType": NODE_CNODE,
                    "primitive": {"value": (primitive, fields)},
                    "inputIndex": inputs,
                    "outputIndex": [plan.index(v) for v in n.outputs],
                    "quantType": QUANT_WEIGHT if any(i in self.coded for i in inputs) else None,
                }
            )
        subgraphs = [
            {
                "name": g.name,
                "inputIndices": [plan.index(v) for v in g.inputs],
                "outputIndices": [plan.index(v) for v in g.outputs],
                "nodeIndices": [plan.node_index[id(n)] for n in g.nodes],
                "tensorIndices": sorted({plan.index(v) for v in g.values()}),
            }
            for g in plan.graphs
        ]
        inline = sum(
            t["data"].data.nbytes
            for t in tensors
            if "data" in t and isinstance(t["data"].data, memoryview)
        )
        size = min(inline + ALIGN * len(tensors) + (1 << 20), flatbuffers.Builder.MAX_BUFFER_SIZE)
        b = _lazy_builder(size)
        root = build_table(
            b,
            "MetaGraph",
            {
                "name": self.graph.name,
                "version": VERSION,
                "fmkType": FMK_TYPES.get(self.fmk.lower(), 2),
                "inputIndex": subgraphs[0]["inputIndices"],
                "outputIndex": subgraphs[0]["outputIndices"],
                "nodes": nodes,
                "allTensors": tensors,
                "subGraph": subgraphs,
            },
        )
        b.Finish(root, FILE_IDENTIFIER)
        return b


class _LazyBuilder(flatbuffers.Builder):
    __slots__ = ("deferred", "shared")


def _lazy_builder(size: int) -> flatbuffers.Builder:
    """A builder over an anonymous memory map whose large blobs are deferred.

    Pages of the map are only backed by memory once written, and deferred blobs
    (see ``fbs.DEFER_BYTES``) are never written into it: they are streamed from
    the constants' own buffers by :func:`_segments`. So writing a model costs
    about the size of its non-weight parts, not a second copy of its weights.
    """
    b = _LazyBuilder(0)
    b.Bytes = mmap.mmap(-1, max(size, 1))
    b.head = len(b.Bytes)
    b.deferred = []
    b.shared = {}
    return b


def _segments(b: flatbuffers.Builder):
    """The finished buffer as consecutive memoryviews (deferred blobs from their source)."""
    whole = memoryview(b.Bytes)
    pos = b.Head()
    for from_end, data in sorted(getattr(b, "deferred", []), key=lambda d: -d[0]):
        start = len(whole) - from_end
        yield whole[pos:start]
        for i in range(0, data.nbytes, _CHUNK):
            yield data[i : i + _CHUNK]
        pos = start + data.nbytes
    yield whole[pos:]


class _atomic:  # noqa: N801  (context manager used like a function)
    """Open a temporary file next to ``path``; rename it over ``path`` on success."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> Any:
        fd, self.tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        self.file = os.fdopen(fd, "wb")
        return self.file

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.file.close()
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            os.unlink(self.tmp)


def serialize(graph: Graph, *, fmk: str | None = None) -> bytes:
    """The .ms bytes of ``graph`` with every constant inline."""
    writer = _Writer(graph, fmk)
    return b"".join(_segments(writer.build({})))


def write_ms(
    graph: Graph,
    path: str | os.PathLike[str],
    *,
    external_threshold: int | None = None,
    inline_limit: int = INLINE_LIMIT,
    fmk: str | None = None,
) -> list[Path]:
    """Write ``graph`` to ``path``; large constants go to ``<path>.weights``.

    Returns the files written (the model, then the weights file if any).

    ``external_threshold``: constants of at least this many bytes are stored
    externally (None: only as many as needed to keep ``inline_limit``).
    ``fmk``: source framework for MetaGraph.fmkType (default graph.meta["framework"]
    or "onnx").
    """
    path = Path(path)
    weights = path.with_name(path.name + ".weights")
    writer = _Writer(graph, fmk)
    indices = writer.choose_external(external_threshold, inline_limit)
    external = writer.stream_weights(indices, weights) if indices else {}
    builder = writer.build(external)
    with _atomic(path) as f:
        for segment in _segments(builder):
            f.write(segment)
    if not indices and weights.exists():
        weights.unlink()  # a stale side file of an earlier write
    return [path, weights] if indices else [path]
