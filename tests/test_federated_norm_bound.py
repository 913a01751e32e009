"""`train.aggregator = "norm_bound"` in the TFF simulation: tff.learning.robust_aggregator, the
reference fedcore/norm_bound.py follows. Slow: imports TensorFlow Federated."""

from __future__ import annotations

import dataclasses

import pytest

from configs.presets import preset

pytestmark = pytest.mark.slow


def _cfg(aggregator: str, dp: str = "none"):
    base = preset("tiny")
    return dataclasses.replace(base, train=dataclasses.replace(base.train, aggregator=aggregator),
                               privacy=dataclasses.replace(base.privacy, dp=dp))


def test_norm_bound_builds_tffs_robust_aggregator_and_other_rules_are_refused():
    from federated.algorithms import build_process, uniform_weighting
    from federated.privacy import DpPlan

    assert uniform_weighting(_cfg("norm_bound")) is False  # example-weighted, as TFF's default
    process = build_process(_cfg("norm_bound"), vocab_size=50, dp=DpPlan("none", 0.0, 0.0, 4, 40, 0.0, 0.0))
    plain = build_process(_cfg("weighted_mean"), vocab_size=50, dp=DpPlan("none", 0.0, 0.0, 4, 40, 0.0, 0.0))
    # the robust aggregator carries the two adaptive estimates (clipping, zeroing) in its state
    import tensorflow as tf

    robust_state = tf.nest.flatten(process.initialize().aggregator)
    assert len(robust_state) > len(tf.nest.flatten(plain.initialize().aggregator))
    for rule in ("screened", "norm_bound:clip_norm=1.0"):  # the median runs in TFF: test_federated_robust.py
        with pytest.raises(ValueError, match="runs on the collector only"):
            uniform_weighting(_cfg(rule))
    with pytest.raises(ValueError, match="DP aggregator already clips"):
        uniform_weighting(_cfg("norm_bound", dp="fixed"))
