"""A toy aggregation rule, added as a user would add one: this module and its `register` call.

Coordinate-wise median of the round's updates (Yin et al. 2018), ignoring weights: non-linear,
so the collector keeps every update of a round and replays them into `add` at the close.
"""

from __future__ import annotations

import numpy as np

from fedcore.aggregator import Aggregator, register
from fedcore.messages import Aggregate


class ToyMedian(Aggregator):
    name = "toy_median"
    linear = False

    def weight(self, num_examples: int) -> float:
        return 1.0

    def init(self, template):
        return []

    def add(self, state, update, weight):
        state.append([np.array(u, np.float32) for u in update])  # the caller's arrays are not ours to keep

    def result(self, state):
        if not state:
            raise ValueError("no updates have been added")
        median = [np.median(np.stack(ts), axis=0).astype(np.float32) for ts in zip(*state)]
        return Aggregate(median, len(state), float(len(state)))


register(ToyMedian.name, ToyMedian)
