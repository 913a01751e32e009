"""Secure aggregation's arithmetic in the TFF simulation: each client's update quantized into
Z_(2^b) exactly as the phones do it (`fedcore.secure.encode`: L2 clip, coordinate clip, scale,
stochastic rounding, the weight as one more ring value), summed modulo 2^b, and dequantized into
the uniform mean as the collector's `SecureSum.decode` does, with the same `secagg.ring.Quantizer`
constants. The masks and the cryptography are left out: they cancel exactly, so the sum is the one
the secure protocol recovers, and the accuracy cost of b bits can be measured without them (TFF
itself simulates secure sum as a plain sum with range checks).

The arithmetic is written again in TensorFlow ops (TFF's C++ runtime runs no Python functions);
tests/test_federated_secure_sum.py checks it against the numpy path value for value on inputs
where stochastic rounding has no choice to make. DP noise is not added here: the simulation's DP
is TFF's own aggregator, which this factory does not compose with.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from federated.flat import unflatten
from secagg import ring


class SecureSumFactory(tff.aggregators.UnweightedAggregationFactory):
    """The uniform mean through a modular sum (module docstring)."""

    def __init__(self, quantizer: ring.Quantizer) -> None:
        if quantizer.noise_std != 0:
            raise ValueError(f"the simulation's secure sum adds no noise; got noise_std {quantizer.noise_std!r}")
        self.quantizer = quantizer

    def create(self, value_type) -> tff.templates.AggregationProcess:
        leaves = tff.structure.flatten(value_type)
        shapes = [tuple(int(d) for d in t.shape) for t in leaves]
        dtypes = [t.dtype for t in leaves]
        size = sum(int(np.prod(s)) for s in shapes)
        q = self.quantizer
        modulus, half = 1 << q.bits, 1 << (q.bits - 1)

        @tff.tensorflow.computation(value_type)
        def encode(value):
            tensors = tff.structure.flatten(value) if isinstance(value, tff.structure.Struct) else tf.nest.flatten(value)
            u = tf.concat([tf.reshape(tf.cast(v, tf.float64), [-1]) for v in tensors], 0)
            norm = tf.norm(u)
            u = tf.where(norm > q.clip_norm, u * (q.clip_norm / norm), u)
            x = tf.clip_by_value(u, -q.coord_bound, q.coord_bound) * q.scale
            low = tf.floor(x)
            up = tf.cast(tf.random.uniform(tf.shape(x), dtype=tf.float64) < (x - low), tf.float64)
            ints = tf.cast(low + up, tf.int64)
            body = tf.math.floormod(ints, modulus)
            return tf.concat([body, tf.constant([1], tf.int64)], 0)  # weight 1: the uniform mean

        @tff.tensorflow.computation(tff.TensorType(np.int64, [size + 1]))
        def decode(total):
            ring_sum = tf.math.floormod(total, modulus)
            signed = tf.where(ring_sum >= half, ring_sum - modulus, ring_sum)
            weight = tf.cast(signed[-1], tf.float64)
            mean = tf.cast(signed[:-1], tf.float64) / q.scale / weight
            return unflatten(mean, shapes, dtypes, value_type)

        @tff.federated_computation()
        def init_fn():
            return tff.federated_value((), tff.SERVER)

        @tff.federated_computation(init_fn.type_signature.result, tff.FederatedType(value_type, tff.CLIENTS))
        def next_fn(state, value):
            total = tff.federated_sum(tff.federated_map(encode, value))
            mean = tff.federated_map(decode, total)
            return tff.templates.MeasuredProcessOutput(state, mean, tff.federated_value((), tff.SERVER))

        return tff.templates.AggregationProcess(init_fn, next_fn)


def secure_aggregator(bits: int, clip_norm: float, coord_bound: float, clients_per_round: int) -> SecureSumFactory:
    """The factory for a run's `secagg` settings (coord_bound 0: clip_norm)."""
    return SecureSumFactory(ring.Quantizer(bits=bits, clip_norm=clip_norm, coord_bound=coord_bound or clip_norm,
                                           max_devices=clients_per_round))
