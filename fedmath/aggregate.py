"""Weighted averaging of client updates (FedAvg, McMahan et al. 2017, Algorithm 1).

The server never holds more than one update plus the running sum, so memory is O(model)
however many updates arrive.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from fedmath.types import Weights

CHUNK = 1 << 16  # values per step of RunningSum.add: 512 KiB of float64 scratch, about an L2 cache


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
        self._scratch: np.ndarray | None = None  # add()'s float64 work space, made on first use

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
        weight = float(weight)
        for s, u in zip(self.sums, update):
            if s.flags.c_contiguous:
                self._add_flat(s.reshape(-1), np.asarray(u).reshape(-1), weight)
            else:  # a caller's strided array: the same numbers, with full-size temporaries
                s += weight * np.asarray(u, dtype=np.float64)
        self.total_weight += weight
        self.count += 1

    def _add_flat(self, s: np.ndarray, u: np.ndarray, weight: float) -> None:
        """s += weight * float64(u), a cache-sized chunk at a time through one scratch buffer:
        the same numbers as the whole-array expression, without its two full-size float64
        temporaries (which, freed and allocated again on every update, also grew the heap).
        At weight 1 (uniform weighting, the DP setting) the product is the value itself, so it
        is one mixed-type add: numpy casts through its own buffers, with no scratch pass."""
        if weight == 1.0:
            np.add(s, u, out=s)
            return
        if self._scratch is None:
            self._scratch = np.empty(CHUNK, np.float64)
        for a in range(0, s.size, CHUNK):
            b = min(a + CHUNK, s.size)
            term = self._scratch[: b - a]
            np.multiply(u[a:b], weight, out=term, dtype=np.float64, casting="unsafe")
            s[a:b] += term

    def mean(self) -> Weights:
        """The weighted mean so far, as float32. Raises ValueError if nothing was added."""
        if self.total_weight <= 0:
            raise ValueError("no updates have been added")
        # divided in float64, rounded once to float32 on output: no float64 temporary
        return [np.divide(s, self.total_weight, out=np.empty(s.shape, np.float32), casting="same_kind")
                for s in self.sums]


def apply_delta(model: Weights, delta: Weights, server_learning_rate: float = 1.0) -> Weights:
    """Server SGD step: model + lr * delta (delta = client weights minus model weights)."""
    if len(model) != len(delta):
        raise ValueError(f"model has {len(model)} tensors, delta has {len(delta)}")
    out = []
    for m, d in zip(model, delta):
        step = server_learning_rate * np.asarray(d)
        if isinstance(step, np.ndarray) and step.dtype == np.result_type(np.asarray(m), step):
            out.append(np.add(m, step, out=step).astype(np.float32, copy=False))  # m + step, in place
        else:
            out.append((m + step).astype(np.float32))
    return out
