"""Regenerate examples/mobilenet_tiny.onnx (the model `make demo` converts).

    .venv/bin/python -m examples.make_demo_model

A MobileNetV2 at width 0.35 on 96x96 images, 10 classes, random weights
(seed 0): small enough to ship, real enough to exercise conv, depthwise conv,
BatchNormalization, Clip, Add, GlobalAveragePool, Flatten and Gemm.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from benchmarks.models import mobilenet_v2

if __name__ == "__main__":
    out = Path(__file__).with_name("mobilenet_tiny.onnx")
    onnx.save(mobilenet_v2(width_mult=0.35, image=96, classes=10, seed=0), out)
    print(f"wrote {out} ({out.stat().st_size} bytes)")
