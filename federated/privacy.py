"""Differential privacy in the TFF simulation: DP aggregators and the privacy spent.

DP-FedAvg (McMahan et al. 2018, "Learning Differentially Private Recurrent Language Models"):
each client update is clipped to L2 norm C on the client side of TFF's aggregation, the clipped
updates are summed, Gaussian noise N(0, (z*C)^2) is added to the sum and the sum is divided by
the expected cohort size. `fixed` uses `tff.aggregators.DifferentiallyPrivateFactory.gaussian_fixed`;
`adaptive` uses `gaussian_adaptive`, whose clip follows the target unclipped quantile (Andrew et
al. 2021, "Differentially Private Learning with Adaptive Clipping"); TFF splits z between the
update and the clipped-count query so the total is z, so the accounting below holds for both.

DP-FTRL (`ftrl`; Kairouz et al. 2021, "Practical and Private (Deep) Learning without Sampling or
Shuffling"): TFF's tree-aggregation DP factory, its `TreeResidualSumQuery` wrapped in a
`RestartQuery` that starts a fresh tree every `privacy.restart_every` rounds; with the server's
plain SGD the model carries the noise of the tree's prefix sums. It assumes no sampling: it needs
`train.selection = "epoch"` (passes over the shuffled users, `federated.sampling.epoch_clients`),
so that each user enters each tree at most once.

Accounting: `fedmath.accounting` (the one definition the collector uses too). `rho` is zCDP
without any sampling amplification: DP-FedAvg costs 1/(2 z^2) per round a user may join (every
round, or once per pass under `epoch` selection), DP-FTRL ceil(log2(steps + 1))/(2 z^2) per pass.
`epsilon` is at `delta`: for DP-FedAvg under `uniform` selection, RDP of the Poisson-sampled
Gaussian with q = clients_per_round / N per round (the amplified figure docs/privacy.md qualifies);
under `availability` q = 1 (eligibility is not a uniform sample); otherwise converted from rho.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from configs.schema import PrivacyConfig, TrainConfig
from fedmath.accounting import dp_epsilon, ftrl_epsilon, ftrl_rho, gaussian_rho, sampling_probability, zcdp_epsilon

DP_MODES = ("none", "fixed", "adaptive", "ftrl")


def default_delta(population: int) -> float:
    """1 / N^1.1: below 1/N, so no mechanism may simply publish one user's data."""
    if population < 1:
        raise ValueError(f"population must be >= 1, got {population}")
    return 1.0 / population ** 1.1


@dataclass(frozen=True)
class DpPlan:
    """The DP setting of a run, checked (see `check_dp`)."""

    mode: str
    noise_multiplier: float
    clip_norm: float
    clients_per_round: int
    population: int
    delta: float
    sampling_q: float  # q used by the accountant per round
    rounds_per_pass: int = 0  # epoch selection: rounds of one pass over the users (0: a user may join every round)
    restart_every: int = 0  # ftrl: rounds per tree (divides rounds_per_pass)

    def participations(self, rounds: int) -> int:
        """The most rounds out of `rounds` one user can have taken part in."""
        return -(-rounds // self.rounds_per_pass) if self.rounds_per_pass else rounds

    def rho(self, rounds: int) -> float:
        """zCDP spent after `rounds` rounds, without sampling amplification (inf for no noise)."""
        if self.mode == "none":
            return math.inf if rounds > 0 else 0.0
        if self.mode == "ftrl":
            return ftrl_rho(self.noise_multiplier, rounds, self.restart_every,
                            self.rounds_per_pass // self.restart_every)
        return gaussian_rho(self.noise_multiplier, self.participations(rounds))

    def epsilon(self, rounds: int) -> float:
        """Epsilon spent after `rounds` rounds at `delta` (inf when z == 0, 0 with no rounds)."""
        if self.mode == "none":
            return math.inf if rounds > 0 else 0.0
        if self.mode == "ftrl":
            return ftrl_epsilon(self.noise_multiplier, rounds, self.restart_every, self.delta,
                                self.rounds_per_pass // self.restart_every)
        if self.rounds_per_pass:
            return zcdp_epsilon(self.rho(rounds), self.delta)
        return dp_epsilon([(self.sampling_q, self.noise_multiplier)] * rounds, self.delta)


def check_dp(privacy: PrivacyConfig, train: TrainConfig, population: int) -> DpPlan:
    """Validate the DP settings against the population and return the plan.

    Raises:
        ValueError: an unknown mode, or settings that make the accounting meaningless:
            clients_per_round outside [1, N], a non-positive clip, a negative noise multiplier,
            delta outside (0, 1/N), an adaptive quantile outside (0, 1).
    """
    mode = privacy.dp
    if mode not in DP_MODES:
        raise ValueError(f"privacy.dp must be one of {DP_MODES}, got {mode!r}")
    if population < 1:
        raise ValueError(f"need at least one training user, got population {population}")
    if not 1 <= train.clients_per_round <= population:
        raise ValueError(f"clients_per_round must be in [1, population={population}], got "
                         f"{train.clients_per_round}: a cohort cannot exceed the population")
    delta = privacy.delta if privacy.delta > 0 else default_delta(population)
    if mode != "none":
        if not privacy.clip_norm > 0:
            raise ValueError(f"privacy.clip_norm must be > 0 with dp={mode!r}, got {privacy.clip_norm}")
        if privacy.noise_multiplier < 0 or not math.isfinite(privacy.noise_multiplier):
            raise ValueError(f"privacy.noise_multiplier must be a finite number >= 0, got {privacy.noise_multiplier}")
        if not 0 < delta < 1.0 / population:
            raise ValueError(f"privacy.delta must be in (0, 1/N = {1.0 / population:.3g}) for N={population} "
                             f"training users, got {delta}: a larger delta allows publishing a user's data")
        if mode == "adaptive":
            if not 0 < privacy.target_unclipped_quantile < 1:
                raise ValueError(f"privacy.target_unclipped_quantile must be in (0, 1), got "
                                 f"{privacy.target_unclipped_quantile}")
            if privacy.clip_learning_rate < 0:
                raise ValueError(f"privacy.clip_learning_rate must be >= 0, got {privacy.clip_learning_rate}")
    uniform = train.selection == "uniform"
    q = sampling_probability(train.clients_per_round, population) if uniform else 1.0
    per_pass = population // train.clients_per_round if train.selection == "epoch" else 0
    restart = 0
    if mode == "ftrl":
        if not per_pass:
            raise ValueError(f"privacy.dp='ftrl' accounts one participation per tree: it needs train.selection "
                             f"'epoch', got {train.selection!r}")
        restart = privacy.restart_every or per_pass
        if restart < 1 or per_pass % restart:
            raise ValueError(f"privacy.restart_every must divide the {per_pass} rounds of one pass over "
                             f"N={population} users in cohorts of {train.clients_per_round} (or be 0), "
                             f"got {privacy.restart_every}")
    return DpPlan(mode, float(privacy.noise_multiplier), float(privacy.clip_norm), train.clients_per_round,
                  population, float(delta), float(q), per_pass, restart)


def dp_aggregator(plan: DpPlan, privacy: PrivacyConfig, record_specs=None):
    """TFF's DP aggregation factory for the plan (None when dp is off).

    `record_specs` (the trainable weights' `tf.TensorSpec`s) is needed by `ftrl` only: the tree
    draws its noise per tensor. Returns a `tff.aggregators.UnweightedAggregationFactory` (TFF
    is imported here only, so `check_dp` and the accounting load without it).
    """
    import tensorflow_federated as tff

    factory = tff.aggregators.DifferentiallyPrivateFactory
    if plan.mode == "none":
        return None
    if plan.mode == "ftrl":
        import tensorflow_privacy as tfp

        if record_specs is None:
            raise ValueError("privacy.dp='ftrl' needs the model's record_specs")
        # TFF's `tree_aggregation` factory plus a restart (`RestartQuery`); the efficient estimator
        # (Honaker 2015) combines the same noised nodes, so it is post-processing of what is accounted.
        tree = tfp.TreeResidualSumQuery.build_l2_gaussian_query(
            plan.clip_norm, plan.noise_multiplier, record_specs, use_efficient=True)
        restarted = tfp.RestartQuery(tree, tfp.restart_query.PeriodicRoundRestartIndicator(plan.restart_every))
        return factory(tfp.NormalizedQuery(restarted, denominator=float(plan.clients_per_round)))
    if plan.mode == "fixed":
        return factory.gaussian_fixed(plan.noise_multiplier, float(plan.clients_per_round), plan.clip_norm)
    return factory.gaussian_adaptive(
        plan.noise_multiplier, float(plan.clients_per_round), initial_l2_norm_clip=plan.clip_norm,
        target_unclipped_quantile=privacy.target_unclipped_quantile, learning_rate=privacy.clip_learning_rate)
