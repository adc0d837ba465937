"""Weight quantization + entropy coding: .ms size, accuracy and load time per bit width.

    .venv/bin/python -m benchmarks.bench_compress [--models resnet50,mobilenet_v2,bert,lstm]
        [--settings 8,6,4,mixed,mixed@0.06] [--auto-tune] [--small] [--json out.json]

For each model (random weights, seed 0): convert to a float32 `.ms`, then for
each setting convert again with a MindSpore-spelled config file
(``[common_quant_param] quant_type=WEIGHT_QUANT bit_num=N enable_encode=true``;
``mixed`` is ``bit_num=0`` with ``init_scale`` 0.02, ``mixed@S`` with init_scale S,
``--auto-tune`` adds ``mixed+auto``). Reported per setting:

* ``ratio``: float32 `.ms` bytes / quantized `.ms` bytes;
* ``cosine``: the worst output cosine similarity against the float32 `.ms` over
  two seeded inputs (seeds 10 and 11, not the auto-tune ones);
* ``coded/bound``: bytes of the ANS-coded tensors over their order-0 entropy
  bound (sum of per-tensor bounds; the worst single tensor in ``worst``);
* load times (best of 7, process CPU seconds of ``read_ms`` + executor setup): the coded file, the
  same quantization without entropy coding (``enable_encode=false``,
  bit-packed), and the float32 file.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx

SETTINGS = ("8", "6", "4", "mixed", "mixed@0.06", "mixed@0.1")


def build(name: str, small: bool) -> tuple[onnx.ModelProto, dict[str, list[int]], dict]:
    """(model, input shapes, feeds maker args) for a benchmark model."""
    from benchmarks import models as m

    size = 64 if small else 224
    if name == "resnet50":
        model = m.resnet(depth=14 if small else 50, image=size)
        return model, {"input": [1, 3, size, size]}, {}
    if name == "mobilenet_v2":
        return m.mobilenet_v2(1.0, image=size), {"input": [1, 3, size, size]}, {}
    if name == "bert":
        cfg = m.BertConfig(layers=2, vocab=8000) if small else m.BertConfig()
        return (
            m.bert_encoder(cfg),
            {"input_ids": [1, 32], "attention_mask": [1, 32]},
            {"vocab": cfg.vocab},
        )
    if name == "lstm":
        model = m.lstm_tagger(vocab=5000, emb=128, hidden=256, tags=20)
        return model, {"tokens": [16, 1]}, {"vocab": 5000}
    raise SystemExit(f"unknown model {name!r}")


def feeds_for(graph: Any, seed: int, vocab: int | None) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for v in graph.inputs:
        shape = tuple(int(d) for d in v.shape)
        if v.dtype.is_float:
            out[v.name] = rng.standard_normal(shape).astype(v.dtype.numpy)
        elif "mask" in v.name:
            out[v.name] = np.ones(shape, v.dtype.numpy)
        else:
            out[v.name] = rng.integers(0, vocab or 10, shape).astype(v.dtype.numpy)
    return out


def _config(folder: Path, setting: str, encode: bool) -> Path:
    lines = ["[common_quant_param]", "quant_type=WEIGHT_QUANT"]
    mixed = ["[mixed_bit_weight_quant_param]"]
    if setting.startswith("mixed"):
        lines.append("bit_num=0")
        if "@" in setting:
            mixed.append(f"init_scale={setting.split('@')[1]}")
        if setting.endswith("+auto"):
            mixed += ["auto_tune=true", "max_iterations=12"]
    else:
        lines.append(f"bit_num={setting}")
    lines += ["min_quant_weight_size=0", "min_quant_weight_channel=16"]
    lines.append(f"enable_encode={'true' if encode else 'false'}")
    path = folder / f"{setting}_{encode}.cfg"
    path.write_text("\n".join(lines + mixed) + "\n")
    return path


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _load_seconds(path: Path, repeat: int = 7) -> float:
    from converter.executor.runtime import Runtime
    from converter.ms import read_ms

    times = []
    for _ in range(repeat):
        t0 = time.process_time()  # CPU time: other processes on a shared machine don't count
        Runtime(read_ms(path))
        times.append(time.process_time() - t0)
    return min(times)


def coding_stats(path: Path) -> dict[str, Any]:
    """Coded bytes vs the order-0 entropy bound of the same codes, over FSE tensors."""
    from converter.ms import read_ms
    from converter.ms.codec import entropy_bound_bytes

    coded = bound = 0.0
    worst = (1.0, "")
    kinds: dict[str, int] = {}
    for v in read_ms(path).values():
        if v.const is None or "quant_codes" not in v.meta:
            continue
        kind = v.meta["ms_compression"]
        kinds[kind] = kinds.get(kind, 0) + 1
        if kind != "FSE":
            continue
        b = entropy_bound_bytes(v.meta["quant_codes"])
        coded += v.meta["ms_stored_bytes"]
        bound += b
        if b > 0 and v.meta["ms_stored_bytes"] / b > worst[0]:
            worst = (v.meta["ms_stored_bytes"] / b, v.name)
    return {
        "coded_bytes": int(coded),
        "bound_bytes": int(bound),
        "coded_over_bound": coded / bound if bound else None,
        "worst_tensor": {"ratio": worst[0], "name": worst[1]},
        "tensors_by_compression": kinds,
    }


def bench_model(name: str, settings: list[str], small: bool, work: Path) -> dict[str, Any]:
    import converter

    model, shapes, extra = build(name, small)
    src = work / f"{name}.onnx"
    onnx.save(model, src)
    float_ms = converter.convert(src, output=work / f"{name}_f32.ms", input_shapes=shapes).output
    ref_model = converter.load(float_ms)
    feeds = [feeds_for(ref_model.graph, s, extra.get("vocab")) for s in (10, 11)]
    refs = [ref_model.run(f) for f in feeds]
    float_bytes = float_ms.stat().st_size
    rows = []
    for setting in settings:
        out = {"setting": setting}
        for encode in (True, False):
            t0 = time.perf_counter()
            res = converter.convert(
                src,
                output=work / f"{name}_{setting}_{encode}.ms",
                input_shapes=shapes,
                config_file=_config(work, setting, encode),
            )
            seconds = time.perf_counter() - t0
            if encode:
                wq = res.compression["weight_quant"]
                out["convert_s"] = round(seconds, 2)
                out["bytes"] = res.output.stat().st_size
                out["ratio"] = float_bytes / out["bytes"]
                out["average_bits"] = round(wq["average_bits"], 3)
                out["init_scale"] = wq.get("init_scale")
                q = converter.load(res.output)
                out["cosine"] = min(
                    _cosine(r[k], q.run(f)[k]) for f, r in zip(feeds, refs, strict=True) for k in r
                )
                out.update(coding_stats(res.output))
                out["load_coded_s"] = _load_seconds(res.output)
            else:
                out["bytes_packed"] = res.output.stat().st_size
                out["load_packed_s"] = _load_seconds(res.output)
        out["load_coded_over_packed"] = out["load_coded_s"] / out["load_packed_s"]
        rows.append(out)
    return {
        "model": name,
        "float_bytes": float_bytes,
        "load_float_s": _load_seconds(float_ms),
        "settings": rows,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet50,mobilenet_v2,bert,lstm")
    ap.add_argument("--settings", default=",".join(SETTINGS))
    ap.add_argument("--auto-tune", action="store_true", help="also run mixed+auto")
    ap.add_argument("--small", action="store_true", help="reduced model sizes (quick check)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    settings = args.settings.split(",") + (["mixed+auto"] if args.auto_tune else [])
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            r = bench_model(name, settings, args.small, Path(tmp))
            results.append(r)
            print(
                f"{name}: float32 .ms {r['float_bytes'] / 1e6:.2f} MB, "
                f"load {r['load_float_s'] * 1e3:.0f} ms"
            )
            print(
                f"  {'setting':<12} {'bits':>5} {'MB':>8} {'ratio':>6} {'cosine':>9} "
                f"{'coded/bound':>11} {'worst':>6} {'load coded/packed ms':>21}"
            )
            for s in r["settings"]:
                cb = s["coded_over_bound"]
                print(
                    f"  {s['setting']:<12} {s['average_bits']:>5.2f} {s['bytes'] / 1e6:>8.2f} "
                    f"{s['ratio']:>6.2f} {s['cosine']:>9.6f} "
                    f"{'-' if cb is None else f'{cb:.4f}':>11} {s['worst_tensor']['ratio']:>6.3f} "
                    f"{s['load_coded_s'] * 1e3:>9.0f} / {s['load_packed_s'] * 1e3:<9.0f}"
                )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
