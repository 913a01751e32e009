"""Anomaly scores, reputation and the screened rule (fedcore/anomaly.py, fedcore/reputation.py)
on hand-computed vectors."""

from __future__ import annotations

import numpy as np
import pytest

from fedcore import aggregator as aggregators
from fedcore.anomaly import Screened, robust_z, score_rows
from fedcore.reputation import MIN_REPUTATION, reputation_step

# norms 1, 2, 3, 4, 100 along one axis; the last points the other way
ROWS = np.array([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [4.0, 0.0], [-100.0, 0.0]])


def test_robust_z_by_hand():
    # median 3, absolute deviations 2, 1, 0, 1, 97 -> MAD 1 -> scale 1.4826
    np.testing.assert_allclose(robust_z([1, 2, 3, 4, 100]), np.array([-2, -1, 0, 1, 97]) / 1.4826)
    # MAD 0: floored at 1e-3 of the median
    np.testing.assert_allclose(robust_z([1, 1, 1, 1, -1]), [0, 0, 0, 0, -2 / (1.4826 * 1e-3)])
    np.testing.assert_array_equal(robust_z([5.0, 7.0]), [0.0, 0.0])  # too few to say anything


def test_scores_by_hand():
    scores = score_rows(ROWS, previous=None)
    np.testing.assert_allclose([s.norm for s in scores], [1, 2, 3, 4, 100])
    np.testing.assert_allclose([s.norm_z for s in scores], np.array([-2, -1, 0, 1, 97]) / 1.4826)
    # the reference counts each update at most at the median norm 3: bounded rows 1, 2, 3, 3, -3
    # (sum 6); each of the first four sees a positive mean of the others (cosine 1), the last
    # sees (6 + 3) / 4 > 0 (cosine -1)
    np.testing.assert_allclose([s.cos_mean for s in scores], [1, 1, 1, 1, -1])
    assert [s.reasons for s in scores] == [(), (), (), (), ("norm", "direction")]
    assert all(s.cos_previous == 0.0 for s in scores)  # the first round has no previous aggregate

    against = score_rows(ROWS, previous=np.array([0.5, 0.0]))
    np.testing.assert_allclose([s.cos_previous for s in against], [1, 1, 1, 1, -1])
    assert against[4].reasons == ("norm", "direction", "previous") and not against[0].flagged


def test_a_boosted_update_does_not_turn_the_round_against_the_honest():
    """Without the median-norm bound the mean of the others would point along the x100 update,
    and every honest update would score cosine -1 against its round."""
    rng = np.random.default_rng(0)
    honest = np.ones((9, 50)) + rng.normal(0, 0.3, (9, 50))
    rows = np.vstack([honest, -100 * np.ones((1, 50))])
    scores = score_rows(rows, previous=None)
    assert all(s.cos_mean > 0.8 for s in scores[:9])
    assert [i for i, s in enumerate(scores) if s.flagged] == [9]


def test_reputation_by_hand():
    assert reputation_step(1.0, True) == pytest.approx(0.8)
    assert reputation_step(0.8, False) == pytest.approx(0.84)
    assert reputation_step(0.8, True, decay=0.5) == pytest.approx(0.4)
    assert reputation_step(MIN_REPUTATION, True) == MIN_REPUTATION  # floored, never zero
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        reputation_step(1.5, False)
    with pytest.raises(ValueError, match="decay"):
        reputation_step(1.0, False, decay=1.0)


def _screen(rule, rows, devices):
    state = rule.init([np.zeros(2, np.float32)])
    for row, device in zip(rows, devices):
        rule.add_from(state, device, [np.asarray(row, np.float32)], 1.0)
    return rule.result(state)


def test_screened_downweights_drops_and_remembers():
    devices = ["a", "b", "c", "d", "m"]
    down = Screened(inner="weighted_mean", flagged_weight=0.01)
    agg = _screen(down, ROWS, devices)
    # (1 + 2 + 3 + 4 + 0.01 * -100) / (4 + 0.01)
    np.testing.assert_allclose(agg.delta[0], [9 / 4.01, 0], rtol=1e-6)
    assert agg.reports == 5 and down.flagged() == 1
    assert down.reputations == {"a": 1.0, "b": 1.0, "c": 1.0, "d": 1.0, "m": pytest.approx(0.8)}
    # next round: everyone honest (one direction, norms 1 to 3: the largest z is 1 / (1.4826 * 0.5)),
    # m still counts 0.8
    rows = np.array([[1.0, 0.0], [1.5, 0.0], [2.0, 0.0], [2.5, 0.0], [3.0, 0.0]])
    agg = _screen(down, rows, devices)
    assert down.flagged() == 0
    np.testing.assert_allclose(agg.delta[0], [(7 + 0.8 * 3) / 4.8, 0], rtol=1e-6)
    assert down.reputations["m"] == pytest.approx(0.84)

    drop = Screened(inner="weighted_mean", policy="drop")
    np.testing.assert_allclose(_screen(drop, ROWS, devices).delta[0], [2.5, 0], rtol=1e-6)


def test_screened_through_the_registry_and_its_refusals():
    import fedcore.algorithm  # noqa: F401  (registers the rules)

    rule = aggregators.build("screened:inner=median,policy=drop,z_max=4")
    assert rule.describe() == {"name": "screened", "linear": False, "inner": {"name": "median", "linear": False},
                               "policy": "drop", "z_max": 4.0, "flagged_weight": 0.01, "reputation_decay": 0.8}
    with pytest.raises(ValueError, match="policy"):
        Screened(policy="ban")
    with pytest.raises(ValueError, match="flagged_weight"):
        Screened(flagged_weight=0.0)
    with pytest.raises(ValueError, match="another screened"):
        Screened(inner="screened")
    with pytest.raises(ValueError, match="no updates"):
        Screened().result(Screened().init([np.zeros(2, np.float32)]))


def test_every_rule_takes_the_device_id_and_only_screened_uses_it():
    from fedcore import aggregator as aggregators

    mean, screened = aggregators.build("weighted_mean"), aggregators.build("screened:inner=weighted_mean")
    assert not mean.tracks_devices and screened.tracks_devices
    state = mean.init([np.zeros(2, np.float32)])
    mean.add_from(state, "phone-1", [np.array([1.0, 3.0], np.float32)], 1.0)
    mean.add_from(state, "phone-2", [np.array([3.0, 5.0], np.float32)], 3.0)
    assert np.allclose(mean.result(state).delta[0], [2.5, 4.5])  # (1 + 9) / 4, (3 + 15) / 4
    state = screened.init([np.zeros(2, np.float32)])
    screened.add_from(state, "phone-1", [np.array([1.0, 3.0], np.float32)], 1.0)
    assert state.device_ids == ["phone-1"]
