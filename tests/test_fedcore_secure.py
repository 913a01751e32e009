"""fedcore.secure.SecureSum: refuses non-linear rules; its ring mean matches the float mean to
within the quantization step; weights travel exactly."""

from __future__ import annotations

import numpy as np
import pytest

import fedcore.algorithm  # noqa: F401  (registers the built-in rules)
from fedcore import aggregator
from fedcore.secure import SecureSum
from secagg import ring


def _q(bits=24, n=8, noise=0.0):
    return ring.Quantizer(bits=bits, clip_norm=10.0, coord_bound=10.0, max_devices=n, noise_std=noise)


def test_refuses_non_linear_rules():
    with pytest.raises(ValueError, match="needs a linear rule"):
        SecureSum(aggregator.build("median"), _q())
    with pytest.raises(ValueError, match="do not fit"):
        SecureSum(aggregator.build("weighted_mean"), _q(bits=8, n=8), max_weight=100)


def test_uniform_mean_hand_computed():
    rule = SecureSum(aggregator.build("uniform_mean"), _q(), rng=np.random.default_rng(0))
    template = [np.zeros(2), np.zeros(1)]
    s = rule.init(template)
    rule.add(s, [np.array([1.0, 2.0]), np.array([3.0])], 1)
    rule.add(s, [np.array([3.0, -2.0]), np.array([1.0])], 1)
    out = rule.result(s)
    step = 1 / _q().scale
    assert np.allclose(out.delta[0], [2.0, 0.0], atol=step) and np.allclose(out.delta[1], [2.0], atol=step)
    assert (out.reports, out.total_weight) == (2, 2.0)


def test_weighted_mean_uses_exact_weights():
    rule = SecureSum(aggregator.build("weighted_mean"), _q(), max_weight=10, rng=np.random.default_rng(1))
    s = rule.init([np.zeros(1)])
    rule.add(s, [np.array([1.0])], rule.weight(3))
    rule.add(s, [np.array([5.0])], rule.weight(1))
    out = rule.result(s)
    assert out.total_weight == 4.0
    assert out.delta[0][0] == pytest.approx((3 * 1.0 + 1 * 5.0) / 4, abs=1e-4)
    assert rule.weight(50) == 10.0  # capped at max_weight


def test_secure_mean_tracks_float_mean_on_random_updates():
    rng = np.random.default_rng(2)
    rule = SecureSum(aggregator.build("uniform_mean"), _q(bits=20, n=50), rng=rng)
    ups = [[rng.normal(0, 0.05, size=(100,))] for _ in range(50)]
    s = rule.init(ups[0])
    for u in ups:
        rule.add(s, u, 1)
    exact = np.mean([u[0] for u in ups], axis=0)
    got = rule.result(s).delta[0]
    assert np.max(np.abs(got - exact)) < 3 / _q(bits=20, n=50).scale  # a few steps / sqrt(n) at most
