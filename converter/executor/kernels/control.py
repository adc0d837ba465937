"""control kernels (to be completed)."""

from __future__ import annotations

KERNELS: dict = {}
