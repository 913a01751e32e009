"""The TFF simulation driver: sample clients, run a round, evaluate, record, checkpoint.

    FederatedData ──client_examples──> tf.data (client_dataset, no shuffle, .repeat(epochs))
         │                                   │
         │ heldout pooled_examples           v
         │                      tff.learning process.next(state, cohort)   (federated/algorithms.py)
         v                                   │
    model.evaluate <──trainable weights──────┘──> metrics.csv, tensorboard/, checkpoints/,
                                                  weights.npz, summary.json, config.json

Cohorts come from `federated.sampling` (pure functions of (seed, round)), so a resumed run and
the phones reproduce them; the initial weights are `build_model(..., seed=train.seed)`.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from typing import Any, Protocol, Sequence

import numpy as np
import tensorflow as tf

from configs.io import read_config, to_dict, write_config
from configs.schema import RunConfig
from data.tfdata import client_dataset
from fedcore.algorithm import build as server_algorithm
from federated import checkpoint
from federated.algorithms import build_process
from federated.attackers import PoisonedData, backdoor_success, poisoned
from federated.privacy import check_dp
from federated.runtime import install_cleanup
from federated.sampling import epoch_clients, sample_clients, select_clients
from federated.tff_model import initial_weights, model_weights
from federated.workers import use_runtime
from fedmath.availability import SECONDS_PER_HOUR
from model.evaluate import evaluate, most_frequent_word_baseline
from model.nwp import build_model, count_params, weight_names
from model.weights_io import load_init_weights, save_model_weights

METRIC_FIELDS = ("round", "clients", "selected", "dropped", "examples", "train_loss", "top1", "top3",
                 "perplexity", "words", "epsilon", "delta", "rho", "clip", "seconds")


class FederatedDataLike(Protocol):
    """What the driver needs of `data.dataset.FederatedData`."""

    tokenizer: Any

    def users(self, split: str) -> list[str]: ...
    def client_examples(self, user_id: str, seq_len: int, max_examples: int = 0) -> tuple[np.ndarray, np.ndarray]: ...
    def pooled_examples(self, split: str, seq_len: int, max_examples: int = 0) -> tuple[np.ndarray, np.ndarray]: ...


class ClientStore:
    """Each training user's (x, y), loaded once (capped at `max_examples_per_client`)."""

    def __init__(self, data: FederatedDataLike, seq_len: int, max_examples: int) -> None:
        self._data, self._seq_len, self._max = data, seq_len, max_examples
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def examples(self, user: str) -> tuple[np.ndarray, np.ndarray]:
        if user not in self._cache:
            self._cache[user] = self._data.client_examples(user, self._seq_len, self._max)
        return self._cache[user]

    def counts(self, users: Sequence[str]) -> dict[str, int]:
        return {u: int(self.examples(u)[0].shape[0]) for u in users}

    def dataset(self, user: str, batch_size: int, epochs: int) -> tf.data.Dataset:
        x, y = self.examples(user)
        return client_dataset(x, y, batch_size).repeat(epochs)


def cohort(cfg: RunConfig, users: Sequence[str], counts: dict[str, int] | None,
           round_num: int) -> tuple[list[str], int, int]:
    """(reporting clients in aggregation order, selected count, dropped count) for a round.

    `counts` (each user's examples, computed once per run) is needed by availability selection only.
    """
    t = cfg.train
    if t.selection == "uniform":
        chosen = sample_clients(users, t.clients_per_round, t.seed, round_num)
        return chosen, len(chosen), 0
    if t.selection == "epoch":
        chosen = epoch_clients(users, t.clients_per_round, t.seed, round_num)
        return chosen, len(chosen), 0
    if t.selection == "availability":
        sel = select_clients(users, t.clients_per_round, t.seed, round_num, example_counts=counts,
                             round_interval_s=t.round_interval_s, start_time_s=t.sim_start_h * SECONDS_PER_HOUR,
                             over_selection=t.over_selection,
                             dropout_rate=None if t.dropout_rate < 0 else t.dropout_rate,
                             min_examples=t.min_client_examples)
        return sel.reporting, len(sel.selected), len(sel.dropped)
    raise ValueError(f"train.selection must be 'uniform', 'epoch' or 'availability', got {t.selection!r}")


def _check(cfg: RunConfig) -> None:
    t = cfg.train
    for name in ("rounds", "local_epochs", "batch_size", "eval_every"):
        if getattr(t, name) < 1:
            raise ValueError(f"train.{name} must be >= 1, got {getattr(t, name)}")
    if t.max_examples_per_client < 0 or t.checkpoint_every < 0:
        raise ValueError("train.max_examples_per_client and train.checkpoint_every must be >= 0")


def _write_csv(path: str, rows: list[dict]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=METRIC_FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in METRIC_FIELDS})
    os.replace(tmp, path)


def _find(measurements: Any, key: str) -> float | None:
    """First scalar named `key` anywhere in TFF's nested measurement structure."""
    if isinstance(measurements, dict):
        for k, v in measurements.items():
            if k == key and np.ndim(v) == 0:
                return float(v)
            found = _find(v, key)
            if found is not None:
                return found
    return None


def _same_config(out_dir: str, cfg: RunConfig) -> None:
    old = read_config(out_dir)
    same = lambda c: {k: v for k, v in to_dict(c).items() if k != "runtime"}  # noqa: E731 (where it runs may change)
    if same(old) != same(cfg):
        raise ValueError(f"--resume: {out_dir}/config.json differs from this run's config; "
                         "resume with the same preset and overrides")


def run_federated(cfg: RunConfig, data: FederatedDataLike, out_dir: str, progress: bool = True,
                  resume: bool = False, stop_after: int | None = None, init_from: str | None = None) -> dict:
    """Train `cfg` with TFF on `data`; write the run into `out_dir`; return the summary.

    Args:
        cfg: the resolved run config (train, model, privacy sections are used).
        data: a prepared `data.dataset.FederatedData`.
        out_dir: the run directory (created).
        progress: show a tqdm bar.
        resume: continue from the last checkpoint in out_dir (same config required).
        stop_after: stop after this many completed rounds, as if killed (tests), without the
            final summary.
        init_from: start from these weights (a .npz or a run directory) instead of
            `build_model(..., seed)`: centrally pretrained weights (`model.centralized`, proxy users).

    Returns:
        The summary dict also written to summary.json (or a partial one when stopped early).
    """
    _check(cfg)
    install_cleanup()
    t, seq_len = cfg.train, cfg.data.seq_len
    os.makedirs(out_dir, exist_ok=True)
    ckpt_dir = os.path.join(out_dir, "checkpoints")
    users = sorted(data.users("train"))
    data = poisoned(cfg.attack, data)  # the attackers' examples, when attack.share > 0
    plan = check_dp(cfg.privacy, t, len(users))
    vocab_size = int(data.tokenizer.vocab_size)
    if resume and os.path.exists(os.path.join(out_dir, "config.json")):
        _same_config(out_dir, cfg)
    write_config(cfg, out_dir)
    tf.random.set_seed(t.seed)

    start = initial_weights(cfg.model, vocab_size, seq_len, t.seed)
    if init_from:
        start = load_init_weights(init_from, [w.shape for w in start])
    started = time.perf_counter()
    use_runtime(cfg.runtime)
    process = build_process(cfg, vocab_size, plan)
    state = process.initialize()
    state = process.set_model_weights(state, model_weights(start))
    rows: list[dict] = []
    start_round = 0
    if resume:
        last = checkpoint.latest(ckpt_dir)
        if last is not None:
            state, rows = checkpoint.load(ckpt_dir, last, state)
            start_round = last

    store = ClientStore(data, seq_len, t.max_examples_per_client)
    eval_x, eval_y = data.pooled_examples("heldout", seq_len, t.eval_max_examples)
    eval_model = build_model(cfg.model, vocab_size, seq_len, seed=t.seed)
    writer = tf.summary.create_file_writer(os.path.join(out_dir, "tensorboard")) if t.tensorboard else None

    def trainable() -> list[np.ndarray]:
        return [np.asarray(w) for w in process.get_model_weights(state).trainable]

    rounds_iter = range(start_round, t.rounds)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=t.rounds, initial=start_round, desc=f"TFF {t.algorithm}", unit="round")
    counts = store.counts(users) if t.selection == "availability" else None  # fixed for the run
    for r in rounds_iter:
        tic = time.perf_counter()
        clients, selected, dropped = cohort(cfg, users, counts, r)
        row: dict[str, Any] = {"round": r + 1, "clients": len(clients), "selected": selected, "dropped": dropped}
        if clients:
            datasets = [store.dataset(u, t.batch_size, t.local_epochs) for u in clients]
            result = process.next(state, datasets)
            state = result.state
            train = result.metrics["client_work"]["train"]
            row["examples"] = int(train["num_examples"])
            row["train_loss"] = float(train["loss"])
            clip = _find(result.metrics.get("aggregator", {}), "clip")
            if clip is not None:
                row["clip"] = clip
        else:
            row["examples"] = 0
        completed = sum(1 for x in rows if x["clients"] > 0) + (1 if clients else 0)
        if plan.mode != "none":
            row["epsilon"] = plan.epsilon(completed)
            row["delta"] = plan.delta
            row["rho"] = plan.rho(completed)
        if (r + 1) % t.eval_every == 0 or r + 1 == t.rounds:
            row.update(evaluate(eval_model, trainable(), eval_x, eval_y))
            row.pop("tokens", None)
        row["seconds"] = round(time.perf_counter() - tic, 3)
        rows.append(row)
        _write_csv(os.path.join(out_dir, "metrics.csv"), rows)
        if writer is not None:
            with writer.as_default():
                for k in ("train_loss", "top1", "top3", "perplexity", "epsilon", "clip", "examples"):
                    if isinstance(row.get(k), (int, float)) and math.isfinite(row[k]):
                        tf.summary.scalar(k, row[k], step=r + 1)
            writer.flush()
        if bar is not None:
            bar.update(1)
            bar.set_postfix({k: f"{row[k]:.3f}" for k in ("train_loss", "top1") if k in row})
        done = r + 1
        if (t.checkpoint_every and done % t.checkpoint_every == 0) or done == t.rounds:
            checkpoint.save(ckpt_dir, done, state, rows)
        if stop_after is not None and done >= stop_after and done < t.rounds:  # as if killed here
            if bar is not None:
                bar.close()
            return {"stopped_after": done, "rows": rows}
    if bar is not None:
        bar.close()

    weights = trainable()
    names = weight_names(eval_model)
    weights_path = save_model_weights(os.path.join(out_dir, "weights.npz"), eval_model, weights)
    final = next((x for x in reversed(rows) if "top1" in x), None)
    final_eval = {k: final[k] for k in ("top1", "top3", "perplexity", "words")} if final else \
        {k: v for k, v in evaluate(eval_model, weights, eval_x, eval_y).items() if k != "tokens"}
    _, train_y = data.pooled_examples("train", seq_len, max(t.eval_max_examples, 20000))
    baseline = most_frequent_word_baseline(train_y, eval_x, eval_y, vocab_size=vocab_size)
    completed = sum(1 for x in rows if x["clients"] > 0)
    summary = {
        "stage": "train",
        "algorithm": t.algorithm,
        # what the server ran, described by the algorithm core the collector runs (same table)
        "server_algorithm": server_algorithm(cfg.train, dp_noise=cfg.privacy.dp != "none").describe(),
        "rounds": t.rounds,
        "rounds_with_clients": completed,
        "population": len(users),
        "clients_per_round": t.clients_per_round,
        "selection": t.selection,
        "examples_processed": int(sum(x.get("examples", 0) for x in rows)),
        "params": count_params(eval_model),
        "final_eval": final_eval,
        "baseline_most_frequent": {k: v for k, v in baseline.items() if k != "tokens"},
        "eval_examples": int(eval_x.shape[0]),
        "dp": {"mode": plan.mode, "noise_multiplier": plan.noise_multiplier, "clip_norm": plan.clip_norm,
               "delta": plan.delta, "sampling_q": plan.sampling_q,
               "epsilon": plan.epsilon(completed) if plan.mode != "none" else None,
               "rho": plan.rho(completed) if plan.mode != "none" else None,
               "restart_every": plan.restart_every},
        "seconds": round(time.perf_counter() - started, 2),
        "seconds_per_round": round(float(np.mean([x["seconds"] for x in rows])) if rows else 0.0, 3),
        "weights": os.path.relpath(weights_path, out_dir),
        "weight_names": names,
        "resumed_from": start_round if resume else None,
        "init_from": os.path.abspath(init_from) if init_from else None,
    }
    if isinstance(data, PoisonedData):
        summary["attack"] = {"kind": cfg.attack.kind, "attackers": len(data.attackers), "share": cfg.attack.share,
                             "backdoor_success": backdoor_success(eval_model, weights, data, seq_len)}
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2, default=float)
        f.write("\n")
    return summary
