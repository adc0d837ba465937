"""PassManager: runs passes and fixed-point groups, timing and counting each.

Instruments observe every pass run (timing, node counts, a dump of the graph
after each pass). ``FixedPoint`` repeats its passes until none changes the
graph (or ``max_steps`` rounds ran).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ir import Graph
from passes.base import Pass

__all__ = ["FixedPoint", "PassManager", "PassRecord"]

logger = logging.getLogger(__name__)


@dataclass
class PassRecord:
    name: str
    seconds: float
    nodes_before: int
    nodes_after: int
    modified: bool


@dataclass
class FixedPoint:
    """Repeat ``passes`` in order until a full round changes nothing."""

    passes: Sequence[Pass | FixedPoint]
    max_steps: int = 10
    name: str = "fixed_point"


Instrument = Callable[[Pass, Graph, PassRecord, int], None]
"""Called after every pass run: (pass, graph, record, sequence number)."""


@dataclass
class PassManager:
    passes: Sequence[Pass | FixedPoint]
    instruments: list[Instrument] = field(default_factory=list)
    records: list[PassRecord] = field(default_factory=list)

    def run(self, graph: Graph) -> bool:
        """Run every pass; True when any changed the graph."""
        return self._run_seq(self.passes, graph)

    def _run_seq(self, passes: Sequence[Pass | FixedPoint], graph: Graph) -> bool:
        changed = False
        for p in passes:
            if isinstance(p, FixedPoint):
                for _ in range(p.max_steps):
                    if not self._run_seq(p.passes, graph):
                        break
                    changed = True
                else:
                    logger.debug("%s stopped after %d rounds", p.name, p.max_steps)
            else:
                changed |= self._run_one(p, graph)
        return changed

    def _run_one(self, p: Pass, graph: Graph) -> bool:
        before = sum(1 for _ in graph.all_nodes())
        start = time.perf_counter()
        modified = p(graph).modified
        record = PassRecord(
            name=p.name,
            seconds=time.perf_counter() - start,
            nodes_before=before,
            nodes_after=sum(1 for _ in graph.all_nodes()),
            modified=modified,
        )
        self.records.append(record)
        logger.debug(
            "%s: %d -> %d nodes in %.3fs", p.name, before, record.nodes_after, record.seconds
        )
        for instrument in self.instruments:
            instrument(p, graph, record, len(self.records))
        return modified

    def summary(self) -> list[dict]:
        """Per pass name: runs, total seconds, nodes removed."""
        agg: dict[str, dict] = {}
        for r in self.records:
            a = agg.setdefault(r.name, {"pass": r.name, "runs": 0, "seconds": 0.0, "removed": 0})
            a["runs"] += 1
            a["seconds"] += r.seconds
            a["removed"] += r.nodes_before - r.nodes_after
        return list(agg.values())
