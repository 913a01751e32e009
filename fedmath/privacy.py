"""Clipping and Gaussian noise for DP-FedAvg (McMahan et al. 2018, "Learning Differentially
Private Recurrent Language Models").

Each device clips its update to L2 norm C and adds N(0, sigma_d^2) per coordinate with
sigma_d = z * C / sqrt(n), where n is the round's goal count. The sum of n such updates then
carries N(0, (z*C)^2) per coordinate, the noise the Gaussian mechanism on the clipped sum needs.
docs/privacy.md says what this does and does not protect against.
"""

from __future__ import annotations

import math

import numpy as np

from fedmath.types import Weights


def global_l2_norm(arrays: Weights) -> float:
    """L2 norm of all tensors taken together as one vector."""
    return math.sqrt(sum(float(np.sum(np.square(a, dtype=np.float64))) for a in arrays))


def clip_by_global_norm(arrays: Weights, clip_norm: float) -> tuple[Weights, float]:
    """Scale the update so its global L2 norm is at most clip_norm.

    Returns:
        The clipped tensors (float32) and the norm before clipping.
    """
    if not clip_norm > 0:
        raise ValueError(f"clip_norm must be positive, got {clip_norm!r}")
    norm = global_l2_norm(arrays)
    scale = min(1.0, clip_norm / norm) if norm > 0 else 1.0
    return [(np.asarray(a, np.float64) * scale).astype(np.float32) for a in arrays], norm


def device_noise_std(noise_multiplier: float, clip_norm: float, reports_per_round: int) -> float:
    """Per-device noise std so that the sum of `reports_per_round` updates has std z*C."""
    if noise_multiplier < 0:
        raise ValueError(f"noise_multiplier must be >= 0, got {noise_multiplier!r}")
    if reports_per_round < 1:
        raise ValueError(f"reports_per_round must be >= 1, got {reports_per_round!r}")
    return noise_multiplier * clip_norm / math.sqrt(reports_per_round)


def add_gaussian_noise(arrays: Weights, std: float, rng: np.random.Generator) -> Weights:
    """Add independent N(0, std^2) to every coordinate (no-op when std == 0)."""
    if std < 0:
        raise ValueError(f"noise std must be >= 0, got {std!r}")
    if std == 0:
        return [np.asarray(a, np.float32).copy() for a in arrays]
    return [(a + rng.normal(0.0, std, size=np.shape(a))).astype(np.float32) for a in arrays]


def max_plausible_norm(clip_norm: float, noise_std: float, dim: int, slack: float) -> float:
    """The largest L2 norm a clipped update plus its declared noise has, but with probability at
    most exp(-slack^2 / 2) (slack = 6: 1.5e-8), for every update of norm <= C.

    For u with ||u|| <= C and z ~ N(0, s^2 I_d), two bounds hold, each failing with probability
    at most p = exp(-t^2 / 2), t = slack; the smaller one is returned:

    1. Gaussian concentration: z -> ||u + z|| is 1-Lipschitz, so ||u + z|| <= E||u + z|| + s t,
       and E||u + z|| <= sqrt(E||u + z||^2) = sqrt(||u||^2 + s^2 d) <= sqrt(C^2 + s^2 d):
           ||u + z|| <= sqrt(C^2 + s^2 d) + s t.
    2. ||u + z||^2 = ||u||^2 + 2<u, z> + ||z||^2 with <u, z> ~ N(0, s^2 ||u||^2) and
       ||z||^2 / s^2 ~ chi^2_d (Laurent and Massart 2000: P[chi^2_d >= d + 2 sqrt(d a) + 2a] <= e^-a);
       with a = t^2/2 + ln 2 for each of the two terms (union bound):
           ||u + z||^2 <= C^2 + 2 s C sqrt(2a) + s^2 (d + 2 sqrt(d a) + 2a).

    So the honest norm concentrates at sqrt(C^2 + s^2 d) and the bound sits a few s above it.
    A device that sends no noise may use the whole bound as signal: s sqrt(d) more than C when
    the noise dominates (docs/privacy.md). Without noise the bound is C itself. A relative 1e-5
    absorbs float32 rounding.
    """
    if noise_std <= 0:
        return clip_norm * (1 + 1e-5)
    s, t, c = noise_std, slack, clip_norm
    lipschitz = math.sqrt(c * c + s * s * dim) + s * t
    a = t * t / 2 + math.log(2.0)
    chi2 = math.sqrt(c * c + 2 * s * c * math.sqrt(2 * a) + s * s * (dim + 2 * math.sqrt(dim * a) + 2 * a))
    return min(lipschitz, chi2) * (1 + 1e-5)

