"""A loaded `.ms` model: ``converter.load(path).run(feeds)``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ir import Dim, Graph, Value

__all__ = ["Model", "TensorInfo", "load"]


@dataclass(frozen=True)
class TensorInfo:
    """A graph input or output: name, NumPy dtype, shape (str/None for dynamic dims)."""

    name: str
    dtype: np.dtype | None
    shape: tuple[Dim, ...] | None


def _info(v: Value) -> TensorInfo:
    try:
        dtype: np.dtype | None = v.dtype.numpy
    except TypeError:
        dtype = None
    return TensorInfo(v.name, dtype, v.shape)


class Model:
    """An IR graph read from a `.ms` file, ready to run in the NumPy executor."""

    def __init__(self, graph: Graph, path: Path | None = None) -> None:
        from converter.executor.runtime import Runtime

        self.graph = graph
        self.path = path
        self._runtime = Runtime(graph)

    @property
    def inputs(self) -> list[TensorInfo]:
        return [_info(v) for v in self.graph.inputs]

    @property
    def outputs(self) -> list[TensorInfo]:
        return [_info(v) for v in self.graph.outputs]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once; ``feeds`` and the result are keyed by graph input/output names."""
        return self._runtime.run(feeds)

    def __repr__(self) -> str:
        ins = ", ".join(f"{i.name}{list(i.shape or [])}" for i in self.inputs)
        outs = ", ".join(o.name for o in self.outputs)
        return f"Model({self.path}, inputs=[{ins}], outputs=[{outs}])"


def load(path: str | os.PathLike) -> Model:
    """Read a `.ms` file written by liteconv."""
    from converter.ms import read_ms

    p = Path(path)
    return Model(read_ms(p), p)
