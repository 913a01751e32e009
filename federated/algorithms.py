"""The FedAvg family as `tff.learning` processes, chosen by `TrainConfig.algorithm`.

No FedAvg is written by hand here: every algorithm is a `tff.learning.algorithms` builder with
a client optimizer, a server optimizer and (for DP) an aggregator factory.

| algorithm | builder                         | server optimizer                          | paper |
|-----------|---------------------------------|-------------------------------------------|-------|
| fedavg    | build_weighted_fed_avg          | SGD(server_learning_rate)                 | McMahan et al. 2017 |
| fedavgm   | build_weighted_fed_avg          | Nesterov SGD(lr, server_momentum)         | Hsu et al. 2019; Hard et al. 2018 |
| fedadam   | build_weighted_fed_avg          | Adam(lr, beta_1, beta_2, epsilon)         | Reddi et al. 2021 |
| fedyogi   | build_weighted_fed_avg          | Yogi(lr, beta_1, beta_2, epsilon)         | Reddi et al. 2021 |
| fedprox   | build_weighted_fed_prox         | SGD(server_learning_rate)                 | Li et al. 2020 |

The server learning rate is constant, or (`train.server_lr_schedule = "cosine"`) a half cosine from
`server_learning_rate` at the first round to 0 after the last (federated/optimizers.py); the
schedule's step count lives in the server state, so `--resume` continues it.

Clients run SGD (momentum `client_momentum`, 0 by default: exactly the phones' step) over their
batches in dataset order; updates are weighted by examples (rows). With DP on, updates are
unweighted (each client contributes at most its clipped update, as DP-FedAvg requires) and the
`*_unweighted_*` builders are used with TFF's DP aggregator.
"""

from __future__ import annotations

import tensorflow_federated as tff

from configs.schema import RunConfig
from federated.optimizers import build_nesterov, with_schedule
from federated.privacy import DpPlan, dp_aggregator
from federated.tff_model import make_model_fn

ALGORITHMS = ("fedavg", "fedavgm", "fedadam", "fedyogi", "fedprox")

# The clients' training loop: a dataset iterator, not TFF's default `DatasetReduce`. Same batches,
# same order, same weights (bit for bit after a round; tests/test_federated_training.py compares
# both), but in TFF 0.87's C++ runtime the reduce form costs a fixed ~0.06 s of `worker_binary` CPU
# per client, which made a `tiny` round several times slower than the same plain training loop
# (benchmarks/sim_overhead.py, docs/benchmarks.md).
CLIENT_LOOP = tff.learning.LoopImplementation.DATASET_ITERATOR


def client_optimizer(cfg: RunConfig) -> tff.learning.optimizers.Optimizer:
    t = cfg.train
    if t.client_learning_rate <= 0:
        raise ValueError(f"train.client_learning_rate must be > 0, got {t.client_learning_rate}")
    return tff.learning.optimizers.build_sgdm(t.client_learning_rate, momentum=t.client_momentum or None)


def server_optimizer(cfg: RunConfig) -> tff.learning.optimizers.Optimizer:
    """The algorithm's server optimizer, its learning rate following `train.server_lr_schedule`."""
    t = cfg.train
    return with_schedule(_server_optimizer(cfg), t.server_lr_schedule, t.server_learning_rate, t.rounds)


def _server_optimizer(cfg: RunConfig) -> tff.learning.optimizers.Optimizer:
    t = cfg.train
    if t.server_learning_rate <= 0:
        raise ValueError(f"train.server_learning_rate must be > 0, got {t.server_learning_rate}")
    if t.algorithm in ("fedavg", "fedprox"):
        return tff.learning.optimizers.build_sgdm(t.server_learning_rate)
    if t.algorithm == "fedavgm":
        return build_nesterov(t.server_learning_rate, t.server_momentum)
    if t.algorithm == "fedadam":
        return tff.learning.optimizers.build_adam(t.server_learning_rate, beta_1=t.server_beta_1,
                                                  beta_2=t.server_beta_2, epsilon=t.server_epsilon)
    if t.algorithm == "fedyogi":
        return tff.learning.optimizers.build_yogi(t.server_learning_rate, beta_1=t.server_beta_1,
                                                  beta_2=t.server_beta_2, epsilon=t.server_epsilon)
    raise ValueError(f"train.algorithm must be one of {ALGORITHMS}, got {t.algorithm!r}")


def build_process(cfg: RunConfig, vocab_size: int, dp: DpPlan,
                  client_loop: tff.learning.LoopImplementation | None = None) -> tff.learning.templates.LearningProcess:
    """The learning process for `cfg` (model from `model.nwp.build_model`, seed `train.seed`).

    `client_loop` overrides `CLIENT_LOOP` (benchmarks/sim_overhead.py times both).
    """
    t = cfg.train
    if t.algorithm not in ALGORITHMS:
        raise ValueError(f"train.algorithm must be one of {ALGORITHMS}, got {t.algorithm!r}")
    if t.algorithm == "fedprox" and t.proximal_strength < 0:
        raise ValueError(f"train.proximal_strength must be >= 0, got {t.proximal_strength}")
    model_fn = make_model_fn(cfg.model, vocab_size, cfg.data.seq_len, seed=t.seed)
    client_opt, server_opt = client_optimizer(cfg), server_optimizer(cfg)
    agg = dp_aggregator(dp, cfg.privacy)
    alg = tff.learning.algorithms
    loop = {"loop_implementation": client_loop or CLIENT_LOOP}
    if t.algorithm == "fedprox":
        if agg is None:
            return alg.build_weighted_fed_prox(model_fn, t.proximal_strength, client_opt, server_opt, **loop)
        return alg.build_unweighted_fed_prox(model_fn, t.proximal_strength, client_opt, server_opt,
                                             model_aggregator=agg, **loop)
    if agg is None:
        return alg.build_weighted_fed_avg(model_fn, client_opt, server_opt, **loop)
    return alg.build_unweighted_fed_avg(model_fn, client_opt, server_opt, model_aggregator=agg, **loop)
