"""Optimizers TFF lacks, in TFF's own optimizer interface, and the server learning-rate schedules.

`build_clipped_sgd(lr, clip)`: the clients' plain SGD with each step's gradient clipped to
global L2 norm `clip` (`model.nwp.clip_scale`, the function the phones' `train` signature
calls), so the TFF clients and the phones take the same step.

`build_nesterov(lr, momentum)`: SGD with Nesterov momentum on the averaged client delta,
the server optimizer of Gboard's federated CIFG (Hard et al. 2018, FedAvgM with momentum 0.9
and learning rate 1.0; Hsu et al. 2019, "Measuring the Effects of Non-Identical Data
Distribution"). Same update as Keras and PyTorch:

    v = momentum * v + g
    w = w - lr * (g + momentum * v)
"""

from __future__ import annotations

import collections
import math
from typing import Any

import tensorflow as tf
import tensorflow_federated as tff

from model.nwp import clip_scale

_LR = "learning_rate"
_MOMENTUM = "momentum"
_ACC = "accumulator"
_CLIP = "clip"


class _ClippedSGD(tff.learning.optimizers.Optimizer):
    """w <- w - lr * min(1, clip / ||g||) * g, the global norm over every tensor of the step."""

    def __init__(self, learning_rate: float, clip: float) -> None:
        if learning_rate < 0:
            raise ValueError(f"learning_rate must be >= 0, got {learning_rate!r}")
        if not clip > 0:
            raise ValueError(f"clip must be > 0, got {clip!r}")
        self._lr, self._clip = learning_rate, clip

    def initialize(self, specs: Any) -> collections.OrderedDict:
        del specs  # stateless apart from its hyperparameters
        return collections.OrderedDict([(_LR, self._lr), (_CLIP, self._clip)])

    def next(self, state, weights, gradients):
        flat_w, flat_g = tf.nest.flatten(weights), tf.nest.flatten(gradients)
        dense = [tf.convert_to_tensor(g) for g in flat_g if g is not None]
        step = tf.cast(state[_LR], tf.float32) * clip_scale(dense, state[_CLIP])
        new_w = [w if g is None else w - tf.cast(step, w.dtype) * tf.convert_to_tensor(g)
                 for w, g in zip(flat_w, flat_g)]
        return state, tf.nest.pack_sequence_as(weights, new_w)

    def get_hparams(self, state):
        return collections.OrderedDict([(_LR, state[_LR]), (_CLIP, state[_CLIP])])

    def set_hparams(self, state, hparams):
        out = collections.OrderedDict(state)
        out.update(hparams)
        return out


def build_clipped_sgd(learning_rate: float, clip: float) -> tff.learning.optimizers.Optimizer:
    """Plain SGD whose every step's gradient is clipped to global L2 norm `clip` (> 0)."""
    return _ClippedSGD(learning_rate, clip)


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


SCHEDULES = ("constant", "cosine")


def cosine_learning_rate(learning_rate: float, rounds: int):
    """`i -> learning_rate * (1 + cos(pi * i / rounds)) / 2`: round i = 0 .. rounds - 1 (TF-traceable).

    A half cosine (Loshchilov and Hutter 2017, without restarts) from the full rate at the first
    round towards 0 after the last, for `tff.learning.optimizers.schedule_learning_rate`, which
    calls it with the number of server steps taken so far (in the server state, so a resumed run
    continues the same schedule).
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")

    def schedule(i):
        i = tf.cast(tf.minimum(i, rounds), tf.float32)
        return learning_rate * 0.5 * (1.0 + tf.cos(math.pi * i / rounds))

    return schedule


def with_schedule(optimizer: tff.learning.optimizers.Optimizer, schedule: str, learning_rate: float,
                  rounds: int) -> tff.learning.optimizers.Optimizer:
    """`optimizer` with its learning rate following `schedule` (one of SCHEDULES) over `rounds`."""
    if schedule == "constant":
        return optimizer
    if schedule == "cosine":
        return tff.learning.optimizers.schedule_learning_rate(optimizer, cosine_learning_rate(learning_rate, rounds))
    raise ValueError(f"train.server_lr_schedule must be one of {SCHEDULES}, got {schedule!r}")
