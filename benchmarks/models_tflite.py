"""Keras architectures converted to TensorFlow Lite, for tests and benchmarks.

Each builder returns an uncompiled ``keras.Model`` with random weights from a fixed seed
(``weights=None``; batch-norm statistics randomised so they are not the identity).
:func:`to_tflite` converts one with ``tf.lite.TFLiteConverter`` in one of three forms:

- ``"float32"``: plain float model;
- ``"float16"``: float16 weights with DEQUANTIZE ops in front of their users;
- ``"int8"``: full-integer quantization (representative dataset of seeded random data,
  ``inference_input_type``/``inference_output_type`` int8).

TensorFlow is imported lazily: importing this module costs nothing.
"""

from __future__ import annotations

import contextlib
import io
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "BUILDERS",
    "FORMS",
    "build",
    "conv_zoo",
    "efficientnet_lite",
    "keras_gru",
    "keras_lstm",
    "keras_rnn",
    "keras_simple_rnn",
    "lstm_model",
    "mobilenet_v2",
    "resnet",
    "to_tflite",
    "transformer_block",
    "while_loop",
]

FORMS = ("float32", "float16", "int8")


def _keras() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    return tf.keras


def _randomize_bn(model: Any, seed: int) -> Any:
    """Give batch-norm layers non-trivial statistics so folding is really tested."""
    layers = _keras().layers
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([
                (1.0 + 0.1 * rng.standard_normal(gamma.shape)).astype(np.float32),
                (0.1 * rng.standard_normal(beta.shape)).astype(np.float32),
                (0.1 * rng.standard_normal(mean.shape)).astype(np.float32),
                (1.0 + 0.2 * rng.random(var.shape)).astype(np.float32),
            ])  # fmt: skip
    return model


def mobilenet_v2(size: int = 64, alpha: float = 0.35, classes: int = 10, seed: int = 0) -> Any:
    """keras.applications.MobileNetV2 (random weights)."""
    keras = _keras()
    keras.utils.set_random_seed(seed)
    model = keras.applications.MobileNetV2(
        input_shape=(size, size, 3), alpha=alpha, weights=None, classes=classes
    )
    return _randomize_bn(model, seed)


def resnet(size: int = 32, width: int = 16, blocks: int = 2, seed: int = 0) -> Any:
    """A small ResNet v1: conv-BN-ReLU stem, basic blocks with projection shortcuts."""
    keras = _keras()
    keras.utils.set_random_seed(seed)
    L = keras.layers  # noqa: N806
    x_in = keras.Input((size, size, 3), batch_size=1)
    x = L.ZeroPadding2D(1)(x_in)
    x = L.Conv2D(width, 3, strides=1, use_bias=False)(x)
    x = L.ReLU()(L.BatchNormalization()(x))
    x = L.MaxPooling2D(3, strides=2, padding="same")(x)
    for stage in range(blocks):
        filters = width * 2**stage
        stride = 1 if stage == 0 else 2
        y = L.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False)(x)
        y = L.ReLU()(L.BatchNormalization()(y))
        y = L.BatchNormalization()(L.Conv2D(filters, 3, padding="same", use_bias=False)(y))
        if stride != 1 or x.shape[-1] != filters:
            x = L.BatchNormalization()(L.Conv2D(filters, 1, strides=stride, use_bias=False)(x))
        x = L.ReLU()(L.Add()([x, y]))
    x = L.GlobalAveragePooling2D()(x)
    out = L.Softmax()(L.Dense(10)(x))
    return _randomize_bn(keras.Model(x_in, out), seed)


def _mbconv(L: Any, x: Any, cout: int, expand: int, k: int, stride: int, se: bool) -> Any:  # noqa: N803
    cin = x.shape[-1]
    y = x
    if expand != 1:
        y = L.Activation("swish")(L.BatchNormalization()(L.Conv2D(cin * expand, 1)(y)))
    y = L.DepthwiseConv2D(k, strides=stride, padding="same", use_bias=False)(y)
    y = L.Activation("swish")(L.BatchNormalization()(y))
    if se:
        s = L.GlobalAveragePooling2D(keepdims=True)(y)
        s = L.Conv2D(max(1, cin // 4), 1, activation="swish")(s)
        s = L.Conv2D(y.shape[-1], 1, activation="sigmoid")(s)
        y = L.Multiply()([y, s])
    y = L.BatchNormalization()(L.Conv2D(cout, 1, use_bias=False)(y))
    if stride == 1 and cin == cout:
        y = L.Add()([x, y])
    return y


def efficientnet_lite(size: int = 48, se: bool = True, seed: int = 0) -> Any:
    """An EfficientNet-style MBConv stack (swish, optional squeeze-excite, relu6 head)."""
    keras = _keras()
    keras.utils.set_random_seed(seed)
    L = keras.layers  # noqa: N806
    x_in = keras.Input((size, size, 3), batch_size=1)
    x = L.Conv2D(16, 3, strides=2, padding="same", use_bias=False)(x_in)
    x = L.ReLU(6.0)(L.BatchNormalization()(x))
    for cout, expand, k, stride in ((16, 1, 3, 1), (24, 4, 3, 2), (24, 4, 5, 1), (40, 4, 5, 2)):
        x = _mbconv(L, x, cout, expand, k, stride, se)
    x = L.ReLU(6.0)(L.BatchNormalization()(L.Conv2D(64, 1)(x)))
    x = L.GlobalAveragePooling2D()(x)
    out = L.Dense(10)(x)
    return _randomize_bn(keras.Model(x_in, out), seed)


def _fused_lstm_fn(time_major: bool = False) -> Any:
    """A tf.function the TFLite converter fuses into UNIDIRECTIONAL_SEQUENCE_LSTM.

    It carries the attributes of Keras 2's LSTM backend (``api_implements="lstm_*"``,
    ``time_major``, ``go_backwards``) and its signature (inputs, init_h, init_c, kernel,
    recurrent_kernel, bias) -> (last, sequence, h, c, runtime); Keras 3 layers convert
    to WHILE loops instead.
    """
    import tensorflow as tf

    attrs = {"api_implements": f"lstm_{uuid.uuid4()}", "time_major": time_major,
             "go_backwards": False}

    def standard_lstm(inputs, init_h, init_c, kernel, recurrent_kernel, bias):  # noqa: ANN001, ANN202
        xs = inputs if time_major else tf.transpose(inputs, [1, 0, 2])

        def step(carry, x):  # noqa: ANN001, ANN202
            h, c = carry
            z = tf.matmul(x, kernel) + tf.matmul(h, recurrent_kernel) + bias
            i, f, g, o = tf.split(z, 4, axis=1)
            c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
            return tf.sigmoid(o) * tf.tanh(c), c

        hs, cs = tf.scan(step, xs, initializer=(init_h, init_c))
        seq = hs if time_major else tf.transpose(hs, [1, 0, 2])
        return hs[-1], seq, hs[-1], cs[-1], tf.constant(0.0)

    return tf.function(standard_lstm, experimental_attributes=attrs, autograph=False)


def lstm_model(steps: int = 12, features: int = 8, units: int = 16, seed: int = 0) -> Any:
    """Two stacked Keras LSTMs (sequence, then last state) and a dense head.

    The Keras layers give the weights; the returned ``tf.Module`` runs them through
    :func:`_fused_lstm_fn`, so the converter emits UNIDIRECTIONAL_SEQUENCE_LSTM.
    """
    keras = _keras()
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    L = keras.layers  # noqa: N806
    x_in = keras.Input((steps, features), batch_size=1)
    lstm1, lstm2, dense = L.LSTM(units, return_sequences=True), L.LSTM(units), L.Dense(5)
    keras.Model(x_in, dense(lstm2(lstm1(x_in))))  # builds the weights
    rng = np.random.default_rng(seed)
    weights = [[tf.constant(w) for w in layer.get_weights()] for layer in (lstm1, lstm2)]
    for ws in weights:  # non-zero biases, so gate order mistakes show
        ws[2] = tf.constant((0.3 * rng.standard_normal(ws[2].shape)).astype(np.float32))
    head = [tf.constant(w) for w in dense.get_weights()]
    spec = tf.TensorSpec((1, steps, features), tf.float32)

    class FusedLstmNet(tf.Module):
        input_shapes = [(1, steps, features)]

        def __init__(self) -> None:
            super().__init__()
            self.lstms = [_fused_lstm_fn(), _fused_lstm_fn()]

        @tf.function(input_signature=[spec])
        def fn(self, x):  # noqa: ANN001, ANN202
            zeros = tf.zeros((1, units))
            seq = self.lstms[0](x, zeros, zeros, *weights[0])[1]
            last = self.lstms[1](seq, zeros, zeros, *weights[1])[0]
            return tf.matmul(last, head[0]) + head[1]

    return FusedLstmNet()


def keras_rnn(
    cell: str = "lstm", steps: int = 8, features: int = 6, units: int = 12,
    sequences: bool = True, bidirectional: bool = False, stacked: bool = False,
    state: bool = False, seed: int = 0, **layer_kwargs: Any,
) -> Any:
    """A plain Keras 3 recurrent layer (``cell``: lstm, gru or simple), which the TFLite
    converter turns into a WHILE loop (not a fused op).

    ``sequences``: return the whole sequence (else the last output); ``state``: also return
    the final states; ``bidirectional``/``stacked``: a Bidirectional wrapper / a second
    layer first. Biases are randomised (Keras initialises them to zeros or ones, which
    would hide gate-order mistakes); ``layer_kwargs`` go to the layer (e.g.
    ``reset_after=False``, ``recurrent_activation="hard_sigmoid"``).
    """
    keras = _keras()
    keras.utils.set_random_seed(seed)
    L = keras.layers  # noqa: N806
    kind = {"lstm": L.LSTM, "gru": L.GRU, "simple": L.SimpleRNN}[cell]
    x_in = keras.Input((steps, features), batch_size=1)
    x = x_in
    if stacked:
        x = kind(units, return_sequences=True, **layer_kwargs)(x)
    layer = kind(units, return_sequences=sequences, return_state=state, **layer_kwargs)
    if bidirectional:
        layer = L.Bidirectional(layer)
    out = layer(x)
    model = keras.Model(x_in, out)
    rng = np.random.default_rng(seed)
    for v in model.weights:
        if v.path.endswith("bias"):
            v.assign((0.3 * rng.standard_normal(tuple(v.shape))).astype(np.float32))
    return model


def keras_lstm(**kwargs: Any) -> Any:
    """:func:`keras_rnn` with an LSTM layer."""
    return keras_rnn("lstm", **kwargs)


def keras_gru(**kwargs: Any) -> Any:
    """:func:`keras_rnn` with a GRU layer (``reset_after=True`` by default)."""
    return keras_rnn("gru", **kwargs)


def keras_simple_rnn(**kwargs: Any) -> Any:
    """:func:`keras_rnn` with a SimpleRNN layer (a loop that is neither LSTM nor GRU)."""
    return keras_rnn("simple", **kwargs)


def while_loop(rows: int = 2, cols: int = 3, seed: int = 0) -> Any:
    """A ``tf.cond`` then a ``tf.while_loop`` with a data-dependent trip count and a
    ``tf.cond`` inside (IF, WHILE with an IF in its body; not a recurrent layer)."""
    _keras()
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    w = tf.constant((rng.standard_normal((cols, cols)) / np.sqrt(cols)).astype(np.float32))
    spec = tf.TensorSpec((rows, cols), tf.float32)

    class WhileLoop(tf.Module):
        input_shapes = [(rows, cols)]

        @tf.function(input_signature=[spec])
        def fn(self, x):  # noqa: ANN001, ANN202
            def body(i, y):  # noqa: ANN001, ANN202
                y = tf.cond(tf.reduce_sum(y) > 0.0, lambda: tf.tanh(y @ w) * 1.5 - 0.2,
                            lambda: y * 0.5 + 1.0)  # fmt: skip
                return i + 1, y

            def cond(i, y):  # noqa: ANN001, ANN202
                return tf.logical_and(i < 10, tf.reduce_max(tf.abs(y)) < 20.0)

            x = tf.cond(tf.reduce_mean(x) > -5.0, lambda: x * 2.0, lambda: -x)
            n, y = tf.while_loop(cond, body, [tf.constant(0), x])
            return y * tf.cast(n, tf.float32)

    return WhileLoop()


def transformer_block(
    seq: int = 16, dim: int = 32, heads: int = 4, vocab: int = 0, seed: int = 0
) -> Any:
    """Post-LN transformer encoder block: MultiHeadAttention + LayerNorm + GELU MLP."""
    keras = _keras()
    keras.utils.set_random_seed(seed)
    L = keras.layers  # noqa: N806
    x_in = keras.Input((seq, dim), batch_size=1)
    a = L.MultiHeadAttention(num_heads=heads, key_dim=dim // heads)(x_in, x_in)
    x = L.LayerNormalization(epsilon=1e-6)(L.Add()([x_in, a]))
    h = L.Dense(dim * 2, activation="gelu")(x)
    h = L.Dense(dim)(h)
    x = L.LayerNormalization(epsilon=1e-6)(L.Add()([x, h]))
    pooled = L.GlobalAveragePooling1D()(x)
    out = L.Dense(4, activation="softmax")(pooled)
    return keras.Model(x_in, out)


def conv_zoo(size: int = 16, seed: int = 0) -> Any:
    """Assorted builtins in one tf.function: dilated/strided/transposed convs, resizes,
    pools, pads, depth/space, strided slices with masks, gather, split, pack, tile,
    batch matmul, reductions, l2-normalization, argmax.
    """
    _keras()
    import tensorflow as tf

    rng = np.random.default_rng(seed)

    def w(*shape: int) -> Any:
        return tf.constant((rng.standard_normal(shape) / np.sqrt(np.prod(shape[:-1])))
                           .astype(np.float32))  # fmt: skip

    k1, k2, kt, kd = w(3, 3, 4, 8), w(3, 3, 8, 8), w(3, 3, 6, 8), w(3, 3, 12, 1)
    alpha = tf.constant(rng.uniform(0.05, 0.3, (1, 1, 12)).astype(np.float32))
    mat = w(4, 5)
    spec = tf.TensorSpec((1, size, size, 4), tf.float32)

    class ConvZoo(tf.Module):
        input_shapes = [(1, size, size, 4)]

        @tf.function(input_signature=[spec])
        def fn(self, x):  # noqa: ANN001, ANN202
            y = tf.nn.relu6(tf.nn.conv2d(x, k1, 1, "SAME", dilations=2))
            y = tf.tanh(tf.nn.conv2d(y, k2, 2, "VALID"))
            y = tf.nn.conv2d_transpose(y, kt, (1, 14, 14, 6), 2, "SAME")
            y = tf.nn.leaky_relu(y, 0.2)
            up = tf.concat([tf.image.resize(y, (28, 28), "bilinear"),
                            tf.image.resize(y, (28, 28), "nearest")], -1)
            y = tf.nn.avg_pool2d(up, 3, 2, "SAME")
            y = tf.maximum(y, 0.0) + alpha * tf.minimum(y, 0.0)
            y = tf.nn.depthwise_conv2d(y, kd, [1, 1, 1, 1], "SAME")
            y = tf.nn.elu(tf.nn.max_pool2d(y, 3, 1, "SAME"))
            y = tf.nn.space_to_depth(y, 2)
            y = tf.pad(y, [[0, 0], [1, 2], [2, 1], [0, 0]], mode="REFLECT")
            y = tf.pad(y, [[0, 0], [1, 0], [0, 1], [0, 0]], mode="SYMMETRIC")
            y = tf.nn.depth_to_space(y, 2)
            y = tf.image.resize(y, (9, 7), "bilinear")
            y = tf.math.l2_normalize(y, axis=-1) * 3.0 + tf.reduce_max(y)
            y = y[:, 1:8:2, ::-1, 1:] - tf.reduce_mean(y, axis=[1, 2], keepdims=True)[..., 1:]
            a, b, c = tf.split(y, [4, 4, 3], axis=-1)
            p = tf.stack([tf.reduce_sum(a, -1), tf.reduce_max(b, -1), tf.reduce_min(c, -1)], 1)
            g = tf.gather(p, [2, 0, 1, 1], axis=1)[..., tf.newaxis, 0]
            t = tf.tile(g, [1, 1, 2, 3])
            m = tf.matmul(t, tf.broadcast_to(mat, (1, 4, 4, 5))[:, :, :3, :])
            s = tf.nn.softmax(tf.square(m) - tf.math.rsqrt(tf.abs(m) + 1.0))
            idx = tf.cast(tf.argmax(s, axis=-1), tf.float32)
            return s * 2.0 + tf.reduce_mean(idx)

    return ConvZoo()


BUILDERS: dict[str, Callable[..., Any]] = {
    "mobilenet_v2": mobilenet_v2,
    "resnet": resnet,
    "efficientnet_lite": efficientnet_lite,
    "lstm": lstm_model,
    "transformer": transformer_block,
    "conv_zoo": conv_zoo,
    "keras_lstm": keras_lstm,
    "keras_gru": keras_gru,
    "keras_simple_rnn": keras_simple_rnn,
    "while_loop": while_loop,
}


def _representative(model: Any, seed: int, count: int) -> Callable[[], Iterator[list[Any]]]:
    shapes = getattr(model, "input_shapes", None) or [
        tuple(1 if d is None else d for d in t.shape) for t in model.inputs
    ]

    def gen() -> Iterator[list[Any]]:
        rng = np.random.default_rng(seed)
        for _ in range(count):
            yield [rng.standard_normal(s).astype(np.float32) for s in shapes]

    return gen


def to_tflite(model: Any, form: str = "float32", seed: int = 0, calibration: int = 16) -> bytes:
    """Convert a Keras model to a TFLite flatbuffer in one of :data:`FORMS`."""
    if form not in FORMS:
        raise ValueError(f"unknown form {form!r}: choose one of {', '.join(FORMS)}")
    keras = _keras()
    import tensorflow as tf

    del keras
    if isinstance(model, tf.Module) and hasattr(model, "fn"):
        fn = model.fn.get_concrete_function()
        converter = tf.lite.TFLiteConverter.from_concrete_functions([fn], model)
    else:
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if form == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif form == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = _representative(model, seed, calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    with contextlib.redirect_stdout(io.StringIO()):  # Keras prints the exported signature
        return converter.convert()


def build(name: str, form: str, path: str | os.PathLike, **kwargs: Any) -> Path:
    """Build ``BUILDERS[name](**kwargs)``, convert it to ``form`` and write ``path``."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(to_tflite(BUILDERS[name](**kwargs), form))
    return out
