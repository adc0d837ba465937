"""Weight-only quantization keeps a trained CNN's top-1 (scikit-learn's bundled digits).

The CNN of tests/test_int8_digits.py (trained there in NumPy, same fixture) is
converted with ``quant_type=WEIGHT_QUANT`` at 8 and 4 bits (per channel, the
MindSpore Lite defaults) and with mixed bits tuned by ``auto_tune``, and run as
``.ms`` by the executor on the 450 held-out digits: top-1 stays within 0.2 points
of float32 at 8 bits (450 images: not one more mistake) and within 1 point at 4 bits
and with auto-tuned mixed bits.
"""

from __future__ import annotations

import json
from pathlib import Path

from test_int8_digits import _accuracy, digits  # noqa: F401  (the trained model fixture)

from converter.pipeline import convert


def _weight_quant(
    digits: dict,  # noqa: F811
    name: str,
    mixed: tuple[str, ...] = (),
    **common: str,
) -> tuple[float, dict]:
    root = digits["root"]
    lines = ["[common_quant_param]", "quant_type=WEIGHT_QUANT", "min_quant_weight_channel=8"]
    lines += [f"{k}={v}" for k, v in common.items()]
    if mixed:
        lines += ["[mixed_bit_weight_quant_param]", *mixed]
    cfg = root / f"{name}.ini"
    cfg.write_text("\n".join(lines) + "\n")
    report = root / f"{name}.json"
    ms = root / f"{name}.ms"
    convert(digits["model"], fmk="ONNX", output=ms, config_file=cfg, report=report)
    summary = json.loads(report.read_text())["conversion"]["compression"]["weight_quant"]
    return _accuracy(ms, digits["x"], digits["y"]), summary


def _float_accuracy(digits: dict) -> float:  # noqa: F811
    ms: Path = digits["root"] / "float.ms"
    convert(digits["model"], fmk="ONNX", output=ms)
    return _accuracy(ms, digits["x"], digits["y"])


def test_8_and_4_bit_weights_keep_top1(digits):  # noqa: F811
    float_acc = _float_accuracy(digits)
    assert float_acc >= 95.0
    acc8, q8 = _weight_quant(digits, "w8", bit_num="8")
    acc4, q4 = _weight_quant(digits, "w4", bit_num="4")
    assert q8["quantized"] == 3 and q8["average_bits"] == 8
    assert q4["quantized"] == 3 and q4["average_bits"] == 4
    assert all(layer["axis"] is not None for layer in q4["layers"])  # per channel
    assert acc8 >= float_acc - 0.2, (float_acc, acc8)
    assert acc4 >= float_acc - 1.0, (float_acc, acc4)
    print(f"digits top-1: float {float_acc:.2f}, 8-bit {acc8:.2f}, 4-bit {acc4:.2f}")


def test_mixed_bit_auto_tune_keeps_top1_in_a_smaller_file(digits):  # noqa: F811
    float_acc = _float_accuracy(digits)
    acc, mixed = _weight_quant(digits, "auto", ("auto_tune=true",), bit_num="0")
    tune = mixed["auto_tune"]
    assert tune["met"] and max(t["cosine"] for t in tune["trials"]) >= tune["target_cosine"]
    assert mixed["average_bits"] < 8
    _weight_quant(digits, "w8b", bit_num="8")
    assert (digits["root"] / "auto.ms").stat().st_size < (digits["root"] / "w8b.ms").stat().st_size
    assert acc >= float_acc - 1.0, (float_acc, acc)
    print(f"digits top-1: float {float_acc:.2f}, auto-tuned mixed bits {acc:.2f} "
          f"({mixed['average_bits']:.2f} bits on average)")  # fmt: skip
