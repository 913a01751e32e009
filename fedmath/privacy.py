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
    """The largest norm a clipped update plus its declared noise should plausibly have.

    For u with ||u|| <= C and n ~ N(0, s^2 I_d): ||u + n||^2 = ||u||^2 + 2<u, n> + ||n||^2, where
    ||n||^2 has mean s^2 d and standard deviation s^2 sqrt(2d), and 2<u, n> has standard deviation
    at most 2 C s. Allowing `slack` standard deviations of each refuses an honest device with
    negligible probability (slack=6: below 1e-8). A relative 1e-5 absorbs float32 rounding.
    """
    if noise_std <= 0:
        return clip_norm * (1 + 1e-5)
    s2 = noise_std * noise_std
    sq = clip_norm**2 + s2 * dim + slack * (s2 * math.sqrt(2 * dim) + 2 * clip_norm * noise_std)
    return math.sqrt(sq) * (1 + 1e-5)
