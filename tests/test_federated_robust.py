"""federated/robust.py: each row rule in TFF returns fedcore's numpy aggregate of the same updates."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.slow

SHAPES = [(3,), (2, 2)]


def _updates(n: int) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(7)
    out = [[rng.normal(size=s).astype(np.float32) for s in SHAPES] for _ in range(n)]
    out[0] = [50.0 * t for t in out[0]]  # one outlier, so the rules differ from the mean
    return out


@pytest.mark.parametrize("name,n", [("median", 5), ("median", 6), ("trimmed_mean:beta=0.2", 6),
                                    ("multi_krum:f=1", 7), ("krum:f=1", 7)])
def test_tff_row_rule_equals_fedcore(name, n):
    import tensorflow_federated as tff

    from fedcore import aggregator as aggregators
    from federated.robust import RowRuleFactory

    updates = _updates(n)
    rule = aggregators.build(name)
    state = rule.init([np.zeros(s, np.float32) for s in SHAPES])
    for u in updates:
        rule.add(state, u, 1.0)
    want = rule.result(state).delta

    value_type = tff.types.to_type([tff.TensorType(np.float32, s) for s in SHAPES])
    process = RowRuleFactory(name, capacity=8).create(value_type)
    got = process.next(process.initialize(), updates).result
    for g, w in zip(got, want):
        np.testing.assert_allclose(np.asarray(g), w, rtol=1e-6, atol=1e-6)
    mean = np.mean([u[0] for u in updates], axis=0)
    assert not np.allclose(np.asarray(got[0]), mean)  # the outlier moved the mean, not the rule


def test_factory_refusals():
    from federated.robust import RowRuleFactory

    with pytest.raises(ValueError, match="row rules"):
        RowRuleFactory("weighted_mean", 4)
    with pytest.raises(ValueError, match="capacity"):
        RowRuleFactory("median", 0)


def test_training_takes_row_rules_unweighted_and_refuses_them_with_dp():
    import dataclasses

    from configs.presets import preset
    from federated.algorithms import uniform_weighting

    cfg = preset("tiny")
    median = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, aggregator="trimmed_mean:beta=0.2"))
    assert uniform_weighting(median)
    with_dp = dataclasses.replace(median, privacy=dataclasses.replace(median.privacy, dp="fixed"))
    with pytest.raises(ValueError, match="individual updates"):
        uniform_weighting(with_dp)
