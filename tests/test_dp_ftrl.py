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


# -- the simulation's plan: participation, refusals --------------------------------------------
def _plan(dp="ftrl", selection="epoch", restart_every=0, users=10, cohort=2, z=1.0):
    import dataclasses

    from configs.schema import PrivacyConfig, TrainConfig
    from federated.privacy import check_dp

    privacy = PrivacyConfig(dp=dp, noise_multiplier=z, clip_norm=1.0, delta=1e-3, restart_every=restart_every)
    return check_dp(privacy, dataclasses.replace(TrainConfig(), clients_per_round=cohort, selection=selection), users)


def test_epoch_selection_takes_each_user_once_per_pass():
    from federated.sampling import epoch_clients

    users = [f"u{i}" for i in range(11)]  # 5 rounds of 2 per pass, one user sits each pass out
    for p in range(3):
        seen = [u for r in range(5 * p, 5 * p + 5) for u in epoch_clients(users, 2, seed=4, round_num=r)]
        assert len(seen) == len(set(seen)) == 10
    assert epoch_clients(users, 2, 4, 0) != epoch_clients(users, 2, 4, 5)  # a fresh shuffle each pass


def test_plan_accounts_ftrl_and_unamplified_fedavg_by_hand():
    # 10 users, cohort 2: 5 rounds per pass, one tree per pass (depth ceil(log2 6) = 3)
    plan = _plan()
    assert (plan.rounds_per_pass, plan.restart_every) == (5, 5)
    assert plan.rho(7) == pytest.approx((3 + 2) / 2)  # trees of 5 and 2 leaves, z = 1
    assert plan.epsilon(7) == pytest.approx(acc.zcdp_epsilon(2.5, 1e-3))
    # DP-FedAvg under epoch selection: one release per pass a user is in, no amplification
    fedavg = _plan(dp="fixed")
    assert fedavg.rho(7) == pytest.approx(2 / 2) and fedavg.epsilon(7) == pytest.approx(acc.zcdp_epsilon(1.0, 1e-3))
    # under uniform sampling a user may join every round: rho counts all of them
    assert _plan(dp="fixed", selection="uniform").rho(7) == pytest.approx(7 / 2)


def test_plan_refuses_ftrl_without_bounded_participation():
    with pytest.raises(ValueError, match="selection 'epoch', got 'uniform'"):
        _plan(selection="uniform")
    with pytest.raises(ValueError, match="must divide the 5 rounds"):
        _plan(restart_every=2)
