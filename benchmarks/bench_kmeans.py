"""k-means codebooks vs a uniform grid on the heaviest-tailed weights of a trained model.

    .venv/bin/python -m benchmarks.bench_kmeans [--model silero_vad] [--bits 3,4,5,6]

For the quantizable tensor with the largest kurtosis (silero-vad's ``encoder.3``:
a median |w| of 0.008 and outliers up to 55), one scale per tensor, the relative
L2 error of: the symmetric grid, Lloyd's iterations from quantile levels (the
previous codebook), and ``passes.quant.kmeans.codebook`` (optimal 1-D DP, then
Lloyd), as ``quantize_tensor(kmeans=True)`` builds it.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import onnx

from benchmarks.bench_compress import build
from converter.pipeline import optimize_graph, parse_model
from passes.quant.kmeans import lloyd
from passes.quant.weight import find_weights, quantize_tensor


def _rel(x: np.ndarray, levels: np.ndarray) -> float:
    mid = (levels[1:] + levels[:-1]) / 2
    return float(np.linalg.norm(x - levels[np.searchsorted(mid, x)]) / np.linalg.norm(x))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="silero_vad")
    ap.add_argument("--bits", default="3,4,5,6")
    args = ap.parse_args()
    model, shapes, _ = build(args.model, False)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "m.onnx"
        onnx.save(model, src)
        graph = parse_model(src, "ONNX", shapes)
    optimize_graph(graph, "full")
    sites, _ = find_weights(graph, min_channel=1)

    def kurtosis(w: np.ndarray) -> float:
        z = (w - w.mean()) / (w.std() or 1.0)
        return float(np.mean(z**4))

    site = max(sites, key=lambda s: kurtosis(np.asarray(s.value.const, np.float64).ravel()))
    w = np.asarray(site.value.const, np.float64)
    x = (w / np.abs(w).max()).ravel()
    print(f"{site.value.name}: {w.size} weights, kurtosis {kurtosis(w.ravel()):.0f}")
    print(f"{'bits':>4} {'grid':>8} {'lloyd':>8} {'codebook':>9}")
    for bits in (int(b) for b in args.bits.split(",")):
        k = 1 << bits
        grid = quantize_tensor(w, None, bits).rel_error
        old = _rel(x, lloyd(x, np.quantile(x, (np.arange(k) + 0.5) / k)))
        new = quantize_tensor(w, None, bits, kmeans=True).rel_error
        print(f"{bits:>4} {grid:>8.4f} {old:>8.4f} {new:>9.4f}")


if __name__ == "__main__":
    main()
