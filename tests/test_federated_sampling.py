"""Client sampling and availability-aware selection: pure functions of (seed, round)."""

from __future__ import annotations

import math

import pytest

from fedmath import availability as av
from federated.sampling import round_time, sample_clients, select_clients

USERS = [f"user{i:03d}" for i in range(50)]


def test_sample_clients_is_a_pure_function_of_seed_and_round():
    a = sample_clients(USERS, 7, seed=3, round_num=5)
    assert a == sample_clients(list(reversed(USERS)), 7, seed=3, round_num=5)  # input order irrelevant
    assert len(a) == len(set(a)) == 7 and set(a) <= set(USERS)
    assert a != sample_clients(USERS, 7, seed=3, round_num=6)
    assert a != sample_clients(USERS, 7, seed=4, round_num=5)


def test_sample_clients_covers_population_uniformly():
    counts = dict.fromkeys(USERS, 0)
    for r in range(400):
        for u in sample_clients(USERS, 5, seed=0, round_num=r):
            counts[u] += 1
    expected = 400 * 5 / 50
    assert all(abs(c - expected) < 5 * math.sqrt(expected) for c in counts.values())


@pytest.mark.parametrize("k", [0, 51])
def test_sample_clients_rejects_impossible_cohorts(k):
    with pytest.raises(ValueError, match="clients_per_round"):
        sample_clients(USERS, k, seed=0, round_num=0)


def test_selection_never_picks_an_ineligible_client():
    counts = {u: (i % 7) for i, u in enumerate(USERS)}  # some users hold too few examples
    seen_dropouts = 0
    for r in range(48):  # two simulated days, hourly rounds
        sel = select_clients(USERS, 4, seed=1, round_num=r, example_counts=counts, min_examples=2,
                             round_interval_s=3600.0, over_selection=1.5, dropout_rate=0.2)
        t = round_time(r, 3600.0)
        for u in sel.selected:
            assert av.is_eligible(av.device_profile(u, 1), t, counts[u], seed=1, min_examples=2), (r, u)
        assert set(sel.reporting) <= set(sel.selected) - set(sel.dropped)
        assert len(sel.reporting) <= 4
        assert len(sel.selected) == min(len(sel.eligible), 6)
        assert not set(sel.reporting) & set(sel.late)
        seen_dropouts += len(sel.dropped)
        assert sel == select_clients(USERS, 4, seed=1, round_num=r, example_counts=counts, min_examples=2,
                                     round_interval_s=3600.0, over_selection=1.5, dropout_rate=0.2)
    assert seen_dropouts > 0


def test_availability_has_a_day_night_swing():
    ids = [f"d{i}" for i in range(400)]
    frac = av.eligible_fraction(ids, [0, 2, 12, 14])
    assert min(frac[0], frac[1]) > 3 * max(frac[2], frac[3])


def test_profile_and_state_are_deterministic():
    p = av.device_profile("alice", seed=5)
    assert p == av.device_profile("alice", seed=5)
    assert p != av.device_profile("alice", seed=6)
    assert av.device_state(p, 12345.0, 5) == av.device_state(p, 12345.0, 5)
    assert not av.is_eligible(p, 0.0, num_examples=0, seed=5)  # no data, never eligible
