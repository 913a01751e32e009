"""Secure aggregation as a wrapper around a linear rule (Bonawitz et al. 2017; the ring and noise
of Kairouz, Liu and Steinke 2021, secagg/ring.py).

Secure aggregation computes a sum modulo 2^b and nothing else, so it composes only with a rule
that is a weighted mean: `SecureSum(inner, quantizer)` refuses a non-linear rule (a median, a
trimmed mean, Krum need the individual updates it hides). What each device puts into the sum,
and what the server makes of the sum, are the two halves of the wrapper:

    device:  encode(update, weight) = [quantize(update * w / w_max), w]     (m + 1 ring values)
    server:  decode(ring_sum, reports) -> Aggregate(dequantize(sum[:m]) * w_max / sum[m])

w is the inner rule's weight (1 for `uniform_mean`, the example count for `weighted_mean`);
scaling by w / w_max <= 1 keeps the L2 clip C the sensitivity, and the last value carries w
unquantized so the server divides by the true total weight. In simulation `add` runs the device
half and adds in the ring, and `result` the server half: the same quantization and modular sum
as the secure path, without the cryptography (masks cancel exactly, so the sum is the same).
"""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np

from fedcore.aggregator import Aggregator
from fedcore.messages import Aggregate
from fedmath.types import Weights
from secagg import ring


def encode(update: Weights, weight: float, quantizer: ring.Quantizer, max_weight: float,
           rng: Optional[np.random.Generator] = None) -> np.ndarray:
    """The m + 1 ring values a device puts into the secure sum (module docstring)."""
    flat = np.concatenate([np.asarray(u, np.float64).reshape(-1) for u in update])
    w = float(weight)
    if not 0 < w <= max_weight or w != math.floor(w):
        raise ValueError(f"a secure-sum weight must be an integer in 1..{max_weight:g}, got {weight!r}")
    body = ring.quantize(flat * (w / max_weight), quantizer, rng)
    return np.concatenate([body, np.array([int(w)], np.uint32)])


class SecureSum(Aggregator):
    """A linear rule's mean computed from a sum in Z_(2^b) (module docstring)."""

    linear = True

    def __init__(self, inner: Aggregator, quantizer: ring.Quantizer, max_weight: float = 1.0,
                 rng: Optional[np.random.Generator] = None) -> None:
        if not inner.linear:
            raise ValueError(f"secure aggregation needs a linear rule (a weighted mean), got {inner.name!r}")
        if not max_weight >= 1 or max_weight != int(max_weight):
            raise ValueError(f"max_weight must be an integer >= 1, got {max_weight!r}")
        if max_weight * quantizer.max_devices >= 2 ** (quantizer.bits - 1):
            raise ValueError(f"{quantizer.max_devices} weights up to {max_weight:g} do not fit {quantizer.bits} bits")
        self.inner = inner
        self.quantizer = quantizer
        self.max_weight = float(max_weight)
        self.rng = rng
        self.name = f"secure_sum({inner.name})"  # type: ignore[misc]

    def weight(self, num_examples: int) -> float:
        return min(self.inner.weight(num_examples), self.max_weight)

    # -- the device's half --------------------------------------------------------------------
    def encode(self, update: Weights, weight: float) -> np.ndarray:
        """The m + 1 ring values a device puts into the secure sum."""
        return encode(update, weight, self.quantizer, self.max_weight, self.rng)

    # -- the server's half --------------------------------------------------------------------
    def decode(self, total: np.ndarray, reports: int, template: Weights) -> Aggregate:
        """The aggregate a ring sum of `reports` encodings stands for."""
        q = self.quantizer
        total_weight = float(ring.signed(total[-1:], q.bits)[0])
        if reports < 1 or total_weight <= 0:
            raise ValueError(f"a secure sum needs at least one report with weight, got {reports}, {total_weight}")
        flat = ring.dequantize(total[:-1], q) * (self.max_weight / total_weight)
        out, at = [], 0
        for t in template:
            n = int(np.prod(np.shape(t)))
            out.append(flat[at:at + n].reshape(np.shape(t)))
            at += n
        if at != flat.size:
            raise ValueError(f"the sum has {flat.size} values, the model {at}")
        return Aggregate(out, reports, total_weight)

    # -- simulation: the Aggregator interface -------------------------------------------------
    def init(self, template: Weights) -> dict[str, Any]:
        size = sum(int(np.prod(np.shape(t))) for t in template) + 1
        return {"sum": np.zeros(size, np.uint32), "reports": 0, "template": [np.shape(t) for t in template]}

    def add(self, state: dict[str, Any], update: Weights, weight: float) -> None:
        state["sum"] = ring.add_mod(state["sum"], self.encode(update, weight), self.quantizer.bits)
        state["reports"] += 1

    def result(self, state: dict[str, Any]) -> Aggregate:
        return self.decode(state["sum"], state["reports"], [np.zeros(s) for s in state["template"]])

    def describe(self) -> dict:
        q = self.quantizer
        return {"name": "secure_sum", "bits": q.bits, "clip_norm": q.clip_norm, "coord_bound": q.coord_bound,
                "max_devices": q.max_devices, "noise_std": q.noise_std, "inner": self.inner.describe()}


def build(inner: Aggregator, bits: int, clip_norm: float, coord_bound: float, max_devices: int,
          noise_std: float, max_weight: float) -> SecureSum:
    """A SecureSum from a run's settings (coord_bound 0 means clip_norm). Raises ValueError for a
    non-linear rule or a ring too small for the cohort."""
    q = ring.Quantizer(bits=bits, clip_norm=clip_norm, coord_bound=coord_bound or clip_norm,
                       max_devices=max_devices, noise_std=noise_std)
    return SecureSum(inner, q, max_weight=max_weight)
