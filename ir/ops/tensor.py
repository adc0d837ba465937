"""tensor ops (declarations to be completed)."""

from __future__ import annotations

OPS = ()
