"""Keras models for the TensorFlow front end, saved as SavedModel folders and frozen .pb.

Used by tests (small sizes) and benchmarks. Weights are Keras' seeded random
initialisation (``keras.utils.set_random_seed``); recurrent and dense biases are drawn
at random too, so gate order and bias placement are exercised. Builders return a
``keras.Model``; :func:`save_saved_model` exports it with its ``serving_default``
signature, :func:`save_frozen_pb` freezes its call into a GraphDef with one Placeholder
per input (named ``input``, ``input_1``, ...).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = [
    "gru_model",
    "keras",
    "lstm_model",
    "mobilenet_v2",
    "resnet",
    "freeze_function",
    "save_frozen_pb",
    "save_saved_model",
    "transformer_block",
]


def keras() -> Any:
    """The ``keras`` module (TensorFlow imported quietly first)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras as k
    import tensorflow  # noqa: F401 - the backend keras runs on

    return k


def _seed(seed: int) -> Any:
    k = keras()
    k.utils.set_random_seed(seed)
    return k


def mobilenet_v2(alpha: float = 0.35, size: int = 64, classes: int = 10, seed: int = 0) -> Any:
    """Keras' own MobileNetV2 (random weights)."""
    k = _seed(seed)
    return k.applications.MobileNetV2(
        alpha=alpha, input_shape=(size, size, 3), weights=None, classes=classes
    )


def resnet(
    size: int = 32, width: int = 8, blocks: int = 2, classes: int = 10, seed: int = 0
) -> Any:
    """A small ResNet: conv-BN-ReLU stem, residual blocks (with a strided projection),
    max pooling, a transposed conv and bilinear upsampling, global pooling, softmax head."""
    k = _seed(seed)
    L = k.layers  # noqa: N806
    inp = k.Input((size, size, 3), name="image")
    x = L.Conv2D(width, 3, padding="same", use_bias=False)(inp)
    x = L.ReLU()(_bn(L, x))
    for b in range(blocks):
        stride = 2 if b else 1
        y = L.Conv2D(width * (b + 1), 3, strides=stride, padding="same")(x)
        y = L.ReLU()(_bn(L, y))
        y = _bn(L, L.Conv2D(width * (b + 1), 3, padding="same")(y))
        if stride != 1 or b:
            x = _bn(L, L.Conv2D(width * (b + 1), 1, strides=stride)(x))
        x = L.ReLU()(L.Add()([x, y]))
    x = L.MaxPooling2D(padding="same")(x)
    x = L.Conv2DTranspose(width, 3, strides=2, padding="same", activation="elu")(x)
    x = L.UpSampling2D(interpolation="bilinear")(x)
    x = L.GlobalAveragePooling2D()(x)
    out = L.Dense(classes, activation="softmax", bias_initializer="random_normal")(x)
    return k.Model(inp, out)


def _bn(L: Any, x: Any) -> Any:  # noqa: N803
    return L.BatchNormalization(
        beta_initializer="random_normal", gamma_initializer="random_uniform",
        moving_mean_initializer="random_normal", moving_variance_initializer="ones",
    )(x)  # fmt: skip


def lstm_model(
    steps: int = 7, features: int = 5, units: int = 8, sequences: bool = False, seed: int = 0
) -> Any:
    """Keras LSTM (random biases) followed by a Dense head."""
    k = _seed(seed)
    inp = k.Input((steps, features), name="tokens")
    x = k.layers.LSTM(units, return_sequences=sequences, bias_initializer="random_normal")(inp)
    return k.Model(inp, k.layers.Dense(3)(x))


def gru_model(steps: int = 7, features: int = 5, units: int = 8, seed: int = 0) -> Any:
    """Keras GRU (reset_after=True, random biases) returning sequences, then a Dense."""
    k = _seed(seed)
    inp = k.Input((steps, features), name="tokens")
    x = k.layers.GRU(units, return_sequences=True, bias_initializer="random_normal")(inp)
    return k.Model(inp, k.layers.Dense(4)(x))


def transformer_block(
    seq: int = 6, dim: int = 16, heads: int = 2, ff: int = 32, seed: int = 0
) -> Any:
    """Post-norm encoder block: MultiHeadAttention, LayerNormalization, Dense GELU FFN."""
    k = _seed(seed)
    L = k.layers  # noqa: N806
    inp = k.Input((seq, dim), name="embeddings")
    att = L.MultiHeadAttention(heads, dim // heads)(inp, inp)
    x = L.LayerNormalization(epsilon=1e-6)(inp + att)
    f = L.Dense(ff, activation="gelu", bias_initializer="random_normal")(x)
    x = L.LayerNormalization(epsilon=1e-6)(x + L.Dense(dim)(f))
    return k.Model(inp, x)


def save_saved_model(model: Any, path: str | os.PathLike) -> Path:
    """Export ``model`` as a SavedModel folder with a ``serving_default`` signature."""
    model.export(str(path), verbose=False)
    return Path(path)


def save_frozen_pb(model: Any, path: str | os.PathLike) -> Path:
    """Freeze ``model``'s call into a GraphDef ``.pb`` (control flow kept functional)."""
    specs = [(tuple(t.shape), t.dtype) for t in model.inputs]
    return freeze_function(lambda *xs: model(list(xs) if len(xs) > 1 else xs[0]), specs, path)


def freeze_function(
    fn: Any, specs: list[tuple[tuple[int | None, ...], Any]], path: str | os.PathLike
) -> Path:
    """Freeze a Python function of tensors into a GraphDef ``.pb``.

    ``specs`` gives (shape, dtype) per argument; Placeholders are named ``input``,
    ``input_1``, ... Control flow stays functional (While/If with function bodies).
    """
    keras()
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    tspecs = [
        tf.TensorSpec(shape, dtype, name="input" if i == 0 else f"input_{i}")
        for i, (shape, dtype) in enumerate(specs)
    ]
    concrete = tf.function(fn).get_concrete_function(*tspecs)
    frozen = convert_variables_to_constants_v2(concrete, lower_control_flow=False)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(frozen.graph.as_graph_def().SerializeToString())
    return p
