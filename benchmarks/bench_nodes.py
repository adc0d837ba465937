"""Node counts before and after liteconv's optimization, per model.

    .venv/bin/python -m benchmarks.bench_nodes [--json out.json]

For each model: the ONNX node count, the IR node count after parsing, after
``--optimize none`` and after the default ``general`` pipeline, and which op
types remain after optimization (e.g. to see that no BatchNormalization is
left in a CNN).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import Counter
from pathlib import Path

import onnx

from benchmarks import models as M
from benchmarks.bench_light import LIGHT_DIR, light_models

BUILT = {
    "resnet50": lambda: M.resnet(50),
    "mobilenet_v2": lambda: M.mobilenet_v2(1.0),
    "bert_tiny": lambda: M.bert_encoder(M.BertConfig.tiny()),
    "lstm_tagger": lambda: M.lstm_tagger(),
}


def count(src: Path, workdir: Path) -> dict:
    import converter

    onnx_nodes = len(onnx.load(src, load_external_data=False).graph.node)
    none = converter.convert(src, output=workdir / "none.ms", optimize="none")
    general = converter.convert(src, output=workdir / "general.ms")
    ops = Counter(n.op for n in general.graph.all_nodes())
    return {
        "onnx_nodes": onnx_nodes,
        "parsed": none.nodes_before,
        "general": general.nodes_after,
        "ops_after": dict(sorted(ops.items(), key=lambda kv: (-kv[1], kv[0]))),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name, build in BUILT.items():
            onnx.save(build(), work / f"{name}.onnx")
            rows[name] = count(work / f"{name}.onnx", work)
        for name in light_models():
            rows[f"light_{name}"] = count(LIGHT_DIR / f"light_{name}.onnx", work)
    print(f"{'model':<22} {'onnx':>6} {'parsed':>7} {'general':>8}")
    for name, r in rows.items():
        print(f"{name:<22} {r['onnx_nodes']:>6} {r['parsed']:>7} {r['general']:>8}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
