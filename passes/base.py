"""The pass contract.

A pass mutates a graph in place and returns :class:`PassResult` saying
whether it changed anything. Passes never know which framework a node came
from; they read ops, traits and attributes from the IR vocabulary.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

from ir import Graph

__all__ = ["Pass", "PassContext", "PassResult"]


@dataclass
class PassResult:
    graph: Graph
    modified: bool


@dataclass
class PassContext:
    """Options passes read (explicit, never global)."""

    # constant folding never produces a constant larger than this many bytes
    # unless it is no larger than the constants it replaces
    fold_size_limit: int = 64 << 10
    options: dict[str, Any] = field(default_factory=dict)


class Pass(abc.ABC):
    """Base class: subclasses implement :meth:`run` and set ``name``."""

    name: str = ""

    def __init__(self, ctx: PassContext | None = None) -> None:
        self.ctx = ctx or PassContext()
        if not self.name:
            self.name = type(self).__name__

    @abc.abstractmethod
    def run(self, graph: Graph) -> bool:
        """Transform ``graph`` in place; return True when it changed."""

    def __call__(self, graph: Graph) -> PassResult:
        return PassResult(graph, bool(self.run(graph)))
