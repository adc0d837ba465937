"""contrib ops (declarations)."""

from __future__ import annotations

OPS: tuple = ()
