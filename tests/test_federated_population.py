"""The lazy population (federated/population.py): deterministic per (seed, index), nothing kept
per user, availability-based selection without a scan. Fast: no TensorFlow."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from data.simulator import user_messages
from federated.population import LazyPopulation, cohort_examples, select_from_population
from fedmath import availability as av


class WordIds:
    """A stand-in tokenizer: BOS=2, each word's length + 4, EOS=3."""

    def encode(self, texts):
        return [[2] + [len(w) + 4 for w in t.split()] + [3] for t in texts]


NIGHT = 2 * 3600.0  # 02:00 UTC: most phones of the availability model are asleep on the charger


def test_a_population_holds_only_its_three_numbers():
    # memory independent of the population size by construction: no per-user field at all
    pop = LazyPopulation(1_000_000, seed=4, messages_per_user=20)
    assert dataclasses.asdict(pop) == {"size": 1_000_000, "seed": 4, "messages_per_user": 20}
    assert LazyPopulation.__slots__ == ("size", "seed", "messages_per_user") and not hasattr(pop, "__dict__")
    with pytest.raises((dataclasses.FrozenInstanceError, AttributeError, TypeError)):
        pop.cache = {}  # type: ignore[attr-defined]


def test_a_users_data_is_a_function_of_seed_and_index():
    a, b = LazyPopulation(1_000_000, seed=4), LazyPopulation(1_000_000, seed=4)
    assert a.messages(999_999) == b.messages(999_999)
    assert a.messages(12) == [t for _, t in user_messages(4, 12, 30)]  # data/simulator.py's user
    assert a.messages(12) != LazyPopulation(1_000_000, seed=5).messages(12)
    x1, y1 = a.examples(7, WordIds(), seq_len=5, max_examples=4)
    x2, y2 = b.examples(7, WordIds(), seq_len=5, max_examples=4)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    assert 1 <= x1.shape[0] <= 4 and x1.shape[1] == 5
    # the same user in a small and a large population is the same phone
    assert LazyPopulation(100, seed=4).messages(12) == a.messages(12)


def test_messages_are_capped_phone_like():
    pop = LazyPopulation(10_000, seed=0, messages_per_user=25)
    counts = [pop.num_messages(i) for i in range(300)]
    assert max(counts) == 25 and min(counts) >= 1
    assert [len(pop.messages(i)) for i in range(5)] == counts[:5]


def test_ids_and_indices_round_trip_and_are_checked():
    pop = LazyPopulation(1_000_000)
    assert pop.user_id(42) == "u000042" and pop.index_of("u000042") == 42
    for bad in (-1, 1_000_000):
        with pytest.raises(ValueError, match=r"user index must be in \[0, 1000000\)"):
            pop.messages(bad)
    with pytest.raises(ValueError, match="user id like"):
        pop.index_of("bob")
    with pytest.raises(ValueError, match="population size"):
        LazyPopulation(0)


def test_selection_is_deterministic_and_differs_by_round():
    pop = LazyPopulation(1_000_000, seed=1)
    a = select_from_population(pop, 50, 0, start_time_s=NIGHT)
    b = select_from_population(pop, 50, 0, start_time_s=NIGHT)
    assert a == b
    c = select_from_population(pop, 50, 1, start_time_s=NIGHT, round_interval_s=60.0)
    assert set(c.selected) != set(a.selected)


def test_selection_keeps_only_eligible_distinct_users_and_the_fastest_report():
    pop = LazyPopulation(1_000_000, seed=1)
    d = select_from_population(pop, 40, 3, start_time_s=NIGHT, round_interval_s=0.0, dropout_rate=0.1)
    assert len(d.selected) == math.ceil(40 * 1.3) == len(set(d.selected))
    for i in d.selected:
        p = av.device_profile(pop.user_id(i), pop.seed)
        assert av.is_eligible(p, d.sim_time_s, pop.num_messages(i), pop.seed)
    assert set(d.reporting) | set(d.late) | set(d.dropped) == set(d.selected)
    assert len(d.reporting) == min(40, len(d.selected) - len(d.dropped))

    def finish(i):
        p = av.device_profile(pop.user_id(i), pop.seed)
        return pop.num_messages(i) / p.speed + p.latency_ms / 1000.0

    times = [finish(i) for i in d.reporting + d.late]
    assert times == sorted(times)
    # examined only about want / eligible-share users, not the population
    assert d.eligible_seen == len(d.selected) and d.examined < 2000


def test_selection_stops_at_max_examined_at_a_quiet_hour():
    pop = LazyPopulation(1_000_000, seed=1)
    d = select_from_population(pop, 1000, 0, start_time_s=14 * 3600.0, max_examined=300)
    assert d.examined == 300 and len(d.selected) < 1300


def test_small_population_is_exhausted_without_repeats():
    pop = LazyPopulation(30, seed=2)
    d = select_from_population(pop, 100, 0, start_time_s=NIGHT, dropout_rate=0.0)
    assert d.examined == 30 and len(set(d.selected)) == len(d.selected) == d.eligible_seen < 30


@pytest.mark.parametrize("kw,msg", [(dict(goal_count=0), "goal_count"), (dict(over_selection=0.5), "over_selection"),
                                    (dict(max_examined=-1), "max_examined")])
def test_selection_refuses_bad_arguments(kw, msg):
    args = dict(goal_count=5, round_num=0)
    args.update(kw)
    with pytest.raises(ValueError, match=msg):
        select_from_population(LazyPopulation(100), **args)


def test_cohort_examples_materialize_each_sampled_client():
    pop = LazyPopulation(1_000_000, seed=1)
    got = cohort_examples(pop, [5, 999_998], WordIds(), seq_len=4, max_examples=3)
    assert len(got) == 2
    np.testing.assert_array_equal(got[1][0], pop.examples(999_998, WordIds(), 4, 3)[0])
