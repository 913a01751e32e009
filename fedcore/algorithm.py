"""A server algorithm: an aggregation rule, a server optimizer and its learning-rate schedule,
composed once from the run's config and used by every path (TFF's composer in spirit:
distributor -> client work -> aggregator -> finalizer; here the aggregator and the finalizer).

    client updates ──> aggregator.add ... aggregator.result ──> Aggregate(delta)
                                                                   │
    model v_n, optimizer state ──> optimizer.step(lr = schedule(n)) ┴──> model v_n+1, new state

| train.algorithm | server optimizer                       | paper |
|-----------------|----------------------------------------|-------|
| fedavg          | sgd; heavy-ball momentum if server_momentum > 0 (TFF's build_sgdm) | McMahan et al. 2017 |
| fedavgm         | nesterov(server_momentum)              | Hsu et al. 2019; Hard et al. 2018 |
| fedadam         | adam(server_beta_1, _beta_2, _epsilon) | Reddi et al. 2021 |
| fedyogi         | yogi(server_beta_1, _beta_2, _epsilon) | Reddi et al. 2021 |
| fedprox         | sgd (the proximal term is client work) | Li et al. 2020 |

The TFF simulation (`federated/algorithms.py`) builds its TF optimizers from the same table
(`server_optimizer_name`); the collector and the in-process path run this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

import fedcore.anomaly  # noqa: F401  (these four register the built-in rules)
import fedcore.mean  # noqa: F401
import fedcore.norm_bound  # noqa: F401
import fedcore.robust  # noqa: F401
from fedcore import aggregator as aggregators
from fedcore import optimizers, schedules
from fedcore.aggregator import Aggregator
from fedcore.dp import CentralGaussian
from fedcore.messages import Aggregate, ClientUpdate
from fedcore.optimizers import ServerOptimizer, State
from fedmath.types import Weights

ALGORITHMS = ("fedavg", "fedavgm", "fedadam", "fedyogi", "fedprox")
AUTO = "auto"  # the aggregator: uniform_mean when DP noise is on, else weighted_mean


def server_optimizer_name(algorithm: str, server_momentum: float) -> str:
    """The server optimizer `algorithm` runs (see the module table)."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"train.algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
    if algorithm in ("fedavg", "fedprox"):
        return "momentum" if server_momentum > 0 else "sgd"
    return {"fedavgm": "nesterov", "fedadam": "adam", "fedyogi": "yogi"}[algorithm]


def aggregator_name(configured: str, dp_noise: bool) -> str:
    """`configured`, with "auto" resolved: DP-FedAvg needs each user's update to count once."""
    if configured == AUTO:
        return "uniform_mean" if dp_noise else "weighted_mean"
    return configured


@dataclass(frozen=True)
class ServerAlgorithm:
    """What the server does with a round's updates; see the module docstring."""

    algorithm: str
    aggregator: Aggregator
    optimizer: ServerOptimizer
    learning_rate: float  # the schedule's base rate
    schedule: str = "constant"
    total_steps: int = 1  # the schedule's length (train.rounds)

    def lr(self, step: int) -> float:
        """The server learning rate of step `step` (0 = the first published version)."""
        return schedules.learning_rate(self.schedule, self.learning_rate, step, self.total_steps)

    def init_state(self, template: Weights) -> State:
        return self.optimizer.init(template)

    def apply(self, state: State, weights: Weights, aggregate: Aggregate) -> tuple[State, Weights]:
        """One server step along the aggregate's delta; the step count lives in the state."""
        step = int(state.get("step", 0))
        return self.optimizer.step(state, weights, aggregate.delta, self.lr(step))

    def round(self, state: State, weights: Weights,
              updates: Sequence[ClientUpdate]) -> tuple[State, Weights, Aggregate]:
        """A whole synchronous round in memory: aggregate `updates` in order, then step."""
        agg_state = self.aggregator.init(weights)
        for u in updates:
            self.aggregator.add_from(agg_state, u.device_id, u.delta, self.aggregator.weight(u.num_examples))
        aggregate = self.aggregator.result(agg_state)
        state, weights = self.apply(state, weights, aggregate)
        return state, weights, aggregate

    def describe(self) -> dict:
        """What runs, by name and number: the same dict from every path for the same config."""
        return {"algorithm": self.algorithm, "aggregator": self.aggregator.describe(),
                "server_optimizer": dict(self.optimizer.describe(), learning_rate=self.learning_rate,
                                         schedule=self.schedule, schedule_steps=self.total_steps)}


def build(train, *, dp_noise: bool = False, central_noise: Optional[dict] = None,
          rng: Optional[np.random.Generator] = None) -> ServerAlgorithm:
    """The server algorithm of a `configs.TrainConfig`.

    Args:
        train: the run's TrainConfig (algorithm, server optimizer fields, aggregator, schedule).
        dp_noise: whether updates carry DP noise (resolves aggregator "auto").
        central_noise: {"clip_norm", "noise_multiplier", "max_examples"} to wrap the rule in
            server-side Gaussian noise (`fedcore.dp.CentralGaussian`) calibrated to the largest
            weight the rule gives an update of at most max_examples examples; None for none.
        rng: the noise's generator (tests seed it).

    Raises:
        ValueError: an unknown algorithm, aggregator or schedule, or a bad optimizer setting.
    """
    if not train.server_learning_rate > 0:
        raise ValueError(f"train.server_learning_rate must be > 0, got {train.server_learning_rate}")
    if train.server_lr_schedule not in schedules.SCHEDULES:
        raise ValueError(f"train.server_lr_schedule must be one of {schedules.SCHEDULES}, "
                         f"got {train.server_lr_schedule!r}")
    opt = optimizers.build(server_optimizer_name(train.algorithm, train.server_momentum),
                           momentum=train.server_momentum, beta_1=train.server_beta_1,
                           beta_2=train.server_beta_2, epsilon=train.server_epsilon)
    rule = aggregators.build(aggregator_name(train.aggregator, dp_noise))
    if central_noise is not None:
        rule = CentralGaussian(rule, central_noise["clip_norm"], central_noise["noise_multiplier"],
                               rule.weight(central_noise["max_examples"]), rng=rng)
    return ServerAlgorithm(train.algorithm, rule, opt, float(train.server_learning_rate),
                           train.server_lr_schedule, max(1, int(train.rounds)))
