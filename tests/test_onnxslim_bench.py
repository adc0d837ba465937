"""benchmarks/bench_onnxslim on three small models: liteconv's graph is smaller and verified."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("onnxslim")

from benchmarks.bench_onnxslim import MODELS, SMALL, format_table, run  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PICK = ["mobilenet_v2", "yolo_fpn", "unet"]


@pytest.mark.slow
def test_liteconv_beats_onnxslim_and_verifies() -> None:
    result = run(PICK, small=True, repeat=1)
    assert list(result["rows"]) == PICK
    for name, row in result["rows"].items():
        assert row["verified"] and row["cosine"] >= 0.9999, name
        assert row["liteconv"] < row["onnxslim"] <= row["onnx"], (name, row)
    assert result["summary"]["lower_on_every_model"] and result["summary"]["all_verified"]
    table = format_table(result)
    assert all(name in table for name in PICK) and "mean reduction vs onnxslim" in table


@pytest.mark.slow
def test_cli_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_onnxslim", "--small", "--models", "unet",
         "--repeat", "1", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert set(data["rows"]) == {"unet"} and data["small"] is True
    assert "unet" in proc.stdout


def test_model_tables_name_eight_models() -> None:
    assert list(MODELS) == list(SMALL) and len(MODELS) >= 8
