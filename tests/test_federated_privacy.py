"""DP settings checks and the epsilon the simulation reports (no TFF needed)."""

from __future__ import annotations

import math

import pytest

from configs.schema import PrivacyConfig, TrainConfig
from federated.privacy import check_dp, default_delta


def _plan(z=1.0, m=10, n=1000, **kw):
    return check_dp(PrivacyConfig(dp="fixed", noise_multiplier=z, clip_norm=1.0, **kw),
                    TrainConfig(clients_per_round=m), n)


def test_epsilon_grows_with_rounds_and_shrinks_with_noise():
    p = _plan(z=1.0)
    eps = [p.epsilon(r) for r in (1, 10, 100)]
    assert 0 < eps[0] < eps[1] < eps[2] < math.inf
    assert _plan(z=2.0).epsilon(100) < eps[2] < _plan(z=0.7).epsilon(100)
    assert p.epsilon(0) == 0.0
    assert _plan(z=0.0).epsilon(1) == math.inf


def test_default_delta_and_sampling_rate():
    p = _plan(n=1000, m=10)
    assert p.delta == pytest.approx(1000 ** -1.1) and p.delta < 1 / 1000
    assert p.sampling_q == pytest.approx(0.01)
    avail = check_dp(PrivacyConfig(dp="fixed", noise_multiplier=1.0),
                     TrainConfig(clients_per_round=10, selection="availability"), 1000)
    assert avail.sampling_q == 1.0  # no amplification claimed for non-uniform selection
    assert avail.epsilon(10) > p.epsilon(10)
    assert default_delta(100) == pytest.approx(100 ** -1.1)


@pytest.mark.parametrize("kwargs, match", [
    (dict(m=11, n=10), "population"),
    (dict(m=0), "clients_per_round"),
    (dict(z=-1.0), "noise_multiplier"),
    (dict(delta=0.01, n=1000), "delta"),
    (dict(z=float("nan")), "noise_multiplier"),
])
def test_meaningless_settings_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _plan(**kwargs)


def test_bad_mode_clip_and_quantile_are_refused():
    with pytest.raises(ValueError, match="privacy.dp"):
        check_dp(PrivacyConfig(dp="local"), TrainConfig(), 100)
    with pytest.raises(ValueError, match="clip_norm"):
        check_dp(PrivacyConfig(dp="fixed", clip_norm=0.0), TrainConfig(), 100)
    with pytest.raises(ValueError, match="quantile"):
        check_dp(PrivacyConfig(dp="adaptive", target_unclipped_quantile=1.0), TrainConfig(), 100)
