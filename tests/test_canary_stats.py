"""The multiple-comparison reading of the DP canary goal (fedmath.canary_stats.py), by hand."""

import pytest

from fedmath.canary_stats import binomial_tail, within_reference


def test_binomial_tail_by_hand():
    # P(X >= 1), n = 12, p = 0.05: 1 - 0.95^12 = 0.4596...
    assert binomial_tail(1, 12, 0.05) == pytest.approx(1 - 0.95 ** 12)
    # P(X >= 2), n = 3, p = 0.5: (3 + 1) / 8
    assert binomial_tail(2, 3, 0.5) == pytest.approx(0.5)
    assert binomial_tail(0, 5, 0.3) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        binomial_tail(7, 5, 0.3)


def test_within_reference_literal_and_bonferroni():
    refs = list(range(1, 101))  # percentiles by linear interpolation: p95 = 95.05, p99.5 = 99.505
    out = within_reference([10.0, 96.0, 50.0, 99.0, 20.0, 30.0, 40.0, 60.0, 70.0, 80.0], refs)
    assert out["threshold"] == pytest.approx(95.05)
    assert out["bonferroni_percentile"] == pytest.approx(99.5)
    assert out["bonferroni_threshold"] == pytest.approx(99.505)
    assert (out["above"], out["literal_ok"]) == (2, False)  # 96 and 99 exceed the p95
    assert (out["bonferroni_above"], out["bonferroni_ok"]) == (0, True)
    assert out["expected_above"] == pytest.approx(0.5)
    assert out["p_at_least_above"] == pytest.approx(1 - 0.95 ** 10 - 10 * 0.05 * 0.95 ** 9)
    assert out["chance_literal_fails"] == pytest.approx(1 - 0.95 ** 10)


def test_within_reference_refuses_empty():
    with pytest.raises(ValueError):
        within_reference([], [1.0])
