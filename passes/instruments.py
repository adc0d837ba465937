"""PassManager instruments: graph dumps after each pass and structural checks.

An instrument is called after every pass run as ``fn(pass, graph, record,
seq)`` (see :mod:`passes.manager`). The dump writer is a callback so that
passes stay framework-free: the caller hands in the ONNX exporter
(``converter.onnx_export``) or any ``exporter(graph, path)``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from ir import Graph, IRError
from ir.verify import check_graph
from passes.base import Pass
from passes.manager import Instrument, PassRecord

__all__ = ["Exporter", "dump_instrument", "verify_instrument"]

logger = logging.getLogger(__name__)

Exporter = Callable[[Graph, Path], None]


def dump_instrument(directory: str | Path, exporter: Exporter) -> Instrument:
    """Write ``NN_<pass>.onnx`` into ``directory`` after each pass that changed the graph.

    ``NN`` is the pass run's sequence number in the manager (so files sort in
    run order; a pass repeated in a fixed point gets one file per change).
    """
    out_dir = Path(directory)

    def instrument(p: Pass, graph: Graph, record: PassRecord, seq: int) -> None:
        if not record.modified:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{seq:02d}_{p.name}.onnx"
        logger.debug("dumping graph after %s to %s", p.name, path)
        exporter(graph, path)

    return instrument


def verify_instrument(p: Pass, graph: Graph, record: PassRecord, seq: int) -> None:
    """Run :func:`ir.verify.check_graph` after a pass that changed the graph."""
    if not record.modified:
        return
    try:
        check_graph(graph)
    except IRError as exc:
        raise IRError(f"graph invalid after pass {p.name} (run {seq}): {exc}") from exc
