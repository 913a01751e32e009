"""Which clients train in which round: pure functions of (seed, round), no TensorFlow.

`sample_clients` is the simulation's plain uniform sampler; device_sim and the parity check
(issue 7) call the same function to reproduce TFF's cohorts. `select_clients` is the
production-like alternative (Bonawitz et al. 2019): sample among the clients eligible at the
round's simulated time under `fedmath.availability` (the model device_sim uses), over-select,
let some drop out, and keep the first `goal_count` to report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from fedmath import availability as av


def _round_rng(seed: int, round_num: int, stream: int) -> np.random.Generator:
    if round_num < 0:
        raise ValueError(f"round_num must be >= 0, got {round_num}")
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(round_num), int(stream)])


def _checked_users(train_users: Sequence[str], clients_per_round: int) -> list[str]:
    """The users sorted (so a cohort depends only on the set); ValueError for duplicates or a
    cohort size outside [1, N]."""
    users = sorted(train_users)
    if len(set(users)) != len(users):
        raise ValueError("train_users holds duplicate ids")
    if not 1 <= clients_per_round <= len(users):
        raise ValueError(f"clients_per_round must be in [1, {len(users)}] (the population), "
                         f"got {clients_per_round}")
    return users


def sample_clients(train_users: Sequence[str], clients_per_round: int, seed: int, round_num: int) -> list[str]:
    """`clients_per_round` distinct users drawn uniformly for `round_num` (0-based).

    The users are sorted first, so the result depends only on the set of users, the count,
    the seed and the round; the returned order is the order clients train and aggregate in.

    Raises:
        ValueError: clients_per_round outside [1, len(train_users)], or duplicate users.
    """
    users = _checked_users(train_users, clients_per_round)
    perm = _round_rng(seed, round_num, 0).permutation(len(users))
    return [users[i] for i in perm[:clients_per_round]]


def epoch_clients(train_users: Sequence[str], clients_per_round: int, seed: int, round_num: int) -> list[str]:
    """The `round_num`-th slice of `clients_per_round` users of a pass over the shuffled users.

    Pass e = round_num // (N // clients_per_round) is one permutation drawn from (seed, e); its
    rounds take disjoint slices, and the N mod clients_per_round users left at its end sit it
    out. So one user takes part at most once per pass, which is what DP-FTRL's accounting
    (one record per tree) and DP-FedAvg's without sampling amplification rely on.

    Raises:
        ValueError: as `sample_clients`.
    """
    users = _checked_users(train_users, clients_per_round)
    per_pass = len(users) // clients_per_round
    epoch, slot = divmod(round_num, per_pass)
    perm = _round_rng(seed, epoch, 2).permutation(len(users))
    return [users[i] for i in perm[slot * clients_per_round:(slot + 1) * clients_per_round]]


@dataclass(frozen=True)
class Selection:
    """What availability-aware selection decided for one round."""

    round_num: int
    sim_time_s: float  # the round's simulated start time
    eligible: list[str]  # eligible at that time (sorted)
    selected: list[str]  # over-selected cohort, in check-in order
    dropped: list[str]  # selected but dropped out mid-round
    reporting: list[str]  # the first goal_count survivors to finish, in finishing order
    late: list[str] = field(default_factory=list)  # survivors beyond the goal count (discarded)


def round_time(round_num: int, round_interval_s: float, start_time_s: float = 0.0) -> float:
    """Simulated start time of a round."""
    return start_time_s + round_num * round_interval_s


def select_clients(train_users: Sequence[str], goal_count: int, seed: int, round_num: int, *,
                   example_counts: Mapping[str, int], round_interval_s: float = 3600.0,
                   start_time_s: float = 0.0, over_selection: float = 1.3,
                   dropout_rate: float | None = None, min_examples: int = 1,
                   model: av.AvailabilityModel = av.AvailabilityModel()) -> Selection:
    """Availability-aware selection with over-selection and dropouts.

    1. Eligible: `fedmath.availability.is_eligible` at the round's simulated time.
    2. Selected: ceil(goal_count * over_selection) drawn uniformly from the eligible (all of
       them if fewer), in a random check-in order.
    3. Dropped: each selected client drops out with its profile's chance, or `dropout_rate`.
    4. Reporting: survivors sorted by simulated finishing time (examples / speed + latency),
       the first `goal_count` kept. May be fewer than goal_count, or empty, at quiet hours.

    Raises:
        ValueError: goal_count < 1 or over_selection < 1.
    """
    if goal_count < 1:
        raise ValueError(f"goal_count must be >= 1, got {goal_count}")
    if over_selection < 1.0:
        raise ValueError(f"over_selection must be >= 1.0, got {over_selection}")
    t = round_time(round_num, round_interval_s, start_time_s)
    users = sorted(train_users)
    eligible = av.eligible_devices(users, t, example_counts, seed, model, min_examples)
    want = min(len(eligible), math.ceil(goal_count * over_selection - 1e-9))
    perm = _round_rng(seed, round_num, 1).permutation(len(eligible))
    selected = [eligible[i] for i in perm[:want]]
    profiles = {u: av.device_profile(u, seed, model) for u in selected}
    dropped = [u for u in selected if av.drops_out(profiles[u], round_num, seed, dropout_rate)]
    survivors = [u for u in selected if u not in set(dropped)]

    def finish(u: str) -> float:
        p = profiles[u]
        return int(example_counts.get(u, 0)) / p.speed + p.latency_ms / 1000.0

    survivors.sort(key=finish)
    return Selection(round_num, t, eligible, selected, dropped, survivors[:goal_count], survivors[goal_count:])
