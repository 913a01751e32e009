"""The next-word prediction model: token ids in, next-token logits out (read top to bottom).

Embedding -> LSTM -> projection to the embedding width -> output tied to the embedding matrix
(Hard et al. 2018 tie input and output embeddings, as Press & Wolf 2017 propose). The weight
order of `model.trainable_weights` is the canonical order of every weight list in fedkeys:
TFF state, TFLite signatures, server payloads and weights.npz.

`cell="cifg"` is Gboard's recurrent layer (Hard et al. 2018): a CIFG LSTM (coupled input and
forget gates, i = 1 - f; Greff et al. 2017, "LSTM: A Search Space Odyssey") whose output is
projected to the embedding width inside the recurrence (LSTMP, Sak et al. 2014), so the
recurrent state is 96-dim, not 670-dim. With V=10,000, E=96, U=670 that is
V*E + 3*U*(2E) + 3*U + U*E + V = 1,422,250 parameters: Gboard's "about 1.4M".

Losses: `masked_loss` on the logits (Keras and TFF), and `masked_step_loss`, the same function
with the output layer's and the loss's gradient written out (`tied_cross_entropy`), which the
SGD step of phones and of the Keras baseline differentiates (docs/decisions.md).
"""

from __future__ import annotations

import functools
from typing import Sequence

import tensorflow as tf

from configs.schema import ModelConfig
from data.special_ids import PAD_ID


class TiedOutput(tf.keras.layers.Layer):
    """logits = h @ E^T + b, with E the input embedding matrix."""

    def __init__(self, embedding: tf.keras.layers.Embedding, **kwargs) -> None:
        super().__init__(**kwargs)
        self.embedding = embedding

    def build(self, input_shape) -> None:
        self.bias = self.add_weight(
            name="bias", shape=(self.embedding.input_dim,), initializer="zeros", trainable=True
        )
        super().build(input_shape)

    def call(self, h: tf.Tensor) -> tf.Tensor:
        # One 2-D matmul over all B*T positions, with E as it is: in the builtins-only suggestion
        # model E is a constant, which FULLY_CONNECTED uses in place (a transposed E would be
        # folded into a second 3.8 MB copy for `gboard`). Training does not differentiate this
        # layer: it goes through `tied_cross_entropy`.
        width = int(self.embedding.output_dim)
        logits = tf.matmul(tf.reshape(h, [-1, width]), self.embedding.embeddings, transpose_b=True) + self.bias
        return tf.reshape(logits, tf.concat([tf.shape(h)[:-1], [int(self.embedding.input_dim)]], 0))


def _unit_forget_bias(units: int):
    """Bias initializer for [f, c, o] gates: forget gate 1.0 (Jozefowicz et al. 2015), others 0."""

    def init(shape, dtype=None, **kwargs):
        return tf.concat([tf.ones((units,), dtype or tf.float32), tf.zeros((2 * units,), dtype or tf.float32)], 0)

    return init


class CIFGCell(tf.keras.layers.Layer):
    """One step of the projected CIFG LSTM (see the module docstring).

        z       = x W + h R + b,  split into [f, c~, o]
        f       = sigmoid(z_f);  c = f * c + (1 - f) * tanh(z_c)   (input gate = 1 - f)
        o       = sigmoid(z_o);  h = (o * tanh(c)) P               (P: units -> proj_units)

    State: (h [proj_units], c [units]); output: h.
    """

    def __init__(self, units: int, proj_units: int, seed: int = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        if units < 1 or proj_units < 1:
            raise ValueError(f"CIFGCell needs units >= 1 and proj_units >= 1, got {units} and {proj_units}")
        self.units, self.proj_units, self.seed = units, proj_units, seed
        self.state_size = [proj_units, units]
        self.output_size = proj_units

    def build(self, input_shape) -> None:
        d, u, p = int(input_shape[-1]), self.units, self.proj_units
        glorot = tf.keras.initializers.GlorotUniform
        self.kernel = self.add_weight(name="kernel", shape=(d, 3 * u), initializer=glorot(seed=self.seed + 1))
        self.recurrent_kernel = self.add_weight(
            name="recurrent_kernel", shape=(p, 3 * u), initializer=tf.keras.initializers.Orthogonal(seed=self.seed + 2))
        self.bias = self.add_weight(name="bias", shape=(3 * u,), initializer=_unit_forget_bias(u))
        self.projection = self.add_weight(name="projection", shape=(u, p), initializer=glorot(seed=self.seed + 3))
        super().build(input_shape)

    def call(self, inputs: tf.Tensor, states):
        return self.step(tf.matmul(inputs, self.kernel) + self.bias, states)

    def step(self, zx: tf.Tensor, states, sigmoid=tf.sigmoid, tanh=tf.tanh):
        """One step given the input's share of the gates, zx = x W + b (see `UnrolledRNN`)."""
        h, c = states[0], states[1]
        z_f, z_c, z_o = tf.split(zx + tf.matmul(h, self.recurrent_kernel), 3, axis=-1)
        f, g = sigmoid(z_f), tanh(z_c)
        c = g + f * (c - g)  # f * c + (1 - f) * g, without a scalar-broadcast subtraction
        h = tf.matmul(sigmoid(z_o) * tanh(c), self.projection)
        return h, [h, c]

    def get_config(self) -> dict:
        return {**super().get_config(), "units": self.units, "proj_units": self.proj_units, "seed": self.seed}


def _lstm_step(cell: tf.keras.layers.LSTMCell, zx: tf.Tensor, states, sigmoid=tf.sigmoid, tanh=tf.tanh):
    """Keras LSTMCell's step (gates [i, f, c, o], sigmoid and tanh) given zx = x W + b."""
    h, c = states[0], states[1]
    z_i, z_f, z_c, z_o = tf.split(zx + tf.matmul(h, cell.recurrent_kernel), 4, axis=-1)
    c = sigmoid(z_f) * c + sigmoid(z_i) * tanh(z_c)
    h = sigmoid(z_o) * tanh(c)
    return h, [h, c]


@tf.custom_gradient
def _sigmoid(x: tf.Tensor):
    """tf.sigmoid with its gradient as dy * (y - y * y): TFLite lowers TF's SigmoidGrad to
    dy * y * (1 - y), whose 1 - y runs on the reference broadcast kernel."""
    y = tf.sigmoid(x)
    return y, lambda dy: dy * (y - y * y)


@tf.custom_gradient
def _tanh(x: tf.Tensor):
    """tf.tanh with its gradient as dy - dy * y * y (TF's TanhGrad lowers to dy * (1 - y^2))."""
    y = tf.tanh(x)
    return y, lambda dy: dy - dy * y * y


class UnrolledRNN(tf.keras.layers.Layer):
    """A recurrence unrolled over the T steps, with the input projection hoisted out of the loop.

    Same cell, same weights (and weight names) and same arithmetic as `tf.keras.layers.RNN`
    (`return_sequences=True`, zero initial state), but x W + b is one [B*T, D] x [D, G] matmul for
    all steps, and so is its gradient, instead of T small ones. This is the graph phones run
    (tflite_export: builtin ops only, no TensorList), where each op has a fixed cost; it took the
    `default` train-step ratio from 1.516 to 1.174 (benchmarks/tflite_ondevice.py,
    docs/benchmarks.md). The steps use `_sigmoid` and `_tanh`, whose gradients TFLite runs
    without its reference broadcast kernel; Keras' loop keeps TF's fused SigmoidGrad/TanhGrad.
    """

    def __init__(self, cell: tf.keras.layers.Layer, **kwargs) -> None:
        super().__init__(**kwargs)
        if not isinstance(cell, (tf.keras.layers.LSTMCell, CIFGCell)):
            raise TypeError(f"UnrolledRNN: expected an LSTMCell or a CIFGCell, got {type(cell).__name__}")
        self.cell = cell

    def build(self, input_shape) -> None:
        with tf.name_scope(self.cell.name):  # as tf.keras.layers.RNN does, so weight names match
            self.cell.build(tf.TensorShape(input_shape)[-1:])
        super().build(input_shape)

    def call(self, x: tf.Tensor) -> tf.Tensor:
        steps, width = int(x.shape[1]), int(x.shape[2])
        kernel = self.cell.kernel
        zx = tf.matmul(tf.reshape(x, [-1, width]), kernel) + self.cell.bias
        zx = tf.unstack(tf.reshape(zx, [-1, steps, int(kernel.shape[-1])]), axis=1)
        batch = tf.shape(x)[0]
        states = [tf.zeros(tf.stack([batch, n])) for n in tf.nest.flatten(self.cell.state_size)]
        step = self.cell.step if isinstance(self.cell, CIFGCell) else functools.partial(_lstm_step, self.cell)
        step = functools.partial(step, sigmoid=_sigmoid, tanh=_tanh)
        outputs = []
        for z in zx:
            h, states = step(z, states)
            outputs.append(h)
        return tf.stack(outputs, axis=1)


def build_model(cfg: ModelConfig, vocab_size: int, seq_len: int, batch_size: int | None = None,
                seed: int = 0, unroll: bool = False, dropout: float = 0.0) -> tf.keras.Model:
    """Build the uncompiled model mapping int32 [B, T] token ids to float32 [B, T, V] logits.

    Args:
        cfg: model sizes.
        vocab_size: tokenizer vocabulary size, special ids included.
        seq_len: T, the number of tokens per example.
        batch_size: a static batch size (TFLite signatures need one), or None.
        seed: initializer seed, so two builds with the same seed start from the same weights.
        unroll: unroll the recurrence over the T steps (`UnrolledRNN`: static graph, no
            TensorList ops): what the TFLite signatures need to convert with builtin ops only.
            Same weights, same names, same function.
        dropout: dropout rate on the embedded input and the recurrent output, active only when
            called with training=True (Zaremba et al. 2014). Only the centralized baseline uses
            it (`model.centralized.train_converged`); federated and phone training use 0, where
            the model has no Dropout layers at all. No weights, so the same weight names.
    """
    if cfg.cell not in ("lstm", "cifg"):
        raise ValueError(f"ModelConfig.cell: expected 'lstm' or 'cifg', got {cfg.cell!r}")
    if vocab_size < 5 or seq_len < 1:
        raise ValueError(f"need vocab_size >= 5 and seq_len >= 1, got {vocab_size} and {seq_len}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")

    def drop(x: tf.Tensor, name: str, offset: int) -> tf.Tensor:
        # A seed of its own per layer: two Dropout layers with one seed draw the same mask
        # inside a tf.function (the embedding's and the CIFG output's, both [B, T, E]).
        return tf.keras.layers.Dropout(dropout, seed=seed + offset, name=name)(x) if dropout else x

    init = tf.keras.initializers.GlorotUniform
    tokens = tf.keras.Input(shape=(seq_len,), batch_size=batch_size, dtype=tf.int32, name="tokens")
    embedding = tf.keras.layers.Embedding(
        vocab_size, cfg.embedding_dim, embeddings_initializer=tf.keras.initializers.RandomUniform(
            -0.05, 0.05, seed=seed), name="embedding")
    h = drop(embedding(tokens), "embedding_dropout", 4)
    if cfg.cell == "cifg":  # projection inside the recurrence: the output already has the embedding width
        cell = CIFGCell(cfg.lstm_units, cfg.embedding_dim, seed=seed, name="cifg_cell")
        h = (UnrolledRNN(cell, name="cifg") if unroll
             else tf.keras.layers.RNN(cell, return_sequences=True, name="cifg"))(h)
        h = drop(h, "cifg_dropout", 5)
        logits = TiedOutput(embedding, name="tied_output")(h)
        return tf.keras.Model(tokens, logits, name="nwp_cifg")
    lstm_init = {"kernel_initializer": init(seed=seed + 1),
                 "recurrent_initializer": tf.keras.initializers.Orthogonal(seed=seed + 2)}
    if unroll:
        h = UnrolledRNN(tf.keras.layers.LSTMCell(cfg.lstm_units, name="lstm_cell", **lstm_init), name="lstm")(h)
    else:
        h = tf.keras.layers.LSTM(cfg.lstm_units, return_sequences=True, name="lstm", **lstm_init)(h)
    h = drop(h, "lstm_dropout", 5)
    h = tf.keras.layers.Dense(cfg.embedding_dim, kernel_initializer=init(seed=seed + 3),
                              name="projection")(h)
    logits = TiedOutput(embedding, name="tied_output")(h)
    return tf.keras.Model(tokens, logits, name="nwp_lstm")


def target_mask(y: tf.Tensor) -> tf.Tensor:
    """1.0 where the int32 target is a word, 0.0 where it is PAD: what both losses average over."""
    return tf.cast(tf.not_equal(y, PAD_ID), tf.float32)


def masked_loss(y_true: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Mean cross-entropy over the non-PAD targets of the batch.

    A PAD row contributes nothing to the sum or the count, so a phone's last batch padded to
    its static size computes exactly the step TFF computes on the short batch.
    """
    y_true = tf.cast(y_true, tf.int32)
    mask = target_mask(y_true)
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y_true, logits=logits)
    return tf.reduce_sum(ce * mask) / tf.maximum(tf.reduce_sum(mask), 1.0)


def tied_cross_entropy(h: tf.Tensor, embeddings: tf.Tensor, bias: tf.Tensor, labels: tf.Tensor,
                       weights: tf.Tensor) -> tf.Tensor:
    """sum_i weights_i * CE(labels_i, h_i E^T + b): `TiedOutput` and the loss in one, exact gradient.

    The same function and the same gradient as `masked_loss` over `TiedOutput`'s logits, with
    the gradient written out (G = weights * (softmax(z) - onehot(labels)), z = h E^T + b):

        dh = w * (softmax(z) E - E[labels])
        dE = softmax(z)^T (w h) - scatter_nd(labels, w h),   db likewise with w for w h

    so the [N, V] tensors of a step are z and softmax(z) only: no one-hot labels, no
    softmax-minus-one-hot tensor, no masked copies, and each of the three [N, V] matmuls is a
    plain BATCH_MATMUL with the [N, V] operand as it is (TFLite transposes a BATCH_MATMUL
    operand it is given adjoint, and that costs more than the small [E, N] transposes here).
    The autodiff graph of `masked_loss` lowers in TFLite to a dozen [N, V] passes (ONE_HOT,
    EQUAL, SELECT_V2, NEG, MUL, SUB, ...), several on reference kernels. The logits here are a
    rank-3 matmul against an explicit transpose of E: TRANSPOSE + BATCH_MATMUL, which the
    tensorflow wheel's TFLite runs on ruy's AVX-512 kernel, where `TiedOutput`'s 2-D matmul is
    a FULLY_CONNECTED, whose float path there is Eigen built for AVX without FMA (docs/phone.md).

    Args:
        h: float32 [N, E] states before the output layer.
        embeddings: float32 [V, E] tied embedding matrix.
        bias: float32 [V] output bias.
        labels: int32 [N] target ids.
        weights: float32 [N] per-position weights (mask / count for `masked_loss`).

    Returns:
        The weighted sum of cross-entropies, a float32 scalar.
    """
    vocab, width = int(embeddings.shape[0]), int(embeddings.shape[1])
    labels = tf.cast(labels, tf.int32)

    @tf.custom_gradient
    def loss_fn(h, embeddings, bias):
        # The [1, N, V] tensors keep their rank 3 from the matmul on: no reshapes of them.
        z = tf.matmul(tf.expand_dims(h, 0), tf.expand_dims(tf.transpose(embeddings), 0)) + bias
        picked = tf.stack([tf.zeros_like(labels), tf.range(tf.shape(labels)[0]), labels], axis=1)
        log_p_y = tf.gather_nd(tf.nn.log_softmax(z), picked)                   # [N]

        def grad(upstream):
            p = tf.nn.softmax(z)                                                 # [1, N, V]
            s = upstream * weights                                               # [N]
            dh = s[:, None] * (tf.squeeze(tf.matmul(p, embeddings), 0) - tf.gather(embeddings, labels))
            hs = tf.concat([h * s[:, None], s[:, None]], axis=1)                 # [N, E + 1]
            d = tf.matmul(tf.expand_dims(tf.transpose(hs), 0), p)                # [1, E + 1, V]
            d = tf.transpose(tf.squeeze(d, 0)) - tf.scatter_nd(labels[:, None], hs, [vocab, width + 1])
            return dh, d[:, :width], d[:, width]

        return -tf.reduce_sum(weights * log_p_y), grad

    return loss_fn(h, embeddings, bias)


def embedding_lookup(embeddings: tf.Tensor, ids: tf.Tensor) -> tf.Tensor:
    """`tf.gather(embeddings, ids)` (what the Embedding layer computes) with a dense gradient.

    The gradient is the rows of dy added at `ids` (SCATTER_ND sums repeated ids), as dense as
    the IndexedSlices TF would make and then densify for the update; the TFLite converter turns
    that densification into UNSORTED_SEGMENT_SUM, a reference kernel several times slower than
    SCATTER_ND.
    """
    width = int(embeddings.shape[-1])

    @tf.custom_gradient
    def lookup(embeddings):
        def grad(dy):
            return tf.scatter_nd(tf.reshape(ids, [-1, 1]), tf.reshape(dy, [-1, width]), tf.shape(embeddings))

        return tf.gather(embeddings, ids), grad

    return lookup(embeddings)


def masked_step_loss(model: tf.keras.Model, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """`masked_loss(y, model(x))` through `tied_cross_entropy`: what one training step differentiates.

    Same value and gradients as `masked_loss` on the model's logits (tests/test_model_tied_loss.py
    checks both), for models without dropout (federated clients and phones); `sgd_step` in
    tflite_export uses it on both sides of the Keras / TFLite comparison.
    """
    output = model.get_layer("tied_output")
    embedding = output.embedding
    h = recurrent_states(model, embedding_lookup(embedding.embeddings, tf.cast(x, tf.int32)))
    labels = tf.reshape(tf.cast(y, tf.int32), [-1])
    mask = target_mask(labels)
    weights = mask / tf.maximum(tf.reduce_sum(mask), 1.0)
    return tied_cross_entropy(tf.reshape(h, [-1, int(embedding.output_dim)]), embedding.embeddings,
                              output.bias, labels, weights)


def clip_scale(grads: Sequence[tf.Tensor], clip: tf.Tensor | float) -> tf.Tensor:
    """min(1, clip / ||grads||) over all tensors together (global L2 norm), or 1 when clip <= 0.

    The client step's clip: the phone's `train` signature (tflite_export/trainable.py, written
    with builtin ops only: SUM, SQRT, MINIMUM, SELECT_V2) and the TFF clients' optimizer
    (federated/optimizers.py `build_clipped_sgd`) both call this function. Clipping each step
    keeps the large client step a few rounds of FedAvgM need from exploding an LSTM's weights
    (Pascanu et al. 2013; Zaremba et al. 2014 clip at 5).
    """
    clip = tf.cast(clip, tf.float32)
    norm = tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(g)) for g in grads]))
    scale = tf.minimum(1.0, clip / tf.maximum(norm, 1e-12))
    return tf.where(clip > 0.0, scale, tf.ones_like(scale))


class MaskedCrossEntropy(tf.keras.losses.Loss):
    """`masked_loss` as a Keras loss (for compile() and tff.learning.models.from_keras_model)."""

    def __init__(self, name: str = "masked_cross_entropy") -> None:
        super().__init__(name=name, reduction=tf.keras.losses.Reduction.NONE)

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        return masked_loss(y_true, y_pred)


def weight_names(model: tf.keras.Model) -> list[str]:
    """Stable names for `model.trainable_weights`, in order (w000_embedding, ...)."""
    return [f"w{i:03d}_{v.name.split(':')[0].replace('/', '_')}" for i, v in enumerate(model.trainable_weights)]


def count_params(model: tf.keras.Model) -> int:
    return int(sum(int(tf.size(v)) for v in model.trainable_weights))


def param_report(cfg: ModelConfig, vocab_size: int, seq_len: int) -> dict:
    """Parameter count and per-weight shapes of the model `cfg` builds (for `--dry-run`).

    Returns:
        {"cell", "params", "bytes_float32", "bytes_int8", "weights": [{"name", "shape", "params"}]}.
    """
    model = build_model(cfg, vocab_size, seq_len)
    names = weight_names(model)
    weights = [{"name": n, "shape": list(v.shape), "params": int(tf.size(v))}
               for n, v in zip(names, model.trainable_weights)]
    total = sum(w["params"] for w in weights)
    return {"cell": cfg.cell, "vocab_size": vocab_size, "embedding_dim": cfg.embedding_dim,
            "units": cfg.lstm_units, "params": total, "bytes_float32": 4 * total, "bytes_int8": total,
            "weights": weights}


def hidden_states(model: tf.keras.Model, x: tf.Tensor) -> tf.Tensor:
    """The [B, T, E] states that `tied_output` turns into logits, for either cell.

    For callers that need the states before the output layer (e.g. a suggestion model that
    scores only the last position): lstm -> embedding, lstm, projection; cifg -> embedding, cifg.
    """
    return recurrent_states(model, model.get_layer("embedding")(x))


def recurrent_states(model: tf.keras.Model, embedded: tf.Tensor) -> tf.Tensor:
    """`hidden_states` from the embedded inputs [B, T, E]: cifg, or lstm -> projection."""
    if any(layer.name == "cifg" for layer in model.layers):
        return model.get_layer("cifg")(embedded)
    return model.get_layer("projection")(model.get_layer("lstm")(embedded))
