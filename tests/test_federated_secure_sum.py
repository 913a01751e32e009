"""federated/secure_sum.py: TFF's aggregation through the modular sum gives the collector's mean,
value for value where stochastic rounding has no choice."""

from __future__ import annotations

import numpy as np
import pytest

import fedcore.algorithm  # noqa: F401  (registers the built-in rules)
from fedcore import aggregator
from fedcore.secure import SecureSum

pytestmark = pytest.mark.slow


def test_secure_sum_factory_matches_the_collectors_decoder():
    import tensorflow_federated as tff

    from federated.secure_sum import secure_aggregator

    value_type = tff.StructType([tff.TensorType(np.float32, [3]), tff.TensorType(np.float32, [2])])
    factory = secure_aggregator(bits=24, clip_norm=10.0, coord_bound=4.0, clients_per_round=3)
    q = factory.quantizer
    process = factory.create(value_type)
    rng = np.random.default_rng(0)
    # on the quantization grid (multiples of 1/scale, float32-exact) rounding is deterministic
    grid = [rng.integers(-1000, 1000, size=5) / q.scale for _ in range(3)]
    clients = [[g[:3].astype(np.float32), g[3:].astype(np.float32)] for g in grid]
    out = process.next(process.initialize(), clients)
    rule = SecureSum(aggregator.build("uniform_mean"), q)
    s = rule.init([np.zeros(5)])
    for c in clients:
        rule.add(s, [np.concatenate(c).astype(np.float64)], 1)
    want = rule.result(s).delta[0]
    np.testing.assert_array_equal(np.concatenate(out.result).astype(np.float32), want.astype(np.float32))
    # off the grid: the mean to within one quantization step, with the coordinate clip applied
    clients = [[np.array([1.0, 2.0, 3.0], np.float32), np.array([0.5, -1.0], np.float32)],
               [np.array([-1.0, 0.0, 1.0], np.float32), np.array([0.5, 9.0], np.float32)],
               [np.array([3.0, 1.0, -1.0], np.float32), np.array([2.0, 3.0], np.float32)]]
    out = process.next(process.initialize(), clients)
    np.testing.assert_allclose(out.result[0], [1.0, 1.0, 1.0], atol=1 / q.scale)
    np.testing.assert_allclose(out.result[1], [1.0, 2.0], atol=1 / q.scale)  # 9.0 clipped to 4.0
