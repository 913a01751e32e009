"""The linear rules: FedAvg's example-weighted mean (McMahan et al. 2017, Algorithm 1) and the
uniform mean DP-FedAvg needs (McMahan et al. 2018: each user's clipped update counts once, so
one user's influence on the sum is bounded by the clip norm).
"""

from __future__ import annotations

from fedcore.aggregator import Aggregator, register
from fedcore.messages import Aggregate
from fedmath.aggregate import RunningSum
from fedmath.types import Weights


class LinearMean(Aggregator):
    """sum_i w_i u_i / sum_i w_i over a float64 `RunningSum`; subclasses choose w_i."""

    linear = True

    def init(self, template: Weights) -> RunningSum:
        return RunningSum.zeros_like(template)

    def add(self, state: RunningSum, update: Weights, weight: float) -> None:
        state.add(update, weight)

    def result(self, state: RunningSum) -> Aggregate:
        return Aggregate(state.mean(), state.count, state.total_weight)


class WeightedMean(LinearMean):
    """Each update weighs as many examples as it trained on."""

    name = "weighted_mean"

    def weight(self, num_examples: int) -> float:
        return float(num_examples)


class UniformMean(LinearMean):
    """Each update weighs 1."""

    name = "uniform_mean"

    def weight(self, num_examples: int) -> float:
        return 1.0


register(WeightedMean.name, WeightedMean)
register(UniformMean.name, UniformMean)
