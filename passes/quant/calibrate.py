"""Calibration data (``[data_preprocess_param]``) and streamed activation statistics.

``calibrate_path = input_name:/folder[,name2:/folder2]``: the files of each folder,
sorted by name, are the samples of that input (one sample per file; sample ``k``
takes the ``k``-th file of every folder), at most ``calibrate_size`` of them:

* ``.npy``: one array; ``.npz``: the array keyed by the input's name (or its only
  array). A sample one rank short of the input gets a batch axis of 1.
* any other file with ``input_type=BIN``: raw bytes of the input's dtype, reshaped
  to the input's shape (symbolic batch dims read as 1; other dims must be static).
* images with ``input_type=IMAGE`` (needs Pillow): converted to ``image_to_format``
  (RGB, BGR or GRAY), resized to ``resize_width`` x ``resize_height`` (``resize_method``
  LINEAR, NEAREST or CUBIC), center-cropped to ``center_crop_width`` x
  ``center_crop_height``, then ``(pixel - normalize_mean) / normalize_std`` per channel,
  laid out NCHW or NHWC as the input's shape says (channels where the 1 or 3 is).

:func:`collect_statistics` runs the float graph once per sample with the executor and
folds every float32 tensor it computes into running statistics
(:mod:`passes.quant.ranges`), tensor by tensor as they appear, so memory stays that of
one inference plus a few kilobytes per tensor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from converter.errors import UsageError
from ir import DataType, Graph, Value
from passes.quant.ranges import ChannelMean, TensorStats

__all__ = ["CalibrationData", "Statistics", "collect_statistics"]

_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


@dataclass
class Statistics:
    """Per-tensor statistics keyed by value name."""

    tensors: dict[str, TensorStats]
    channels: dict[str, ChannelMean]
    samples: int


class CalibrationData:
    """The calibration samples of a graph: iterable (lazily, files read on demand)."""

    def __init__(self, graph: Graph, data: Mapping[str, Any]) -> None:
        self.inputs = {v.name: v for v in graph.inputs}
        self.data = dict(data)
        self.input_type = str(data.get("input_type", "BIN")).upper()
        if self.input_type not in ("BIN", "IMAGE"):
            raise UsageError(f"input_type={self.input_type}: use IMAGE or BIN")
        self.files = self._list_files()
        size = int(data.get("calibrate_size", 100) or 0)
        count = min(len(f) for f in self.files.values())
        self.count = min(count, size) if size > 0 else count

    def _list_files(self) -> dict[str, list[Path]]:
        spec = str(self.data.get("calibrate_path", "") or "")
        if not spec.strip():
            raise UsageError(
                "FULL_QUANT needs calibration data: set [data_preprocess_param] "
                "calibrate_path=input_name:/folder"
            )
        folders: dict[str, Path] = {}
        for item in spec.replace(";", ",").split(","):
            if not item.strip():
                continue
            name, sep, folder = item.strip().partition(":")
            if not sep:
                raise UsageError(f"calibrate_path entry {item!r} is not input_name:/folder")
            if name not in self.inputs:
                raise UsageError(
                    f"calibrate_path names input {name!r}; the model's inputs are "
                    f"{', '.join(self.inputs)}"
                )
            folders[name] = Path(folder)
        missing = [n for n in self.inputs if n not in folders]
        if missing:
            raise UsageError(f"calibrate_path has no folder for input(s) {', '.join(missing)}")
        files: dict[str, list[Path]] = {}
        for name, folder in folders.items():
            if not folder.is_dir():
                raise UsageError(f"calibration folder for {name!r} not found: {folder}")
            found = sorted(p for p in folder.iterdir() if p.is_file() and not
                           p.name.startswith("."))
            if not found:
                raise UsageError(f"calibration folder for {name!r} is empty: {folder}")
            files[name] = found
        return files

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for k in range(self.count):
            yield {name: self.load(name, files[k]) for name, files in self.files.items()}

    def load(self, name: str, path: Path) -> np.ndarray:
        """One sample of input ``name`` read from ``path``, in the input's dtype and rank."""
        value = self.inputs[name]
        suffix = path.suffix.lower()
        if suffix == ".npy":
            array = np.load(path, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                if name in z.files:
                    array = z[name]
                elif len(z.files) == 1:
                    array = z[z.files[0]]
                else:
                    raise UsageError(f"{path}: no array named {name!r} (has {', '.join(z.files)})")
        elif self.input_type == "IMAGE":
            array = _load_image(path, value, self.data)
        elif suffix in _IMAGE_SUFFIXES:
            raise UsageError(f"{path}: an image, but input_type=BIN; set input_type=IMAGE")
        else:
            array = _load_bin(path, value)
        return _fit(array, value, path)


def _static_shape(value: Value, path: Path) -> tuple[int, ...]:
    if value.shape is None:
        raise UsageError(f"{path}: input {value.name!r} has an unknown shape; use .npy files")
    dims = [d if isinstance(d, int) else (1 if i == 0 else None) for i, d in
            enumerate(value.shape)]
    if any(d is None for d in dims):
        raise UsageError(
            f"{path}: input {value.name!r} has dynamic dims {list(value.shape)}; "
            "BIN files need a static shape (use .npy files)"
        )
    return tuple(int(d) for d in dims)  # type: ignore[arg-type]


def _load_bin(path: Path, value: Value) -> np.ndarray:
    dtype = value.dtype.numpy
    shape = _static_shape(value, path)
    raw = np.fromfile(path, dtype=dtype)
    if raw.size != int(np.prod(shape)):
        raise UsageError(
            f"{path}: {raw.size} {dtype} values, input {value.name!r} needs "
            f"{int(np.prod(shape))} (shape {list(shape)})"
        )
    return raw.reshape(shape)


def _load_image(path: Path, value: Value, data: Mapping[str, Any]) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError:
        raise UsageError(
            "input_type=IMAGE needs Pillow (pip install pillow); or give .npy/.npz/BIN files"
        ) from None
    fmt = str(data.get("image_to_format", "RGB") or "RGB").upper()
    with Image.open(path) as img:
        img = img.convert("L" if fmt == "GRAY" else "RGB")
        w, h = int(data.get("resize_width", 0) or 0), int(data.get("resize_height", 0) or 0)
        if w > 0 and h > 0:
            method = {"LINEAR": Image.BILINEAR, "NEAREST": Image.NEAREST,
                      "CUBIC": Image.BICUBIC}.get(str(data.get("resize_method", "LINEAR")))
            if method is None:
                raise UsageError("resize_method: use LINEAR, NEAREST or CUBIC")
            img = img.resize((w, h), method)
        cw = int(data.get("center_crop_width", 0) or 0)
        ch = int(data.get("center_crop_height", 0) or 0)
        if cw > 0 and ch > 0:
            left, top = (img.width - cw) // 2, (img.height - ch) // 2
            img = img.crop((left, top, left + cw, top + ch))
        pixels = np.asarray(img, dtype=np.float32)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if fmt == "BGR":
        pixels = pixels[:, :, ::-1]
    mean = np.asarray(data.get("normalize_mean") or [0.0], np.float32)
    std = np.asarray(data.get("normalize_std") or [1.0], np.float32)
    pixels = (pixels - mean) / std
    shape = value.shape or ()
    channels_first = len(shape) == 4 and shape[1] == pixels.shape[2] and shape[3] != shape[1]
    if channels_first:
        pixels = pixels.transpose(2, 0, 1)
    return np.ascontiguousarray(pixels)


def _fit(array: np.ndarray, value: Value, path: Path) -> np.ndarray:
    """Cast to the input's dtype and add a batch axis when the sample is one rank short."""
    rank = value.rank
    if rank is not None and array.ndim == rank - 1:
        array = array[None]
    if rank is not None and array.ndim != rank:
        raise UsageError(
            f"{path}: sample of rank {array.ndim} for input {value.name!r} of shape "
            f"{list(value.shape or ())}"
        )
    if value.dtype not in (DataType.UNDEFINED, DataType.STRING):
        array = array.astype(value.dtype.numpy, copy=False)
    return array


def collect_statistics(
    graph: Graph,
    samples: CalibrationData | list[dict[str, np.ndarray]],
    histogram: bool,
    channel_axes: Mapping[str, int] | None = None,
    say: Callable[[str], None] | None = None,
) -> Statistics:
    """Run ``graph`` on every sample; statistics of every float32 tensor it computes.

    ``channel_axes`` (value name -> axis) also gets per-channel means of those values.
    """
    from converter.executor.runtime import Runtime

    tensors: dict[str, TensorStats] = {}
    channels = {name: ChannelMean(axis) for name, axis in (channel_axes or {}).items()}

    def observe(value: Value, array: np.ndarray) -> None:
        if array.dtype != np.float32:
            return
        stats = tensors.get(value.name)
        if stats is None:
            stats = tensors[value.name] = TensorStats(histogram)
        stats.add(array)
        mean = channels.get(value.name)
        if mean is not None:
            mean.add(array)

    runtime = Runtime(graph, observe=observe)
    total = len(samples)
    if say is not None:
        say(f"calibrating on {total} sample(s)")
    n = 0
    for feeds in tqdm(samples, total=total, desc="calibrating", unit="sample",
                      disable=None, leave=False):
        runtime.run(feeds)
        n += 1
    return Statistics(tensors, channels, n)
