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
