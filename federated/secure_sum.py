"""Secure aggregation's arithmetic in the TFF simulation: each client's update quantized into
Z_(2^b) by the same function the phones run (`fedcore.secure.encode`), summed modulo 2^b, and
dequantized into the uniform mean by the collector's decoder (`SecureSum.decode`). The masks and
the cryptography are left out: they cancel exactly, so the sum is the one the secure protocol
would recover, and the accuracy cost of b bits can be measured without them (TFF itself simulates
secure sum as a plain sum with range checks).

    client:  value -> encode (numpy, via tf.numpy_function) -> int64 ring values
    server:  federated_sum -> mod 2^b -> decode (numpy) -> mean, in the model's structure
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

import fedcore.algorithm  # noqa: F401  (registers the built-in rules)
from fedcore import aggregator
from fedcore.secure import SecureSum
from secagg import ring


class SecureSumFactory(tff.aggregators.UnweightedAggregationFactory):
    """The uniform mean through a modular sum (module docstring)."""

    def __init__(self, quantizer: ring.Quantizer, seed: int = 0) -> None:
        self.rule = SecureSum(aggregator.build("uniform_mean"), quantizer)
        self.quantizer = quantizer
        self._rng = np.random.default_rng(seed)

    def create(self, value_type) -> tff.templates.AggregationProcess:
        leaves = tff.structure.flatten(value_type)
        shapes = [tuple(int(d) for d in t.shape) for t in leaves]
        dtypes = [t.dtype for t in leaves]
        size = sum(int(np.prod(s)) for s in shapes) + 1
        bits, rule, rng = self.quantizer.bits, self.rule, self._rng

        def _encode(flat: np.ndarray) -> np.ndarray:
            return rule.encode([flat], 1).astype(np.int64)

        def _decode(total: np.ndarray, count: np.ndarray) -> np.ndarray:
            ring_sum = (total % (1 << bits)).astype(np.uint32)
            agg = rule.decode(ring_sum, int(count), [np.zeros(size - 1)])
            return agg.delta[0].astype(np.float32)

        rule.rng = rng

        @tff.tensorflow.computation(value_type)
        def encode(value):
            tensors = tff.structure.flatten(value) if isinstance(value, tff.structure.Struct) else tf.nest.flatten(value)
            flat = tf.concat([tf.reshape(tf.cast(v, tf.float64), [-1]) for v in tensors], 0)
            q = tf.numpy_function(_encode, [flat], tf.int64, stateful=True)
            q.set_shape([size])
            return q

        @tff.tensorflow.computation(tff.TensorType(np.int64, [size]), tff.TensorType(np.int32))
        def decode(total, count):
            mean = tf.numpy_function(_decode, [total, count], tf.float32, stateful=False)
            mean.set_shape([size - 1])
            parts, at = [], 0
            for shape, dtype in zip(shapes, dtypes):
                n = int(np.prod(shape))
                parts.append(tf.cast(tf.reshape(mean[at:at + n], shape), dtype))
                at += n
            return tff.structure.pack_sequence_as(value_type, parts)

        @tff.federated_computation()
        def init_fn():
            return tff.federated_value((), tff.SERVER)

        @tff.federated_computation(init_fn.type_signature.result, tff.FederatedType(value_type, tff.CLIENTS))
        def next_fn(state, value):
            total = tff.federated_sum(tff.federated_map(encode, value))
            count = tff.federated_sum(tff.federated_value(1, tff.CLIENTS))
            mean = tff.federated_map(decode, (total, count))
            return tff.templates.MeasuredProcessOutput(state, mean, tff.federated_value((), tff.SERVER))

        return tff.templates.AggregationProcess(init_fn, next_fn)


def secure_aggregator(bits: int, clip_norm: float, coord_bound: float, clients_per_round: int,
                      seed: int = 0) -> SecureSumFactory:
    """The factory for a run's `secagg` settings (coord_bound 0: clip_norm)."""
    q = ring.Quantizer(bits=bits, clip_norm=clip_norm, coord_bound=coord_bound or clip_norm,
                       max_devices=clients_per_round)
    return SecureSumFactory(q, seed)
