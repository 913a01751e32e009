"""evaluate() and the most-frequent-word baseline on hand-made logits."""

from __future__ import annotations

import math

import numpy as np
import pytest

from data.special_ids import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from model.evaluate import evaluate, most_frequent_word_baseline

tf = pytest.importorskip("tensorflow")

V = 8  # ids 0..3 special, 4..7 words


def _lookup_model(table: np.ndarray) -> "tf.keras.Model":
    """logits[b, t] = table[x[b, t]]: an embedding whose rows are the next-token logits."""
    inp = tf.keras.Input(shape=(3,), dtype=tf.int32)
    out = tf.keras.layers.Embedding(V, V)(inp)
    return tf.keras.Model(inp, out)


def test_evaluate_hand_made_logits():
    table = np.zeros((V, V), np.float32)
    table[BOS_ID, 4] = 3.0  # after BOS: 4 first, then 5 (score 2), then 6 (score 1)
    table[BOS_ID, 5] = 2.0
    table[BOS_ID, 6] = 1.0
    table[BOS_ID, UNK_ID] = 9.0  # never suggested, though it scores highest
    table[4, 7] = 5.0  # after 4: 7
    table[7, 5] = 4.0  # after 7: 5, then 4 (score 1)
    table[7, 4] = 1.0
    x = np.array([[BOS_ID, 4, 7], [BOS_ID, 4, PAD_ID]], np.int32)
    y = np.array([[5, 7, 4], [UNK_ID, EOS_ID, PAD_ID]], np.int32)
    # targets counted: 5 (rank 2), 7 (rank 1), 4 (rank 2), UNK (miss); EOS and PAD not counted
    m = _lookup_model(table)
    res = evaluate(m, [table], x, y, batch_size=1)
    assert res["words"] == 4
    assert res["top1"] == pytest.approx(1 / 4)
    assert res["top3"] == pytest.approx(3 / 4)

    def logp(row, t):
        z = table[row].astype(np.float64)
        return z[t] - math.log(np.sum(np.exp(z)))

    nll = -(logp(BOS_ID, 5) + logp(4, 7) + logp(7, 4) + logp(BOS_ID, UNK_ID))
    assert res["perplexity"] == pytest.approx(math.exp(nll / 4), rel=1e-5)
    assert res["tokens"] == 5  # non-PAD targets, EOS included


def test_most_frequent_word_baseline_suggests_frequent_words():
    train_y = np.array([[4, 4, 4, 5, 5, 6, UNK_ID, UNK_ID, UNK_ID, UNK_ID, EOS_ID, PAD_ID]])
    x = np.zeros((1, 4), np.int32)
    y = np.array([[4, 5, 6, 7]])
    res = most_frequent_word_baseline(train_y, x, y, vocab_size=V)
    # strip is always [4, 5, 6] (UNK is frequent but never suggested)
    assert res["top1"] == pytest.approx(1 / 4)
    assert res["top3"] == pytest.approx(3 / 4)
    assert math.isfinite(res["perplexity"]) and res["words"] == 4
