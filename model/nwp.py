"""The next-word prediction model: token ids in, next-token logits out (read top to bottom).

Embedding -> LSTM -> projection to the embedding width -> output tied to the embedding matrix
(Hard et al. 2018 tie input and output embeddings, as Press & Wolf 2017 propose). The weight
order of `model.trainable_weights` is the canonical order of every weight list in fedkeys:
TFF state, TFLite signatures, server payloads and weights.npz.
"""

from __future__ import annotations

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
        return tf.matmul(h, self.embedding.embeddings, transpose_b=True) + self.bias


def build_model(cfg: ModelConfig, vocab_size: int, seq_len: int, batch_size: int | None = None,
                seed: int = 0, unroll: bool = False) -> tf.keras.Model:
    """Build the uncompiled model mapping int32 [B, T] token ids to float32 [B, T, V] logits.

    Args:
        cfg: model sizes.
        vocab_size: tokenizer vocabulary size, special ids included.
        seq_len: T, the number of tokens per example.
        batch_size: a static batch size (TFLite signatures need one), or None.
        seed: initializer seed, so two builds with the same seed start from the same weights.
        unroll: unroll the recurrence over the T steps (static graph, no TensorList ops): what
            the TFLite train signature needs to convert with builtin ops only. Same weights.
    """
    if cfg.cell != "lstm":
        raise ValueError(f"ModelConfig.cell: expected 'lstm', got {cfg.cell!r}")
    if vocab_size < 5 or seq_len < 1:
        raise ValueError(f"need vocab_size >= 5 and seq_len >= 1, got {vocab_size} and {seq_len}")
    init = tf.keras.initializers.GlorotUniform
    tokens = tf.keras.Input(shape=(seq_len,), batch_size=batch_size, dtype=tf.int32, name="tokens")
    embedding = tf.keras.layers.Embedding(
        vocab_size, cfg.embedding_dim, embeddings_initializer=tf.keras.initializers.RandomUniform(
            -0.05, 0.05, seed=seed), name="embedding")
    h = embedding(tokens)
    h = tf.keras.layers.LSTM(
        cfg.lstm_units, return_sequences=True, kernel_initializer=init(seed=seed + 1),
        recurrent_initializer=tf.keras.initializers.Orthogonal(seed=seed + 2), unroll=unroll,
        name="lstm")(h)
    h = tf.keras.layers.Dense(cfg.embedding_dim, kernel_initializer=init(seed=seed + 3),
                              name="projection")(h)
    logits = TiedOutput(embedding, name="tied_output")(h)
    return tf.keras.Model(tokens, logits, name="nwp_lstm")


def masked_loss(y_true: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Mean cross-entropy over the non-PAD targets of the batch.

    A PAD row contributes nothing to the sum or the count, so a phone's last batch padded to
    its static size computes exactly the step TFF computes on the short batch.
    """
    y_true = tf.cast(y_true, tf.int32)
    mask = tf.cast(tf.not_equal(y_true, PAD_ID), tf.float32)
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y_true, logits=logits)
    return tf.reduce_sum(ce * mask) / tf.maximum(tf.reduce_sum(mask), 1.0)


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
