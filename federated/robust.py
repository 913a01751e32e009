"""fedcore's Byzantine-robust rules (fedcore/robust.py) as TFF aggregation factories.

TFF 0.87 runs computations in its C++ worker, which runs no Python (a `tf.numpy_function` fails
there with "No OpKernel was registered to support Op 'PyFunc'"), so the numpy rules cannot be
called from inside a round. The same statistics are written here in TensorFlow ops, the
parameters come from the fedcore rule itself (`fedcore.aggregator.build` parses and checks the
name, e.g. "trimmed_mean:beta=0.1"), and tests/test_federated_robust.py checks each against
fedcore's numpy on the same updates:

    clients:  flatten each update to one float32 row
    aggregate (tff.federated_aggregate): the rows stacked into a [capacity, dim] block and a count
    server:   the rule over the first `count` rows (float64, as fedcore), unflattened

Every update counts once (as in fedcore), so the factories are unweighted and pair with the
`build_unweighted_*` builders. `capacity` bounds the clients a round may have: the stacked block
is the rule's price, the individual updates it needs (docs/privacy.md: these rules do not
compose with secure aggregation).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from fedcore import aggregator as aggregators
from fedcore.robust import Krum, Median, TrimmedMean
from federated.flat import unflatten

RULES = (Median.name, TrimmedMean.name, Krum.name, "multi_krum")


def _field(acc, key: str):
    """A field of the accumulator, which TFF hands over as a dict or as a named Struct."""
    return acc[key] if isinstance(acc, dict) else getattr(acc, key)


def combine(rule, rows: tf.Tensor, n: tf.Tensor) -> tf.Tensor:
    """The fedcore `rule`'s aggregate of the first `n` rows of `rows` ([capacity, dim]) as a
    float32 [dim] vector, in TensorFlow ops."""
    x = tf.cast(rows[:n], tf.float64)
    if isinstance(rule, Median):
        s = tf.sort(x, axis=0)
        lo, hi = (n - 1) // 2, n // 2  # the middle value, or the two middle values when n is even
        return tf.cast((s[lo] + s[hi]) / 2.0, tf.float32)
    if isinstance(rule, TrimmedMean):
        k = tf.cast(tf.floor(rule.beta * tf.cast(n, tf.float64) + 1e-9), tf.int32)
        kept = tf.sort(tf.cast(rows[:n], tf.float32), axis=0)[k:n - k]
        return tf.cast(tf.reduce_mean(tf.cast(kept, tf.float64), axis=0), tf.float32)
    if isinstance(rule, Krum):
        tf.debugging.assert_greater(n, 2 * rule.f + 2, message=f"{rule.name} with f={rule.f} needs n > 2f + 2")
        gram = tf.matmul(x, x, transpose_b=True)
        sq = tf.linalg.diag_part(gram)
        dist = tf.maximum(sq[:, None] + sq[None, :] - 2.0 * gram, 0.0)
        dist = tf.linalg.set_diag(dist, tf.fill([n], tf.constant(np.inf, tf.float64)))
        scores = tf.reduce_sum(tf.sort(dist, axis=1)[:, : n - rule.f - 2], axis=1)
        m = rule.m if rule.m > 0 else n - rule.f
        chosen = tf.argsort(scores, stable=True)[:m]
        return tf.cast(tf.reduce_mean(tf.gather(x, chosen), axis=0), tf.float32)
    raise ValueError(f"no TFF form for the rule {rule.name!r}; expected one of {RULES}")


class RowRuleFactory(tff.aggregators.UnweightedAggregationFactory):
    """A fedcore row rule over a round's stacked client updates (module docstring).

    Args:
        name: the rule as fedcore names it ("median", "trimmed_mean:beta=0.1", "multi_krum:f=2").
        capacity: the most clients a round may have (the stacked block's rows), >= 1.
    """

    def __init__(self, name: str, capacity: int) -> None:
        self.rule = aggregators.build(name)
        if self.rule.name not in RULES:
            raise ValueError(f"the TFF simulation runs the row rules {RULES}, got {name!r}")
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity must be an integer >= 1, got {capacity!r}")
        self.capacity = capacity

    def create(self, value_type) -> tff.templates.AggregationProcess:
        leaves = tff.structure.flatten(value_type)
        shapes = [tuple(int(d) for d in t.shape) for t in leaves]
        dtypes = [t.dtype for t in leaves]
        dim = sum(int(np.prod(s)) for s in shapes)
        cap, rule = self.capacity, self.rule
        row_type = tff.TensorType(np.float32, [dim])
        acc_type = tff.StructType([("rows", tff.TensorType(np.float32, [cap, dim])),
                                   ("n", tff.TensorType(np.int32))])

        @tff.tensorflow.computation(value_type)
        def flatten(value):
            tensors = tff.structure.flatten(value) if isinstance(value, tff.structure.Struct) else tf.nest.flatten(value)
            return tf.concat([tf.reshape(tf.cast(v, tf.float32), [-1]) for v in tensors], 0)

        @tff.tensorflow.computation
        def zero():
            return {"rows": tf.zeros([cap, dim], tf.float32), "n": tf.constant(0, tf.int32)}

        @tff.tensorflow.computation(acc_type, row_type)
        def accumulate(acc, row):
            rows, n = _field(acc, "rows"), _field(acc, "n")
            with tf.control_dependencies([tf.debugging.assert_less(n, cap, message="more clients than capacity")]):
                rows = tf.tensor_scatter_nd_update(rows, [[n]], [row])
            return {"rows": rows, "n": n + 1}

        @tff.tensorflow.computation(acc_type, acc_type)
        def merge(a, b):
            na, nb = _field(a, "n"), _field(b, "n")
            n = na + nb
            with tf.control_dependencies([tf.debugging.assert_less_equal(n, cap, message="more clients than capacity")]):
                rows = tf.concat([_field(a, "rows")[:na], _field(b, "rows")[:nb], tf.zeros([cap - n, dim], tf.float32)], 0)
            return {"rows": tf.ensure_shape(rows, [cap, dim]), "n": n}

        @tff.tensorflow.computation(acc_type)
        def report(acc):
            return unflatten(combine(rule, _field(acc, "rows"), _field(acc, "n")), shapes, dtypes, value_type)

        @tff.federated_computation()
        def init_fn():
            return tff.federated_value((), tff.SERVER)

        @tff.federated_computation(init_fn.type_signature.result, tff.FederatedType(value_type, tff.CLIENTS))
        def next_fn(state, value):
            rows = tff.federated_map(flatten, value)
            result = tff.federated_aggregate(rows, zero(), accumulate, merge, report)
            return tff.templates.MeasuredProcessOutput(state, result, tff.federated_value((), tff.SERVER))

        return tff.templates.AggregationProcess(init_fn, next_fn)
