"""Norm bounding with zeroing: TFF's `tff.learning.robust_aggregator` in numpy.

Each update is first *zeroed* if its largest absolute coordinate (L-infinity norm) exceeds the
zeroing norm (it then adds nothing but keeps its weight, as TFF's `zeroing_factory` does), then
*clipped* to L2 norm at most the clipping norm (`clipping_factory`), then averaged, weighted by
examples or uniformly. Sun et al. 2019 ("Can You Really Backdoor Federated Learning?") showed
that norm bounding blunts backdoors at little cost to the main task.

Each bound is fixed (`clip_norm`, `zero_norm` > 0) or adaptive (0, the default): an estimate C
of a quantile of the norms, moved after every round by the geometric rule of Andrew, Thakkar
et al. 2021 ("Differentially Private Learning with Adaptive Clipping") without noise:

    C <- C * exp(-lr * (fraction of this round's norms <= C  -  target quantile))

with TFF's defaults (`_default_clipping`, `_default_zeroing` in tff.learning):

| bound    | norm of              | quantile | initial C | lr    | threshold used |
|----------|----------------------|----------|-----------|-------|----------------|
| clipping | L2, after zeroing    | 0.8      | 1.0       | 0.2   | C              |
| zeroing  | L-infinity           | 0.98     | 10.0      | ln 10 | 2 * C + 1      |

The thresholds of a round are the estimates when it opens (`init`), so every update is bounded
on arrival and the round is a weighted sum of bounded updates plus two counts: linear given its
bounds, and computable under secure aggregation, as in TFF.

**What differs from TFF in the collector today.** (1) `linear` is False: the collector's linear
path adds raw updates to its own `RunningSum` and never calls a linear rule's `add`, so a bound
applied in `add` would be skipped; as a non-linear rule the round's updates are replayed through
`add` at the close instead (same numbers, no streaming). (2) The estimates live on the rule
object: `state()` / `load_state()` give them as numpy arrays, but the collector does not save
them, so a restart starts again from the initial estimates and each gunicorn worker adapts its
own copy from the rounds it happens to close. (3) `result` advances the estimates; a close that
fails after it and is retried advances them twice. In memory (`ServerAlgorithm.round`, the
benchmarks) the rule matches TFF's round for round (tests/test_fedcore_robust.py: five rounds to
1e-6); it computes in float64 where TFF uses float32, so a norm within rounding of an estimate
may count on the other side.

Parameters come in through the registry's name syntax, e.g. "norm_bound:clip_norm=0.5,zeroing=false".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fedcore.aggregator import Aggregator, register
from fedcore.messages import Aggregate
from fedmath.aggregate import RunningSum
from fedmath.privacy import clip_by_global_norm
from fedmath.types import Weights


@dataclass
class BoundedRound:
    """One round's bounded sum and the counts the estimates move by."""

    clip_norm: float  # this round's thresholds (inf: no bound)
    zero_norm: float
    clip_estimate: float  # the estimates a norm is compared with for the quantile update
    zero_estimate: float
    sum: RunningSum
    zeroed: int = 0
    clipped: int = 0
    below_zero_estimate: int = 0  # L-inf norms <= zero_estimate
    below_clip_estimate: int = 0  # L2 norms after zeroing <= clip_estimate


def _positive(name: str, value: float, allow_zero: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"norm_bound {name} must be a finite number {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return float(value)


def _quantile(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
        raise ValueError(f"norm_bound {name} must be in (0, 1), got {value!r}")
    return float(value)


class NormBound(Aggregator):
    """Zero, clip, then average; see the module docstring.

    Args:
        clipping: clip in L2 at all.
        zeroing: zero updates whose L-infinity norm is above the zeroing norm at all.
        weighted: weight updates by num_examples (TFF's default) rather than 1 each.
        clip_norm: a fixed L2 clipping norm; 0 adapts it to `clip_quantile`.
        zero_norm: a fixed zeroing norm; 0 adapts it (2 * the `zero_quantile` estimate + 1).
        clip_quantile, clip_initial, clip_lr: the adaptive clipping estimate's target, start, rate.
        zero_quantile, zero_initial, zero_lr, zero_multiplier, zero_increment: the same for zeroing,
            whose threshold is multiplier * estimate + increment.
    """

    name = "norm_bound"
    linear = False  # linear given its bounds, but see the module docstring

    def __init__(self, clipping: bool = True, zeroing: bool = True, weighted: bool = True,
                 clip_norm: float = 0.0, zero_norm: float = 0.0,
                 clip_quantile: float = 0.8, clip_initial: float = 1.0, clip_lr: float = 0.2,
                 zero_quantile: float = 0.98, zero_initial: float = 10.0, zero_lr: float = math.log(10.0),
                 zero_multiplier: float = 2.0, zero_increment: float = 1.0) -> None:
        for key, flag in (("clipping", clipping), ("zeroing", zeroing), ("weighted", weighted)):
            if not isinstance(flag, bool):
                raise ValueError(f"norm_bound {key} must be true or false, got {flag!r}")
        if not (clipping or zeroing):
            raise ValueError("norm_bound needs clipping or zeroing (or both); got neither: use weighted_mean")
        self.clipping, self.zeroing, self.weighted = clipping, zeroing, weighted
        self.clip_norm = _positive("clip_norm", clip_norm, allow_zero=True)
        self.zero_norm = _positive("zero_norm", zero_norm, allow_zero=True)
        self.clip_quantile, self.zero_quantile = _quantile("clip_quantile", clip_quantile), _quantile(
            "zero_quantile", zero_quantile)
        self.clip_initial, self.zero_initial = _positive("clip_initial", clip_initial), _positive(
            "zero_initial", zero_initial)
        self.clip_lr, self.zero_lr = _positive("clip_lr", clip_lr), _positive("zero_lr", zero_lr)
        self.zero_multiplier = _positive("zero_multiplier", zero_multiplier)
        self.zero_increment = _positive("zero_increment", zero_increment, allow_zero=True)
        self.clip_estimate, self.zero_estimate = self.clip_initial, self.zero_initial

    # -- the cross-round state: the two estimates ------------------------------------------------
    def state(self) -> dict[str, np.ndarray]:
        """The estimates the next round's bounds come from, as numpy arrays (for an .npz)."""
        return {"clip_estimate": np.array(self.clip_estimate), "zero_estimate": np.array(self.zero_estimate)}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore what `state` returned. Raises ValueError naming a missing or bad entry."""
        for key in ("clip_estimate", "zero_estimate"):
            if key not in state:
                raise ValueError(f"norm_bound state needs {key!r}, got keys {sorted(state)}")
            setattr(self, key, _positive(key, float(np.asarray(state[key]))))

    def bounds(self) -> tuple[float, float]:
        """(clip norm, zeroing norm) a round opened now would use; inf where that bound is off."""
        clip = (self.clip_norm or self.clip_estimate) if self.clipping else math.inf
        zero = (self.zero_norm or self.zero_multiplier * self.zero_estimate + self.zero_increment) \
            if self.zeroing else math.inf
        return clip, zero

    # -- the rule --------------------------------------------------------------------------------
    def weight(self, num_examples: int) -> float:
        return float(num_examples) if self.weighted else 1.0

    def init(self, template: Weights) -> BoundedRound:
        clip, zero = self.bounds()
        return BoundedRound(clip, zero, self.clip_estimate, self.zero_estimate, RunningSum.zeros_like(template))

    def add(self, state: BoundedRound, update: Weights, weight: float) -> None:
        linf = max((float(np.max(np.abs(u))) for u in update if np.size(u)), default=0.0)
        state.below_zero_estimate += linf <= state.zero_estimate
        if linf > state.zero_norm:
            state.zeroed += 1
            state.below_clip_estimate += 1  # a zeroed update's L2 norm is 0
            update = [np.zeros(np.shape(u), np.float32) for u in update]
        elif math.isfinite(state.clip_norm):
            update, norm = clip_by_global_norm(update, state.clip_norm)
            state.clipped += norm > state.clip_norm
            state.below_clip_estimate += norm <= state.clip_estimate
        state.sum.add(update, weight)

    def result(self, state: BoundedRound) -> Aggregate:
        """The bounded mean; also moves the adaptive estimates by this round's norms."""
        n = state.sum.count
        if n == 0:
            raise ValueError(f"{self.name}: no updates have been added")
        if self.clipping and not self.clip_norm:
            self.clip_estimate = _step(state.clip_estimate, state.below_clip_estimate / n, self.clip_quantile,
                                       self.clip_lr)
        if self.zeroing and not self.zero_norm:
            self.zero_estimate = _step(state.zero_estimate, state.below_zero_estimate / n, self.zero_quantile,
                                       self.zero_lr)
        return Aggregate(state.sum.mean(), n, state.sum.total_weight)

    def describe(self) -> dict:
        return dict(super().describe(), clipping=self.clipping, zeroing=self.zeroing, weighted=self.weighted,
                    clip_norm=self.clip_norm or "adaptive", zero_norm=self.zero_norm or "adaptive")


def _step(estimate: float, below: float, target: float, lr: float) -> float:
    """Andrew et al.'s geometric update: down when more than `target` of the norms were <= it."""
    return estimate * math.exp(-lr * (min(1.0, max(0.0, below)) - target))


register(NormBound.name, NormBound)
