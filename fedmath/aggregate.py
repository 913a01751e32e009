"""Weighted averaging of client updates (FedAvg, McMahan et al. 2017, Algorithm 1).

The server never holds more than one update plus the running sum, so memory is O(model)
however many updates arrive.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from fedmath.types import Weights


def weighted_mean(updates: Sequence[Weights], weights: Sequence[float]) -> Weights:
    """Return sum_i w_i * u_i / sum_i w_i for lists of per-tensor arrays.

    Raises:
        ValueError: no updates, mismatched lengths, or a non-positive total weight.
    """
    if len(updates) == 0:
        raise ValueError("weighted_mean needs at least one update, got 0")
    if len(updates) != len(weights):
        raise ValueError(f"got {len(updates)} updates but {len(weights)} weights")
    acc = RunningSum.zeros_like(updates[0])
    for u, w in zip(updates, weights):
        acc.add(u, w)
    return acc.mean()


class RunningSum:
    """A running weighted sum of updates, kept in float64 to avoid drift over many adds."""

    def __init__(self, sums: Weights, total_weight: float = 0.0, count: int = 0) -> None:
        self.sums = [np.asarray(s, dtype=np.float64) for s in sums]
        self.total_weight = float(total_weight)
        self.count = int(count)

    @classmethod
    def zeros_like(cls, template: Weights) -> "RunningSum":
        return cls([np.zeros(np.shape(t), dtype=np.float64) for t in template])

    def add(self, update: Weights, weight: float) -> None:
        """Add weight * update. Raises ValueError on a shape mismatch or a bad weight."""
        if not np.isfinite(weight) or weight <= 0:
            raise ValueError(f"update weight must be a positive finite number, got {weight!r}")
        if len(update) != len(self.sums):
            raise ValueError(f"update has {len(update)} tensors, expected {len(self.sums)}")
        for i, (s, u) in enumerate(zip(self.sums, update)):
            if np.shape(u) != s.shape:
                raise ValueError(f"tensor {i}: expected shape {s.shape}, got {np.shape(u)}")
        for s, u in zip(self.sums, update):
            s += weight * np.asarray(u, dtype=np.float64)
        self.total_weight += float(weight)
        self.count += 1

    def mean(self) -> Weights:
        """The weighted mean so far, as float32. Raises ValueError if nothing was added."""
        if self.total_weight <= 0:
            raise ValueError("no updates have been added")
        return [(s / self.total_weight).astype(np.float32) for s in self.sums]


def apply_delta(model: Weights, delta: Weights, server_learning_rate: float = 1.0) -> Weights:
    """Server SGD step: model + lr * delta (delta = client weights minus model weights)."""
    if len(model) != len(delta):
        raise ValueError(f"model has {len(model)} tensors, delta has {len(delta)}")
    return [(m + server_learning_rate * d).astype(np.float32) for m, d in zip(model, delta)]
