"""liteconv's intermediate representation: framework-free graphs of typed values."""

from __future__ import annotations

from ir.core import Dim, Graph, IRError, Node, QuantParams, Shape, Value
from ir.dtypes import DataType
from ir.ops import Attr, AttrType, OpDef, Trait, all_ops, get_op, has_op

__all__ = [
    "Attr",
    "AttrType",
    "DataType",
    "Dim",
    "Graph",
    "IRError",
    "Node",
    "OpDef",
    "QuantParams",
    "Shape",
    "Trait",
    "Value",
    "all_ops",
    "get_op",
    "has_op",
]
