"""Dead-node removal.

A node is live when one of its outputs is a graph output or is read by a live
node; a live control-flow node's bodies are swept the same way (from the
body's outputs) and every value its remaining body nodes read, outer values
included, is live. Everything else is removed, in every graph of the tree.
Constants are not nodes: one that nothing reads any more is simply gone. Graph
inputs are never removed (they are the model's signature).
"""

from __future__ import annotations

import logging

from ir import Graph
from passes.base import Pass

__all__ = ["RemoveDeadNodes"]

logger = logging.getLogger(__name__)


class RemoveDeadNodes(Pass):
    """Remove nodes whose outputs reach no graph output."""

    name = "RemoveDeadNodes"

    def run(self, graph: Graph) -> bool:
        return _sweep(graph, set())


def _sweep(graph: Graph, live: set[int]) -> bool:
    """Remove dead nodes of ``graph``; add the values it reads to ``live``."""
    live.update(id(v) for v in graph.outputs)
    dead = []
    changed = False
    for node in reversed(graph.nodes):
        if not any(id(o) in live for o in node.outputs):
            dead.append(node)
            continue
        live.update(id(v) for v in node.inputs if v is not None)
        for sub in node.subgraphs():
            changed |= _sweep(sub, live)
    if dead:
        for node in dead:  # a dropped body's reads of outer values must not keep use-lists
            for sub in node.subgraphs():
                for inner in sub.all_nodes():
                    inner.detach_inputs()
        logger.debug("removing %d dead node(s) from %s", len(dead), graph.name)
        graph.remove(dead)
    return changed or bool(dead)
