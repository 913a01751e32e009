"""Privacy accounting for DP-FedAvg rounds (McMahan et al. 2018; Mironov 2017, "Renyi
Differential Privacy"; Mironov, Talwar and Zhang 2019, "Renyi Differential Privacy of the
Sampled Gaussian Mechanism").

Each published round is one Poisson-sampled Gaussian mechanism: every device of a population
of N takes part with probability q = expected participants / N, and the clipped sum carries
N(0, (z*C)^2) per coordinate, i.e. noise multiplier z. The rounds compose; the RDP accountant
of `dp_accounting` turns the composition into (epsilon, delta) under add-or-remove-one-device
adjacency (user-level DP, since a device holds one user's data).

The same function serves the simulation and the collector, so the two report epsilons that can
be compared. Pure Python on top of dp_accounting (numpy and scipy); no TensorFlow.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

# Orders of the RDP curve (those TF Privacy uses): fine near 1, coarse above 64.
RDP_ORDERS: tuple[float, ...] = tuple([1 + x / 10.0 for x in range(1, 100)] + list(range(11, 64)) + [128, 256, 512])


def sampling_probability(expected_participants: int, population: int) -> float:
    """q = expected participants / population, capped at 1.

    Raises:
        ValueError: a non-positive population or a negative participant count.
    """
    if population < 1:
        raise ValueError(f"population must be >= 1, got {population!r}")
    if expected_participants < 0:
        raise ValueError(f"expected_participants must be >= 0, got {expected_participants!r}")
    return min(1.0, expected_participants / population)


def _grouped(rounds: Iterable[tuple[float, float]]) -> list[tuple[float, float, int]]:
    out: list[tuple[float, float, int]] = []
    for q, z in rounds:
        if out and out[-1][0] == q and out[-1][1] == z:
            out[-1] = (q, z, out[-1][2] + 1)
        else:
            out.append((q, z, 1))
    return out


def dp_epsilon(rounds: Sequence[tuple[float, float]], delta: float, orders: Sequence[float] = RDP_ORDERS) -> float:
    """Epsilon spent after `rounds`, each a (sampling probability q, noise multiplier z) pair.

    Returns 0.0 for no rounds and math.inf when any round has z == 0 with q > 0 (no noise: not
    differentially private).

    Raises:
        ValueError: delta outside (0, 1), q outside [0, 1], or a negative z.
    """
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")
    for q, z in rounds:
        if not 0 <= q <= 1:
            raise ValueError(f"sampling probability must be in [0, 1], got {q!r}")
        if z < 0:
            raise ValueError(f"noise multiplier must be >= 0, got {z!r}")
    live = [(q, z) for q, z in rounds if q > 0]
    if not live:
        return 0.0
    if any(z == 0 for _, z in live):
        return math.inf
    import dp_accounting  # imported here: it pulls in scipy, about a second at import time
    from dp_accounting import rdp

    accountant = rdp.RdpAccountant(list(orders))
    for q, z, count in _grouped(live):
        event = dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z))
        accountant.compose(event, count)
    return float(accountant.get_epsilon(delta))


def device_noise_multiplier(noise_std: float, clip_norm: float, weights: Sequence[float]) -> float:
    """Effective noise multiplier of a weighted sum of device-noised updates.

    Device i adds N(0, noise_std^2) and its update enters the sum with weight w_i, so the sum
    carries N(0, noise_std^2 * sum w_i^2) while one device moves it by at most max(w_i) * C.
    With k equal weights and noise_std = z*C/sqrt(n) this is z*sqrt(k/n): z when the round got
    its goal count n of reports, less when it closed short.
    """
    if not weights:
        return 0.0
    if clip_norm <= 0:
        raise ValueError(f"clip_norm must be positive, got {clip_norm!r}")
    w_max = max(weights)
    if w_max <= 0:
        raise ValueError(f"weights must be positive, got max {w_max!r}")
    return noise_std * math.sqrt(sum(w * w for w in weights)) / (w_max * clip_norm)


# ---------------------------------------------------------------------------------------------
# rho-zCDP without sampling amplification (Bun and Steinke 2016), as Gboard reports it
# (Xu et al. 2023, "Federated Learning of Gboard Language Models with Differential Privacy").
#
# A Gaussian mechanism of L2 sensitivity 1 and noise multiplier z is 1/(2 z^2)-zCDP, and zCDP
# composes by addition. Nothing here assumes the cohort was a random sample: the unit is one
# user, and what bounds the cost is how often one user can take part (`participations`).
# ---------------------------------------------------------------------------------------------

GBOARD_DELTA = 1e-10  # the delta Gboard states its epsilons at


def gaussian_rho(noise_multiplier: float, participations: int = 1) -> float:
    """rho of `participations` Gaussian releases at multiplier z: participations / (2 z^2).

    DP-FedAvg without amplification: each round in which a user takes part is one Gaussian
    release of a sum the user moves by at most C; rounds without the user cost it nothing.

    Returns:
        0.0 for no participations, math.inf for z == 0 (no noise).

    Raises:
        ValueError: a negative z or participation count.
    """
    if noise_multiplier < 0 or participations < 0:
        raise ValueError(f"need noise_multiplier >= 0 and participations >= 0, got "
                         f"{noise_multiplier!r}, {participations!r}")
    if participations == 0:
        return 0.0
    if noise_multiplier == 0:
        return math.inf
    return participations / (2.0 * noise_multiplier ** 2)


def tree_depth(steps: int) -> int:
    """Tree nodes one leaf of a binary tree over `steps` leaves feeds: ceil(log2(steps + 1)).

    This is the L2^2 sensitivity of the whole tree of noised node sums to one record that occurs
    once (Kairouz et al. 2021, "Practical and Private (Deep) Learning without Sampling or
    Shuffling", appendix D; the same depth `dp_accounting` uses).
    """
    if steps < 1:
        raise ValueError(f"a tree needs >= 1 step, got {steps!r}")
    return math.ceil(math.log2(steps + 1))


def ftrl_trees(rounds: int, restart_every: int) -> list[int]:
    """Steps in each tree when the tree restarts every `restart_every` rounds (last may be short)."""
    if rounds < 0 or restart_every < 1:
        raise ValueError(f"need rounds >= 0 and restart_every >= 1, got {rounds!r}, {restart_every!r}")
    full, rest = divmod(rounds, restart_every)
    return [restart_every] * full + ([rest] if rest else [])


def ftrl_rho(noise_multiplier: float, rounds: int, restart_every: int, trees_per_participation: int = 1) -> float:
    """rho of DP-FTRL with tree aggregation, restarted every `restart_every` rounds.

    Each group of `trees_per_participation` consecutive trees sees one user at most once (the
    simulation's `epoch` selection: one pass over the shuffled population, the trees restarting
    inside it); a user's record enters at most `tree_depth` noised node sums of the tree it is
    in, so one group costs max depth / (2 z^2) and the groups compose:

        rho = sum over groups g of  max_{trees t in g} ceil(log2(steps_t + 1)) / (2 z^2).

    Raises:
        ValueError: as `ftrl_trees`, or trees_per_participation < 1.
    """
    if trees_per_participation < 1:
        raise ValueError(f"trees_per_participation must be >= 1, got {trees_per_participation!r}")
    trees = ftrl_trees(rounds, restart_every)
    if not trees:
        return 0.0
    if noise_multiplier == 0:
        return math.inf
    groups = [trees[i:i + trees_per_participation] for i in range(0, len(trees), trees_per_participation)]
    return sum(tree_depth(max(g)) for g in groups) / (2.0 * noise_multiplier ** 2)


def ftrl_epsilon(noise_multiplier: float, rounds: int, restart_every: int, delta: float,
                 trees_per_participation: int = 1) -> float:
    """Epsilon of the same DP-FTRL run from `dp_accounting`'s tree-aggregation events.

    One `SingleEpochTreeAggregationDpEvent` per group of trees that sees a user at most once,
    composed; `zcdp_epsilon(ftrl_rho(...))` gives the same figure (tests check both).
    """
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")
    trees = ftrl_trees(rounds, restart_every)
    if not trees:
        return 0.0
    if noise_multiplier == 0:
        return math.inf
    import dp_accounting
    from dp_accounting import rdp

    # dp_accounting states the tree's bound for "replace one user's record by the special empty
    # record": the same sensitivity (one leaf moves by at most C) as adding or removing the user.
    relation = dp_accounting.NeighboringRelation.REPLACE_SPECIAL
    accountant = rdp.RdpAccountant(list(RDP_ORDERS), neighboring_relation=relation)
    for i in range(0, len(trees), trees_per_participation):
        accountant.compose(dp_accounting.SingleEpochTreeAggregationDpEvent(
            noise_multiplier, trees[i:i + trees_per_participation]))
    return float(accountant.get_epsilon(delta))


def zcdp_epsilon(rho: float, delta: float) -> float:
    """The smallest epsilon at `delta` that rho-zCDP implies, over `RDP_ORDERS`.

    rho-zCDP is RDP alpha * rho at every order alpha, which is exactly the RDP curve of one
    Gaussian mechanism with multiplier 1/sqrt(2 rho); `dp_accounting` converts it to (epsilon,
    delta) with the tight conversion of Canonne, Kamath and Steinke 2020, at most the
    textbook rho + 2 sqrt(rho ln(1/delta)) (Bun and Steinke 2016, Proposition 1.3).
    """
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")
    if rho < 0:
        raise ValueError(f"rho must be >= 0, got {rho!r}")
    if rho == 0:
        return 0.0
    if math.isinf(rho):
        return math.inf
    import dp_accounting
    from dp_accounting import rdp

    accountant = rdp.RdpAccountant(list(RDP_ORDERS))
    accountant.compose(dp_accounting.GaussianDpEvent(1.0 / math.sqrt(2.0 * rho)))
    return float(accountant.get_epsilon(delta))
