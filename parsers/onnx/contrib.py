"""Lowerings for ops of non-default ONNX domains (com.microsoft, ...).

Each entry of :data:`CONTRIB` is keyed by (domain, op type) and receives the
node and the builder, exactly like :data:`parsers.onnx.upgrades.UPGRADES`; it
emits IR nodes and returns True, or returns False to let the generic path
decide (an op declared in the IR with that domain lowers as-is; anything else
is reported as unsupported).
"""

from __future__ import annotations

from parsers.onnx.upgrades import Upgrade

__all__ = ["CONTRIB"]

CONTRIB: dict[tuple[str, str], Upgrade] = {}
