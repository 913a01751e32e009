"""Differential privacy as wrappers around an aggregator, named for where clipping and noise
happen (docs/privacy.md). DP-FedAvg, McMahan et al. 2018.

- `ServerClip(inner, clip_norm)`: the server clips each update to L2 norm C before the inner
  rule sees it (for updates from devices that were not trusted to clip).
- `CentralGaussian(inner, clip_norm, noise_multiplier, max_weight)`: the server adds
  N(0, (z * C * w_max)^2) per coordinate to the inner linear rule's weighted sum before dividing,
  w_max being the largest weight one update can have, so one device moves the noised sum by at
  most C * w_max in L2 (the sensitivity the noise is calibrated to).

On-device noise ("device" mode) needs no wrapper: each device adds its share of the noise
before uploading (`fedmath.privacy.device_noise_std`), and the aggregate is a plain mean.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from fedcore.aggregator import Aggregator
from fedcore.messages import Aggregate
from fedmath.aggregate import RunningSum
from fedmath.privacy import clip_by_global_norm
from fedmath.types import Weights


class _Wrapper(Aggregator):
    def __init__(self, inner: Aggregator) -> None:
        self.inner = inner
        self.linear = inner.linear  # type: ignore[misc]  # per instance: as linear as what it wraps

    def weight(self, num_examples: int) -> float:
        return self.inner.weight(num_examples)

    def init(self, template: Weights) -> Any:
        return self.inner.init(template)

    def add(self, state: Any, update: Weights, weight: float) -> None:
        self.inner.add(state, update, weight)

    def result(self, state: Any) -> Aggregate:
        return self.inner.result(state)


class ServerClip(_Wrapper):
    """Clip each update to `clip_norm` on the server, then aggregate with `inner`."""

    def __init__(self, inner: Aggregator, clip_norm: float) -> None:
        if not clip_norm > 0:
            raise ValueError(f"ServerClip clip_norm must be > 0, got {clip_norm!r}")
        super().__init__(inner)
        self.clip_norm = float(clip_norm)
        self.name = f"server_clip({inner.name})"  # type: ignore[misc]

    def add(self, state: Any, update: Weights, weight: float) -> None:
        clipped, _ = clip_by_global_norm(update, self.clip_norm)
        self.inner.add(state, clipped, weight)

    def describe(self) -> dict:
        return {"name": "server_clip", "clip_norm": self.clip_norm, "inner": self.inner.describe()}


class CentralGaussian(_Wrapper):
    """Gaussian noise on the inner linear rule's sum, added by the server at `result`."""

    def __init__(self, inner: Aggregator, clip_norm: float, noise_multiplier: float, max_weight: float,
                 rng: Optional[np.random.Generator] = None) -> None:
        if not inner.linear:
            raise ValueError(f"central Gaussian noise needs a linear rule (a noised sum), got {inner.name!r}")
        if not clip_norm > 0 or noise_multiplier < 0 or not max_weight > 0:
            raise ValueError(f"CentralGaussian needs clip_norm > 0, noise_multiplier >= 0, max_weight > 0; got "
                             f"{clip_norm!r}, {noise_multiplier!r}, {max_weight!r}")
        super().__init__(inner)
        self.clip_norm, self.z, self.max_weight = float(clip_norm), float(noise_multiplier), float(max_weight)
        self.rng = rng
        self.name = f"central_gaussian({inner.name})"  # type: ignore[misc]

    @property
    def noise_std(self) -> float:
        return self.z * self.clip_norm * self.max_weight

    def result(self, state: RunningSum) -> Aggregate:
        if self.z == 0:
            return self.inner.result(state)
        rng = self.rng or np.random.default_rng()
        noised = RunningSum([s + rng.normal(0.0, self.noise_std, size=s.shape) for s in state.sums],
                            state.total_weight, state.count)
        return self.inner.result(noised)

    def describe(self) -> dict:
        return {"name": "central_gaussian", "noise_std": self.noise_std, "inner": self.inner.describe()}
