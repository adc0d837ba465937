"""Generate docs/frontends.md: the ops each front end lowers, read from the parser tables.

    .venv/bin/python -m benchmarks.frontend_ops --write-docs

The lists come from the lowering tables themselves (``parsers.tflite.ops``,
``parsers.tf.ops``, ``parsers.caffe.layers.LOWERINGS``) so the page cannot
drift from the code; ONNX coverage is measured op by op in docs/ops.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "frontends.md"


def tables() -> dict[str, list[str]]:
    import parsers.caffe.layers as caffe_layers
    from parsers.tf.ops import supported_ops as tf_ops
    from parsers.tflite.ops import supported_ops as tflite_ops

    return {
        "TFLITE": sorted(tflite_ops()),
        "TF": sorted(tf_ops()),
        "CAFFE": sorted(caffe_layers.LOWERINGS),
    }


def _columns(names: list[str], per_row: int = 6) -> list[str]:
    rows = []
    for i in range(0, len(names), per_row):
        rows.append("| " + " | ".join(f"`{n}`" for n in names[i : i + per_row]) + " |")
    header = "| " + " | ".join([" "] * per_row) + " |"
    sep = "|" + "---|" * per_row
    return [header, sep, *rows]


def render(data: dict[str, list[str]]) -> str:
    lines = [
        "# Front ends: supported operators",
        "",
        "Generated from the parsers' lowering tables by",
        "`python -m benchmarks.frontend_ops --write-docs`; do not edit by hand.",
        "",
        "ONNX: every op of the default domain and the com.microsoft ops listed in",
        "[ops.md](ops.md), with per-op conformance counts.",
        "",
        "| front end | `--fmk` | what is read | ops / layers |",
        "|---|---|---|---:|",
        f"| TensorFlow Lite | `TFLITE` | `.tflite` (float32, float16 weights, int8/uint8 "
        f"quantized) | {len(data['TFLITE'])} |",
        f"| TensorFlow | `TF` | SavedModel folder (`serving_default`) or frozen `.pb` | "
        f"{len(data['TF'])} |",
        f"| Caffe | `CAFFE` | `deploy.prototxt` + `--weightFile model.caffemodel` | "
        f"{len(data['CAFFE'])} |",
        "",
        "An op outside these lists stops the conversion with one error that names every",
        "unsupported op (TFLite custom ops by their custom code), exit code 2.",
    ]
    titles = {
        "TFLITE": "TensorFlow Lite builtin operators",
        "TF": "TensorFlow ops",
        "CAFFE": "Caffe layer types",
    }
    for key, names in data.items():
        lines += ["", f"## {titles[key]} ({len(names)})", "", *_columns(names)]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write-docs", action="store_true")
    args = ap.parse_args()
    text = render(tables())
    if args.write_docs:
        DOC.write_text(text)
        print(f"wrote {DOC}")
    else:
        print(text)


if __name__ == "__main__":
    main()
