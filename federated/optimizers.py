"""Server optimizers TFF lacks, in TFF's own optimizer interface.

`build_nesterov(lr, momentum)`: SGD with Nesterov momentum on the averaged client delta,
the server optimizer of Gboard's federated CIFG (Hard et al. 2018, FedAvgM with momentum 0.9
and learning rate 1.0; Hsu et al. 2019, "Measuring the Effects of Non-Identical Data
Distribution"). Same update as Keras and PyTorch:

    v = momentum * v + g
    w = w - lr * (g + momentum * v)
"""

from __future__ import annotations

import collections
from typing import Any

import tensorflow as tf
import tensorflow_federated as tff

_LR = "learning_rate"
_MOMENTUM = "momentum"
_ACC = "accumulator"


class _NesterovSGD(tff.learning.optimizers.Optimizer):
    """Nesterov-momentum SGD; see the module docstring."""

    def __init__(self, learning_rate: float, momentum: float) -> None:
        if learning_rate < 0:
            raise ValueError(f"learning_rate must be >= 0, got {learning_rate!r}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        self._lr = learning_rate
        self._momentum = momentum

    def initialize(self, specs: Any) -> collections.OrderedDict:
        return collections.OrderedDict([
            (_LR, self._lr), (_MOMENTUM, self._momentum),
            (_ACC, tf.nest.map_structure(lambda s: tf.zeros(s.shape, s.dtype), specs)),
        ])

    def next(self, state, weights, gradients):
        lr, m = state[_LR], state[_MOMENTUM]

        def step(w, a, g):
            if g is None:
                return w, a
            a = tf.cast(m, g.dtype) * a + g
            w = w - tf.cast(lr, g.dtype) * (g + tf.cast(m, g.dtype) * a)
            return w, a

        flat_w = tf.nest.flatten(weights)
        flat_a = tf.nest.flatten(state[_ACC])
        flat_g = tf.nest.flatten(gradients)
        pairs = [step(w, a, g) for w, a, g in zip(flat_w, flat_a, flat_g)]
        new_w = tf.nest.pack_sequence_as(weights, [p[0] for p in pairs])
        new_a = tf.nest.pack_sequence_as(state[_ACC], [p[1] for p in pairs])
        return collections.OrderedDict([(_LR, lr), (_MOMENTUM, m), (_ACC, new_a)]), new_w

    def get_hparams(self, state):
        return collections.OrderedDict([(_LR, state[_LR]), (_MOMENTUM, state[_MOMENTUM])])

    def set_hparams(self, state, hparams):
        out = collections.OrderedDict(state)
        out.update(hparams)
        return out


def build_nesterov(learning_rate: float = 1.0, momentum: float = 0.9) -> tff.learning.optimizers.Optimizer:
    """Nesterov-momentum SGD as a `tff.learning.optimizers.Optimizer`."""
    return _NesterovSGD(learning_rate, momentum)
