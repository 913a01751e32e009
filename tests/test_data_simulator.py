"""The keystroke simulator: deterministic by seed, lazy, heavy-tailed, habit-driven."""

from __future__ import annotations

import numpy as np
import pytest

from data import simulator
from data.text import words


def test_same_seed_same_users():
    a = list(simulator.iter_users(seed=7, num_users=5))
    b = list(simulator.iter_users(seed=7, num_users=5))
    assert a == b


def test_different_seed_different_text():
    a = simulator.user_messages(seed=1, index=0)
    b = simulator.user_messages(seed=2, index=0)
    assert a != b


def test_user_depends_only_on_seed_and_index():
    """Lazy generation: user 3 alone equals user 3 generated after users 0..2."""
    alone = simulator.user_messages(seed=5, index=3)
    in_order = dict(simulator.iter_users(seed=5, num_users=4))
    assert in_order[simulator.user_id(3)] == alone


def test_num_messages_matches_generation_and_cap():
    for i in range(10):
        n = simulator.num_messages(0, i)
        assert len(simulator.user_messages(0, i)) == n
        capped = simulator.user_messages(0, i, cap=3)
        assert len(capped) == min(n, 3)
        assert capped == simulator.user_messages(0, i)[:3]


def test_timestamps_ascending_within_horizon():
    for i in range(20):
        t = [m[0] for m in simulator.user_messages(0, i)]
        assert t == sorted(t)
        assert 0 <= t[0] and t[-1] < (simulator.HORIZON_DAYS + 1) * 86400


def test_volume_is_heavy_tailed():
    n = np.array([simulator.num_messages(0, i) for i in range(2000)])
    p50, p99 = np.percentile(n, [50, 99])
    assert n.min() >= 1 and n.max() <= simulator.VOLUME_CAP
    assert p99 / p50 > 20  # most type a little, a few a lot


def test_users_differ_in_vocabulary():
    """Two users' word distributions differ more than two halves of one user's."""
    def dist(msgs):
        c: dict[str, int] = {}
        for _, m in msgs:
            for w in words(m):
                c[w] = c.get(w, 0) + 1
        return c

    def overlap(a, b):
        keys = set(a) | set(b)
        sa, sb = sum(a.values()), sum(b.values())
        return sum(min(a.get(k, 0) / sa, b.get(k, 0) / sb) for k in keys)

    heavy = [i for i in range(200) if simulator.num_messages(0, i) > 200][:2]
    m0, m1 = simulator.user_messages(0, heavy[0]), simulator.user_messages(0, heavy[1])
    half = len(m0) // 2
    assert overlap(dist(m0[:half]), dist(m0[half:])) > overlap(dist(m0), dist(m1))


def test_negative_index_rejected():
    with pytest.raises(ValueError, match="index"):
        simulator.persona(0, -1)
