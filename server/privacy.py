"""Differential privacy on the collector: where the noise comes from and what it costs.

Three modes (privacy.mode), named for where clipping and noise happen (docs/privacy.md):

- "none": no noise. Devices still clip to C and the collector enforces the bound.
- "device": each device clips to C and adds N(0, sigma_d^2), sigma_d = z*C/sqrt(goal_count)
  (`fedmath.privacy.device_noise_std`), so a round with its goal count of reports carries
  N(0, (z*C)^2) in the sum. The collector checks the norm is plausible for that noise.
- "central": devices only clip; the collector clips (or refuses) what exceeds C and adds
  N(0, (z*C*w_max)^2) to the weighted sum itself before dividing (McMahan et al. 2018,
  DP-FedAvg with a trusted server), w_max being the largest weight one device can have: the
  aggregation rule wrapped in `fedcore.dp.CentralGaussian` (server/rounds.py builds it).

Each published round is accounted as a Poisson-sampled Gaussian mechanism with
q = goal_count / population and its effective noise multiplier (`fedmath.accounting`): the
`epsilon` figure, which holds only as far as selection is random sampling. Selection here is "the
first devices to check in", so beside it `rho` is zCDP without amplification: every published round
may hold any device, each costs 1/(2 z_eff^2), and `epsilon_unamplified` is that rho at delta.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

from fedmath import accounting
from fedmath.privacy import device_noise_std
from server.settings import Settings


class ServerPrivacy:
    def __init__(self, settings: Settings) -> None:
        self.mode = settings.privacy.mode
        self.clip_norm = settings.privacy.clip_norm
        self.z = settings.privacy.noise_multiplier
        self.goal = settings.server.goal_count
        self.fixed_delta = settings.privacy.delta
        self.population = settings.collector.population

    def plan_noise_std(self) -> float:
        """The noise std each device adds (the plan's noise_std)."""
        if self.mode == "device":
            return device_noise_std(self.z, self.clip_norm, self.goal)
        return 0.0

    def central_noise(self, max_examples: int) -> Optional[dict]:
        """The server-side noise the aggregation rule is wrapped in (central mode with z > 0)."""
        if self.mode != "central" or self.z == 0:
            return None
        return {"clip_norm": self.clip_norm, "noise_multiplier": self.z, "max_examples": max_examples}

    def population_size(self, attested: int) -> int:
        """N: collector.population, else the devices registered with an attestation (at least the
        goal count). Unattested ids do not count: anyone can make them (Sybil), and each one
        would shrink q = goal / N for everyone."""
        return self.population or max(attested, self.goal)

    def delta(self, population: int) -> float:
        """privacy.delta, else 1 / N^1.1 (as federated/privacy.py does for the simulation)."""
        return self.fixed_delta if self.fixed_delta > 0 else 1.0 / population ** 1.1

    def round_event(self, weights: Sequence[float], population: int, plan_noise_std: float) -> tuple[float, float]:
        """(q, effective z) of a published round whose updates had these weights."""
        q = accounting.sampling_probability(self.goal, population)
        if self.mode == "device":
            z = accounting.device_noise_multiplier(plan_noise_std, self.clip_norm, list(weights))
        elif self.mode == "central":
            z = self.z
        else:
            z = 0.0
        return q, z

    def epsilon(self, events: Sequence[tuple[float, float]], delta: float) -> Optional[float]:
        """Epsilon after these rounds, or None when not differentially private (no noise)."""
        if self.mode == "none" or not 0 < delta < 1:
            return None  # no noise, or a population too small (N = 1 gives delta = 1) for any claim
        eps = accounting.dp_epsilon(list(events), delta)
        return None if math.isinf(eps) else eps

    def rho(self, events: Sequence[tuple[float, float]]) -> Optional[float]:
        """zCDP of these rounds without sampling amplification (None when not private)."""
        if self.mode == "none":
            return None
        rho = sum(accounting.gaussian_rho(z) for _, z in events)
        return None if math.isinf(rho) else rho

    def epsilon_unamplified(self, events: Sequence[tuple[float, float]], delta: float) -> Optional[float]:
        """`rho` as epsilon at delta (None when not private)."""
        rho = self.rho(events)
        return None if rho is None or not 0 < delta < 1 else accounting.zcdp_epsilon(rho, delta)

    def describe(self) -> dict:
        return {"mode": self.mode, "clip_norm": self.clip_norm, "noise_multiplier": self.z,
                "device_noise_std": self.plan_noise_std(),
                "accountant": "RDP, Poisson-sampled Gaussian (dp_accounting); rho: zCDP, no amplification"}
