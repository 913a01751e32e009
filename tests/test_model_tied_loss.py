"""`tied_cross_entropy` (the training step's output layer and loss) is `masked_loss` on the logits."""

from __future__ import annotations

import numpy as np
import pytest

from configs.schema import ModelConfig

tf = pytest.importorskip("tensorflow")


@pytest.mark.parametrize("cell,unroll", [("lstm", False), ("cifg", False), ("cifg", True)])
def test_masked_step_loss_is_masked_loss_value_and_gradients(cell, unroll):
    from model.nwp import build_model, masked_loss, masked_step_loss

    model = build_model(ModelConfig(embedding_dim=5, lstm_units=7, cell=cell), 23, 4,
                        batch_size=3 if unroll else None, seed=2, unroll=unroll)
    rng = np.random.default_rng(0)
    for v in model.trainable_weights:  # biases too, so nothing passes by zeros
        v.assign(v.numpy() + rng.normal(0, 0.3, v.shape).astype(np.float32))
    x = rng.integers(1, 23, (3, 4)).astype(np.int32)
    y = np.roll(x, -1, axis=1)
    y[0, 2:] = 0  # PAD targets carry no loss
    y[1, 1] = y[1, 3] = 7  # a label twice: the scatter adds
    with tf.GradientTape() as ta:
        want = masked_loss(y, model(x, training=True))
    with tf.GradientTape() as tb:
        got = masked_step_loss(model, x, y)
    np.testing.assert_allclose(float(got), float(want), rtol=1e-6)
    for ga, gb in zip(ta.gradient(want, model.trainable_weights), tb.gradient(got, model.trainable_weights)):
        np.testing.assert_allclose(tf.convert_to_tensor(gb).numpy(), tf.convert_to_tensor(ga).numpy(), atol=1e-6)


def test_tied_cross_entropy_hand_checked():
    from model.nwp import tied_cross_entropy

    h = tf.constant([[1.0, 0.0], [0.0, 2.0]])
    emb = tf.constant([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    bias = tf.constant([0.0, 0.5, -1.0])
    labels = tf.constant([2, 0])
    weights = tf.constant([0.25, 0.75])
    with tf.GradientTape() as tape:
        tape.watch([h, emb, bias])
        loss = tied_cross_entropy(h, emb, bias, labels, weights)
    # Row 0: z = [1, 0.5, 0]; row 1: z = [0, 2.5, 1].
    z = np.array([[1.0, 0.5, 0.0], [0.0, 2.5, 1.0]])
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    np.testing.assert_allclose(float(loss), -(0.25 * logp[0, 2] + 0.75 * logp[1, 0]), rtol=1e-6)
    g = (np.exp(logp) - np.eye(3)[[2, 0]]) * np.array([[0.25], [0.75]])  # dL/dz
    dh, demb, dbias = tape.gradient(loss, [h, emb, bias])
    np.testing.assert_allclose(dh.numpy(), g @ emb.numpy(), atol=1e-6)
    np.testing.assert_allclose(tf.convert_to_tensor(demb).numpy(), g.T @ h.numpy(), atol=1e-6)
    np.testing.assert_allclose(dbias.numpy(), g.sum(0), atol=1e-6)
