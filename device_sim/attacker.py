"""A malicious phone: the ordinary phone protocol, with `fedmath.attacks` around its training.

It registers, checks in, downloads and trains exactly as `device_sim.phone.Phone` (so the server
cannot tell it apart before the upload), but trains on `attack.poison_data` of its examples and
uploads `attack.poison_update` of its delta instead of a clipped, noised one: boosted up to the
largest norm the collector accepts for the plan (`fedmath.privacy.max_plausible_norm` of the
plan's clip and noise with the server's `norm_slack`), never beyond, since a larger one would
only be refused. Its attestation is genuine: these are compromised devices, not Sybils.
"""

from __future__ import annotations

import math

import numpy as np

from device_sim.phone import Phone
from device_sim.transport import Plan
from fedmath import encodings, privacy
from fedmath.attacks import Attack
from fedmath.types import Weights


class AttackingPhone(Phone):
    """A `Phone` running `attack` (see the module docstring).

    Args:
        attack: what it does to its data and update.
        norm_slack: the collector's `server.norm_slack` (the attacker knows the server's code).
        Other arguments: as `Phone`.
    """

    def __init__(self, *args, attack: Attack, norm_slack: float = 6.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.attack = attack
        self.norm_slack = float(norm_slack)
        self.x, self.y = attack.poison_data(self.x, self.y, self.rng)

    def accepted_norm(self, plan: Plan, dim: int) -> float | None:
        """The largest update norm the collector takes under `plan` (None: no bound)."""
        if plan.clip_norm <= 0:
            return None
        return privacy.max_plausible_norm(plan.clip_norm, plan.noise_std, dim, self.norm_slack)

    def privatize_and_encode(self, delta: Weights, plan: Plan, encoding: str) -> tuple[bytes, float]:
        dim = sum(int(np.size(d)) for d in delta)
        norm = privacy.global_l2_norm(delta)
        bound = self.accepted_norm(plan, dim)
        sent = self.attack.poison_update(delta, self.rng, bound)
        if encodings.base_name(encoding) in encodings.LOSSLESS:
            return encodings.encode(encoding, sent, rng=self.rng), norm
        from device_sim.phone import encode_within_norm

        limit = bound if bound is not None and math.isfinite(bound) else None
        payload, _ = encode_within_norm(encoding, sent, self.rng, limit=limit)
        return payload, norm
