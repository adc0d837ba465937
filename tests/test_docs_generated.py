"""Generated docs match the code that generates them."""

from __future__ import annotations

from benchmarks.frontend_ops import DOC, render, tables


def test_frontends_doc_is_current():
    """docs/frontends.md equals what the parser tables generate (rerun --write-docs)."""
    assert DOC.read_text() == render(tables())
