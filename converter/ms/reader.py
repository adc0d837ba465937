"""Reads a MindSpore Lite ``.ms`` file (MSL2) back into an IR graph.

The file is memory-mapped; constant payloads become read-only NumPy arrays
over the map (zero-copy) when aligned for their type, copies otherwise
(packed int4/uint4 and strings are always unpacked). External data
(``Tensor.externalData``) is mapped the same way from its side file. Primitives
are decoded through :mod:`converter.ms.primitives`, ``Custom`` ops through
:mod:`converter.ms.attrs`; the ``liteconv.meta`` tensor restores what MSL2 has
no field for. Anything malformed raises :class:`MsFormatError`.

Weight-quantized tensors (``weightQuantCompressType`` NONE/BITPACKING/FSE with
quantParams) are decoded to their codes and dequantized at load time
(:mod:`converter.ms.codec`): liteconv's files name the float type in the
metadata tensor; in other writers' files, int8/int16 weights read by a
``QUANT_WEIGHT`` CNode become float32. The Value then carries the floats as its
constant, ``quant`` and ``meta["quant_codes"]`` (``meta["quant_clusters"]``),
so writing it again stores the same codes. Every constant also gets
``meta["ms_stored_bytes"]`` and ``meta["ms_compression"]``, and an entropy-coded one
``meta["ms_coding"]``, its LCZ1 form (for ``inspect``).
"""

from __future__ import annotations

import json
import mmap
import os
from pathlib import Path
from typing import Any

import numpy as np

from converter.ms.attrs import decode_attr
from converter.ms.codec import COMPRESS_TYPES, decode_codes, dequantize, lcz_form_name
from converter.ms.dtypes import decode_payload, ir_dtype
from converter.ms.fbs import Decoder, MsFormatError, Span
from converter.ms.primitives import decode_primitive, restore_weight
from converter.ms.writer import META_NAME
from ir import DataType, Graph, IRError, Node, QuantParams, Value

__all__ = ["read_ms"]


def read_ms(path: str | os.PathLike[str]) -> Graph:
    """The IR graph stored in the .ms file at ``path``."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                raise MsFormatError(f"{path} is empty, not a .ms model")
            data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError as exc:
        raise MsFormatError(f"cannot open {path}: {exc.strerror or exc}") from None
    try:
        return _Reader(Decoder(data), path.parent).graph()
    except MsFormatError as exc:
        raise MsFormatError(f"{path}: {exc}") from None
    except (ValueError, TypeError, KeyError, IndexError, IRError, RecursionError) as exc:
        raise MsFormatError(f"{path} is not a valid .ms model ({exc})") from None


class _Reader:
    def __init__(self, dec: Decoder, folder: Path) -> None:
        self.dec = dec
        self.folder = folder
        self.mg = dec.table(dec.root(), "MetaGraph")
        self.tensors: list[dict[str, Any]] = self.mg["allTensors"] or []
        self.meta: dict[str, Any] = {}
        if self.tensors and self.tensors[-1]["name"] == META_NAME:
            self.meta = json.loads(bytes(self._bytes(self.tensors.pop()["data"])))
        self.side_files: dict[str, mmap.mmap] = {}
        self.weight_inputs = {
            i for n in self.mg["nodes"] or [] if n["quantType"] == 4 for i in n["inputIndex"] or []
        }

    def _bytes(self, span: Span | None) -> memoryview:
        return self.dec.bytes_of(span) if span is not None else memoryview(b"")

    # -- tensors ------------------------------------------------------------------
    def values(self) -> list[Value | None]:
        subgraphs = self.mg["subGraph"] or []
        graph_inputs = set(self.mg["inputIndex"] or [])
        for s in subgraphs:
            graph_inputs.update(s["inputIndices"] or [])
        produced = {i for n in self.mg["nodes"] or [] for i in n["outputIndex"] or []}
        omitted = self.meta.get("omitted")
        out: list[Value | None] = []
        for i, t in enumerate(self.tensors):
            if i == omitted:
                out.append(None)
                continue
            has_data = (t["data"] is not None and t["data"].length > 0) or t["externalData"]
            is_const = has_data or (t["nodeType"] == 0 and i not in graph_inputs | produced)
            out.append(self.value(i, t, bool(is_const)))
        return out

    def _dtype(self, i: int, t: dict[str, Any]) -> DataType:
        name = self.meta.get("dtypes", {}).get(str(i))
        if name is not None:
            return DataType[name]
        dtype = ir_dtype(t["dataType"])
        if dtype is None:
            raise MsFormatError(f"tensor {t['name']!r} has unsupported data type {t['dataType']}")
        return dtype

    def _shape(self, i: int, t: dict[str, Any]) -> tuple[Any, ...] | None:
        key = str(i)
        if i in self.meta.get("unknown_rank", ()):
            return None
        if key in self.meta.get("shapes", {}):
            return tuple(self.meta["shapes"][key])
        return tuple(None if d < 0 else d for d in t["dims"] or [])

    def value(self, i: int, t: dict[str, Any], is_const: bool) -> Value:
        dtype, shape = self._dtype(i, t), self._shape(i, t)
        quant = None
        if t["quantParams"]:
            quant = self.quant(t["quantParams"], self.meta.get("quant", {}).get(str(i)))
        if not is_const:
            v = Value(t["name"] or "", dtype, shape)
        else:
            if shape is None or any(not isinstance(d, int) for d in shape):
                raise MsFormatError(f"constant {t['name']!r} has no static shape")
            buf = self._data(t)
            float_type = self._weight_float_type(i, t, dtype, quant)
            if float_type is not None and quant is not None:
                v = self.weight(t, buf, dtype, shape, quant, float_type)
            else:
                array = self.payload(t, buf, dtype, shape)
                v = Value(t["name"] or "", const=restore_weight(array, t["format"]))
            kinds = {n: k for k, n in COMPRESS_TYPES.items()}
            v.meta["ms_stored_bytes"] = len(buf)
            v.meta["ms_compression"] = kinds.get(t["weightQuantCompressType"], "NONE")
            if v.meta["ms_compression"] == "FSE" and quant is not None:
                bare = self.meta.get("lcz_magic", True) is False
                v.meta["ms_coding"] = lcz_form_name(buf, quant.num_bits, bare=bare)
        v.quant = quant
        return v

    def _data(self, t: dict[str, Any]) -> memoryview:
        if t["externalData"]:
            return self._external(t["externalData"][0])
        return self._bytes(t["data"])

    def _weight_float_type(
        self, i: int, t: dict[str, Any], dtype: DataType, quant: QuantParams | None
    ) -> DataType | None:
        """The float type a weight-quantized constant dequantizes to (None: not one)."""
        name = self.meta.get("weight_quant", {}).get(str(i))
        if name is not None:
            if quant is None:
                raise MsFormatError(f"tensor {t['name']!r} is quantized but has no quantParams")
            return DataType[name]
        if self.meta or quant is None or dtype not in (DataType.INT8, DataType.INT16):
            return None  # liteconv's own files say so in their metadata
        if i in self.weight_inputs or t["weightQuantCompressType"] != 0:
            return DataType.FLOAT
        return None

    def weight(
        self,
        t: dict[str, Any],
        buf: memoryview,
        dtype: DataType,
        shape: tuple[int, ...],
        quant: QuantParams,
        float_type: DataType,
    ) -> Value:
        """A weight-quantized constant: codes decoded, floats dequantized."""
        count = int(np.prod(shape, dtype=np.int64))
        clusters = t["quantClusters"]
        clusters = np.asarray(clusters, dtype=np.float32) if clusters else None
        try:
            flat = decode_codes(
                buf, t["weightQuantCompressType"], quant.num_bits, count, dtype.numpy,
                bare=self.meta.get("lcz_magic", True) is False,
            )  # fmt: skip
            codes = flat.reshape(shape)
            floats = dequantize(
                codes, quant.scale, quant.zero_point, quant.axis, quant.num_bits,
                float_type.numpy, clusters,
            )  # fmt: skip
        except (ValueError, IndexError, TypeError) as exc:
            raise MsFormatError(f"tensor {t['name']!r}: {exc}") from None
        v = Value(t["name"] or "", const=floats)
        v.meta["quant_codes"] = codes
        if clusters is not None:
            v.meta["quant_clusters"] = clusters
        return v

    def payload(
        self, t: dict[str, Any], buf: memoryview, dtype: DataType, shape: tuple[int, ...]
    ) -> np.ndarray:
        try:
            return decode_payload(buf, dtype, shape, copy=False)
        except (ValueError, TypeError) as exc:
            raise MsFormatError(f"tensor {t['name']!r}: {exc}") from None

    def _external(self, ext: dict[str, Any]) -> memoryview:
        location = ext["location"] or ""
        target = (self.folder / location).resolve()
        if Path(location).is_absolute() or self.folder.resolve() not in target.parents:
            raise MsFormatError(f"external data location {location!r} leaves the model folder")
        mm = self.side_files.get(location)
        if mm is None:
            try:
                with open(target, "rb") as f:
                    mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            except (OSError, ValueError) as exc:
                raise MsFormatError(f"cannot map external data file {location!r}: {exc}") from None
            self.side_files[location] = mm
        offset, length = ext["offset"], ext["length"]
        if offset < 0 or length < 0 or offset + length > len(mm):
            raise MsFormatError(f"external data {location!r} is shorter than the model expects")
        return memoryview(mm)[offset : offset + length]

    @staticmethod
    def quant(params: list[dict[str, Any]], info: dict[str, Any] | None) -> QuantParams:
        def arr(key: str, spec: list[Any] | None) -> np.ndarray:
            values = np.array([p[key] for p in params])
            if spec is None:
                return values
            return values.astype(DataType[spec[0]].numpy).reshape(spec[1])

        # liteconv's writer leaves out the usual specs; a foreign file has no entry at all
        n = [len(params)]
        usual = [None, None] if info is None else [["FLOAT", n], ["INT32", n]]
        info = info or {}
        return QuantParams(
            scale=arr("scale", info.get("scale", usual[0])),
            zero_point=arr("zeroPoint", info.get("zero_point", usual[1])),
            axis=info.get("axis"),
            num_bits=params[0]["numBits"],
            min=arr("min", info["min"]) if info.get("min") else None,
            max=arr("max", info["max"]) if info.get("max") else None,
        )

    # -- graph --------------------------------------------------------------------
    def graph(self) -> Graph:
        values = self.values()
        subgraphs = self.mg["subGraph"] or [
            {
                "name": self.mg["name"],
                "inputIndices": self.mg["inputIndex"],
                "outputIndices": self.mg["outputIndex"],
                "nodeIndices": list(range(len(self.mg["nodes"] or []))),
            }
        ]
        graphs = [Graph(name=s["name"] or "") for s in subgraphs]
        graphs[0].opset = {k: int(v) for k, v in self.meta.get("opset", {}).items()}
        nodes = [self.node(c, values, graphs) for c in self.mg["nodes"] or []]
        pick = lambda idx: [self._value_at(values, i) for i in idx or []]  # noqa: E731
        for g, s in zip(graphs, subgraphs, strict=True):
            g.inputs = pick(s["inputIndices"])
            g.outputs = pick(s["outputIndices"])
            for ni in s["nodeIndices"] or []:
                g.append(nodes[ni])
        return graphs[0]

    @staticmethod
    def _value_at(values: list[Value | None], i: int) -> Value:
        v = values[i]
        if v is None:
            raise MsFormatError(f"tensor {i} is the omitted-input placeholder")
        return v

    def node(self, c: dict[str, Any], values: list[Value | None], graphs: list[Graph]) -> Node:
        prim = (c["primitive"] or {}).get("value")
        if prim is None:
            raise MsFormatError(f"node {c['name']!r} has no primitive")
        member, fields = prim
        inputs = [values[i] for i in c["inputIndex"] or []]
        outputs = [self._value_at(values, i) for i in c["outputIndex"] or []]
        if member == "Custom":
            op = fields["type"] or ""
            attrs = {}
            for a in fields["attr"] or []:
                attrs[a["name"]] = decode_attr(bytes(self._bytes(a["data"])), graphs.__getitem__)
        else:
            decoded = decode_primitive(member, fields, len(inputs))
            if decoded is None:
                raise MsFormatError(f"node {c['name']!r}: primitive {member} is not supported")
            op, attrs = decoded
        return Node(op, inputs, outputs, attrs, name=c["name"] or "")
