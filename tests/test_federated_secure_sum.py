"""federated/secure_sum.py: TFF's aggregation through the modular sum gives the collector's mean."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def test_secure_sum_factory_matches_the_float_mean():
    import tensorflow_federated as tff

    from federated.secure_sum import secure_aggregator

    value_type = tff.StructType([tff.TensorType(np.float32, [3]), tff.TensorType(np.float32, [2])])
    factory = secure_aggregator(bits=24, clip_norm=10.0, coord_bound=0.0, clients_per_round=3)
    process = factory.create(value_type)
    clients = [[np.array([1.0, 2.0, 3.0], np.float32), np.array([0.5, -1.0], np.float32)],
               [np.array([-1.0, 0.0, 1.0], np.float32), np.array([0.5, 1.0], np.float32)],
               [np.array([3.0, 1.0, -1.0], np.float32), np.array([2.0, 3.0], np.float32)]]
    out = process.next(process.initialize(), clients)
    step = 1 / factory.quantizer.scale
    np.testing.assert_allclose(out.result[0], [1.0, 1.0, 1.0], atol=step)
    np.testing.assert_allclose(out.result[1], [1.0, 1.0], atol=step)
    assert out.result[0].dtype == np.float32
