"""The FedAvg family as `tff.learning` processes, chosen by `TrainConfig.algorithm`.

No FedAvg is written by hand here: every algorithm is a `tff.learning.algorithms` builder with
a client optimizer, a server optimizer and (for DP) an aggregator factory. Which server
optimizer an algorithm runs is the algorithm core's table (`fedcore.algorithm`), the one the
collector runs in numpy; here each is built as TFF's own optimizer:

| server optimizer (fedcore) | TFF optimizer                                   | algorithms |
|----------------------------|-------------------------------------------------|------------|
| sgd / momentum             | build_sgdm(lr, server_momentum or None)         | fedavg, fedprox |
| nesterov                   | federated/optimizers.py build_nesterov          | fedavgm |
| adam                       | build_adam(lr, beta_1, beta_2, epsilon)         | fedadam |
| yogi                       | build_yogi(lr, beta_1, beta_2, epsilon)         | fedyogi |

The aggregation rule is `train.aggregator` as the core resolves it: `weighted_mean` uses the
`build_weighted_*` builders, `uniform_mean` the `build_unweighted_*` ones (with DP, TFF's DP
aggregator, which is uniform by construction), `norm_bound` (without parameters) the weighted
builders with `tff.learning.robust_aggregator`, the reference `fedcore/norm_bound.py` follows.
The row rules (median, trimmed mean, Krum, Multi-Krum, with fedcore's parameters) run as
federated/robust.py's factories with the unweighted builders (each update counts once, as in
fedcore). The screened rule runs on the collector and the in-process simulation
(device_sim/simulation.py) only: its reputations live across rounds outside the model.

The server learning rate is constant, or (`train.server_lr_schedule = "cosine"`) a half cosine from
`server_learning_rate` at the first round to 0 after the last (federated/optimizers.py); the
schedule's step count lives in the server state, so `--resume` continues it.

Clients run SGD (momentum `client_momentum`, 0 by default: exactly the phones' step; with
`client_grad_clip` > 0 each step's gradient is clipped to that global norm, as the phones' `train`
signature does) over their batches in dataset order; updates are weighted by examples (rows). With DP on, updates are
unweighted (each client contributes at most its clipped update, as DP-FedAvg requires) and the
`*_unweighted_*` builders are used with TFF's DP aggregator.
"""

from __future__ import annotations

import tensorflow_federated as tff

from configs.schema import RunConfig
from fedcore.algorithm import ALGORITHMS, aggregator_name, server_optimizer_name
from federated.optimizers import build_clipped_sgd, build_nesterov, with_schedule
from federated.privacy import DpPlan, dp_aggregator
from federated.robust import RULES as ROW_RULES, RowRuleFactory
from federated.tff_model import make_model_fn

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
    if t.client_grad_clip < 0:
        raise ValueError(f"train.client_grad_clip must be >= 0, got {t.client_grad_clip}")
    if t.client_grad_clip > 0:
        if t.client_momentum:
            raise ValueError(f"train.client_grad_clip applies to plain client SGD (the phones' step);"
                             f" got client_momentum {t.client_momentum}")
        return build_clipped_sgd(t.client_learning_rate, t.client_grad_clip)
    return tff.learning.optimizers.build_sgdm(t.client_learning_rate, momentum=t.client_momentum or None)


def server_optimizer(cfg: RunConfig) -> tff.learning.optimizers.Optimizer:
    """The algorithm's server optimizer, its learning rate following `train.server_lr_schedule`."""
    t = cfg.train
    return with_schedule(_server_optimizer(cfg), t.server_lr_schedule, t.server_learning_rate, t.rounds)


def _server_optimizer(cfg: RunConfig) -> tff.learning.optimizers.Optimizer:
    t = cfg.train
    if t.server_learning_rate <= 0:
        raise ValueError(f"train.server_learning_rate must be > 0, got {t.server_learning_rate}")
    name = server_optimizer_name(t.algorithm, t.server_momentum)
    if name in ("sgd", "momentum"):
        return tff.learning.optimizers.build_sgdm(t.server_learning_rate, momentum=t.server_momentum or None)
    if name == "nesterov":
        return build_nesterov(t.server_learning_rate, t.server_momentum)
    if name == "adam":
        return tff.learning.optimizers.build_adam(t.server_learning_rate, beta_1=t.server_beta_1,
                                                  beta_2=t.server_beta_2, epsilon=t.server_epsilon)
    return tff.learning.optimizers.build_yogi(t.server_learning_rate, beta_1=t.server_beta_1,
                                              beta_2=t.server_beta_2, epsilon=t.server_epsilon)


NORM_BOUND = "norm_bound"


def uniform_weighting(cfg: RunConfig) -> bool:
    """Whether the simulation weighs every client the same (see the module docstring).

    Raises:
        ValueError: a rule TFF does not run, or example weighting with DP on.
    """
    dp = cfg.privacy.dp != "none"
    rule = aggregator_name(cfg.train.aggregator, dp_noise=dp)
    if rule == NORM_BOUND and dp:
        raise ValueError("privacy.dp with train.aggregator 'norm_bound': TFF's DP aggregator already clips; "
                         "use 'uniform_mean' or 'auto'")
    if rule.split(":")[0] in ROW_RULES:
        if dp:
            raise ValueError(f"privacy.dp with train.aggregator {rule!r}: a robust rule needs the individual updates, "
                             "TFF's DP aggregator a sum; use 'uniform_mean' or 'auto'")
        return True
    if rule not in ("weighted_mean", "uniform_mean", NORM_BOUND):
        raise ValueError(f"the TFF simulation runs train.aggregator 'weighted_mean', 'uniform_mean' (or 'auto'), "
                         f"'{NORM_BOUND}' (TFF's defaults) or a row rule {ROW_RULES}; {rule!r} runs on the collector only")
    if dp and rule == "weighted_mean":
        raise ValueError("privacy.dp needs each client to count once: train.aggregator 'uniform_mean' or 'auto', "
                         "got 'weighted_mean'")
    return rule == "uniform_mean"


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
    uniform = uniform_weighting(cfg)
    specs = None
    if dp.mode == "ftrl":  # the tree draws noise per trainable tensor
        import tensorflow as tf

        specs = [tf.TensorSpec(w.shape, w.dtype) for w in model_fn().trainable_variables]
    agg = dp_aggregator(dp, cfg.privacy, specs)
    if t.aggregator.split(":")[0] in ROW_RULES:
        agg = RowRuleFactory(t.aggregator, t.clients_per_round)
    if cfg.secagg.enabled:  # the secure path's quantization and modular sum (federated/secure_sum.py)
        if not uniform or agg is not None:
            raise ValueError("secure aggregation in the simulation needs train.aggregator 'uniform_mean' and "
                             f"privacy.dp 'none', got {cfg.train.aggregator!r} and {cfg.privacy.dp!r}")
        from federated.secure_sum import secure_aggregator

        agg = secure_aggregator(cfg.secagg.bits, cfg.privacy.clip_norm, cfg.secagg.coord_bound,
                                t.clients_per_round)
    if agg is None and uniform:
        agg = tff.aggregators.UnweightedMeanFactory()
    alg = tff.learning.algorithms
    loop = {"loop_implementation": client_loop or CLIENT_LOOP}
    if aggregator_name(t.aggregator, dp_noise=cfg.privacy.dp != "none") == NORM_BOUND:
        # fedcore/norm_bound.py with its defaults is this aggregator in numpy (tests/test_fedcore_robust.py)
        loop["model_aggregator"] = tff.learning.robust_aggregator(zeroing=True, clipping=True, weighted=True)
    if t.algorithm == "fedprox":
        if not uniform:
            return alg.build_weighted_fed_prox(model_fn, t.proximal_strength, client_opt, server_opt, **loop)
        return alg.build_unweighted_fed_prox(model_fn, t.proximal_strength, client_opt, server_opt,
                                             model_aggregator=agg, **loop)
    if not uniform:
        return alg.build_weighted_fed_avg(model_fn, client_opt, server_opt, **loop)
    return alg.build_unweighted_fed_avg(model_fn, client_opt, server_opt, model_aggregator=agg, **loop)
