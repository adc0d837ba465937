"""Helpers shared by the TFLite front-end tests: cached model builds, LiteRT comparison."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from converter.model import load
from converter.pipeline import convert
from converter.reference.tflite import run as run_litert


def build_cached(root: Path, name: str, form: str, **kwargs: object) -> Path:
    """``benchmarks.models_tflite.build`` into ``root`` (once per name/form/kwargs)."""
    from benchmarks.models_tflite import build

    tag = "_".join(f"{k}{v}" for k, v in sorted(kwargs.items()))
    path = root / f"{name}{'_' + tag if tag else ''}_{form}.tflite"
    if not path.exists():
        build(name, form, path, **kwargs)
    return path


def int8_feeds(graph_inputs: list, seed: int = 1) -> dict[str, np.ndarray]:
    """Full-range random int8 data (and standard normal floats) for every input."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for v in graph_inputs:
        shape = [d if isinstance(d, int) else 1 for d in v.shape]
        if v.dtype.numpy == np.int8:
            feeds[v.name] = rng.integers(-128, 128, size=shape).astype(np.int8)
        else:
            feeds[v.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def check_int8(src: Path, out: Path) -> int:
    """Convert ``src``, run the .ms and LiteRT on int8 data; the max |diff| in steps."""
    result = convert(src, fmk="TFLITE", output=out)
    feeds = int8_feeds(result.graph.inputs)
    got = load(result.output).run(feeds)
    ref = run_litert(src, feeds)
    worst = 0
    for name, r in ref.items():
        g = got[name]
        assert g.dtype == r.dtype and g.shape == r.shape, name
        worst = max(worst, int(np.max(np.abs(g.astype(np.int64) - r.astype(np.int64)))))
    return worst
