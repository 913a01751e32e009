"""Score a model, or the most-frequent-word baseline, with the one metric definition.

Both go through `model.metrics.NextWordAccumulator`, so top-1/top-3 recall and perplexity
mean the same thing for the TFF model, the phones' model, the centralized baseline and the
unigram baseline (docs/metrics.md).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from data.special_ids import PAD_ID
from model.metrics import NEVER_SUGGESTED, NextWordAccumulator, target_mask


def _result(acc: NextWordAccumulator, y: np.ndarray) -> dict[str, float]:
    out = acc.result()
    out["tokens"] = float(np.sum(y != PAD_ID))  # non-PAD targets scored (EOS included)
    return out


def evaluate(model, weights: Sequence[np.ndarray] | None, x: np.ndarray, y: np.ndarray,
             batch_size: int = 64) -> dict[str, float]:
    """Top-1/top-3 recall and perplexity of `model` carrying `weights` on (x, y).

    Args:
        model: a Keras model from `model.nwp.build_model` (any batch size, or the same static one).
        weights: arrays in canonical order (`model.trainable_weights`), or None to keep the
            model's current weights.
        x, y: int32 [N, T] inputs and targets.
        batch_size: rows per forward pass (bounds memory: B * T * V floats).

    Returns:
        {"top1", "top3", "perplexity", "words", "tokens"}; "words" is the number of counted
        word targets (docs/metrics.md), "tokens" the number of non-PAD targets.
    """
    import tensorflow as tf

    x = np.asarray(x, dtype=np.int32)
    y = np.asarray(y, dtype=np.int32)
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"x and y must both be [N, T]; got {x.shape} and {y.shape}")
    if weights is not None:
        from model.weights_io import check_shapes

        check_shapes(model, weights)
        for v, a in zip(model.trainable_weights, weights):
            v.assign(a)
    static = model.inputs[0].shape[0]
    step = static or batch_size
    forward = getattr(model, "_fedkeys_forward", None)
    if forward is None:  # traced once per model, not once per evaluation (each round calls this)
        forward = tf.function(lambda t: model(t, training=False), reduce_retracing=True)
        model._fedkeys_forward = forward
    acc = NextWordAccumulator(ks=(1, 3))
    for start in range(0, len(x), step):
        xb, yb = x[start:start + step], y[start:start + step]
        n = len(xb)
        if static and n < static:  # a static-batch model: pad with PAD rows, score only real rows
            xb = np.concatenate([xb, np.zeros((static - n, x.shape[1]), np.int32)])
        logits = forward(tf.constant(xb)).numpy()[:n]
        acc.update_logits(logits, yb)
    return _result(acc, y)


def unigram_log_probs(train_y: np.ndarray, vocab_size: int) -> np.ndarray:
    """Add-one smoothed log unigram probabilities of the training targets (PAD excluded)."""
    ids = np.asarray(train_y).ravel()
    ids = ids[ids != PAD_ID]
    if ids.size and int(ids.max()) >= vocab_size:
        raise ValueError(f"train_y holds id {int(ids.max())}, outside vocab_size {vocab_size}")
    counts = np.bincount(ids, minlength=vocab_size).astype(np.float64) + 1.0
    counts[PAD_ID] = 1e-12  # never a target
    return np.log(counts / counts.sum())


def most_frequent_word_baseline(train_y: np.ndarray, x: np.ndarray, y: np.ndarray,
                                vocab_size: int | None = None, batch_size: int = 64) -> dict[str, float]:
    """Always show the most frequent training words (the strip never changes with context).

    The score of every id is its add-one smoothed unigram log probability among the training
    targets, so top-k is the k most frequent suggestible words and perplexity is the unigram's.
    `x` is unused by the prediction (it takes no context) but kept so every scorer has one form.
    """
    y = np.asarray(y)
    if np.shape(x) != y.shape:
        raise ValueError(f"x and y must have the same shape; got {np.shape(x)} and {y.shape}")
    if vocab_size is None:
        vocab_size = int(max(np.max(train_y), np.max(y))) + 1
    vocab_size = max(vocab_size, len(NEVER_SUGGESTED) + 3)
    logp = unigram_log_probs(train_y, vocab_size)
    acc = NextWordAccumulator(ks=(1, 3))
    for start in range(0, len(y), batch_size):
        yb = y[start:start + batch_size]
        if not np.any(target_mask(yb)):
            continue
        logits = np.broadcast_to(logp, yb.shape + (vocab_size,))
        acc.update_logits(logits, yb)
    return _result(acc, y)


def backdoor_success(model, weights: Sequence[np.ndarray], backdoor, x: np.ndarray, batch_size: int = 256) -> float:
    """Share of the held-out rows `x`, each with the trigger planted (`fedmath.attacks.Backdoor`), whose
    top-1 is the backdoor's target, for `model` (`model.nwp.build_model`) carrying `weights`."""
    import tensorflow as tf

    for v, w in zip(model.trainable_weights, weights):
        v.assign(w)
    px, pos = backdoor.contexts(x)
    hits = []
    for a in range(0, len(px), batch_size):
        logits = model(tf.constant(px[a:a + batch_size]), training=False).numpy()
        rows = np.arange(len(logits))
        hits.append(logits[rows, pos[a:a + batch_size]])
    return backdoor.success(np.concatenate(hits))
