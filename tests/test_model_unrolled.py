"""`UnrolledRNN` (what phones run) is the Keras recurrence (what TFF trains) with the same weights."""

from __future__ import annotations

import numpy as np
import pytest

from configs.schema import ModelConfig

tf = pytest.importorskip("tensorflow")


@pytest.mark.parametrize("cell", ["lstm", "cifg"])
def test_unrolled_model_is_the_keras_model(cell):
    from model.nwp import build_model, masked_loss, weight_names

    cfg = ModelConfig(embedding_dim=6, lstm_units=7, cell=cell)
    keras_model = build_model(cfg, 30, 5, seed=4)
    unrolled = build_model(cfg, 30, 5, batch_size=3, seed=4, unroll=True)
    assert weight_names(unrolled) == weight_names(keras_model)
    for a, b in zip(keras_model.trainable_weights, unrolled.trainable_weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    x = np.random.default_rng(0).integers(0, 30, (3, 5)).astype(np.int32)
    y = np.roll(x, -1, axis=1)
    with tf.GradientTape() as ta:
        la = masked_loss(y, keras_model(x))
    with tf.GradientTape() as tb:
        lb = masked_loss(y, unrolled(x))
    np.testing.assert_allclose(keras_model(x).numpy(), unrolled(x).numpy(), atol=1e-6)
    for ga, gb in zip(ta.gradient(la, keras_model.trainable_weights), tb.gradient(lb, unrolled.trainable_weights)):
        np.testing.assert_allclose(tf.convert_to_tensor(ga).numpy(), tf.convert_to_tensor(gb).numpy(), atol=1e-6)


def test_unrolled_rnn_rejects_other_cells():
    from model.nwp import UnrolledRNN

    with pytest.raises(TypeError, match="LSTMCell or a CIFGCell"):
        UnrolledRNN(tf.keras.layers.GRUCell(3))
