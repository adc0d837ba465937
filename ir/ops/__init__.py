"""The op vocabulary: one :class:`OpDef` per op, gathered from explicit tables.

Each declaration module exports ``OPS`` (a tuple of OpDefs); this package
builds the registry from the modules listed in ``_MODULES``, in that order.
No import side effects beyond that: nothing registers itself.
"""

from __future__ import annotations

from ir.ops import contrib, control, elementwise, fused, nn, quant, reduce, tensor
from ir.ops.base import REQUIRED, Attr, AttrType, OpDef, Trait, op

__all__ = ["REQUIRED", "Attr", "AttrType", "OpDef", "Trait", "all_ops", "get_op", "has_op", "op"]

_MODULES = (elementwise, tensor, reduce, nn, control, quant, contrib, fused)


def _build() -> dict[str, OpDef]:
    registry: dict[str, OpDef] = {}
    for module in _MODULES:
        for opdef in module.OPS:
            if opdef.name in registry:
                raise RuntimeError(f"op {opdef.name} declared twice ({module.__name__})")
            registry[opdef.name] = opdef
    return registry


_REGISTRY = _build()


def get_op(name: str) -> OpDef:
    """The declaration of op ``name``; KeyError when it is not in the vocabulary."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"op {name!r} is not in the IR vocabulary") from None


def has_op(name: str) -> bool:
    return name in _REGISTRY


def all_ops() -> dict[str, OpDef]:
    """Name -> OpDef for the whole vocabulary (a copy)."""
    return dict(_REGISTRY)
