"""DP-FTRL: the tree noise's statistics and the zCDP accountant, against numbers worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedcore.mean import UniformMean
from fedcore.tree import TreeGaussian, TreeNoise
from fedmath import accounting as acc


# -- the accountant ------------------------------------------------------------------------------
def test_gaussian_rho_by_hand():
    # z = 2: one release costs 1 / (2 * 4) = 0.125; three participations 0.375
    assert acc.gaussian_rho(2.0) == pytest.approx(0.125)
    assert acc.gaussian_rho(2.0, participations=3) == pytest.approx(0.375)
    assert acc.gaussian_rho(2.0, participations=0) == 0.0
    assert acc.gaussian_rho(0.0, participations=1) == math.inf
    with pytest.raises(ValueError, match="noise_multiplier"):
        acc.gaussian_rho(-1.0)


def test_ftrl_rho_by_hand_and_through_dp_accounting():
    # 10 rounds, restart every 5: two trees of 5 leaves, depth ceil(log2 6) = 3 each, one
    # participation per tree: rho = 2 * 3 / (2 * 2^2) = 0.75
    assert acc.tree_depth(5) == 3 and acc.tree_depth(7) == 3 and acc.tree_depth(8) == 4
    assert acc.ftrl_trees(10, 5) == [5, 5] and acc.ftrl_trees(11, 5) == [5, 5, 1]
    assert acc.ftrl_rho(2.0, 10, 5) == pytest.approx(0.75)
    # trees of 3 (depth 2), two trees per pass over the users: 2 passes * 2 / 8 = 0.5
    assert acc.ftrl_rho(2.0, 12, 3, trees_per_participation=2) == pytest.approx(0.5)
    for delta in (1e-10, 1e-5):
        # dp_accounting's tree events give the epsilon that our rho implies, exactly
        assert acc.ftrl_epsilon(2.0, 10, 5, delta) == pytest.approx(acc.zcdp_epsilon(0.75, delta), rel=1e-9)
        # and the tight conversion is below Bun and Steinke's rho + 2 sqrt(rho ln(1/delta))
        assert acc.zcdp_epsilon(0.75, delta) < 0.75 + 2 * math.sqrt(0.75 * math.log(1 / delta))
    assert acc.ftrl_rho(0.0, 3, 3) == math.inf and acc.ftrl_rho(1.0, 0, 3) == 0.0


def test_zcdp_of_one_gaussian_matches_the_rdp_accountant():
    # rho-zCDP with rho = 1/(2 z^2) is one unsampled Gaussian release (q = 1)
    assert acc.zcdp_epsilon(acc.gaussian_rho(1.5), 1e-6) == pytest.approx(acc.dp_epsilon([(1.0, 1.5)], 1e-6))


# -- the tree noise -------------------------------------------------------------------------------
def test_tree_prefix_noise_has_the_stated_variance():
    """The running total of residuals after round t carries popcount(t) node variances, and a
    restart keeps the finished tree's noise while the new tree's starts from none."""
    sigma, d = 0.5, 40_000  # every coordinate is an independent sample of the same tree
    tree = TreeNoise([np.zeros(d)], sigma, restart_every=7, rng=np.random.default_rng(20))
    total = np.zeros(d)
    for t in range(1, 12):
        total += tree.next_residual()[0]
        in_tree = t if t <= 7 else t - 7
        nodes = bin(in_tree).count("1") + (bin(7).count("1") if t > 7 else 0)
        # sample variance of 40,000 normals: relative standard error sqrt(2/n) = 0.7%
        assert np.var(total) == pytest.approx(nodes * sigma ** 2, rel=0.04), t
        assert abs(np.mean(total)) < 5 * sigma * math.sqrt(nodes / d)


def test_tree_residuals_telescope_within_a_tree():
    tree = TreeNoise([np.zeros(3)], 1.0, rng=np.random.default_rng(1))
    total = sum(tree.next_residual()[0] for _ in range(6))  # 6 = 110b: nodes of 4 and 2 rounds
    np.testing.assert_allclose(total, tree.prefix_noise()[0])
    assert [level for level, _ in tree._stack] == [2, 1]


def test_tree_gaussian_wraps_a_linear_rule():
    rule = TreeGaussian(UniformMean(), clip_norm=2.0, noise_multiplier=0.5, max_weight=1.0,
                        restart_every=4, rng=np.random.default_rng(3))
    assert rule.noise_std == pytest.approx(1.0) and rule.linear
    s = rule.init([np.zeros(2)])
    rule.add(s, [np.array([1.0, 1.0])], 1.0)
    rule.add(s, [np.array([3.0, -1.0])], 1.0)
    first = np.random.default_rng(3).normal(0.0, 1.0, size=2)  # round 1: one leaf's noise
    np.testing.assert_allclose(rule.result(s).delta[0], (np.array([4.0, 0.0]) + first) / 2)
    with pytest.raises(ValueError, match="restart_every"):
        TreeGaussian(UniformMean(), 1.0, 1.0, 1.0, restart_every=-1)
