"""The Keras next-word model as a TFF model (thin glue; the model itself is model/nwp.py).

`model_fn` builds `model.nwp.build_model` and wraps it with
`tff.learning.models.from_keras_model` under `model.nwp.MaskedCrossEntropy`, so a TFF client
step is exactly a plain Keras SGD step on `masked_loss`. TFF counts `num_examples` as batch
rows, which is the weight FedAvg gives each client (McMahan et al. 2017) and what the phones
report to the collector.
"""

from __future__ import annotations

from typing import Callable

import tensorflow as tf
import tensorflow_federated as tff

from configs.schema import ModelConfig
from model.nwp import MaskedCrossEntropy, build_model


def input_spec(seq_len: int) -> tuple[tf.TensorSpec, tf.TensorSpec]:
    """The element spec of `data.tfdata.client_dataset`: int32 (x, y) batches [None, T]."""
    return (tf.TensorSpec([None, seq_len], tf.int32, name="x"),
            tf.TensorSpec([None, seq_len], tf.int32, name="y"))


def make_model_fn(model_cfg: ModelConfig, vocab_size: int, seq_len: int,
                  seed: int = 0) -> Callable[[], tff.learning.models.VariableModel]:
    """A no-argument constructor of a fresh TFF model, as tff.learning algorithms require.

    The initial weights it builds are replaced by `initial_weights` in training, so the run
    starts from exactly `build_model(..., seed)` however TFF traces the constructor.
    """
    spec = input_spec(seq_len)

    def model_fn() -> tff.learning.models.VariableModel:
        keras_model = build_model(model_cfg, vocab_size, seq_len, seed=seed)
        return tff.learning.models.from_keras_model(keras_model, loss=MaskedCrossEntropy(), input_spec=spec)

    return model_fn


def initial_weights(model_cfg: ModelConfig, vocab_size: int, seq_len: int, seed: int = 0) -> list:
    """Trainable weights of `build_model(..., seed)` built eagerly, in canonical order (numpy)."""
    keras_model = build_model(model_cfg, vocab_size, seq_len, seed=seed)
    return [v.numpy() for v in keras_model.trainable_weights]


def model_weights(trainable: list) -> tff.learning.models.ModelWeights:
    """TFF ModelWeights holding `trainable` (the model has no non-trainable weights)."""
    return tff.learning.models.ModelWeights(trainable=list(trainable), non_trainable=[])
