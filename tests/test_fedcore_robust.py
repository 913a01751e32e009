"""Robust aggregation rules (fedcore/robust.py, fedcore/norm_bound.py): numbers worked out by hand,
one poisoned update against each rule, parameters through the registry, and rules run through
the real collector."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedcore import aggregator as aggregators
from fedcore.mean import UniformMean


@pytest.fixture
def rules():
    """The robust modules (fedcore.algorithm imports them, which registers their rules)."""
    import fedcore.algorithm  # noqa: F401
    from fedcore import norm_bound, robust

    return robust, norm_bound


def _run(rule, updates, weights=None):
    """The rule's aggregate of `updates` (lists of tensors), added in order."""
    state = rule.init(updates[0])
    for i, u in enumerate(updates):
        rule.add(state, u, rule.weight(1) if weights is None else weights[i])
    return rule.result(state)


def _two_tensor(a, b, c):
    return [np.array([a, b], np.float32), np.array([[c]], np.float32)]


# five updates of two tensors (a vector of 2 and a 1x1 matrix): the per-coordinate values are
#   coordinate 0: 1, 2, 9, 4, 100     coordinate 1: 10, -1, 3, 0, 2     coordinate 2: 0, 5, 1, 2, -7
FIVE = [_two_tensor(1, 10, 0), _two_tensor(2, -1, 5), _two_tensor(9, 3, 1), _two_tensor(4, 0, 2),
        _two_tensor(100, 2, -7)]


def _flat(weights):
    return np.concatenate([np.ravel(t) for t in weights])


# -- by hand ---------------------------------------------------------------------------------------
def test_median_by_hand(rules):
    robust, _ = rules
    odd = _run(robust.Median(), FIVE[:3])  # sorted (1,2,9) (-1,3,10) (0,1,5)
    np.testing.assert_array_equal(_flat(odd.delta), [2, 3, 1])
    assert [t.shape for t in odd.delta] == [(2,), (1, 1)] and odd.delta[0].dtype == np.float32
    even = _run(robust.Median(), FIVE[:4])  # (1,2,4,9) (-1,0,3,10) (0,1,2,5): middle pairs averaged
    np.testing.assert_array_equal(_flat(even.delta), [3, 1.5, 1.5])
    assert (even.reports, even.total_weight) == (4, 4.0)
    assert not robust.Median.linear


def test_trimmed_mean_by_hand(rules):
    robust, _ = rules
    # beta 0.2 of 5 drops one value from each end: (2+4+9)/3, (0+2+3)/3, (0+1+2)/3
    np.testing.assert_allclose(_flat(_run(robust.TrimmedMean(beta=0.2), FIVE).delta), [5, 5 / 3, 1], rtol=1e-6)
    # beta 0.1 of 5 drops floor(0.5) = 0: the plain mean
    np.testing.assert_allclose(_flat(_run(robust.TrimmedMean(beta=0.1), FIVE).delta), [23.2, 2.8, 0.2], rtol=1e-6)
    assert robust.TrimmedMean(beta=0.29).trimmed(100) == 29  # not 28 from 28.999999999999996
    assert robust.TrimmedMean(beta=0.49).trimmed(3) == 1  # one value of three always remains
    for bad in (-0.1, 0.5, "0.1", True):
        with pytest.raises(ValueError, match=r"beta must be a number in \[0, 0.5\)"):
            robust.TrimmedMean(beta=bad)


def test_krum_and_multi_krum_by_hand(rules):
    robust, _ = rules
    points = [[np.array([x], np.float32)] for x in (0.0, 1.0, 2.0, 3.0, 20.0)]
    # f = 1, n = 5: each score sums the squared distances to the n - f - 2 = 2 nearest others:
    #   0: 1 + 4 = 5;  1: 1 + 1 = 2;  2: 1 + 1 = 2;  3: 1 + 4 = 5;  20: 17^2 + 18^2 = 613
    krum = robust.Krum(f=1)
    state = krum.init(points[0])
    for p in points:
        krum.add(state, p, 1.0)
    np.testing.assert_allclose(krum.scores(state), [5, 2, 2, 5, 613])
    assert krum.result(state).delta[0][0] == 1.0  # the tie 1 / 2 goes to the earlier arrival
    # Multi-Krum, m = n - f = 4 by default: the four best, (1 + 2 + 0 + 3) / 4
    assert _run(robust.MultiKrum(f=1), points).delta[0][0] == pytest.approx(1.5)
    assert _run(robust.MultiKrum(f=1, m=3), points).delta[0][0] == pytest.approx(1.0)  # (1 + 2 + 0) / 3
    assert _run(robust.Krum(f=0, m=5), points).delta[0][0] == pytest.approx(5.2)  # every one: the mean


def test_krum_distances_span_tensors_and_chunks(rules, monkeypatch):
    """Scores over several tensors, columns taken two at a time, equal the direct computation."""
    robust, _ = rules
    monkeypatch.setattr(robust, "CHUNK", 2)
    rng = np.random.default_rng(3)
    ups = [[rng.normal(size=(2, 3)).astype(np.float32), rng.normal(size=5).astype(np.float32)] for _ in range(7)]
    rule = robust.Krum(f=2)
    state = rule.init(ups[0])
    for u in ups:
        rule.add(state, u, 1.0)
    flat = np.stack([_flat(u).astype(np.float64) for u in ups])
    d = ((flat[:, None, :] - flat[None, :, :]) ** 2).sum(axis=2)
    expected = [np.sort(np.delete(d[i], i))[:7 - 2 - 2].sum() for i in range(7)]
    np.testing.assert_allclose(rule.scores(state), expected, rtol=1e-9)
    np.testing.assert_allclose(_flat(_run(robust.Median(), ups).delta), np.median(flat, axis=0), rtol=1e-6)


def test_krum_refuses_too_few_updates_and_bad_parameters(rules):
    robust, _ = rules
    points = [[np.array([float(x)], np.float32)] for x in range(4)]
    with pytest.raises(ValueError, match=r"f=1 needs more than 2f \+ 2 = 4 updates, got 4"):
        _run(robust.Krum(f=1), points)
    with pytest.raises(ValueError, match=r"selects m=6 of 5 updates; expected 1 <= m <= n"):
        _run(robust.MultiKrum(f=1, m=6), points + [[np.array([9.0], np.float32)]])
    for bad in ({"f": -1}, {"f": 1.5}, {"m": -2}, {"f": True}):
        with pytest.raises(ValueError, match="must be an integer >= 0"):
            robust.Krum(**bad)


def test_rules_refuse_empty_rounds_and_misshapen_updates(rules):
    robust, norm_bound = rules
    template = [np.zeros(2, np.float32)]
    for rule in (robust.Median(), robust.TrimmedMean(), robust.Krum(), norm_bound.NormBound()):
        with pytest.raises(ValueError, match="no updates have been added"):
            rule.result(rule.init(template))
        with pytest.raises(ValueError, match=r"expected shape \(2,\), got \(3,\)"):
            rule.add(rule.init(template), [np.zeros(3, np.float32)], 1.0)


def test_norm_bound_fixed_bounds_by_hand(rules):
    _, nb = rules
    u1, u2 = [np.array([3.0, 4.0], np.float32)], [np.array([0.0, 0.5], np.float32)]
    # clip to 1: u1 (norm 5) enters as [0.6, 0.8]; weighted 1 and 3: ([0.6, 0.8] + 3 [0, 0.5]) / 4
    clip = nb.NormBound(clip_norm=1.0, zeroing=False)
    agg = _run(clip, [u1, u2], weights=[clip.weight(1), clip.weight(3)])
    np.testing.assert_allclose(agg.delta[0], [0.15, 0.575], rtol=1e-6)
    assert agg.total_weight == 4.0
    # zero above L-inf 10: [0, 20] adds nothing but keeps its weight: ([3, 4] + 0) / 2
    zero = nb.NormBound(zero_norm=10.0, clipping=False, weighted=False)
    agg = _run(zero, [u1, [np.array([0.0, 20.0], np.float32)]])
    np.testing.assert_allclose(agg.delta[0], [1.5, 2.0])
    assert (agg.reports, agg.total_weight) == (2, 2.0)
    assert clip.state() == {"clip_estimate": 1.0, "zero_estimate": 10.0}  # fixed bounds do not adapt


def test_norm_bound_adapts_as_tff_robust_aggregator(rules):
    """TFF's defaults: clip at the 0.8-quantile estimate (start 1, lr 0.2), zero above 2 * the
    0.98-quantile estimate of L-inf norms + 1 (start 10, lr ln 10), geometric updates."""
    _, nb = rules
    rule = nb.NormBound()
    assert rule.bounds() == (1.0, 21.0)
    ups = [[np.array([0.0, 1.0], np.float32)],  # L2 1 <= 1: kept; L-inf 1
           [np.array([3.0, 4.0], np.float32)],  # L2 5: clipped to [0.6, 0.8]; L-inf 4
           [np.array([0.0, 30.0], np.float32)]]  # L-inf 30 > 21: zeroed (L2 0 counts as below the clip)
    agg = _run(rule, ups, weights=[1.0, 1.0, 2.0])
    np.testing.assert_allclose(agg.delta[0], [0.6 / 4, 1.8 / 4], rtol=1e-6)
    # 2 of 3 at or below each estimate: C <- C exp(-lr (2/3 - q))
    clip_next = math.exp(-0.2 * (2 / 3 - 0.8))
    zero_next = 10.0 * math.exp(-math.log(10.0) * (2 / 3 - 0.98))
    assert rule.bounds() == (pytest.approx(clip_next), pytest.approx(2 * zero_next + 1))
    saved = rule.state()
    assert set(saved) == {"clip_estimate", "zero_estimate"} and all(isinstance(v, np.ndarray) for v in saved.values())
    fresh = nb.NormBound()
    fresh.load_state(saved)
    assert fresh.bounds() == rule.bounds()
    with pytest.raises(ValueError, match="needs 'zero_estimate'"):
        fresh.load_state({"clip_estimate": np.array(1.0)})


def test_norm_bound_refuses_bad_parameters(rules):
    _, nb = rules
    with pytest.raises(ValueError, match="clip_norm must be a finite number >= 0, got -1"):
        nb.NormBound(clip_norm=-1)
    with pytest.raises(ValueError, match=r"clip_quantile must be in \(0, 1\), got 1.0"):
        nb.NormBound(clip_quantile=1.0)
    with pytest.raises(ValueError, match="zeroing must be true or false, got 'no'"):
        nb.NormBound(zeroing="no")
    with pytest.raises(ValueError, match="needs clipping or zeroing"):
        nb.NormBound(clipping=False, zeroing=False)


# -- one poisoned update ---------------------------------------------------------------------------
def test_one_update_in_seven_scaled_by_100(rules):
    """The median, the trimmed mean and (Multi-)Krum move by no more than the honest updates'
    spread per coordinate, and a clipped mean by at most 2C/7; the plain mean moves by ~14x."""
    robust, nb = rules
    rng = np.random.default_rng(0)
    honest = [[rng.normal(1.0, 0.1, size=20).astype(np.float32)] for _ in range(7)]
    poisoned = [[honest[0][0] * 100]] + honest[1:]
    spread = np.ptp(np.stack([h[0] for h in honest]), axis=0)  # about 0.3 per coordinate

    def shift(rule):
        return np.abs(_run(rule, poisoned).delta[0] - _run(rule, honest).delta[0])

    assert shift(UniformMean()).min() > 10  # 99 * ~1 / 7 on every coordinate
    for rule in (robust.Median(), robust.TrimmedMean(beta=1 / 7), robust.Krum(f=1), robust.MultiKrum(f=1)):
        assert np.all(shift(rule) <= spread + 1e-6), rule.name
    c = 1.5 * math.sqrt(20)  # above every honest norm (~sqrt(20)): only the attacker is clipped
    assert np.linalg.norm(shift(nb.NormBound(clip_norm=c, zeroing=False, weighted=False))) <= 2 * c / 7 + 1e-5
    # with TFF's adaptive zeroing (threshold 21 at the start), the attacker's L-inf ~100 is zeroed
    zeroed = nb.NormBound(clipping=False, weighted=False)
    assert np.linalg.norm(shift(zeroed)) <= np.linalg.norm(honest[0][0]) / 7 + 1e-5


# -- the registry ----------------------------------------------------------------------------------
def test_parameters_through_the_registry(rules):
    robust, _ = rules
    assert {"median", "trimmed_mean", "krum", "multi_krum", "norm_bound"} <= set(aggregators.names())
    rule = aggregators.build("multi_krum:f=2,m=3")
    assert isinstance(rule, robust.MultiKrum) and (rule.f, rule.m) == (2, 3)
    assert rule.describe() == {"name": "multi_krum", "linear": False, "f": 2, "m": 3}
    assert aggregators.build("trimmed_mean:beta=0.25").beta == 0.25
    bound = aggregators.build("norm_bound:clip_norm=0.5,zeroing=false")
    assert (bound.clip_norm, bound.zeroing, bound.weighted) == (0.5, False, True)
    assert aggregators.build("fedcore.robust:Krum:f=3").f == 3  # an import path takes parameters too
    assert aggregators.build("median").describe() == {"name": "median", "linear": False}
    with pytest.raises(ValueError, match=r"'krum:g=1': Krum takes \(f=1, m=1\), got \['g'\]"):
        aggregators.build("krum:g=1")
    for bad, item in (("krum:f=1,m", "'m'"), ("krum:f=1,f=2", "'f=2'"), ("krum:=1", "'=1'")):
        with pytest.raises(ValueError, match=f"expected parameters as key=value,key=value, each key once, got {item}"):
            aggregators.build(bad)
    with pytest.raises(ValueError, match="must be an integer >= 0, got 1.5"):
        aggregators.build("krum:f=1.5")
    with pytest.raises(ValueError, match="unknown aggregator 'bulyan:f=1'"):
        aggregators.build("bulyan:f=1")


# -- through the real collector --------------------------------------------------------------------
def _collector(tmp_path, aggregator, goal):
    from server.app import create_app
    from server.testing import config_dict, make_bundle

    bundle = str(tmp_path / "bundle")
    w0 = make_bundle(bundle)
    cfg = config_dict(bundle, str(tmp_path / "state"), server={"goal_count": goal, "over_selection": 1.0},
                      privacy={"mode": "none", "clip_norm": 1e4}, collector={"checkpoint_every": 1},
                      train={"aggregator": aggregator, "max_examples_per_client": 100})
    return create_app(test_config=cfg).extensions["fedkeys"]["collector"], w0


def _round(col, version, ups, num_examples=5):
    """Register, select and upload one device per update; returns the published weights."""
    from fedmath import encodings
    from server.testing import TINY_SHAPES, upload_body

    for i, u in enumerate(ups):
        device = f"r{version}d{i}"
        col.register(device)
        col.checkin(device, {"idle": True, "charging": True, "unmetered": True, "num_examples": num_examples})
        col.accept(device, version, upload_body(version, version, u, num_examples))
    assert col.model_info()["version"] == version + 1
    return encodings.decode_float32(col.weights_payload(version + 1)[0], [s for _, s in TINY_SHAPES])


@pytest.mark.parametrize("name, goal", [("median", 3), ("trimmed_mean:beta=0.2", 5), ("krum:f=1", 5),
                                        ("multi_krum:f=1,m=2", 5)])
def test_robust_rules_run_through_the_collector(rules, tmp_path, name, goal):
    """The collector publishes w0 + the rule's aggregate, the outlier ignored, and records the rule."""
    from server.testing import TINY_SHAPES

    col, w0 = _collector(tmp_path, name, goal)
    rng = np.random.default_rng(1)
    ups = [[rng.normal(size=s).astype(np.float32) for _, s in TINY_SHAPES] for _ in range(goal)]
    ups[2] = [u * 100 for u in ups[2]]
    w1 = _round(col, 0, ups)
    rule = aggregators.build(name)
    expected = _run(rule, ups).delta
    for t in range(len(w0)):
        np.testing.assert_allclose(w1[t], w0[t] + expected[t], rtol=1e-6, atol=1e-6)
    meta = col.model_meta(1)
    assert meta["algorithm"]["aggregator"] == rule.describe() and meta["reports"] == goal
    assert np.abs(_flat(w1) - _flat(w0)).max() < 5  # the x100 update (entries up to ~300) is not in it


def test_norm_bound_adapts_across_rounds_in_the_collector(rules, tmp_path):
    """TFF's robust aggregator in the collector: round 1 clips at 1.0; the estimate it leaves
    (all norms above it: C * exp(0.2 * 0.8)) is round 2's clip."""
    from server.testing import TINY_SHAPES, random_update

    col, w0 = _collector(tmp_path, "norm_bound", 3)
    shapes = [s for _, s in TINY_SHAPES]
    rng = np.random.default_rng(2)
    w = w0
    for version, clip in ((0, 1.0), (1, math.exp(0.2 * 0.8))):
        ups = [random_update(shapes, 4.0, rng) for _ in range(3)]  # L2 4, L-inf well under 21
        published = _round(col, version, ups)
        expected = [sum(u[t] for u in ups) * (clip / 4.0) / 3 for t in range(len(shapes))]  # equal weights
        for t in range(len(shapes)):
            np.testing.assert_allclose(published[t], w[t] + expected[t], rtol=1e-5, atol=1e-6)
        w = published
    assert col.aggregator.clip_estimate == pytest.approx(math.exp(2 * 0.2 * 0.8))


@pytest.mark.slow
def test_norm_bound_matches_tff_robust_aggregator(rules):
    """Five rounds, some with an update scaled by 50, against tff.learning.robust_aggregator:
    the same aggregates and the same zeroing and clipping norms, round by round."""
    from federated.runtime import install_cleanup

    install_cleanup()
    tff = pytest.importorskip("tensorflow_federated")
    _, nb = rules
    process = tff.learning.robust_aggregator(weighted=True).create(tff.TensorType(np.float32, [4]),
                                                                    tff.TensorType(np.float32))
    tff_state, rule, rng = process.initialize(), nb.NormBound(), np.random.default_rng(0)
    for r in range(5):
        values = [rng.normal(0, 1 + r, size=4).astype(np.float32) for _ in range(5)]
        if r % 2:
            values[0] = values[0] * 50  # zeroed: its L-inf norm is above 2 * the estimate + 1
        weights = [float(w) for w in rng.integers(1, 5, size=5)]
        clip, zero = rule.bounds()
        out = process.next(tff_state, values, [np.float32(w) for w in weights])
        tff_state = out.state
        assert out.measurements["zeroing_norm"] == pytest.approx(zero, rel=1e-5)
        assert out.measurements["zeroing"]["clipping_norm"] == pytest.approx(clip, rel=1e-5)
        np.testing.assert_allclose(_run(rule, [[v] for v in values], weights).delta[0], out.result, atol=1e-6)
