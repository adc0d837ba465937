"""Which weights stay trainable: marking constants that no pass may bake into new ones.

A model converted for on-device training (MindSpore Lite ``--trainModel``)
keeps some layers trainable; the passes must then leave those weights as they
are: a BatchNormalization folded into a trainable conv weight, a bias merged
into a new constant, or two equal zero-initialized biases deduplicated into
one would all break training.

:func:`mark_trainable` sets ``value.meta["trainable"] = True`` on the
trainable constants (:func:`is_trainable` reads it):

- ``trainable``: names of constants (initializers), marked whatever their
  dtype, or of nodes, whose *weights* are marked;
- ``freeze_until``: a node name; the nodes up to and including it, in
  topological order (a node's body nodes right after it), are frozen, and the
  weights of every later node are trainable.

A node's weights are its float constant inputs of rank >= 1 (scalars such as
an epsilon or GELU's ``sqrt(2)`` are fixed numbers, not parameters); a weight
read by a frozen node and by a trainable one is trainable.

The passes honour the mark: constant folding leaves a node reading a
trainable constant alone (shape-only ops excepted), constant deduplication
skips trainable constants, and the fusion engine refuses a rewrite that
creates constants while a matched node reads a trainable constant; rewrites
that keep the weight Value itself (conv + activation -> ConvAct) still fire.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from ir import Graph, Node, Value

__all__ = ["FreezeError", "FreezeReport", "is_trainable", "mark_trainable", "weights_of"]

logger = logging.getLogger(__name__)

TRAINABLE = "trainable"
"""The ``Value.meta`` key."""


class FreezeError(ValueError):
    """A trainable/freeze name that names nothing in the graph."""


@dataclass
class FreezeReport:
    """What :func:`mark_trainable` marked (JSON-able via :meth:`to_dict`)."""

    trainable: list[str] = field(default_factory=list)
    frozen_nodes: int = 0
    trainable_nodes: int = 0

    def to_dict(self) -> dict:
        return {
            "trainable_weights": len(self.trainable),
            "frozen_nodes": self.frozen_nodes,
            "trainable_nodes": self.trainable_nodes,
            "weights": self.trainable[:50],
        }


def is_trainable(v: Value | None) -> bool:
    """Whether ``v`` is a constant marked trainable."""
    return v is not None and v.const is not None and bool(v.meta.get(TRAINABLE))


def weights_of(node: Node) -> list[Value]:
    """The node's float constant inputs of rank >= 1, each once."""
    out: dict[int, Value] = {}
    for v in node.inputs:
        if v is None or v.const is None or id(v) in out:
            continue
        if v.dtype.is_float and v.const.ndim >= 1:
            out[id(v)] = v
    return list(out.values())


def _nested_nodes(graph: Graph) -> Iterator[Node]:
    """Nodes in topological order, each node's body nodes right after it."""
    for node in graph:
        yield node
        for sub in node.subgraphs():
            yield from _nested_nodes(sub)


def _constants_by_name(graph: Graph) -> dict[str, Value]:
    out: dict[str, Value] = {}
    for g in graph.all_graphs():
        for v in g.values():
            if v.const is not None:
                out.setdefault(v.name, v)
    return out


def _mark(v: Value, report: FreezeReport) -> None:
    if not v.meta.get(TRAINABLE):
        v.meta[TRAINABLE] = True
        report.trainable.append(v.name)


def _preview(names: Iterable[str], n: int = 8) -> str:
    names = list(names)
    head = ", ".join(names[:n])
    return head + (f", ... ({len(names)} in all)" if len(names) > n else "")


def mark_trainable(
    graph: Graph, trainable: Iterable[str] = (), freeze_until: str | None = None
) -> FreezeReport:
    """Mark the trainable constants of ``graph``; unknown names raise :class:`FreezeError`."""
    report = FreezeReport()
    names = [n.strip() for n in trainable if n.strip()]
    nodes = list(_nested_nodes(graph))
    if names:
        consts = _constants_by_name(graph)
        by_node = {n.name: n for n in nodes if n.name}
        unknown = [n for n in names if n not in consts and n not in by_node]
        if unknown:
            raise FreezeError(
                f"--trainable names no constant or node: {', '.join(unknown)} "
                f"(constants: {_preview(consts)}; nodes: {_preview(by_node)})"
            )
        for name in names:
            if name in consts:
                _mark(consts[name], report)
            else:
                for w in weights_of(by_node[name]):
                    _mark(w, report)
    if freeze_until is not None:
        index = next((i for i, n in enumerate(nodes) if n.name == freeze_until), None)
        if index is None:
            raise FreezeError(
                f"--freeze-until {freeze_until!r} is not a node name "
                f"(nodes: {_preview(n.name for n in nodes)})"
            )
        report.frozen_nodes = index + 1
        report.trainable_nodes = len(nodes) - index - 1
        for node in nodes[index + 1 :]:
            for w in weights_of(node):
                _mark(w, report)
    if report.trainable:
        logger.info("%d trainable weights: passes will not rewrite them", len(report.trainable))
    return report
