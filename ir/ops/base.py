"""How an op of the vocabulary is declared.

One :class:`OpDef` per op: its inputs and outputs (``"B?"`` optional,
``"inputs*"`` variadic), typed attributes with their defaults, traits, and a
type/shape inference function. Defaults live here and nowhere else: parsers
omit attributes equal to the default, and every consumer reads attributes
through :meth:`ir.Node.attr`.

Semantics follow the ONNX operator spec (latest opset) wherever ONNX defines
the op; parsers upgrade older forms (attributes that became inputs, ...).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ir.core import Node, Shape
    from ir.dtypes import DataType

__all__ = [
    "REQUIRED",
    "Attr",
    "AttrType",
    "InferFn",
    "OpDef",
    "Trait",
]


class AttrType(enum.Enum):
    INT = "int"
    FLOAT = "float"
    STRING = "string"
    INTS = "ints"
    FLOATS = "floats"
    STRINGS = "strings"
    TENSOR = "tensor"  # np.ndarray
    GRAPH = "graph"  # ir.Graph
    GRAPHS = "graphs"


class Trait(enum.Enum):
    """Properties passes query instead of lists of op names."""

    ELEMENTWISE = "elementwise"  # output[i] depends on input[i] only (with broadcast)
    UNARY = "unary"
    COMMUTATIVE = "commutative"
    ACTIVATION = "activation"  # elementwise, single float input, no state
    NO_OP_CANDIDATE = "no_op_candidate"  # may reduce to identity for some attrs
    LAYOUT_SENSITIVE = "layout_sensitive"  # carries a ``format`` attribute
    SHAPE_ONLY = "shape_only"  # output depends only on input shapes (Shape, Size)
    RANDOM = "random"  # not deterministic: never folded, never CSE'd
    CONTROL_FLOW = "control_flow"
    QUANTIZABLE = "quantizable"
    REDUCTION = "reduction"


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()


@dataclass(frozen=True)
class Attr:
    """A declared attribute: its type and default (REQUIRED when none)."""

    type: AttrType
    default: Any = None
    doc: str = ""

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


InferFn = Callable[["Node"], "list[tuple[DataType, Shape | None]]"]
"""Given a node whose input values carry dtype/shape, return (dtype, shape) per output."""


@dataclass(frozen=True)
class OpDef:
    """The declaration of one op."""

    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: Mapping[str, Attr] = field(default_factory=dict)
    traits: frozenset[Trait] = frozenset()
    infer: InferFn | None = None
    doc: str = ""
    domain: str = "ai.onnx"  # "ai.onnx", "com.microsoft" or "liteconv" (fused ops)

    def default(self, attr: str) -> Any:
        try:
            spec = self.attrs[attr]
        except KeyError:
            raise KeyError(f"op {self.name} has no attribute {attr!r}") from None
        if spec.required:
            raise KeyError(f"op {self.name}: required attribute {attr!r} is missing")
        return spec.default

    def has(self, trait: Trait) -> bool:
        return trait in self.traits

    @property
    def min_inputs(self) -> int:
        return sum(1 for i in self.inputs if not i.endswith(("?", "*")))

    @property
    def max_inputs(self) -> int | None:
        return None if any(i.endswith("*") for i in self.inputs) else len(self.inputs)

    @property
    def variadic_outputs(self) -> bool:
        return any(o.endswith(("*", "?")) for o in self.outputs)


def op(
    name: str,
    inputs: tuple[str, ...] | str,
    outputs: tuple[str, ...] | str = ("Y",),
    attrs: Mapping[str, Attr] | None = None,
    traits: set[Trait] | frozenset[Trait] = frozenset(),
    infer: InferFn | None = None,
    doc: str = "",
    domain: str = "ai.onnx",
) -> OpDef:
    """Shorthand constructor: ``op("Relu", "X", infer=same_as_input)``."""
    if isinstance(inputs, str):
        inputs = tuple(inputs.split())
    if isinstance(outputs, str):
        outputs = tuple(outputs.split())
    return OpDef(
        name=name,
        inputs=inputs,
        outputs=outputs,
        attrs=dict(attrs or {}),
        traits=frozenset(traits),
        infer=infer,
        doc=doc,
        domain=domain,
    )


# attribute shorthands used by the declaration modules
def INT(default: Any = REQUIRED) -> Attr:  # noqa: N802
    return Attr(AttrType.INT, default)


def FLOAT(default: Any = REQUIRED) -> Attr:  # noqa: N802
    return Attr(AttrType.FLOAT, default)


def STRING(default: Any = REQUIRED) -> Attr:  # noqa: N802
    return Attr(AttrType.STRING, default)


def INTS(default: Any = REQUIRED) -> Attr:  # noqa: N802
    return Attr(AttrType.INTS, default)


def FLOATS(default: Any = REQUIRED) -> Attr:  # noqa: N802
    return Attr(AttrType.FLOATS, default)


def STRINGS(default: Any = REQUIRED) -> Attr:  # noqa: N802
    return Attr(AttrType.STRINGS, default)


def TENSOR(default: Any = REQUIRED) -> Attr:  # noqa: N802
    return Attr(AttrType.TENSOR, default)


def GRAPH(default: Any = REQUIRED) -> Attr:  # noqa: N802
    return Attr(AttrType.GRAPH, default)
